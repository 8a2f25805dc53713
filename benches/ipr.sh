#!/usr/bin/env bash
# Per-request cost by counters, not by wall clock: system calls (in total and by kind), context
# switches and CPU time (task-clock) of the server per request served, Outpost vs nginx in one
# run. The syscall and switch counts are exact and do not depend on the machine's load; CPU time
# does (cache contention), so compare it only within a run. (This VM exposes no hardware PMU:
# instructions cannot be counted here.) See BENCHMARKS.md, "Appliance: per-request counters".
#
#   benches/ipr.sh                                   # DURATION=6 CONNS=50, 64 KiB ranges
#   ROWS="nginx outpost outpost-qoe outpost-qoe-log" OUTPOST_BIN=target/release/outpost benches/ipr.sh
#   BASE_BIN=/path/to/older/outpost benches/ipr.sh   # adds the same Outpost rows for that binary
#
# Each row: the server (1 worker / 1 thread, io_uring unless BACKEND=epoll) pinned to core 0,
# wrk (1 thread) on core 1 sending random 64 KiB ranges of 20 x 2 MiB segments, each request with
# a Shaka-style CMCD query argument (nginx ignores it). `perf stat -p PID` counts task-clock,
# context switches, raw_syscalls:sys_enter and the entries of the syscalls either server uses on
# this path over the measured wrk run; each is divided by the requests wrk completed. Rows: nginx; outpost (--no-qoe);
# outpost-qoe (QoE on, the default); outpost-qoe-log (QoE on, JSON access log sampled at 1%).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-6}
CONNS=${CONNS:-50}
BACKEND=${BACKEND:-io_uring}
ROWS=${ROWS:-"nginx outpost outpost-qoe outpost-qoe-log"}
OUT=bench-out/ipr
SYSCALLS="io_uring_enter cachestat sendto sendmsg sendfile64 writev recvfrom read write epoll_wait epoll_pwait setsockopt clock_gettime openat newfstatat close futex"
if [ -z "${OUTPOST_BIN:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
  cargo build --release --bin outpost -q
  OUTPOST_BIN=$CARGO_TARGET_DIR/release/outpost
fi
for t in perf wrk nginx; do
  command -v $t >/dev/null || { echo "ipr.sh: $t is not installed (scripts/install-deps)" >&2; exit 1; }
done
rm -rf "$OUT/keys" "$OUT"/*.txt "$OUT"/*.lua "$OUT"/access* "$OUT/nginx"
mkdir -p "$OUT/cache/bench/v" "$OUT/keys" "$OUT/nginx/tmp"
for i in $(seq -f %02g 0 19); do
  f="$OUT/cache/bench/v/seg-$i.m4s"
  [ "$(stat -c %s "$f" 2>/dev/null)" = 2097152 ] || head -c 2097152 /dev/urandom > "$f"
done
"$OUTPOST_BIN" keys generate --kid bench --out "$OUT/keys/private" >/dev/null
mkdir -p "$OUT/keys/public"; cp "$OUT/keys/private/bench.pub.pem" "$OUT/keys/public/"
GRANT=$("$OUTPOST_BIN" grant sign --key "$OUT/keys/private/bench.key.pem" --aud bench --prefix /bench/ --ttl 21600)
cat > "$OUT/range.lua" <<LUA
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
cat > "$OUT/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $PWD/$OUT/nginx/nginx.pid;
error_log $PWD/$OUT/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush off;
  open_file_cache max=1000 inactive=60s;
  keepalive_requests 100000;
  types { video/mp4 m4s; }
  client_body_temp_path $PWD/$OUT/nginx/tmp;
  proxy_temp_path $PWD/$OUT/nginx/tmp;
  fastcgi_temp_path $PWD/$OUT/nginx/tmp;
  uwsgi_temp_path $PWD/$OUT/nginx/tmp;
  scgi_temp_path $PWD/$OUT/nginx/tmp;
  server {
    listen 127.0.0.1:18181;
    root $PWD/$OUT/cache;
    location /g/ { rewrite ^/g/[^/]+/(.*)\$ /\$1 break; }
  }
}
EOF
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# measure ROW PID PORT
measure() {
  local row=$1 pid=$2 port=$3
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s "$OUT/range.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
  local sc="" n
  for n in $SYSCALLS; do sc="$sc,syscalls:sys_enter_$n"; done
  perf stat -x, -e "task-clock,context-switches,raw_syscalls:sys_enter$sc" -p "$pid" \
    -o "$OUT/perf-$row.txt" &
  local ps=$!
  sleep 0.2
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$OUT/range.lua" "http://127.0.0.1:$port/" > "$OUT/wrk-$row.txt" 2>&1
  kill -INT "$ps"; wait "$ps" 2>/dev/null || true
  python3 - "$row" "$OUT/perf-$row.txt" "$OUT/wrk-$row.txt" <<'PY'
import re, sys
row, perf, wrk = sys.argv[1:]
w = open(wrk).read()
reqs = int(re.search(r"(\d+) requests in", w).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1))
c = {}
for line in open(perf):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and f[0][0].isdigit():
        c[f[2]] = float(f[0])
g = lambda k: next((v for n, v in c.items() if n.startswith(k)), float("nan"))
by = " ".join(f"{n.split('sys_enter_')[1]}={v/reqs:.2f}" for n, v in c.items()
              if n.startswith("syscalls:") and v / reqs >= 0.005)
print(f"{row:<22} {rps:>8.0f} {g('task-clock')*1000/reqs:>8.2f} "
      f"{g('raw_syscalls:sys_enter')/reqs:>7.2f} {g('context-switches')/reqs:>6.3f}  {by}")
PY
}

outpost_row() {
  local row=$1 bin=$2; shift 2
  taskset -c 0 "$bin" appliance --listen 127.0.0.1:18182 --admin-listen 127.0.0.1:19182 \
    --cluster bench --public-keys "$OUT/keys/public" --cache-dir "$OUT/cache" --threads 1 \
    --backend "$BACKEND" --access-log-every 0 --log warn "$@" > "$OUT/outpost-$row.log" 2>&1 &
  local op=$!
  PIDS+=("$op")
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:19182/readyz && break; sleep 0.1; done
  measure "$row" "$op" 18182
  kill "$op"; wait "$op" 2>/dev/null || true
}

printf '%-22s %8s %8s %7s %6s  %s\n' row "req/s" "cpu us/r" "sysc/r" "cs/r" "syscalls per request by kind"
for bin_label in "" ${BASE_BIN:+base}; do
  bin=$OUTPOST_BIN; [ -n "$bin_label" ] && bin=$BASE_BIN
  sfx=${bin_label:+-$bin_label}
  for row in $ROWS; do
    case $row in
      nginx)
        [ -z "$bin_label" ] || continue
        taskset -c 0 nginx -c "$PWD/$OUT/nginx/nginx.conf" -p "$PWD/$OUT/nginx" >/dev/null 2>&1 &
        NM=$!; PIDS+=("$NM"); sleep 1
        NW=$(pgrep -P "$(cat "$OUT/nginx/nginx.pid")" | head -1)
        measure nginx "$NW" 18181
        kill "$NM"; wait "$NM" 2>/dev/null || true ;;
      outpost) outpost_row "outpost$sfx" "$bin" --no-qoe ;;
      outpost-qoe) outpost_row "outpost-qoe$sfx" "$bin" ;;
      outpost-qoe-log) outpost_row "outpost-qoe-log$sfx" "$bin" --access-log "$OUT/access$sfx.jsonl" --access-log-sample 0.01 ;;
    esac
  done
done
echo "backend $BACKEND, $CONNS connections, ${DURATION}s per row; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
