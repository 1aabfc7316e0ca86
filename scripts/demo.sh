#!/usr/bin/env bash
# The weft demo: build, then start a four-host weft mesh on this machine (hosts are network
# namespaces on one underlay bridge), joined as a chain — h2 names h1, h3 names h2, h4 names
# h3 — and show that discovery turns it into a full mesh. Needs root. KEEP=1 leaves it up.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
cargo build --release -p weft
LAB=wd; source scripts/lab.sh
lab_down 2>/dev/null || true
LAB_HOSTS=4
[ "${KEEP:-0}" = 1 ] || trap lab_down EXIT
lab_up 4
lab_weft 1 launch --nickname host1 >/dev/null
for i in 2 3 4; do
    lab_weft "$i" launch --nickname "host$i" "$(lab_ip $((i - 1)))" >/dev/null
done
full_mesh() { lab_weft "$1" status | grep -q 'Peers: 4 (with 12 established connections)'; }
for i in 1 2 3 4; do
    lab_wait 30 full_mesh "$i" || { echo "host$i did not see the full mesh"; lab_weft "$i" status; exit 1; }
done
for i in 1 2 3 4; do
    echo "===== host$i: weft status"
    lab_weft "$i" status
    echo "===== host$i: weft status connections"
    lab_weft "$i" status connections
done
echo "===== host1: weft status peers"
lab_weft 1 status peers
echo "Four hosts, chain-joined, fully meshed."
