#!/usr/bin/env python3
"""Benchmark for camera cards with an ASC MHL history (issue 28). Not run in CI.

A card of N clips (default 20 x 102 MiB, about 2 GiB) made by the ASC
reference tool (`ascmhl create -h FORMAT`) is moved into a watched folder
with `sets = "folder"`; the agent runs until the set is complete. For each
mode it reports, from the agent's /proc/<pid>/io and /proc/<pid>/stat:
  - wall time from the card's arrival to the set's completion,
  - bytes the agent read per byte uploaded: `rchar` (every read() it made:
    the files' bytes, plus a few KiB of HTTP answers and journal pages) and
    `read_bytes` (what came from the disk, not the page cache; the cache is
    dropped before each run when run as root),
  - CPU seconds (user + system) per GiB uploaded.
Modes: set_mhl = "off" (no check: today's path for a set, pre-hash + send),
"verify", "write" (+ our generation and the history sent); and, with
AUTORENDER_BASELINE_BIN=path, the same card through an older build (no
check), all in the same run.

Usage: scripts/bench-mhl.py [--files 20] [--mib 102] [--format xxh64] [--modes off,verify,write]
                            [--reps 3]   (medians of the reps, modes interleaved)
Needs: python3, `ascmhl` on PATH (pip install ascmhl), a release build.
"""
import argparse, json, os, shutil, statistics, subprocess, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("AUTORENDER_SYNC_BIN") or os.path.join(ROOT, "target", "release", "autorender-sync")
BASELINE = os.environ.get("AUTORENDER_BASELINE_BIN")
KEY = "bench-key"
TICK = os.sysconf("SC_CLK_TCK")


def env():
    return dict(os.environ, AUTORENDER_API_KEY=KEY, AUTORENDER_SYNC_LOG="warn")


class Emulator:
    def __init__(self, work):
        self.p = subprocess.Popen([BIN, "emulator", "--listen", "127.0.0.1:0", "--api-key", KEY,
                                   "--store", os.path.join(work, "store")],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.p.stdout.readline().strip().removeprefix("listening on ")

    def count(self):
        with urllib.request.urlopen(self.url + "/_emulator/stats") as r:
            s = json.load(r)
        return s["complete_ok"] + s["direct_ok"]

    def stop(self):
        self.p.terminate(); self.p.wait()


def drop_caches():
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def proc_io(pid):
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def make_card(card, files, mib, fmt):
    os.makedirs(os.path.join(card, "Clips"))
    block = os.urandom(1 << 20)
    for i in range(files):
        with open(os.path.join(card, "Clips", f"A001C{i + 1:03}.mov"), "wb") as f:
            for j in range(mib):
                # Distinct content per MiB and file (no two parts alike).
                f.write(block[: (1 << 20) - 8] + (i * 4096 + j).to_bytes(8, "little"))
    subprocess.run(["ascmhl", "create", "-h", fmt, card], check=True, stdout=subprocess.DEVNULL)


def run(bin_, work, card_src, mode, files):
    drop = os.path.join(work, "drop"); os.makedirs(drop)
    emu = Emulator(work)
    cfg = os.path.join(work, "config.toml")
    extra = "" if mode == "baseline" else f'set_mhl = "{mode}"\n'
    with open(cfg, "w") as f:
        f.write(f'[api]\nendpoint = "{emu.url}"\n[agent]\nstate_dir = "{work}/state"\nsettle = "1s"\n'
                f'rescan_interval = "0s"\n[[watch]]\npath = "{drop}"\nremote_folder = "cards"\n'
                f'sets = "folder"\nset_quiet = "2s"\n{extra}')
    a = subprocess.Popen([bin_, "--config", cfg, "run"], env=env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(1.5)  # the watcher comes up (not measured)
    cached = drop_caches()
    before = proc_io(a.pid)
    card = os.path.join(drop, "A001")
    t0 = time.monotonic()
    os.rename(card_src, card)
    # clips + the history (2 files; "write" adds ours)
    want = files + (3 if mode == "write" else 2)
    while emu.count() < want:
        if a.poll() is not None:
            raise SystemExit(f"{mode}: the agent exited")
        time.sleep(0.05)
    wall = time.monotonic() - t0
    after = proc_io(a.pid)
    a.terminate(); a.wait(); emu.stop()
    os.rename(card, card_src)
    if mode == "write":
        # Leave the card as it was made for the next mode.
        for n in sorted(os.listdir(os.path.join(card_src, "ascmhl"))):
            if n.startswith("0002_"):
                os.remove(os.path.join(card_src, "ascmhl", n))
    shutil.rmtree(os.path.join(work, "store"), ignore_errors=True)
    return wall, {k: after[k] - before[k] for k in ("rchar", "read_bytes", "cpu_s")}, cached


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--mib", type=int, default=102)
    ap.add_argument("--format", default="xxh64")
    ap.add_argument("--modes", default="off,verify,write")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    top = tempfile.mkdtemp(prefix="bench-mhl-")
    card = os.path.join(top, "A001")
    make_card(card, args.files, args.mib, args.format)
    chain = os.path.join(card, "ascmhl", "ascmhl_chain.xml")
    with open(chain, "rb") as f:
        chain_bytes = f.read()
    size = args.files * args.mib << 20
    modes = ([("baseline", BASELINE)] if BASELINE else []) + [(m, BIN) for m in args.modes.split(",")]
    rows = []
    samples = {m: [] for m, _ in modes}
    # Modes interleaved, rep by rep: a slow minute of the machine lands on
    # every mode alike.
    for rep in range(args.reps):
        for mode, bin_ in modes:
            work = tempfile.mkdtemp(dir=top)
            wall, io, cached = run(bin_, work, card, mode, args.files)
            with open(chain, "wb") as f:
                f.write(chain_bytes)
            shutil.rmtree(work, ignore_errors=True)
            samples[mode].append((wall, io, cached))
            print(json.dumps({"rep": rep, "mode": mode, "wall_s": round(wall, 2), **io}), flush=True)
    med = statistics.median
    for mode, _ in modes:
        s = samples[mode]
        cached = all(c for _, _, c in s)
        rows.append({"mode": mode, "wall_s": round(med(w for w, _, _ in s), 1),
                     "read_per_byte_uploaded": round(med(io["rchar"] for _, io, _ in s) / size, 3),
                     "disk_read_per_byte_uploaded":
                         round(med(io["read_bytes"] for _, io, _ in s) / size, 3) if cached else None,
                     "cpu_s_per_gib": round(med(io["cpu_s"] for _, io, _ in s) / (size / (1 << 30)), 2)})
    base = rows[0]
    for r in rows[1:]:
        r["wall_vs_first"] = round(r["wall_s"] / base["wall_s"], 2)
        r["cpu_vs_first"] = round(r["cpu_s_per_gib"] / base["cpu_s_per_gib"], 2)
    print(json.dumps({"card": {"files": args.files, "bytes": size, "format": args.format}, "runs": rows}, indent=1))
    shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
