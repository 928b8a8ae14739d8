#!/usr/bin/env python3
"""Fleet benchmark (issue 16). Not run in CI.

On one machine, against the emulator with `--latency MS` per request (a
WAN-like round trip), the same files are uploaded by:
  - one agent on the SQLite journal, every file multipart (a fleet sends
    every file multipart, so this is the like-for-like baseline);
  - a fleet of 1, 2 and 3 agents (separate processes and state dirs) sharing
    a queue in a throwaway PostgreSQL cluster.
Each is timed from the agents' start (the files are already there: the
initial scan queues them) until the emulator holds every file; a fresh
database and emulator per run. The claim overhead per file is the 1-node
fleet's extra time over SQLite, in upload-slot time
((T_fleet1 - T_sqlite) * concurrent_files / files).

Usage: scripts/bench-fleet.py [--files 400] [--size 1048576] [--latency 50] [--rounds 3]
Needs: python3, PostgreSQL's initdb/postgres (Debian: postgresql), a release
build (it runs `cargo build --release`).
"""
import argparse, glob, importlib.util, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_agent", os.path.join(HERE, "bench-agent.py"))
ba = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ba)

CONCURRENT = 4


def pg_bin():
    for d in os.environ.get("PATH", "").split(":") + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "postgres")):
            return d
    sys.exit("PostgreSQL is not installed (apt-get install postgresql)")


def as_owner(args):
    return (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] + args) if os.geteuid() == 0 else args


class Postgres:
    def __init__(self, work):
        self.bin, self.dir = pg_bin(), os.path.join(work, "pg")
        os.makedirs(self.dir); os.chmod(work, 0o777); os.chmod(self.dir, 0o777)
        subprocess.run(as_owner([os.path.join(self.bin, "initdb"), "-D", self.dir + "/data", "-U", "fleet",
                                 "--auth=trust", "--no-sync"]), check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, LC_ALL="C"))
        import socket
        s = socket.socket(); s.bind(("127.0.0.1", 0)); self.port = s.getsockname()[1]; s.close()
        self.log = open(os.path.join(work, "pg.log"), "w")
        self.p = subprocess.Popen(as_owner([os.path.join(self.bin, "postgres"), "-D", self.dir + "/data",
                                            "-p", str(self.port), "-k", self.dir, "-c", "listen_addresses=127.0.0.1"]),
                                  stdout=subprocess.DEVNULL, stderr=self.log)
        ba.wait(lambda: "ready to accept" in open(os.path.join(work, "pg.log")).read(), timeout=30, step=0.05)
        self.n = 0

    def fresh_db(self):
        self.n += 1
        name = f"bench{self.n}"
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "fleet", "-d", "postgres", "-q",
                        "-c", f"CREATE DATABASE {name}"], check=True)
        return f"postgres://fleet@127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.p.terminate(); self.p.wait()


class Emulator(ba.Emulator):
    def __init__(self, work, latency):
        self.p = subprocess.Popen([ba.BIN, "emulator", "--listen", "127.0.0.1:0", "--api-key", ba.KEY,
                                   "--store", os.path.join(work, "store"), "--latency", str(latency)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.p.stdout.readline().strip().removeprefix("listening on ")


def node_config(work, i, emu, share, db):
    d = os.path.join(work, f"node{i}"); os.makedirs(d)
    fleet = (f'[fleet]\ndatabase = "{db}"\nnode = "node-{i}"\nlease = "10s"\n') if db else ""
    path = os.path.join(d, "config.toml")
    with open(path, "w") as f:
        f.write(f'[api]\nendpoint = "{emu.url}"\n[agent]\nstate_dir = "{d}/state"\nsettle = "200ms"\n'
                f'concurrent_files = {CONCURRENT}\nrescan_interval = "0s"\ndirect_upload_max = "0"\n'
                f'[control]\nlisten = "off"\n{fleet}'
                f'[[watch]]\npath = "{share}"\nremote_folder = "bench"\n'
                + ('share = "bench"\n' if db else ""))
    return path


def one_run(args, pg, nodes):
    """Seconds until every file is stored, with `nodes` agents (0: one agent on SQLite)."""
    work = tempfile.mkdtemp(prefix="bench-fleet-")
    try:
        share = os.path.join(work, "share"); os.makedirs(share)
        data = os.urandom(args.size)
        for i in range(args.files):
            with open(os.path.join(share, f"f{i:05}.exr"), "wb") as f:
                f.write(data[i % 251:] + data[:i % 251])
        # Files look settled from the start (mtime in the past).
        past = time.time() - 60
        for name in os.listdir(share):
            os.utime(os.path.join(share, name), (past, past))
        emu = Emulator(work, args.latency)
        db = pg.fresh_db() if nodes else None
        cfgs = [node_config(work, i, emu, share, db) for i in range(max(nodes, 1))]
        t0 = time.monotonic()
        procs = [ba.agent(c) for c in cfgs]
        def done():
            if any(p.poll() is not None for p in procs):
                sys.exit("an agent exited during the run (check its config with `autorender-sync check`)")
            return emu.count() >= args.files
        ba.wait(done, timeout=1800, step=0.02)
        took = time.monotonic() - t0
        ledger = emu.get("/_emulator/uploads")
        names = [e["name"] for e in ledger]
        if len(names) != len(set(names)) or len(names) != args.files:
            sys.exit(f"wrong ledger: {len(names)} entries, {len(set(names))} names")
        for p in procs:
            p.terminate(); p.wait()
        emu.stop()
        return took
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--latency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=os.path.dirname(HERE), check=True)
    pgwork = tempfile.mkdtemp(prefix="bench-fleet-pg-")
    pg = Postgres(pgwork)
    try:
        kinds = [0, 1, 2, 3]
        times = {k: [] for k in kinds}
        for r in range(args.rounds):
            for k in kinds:  # interleaved, so drift hits every kind alike
                times[k].append(one_run(args, pg, k))
                print(f"round {r + 1}: {'sqlite' if k == 0 else f'{k} node(s)'}: {times[k][-1]:.2f} s", flush=True)
    finally:
        pg.stop()
        shutil.rmtree(pgwork, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    mib = args.files * args.size / 1048576
    print(f"\n{args.files} files of {args.size} bytes, emulator latency {args.latency} ms, "
          f"concurrent_files {CONCURRENT} per agent, median of {args.rounds}")
    print("| journal | nodes | seconds | files/s | MiB/s | vs SQLite |")
    print("|---|---|---|---|---|---|")
    for k in kinds:
        name = "SQLite" if k == 0 else "PostgreSQL fleet"
        print(f"| {name} | {max(k, 1)} | {med[k]:.2f} | {args.files / med[k]:.1f} | {mib / med[k]:.1f} | "
              f"{med[0] / med[k]:.2f}x |")
    overhead = (med[1] - med[0]) * CONCURRENT / args.files * 1000
    print(f"\nclaim overhead per file (1-node fleet vs SQLite, upload-slot time): {overhead:.1f} ms")


if __name__ == "__main__":
    main()
