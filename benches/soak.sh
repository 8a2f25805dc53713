#!/usr/bin/env bash
# Soak: steady mixed load against the demo topology, one row per minute (see BENCHMARKS.md,
# "Soak"). Not a test: a script to run by hand before a release, for hours if need be.
#
#   benches/soak.sh                         # MINUTES=3 CONNS=20, the debug binary
#   MINUTES=240 OUTPOST_BIN=target/release/outpost benches/soak.sh
#   RATE=1000 STARTS=0.8 MINUTES=30 ...     # paced: RATE requests/s per appliance (0: as fast
#                                           # as wrk goes), STARTS session starts/s (0: none; at
#                                           # most 1: each demo member may start 30 a minute)
#   CHURN=5 ...                             # fill churn: every CHURN minutes the exchange
#                                           # appliance loses its cache and fills it again
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
# is stopped by PID at the end. With STARTS > 0 a loop beside wrk starts that many playback
# sessions a second through the demo API (the control plane's entitlement, steering, lease and
# manifest path) and ends each at once; each row then also shows the starts made, their errors
# and p99, and the demo process's own RSS and descriptors (the control plane runs inside it).
# With CHURN > 0, at the start of every CHURN-th minute the exchange appliance (which the wrk
# load does not target) is stopped through the demo API, its cache drives emptied, and started
# again: it registers empty and fills every title again from origin while the embedded
# appliances serve the load and fill plans keep being answered. Its row shows the seconds until
# its `/metrics` reported every title held again (errors 1: not within 45 s of the restart), and the RSS and
# descriptors of its new process.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-3}
CONNS=${CONNS:-20}
RATE=${RATE:-0}
STARTS=${STARTS:-0}
CHURN=${CHURN:-0}
BIN=${OUTPOST_BIN:-target/debug/outpost}
[ -x "$BIN" ] || cargo build --bin outpost
command -v wrk >/dev/null || { echo "soak: wrk is missing (scripts/install-deps installs it)" >&2; exit 1; }

work=$(mktemp -d)
demo_pid=
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid"; wait "$demo_pid" 2>/dev/null || true
  fi
  [ -n "${KEEP:-}" ] && cp "$work"/starts "$KEEP" 2>/dev/null; rm -rf "$work"
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
    if [ "$RATE" -gt 0 ]; then
      # Each connection waits CONNS/RATE s between requests: RATE requests/s in all.
      echo "delay = function() return $(( CONNS * 1000 / RATE )) end"
    fi
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

# Session starts for 60 s at STARTS a second through the demo API, each ended at once (DELETE
# with the session's token); one line per start in $1: HTTP status, seconds it took, and the
# error code of a refusal.
starts_for_a_minute() {
  python3 - "$1" "$port" "$STARTS" <<'PY'
import json, sys, time, urllib.request, urllib.error
out, port, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
base = f"http://127.0.0.1:{port}"
def call(method, path, body=None, headers={}):
    req = urllib.request.Request(base + path, method=method, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b"{}"
# The demo's two members in turn: the control plane allows each account 30 starts a minute
# (`session_starts_per_minute`), so STARTS up to 1 stays inside the policy.
MEMBERS = ["demo-member", "basic-member"]
n = 0
end = time.monotonic() + 60
with open(out, "w") as f:
    while time.monotonic() < end:
        t0 = time.monotonic()
        member = MEMBERS[n % len(MEMBERS)]
        n += 1
        code, body = call("POST", "/demo/api/sessions",
                          json.dumps({"device": "desktop-browser", "title": "demo-vp9",
                                      "member": member}).encode(),
                          {"content-type": "application/json"})
        took = time.monotonic() - t0
        err = "-"
        try:
            v = json.loads(body)
        except ValueError:
            v = {}
        if code in (200, 201):
            call("DELETE", f"/v1/playback/sessions/{v['session_id']}",
                 headers={"Authorization": f"Bearer {v['token']}"})
        else:
            err = v.get("code", "-")
        f.write(f"{code} {took:.6f} {err}\n")
        time.sleep(max(0.0, 1 / rate - (time.monotonic() - t0)))
PY
}

# The exchange appliance: its id and admin address, from its command line.
exchange_cmdline() {
  for c in $(cat /proc/"$demo_pid"/task/*/children); do
    if tr '\0' ' ' <"/proc/$c/cmdline" | grep -q -- " --id ix-"; then
      echo "$c $(tr '\0' ' ' <"/proc/$c/cmdline")"
    fi
  done | head -1
}
titles=$(find "$work/demo/titles" -mindepth 1 -maxdepth 1 -type d | wc -l)
# One churn of the exchange appliance; writes "seconds failed pid" to $1.
churn_exchange() {
  local line ix admin t0 pid
  line=$(exchange_cmdline)
  ix=$(sed -E 's/.* --id ([^ ]+).*/\1/' <<<"$line")
  admin=$(sed -E 's/.* --admin-listen ([^ ]+).*/\1/' <<<"$line")
  t0=$(date +%s.%N)
  curl -sf -XPOST "http://127.0.0.1:$port/demo/api/appliances/$ix/stop" >/dev/null
  find "$work/demo/appliances/$ix" -mindepth 2 -maxdepth 2 -path "*/nvme*/*" -exec rm -rf {} +
  curl -sf -XPOST "http://127.0.0.1:$port/demo/api/appliances/$ix/restore" >/dev/null
  for _ in $(seq 1 450); do
    if curl -sf "http://$admin/metrics" | grep -q "^outpost_appliance_titles_held $titles\$"; then
      pid=$(exchange_cmdline | cut -d' ' -f1)
      echo "$(awk "BEGIN { print $(date +%s.%N) - $t0 }") 0 $pid ix" >"$1"
      return
    fi
    sleep 0.1
  done
  echo "45 1 $(exchange_cmdline | cut -d' ' -f1) ix" >"$1"
}

printf "%-6s %-10s %10s %10s %7s %9s %5s\n" minute appliance "req/s" "p99 ms" errors "RSS MiB" fds
for m in $(seq 1 "$MINUTES"); do
  while read -r id hostport; do
    wrk -t1 -c"$CONNS" -d60s -s "$work/$id.lua" "http://$hostport/" >/dev/null 2>"$work/$id.wrk" &
  done <"$work/targets"
  [ "$STARTS" != 0 ] && starts_for_a_minute "$work/starts" &
  churned=
  if [ "$CHURN" != 0 ] && [ $(( (m - 1) % CHURN )) = $(( CHURN - 1 )) ]; then
    churned=1
    churn_exchange "$work/churn" &
  fi
  wait $(jobs -p | grep -v "^$demo_pid$") 2>/dev/null || true
  while read -r id hostport; do
    read -r rps p99 errs < <(grep '^SOAK' "$work/$id.wrk" | cut -d' ' -f2-)
    pid=${pids[$id]}
    rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    printf "%-6s %-10s %10s %10s %7s %9s %5s\n" "$m" "$id" "$rps" "$p99" "$errs" "$rss" "$fds"
  done <"$work/targets"
  if [ "$STARTS" != 0 ]; then
    # The starts of the minute: per second, p99 of their time, non-2xx; the demo process holds
    # the control plane.
    read -r sps sp99 serrs < <(python3 - "$work/starts" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
times = sorted(float(r[1]) * 1000 for r in rows)
p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0
errs = sum(1 for r in rows if r[0] not in ("200", "201"))
print(f"{len(rows) / 60:.1f} {p99:.3f} {errs}")
PY
)
    rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$demo_pid/status")
    fds=$(ls "/proc/$demo_pid/fd" | wc -l)
    printf "%-6s %-10s %10s %10s %7s %9s %5s\n" "$m" "starts/cp" "$sps" "$sp99" "$serrs" "$rss" "$fds"
  fi
  if [ -n "$churned" ]; then
    read -r secs failed pid _ <"$work/churn"
    rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status" 2>/dev/null || echo -)
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
    printf "%-6s %-10s %10s %10s %7s %9s %5s\n" "$m" "refill/ix" "-" "$(printf %.1f "$secs")s" "$failed" "$rss" "$fds"
  fi
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); binary: $BIN; $CONNS connections per appliance; RATE=$RATE STARTS=$STARTS CHURN=$CHURN"
