#!/usr/bin/env python3
"""Benchmarks for the control plane (issue 14). Not run in CI.

Each figure against a baseline taken in the same run:
  1. idle: CPU-s per minute and peak RSS of an agent watching a tree of
     uploaded files, with the control server on and a dashboard attached
     (an event-stream reader plus the page's status/history fetch every
     30 s), vs the same agent with `[control] listen = "off"`
  2. burst: 2,000 small files dropped at once, with 5 event-stream readers
     attached vs none (files/s, median of the rounds, interleaved)

Usage: scripts/bench-control.py [--files 10000] [--idle 60] [--rounds 3]
Needs: python3, a release build (it runs `cargo build --release`).
"""
import argparse, importlib.util, json, os, re, shutil, statistics, sys, tempfile, threading, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_agent", os.path.join(HERE, "bench-agent.py"))
ba = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ba)


def control_of(work):
    info = os.path.join(work, "state", "control.json")
    ba.wait(lambda: os.path.exists(info), timeout=30)
    url = json.load(open(info))["url"]
    token = open(os.path.join(work, "state", "control.token")).read().strip()
    return url, token


def request(url, token, path):
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    return urllib.request.urlopen(req, timeout=3600)


class Reader(threading.Thread):
    """Reads the event stream to its end, counting events."""
    def __init__(self, url, token):
        super().__init__(daemon=True)
        self.url, self.token, self.events = url, token, 0
        self.ready = threading.Event()

    def run(self):
        try:
            with request(self.url, self.token, "/api/events") as r:
                for line in r:
                    if line.startswith(b"data:"):
                        self.events += 1
                        self.ready.set()
        except Exception:
            pass


class Page(threading.Thread):
    """What the dashboard fetches besides the stream: status and history every 30 s."""
    def __init__(self, url, token, stop):
        super().__init__(daemon=True)
        self.url, self.token, self.stop = url, token, stop

    def run(self):
        while not self.stop.is_set():
            for path in ("/api/status", "/api/history?limit=15"):
                request(self.url, self.token, path).read()
            self.stop.wait(30)


def idle(work, files, seconds, control):
    drop = os.path.join(work, "tree"); os.makedirs(drop)
    ba.make_tree(drop, files)
    emu = ba.Emulator(work)
    listen = "127.0.0.1:0" if control else "off"
    cfg = ba.config(work, emu, drop, "200ms", f'[control]\nlisten = "{listen}"')
    ba.sh(ba.BIN, "--config", cfg, "run", "--once", env=ba.env())
    a = ba.agent(cfg)
    stop = threading.Event()
    if control:
        url, token = control_of(work)
        reader = Reader(url, token); reader.start()
        ba.wait(lambda: reader.ready.is_set(), timeout=30)
        Page(url, token, stop).start()
    def cpu():
        with open(f"/proc/{a.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    quiet, last = 0, cpu()
    while quiet < 2:
        time.sleep(2); now = cpu(); quiet = quiet + 1 if now - last < 0.02 else 0; last = now
    c0 = cpu(); time.sleep(seconds); c1 = cpu()
    rss = 0
    with open(f"/proc/{a.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
    stop.set(); a.terminate(); a.wait(); emu.stop()
    return {"control": control, "files": files, "cpu_s_per_min": round((c1 - c0) * 60 / seconds, 3),
            "peak_rss_mib": round(rss, 1)}


def burst(work, readers, n=2000):
    drop = os.path.join(work, "drop"); os.makedirs(drop)
    emu = ba.Emulator(work)
    cfg = ba.config(work, emu, drop, "300ms", '[control]\nlisten = "127.0.0.1:0"')
    a = ba.agent(cfg)
    url, token = control_of(work)
    rs = [Reader(url, token) for _ in range(readers)]
    for r in rs:
        r.start()
    time.sleep(1)
    t0 = time.monotonic()
    for i in range(n):
        with open(os.path.join(drop, f"s{i:05}.txt"), "w") as f:
            f.write(f"file {i}\n")
    ba.wait(lambda: emu.count() >= n)
    secs = time.monotonic() - t0
    a.terminate(); a.wait(); emu.stop()
    return n / secs, sum(r.events for r in rs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="idle,burst")
    args = ap.parse_args()
    if not os.environ.get("AUTORENDER_SYNC_BIN"):
        ba.sh("cargo", "build", "--release", "--quiet", cwd=ba.ROOT)
    work = tempfile.mkdtemp(prefix="ar-bench-control-")
    out = {}
    try:
        n = 0
        def part():
            nonlocal n
            n += 1
            d = os.path.join(work, str(n)); os.makedirs(d); return d
        if "idle" in args.only:
            off = idle(part(), args.files, args.idle, False)
            on = idle(part(), args.files, args.idle, True)
            out["idle"] = {"off": off, "on_with_dashboard": on,
                           "cpu_ratio": round(on["cpu_s_per_min"] / max(off["cpu_s_per_min"], 0.001), 2),
                           "rss_ratio": round(on["peak_rss_mib"] / off["peak_rss_mib"], 2)}
            print(f"idle: {json.dumps(out['idle'])}", file=sys.stderr, flush=True)
        if "burst" in args.only:
            none, five, events = [], [], 0
            for _ in range(args.rounds):
                none.append(burst(part(), 0)[0])
                rate, ev = burst(part(), 5)
                five.append(rate); events += ev
            out["burst"] = {"files": 2000, "files_per_s_no_readers": [round(x) for x in none],
                            "files_per_s_5_readers": [round(x) for x in five],
                            "median_ratio": round(statistics.median(five) / statistics.median(none), 3),
                            "events_read": events}
            print(f"burst: {json.dumps(out['burst'])}", file=sys.stderr, flush=True)
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
