#!/usr/bin/env bash
# QoE cost per request (issue 16): the appliance serving small ranges with CMCD on every request,
# QoE off (`--no-qoe`) vs on (CMCD parsing, CMSD headers, session folding) vs on with the JSON
# access log sampled at 1% (`--access-log FILE --access-log-sample 0.01`).
#
#   benches/qoe.sh                   # DURATION=10 CONNS=50, io_uring
#   BACKEND=epoll DURATION=15 benches/qoe.sh
#   OUTPOST_BIN=target/release/outpost benches/qoe.sh
#
# Each row: the appliance (1 thread) pinned to core 0, wrk (1 thread) to core 1, random 64 KiB
# ranges of 20 x 2 MiB segments, each request carrying a Shaka-style CMCD query argument with a
# per-connection sid. Reported: requests/s and server CPU microseconds per request
# (utime+stime from /proc/PID/stat over the run), and the ratio to the QoE-off row (goal: <= 1.05
# with logging at 1%). Only comparable within one run; run it on a quiet machine (load < 1.5).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
BACKEND=${BACKEND:-io_uring}
OUT=bench-out/qoe
if [ -z "${OUTPOST_BIN:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
  cargo build --release --bin outpost -q
  OUTPOST_BIN=$CARGO_TARGET_DIR/release/outpost
fi
BIN=$OUTPOST_BIN
command -v wrk >/dev/null || { echo "qoe.sh: wrk is not installed (scripts/install-deps)" >&2; exit 1; }
rm -rf "$OUT/keys" "$OUT"/*.log "$OUT"/*.lua "$OUT"/access*
mkdir -p "$OUT/cache/bench/v" "$OUT/keys"
for i in $(seq -f %02g 0 19); do
  f="$OUT/cache/bench/v/seg-$i.m4s"
  [ "$(stat -c %s "$f" 2>/dev/null)" = 2097152 ] || head -c 2097152 /dev/urandom > "$f"
done
"$BIN" keys generate --kid bench --out "$OUT/keys/private" >/dev/null
mkdir -p "$OUT/keys/public"; cp "$OUT/keys/private/bench.pub.pem" "$OUT/keys/public/"
GRANT=$("$BIN" grant sign --key "$OUT/keys/private/bench.key.pem" --aud bench --prefix /bench/ --ttl 21600)
cat > "$OUT/cmcd.lua" <<LUA
local grant = "$GRANT"
local sid = nil
function init(args) sid = string.format("%08x-bench", math.random(0, 0x7fffffff)) end
request = function()
  local off = math.random(0, 31) * 65536
  local q = string.format("CMCD=bl%%3D21300%%2Cbr%%3D3200%%2Ccid%%3D%%22bench%%22%%2Cd%%3D4004%%2Cmtp%%3D48100%%2Cot%%3Dv%%2Csf%%3Dd%%2Csid%%3D%%22%s%%22%%2Cst%%3Dv%%2Ctb%%3D6000", sid)
  return wrk.format("GET", string.format("/g/%s/bench/v/seg-%02d.m4s?%s", grant, math.random(0, 19), q),
    { ["Range"] = string.format("bytes=%d-%d", off, off + 65535) })
end
LUA
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
printf '%-22s %12s %14s %8s\n' row "req/s" "CPU us/req" ratio
base=""
for row in off on on+log1%; do
  case $row in
    off) extra=(--no-qoe) ;;
    on) extra=() ;;
    on+log1%) extra=(--access-log "$OUT/access.jsonl" --access-log-sample 0.01) ;;
  esac
  taskset -c 0 "$BIN" appliance --listen 127.0.0.1:18091 --admin-listen 127.0.0.1:19191 \
    --cluster bench --public-keys "$OUT/keys/public" --cache-dir "$OUT/cache" --threads 1 \
    --backend "$BACKEND" --access-log-every 0 --log warn "${extra[@]}" > "$OUT/outpost-$row.log" 2>&1 &
  OP=$!
  PIDS+=("$OP")
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:19191/readyz && break; sleep 0.1; done
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s "$OUT/cmcd.lua" http://127.0.0.1:18091/ >/dev/null 2>&1 || true
  t0=$(cpu_ticks "$OP")
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$OUT/cmcd.lua" http://127.0.0.1:18091/ > "$OUT/wrk-$row.txt" 2>&1
  t1=$(cpu_ticks "$OP")
  kill "$OP"; wait "$OP" 2>/dev/null || true
  reqs=$(awk '/requests in/ {print $1}' "$OUT/wrk-$row.txt")
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$row.txt")
  us=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
  [ -n "$base" ] || base=$us
  ratio=$(awk -v a="$us" -v b="$base" 'BEGIN { printf "%.3f", a / b }')
  printf '%-22s %12s %14s %8s\n' "$row" "$rps" "$us" "$ratio"
done
echo "backend $BACKEND, $CONNS connections, ${DURATION}s per row; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
