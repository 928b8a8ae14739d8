#!/usr/bin/env bash
# Benchmark: upload one large file to the local emulator three ways, in the
# same run, and report wall time and peak RSS as ratios.
#   (a) the documented shell flow: split + a sequential curl loop + complete
#   (b) the same parts sent by 4 parallel curls (xargs -P4)
#   (c) autorender-sync upload (concurrent_parts = 4)
# Usage: scripts/bench-upload.sh [SIZE_MIB=1024] [REPS=3]
# Needs: curl, jq, split, GNU time (/usr/bin/time). Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
REPS=${2:-3}
KEY=bench-key
WORK=$PWD/bench-work
for tool in curl jq split /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install curl jq coreutils time)"; exit 2; }
done

cargo build --release --quiet
BIN=$PWD/target/release/autorender-sync
rm -rf "$WORK"; mkdir -p "$WORK/store"
FILE=$WORK/input.bin
echo "writing a ${SIZE_MIB} MiB test file…" >&2
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$FILE"
SIZE=$(stat -c %s "$FILE")
sync

"$BIN" emulator --listen 127.0.0.1:0 --store "$WORK/store" --api-key "$KEY" > "$WORK/emu.out" 2>/dev/null &
EMU_PID=$!
trap 'kill $EMU_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$WORK/emu.out" ] && break; sleep 0.05; done
URL=$(head -1 "$WORK/emu.out" | sed 's/^listening on //')
printf '[api]\nendpoint = "%s"\n[agent]\nconcurrent_parts = 4\nstate_dir = "%s/state"\n' "$URL" "$WORK" > "$WORK/config.toml"

# The shell flows, as a user would write them from the API docs.
cat > "$WORK/shell-flow.sh" <<'SH'
#!/usr/bin/env bash
set -euo pipefail
URL=$1 KEY=$2 FILE=$3 PAR=$4 WORK=$5
SIZE=$(stat -c %s "$FILE")
sync
START=$(curl -sf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d "{\"file_name\":\"shell-$PAR.bin\",\"size\":$SIZE,\"format\":\"application/octet-stream\",\"folder\":\"bench\"}" \
  "$URL/api/v1/multipart/start")
PART_SIZE=$(jq -r .part_size <<<"$START")
SESSION=$(jq -r .session_id <<<"$START")
PARTS=$WORK/parts; rm -rf "$PARTS"; mkdir -p "$PARTS"
split -b "$PART_SIZE" -d -a 5 "$FILE" "$PARTS/p."
jq -r '.parts | to_entries[] | "\(.key) \(.value)"' <<<"$START" > "$PARTS/list"
put() { curl -sf -X PUT -H 'Content-Type: application/octet-stream' -T "$PARTS/p.$(printf %05d "$1")" "$2" -o /dev/null; }
export -f put; export PARTS
if [ "$PAR" = 1 ]; then
  while read -r i u; do put "$i" "$u"; done < "$PARTS/list"
else
  xargs -P "$PAR" -L 1 bash -c 'put "$0" "$1"' < "$PARTS/list"
fi
curl -sf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d "{\"session_id\":\"$SESSION\"}" "$URL/api/v1/multipart/complete" -o /dev/null
rm -rf "$PARTS"
SH
chmod +x "$WORK/shell-flow.sh"

measure() { # name, command... → "seconds maxrss_kib"
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time.$name" "$@" > /dev/null 2> "$WORK/err.$name" || {
    echo "$name failed:" >&2; cat "$WORK/err.$name" >&2; exit 1; }
  cat "$WORK/time.$name"
  rm -rf "$WORK/store/bench" "$WORK/store/.emulator/objects/"* # keep the disk free between runs
  sync # flush the emulator's writes so the next run does not pay for this one's writeback
}

declare -A T R
for rep in $(seq "$REPS"); do
  for m in seq par4 agent; do
    case $m in
      seq)   out=$(measure seq "$WORK/shell-flow.sh" "$URL" "$KEY" "$FILE" 1 "$WORK") ;;
      par4)  out=$(measure par4 "$WORK/shell-flow.sh" "$URL" "$KEY" "$FILE" 4 "$WORK") ;;
      agent) out=$(AUTORENDER_API_KEY=$KEY measure agent "$BIN" --config "$WORK/config.toml" -q upload --folder bench "$FILE") ;;
    esac
    T[$m]+="${out% *} "; R[$m]+="${out#* } "
    echo "rep $rep $m: ${out% *} s, peak RSS ${out#* } KiB" >&2
  done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ts=$(median "${T[seq]}"); tp=$(median "${T[par4]}"); ta=$(median "${T[agent]}")
rs=$(median "${R[seq]}"); rp=$(median "${R[par4]}"); ra=$(median "${R[agent]}")
echo
echo "| method (${SIZE_MIB} MiB, median of $REPS) | wall s | peak RSS MiB |"
echo "|---|---|---|"
printf "| (a) split + sequential curl + complete | %s | %.1f |\n" "$ts" "$(echo "$rs/1024" | bc -l)"
printf "| (b) split + 4 parallel curls + complete | %s | %.1f |\n" "$tp" "$(echo "$rp/1024" | bc -l)"
printf "| (c) autorender-sync upload | %s | %.1f |\n" "$ta" "$(echo "$ra/1024" | bc -l)"
printf "\nratio (c)/(a) = %.2f (target ≤ 0.35)\nratio (c)/(b) = %.2f (target ≤ 1.15)\npeak RSS (c) = %.1f MiB (target ≤ 64)\n" \
  "$(echo "$ta/$ts" | bc -l)" "$(echo "$ta/$tp" | bc -l)" "$(echo "$ra/1024" | bc -l)"
