#!/usr/bin/env bash
# The weft demo: build, then start a weft network of three hosts on this machine (hosts are
# network namespaces on one underlay bridge), joined as a chain — h2 names h1, h3 names h2 —
# which discovery turns into a full mesh. Each host gets a container (a network namespace
# attached with `weft attach`, its address allocated from the pool the three hosts share,
# 10.32.0.0/12) and a name in weftDNS (its hostname cN.weave.local, registered on attach and
# gossiped to every host); the containers ping each other across hosts by name, over the
# kernel fast path (VXLAN). Then the link between h1 and h3 is cut on the underlay and c1
# still reaches c3, relayed by h2 over sleeve. Needs root. KEEP=1 leaves everything up.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
cargo build --release -p weft
LAB=wd; source scripts/lab.sh
LAB_HOSTS=3; lab_down 2>/dev/null || true
LAB_HOSTS=3
[ "${KEEP:-0}" = 1 ] || trap lab_down EXIT
lab_up 3
say() { printf '\n===== %s\n' "$*"; }
# The three agree on how to split the address pool once all three are there.
lab_weft 1 launch --nickname host1 --ipalloc-init consensus=3 >/dev/null
lab_weft 2 launch --nickname host2 --ipalloc-init consensus=3 "$(lab_ip 1)" >/dev/null
lab_weft 3 launch --nickname host3 --ipalloc-init consensus=3 "$(lab_ip 2)" >/dev/null
declare -A ADDR
for i in 1 2 3; do
    lab_container "c$i"
    # As Docker gives a container: a hostname, an eth0 on docker0 and weftDNS as resolver.
    lab_hostname "c$i" "c$i.weave.local"
    lab_docker_eth0 "$i" "c$i" "172.17.0.$((i + 1))"
    ADDR[$i]=$(lab_weft "$i" attach "netns:${LAB}c$i")
    echo "host$i: weft attach netns:${LAB}c$i -> ${ADDR[$i]}"
done
full_mesh() { lab_weft "$1" status | grep -q 'Peers: 3 (with 6 established connections)'; }
fastdp() { [ "$(lab_weft "$1" status connections | grep -c 'established fastdp')" = 2 ]; }
for i in 1 2 3; do
    lab_wait 30 full_mesh "$i" || { echo "host$i did not see the full mesh"; lab_weft "$i" status; exit 1; }
    lab_wait 30 fastdp "$i" || echo "(host$i: not every connection uses fastdp yet)"
done
say "host2: weft status"
lab_weft 2 status
for i in 1 2 3; do say "host$i: weft status connections"; lab_weft "$i" status connections; done
say "host1: weft status ipam"
lab_weft 1 status ipam
say "host1: weft ps"
lab_weft 1 ps "netns:${LAB}c1"
say "host3: weft status dns"
names() { [ "$(lab_weft 3 status dns | wc -l)" = 3 ]; }
lab_wait 10 names || true
lab_weft 3 status dns
for src in 1 2 3; do
    for dst in 1 2 3; do
        [ "$src" = "$dst" ] && continue
        say "c$src (host$src) -> c$dst (host$dst): ping c$dst"
        lab_wait 10 lab_in "c$src" ping -c 1 -W 1 "c$dst" >/dev/null
        lab_in "c$src" ping -c 2 -i 0.2 "c$dst" | grep -E 'PING|bytes from|packet loss'
    done
done
say "cutting the underlay between host1 and host3; once heartbeats time out (up to 60 s) c1 -> c3 is relayed by host2"
lab_block 1 3
relayed() { lab_weft 1 status | grep -q 'Connections: 1 (1 established)'; }
lab_wait 90 relayed || true
lab_wait 30 lab_in c1 ping -c 1 -W 1 c3 >/dev/null
lab_in c1 ping -c 3 -i 0.2 c3 | grep -E 'bytes from|packet loss'
say "host1: weft status connections"
lab_weft 1 status connections
echo
echo "Three hosts, chain-joined, fully meshed; containers reach each other across hosts by name."
