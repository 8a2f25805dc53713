#!/usr/bin/env bash
# Soak: steady mixed load against the demo topology, one row per minute (see BENCHMARKS.md,
# "Soak"). Not a test: a script to run by hand before a release, for hours if need be.
#
#   benches/soak.sh                         # MINUTES=3 CONNS=20, the debug binary
#   MINUTES=240 OUTPOST_BIN=target/release/outpost benches/soak.sh
#
# Starts `outpost demo` (control plane in-process, 2 embedded appliances, exchange and origin
# appliances as child processes; --no-browser-assets) on loopback ports, starts one playback
# session for the clear VP9 title through the demo API and keeps that session's grant, then for
# MINUTES minutes runs one wrk per embedded appliance (1 thread, CONNS connections each), each
# minute a fresh 60 s run of mixed requests picked at random: the HLS media playlists (small,
# whole) and 256 KiB byte ranges of the video and audio files. After each minute it prints, per
# appliance: requests/s, p99 latency (wrk), errors (non-2xx answers + socket errors), RSS
# (VmRSS) and open file descriptors (/proc/PID/fd). A leak shows as RSS or fds growing row after
# row under the same load. Only loopback; the demo (and so every appliance: --exit-with-parent)
# is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-3}
CONNS=${CONNS:-20}
BIN=${OUTPOST_BIN:-target/debug/outpost}
[ -x "$BIN" ] || cargo build --bin outpost
command -v wrk >/dev/null || { echo "soak: wrk is missing (scripts/install-deps installs it)" >&2; exit 1; }

work=$(mktemp -d)
demo_pid=
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid"; wait "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
base=$(( (port % 1000) * 10 + 30000 ))
"$BIN" demo --data-dir "$work/demo" --port "$port" --appliance-base-port "$base" \
  --no-browser-assets >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 1 180); do
  grep -q "open  " "$work/demo.out" && break
  kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.err" >&2; exit 1; }
  sleep 1
done
grep -q "open  " "$work/demo.out" || { echo "soak: the demo did not start" >&2; exit 1; }

session=$(curl -sf -XPOST -H 'content-type: application/json' \
  -d '{"device":"desktop-browser","title":"demo-vp9"}' "http://127.0.0.1:$port/demo/api/sessions")
# A field of the session answer (`.appliances[0].base_url`).
json() {
  python3 -c 'import json, sys
v = json.loads(sys.argv[2])
for part in sys.argv[1].lstrip(".").replace("[", ".").replace("]", "").split("."):
    v = v[int(part)] if part.isdigit() else v[part]
print(v)' "$1" "$session"
}
title_dir="$work/demo/titles/demo-vp9"
files=()
for r in video-240p video-360p audio-opus; do
  files+=("$r/index.m3u8" "$r/$r.mp4:$(stat -c %s "$title_dir/$r/$r.mp4")")
done

# One wrk Lua script per appliance: its grant path and the mixed request list (Host given
# explicitly: wrk adds it only to requests built after its own set-up).
declare -A pids
for i in 0 1; do
  url=$(json ".appliances[$i].base_url")
  id=$(json ".appliances[$i].id")
  path=/${url#http://*/}
  hostport=${url#http://}; hostport=${hostport%%/*}
  {
    echo "local reqs = {}"
    for f in "${files[@]}"; do
      name=${f%%:*}
      if [[ "$f" == *:* ]]; then
        size=${f##*:}
        for k in 1 2 3 4; do
          off=$(( (RANDOM * 32768 + RANDOM) % (size > 262144 ? size - 262144 : 1) ))
          echo "reqs[#reqs+1] = wrk.format('GET', '${path}${name}', {['Host']='${hostport}', ['Range']='bytes=${off}-$((off + 262143))'})"
        done
      else
        echo "reqs[#reqs+1] = wrk.format('GET', '${path}${name}', {['Host']='${hostport}'})"
      fi
    done
    echo "request = function() return reqs[math.random(#reqs)] end"
    echo "done = function(summary, latency, requests)"
    echo "  io.stderr:write(string.format('SOAK %.1f %.3f %d\\n', summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))"
    echo "end"
  } >"$work/$id.lua"
  port_i=${hostport##*:}
  # The demo's child whose command line listens on that port.
  pids[$id]=$(for c in $(cat /proc/"$demo_pid"/task/*/children); do
    if tr '\0' ' ' <"/proc/$c/cmdline" | grep -q -- "--listen 127.0.0.1:$port_i "; then echo "$c"; fi
  done | head -1)
  [ -n "${pids[$id]}" ] || { echo "soak: no appliance process listens on $port_i" >&2; exit 1; }
  echo "$id $hostport" >>"$work/targets"
done

printf "%-6s %-10s %10s %10s %7s %9s %5s\n" minute appliance "req/s" "p99 ms" errors "RSS MiB" fds
for m in $(seq 1 "$MINUTES"); do
  while read -r id hostport; do
    wrk -t1 -c"$CONNS" -d60s -s "$work/$id.lua" "http://$hostport/" >/dev/null 2>"$work/$id.wrk" &
  done <"$work/targets"
  wait $(jobs -p | grep -v "^$demo_pid$") 2>/dev/null || true
  while read -r id hostport; do
    read -r rps p99 errs < <(grep '^SOAK' "$work/$id.wrk" | cut -d' ' -f2-)
    pid=${pids[$id]}
    rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    printf "%-6s %-10s %10s %10s %7s %9s %5s\n" "$m" "$id" "$rps" "$p99" "$errs" "$rss" "$fds"
  done <"$work/targets"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); binary: $BIN; $CONNS connections per appliance"
