#!/usr/bin/env bash
# Topology update benchmark: time and memory of one topology update (delta applied, routes
# recalculated, timers, data-path snapshot) in a mesh of 1,000 and of 4,096 peers, one process
# per size (crates/weft-core/examples/topology_update.rs). Goals: <= 50 ms per update, <= 64 MB.
# No root needed. Usage: bench/topology.sh [degree] [updates]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
cargo build --release -q -p weft-core --example topology_update
DEGREE=${1:-8}
UPDATES=${2:-300}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in 1000 4096; do
    "$CARGO_TARGET_DIR/release/examples/topology_update" "$n" "$DEGREE" "$UPDATES"
done
