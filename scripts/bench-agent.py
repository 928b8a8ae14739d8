#!/usr/bin/env python3
"""Benchmarks for the agent (issue: watch, settle, journal). Not run in CI.

Measures, each against a baseline taken in the same run:
  1. event-to-done latency of a small file vs the configured `settle`
  2. burst throughput: 2,000 small files dropped at once (files/s), vs
     `autorender-sync upload` sending the same files with no watching at all
  3. restart over 100,000 already-uploaded files (`run --once`) vs `find`
     stat-ing the same tree
  4. CPU time and RSS over 60 s idle while watching 100,000 files
  5. peak RSS of the initial ingest: `run --once` over N new files, each
     uploaded (the baseline is the same agent's peak over 1,000 files)
  6. one folder of 50,000 files (`--only folder`): peak RSS of `run --once`
     uploading them and of `status --json` afterwards, vs the same over
     1,000 files; the budget is 64 MiB for each

Usage: scripts/bench-agent.py [--files 100000] [--idle 60] [--ingest 100000]
                              [--folder 50000]
                              [--only latency,burst,restart,ingest,folder]
(`idle` runs with `restart`: it watches the tree `restart` built.)
Needs: python3, a release build (it runs `cargo build --release`).
"""
import argparse, json, os, shutil, signal, sqlite3, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# AUTORENDER_SYNC_BIN: measure another build (e.g. a copy of an older one).
BIN = os.environ.get("AUTORENDER_SYNC_BIN") or os.path.join(ROOT, "target", "release", "autorender-sync")
KEY = "bench-key"


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


class Emulator:
    def __init__(self, work):
        self.p = subprocess.Popen([BIN, "emulator", "--listen", "127.0.0.1:0", "--api-key", KEY,
                                   "--store", os.path.join(work, "store")],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.p.stdout.readline().strip().removeprefix("listening on ")

    def get(self, path):
        with urllib.request.urlopen(self.url + path) as r:
            return json.load(r)

    def count(self):
        s = self.get("/_emulator/stats")
        return s["complete_ok"] + s["direct_ok"]

    def stop(self):
        self.p.terminate(); self.p.wait()


def config(work, emu, drop, settle, extra=""):
    path = os.path.join(work, "config.toml")
    with open(path, "w") as f:
        f.write(f'[api]\nendpoint = "{emu.url}"\n[agent]\nstate_dir = "{work}/state"\nsettle = "{settle}"\n'
                f'concurrent_files = 8\nrescan_interval = "0s"\n{extra}\n'
                f'[[watch]]\npath = "{drop}"\nremote_folder = "bench"\n')
    return path


def env():
    e = dict(os.environ, AUTORENDER_API_KEY=KEY, AUTORENDER_SYNC_LOG="warn")
    return e


def wait(cond, timeout=600, step=0.005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    raise SystemExit("timed out")


def agent(cfg):
    return subprocess.Popen([BIN, "--config", cfg, "run"], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def latency(work):
    drop = os.path.join(work, "lat"); os.makedirs(drop)
    emu = Emulator(work)
    settle = 1.0
    cfg = config(work, emu, drop, "1s")
    a = agent(cfg)
    time.sleep(1)  # let the watcher come up (not part of the measurement)
    samples = []
    for i in range(10):
        before = emu.count()
        t0 = time.monotonic()
        with open(os.path.join(drop, f"f{i}.txt"), "w") as f:
            f.write("hello\n")
        wait(lambda: emu.count() > before)
        samples.append(time.monotonic() - t0)
    a.terminate(); a.wait(); emu.stop()
    med = statistics.median(samples)
    return {"settle_s": settle, "median_s": round(med, 3), "max_s": round(max(samples), 3),
            "over_settle_ms": round((med - settle) * 1000)}


def burst(work, n=2000):
    drop = os.path.join(work, "burst"); os.makedirs(drop)
    emu = Emulator(work)
    cfg = config(work, emu, drop, "300ms")
    a = agent(cfg)
    time.sleep(1)
    t0 = time.monotonic()
    for i in range(n):
        with open(os.path.join(drop, f"s{i:05}.txt"), "w") as f:
            f.write(f"file {i}\n")
    wait(lambda: emu.count() >= n)
    agent_s = time.monotonic() - t0
    a.terminate(); a.wait()
    # Baseline: the same files through `upload` (no watching, no settling).
    files = sorted(os.path.join(drop, x) for x in os.listdir(drop))
    t0 = time.monotonic()
    sh(BIN, "--config", cfg, "-q", "upload", "--folder", "bench2", *files, env=env(), stdout=subprocess.DEVNULL)
    upload_s = time.monotonic() - t0
    emu.stop()
    return {"files": n, "agent_files_per_s": round(n / agent_s), "upload_cmd_files_per_s": round(n / upload_s),
            "ratio_agent_vs_upload": round((n / agent_s) / (n / upload_s), 2), "note": "agent time includes 300ms settle"}


def make_tree(drop, n):
    per_dir = 1000
    for d in range(n // per_dir):
        sub = os.path.join(drop, f"d{d:03}")
        os.makedirs(sub)
        for i in range(per_dir):
            with open(os.path.join(sub, f"f{i:04}.bin"), "w") as f:
                f.write("x" * (i % 50))


def restart(work, n):
    drop = os.path.join(work, "tree"); os.makedirs(drop)
    emu = Emulator(work)
    cfg = config(work, emu, drop, "200ms")
    sh(BIN, "--config", cfg, "run", "--once", env=env())  # creates the journal schema
    make_tree(drop, n)
    # Mark every file uploaded, as a finished earlier run would have.
    db = sqlite3.connect(os.path.join(work, "state", "journal.sqlite3"))
    rows = []
    now = int(time.time() * 1000)
    real = os.path.realpath(drop)
    for dirpath, _, names in os.walk(real):
        for name in names:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, real)
            rows.append((real, rel, "done", st.st_size, st.st_mtime_ns, st.st_size, st.st_mtime_ns, "x", now))
    db.executemany("INSERT INTO files (root, rel, state, size, mtime_ns, done_size, done_mtime_ns, done_sha256, updated_at)"
                   " VALUES (?,?,?,?,?,?,?,?,?)", rows)
    db.commit(); db.close()
    def timed(args, **kw):
        best = None
        for _ in range(3):
            t0 = time.monotonic(); sh(*args, **kw); dt = time.monotonic() - t0
            best = dt if best is None else min(best, dt)
        return best
    find_s = timed(["find", drop, "-type", "f", "-printf", "%s %T@\n"], stdout=subprocess.DEVNULL)
    agent_s = timed([BIN, "--config", cfg, "run", "--once"], env=env())
    stats = emu.get("/_emulator/stats")
    sent = stats["start"] + stats["direct"]
    emu.stop()
    return {"files": len(rows), "find_s": round(find_s, 3), "run_once_s": round(agent_s, 3),
            "ratio": round(agent_s / find_s, 2), "requests_sent": sent}, cfg


def idle(work, cfg, seconds):
    emu_cfg = open(cfg).read()
    emu = Emulator(work)
    # Point the config at the new emulator (the old one is gone).
    import re
    with open(cfg, "w") as f:
        f.write(re.sub(r'endpoint = "[^"]*"', f'endpoint = "{emu.url}"', emu_cfg))
    a = agent(cfg)
    def cpu():
        with open(f"/proc/{a.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    # The start-up scan and watch set-up are not idle time: wait until the
    # agent has used under 0.02 CPU-s in each of two 2 s windows.
    quiet, last, t_end = 0, cpu(), time.monotonic() + 600
    while quiet < 2:
        if time.monotonic() > t_end:
            raise SystemExit("the agent never went idle")
        time.sleep(2)
        now = cpu()
        quiet = quiet + 1 if now - last < 0.02 else 0
        last = now
    c0 = cpu(); time.sleep(seconds); c1 = cpu()
    # 300 new folders (a file each) in the root that already holds every
    # uploaded file: the cost should be the new folders', not the root's.
    drop = re.search(r'path = "([^"]*)"', emu_cfg).group(1)
    for d in range(300):
        sub = os.path.join(drop, f"new{d:03}")
        os.makedirs(sub)
        with open(os.path.join(sub, "frame.exr"), "w") as f:
            f.write(f"new {d}\n")
    wait(lambda: emu.count() >= 300)
    c2 = cpu()
    rss = 0
    with open(f"/proc/{a.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
    a.terminate(); a.wait(); emu.stop()
    return {"seconds": seconds, "cpu_s": round(c1 - c0, 3), "cpu_s_per_min": round((c1 - c0) * 60 / seconds, 3),
            "peak_rss_mib": round(rss, 1), "new_300_folders_cpu_s": round(c2 - c1, 3)}


def peak_rss_of(args, **kw):
    """Runs a command to its end; returns (seconds, its own peak RSS in MiB).

    Read by GNU time (`/usr/bin/time -f %M`), the command's parent: its
    wait4 reports the command's own high-water mark, however briefly it
    ran. (wait4 from this script would not do: on Linux a child forked from
    a process holding a million rows starts with that RSS. Sampling VmHWM
    every 20 ms, the fallback without GNU time, misses a 60 ms command.)"""
    t0 = time.monotonic()
    if os.path.exists("/usr/bin/time"):
        with tempfile.NamedTemporaryFile("r") as out:
            p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, *args], **kw)
            if p.returncode != 0:
                raise SystemExit(f"{args} exited with {p.returncode}")
            return time.monotonic() - t0, int(out.read().split()[-1]) / 1024
    p = subprocess.Popen(args, **kw)
    peak = 0.0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
        time.sleep(0.02)
    if p.returncode != 0:
        raise SystemExit(f"{args} exited with {p.returncode}")
    return time.monotonic() - t0, peak


def ingest(work, n):
    out = {}
    for label, count in (("baseline_1000", 1000), ("files", n)):
        sub = os.path.join(work, label); os.makedirs(sub)
        drop = os.path.join(sub, "tree"); os.makedirs(drop)
        emu = Emulator(sub)
        cfg = config(sub, emu, drop, "200ms")
        make_tree(drop, count)
        secs, rss = peak_rss_of([BIN, "--config", cfg, "run", "--once"], env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stored = emu.count()
        emu.stop()
        if stored != count:
            raise SystemExit(f"ingest of {count} stored {stored}")
        out[label] = {"files": count, "seconds": round(secs, 1), "files_per_s": round(count / secs),
                      "peak_rss_mib": round(rss, 1)}
    out["rss_ratio"] = round(out["files"]["peak_rss_mib"] / out["baseline_1000"]["peak_rss_mib"], 2)
    return out


def one_folder(work, n):
    """Peak RSS with every file in one folder: the agent's `run --once`
    over them, then `status --json` reading the journal they left."""
    out = {}
    for label, count in (("baseline_1000", 1000), ("files", n)):
        sub = os.path.join(work, label); os.makedirs(sub)
        drop = os.path.join(sub, "tree"); os.makedirs(drop)
        emu = Emulator(sub)
        cfg = config(sub, emu, drop, "200ms")
        for i in range(count):
            with open(os.path.join(drop, f"f{i:06}.bin"), "w") as f:
                f.write("x" * (i % 50 + 1))
        secs, rss = peak_rss_of([BIN, "--config", cfg, "run", "--once"], env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stored = emu.count()
        if stored != count:
            raise SystemExit(f"one folder of {count} stored {stored}")
        st_secs, st_rss = peak_rss_of([BIN, "--config", cfg, "status", "--json"], env=env(),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        emu.stop()
        out[label] = {"files": count, "run_once_s": round(secs, 1), "run_once_peak_rss_mib": round(rss, 1),
                      "status_json_s": round(st_secs, 2), "status_json_peak_rss_mib": round(st_rss, 1)}
    out["run_rss_ratio"] = round(out["files"]["run_once_peak_rss_mib"] / out["baseline_1000"]["run_once_peak_rss_mib"], 2)
    out["status_rss_ratio"] = round(out["files"]["status_json_peak_rss_mib"] / out["baseline_1000"]["status_json_peak_rss_mib"], 2)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--idle", type=int, default=60)
    ap.add_argument("--ingest", type=int, default=100_000)
    ap.add_argument("--folder", type=int, default=50_000)
    ap.add_argument("--only", default="latency,burst,restart,ingest,folder")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if not os.environ.get("AUTORENDER_SYNC_BIN"):
        sh("cargo", "build", "--release", "--quiet", cwd=ROOT)
    work = tempfile.mkdtemp(prefix="ar-bench-")
    try:
        out = {}
        def part(name):
            d = os.path.join(work, name); os.makedirs(d); return d
        def done(name, result):
            out[name] = result
            print(f"{name}: {json.dumps(result)}", file=sys.stderr, flush=True)
        if "latency" in only:
            done("latency", latency(part("latency")))
        if "burst" in only:
            done("burst", burst(part("burst")))
        if "restart" in only:
            d = part("restart")
            result, cfg = restart(d, args.files)
            done("restart", result)
            done("idle", idle(d, cfg, args.idle))
        if "ingest" in only:
            done("ingest", ingest(part("ingest"), args.ingest))
        if "folder" in only:
            done("folder", one_folder(part("folder"), args.folder))
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
