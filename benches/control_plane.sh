#!/usr/bin/env bash
# Control plane session starts per second and latency percentiles, SQLite and PostgreSQL side by
# side in one run, plus the floor (only the three grant signatures a start makes).
#
#   benches/control_plane.sh                     # 20 000 starts per backend, 16 in flight
#   CP_BENCH_STARTS=5000 benches/control_plane.sh
#
# The bench process (database threads included) is pinned to core 0 with taskset, so the figures
# are "one core". PostgreSQL is the private loopback cluster of scripts/services; its server
# processes are not pinned (they run on either core), which favours PostgreSQL: read its row as an
# upper bound for one core.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/services start)"
cargo bench -p control_plane --bench session_starts --no-run
taskset -c 0 cargo bench -p control_plane --bench session_starts
