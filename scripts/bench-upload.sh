#!/usr/bin/env bash
# Benchmark: upload one large file to the local emulator five ways, in the
# same run, and report wall time and peak RSS as ratios.
#   (a) the documented shell flow (the API reference's own commands): split +
#       a sequential curl --data-binary loop + complete; (a') a tuned variant
#   (b) the same requests sent by 4 parallel curls (xargs -P4); (b') tuned
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

# The shell flows. "docs" is the flow the AutoRender API reference gives
# (https://autorender.mintlify.app/api-reference/multipart-upload-parts):
# save the start response, `split -b $PART_SIZE`, then for each chunk look its
# URL up with jq and `curl --data-binary @chunk`; then complete. "stream" is a
# tuned variant a shell expert might write instead: one jq call for all URLs
# and `curl -T`, which streams the chunk instead of reading it into memory.
# PAR=1 is a sequential loop; PAR=4 sends the same requests 4 at a time.
cat > "$WORK/shell-flow.sh" <<'SH'
#!/usr/bin/env bash
set -euo pipefail
URL=$1 KEY=$2 FILE=$3 PAR=$4 WORK=$5 STYLE=$6
SIZE=$(stat -c %s "$FILE")
PARTS=$WORK/parts; rm -rf "$PARTS"; mkdir -p "$PARTS"
cd "$PARTS"
curl -sf --request POST --url "$URL/api/v1/multipart/start" \
  --header "Authorization: Bearer $KEY" --header 'Content-Type: application/json' \
  --data "{\"file_name\":\"shell-$STYLE-$PAR.bin\",\"size\":$SIZE,\"format\":\"application/octet-stream\",\"folder\":\"bench\"}" \
  -o start-response.json
PART_SIZE=$(jq -r '.part_size' start-response.json)
SESSION=$(jq -r '.session_id' start-response.json)
split -b "$PART_SIZE" "$FILE" mpart_
if [ "$STYLE" = docs ]; then
  put() { # $1 = part index, $2 = chunk file, exactly as the API reference shows
    url=$(jq -r ".parts[$1]" start-response.json)
    curl -sf --request PUT --url "$url" --header "Content-Type: application/octet-stream" \
      --data-binary @"$2" -o /dev/null
  }
  i=0
  for chunk in mpart_*; do echo "$i $chunk"; i=$((i + 1)); done > list
else
  put() { curl -sf -X PUT -H 'Content-Type: application/octet-stream' -T "$1" "$2" -o /dev/null; }
  jq -r '.parts[]' start-response.json | paste -d ' ' <(printf '%s\n' mpart_*) - > list
fi
if [ "$PAR" = 1 ]; then
  while read -r a b; do put "$a" "$b"; done < list
else
  export -f put
  xargs -P "$PAR" -L 1 bash -c 'put "$0" "$1"' < list
fi
curl -sf --request POST --url "$URL/api/v1/multipart/complete" \
  --header "Authorization: Bearer $KEY" --header 'Content-Type: application/json' \
  --data "{\"session_id\":\"$SESSION\"}" -o /dev/null
cd / && rm -rf "$PARTS"
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
METHODS="seq par4 seq_stream par4_stream agent"
for rep in $(seq "$REPS"); do
  for m in $METHODS; do
    case $m in
      seq)         out=$(measure $m "$WORK/shell-flow.sh" "$URL" "$KEY" "$FILE" 1 "$WORK" docs) ;;
      par4)        out=$(measure $m "$WORK/shell-flow.sh" "$URL" "$KEY" "$FILE" 4 "$WORK" docs) ;;
      seq_stream)  out=$(measure $m "$WORK/shell-flow.sh" "$URL" "$KEY" "$FILE" 1 "$WORK" stream) ;;
      par4_stream) out=$(measure $m "$WORK/shell-flow.sh" "$URL" "$KEY" "$FILE" 4 "$WORK" stream) ;;
      agent) out=$(AUTORENDER_API_KEY=$KEY measure $m "$BIN" --config "$WORK/config.toml" -q upload --folder bench "$FILE") ;;
    esac
    T[$m]+="${out% *} "; R[$m]+="${out#* } "
    echo "rep $rep $m: ${out% *} s, peak RSS ${out#* } KiB" >&2
  done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A MT MR
for m in $METHODS; do MT[$m]=$(median "${T[$m]}"); MR[$m]=$(median "${R[$m]}"); done
row() { printf "| %s | %s | %.1f |\n" "$1" "${MT[$2]}" "$(echo "${MR[$2]}/1024" | bc -l)"; }
ratio() { printf "%.2f" "$(echo "${MT[$1]}/${MT[$2]}" | bc -l)"; }
echo
echo "| method (${SIZE_MIB} MiB, median of $REPS) | wall s | peak RSS MiB |"
echo "|---|---|---|"
row "(a) documented flow: split + sequential curl --data-binary loop + complete" seq
row "(b) the same requests, 4 parallel curls" par4
row "(a') tuned shell: one jq, sequential curl -T" seq_stream
row "(b') tuned shell: one jq, 4 parallel curl -T" par4_stream
row "(c) autorender-sync upload" agent
echo
echo "ratio (c)/(a)  = $(ratio agent seq) (target ≤ 0.35)"
echo "ratio (c)/(b)  = $(ratio agent par4) (target ≤ 1.15)"
echo "ratio (c)/(a') = $(ratio agent seq_stream) (reference)"
echo "ratio (c)/(b') = $(ratio agent par4_stream) (reference)"
printf "peak RSS (c)   = %.1f MiB (target ≤ 64)\n" "$(echo "${MR[agent]}/1024" | bc -l)"
