#!/usr/bin/env bash
# Router memory with many attached Docker containers: a router on one lab host (plugin off, so
# that the machine's own dockerd serves it), N containers (default 100) started with
# `weft run --net=none` (docker run with weftDNS's settings, then attach: an address from IPAM
# and a name in weftDNS each), then the router's resident memory: before the first container,
# after the last one, and its peak (VmHWM). The target is at most 20 MB with 100 containers.
# (bench/docker.sh times `weft run` against `docker run`.)
# Needs root, dockerd (Debian's docker.io; started here if none answers) and busybox-static.
# Usage: bench/docker_containers.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"

N=${1:-100}
case "$N" in ''|*[!0-9]*) echo "usage: $0 [number of containers]" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
cargo build --release -q -p weft

# Not "w...": lab_down removes every namespace whose name starts with its LAB (see dataplane.sh).
LAB="bc$(printf '%04x' $((RANDOM % 65536)))"
source scripts/lab.sh
source scripts/docker_lab.sh
cleanup() {
    docker_rm_named "$LAB"
    docker_down
    lab_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

docker_up
lab_up 1
lab_weft 1 launch --nickname host1 --no-plugin >/dev/null
pid=$(cat "$LAB_DIR/h1/run/weft.pid")
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
rss0=$(kb VmRSS)

for i in $(seq "$N"); do
    lab_weft 1 run --name "${LAB}c$i" --net=none "$DOCKER_IMAGE" sleep 600 >/dev/null
done
# Every container has its name and its address.
entries=$(lab_weft 1 status | awk '/Entries:/{print $2; exit}')
owned=$(ip netns exec "$(lab_ns 1)" curl -s http://127.0.0.1:6784/ip | grep -o '"containerid"' | wc -l)
rss1=$(kb VmRSS) hwm=$(kb VmHWM)
printf 'containers: %d (DNS entries %s, addresses owned %s)\n' "$N" "$entries" "$owned"
printf 'router RSS: %.1f MB before, %.1f MB with %d containers, peak %.1f MB (target <= 20 MB: %s)\n' \
    "$(echo "$rss0 / 1024" | bc -l)" "$(echo "$rss1 / 1024" | bc -l)" "$N" "$(echo "$hwm / 1024" | bc -l)" \
    "$([ "$hwm" -le 20480 ] && echo PASS || echo MISS)"
