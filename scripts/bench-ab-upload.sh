#!/usr/bin/env bash
# Two builds, one machine, one session: `upload` of one SIZE MiB file
# (concurrent_parts = 4) by BASE and by NEW, interleaved RUNS times, each
# against a fresh emulator store after `sync`. Prints each run's wall
# seconds and peak RSS, then the medians and their ratio (new/base).
# Usage: scripts/bench-ab-upload.sh BASE_BIN NEW_BIN [SIZE_MIB=512] [RUNS=5]
# Needs: GNU time (/usr/bin/time). Not run in CI.
set -euo pipefail
BASE=$1; NEW=$2; SIZE_MIB=${3:-512}; RUNS=${4:-5}
KEY=bench-key
WORK=$(mktemp -d)
trap 'kill $EMU_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$WORK/input.bin"
EMU_PID=
one() { # BIN LABEL
  rm -rf "$WORK/store" "$WORK/state"; mkdir -p "$WORK/store"
  # One emulator for both (NEW's), so only the client differs.
  "$NEW" emulator --listen 127.0.0.1:0 --store "$WORK/store" --api-key "$KEY" > "$WORK/emu.out" 2>/dev/null &
  EMU_PID=$!
  for _ in $(seq 100); do [ -s "$WORK/emu.out" ] && break; sleep 0.05; done
  URL=$(head -1 "$WORK/emu.out" | sed 's/^listening on //')
  printf '[api]\nendpoint = "%s"\n[agent]\nconcurrent_parts = 4\nstate_dir = "%s/state"\n' "$URL" "$WORK" > "$WORK/config.toml"
  sync
  AUTORENDER_API_KEY=$KEY /usr/bin/time -f "%e %M" -o "$WORK/t" "$1" --config "$WORK/config.toml" -q upload --folder bench "$WORK/input.bin" > /dev/null
  kill $EMU_PID; wait $EMU_PID 2>/dev/null || true
  read -r secs kib < "$WORK/t"
  echo "$2 $secs $((kib / 1024))"
}
for _ in $(seq "$RUNS"); do one "$BASE" base; one "$NEW" new; done | tee "$WORK/runs"
python3 - "$WORK/runs" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {k: statistics.median(float(r[1]) for r in rows if r[0] == k) for k in ("base", "new")}
rss = {k: max(int(r[2]) for r in rows if r[0] == k) for k in ("base", "new")}
print(f"median wall: base {med['base']:.3f} s, new {med['new']:.3f} s, ratio {med['new'] / med['base']:.2f}")
print(f"peak RSS: base {rss['base']} MiB, new {rss['new']} MiB")
PY
