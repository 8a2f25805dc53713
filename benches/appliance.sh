#!/usr/bin/env bash
# Appliance vs nginx, side by side on this machine (see BENCHMARKS.md, "Appliance vs nginx").
#
#   benches/appliance.sh            # DURATION=10 CONNS=50 by default
#   DURATION=15 benches/appliance.sh
#   QUICK=1 benches/appliance.sh    # minutes: DURATION=4, io_uring only, no TLS/capped/10k rows
#   SCENARIOS="whole range" BACKENDS=io_uring OUTPOST_BIN=target/release/outpost benches/appliance.sh
#
# SCENARIOS picks rows among: whole range tls capped rss (all by default); BACKENDS among
# io_uring epoll. The 200 segment files are kept between runs (regenerated only if missing).
# A full run is ~25 s per row (2 s warm-up + DURATION + start/stop), ~35 rows: ~8 min plus the
# release build, which alone took several minutes on this 2-core machine when it was shared.
#
# Serves the same 200 x 2 MiB segments from nginx (1 worker, sendfile on, tcp_nopush off,
# access_log off, open_file_cache) and from `outpost appliance` (1 thread; io_uring splice and
# epoll+sendfile), each server pinned to core 0 and wrk (1 thread) to core 1. Rows:
#   (a) whole 2 MiB segments, random file, 50 and 1000 connections
#   (b) random 64 KiB ranges over those files, 50 connections
#   (c) random 64 KiB ranges, 1000 keep-alive connections
#   (d) whole 2 MiB segments over TLS (nginx with OpenSSL, Outpost with rustls; no kTLS here)
#   (e) "capped": (a) and (b) at 50 connections with the server held to 25% of a core by the
#       cgroup v1 cpu controller (cfs_quota 25 000 / period 100 000 us; io-wq workers are threads
#       of the process and follow it), so requests/s measures the server, not wrk.
#   (f) the floor server (benches/floor_server.c, built here with cc -O2): accept, read to the
#       blank line, fixed header, sendfile; whole files only. Ratios to it are printed.
# For each: requests/s, Gb/s, p50/p99 latency, server CPU seconds per GB (utime+stime from
# /proc/PID/stat), server RSS, wrk's own CPU, and ratios to nginx. Then
# the RSS of Outpost holding 10 000 idle connections (benches/idle_rss.py: right after accept,
# and after one 64 KiB range request each). The load average is printed with the table
# (the figures are only comparable within one run). Outpost checks an Ed25519 grant on every request (cached per
# token); nginx checks nothing (its secure_link is not used), which favours nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps >/dev/null

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DURATION=${DURATION:-4}; SCENARIOS=${SCENARIOS:-"whole range"}; BACKENDS=${BACKENDS:-io_uring}
fi
DURATION=${DURATION:-10}
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
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# run NAME PID SCHEME PORT SCRIPT CONNS [capped] -> appends a result line
run() {
  local name=$1 pid=$2 scheme=$3 port=$4 script=$5 conns=$6 capped=${7:-}
  # Warm the page cache and the server.
  taskset -c 1 wrk -t1 -c"$conns" -d2s -s "$OUT/$script" "$scheme://127.0.0.1:$port/" >/dev/null 2>&1 || true
  local c0 w0; c0=$(cpu_ticks "$pid")
  local wout="$OUT/wrk-$name-$scheme-$script-$conns$capped.txt"
  local t0; t0=$(date +%s.%N)
  taskset -c 1 bash -c "wrk -t1 -c$conns -d${DURATION}s --latency -s $OUT/$script $scheme://127.0.0.1:$port/ > $wout 2>&1; cat /proc/\$\$/stat > $wout.stat" || true
  local c1; c1=$(cpu_ticks "$pid")
  python3 - "$wout" "$((c1 - c0))" "$(rss_kb "$pid")" "$name" "$script" "$conns" "$scheme" "$capped" >> "$OUT/results.tsv" <<'PY'
import re, sys
path, ticks, rss, name, script, conns, scheme, capped = sys.argv[1:]
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
      (f"{cpu/(bytes_/1e9):.3f}" if bytes_ else "nan"), f"{cpu/secs*100:.0f}", f"{int(rss)/1024:.1f}", f"{wrk_cpu/secs*100:.0f}", errs.group(1) if errs else "0"])))
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
start_nginx() { taskset -c 0 nginx -c "$PWD/$OUT/nginx/nginx.conf" -p "$PWD/$OUT/nginx" >/dev/null 2>>"$OUT/nginx/error.log" & sleep 1; cat "$OUT/nginx/nginx.pid"; }
# nginx: the master forks the worker; measure the worker (pinned by inheritance).
NGINX_MASTER=$(start_nginx)
PIDS+=("$NGINX_MASTER")
NGINX=$(pgrep -P "$NGINX_MASTER" | head -1)
# run_capped NAME PID PORT: the capped rows.
run_capped() {
  [ "$CAP_OK" = 1 ] || return 0
  cap "$2"
  run "$1" "$2" http "$3" whole.lua "$CONNS" capped
  [ "$1" = floor ] || run "$1" "$2" http "$3" range.lua "$CONNS" capped
  uncap "$2"
}
# rows NAME PID PORT [TLS_PORT]: the selected rows for one server.
rows() {
  if want whole; then run "$1" "$2" http "$3" whole.lua "$CONNS"; run "$1" "$2" http "$3" whole.lua 1000; fi
  if want range && [ "$1" != floor ]; then run "$1" "$2" http "$3" range.lua "$CONNS"; run "$1" "$2" http "$3" range.lua 1000; fi
  if want tls && [ -n "${4:-}" ]; then run "$1" "$2" https "$4" whole.lua "$CONNS"; fi
  if want capped; then run_capped "$1" "$2" "$3"; fi
}
rows nginx "$NGINX" 18080 18443
kill -TERM "$NGINX_MASTER"; wait "$NGINX_MASTER" 2>/dev/null || true

# The floor server (whole files only: it has no ranges).
taskset -c 0 "$OUT/floor_server" 18082 "$PWD/$OUT/cache" 2 > "$OUT/floor.log" 2>&1 &
FLOOR=$!
PIDS+=("$FLOOR")
sleep 0.5
SCENARIOS_SAVED=$SCENARIOS; SCENARIOS=$(echo " $SCENARIOS " | sed 's/ tls / /; s/ range / /')
rows floor "$FLOOR" 18082
SCENARIOS=$SCENARIOS_SAVED
kill -TERM "$FLOOR"; wait "$FLOOR" 2>/dev/null || true

for backend in $BACKENDS; do
  taskset -c 0 "$BIN" appliance --listen 127.0.0.1:18081 --admin-listen 127.0.0.1:19091 \
    --tls-listen 127.0.0.1:18444 --tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem" \
    --cluster bench --public-keys "$OUT/keys/public" --cache-dir "$OUT/cache" --threads 1 \
    --backend "$backend" --access-log-every 0 --log warn > "$OUT/outpost-$backend.log" 2>&1 &
  OP=$!
  PIDS+=("$OP")
  sleep 1
  SCENARIOS_SAVED=$SCENARIOS
  [ "$backend" = io_uring ] || SCENARIOS=$(echo " $SCENARIOS " | sed 's/ tls / /')
  rows "outpost-$backend" "$OP" 18081 18444
  SCENARIOS=$SCENARIOS_SAVED
  if [ "$backend" = io_uring ] && want rss; then
    # RSS while holding 10 000 idle connections (benches/idle_rss.py): right after accept,
    # and after one 64 KiB range GET each (keep-alive, between two requests).
    python3 benches/idle_rss.py 18081 "$OP" 10000 > "$OUT/rss10k-raw.txt"
    python3 benches/idle_rss.py 18081 "$OP" 10000 "/g/$GRANT/bench/v/seg-000.m4s" >> "$OUT/rss10k-raw.txt"
    cat "$OUT/rss10k-raw.txt" >&2
    echo "rss_10k_conns_mb $(sed -n '1s/.* rss_mb=\([0-9.]*\).*/\1/p' "$OUT/rss10k-raw.txt")" > "$OUT/rss10k.txt"
    echo "rss_10k_conns_after_a_request_mb $(sed -n '2s/.* rss_mb=\([0-9.]*\).*/\1/p' "$OUT/rss10k-raw.txt")" >> "$OUT/rss10k.txt"
  fi
  kill -TERM "$OP"; wait "$OP" || true
done

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
touch "$OUT/rss10k.txt"
python3 - "$OUT/results.tsv" "$OUT/rss10k.txt" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
hdr = ["scenario", "server", "req/s", "Gb/s", "p50 ms", "p99 ms", "CPU s/GB", "server core %", "RSS MB", "wrk core %", "non-2xx"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
base = {}
for r in rows:
    if r[1] == "nginx":
        base[r[0]] = r
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
floor = {r[0]: r for r in rows if r[1] == "floor"}
print("| scenario | server | req/s ÷ nginx | CPU/GB ÷ nginx | p99 ÷ nginx | RSS ÷ nginx | CPU/GB ÷ floor | req/s ÷ floor |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r[1] == "nginx" or r[0] not in base:
        continue
    b = base[r[0]]
    f = lambda i, b=b: float(r[i]) / float(b[i]) if float(b[i]) else float("nan")
    fl = floor.get(r[0])
    g = (lambda i: f"{float(r[i]) / float(fl[i]):.2f}" if fl and float(fl[i]) else "—")
    print(f"| {r[0]} | {r[1]} | {f(2):.2f} | {f(6):.2f} | {f(5):.2f} | {f(8):.2f} | {g(6)} | {g(2)} |")
print()
print(open(sys.argv[2]).read().strip())
PY
