#!/usr/bin/env python3
"""Soak test (not in CI): a steady trickle of files into a watched folder for
DURATION minutes with the emulator's faults on. Reports RSS and open file
descriptors of the agent at the start and the end, and files lost,
duplicated and corrupted (all must be 0).

Usage: scripts/soak.py [--minutes 30] [--every 0.5]
"""
import argparse, hashlib, json, os, random, subprocess, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "autorender-sync")
KEY = "soak-key"


def proc_stats(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return {"rss_mib": round(rss, 1), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--every", type=float, default=0.5)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="ar-soak-")
    drop = os.path.join(work, "drop"); os.makedirs(drop)
    emu = subprocess.Popen([BIN, "emulator", "--listen", "127.0.0.1:0", "--api-key", KEY, "--store",
                            os.path.join(work, "store"), "--part-size", "512KiB", "--fail-parts", "0.1",
                            "--throttle-start", "0.1", "--fail-complete", "0.05", "--url-ttl", "30", "--seed", "3"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = emu.stdout.readline().strip().removeprefix("listening on ")
    cfg = os.path.join(work, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'[api]\nendpoint = "{url}"\nrequest_timeout = "10s"\n[agent]\nstate_dir = "{work}/state"\n'
                f'settle = "500ms"\nmax_attempts = 100\n[[watch]]\npath = "{drop}"\nremote_folder = "soak"\n')
    env = dict(os.environ, AUTORENDER_API_KEY=KEY, AUTORENDER_SYNC_LOG="warn")
    log = open(os.path.join(work, "agent.log"), "w")
    agent = subprocess.Popen([BIN, "--config", cfg, "run"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    time.sleep(2)
    start = proc_stats(agent.pid)
    rng = random.Random(42)
    written = {}
    samples = []
    t_end = time.monotonic() + args.minutes * 60
    next_sample = time.monotonic() + 60
    i = 0
    while time.monotonic() < t_end:
        data = os.urandom(rng.randint(1024, 2 * 1024 * 1024))
        name = f"f{i:06}.bin"
        with open(os.path.join(drop, name), "wb") as f:
            f.write(data)
        written[name] = hashlib.sha256(data).hexdigest()
        i += 1
        if time.monotonic() >= next_sample:
            samples.append(proc_stats(agent.pid)); next_sample += 60
        time.sleep(args.every)

    def ledger():
        with urllib.request.urlopen(url + "/_emulator/uploads") as r:
            return json.load(r)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(ledger()) < len(written):
        time.sleep(1)
    end = proc_stats(agent.pid)
    agent.terminate(); agent.wait(); emu_stats = json.load(urllib.request.urlopen(url + "/_emulator/stats"))
    entries = ledger()
    emu.terminate(); emu.wait()
    names = [e["name"] for e in entries]
    lost = [n for n in written if n not in names]
    dup = len(names) - len(set(names))
    corrupt = [e["name"] for e in entries if written.get(e["name"]) != e["sha256"]]
    print(json.dumps({
        "minutes": args.minutes, "files": len(written), "lost": len(lost), "duplicated": dup,
        "corrupted": len(corrupt), "faults_injected": emu_stats["faults_injected"],
        "start": start, "end": end, "per_minute": samples, "work_dir": work,
    }, indent=2))


if __name__ == "__main__":
    main()
