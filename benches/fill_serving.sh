#!/usr/bin/env bash
# Fill beside serving (see BENCHMARKS.md, "Fill beside serving"): segment-serving latency of an
# appliance with and without a full-rate fill running on the same appliance.
#
#   benches/fill_serving.sh                  # DURATION=6 CONNS=50 RUNS=2 FILL_MBPS=1200 BULK_MB=1536
#   OUTPOST_BIN=target/release/outpost benches/fill_serving.sh
#
# Set-up, all on 127.0.0.1 with the real binaries: `outpost control-plane` (embedded SQLite) with
# an origin cluster (origin-1) and an embedded cluster (isp-1); two titles imported: `served`
# (the packaged fixture ladder, placed by hand in isp-1's cache) and `bulk` (the same ladder plus
# BULK_MB of random files listed in its catalog, held only by origin-1). isp-1 runs on core 0
# (one data-plane thread; its fleet agent and filler are in the same process and on the same
# core); wrk (1 thread) runs on core 1 and asks isp-1 for random 64 KiB ranges of the `served`
# video files with a play grant. Each run:
#   (a) without fill: isp-1 without --control-plane (nothing to fetch), wrk for DURATION s;
#   (b) with fill: isp-1 with --control-plane and --fill-rate-mbps FILL_MBPS, `bulk` removed from
#       its cache first; wrk starts once fill bytes flow, for DURATION s (the fill lasts longer).
# Reported per run: req/s, p50, p99, and the fill rate reached during (b); then the p99 ratio.
# The origin appliance and the control plane share core 1 with wrk. wrk is closed-loop (CONNS
# connections always busy): with the default 50 the serving core is saturated and p99 includes
# queueing; CONNS=8 measures below saturation.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6}
CONNS=${CONNS:-50}
RUNS=${RUNS:-2}
FILL_MBPS=${FILL_MBPS:-1200}
BULK_MB=${BULK_MB:-1536}
OUT=bench-out/fill-serving
if [ -z "${OUTPOST_BIN:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
  cargo build --release --bin outpost -q
  OUTPOST_BIN=$CARGO_TARGET_DIR/release/outpost
fi
BIN=$OUTPOST_BIN
command -v wrk >/dev/null || { echo "fill_serving.sh: wrk is required (scripts/install-deps)" >&2; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

M=fixtures/media/ladder-h264
for t in served bulk; do
  "$BIN" package --title "$t" --out "$OUT/pk" $M/video-240p.mp4 $M/video-360p.mp4 $M/video-540p.mp4 $M/audio-aac.mp4 >/dev/null
done
# `bulk` gets BULK_MB of extra files (256 MiB each) listed in its catalog.
n=$(( (BULK_MB + 255) / 256 ))
mkdir -p "$OUT/pk/bulk/data"
for i in $(seq 1 "$n"); do head -c $((256 << 20)) /dev/urandom > "$OUT/pk/bulk/data/part-$i.bin"; done
python3 - "$OUT/pk/bulk" <<'EOF'
import hashlib, json, os, sys
d = sys.argv[1]
cat = json.load(open(os.path.join(d, "catalog.json")))
for name in sorted(os.listdir(os.path.join(d, "data"))):
    p = os.path.join(d, "data", name)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    cat["files"].append({"path": "data/" + name, "size": os.path.getsize(p), "sha256": h.hexdigest()})
open(os.path.join(d, "catalog.json"), "w").write(json.dumps(cat, indent=2) + "\n")
EOF

cat > "$OUT/policy.toml" <<'EOF'
[[plans]]
id = "p"
max_tier = "UHD"
max_streams = 2
[[accounts]]
id = "a"
plan = "p"
status = "active"
[[device_classes]]
id = "browser"
key_systems = ["org.w3.clearkey"]
max_tier = "UHD"
[[geo]]
prefix = "127.0.0.0/8"
country = "NZ"
[[windows]]
title = "served"
country = "NZ"
start = 0
end = 4102444800
max_tier = "UHD"
[[windows]]
title = "bulk"
country = "NZ"
start = 0
end = 4102444800
max_tier = "UHD"
[[sites]]
id = "s"
[[clusters]]
id = "isp"
site = "s"
kind = "embedded"
[[clusters]]
id = "origin"
site = "s"
kind = "origin"
[[appliances]]
id = "isp-1"
cluster = "isp"
address = "127.0.0.1"
port = 18181
prefixes = ["127.0.0.0/8"]
credential = "isp-1-credential-0123456789"
[[appliances]]
id = "origin-1"
cluster = "origin"
address = "127.0.0.1"
port = 18182
credential = "origin-1-credential-0123456789"
EOF
"$BIN" control-plane --data-dir "$OUT/cp" import "$OUT/policy.toml" "$OUT/pk/served/catalog.json" "$OUT/pk/bulk/catalog.json" >/dev/null
taskset -c 1 "$BIN" control-plane --data-dir "$OUT/cp" --listen 127.0.0.1:18700 --appliance-heartbeat-secs 1 \
  --snapshot-ttl-ms 200 --fill-plan-refresh-secs 1 > "$OUT/cp.log" 2>&1 &
PIDS+=($!)
sleep 1
CP=http://127.0.0.1:18700

mkdir -p "$OUT/origin/cache" "$OUT/origin/keys" "$OUT/isp/cache" "$OUT/isp/keys"
mv "$OUT/pk/bulk" "$OUT/origin/cache/bulk"
cp -r "$OUT/pk/served" "$OUT/origin/cache/served"
cp -r "$OUT/pk/served" "$OUT/isp/cache/served"
taskset -c 1 "$BIN" appliance --id origin-1 --cluster origin --listen 127.0.0.1:18182 --admin-listen 127.0.0.1:19182 \
  --threads 1 --public-keys "$OUT/origin/keys" --cache-dir "$OUT/origin/cache" \
  --control-plane $CP --credential origin-1-credential-0123456789 --fill-window always > "$OUT/origin.log" 2>&1 &
PIDS+=($!)
sleep 1
KEY=$(ls "$OUT"/cp/keys/*.key.pem | head -1)
GRANT=$("$BIN" grant sign --key "$KEY" --aud isp --prefix /served/ --ttl 3600)
# Random 64 KiB ranges of the three video files of `served`.
lua_files=""
for f in video-240p video-360p video-540p; do
  size=$(stat -c %s "$OUT/isp/cache/served/$f/$f.mp4")
  lua_files="$lua_files{\"$f/$f.mp4\", $size},"
done
cat > "$OUT/ranges.lua" <<EOF
local files = { $lua_files }
request = function()
  local f = files[math.random(1, #files)]
  local off = math.random(0, f[2] - 65537)
  return wrk.format("GET", "/g/$GRANT/served/" .. f[1], { ["Range"] = string.format("bytes=%d-%d", off, off + 65535) })
end
EOF

metric() { curl -s http://127.0.0.1:19181/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
start_isp() {
  taskset -c 0 "$BIN" appliance --id isp-1 --cluster isp --listen 127.0.0.1:18181 --admin-listen 127.0.0.1:19181 \
    --threads 1 --backend auto --public-keys "$OUT/isp/keys" --cache-dir "$OUT/isp/cache" --access-log-every 0 "$@" \
    >> "$OUT/isp.log" 2>&1 &
  ISP=$!
  PIDS+=($ISP)
  for _ in $(seq 50); do curl -sf http://127.0.0.1:19181/readyz >/dev/null && break; sleep 0.1; done
}
stop_isp() { kill "$ISP"; wait "$ISP" 2>/dev/null || true; }
run_wrk() { taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$OUT/ranges.lua" http://127.0.0.1:18181/ > "$1" 2>&1; }

# isp-1 needs the keys once from the control plane (its cache), then runs either way.
start_isp --control-plane $CP --credential isp-1-credential-0123456789 --fill-window 00:00-00:01
sleep 2; stop_isp
ROWS=()
for r in $(seq 1 "$RUNS"); do
  rm -rf "$OUT/isp/cache/bulk" "$OUT/isp/cache/.fill"
  start_isp
  taskset -c 1 wrk -t1 -c"$CONNS" -d1s -s "$OUT/ranges.lua" http://127.0.0.1:18181/ >/dev/null 2>&1 || true
  run_wrk "$OUT/wrk-nofill-$r.txt"
  stop_isp
  start_isp --control-plane $CP --credential isp-1-credential-0123456789 --fill-window always \
    --fill-rate-mbps "$FILL_MBPS" --fill-concurrency 4
  for _ in $(seq 100); do b=$(metric outpost_appliance_fill_bytes_total); [ "${b:-0}" -gt 0 ] && break; sleep 0.1; done
  b0=$(metric outpost_appliance_fill_bytes_total); t0=$(date +%s.%N)
  run_wrk "$OUT/wrk-fill-$r.txt"
  b1=$(metric outpost_appliance_fill_bytes_total); t1=$(date +%s.%N)
  held=$(metric outpost_appliance_titles_held)
  echo "$b0 $b1 $t0 $t1 $held" > "$OUT/fill-$r.txt"
  stop_isp
done

python3 - "$OUT" "$RUNS" "$FILL_MBPS" <<'EOF'
import re, sys
out, runs, mbps = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def dur(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
def parse(p):
    t = open(p).read()
    p50 = dur(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
    p99 = dur(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return rps, p50, p99, int(non2xx.group(1)) if non2xx else 0
print(f"| run | fill | req/s | p50 ms | p99 ms | non-2xx | fill rate during run (Mb/s, cap {mbps}) |")
print("|---|---|---|---|---|---|---|")
ratios = []
for r in range(1, runs + 1):
    a = parse(f"{out}/wrk-nofill-{r}.txt")
    b = parse(f"{out}/wrk-fill-{r}.txt")
    b0, b1, t0, t1, held = open(f"{out}/fill-{r}.txt").read().split()
    rate = (int(b1) - int(b0)) * 8 / (float(t1) - float(t0)) / 1e6
    print(f"| {r} | off | {a[0]:.0f} | {a[1]:.2f} | {a[2]:.2f} | {a[3]} | - |")
    print(f"| {r} | on | {b[0]:.0f} | {b[1]:.2f} | {b[2]:.2f} | {b[3]} | {rate:.0f} |")
    ratios.append((b[2] / a[2], b[0] / a[0]))
for i, (p, q) in enumerate(ratios, 1):
    print(f"run {i}: p99 with fill / without = {p:.2f}, req/s ratio = {q:.2f}")
EOF
