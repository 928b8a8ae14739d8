#!/usr/bin/env python3
"""Small-file benchmark (BENCHMARKS.md): N files of 1-64 KiB sent by
`autorender-sync upload` through the direct path (one request per file) and
through the multipart path (start + PUT + complete), against 8 parallel
`curl -F` single-request uploads as the baseline, all in the same run against
the release emulator on loopback. Also: the cost of adoption (a lost
state_dir) on a folder of --adopt files.

    cargo build --release && scripts/bench-small.py [--files 2000] [--adopt 10000] [--reps 3]
"""
import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import json
import urllib.request

# AUTORENDER_SYNC_BIN: measure another build (e.g. a copy of an older one).
BIN = os.environ.get("AUTORENDER_SYNC_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "target", "release", "autorender-sync")
KEY = "bench-key"


def emulator(store, *extra):
    p = subprocess.Popen([BIN, "emulator", "--listen", "127.0.0.1:0", "--api-key", KEY, "--store", store, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = p.stdout.readline().strip().removeprefix("listening on ")
    return p, url


def stats(url):
    with urllib.request.urlopen(url + "/_emulator/stats") as r:
        return json.load(r)


def run_timed(cmd, env=None):
    """Wall seconds and peak RSS (MiB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.monotonic()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, (rss if rss > before else before) / 1024


def config(dir, url, direct_max, state):
    path = os.path.join(dir, f"config-{direct_max}.toml")
    with open(path, "w") as f:
        f.write(f'[api]\nendpoint = "{url}"\n[agent]\nstate_dir = "{state}"\n'
                f'concurrent_files = 8\ndirect_upload_max = "{direct_max}"\n')
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--adopt", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--latency", type=int, default=20, help="ms the emulator adds to each request")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-small-")
    try:
        rnd = random.Random(7)
        files = []
        os.makedirs(os.path.join(work, "files"))
        for i in range(a.files):
            p = os.path.join(work, "files", f"f{i:05}.bin")
            with open(p, "wb") as f:
                f.write(rnd.randbytes(rnd.randint(1024, 64 * 1024)))
            files.append(p)
        # 20 ms per API and storage request: a nearby service, not loopback's zero.
        emu, url = emulator(os.path.join(work, "store"), "--latency", str(a.latency))
        env = dict(os.environ, AUTORENDER_API_KEY=KEY)
        results = {"direct": [], "multipart": [], "curl": []}
        for rep in range(a.reps):
            for mode in ("direct", "multipart", "curl"):
                if mode == "curl":
                    script = (f'xargs -P8 -I{{}} sh -c \'curl -sf -o /dev/null -H "Authorization: Bearer {KEY}" '
                              f'-F "file=@$1" -F "file_name=$(basename "$1")" -F folder=bench/curl{rep} '
                              f'{url}/api/v1/uploads\' _ {{}}')
                    t = time.monotonic()
                    subprocess.run(["sh", "-c", script], input="\n".join(files), text=True, check=True)
                    results[mode].append((time.monotonic() - t, 0.0))
                    continue
                state = os.path.join(work, f"state-{mode}-{rep}")
                cfg = config(work, url, "8MiB" if mode == "direct" else "0", state)
                cmd = [BIN, "--config", cfg, "upload", "--folder", f"bench/{mode}{rep}", *files]
                results[mode].append(run_timed(cmd, env))
        s = stats(url)
        emu.terminate()
        emu.wait()
        med = {m: statistics.median(w for w, _ in r) for m, r in results.items()}
        rss = {m: max(r for _, r in results[m]) for m in ("direct", "multipart")}
        n = a.files
        print(f"{n} files of 1-64 KiB, {a.latency} ms per request, median of {a.reps} (wall s, files/s, peak RSS):")
        for m in ("direct", "multipart", "curl"):
            extra = f", {rss[m]:.1f} MiB" if m in rss else ""
            print(f"  {m:10} {med[m]:7.2f} s  {n / med[m]:8.0f} files/s{extra}")
        print(f"  direct/multipart files/s = {med['multipart'] / med['direct']:.2f}x  (target >= 2)")
        print(f"  direct/curl      files/s = {med['curl'] / med['direct']:.2f}x  (target >= 1)")
        print(f"  emulator: {s['direct_ok']} direct, {s['complete_ok']} multipart stored")

        # Adoption: --adopt files uploaded, state lost, run --once again.
        if a.adopt:
            emu, url = emulator(os.path.join(work, "store2"), "--answers", "sdk")
            drop = os.path.join(work, "drop")
            os.makedirs(drop)
            for i in range(a.adopt):
                with open(os.path.join(drop, f"a{i:05}.bin"), "wb") as f:
                    f.write(rnd.randbytes(64))
            state = os.path.join(work, "state-adopt")
            cfg = os.path.join(work, "adopt.toml")
            with open(cfg, "w") as f:
                f.write(f'[api]\nendpoint = "{url}"\n[agent]\nstate_dir = "{state}"\nsettle = "100ms"\n'
                        f'concurrent_files = 8\n[[watch]]\npath = "{drop}"\nremote_folder = "bench/adopt"\n')
            run_timed([BIN, "--config", cfg, "run", "--once"], env)
            shutil.rmtree(state)
            before = stats(url)
            wall, rss = run_timed([BIN, "--config", cfg, "run", "--once"], env)
            after = stats(url)
            emu.terminate()
            emu.wait()
            reqs = {k: after[k] - before[k] for k in ("list_files", "list_folders", "direct", "start", "url_gets")}
            print(f"adoption of {a.adopt} remote files after a lost state_dir: {wall:.2f} s, {rss:.1f} MiB, "
                  f"requests {reqs}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
