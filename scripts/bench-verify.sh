#!/usr/bin/env bash
# `verify --content` (issue 24): N files of SIZE bytes uploaded to the
# emulator, then every one downloaded through its url and hashed; against a
# baseline measured in the same run: hashing the same bytes locally
# (sha256sum over the files, one process per 1,000 files). Usage:
#   scripts/bench-verify.sh [N=10000] [SIZE=65536]
# Needs a release build (cargo build --release). Prints MiB/s of each and the ratio.
set -euo pipefail
N=${1:-10000}; SIZE=${2:-65536}
B="$(cd "$(dirname "$0")/.." && pwd)/target/release/autorender-sync"
W=$(mktemp -d); mkdir -p "$W/drop"
trap 'kill $E 2>/dev/null || true; rm -rf "$W"' EXIT
python3 - "$W/drop" "$N" "$SIZE" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    sub = os.path.join(d, f"d{i // 1000:02d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(size))
PY
"$B" emulator --listen 127.0.0.1:0 --api-key k > "$W/emu.out" 2> "$W/emu.log" & E=$!
for _ in $(seq 1 100); do grep -q listening "$W/emu.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$W/emu.out")
cat > "$W/c.toml" <<EOT
[api]
endpoint = "$URL"
[agent]
state_dir = "$W/state"
settle = "100ms"
[control]
listen = "off"
[[watch]]
path = "$W/drop"
remote_folder = "bench"
EOT
export AUTORENDER_API_KEY=k AUTORENDER_SYNC_LOG=warn
"$B" --config "$W/c.toml" run --once -q
MIB=$(python3 -c "print($N*$SIZE/1048576)")
t0=$(date +%s.%N)
find "$W/drop" -type f -print0 | xargs -0 -n 1000 sha256sum > /dev/null
t1=$(date +%s.%N)
"$B" --config "$W/c.toml" verify -q > /dev/null; t15=$(date +%s.%N); echo "plain verify: $(python3 -c "print(round($t15-$t1,2))") s" >&2; t1=$t15
"$B" --config "$W/c.toml" verify --content -q > "$W/verify.out"
t2=$(date +%s.%N)
tail -1 "$W/verify.out"
python3 - "$N" "$MIB" "$t0" "$t1" "$t2" <<'PY'
import sys
n = int(sys.argv[1]); mib, t0, t1, t2 = map(float, sys.argv[2:])
local, verify = mib / (t1 - t0), mib / (t2 - t1)
print(f"{mib:.0f} MiB in {n} files: local sha256sum {local:.0f} MiB/s ({t1-t0:.2f} s), "
      f"verify --content {verify:.0f} MiB/s ({t2-t1:.2f} s), ratio {verify/local:.2f}")
PY
