#!/usr/bin/env bash
# Idle cost of upload sets (issue 15): 100 sets x 200 frames waiting for a trigger that never
# comes, vs the same 20,000 files uploaded with sets off. Usage:
#   scripts/bench-sets-idle.sh $'sets = "folder"\nset_trigger = "_DONE"' held
#   scripts/bench-sets-idle.sh "" done
# Needs a release build (cargo build --release). Prints CPU-s per minute over 30 s and peak RSS.
set -e
B="$(dirname "$0")/../target/release/autorender-sync"
W=$(mktemp -d); mkdir -p $W/drop
for s in $(seq -w 1 100); do mkdir -p $W/drop/sh$s; for f in $(seq -w 1 200); do echo x > $W/drop/sh$s/sh$s.0$f.exr; done; done
$B emulator --listen 127.0.0.1:18790 --api-key k > $W/emu.log 2>&1 & E=$!
cat > $W/c.toml <<EOT
[api]
endpoint = "http://127.0.0.1:18790"
[agent]
state_dir = "$W/state"
settle = "200ms"
[control]
listen = "off"
[[watch]]
path = "$W/drop"
remote_folder = "r"
$1

EOT
AUTORENDER_API_KEY=k AUTORENDER_SYNC_LOG=warn $B --config $W/c.toml run & A=$!
# wait until all 20,000 are held
for i in $(seq 1 300); do n=$(AUTORENDER_API_KEY=k $B --config $W/c.toml status --json | python3 -c "import json,sys;print(json.load(sys.stdin)['roots'][0]['$2'])"); [ "$n" = 20000 ] && break; sleep 1; done
sleep 5
c0=$(awk '{print $14+$15}' /proc/$A/stat); sleep 30; c1=$(awk '{print $14+$15}' /proc/$A/stat)
echo "held=$n cpu_s_per_min=$(python3 -c "print(round(($c1-$c0)/$(getconf CLK_TCK)*2,3))") rss_mib=$(awk '/VmHWM/{print $2/1024}' /proc/$A/status)"
kill $A $E; rm -rf $W
