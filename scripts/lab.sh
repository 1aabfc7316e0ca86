# shellcheck shell=bash
# The multi-host lab: emulated hosts are network namespaces on one underlay bridge, each with
# its own weft router, state dir and run dir. Source this file; every name it creates starts
# with $LAB (default "wl"), and lab_down removes all of it, even after a failure.
#
#   LAB=wt1 ; source scripts/lab.sh ; lab_up 3 ; lab_weft 1 launch --name ::1 ; lab_down

: "${LAB:=wl}"
: "${LAB_NET:=10.99}"          # underlay 10.99.<n>.0/24 hosts get .1, .2, ...
: "${LAB_SUBNET:=0}"
: "${WEFT:=${CARGO_TARGET_DIR:-/var/tmp/weft-target}/release/weft}"
LAB_DIR="${LAB_DIR:-/tmp/$LAB-lab}"
LAB_HOSTS=0

lab_ns()   { echo "${LAB}h$1"; }
lab_ip()   { echo "$LAB_NET.$LAB_SUBNET.$1"; }

# The underlay is a bridge in a namespace of its own (the lab's switch), not in the machine's:
# a Docker daemon sets the machine's FORWARD policy to DROP and sends bridged frames through
# it, which would cut the lab's hosts off from each other.
lab_sw() { echo "${LAB}sw"; }

lab_up() {
    local n=$1 i
    mkdir -p "$LAB_DIR"
    ip netns add "$(lab_sw)"
    ip -n "$(lab_sw)" link add br0 type bridge
    ip -n "$(lab_sw)" link set br0 up
    # Bridged frames need no firewall here (where the kernel allows saying so per namespace).
    ip netns exec "$(lab_sw)" sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
    for ((i = 1; i <= n; i++)); do lab_add_host "$i"; done
}

# lab_add_host <host#>: one more host on the underlay (lab_up adds the first ones).
lab_add_host() {
    local i=$1 ns
    ns=$(lab_ns "$i")
    ip netns add "$ns"
    ip -n "$(lab_sw)" link add "h${i}u" type veth peer name eth0 netns "$ns"
    ip -n "$(lab_sw)" link set "h${i}u" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(lab_ip "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    # Docker's default bridge, so weft's default DNS address exists as on a Docker host.
    ip -n "$ns" link add docker0 type bridge
    ip -n "$ns" addr add 172.17.0.1/16 dev docker0
    ip -n "$ns" link set docker0 up
    mkdir -p "$LAB_DIR/h$i/state" "$LAB_DIR/h$i/run"
    ((i > LAB_HOSTS)) && LAB_HOSTS=$i
    return 0
}

# lab_weft <host#> <weft args...>: run a weft command "on" that host (its Docker plugin sockets
# in a directory of its own, which only a dockerd started for that host sees).
lab_weft() {
    local i=$1; shift
    ip netns exec "$(lab_ns "$i")" env \
        WEFT_STATE_DIR="$LAB_DIR/h$i/state" WEFT_RUN_DIR="$LAB_DIR/h$i/run" \
        WEFT_PLUGINS_DIR="$LAB_DIR/h$i/plugins" "$WEFT" "$@"
}

# lab_container <name>: a "container" network namespace named $LAB<name> (attach it to a host
# with `lab_weft <h> attach <cidr> netns:$LAB<name>`); lab_in <name> <cmd...> runs inside it.
lab_container() {
    ip netns add "$LAB$1"
    echo "$LAB$1" >>"$LAB_DIR/containers"
    ip -n "$LAB$1" link set lo up
}
lab_in() { local c=$1; shift; ip netns exec "$LAB$c" "$@"; }

# lab_hostname <name> <fqdn>: the container's hostname and resolver, as Docker gives them:
# /etc/netns/$LAB<name>/{hostname,resolv.conf} (what `ip netns exec` shows as /etc/...; weft
# registers the hostname in DNS on attach), the resolver being weftDNS on docker0 (172.17.0.1).
lab_hostname() {
    local d="/etc/netns/$LAB$1"
    mkdir -p "$d"
    echo "$2" >"$d/hostname"
    printf 'nameserver 172.17.0.1\nsearch weave.local\n' >"$d/resolv.conf"
}

# lab_docker_eth0 <host#> <name> <ip>: an eth0 for the container on that host's docker0 bridge
# (172.17.0.0/16), as Docker's default network gives one; the host's DNS address is then
# reachable from it.
lab_docker_eth0() {
    local h=$1 c=$2 ip=$3 v="veth${LAB}$2"
    ip -n "$(lab_ns "$h")" link add "${v:0:15}" type veth peer name eth0 netns "$LAB$c"
    ip -n "$(lab_ns "$h")" link set "${v:0:15}" master docker0 up
    ip -n "$LAB$c" addr add "$ip/16" dev eth0
    ip -n "$LAB$c" link set eth0 up
}

# lab_block_port <a#> <b#> <udp port>: drop that UDP port between two hosts (both directions).
lab_block_port() {
    local a=$1 b=$2 port=$3
    ip netns exec "$(lab_ns "$a")" nft -f - <<NFT
table inet ${LAB}blockp {
    chain in { type filter hook input priority 0; ip saddr $(lab_ip "$b") udp dport $port drop; }
    chain out { type filter hook output priority 0; ip daddr $(lab_ip "$b") udp dport $port drop; }
}
NFT
}

# lab_unblock_port <a#>: lifts lab_block_port on host a.
lab_unblock_port() { ip netns exec "$(lab_ns "$1")" nft delete table inet "${LAB}blockp"; }

# lab_block <a#> <b#>: drop underlay traffic between two hosts (in both namespaces).
lab_block() {
    local a=$1 b=$2
    ip netns exec "$(lab_ns "$a")" nft -f - <<NFT
table inet ${LAB}block {
    chain in { type filter hook input priority 0; ip saddr $(lab_ip "$b") drop; }
    chain out { type filter hook output priority 0; ip daddr $(lab_ip "$b") drop; }
}
NFT
}

# lab_wait <seconds> <command...>: poll until the command succeeds or the deadline passes.
lab_wait() {
    local secs=$1; shift
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then return 1; fi
        sleep 0.1
    done
}

# kill_tree <pid>: SIGKILLs a process started by the caller and everything it started (its
# children first found, then it), by PID: `ip netns exec` forks, so killing the PID a background
# job got would leave what it ran.
kill_tree() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$c"; done
    kill -9 "$1" 2>/dev/null || true
}

lab_down() {
    local i pid ns
    for ((i = 1; i <= LAB_HOSTS; i++)); do
        pid=$(cat "$LAB_DIR/h$i/run/weft.pid" 2>/dev/null) || true
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    for ((i = 1; i <= LAB_HOSTS; i++)); do
        pid=$(cat "$LAB_DIR/h$i/run/weft.pid" 2>/dev/null) || true
        if [ -n "$pid" ]; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        ns=$(lab_ns "$i")
        ip netns del "$ns" 2>/dev/null || true
    done
    ip netns del "$(lab_sw)" 2>/dev/null || true
    # Exactly the container namespaces this lab made (another lab's names may share a prefix).
    local c
    if [ -f "$LAB_DIR/containers" ]; then
        while read -r c; do
            ip netns del "$c" 2>/dev/null || true
            rm -rf "/etc/netns/$c"
        done <"$LAB_DIR/containers"
    fi
    rm -rf "$LAB_DIR"
    LAB_HOSTS=0
}
