#!/usr/bin/env bash
# Appliance vs nginx, side by side on this machine (see BENCHMARKS.md, "Appliance vs nginx").
#
#   benches/appliance.sh            # ROUNDS=3 DURATION=8 CONNS=50 by default
#   ROUNDS=5 DURATION=10 benches/appliance.sh
#   QUICK=1 benches/appliance.sh    # minutes: ROUNDS=1 DURATION=4, io_uring only, whole + range
#   SCENARIOS="whole range" BACKENDS=io_uring OUTPOST_BIN=target/release/outpost benches/appliance.sh
#
# SCENARIOS picks rows among: whole range tls capped rss (all by default); BACKENDS among
# io_uring epoll. The 200 segment files are kept between runs (regenerated only if missing).
#
# Every server runs at once, each on its own port, all pinned to core 0 (an idle server costs
# nothing); wrk (1 thread) is pinned to core 1. One row on this VM moves by up to 30% between
# runs of the same server (BENCHMARKS.md, 2026-12-07 02:35), so a row is measured ROUNDS times:
# each round runs the row on every server back to back, in an order rotated every round, and
# the summary gives per (row, server) the median of the rounds, and per round the ratio to
# nginx (and to the floor) of servers measured seconds apart, as median [min-max] over rounds.
# A run is 2 s of warm-up + DURATION: ~25 runs per round, ~4.5 min per round at DURATION=8.
#
# Servers: nginx (1 worker, sendfile on, tcp_nopush off, access_log off, open_file_cache),
# `outpost appliance` (1 thread; io_uring and epoll+sendfile backends) and the floor server
# (benches/floor_server.c, built here with cc -O2: accept, read to the blank line, fixed header,
# sendfile of the file or of the one byte range asked; no checks), all serving the same
# 200 x 2 MiB segments. Rows:
#   (a) whole 2 MiB segments, random file, 50 and 1000 connections
#   (b) random 64 KiB ranges over those files, 50 connections
#   (c) random 64 KiB ranges, 1000 keep-alive connections
#   (d) whole 2 MiB segments over TLS (nginx with OpenSSL, Outpost with rustls; no kTLS here)
#   (e) "capped": (a) and (b) at 50 connections with the server held to 25% of a core by the
#       cgroup v1 cpu controller (cfs_quota 25 000 / period 100 000 us; io-wq workers are threads
#       of the process and follow it), so requests/s measures the server, not wrk.
# For each: requests/s, Gb/s, p50/p99 latency, server CPU seconds per GB (utime+stime from
# /proc/PID/stat), server anonymous RSS (RssAnon), wrk's own CPU. Then the RSS (VmRSS) of
# Outpost holding 10 000 idle connections (benches/idle_rss.py: right after accept, and after
# one 64 KiB range request each). The load average is printed with the table (the figures are
# only comparable within one run). Outpost checks an Ed25519 grant on every request (cached per
# token); nginx and the floor check nothing (nginx's secure_link is not used), which favours
# them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps >/dev/null

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-4}; SCENARIOS=${SCENARIOS:-"whole range"}
  BACKENDS=${BACKENDS:-io_uring}
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-50}
SCENARIOS=${SCENARIOS:-"whole range tls capped rss"}
BACKENDS=${BACKENDS:-"io_uring epoll"}
want() { case " $SCENARIOS " in *" $1 "*) return 0;; *) return 1;; esac; }
OUT=bench-out/appliance
# OUTPOST_BIN: an already built release binary (skips the build).
if [ -z "${OUTPOST_BIN:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
  cargo build --release --bin outpost -q
  OUTPOST_BIN=$CARGO_TARGET_DIR/release/outpost
fi
BIN=$OUTPOST_BIN
# Keep the segment files between runs; everything else is made afresh.
find "$OUT" -mindepth 1 -maxdepth 1 ! -name cache -exec rm -rf {} + 2>/dev/null || true
mkdir -p "$OUT/cache/bench/v" "$OUT/keys" "$OUT/nginx"
for i in $(seq -f %03g 0 199); do
  f="$OUT/cache/bench/v/seg-$i.m4s"
  [ "$(stat -c %s "$f" 2>/dev/null)" = 2097152 ] || head -c 2097152 /dev/urandom > "$f"
done
# The floor server: accept, read the head, fixed header, sendfile (benches/floor_server.c).
cc -O2 -o "$OUT/floor_server" benches/floor_server.c
"$BIN" keys generate --kid bench --out "$OUT/keys/private" >/dev/null
mkdir -p "$OUT/keys/public"; cp "$OUT/keys/private/bench.pub.pem" "$OUT/keys/public/"
GRANT=$("$BIN" grant sign --key "$OUT/keys/private/bench.key.pem" --aud bench --prefix /bench/ --ttl 21600)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=bench \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null
ulimit -n "$(ulimit -Hn)" || true

# The CPU cap for the "capped" rows: a cgroup v1 cpu group of 25% of one core.
CG=/sys/fs/cgroup/cpu/outpost-bench-$$
CAP_OK=0
if mkdir "$CG" 2>/dev/null && echo 100000 > "$CG/cpu.cfs_period_us" && echo 25000 > "$CG/cpu.cfs_quota_us"; then
  CAP_OK=1
else
  echo "cgroup v1 cpu controller not writable: skipping the capped rows" >&2
fi
cap() { echo "$1" > "$CG/cgroup.procs"; }
uncap() { echo "$1" > /sys/fs/cgroup/cpu/cgroup.procs; }

cat > "$OUT/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $PWD/$OUT/nginx/nginx.pid;
error_log $PWD/$OUT/nginx/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush off;
  open_file_cache max=1000 inactive=60s;
  keepalive_requests 100000;
  keepalive_timeout 60s;
  types { video/mp4 m4s; }
  client_body_temp_path $PWD/$OUT/nginx/tmp;
  proxy_temp_path $PWD/$OUT/nginx/tmp;
  fastcgi_temp_path $PWD/$OUT/nginx/tmp;
  uwsgi_temp_path $PWD/$OUT/nginx/tmp;
  scgi_temp_path $PWD/$OUT/nginx/tmp;
  server {
    listen 127.0.0.1:18080;
    listen 127.0.0.1:18443 ssl;
    ssl_certificate $PWD/$OUT/cert.pem;
    ssl_certificate_key $PWD/$OUT/key.pem;
    root $PWD/$OUT/cache;
    location /g/ { rewrite ^/g/[^/]+/(.*)\$ /\$1 break; }
  }
}
EOF
mkdir -p "$OUT/nginx/tmp"

cat > "$OUT/whole.lua" <<EOF
local grant = "$GRANT"
request = function()
  return wrk.format("GET", string.format("/g/%s/bench/v/seg-%03d.m4s", grant, math.random(0, 199)))
end
EOF
cat > "$OUT/range.lua" <<EOF
local grant = "$GRANT"
request = function()
  local off = math.random(0, 2097152 - 65536)
  return wrk.format("GET", string.format("/g/%s/bench/v/seg-%03d.m4s", grant, math.random(0, 199)),
    { Range = string.format("bytes=%d-%d", off, off + 65535) })
end
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Anonymous RSS: the server's own memory. VmRSS would also count page-cache pages of files the
# server has mapped (Outpost maps files it sends small ranges from: ~400 MB of the same page
# cache nginx reads through sendfile), which are neither private nor the server's to free.
rss_kb() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }

# run ROUND NAME PID SCHEME PORT SCRIPT CONNS [capped] -> appends a result line
run() {
  local round=$1; shift
  local name=$1 pid=$2 scheme=$3 port=$4 script=$5 conns=$6 capped=${7:-}
  # Warm the page cache and the server.
  taskset -c 1 wrk -t1 -c"$conns" -d2s -s "$OUT/$script" "$scheme://127.0.0.1:$port/" >/dev/null 2>&1 || true
  local c0 w0; c0=$(cpu_ticks "$pid")
  local wout="$OUT/wrk-$name-$scheme-$script-$conns$capped-r$round.txt"
  local t0; t0=$(date +%s.%N)
  taskset -c 1 bash -c "wrk -t1 -c$conns -d${DURATION}s --latency -s $OUT/$script $scheme://127.0.0.1:$port/ > $wout 2>&1; cat /proc/\$\$/stat > $wout.stat" || true
  local c1; c1=$(cpu_ticks "$pid")
  python3 - "$wout" "$((c1 - c0))" "$(rss_kb "$pid")" "$name" "$script" "$conns" "$scheme" "$capped" "$round" >> "$OUT/results.tsv" <<'PY'
import re, sys
path, ticks, rss, name, script, conns, scheme, capped, rnd = sys.argv[1:]
t = open(path).read()
def dur(s):
    v, u = re.match(r"([\d.]+)(us|ms|s|m)", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u]
def size(v, u):
    return float(v) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}[u]
m = re.search(r"(\d+) requests in ([\d.]+)(s|m), ([\d.]+)(B|KB|MB|GB|TB) read", t)
reqs, secs, bytes_ = int(m.group(1)), float(m.group(2)) * (60 if m.group(3) == "m" else 1), size(m.group(4), m.group(5))
p50 = dur(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = dur(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
st = open(path + ".stat").read().split()
wrk_cpu = (int(st[15]) + int(st[16])) / 100  # cutime + cstime of the wrapper shell: wrk's CPU
cpu = int(ticks) / 100
row = "whole 2MiB" if script.startswith("whole") else "range 64KiB"
label = f"{'capped 25% ' if capped else ''}{'tls ' if scheme == 'https' else ''}{row} c={conns}"
if not reqs:
    print(f"{path}: no responses (server down?)", file=sys.stderr)
print("\t".join(map(str, [label, name, f"{reqs/secs:.0f}", f"{bytes_*8/secs/1e9:.2f}", f"{p50:.2f}", f"{p99:.2f}",
      (f"{cpu/(bytes_/1e9):.4f}" if bytes_ else "nan"), f"{cpu/secs*100:.0f}", f"{int(rss)/1024:.1f}", f"{wrk_cpu/secs*100:.0f}", errs.group(1) if errs else "0", rnd])))
PY
}

: > "$OUT/results.tsv"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  if [ -d "$CG" ]; then
    while read -r p; do uncap "$p" 2>/dev/null || true; done < "$CG/cgroup.procs"
    rmdir "$CG" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# Start every server; SERVERS lists "NAME PID PORT TLS_PORT" (TLS_PORT "-" when none).
SERVERS=()
taskset -c 0 nginx -c "$PWD/$OUT/nginx/nginx.conf" -p "$PWD/$OUT/nginx" >/dev/null 2>>"$OUT/nginx/error.log" &
sleep 1
NGINX_MASTER=$(cat "$OUT/nginx/nginx.pid")
PIDS+=("$NGINX_MASTER")
# The master forks the worker; measure the worker (pinned by inheritance).
SERVERS+=("nginx $(pgrep -P "$NGINX_MASTER" | head -1) 18080 18443")
taskset -c 0 "$OUT/floor_server" 18082 "$PWD/$OUT/cache" 2 > "$OUT/floor.log" 2>&1 &
PIDS+=("$!")
SERVERS+=("floor $! 18082 -")
port=18081 admin=19091
for backend in $BACKENDS; do
  tls=()
  # The TLS listener is the same tokio path whatever the backend: measured once, with io_uring.
  [ "$backend" = io_uring ] && tls=(--tls-listen 127.0.0.1:18444 --tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")
  taskset -c 0 "$BIN" appliance --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" "${tls[@]}" \
    --cluster bench --public-keys "$OUT/keys/public" --cache-dir "$OUT/cache" --threads 1 \
    --backend "$backend" --access-log-every 0 --log warn > "$OUT/outpost-$backend.log" 2>&1 &
  PIDS+=("$!")
  SERVERS+=("outpost-$backend $! $port $([ "$backend" = io_uring ] && echo 18444 || echo -)")
  port=$((port + 2)) admin=$((admin + 1))
done
sleep 1

# row ROUND ROW NAME PID PORT TLS_PORT: one row on one server (skips what it does not serve).
row() {
  local r=$1 row=$2 name=$3 pid=$4 port=$5 tls=$6
  case $row in
    whole50) run "$r" "$name" "$pid" http "$port" whole.lua "$CONNS" ;;
    whole1000) run "$r" "$name" "$pid" http "$port" whole.lua 1000 ;;
    range50) run "$r" "$name" "$pid" http "$port" range.lua "$CONNS" ;;
    range1000) run "$r" "$name" "$pid" http "$port" range.lua 1000 ;;
    tls) [ "$tls" = - ] || run "$r" "$name" "$pid" https "$tls" whole.lua "$CONNS" ;;
    cwhole | crange)
      cap "$pid"
      run "$r" "$name" "$pid" http "$port" "$([ "$row" = cwhole ] && echo whole || echo range).lua" "$CONNS" capped
      uncap "$pid" ;;
  esac
}
ROWS=()
want whole && ROWS+=(whole50 whole1000)
want range && ROWS+=(range50 range1000)
want tls && ROWS+=(tls)
want capped && [ "$CAP_OK" = 1 ] && ROWS+=(cwhole crange)
n=${#SERVERS[@]}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))" >&2
  for row in "${ROWS[@]}"; do
    for k in $(seq 0 $((n - 1))); do
      # shellcheck disable=SC2086
      row "$r" "$row" ${SERVERS[$(((k + r) % n))]}
    done
  done
done

if want rss && [[ " $BACKENDS " == *" io_uring "* ]]; then
  # RSS (VmRSS) while holding 10 000 idle connections (benches/idle_rss.py): right after accept,
  # and after one 64 KiB range GET each (keep-alive, between two requests). On a fresh server:
  # the one above has mapped the files it sent small ranges from, page cache that VmRSS counts.
  taskset -c 0 "$BIN" appliance --listen 127.0.0.1:18089 --admin-listen 127.0.0.1:19099 \
    --cluster bench --public-keys "$OUT/keys/public" --cache-dir "$OUT/cache" --threads 1 \
    --backend io_uring --access-log-every 0 --log warn > "$OUT/outpost-rss.log" 2>&1 &
  RSS_PID=$!
  PIDS+=("$RSS_PID")
  sleep 1
  python3 benches/idle_rss.py 18089 "$RSS_PID" 10000 > "$OUT/rss10k-raw.txt"
  python3 benches/idle_rss.py 18089 "$RSS_PID" 10000 "/g/$GRANT/bench/v/seg-000.m4s" >> "$OUT/rss10k-raw.txt"
  cat "$OUT/rss10k-raw.txt" >&2
  echo "rss_10k_conns_mb $(sed -n '1s/.* rss_mb=\([0-9.]*\).*/\1/p' "$OUT/rss10k-raw.txt")" > "$OUT/rss10k.txt"
  echo "rss_10k_conns_after_a_request_mb $(sed -n '2s/.* rss_mb=\([0-9.]*\).*/\1/p' "$OUT/rss10k-raw.txt")" >> "$OUT/rss10k.txt"
fi

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); raw rows: $OUT/results.tsv"
touch "$OUT/rss10k.txt"
python3 - "$OUT/results.tsv" "$OUT/rss10k.txt" "$ROUNDS" <<'PY'
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
# label server req/s Gb/s p50 p99 cpu/GB core% RSS wrk% non-2xx round
runs = defaultdict(list)   # (label, server) -> rows
by_round = {}              # (label, server, round) -> row
for r in rows:
    runs[(r[0], r[1])].append(r)
    by_round[(r[0], r[1], r[11])] = r
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"Medians over {sys.argv[3]} round(s):")
print()
hdr = ["scenario", "server", "req/s", "Gb/s", "p50 ms", "p99 ms", "CPU s/GB", "server core %", "anon RSS MB", "wrk core %", "non-2xx", "rounds"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
fmt = ["{:.0f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.3f}", "{:.0f}", "{:.1f}", "{:.0f}"]
for (label, server), rs in runs.items():
    cells = [f.format(med([float(r[i]) for r in rs])) for i, f in zip(range(2, 10), fmt)]
    print(f"| {label} | {server} | " + " | ".join(cells) + f" | {sum(int(r[10]) for r in rs)} | {len(rs)} |")
print()
print("Ratios of servers measured in the same round, median [min-max] over rounds:")
print()
print("| scenario | server | CPU/GB ÷ nginx | req/s ÷ nginx | p99 ÷ nginx | CPU/GB ÷ floor | req/s ÷ floor |")
print("|---|---|---|---|---|---|---|")
def ratio(label, server, base, i):
    xs = []
    for (l, s, rnd), r in by_round.items():
        b = by_round.get((l, base, rnd))
        if l == label and s == server and b and float(b[i]):
            xs.append(float(r[i]) / float(b[i]))
    if not xs:
        return "—"
    return f"{med(xs):.2f}" + (f" [{min(xs):.2f}-{max(xs):.2f}]" if len(xs) > 1 else "")
for (label, server) in runs:
    if server == "nginx":
        continue
    cells = [ratio(label, server, "nginx", 6), ratio(label, server, "nginx", 2), ratio(label, server, "nginx", 5)]
    cells += ["—", "—"] if server == "floor" else [ratio(label, server, "floor", 6), ratio(label, server, "floor", 2)]
    print(f"| {label} | {server} | " + " | ".join(cells) + " |")
print()
print(open(sys.argv[2]).read().strip())
PY
