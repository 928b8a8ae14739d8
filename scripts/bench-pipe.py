#!/usr/bin/env python3
"""Adaptive transfer benchmark (BENCHMARKS.md, "Adaptive transfer"): the
release agent (`run`) against the release emulator simulating a long fat
pipe (--latency ms per request, each connection capped at --stream-rate, all
of them together at --link-rate), all in one run:

  - one big file (--big-mib) and --small files of 1-64 KiB, sent with the
    adaptive budget (no concurrent_parts), with today's fixed default
    (concurrent_parts = 4) and with each hand-tuned value of --fixed (for the
    small files that value is concurrent_files: with a fixed count they go
    one at a time in their lane);
  - the big file again with the link halved --halve seconds in: how the
    limit followed it (from `status --json`) and whether requests failed;
  - on plain loopback (no pipe), a --loop-mib file adaptive vs fixed 4.

Peak RSS is the agent's VmHWM, read from /proc just before it is stopped.

    cargo build --release && python3 -u scripts/bench-pipe.py [--big-mib 2048] [--small 2000] [--fixed 16,24,32]
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("AUTORENDER_SYNC_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "target", "release", "autorender-sync")
KEY = "bench-key"
MIB = 1 << 20


def emulator(store, *extra):
    p = subprocess.Popen([BIN, "emulator", "--listen", "127.0.0.1:0", "--api-key", KEY, "--store", store, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = p.stdout.readline().strip().removeprefix("listening on ")
    return p, url


def status(cfg, env):
    out = subprocess.run([BIN, "--config", cfg, "status", "--json"], env=env, capture_output=True, text=True)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return {}


def hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_agent(work, name, url, drop, count, agent_extra, env, on_tick=None):
    """Starts `run` on `drop` until `count` files are done; returns
    (wall s, peak RSS MiB, the concurrency views seen, log text)."""
    state = os.path.join(work, f"state-{name}")
    cfg = os.path.join(work, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(f'[api]\nendpoint = "{url}"\n[agent]\nstate_dir = "{state}"\nsettle = "100ms"\n'
                f'rescan_interval = "0s"\n{agent_extra}\n'
                f'[[watch]]\npath = "{drop}"\nremote_folder = "bench/{name}"\n')
    log = open(os.path.join(work, f"{name}.log"), "w+")
    t0 = time.monotonic()
    p = subprocess.Popen([BIN, "--config", cfg, "run"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    seen = []
    done = 0
    while done < count:
        time.sleep(0.5)
        if p.poll() is not None:
            raise SystemExit(f"{name}: the agent exited ({p.returncode}); log in {log.name}")
        s = status(cfg, env)
        roots = s.get("roots") or [{}]
        done = roots[0].get("done", 0)
        if roots[0].get("failed", 0):
            raise SystemExit(f"{name}: a file failed; log in {log.name}")
        c = (s.get("agent") or {}).get("concurrency")
        if c:
            seen.append((time.monotonic() - t0, c))
        if on_tick:
            on_tick(time.monotonic() - t0)
    wall = time.monotonic() - t0
    rss = hwm_mib(p.pid)
    p.send_signal(signal.SIGINT)
    p.wait()
    log.seek(0)
    return wall, rss, seen, log.read()


def make_big(path, mib):
    rnd = random.Random(mib)
    block = rnd.randbytes(MIB)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(block[i % 251:] + block[:i % 251])


def make_small(dir, n):
    rnd = random.Random(7)
    total = 0
    os.makedirs(dir)
    for i in range(n):
        data = rnd.randbytes(rnd.randint(1024, 64 * 1024))
        total += len(data)
        with open(os.path.join(dir, f"f{i:05}.bin"), "wb") as f:
            f.write(data)
    return total


def loopback(a, work, env, results):
    """Plain loopback: a --loop-mib file with the adaptive budget and with
    today's fixed 4, no slower."""
    loop = os.path.join(work, "loop")
    os.makedirs(loop)
    make_big(os.path.join(loop, "big.bin"), a.loop_mib)
    # `upload` (timed to the millisecond; the agent's status polls are
    # half a second apart), interleaved, 5 each, `sync` before each (the
    # emulator's store is written to disk).
    # The store in memory (/dev/shm) where there is room: the disk's
    # writeback otherwise decides the time.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 3 * a.loop_mib * MIB else work
    for rep in range(5):
        for name, extra in (("adaptive", ""), ("fixed-4", "concurrent_parts = 4")):
            # A fresh emulator each time (one that served gigabytes slows).
            store = tempfile.mkdtemp(prefix="bench-pipe-store-", dir=shm)
            emu, url = emulator(store)
            cfg = os.path.join(work, f"loop-{name}.toml")
            with open(cfg, "w") as f:
                f.write(f'[api]\nendpoint = "{url}"\n[agent]\nstate_dir = "{work}/state-loop-{name}-{rep}"\n'
                        f'{extra}\n')
            os.sync()
            t0 = time.monotonic()
            subprocess.run([BIN, "--config", cfg, "upload", "--folder", f"loop/{name}{rep}",
                            os.path.join(loop, "big.bin")], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.monotonic() - t0
            emu.terminate()
            emu.wait()
            shutil.rmtree(store, ignore_errors=True)
            results.setdefault(("loop", name), []).append(wall)
            print(f"  loopback {a.loop_mib} MiB {name:9} {wall:6.2f} s", flush=True)
    ad, fx = (statistics.median(results[("loop", n)]) for n in ("adaptive", "fixed-4"))
    print(f"  loopback: adaptive {ad:.2f} s vs fixed-4 {fx:.2f} s (median of 5): {ad / fx:.2f}x its time")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mib", type=int, default=2048)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--fixed", default="16,24,32", help="hand-tuned concurrent_parts values to try")
    ap.add_argument("--latency", type=int, default=100)
    ap.add_argument("--stream-rate", default="2MiB")
    ap.add_argument("--link-mib", type=int, default=40)
    ap.add_argument("--halve", type=float, default=20.0, help="seconds into the big file when the link halves")
    ap.add_argument("--loop-mib", type=int, default=1024)
    ap.add_argument("--only", choices=["all", "halve", "loop"], default="all",
                    help="halve: only the link that halves; loop: only plain loopback")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-pipe-")
    env = dict(os.environ, AUTORENDER_API_KEY=KEY)
    env.pop("AUTORENDER_SYNC_LOG", None)
    link = a.link_mib * MIB
    pipe = ["--latency", str(a.latency), "--stream-rate", a.stream_rate, "--link-rate", str(link)]
    fixed = [4] + [int(x) for x in a.fixed.split(",") if x and int(x) != 4]
    modes = [("adaptive", "")] + [(f"fixed-{n}", f"concurrent_parts = {n}") for n in fixed]
    try:
        big = os.path.join(work, "big")
        os.makedirs(big)
        make_big(os.path.join(big, "plate.mov"), a.big_mib)
        small = os.path.join(work, "small")
        small_bytes = make_small(small, a.small) if a.only == "all" else 0
        if a.only == "loop":
            a.big_mib = 1
        print(f"pipe: {a.latency} ms per request, {a.stream_rate}/s per connection, {a.link_mib} MiB/s link")
        results = {}
        # Small files: with a fixed concurrent_parts they go one at a time in
        # their lane beside concurrent_files - 1 others, so the hand-tuned
        # knob there is concurrent_files.
        small_modes = [("adaptive", ""), ("fixed-4", "concurrent_parts = 4"),
                       ("adapt-128", "max_concurrent_parts = 128")] + [
            (f"files-{n}", f"concurrent_parts = 4\nconcurrent_files = {n}") for n in fixed if n != 4]
        for what, drop, count, size, modes in (("big", big, 1, a.big_mib * MIB, modes),
                                               ("small", small, a.small, small_bytes, small_modes)):
            if a.only != "all":
                break
            for name, extra in modes:
                store = os.path.join(work, f"store-{what}-{name}")
                emu, url = emulator(store, *pipe)
                wall, rss, seen, _ = run_agent(work, f"{what}-{name}", url, drop, count, extra, env)
                emu.terminate()
                emu.wait()
                shutil.rmtree(store, ignore_errors=True)
                peak = max((c["limit"] for _, c in seen), default=0)
                results[(what, name)] = wall
                print(f"  {what:5} {name:10} {wall:7.1f} s  {size / wall / MIB:6.1f} MiB/s  "
                      f"{100 * size / wall / link:5.1f} % of link  peak RSS {rss:5.1f} MiB  "
                      f"highest limit {peak}", flush=True)
            best = min((w, n) for (wh, n), w in results.items() if wh == what and not n.startswith("adapt"))
            ad = results[(what, "adaptive")]
            print(f"  {what}: adaptive {ad:.1f} s; best fixed ({best[1]}) {best[0]:.1f} s: adaptive takes "
                  f"{ad / best[0]:.2f}x its time; today's fixed-4 takes {results[(what, 'fixed-4')] / ad:.1f}x "
                  f"adaptive's", flush=True)

        # The link halves mid-transfer.
        if a.only == "loop":
            return loopback(a, work, env, results)
        emu, url = emulator(os.path.join(work, "store-halve"), *pipe)
        halved = {}

        def tick(t):
            if t >= a.halve and not halved:
                urllib.request.urlopen(urllib.request.Request(
                    f"{url}/_emulator/link?rate={link // 2}", method="POST")).read()
                halved["at"] = t

        wall, rss, seen, log = run_agent(work, "halve", url, big, 1, "", env, tick)
        emu.terminate()
        emu.wait()
        shutil.rmtree(os.path.join(work, "store-halve"), ignore_errors=True)
        at = halved.get("at", wall)
        trail = []
        for t, c in seen:
            if not trail or trail[-1][1] != c["limit"]:
                trail.append((t, c["limit"], c["reason"]))
        first = next((t for t, lim, why in trail if t > at and why == "slowed"), None)
        errors = seen[-1][1]["changes"].get("errors", 0) if seen else 0
        print(f"  halving at {at:.1f} s: limit over time " +
              ", ".join(f"{t:.0f}s:{lim}({why})" for t, lim, why in trail))
        print(f"  first cut {('%.1f s' % (first - at)) if first else 'never'} after the link halved; "
              f"cuts for errors {errors}; warnings in the log {log.count(' WARN ')}; {wall:.1f} s in all, "
              f"peak RSS {rss:.1f} MiB", flush=True)

        # Plain loopback: no slower than today's fixed 4.
        if a.only == "all":
            loopback(a, work, env, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
