# shellcheck shell=bash
# End-to-end tests of the legacy Docker network plugin (sourced by scripts/e2e.sh): a dockerd
# of its own on emulated host 1 (its network namespace, a private mount namespace with the
# host's plugin directory bound over /run/docker/plugins), the router beside it. The router
# makes the network `weave`; `docker run --net=weave` gets an address from weft's IPAM on
# ethwe0 (Docker numbers the prefix ethwe), reaches a container attached with `weft attach` on
# host 2 by address and by name, and its names are in weftDNS; other networks can use the
# drivers; bad requests get Docker's error answers; a router killed and started again knows
# the network; `weft stop` removes the network and the sockets and leaves no veths behind;
# `weft reset` removes stale sockets.
# Names start with wpl. Skipped without dockerd unless WEFT_REQUIRE_DOCKER=1.

source scripts/docker_lab.sh

# host#:PID of each daemon started.
PLUGIN_DOCKERD_PIDS=()

# plugin_docker_host <host#>: the DOCKER_HOST of that host's daemon.
plugin_docker_host() { echo "unix://$LAB_DIR/h$1/docker/docker.sock"; }

# plugin_dockerd_up <host#>: a dockerd in that host's namespaces, at $DOCKER_HOST (the last one
# started).
plugin_dockerd_up() {
    local h=$1 d="$LAB_DIR/h$1/docker"
    mkdir -p "$d/etc" "$d/data" "$d/exec" "$LAB_DIR/h$h/plugins"
    nsenter --net="/run/netns/$(lab_ns "$h")" unshare --mount --uts --propagation private sh -c "
        hostname $(lab_ns "$h") && mkdir -p /run/docker/plugins /etc/docker &&
        mount --bind $LAB_DIR/h$h/plugins /run/docker/plugins && mount --bind $d/etc /etc/docker &&
        exec dockerd --host unix://$d/docker.sock --data-root $d/data --exec-root $d/exec \
            --pidfile $d/docker.pid" >"$d/dockerd.log" 2>&1 &
    PLUGIN_DOCKERD_PIDS+=("$h:$!")
    DOCKER_HOST=$(plugin_docker_host "$h")
    export DOCKER_HOST
    lab_wait 30 docker_answers || { tail -20 "$d/dockerd.log" >&2; return 1; }
    docker_image
}

# plugin_test_down: on each host with a daemon, its containers go, then the router, then the
# daemon; then the lab.
plugin_test_down() {
    local ids pid h hp
    for hp in "${PLUGIN_DOCKERD_PIDS[@]}"; do
        h=${hp%%:*} pid=${hp#*:}
        export DOCKER_HOST; DOCKER_HOST=$(plugin_docker_host "$h")
        ids=$(docker ps -aq 2>/dev/null) || true
        # shellcheck disable=SC2086 # one ID per word
        [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
        lab_weft "$h" stop >/dev/null 2>&1 || true
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    PLUGIN_DOCKERD_PIDS=()
    lab_down
}

# plugin_call <host#> <driver> <path> <body>: the HTTP code and body of one request.
plugin_call() {
    curl -s --max-time 5 -w ' %{http_code}' --unix-socket "$LAB_DIR/h$1/plugins/$2.sock" \
        -X POST "http://plugin$3" -d "$4"
}

test_plugin_docker_network() {
    have_docker || return 0
    LAB="wpl${LAB#wt}"; LAB_DIR="/tmp/$LAB-lab"
    trap plugin_test_down EXIT
    lab_up 2
    plugin_dockerd_up 1
    lab_weft 1 launch --nickname host1 --ipalloc-init consensus=2 >/dev/null
    # Host 2 has no Docker (DOCKER_HOST names host 1's daemon).
    lab_weft 2 launch --nickname host2 --no-docker --ipalloc-init consensus=2 "$(lab_ip 1)" >/dev/null
    lab_wait 30 full_mesh_of 1 2 || { dump_logs; fail "no mesh"; }
    # The default network, once the plugin answers.
    lab_wait 30 docker network inspect weave || { grep plugin "$LAB_DIR/h1/run/weft.log" >&2 || true; fail "no network weave"; }
    expect_eq "$(docker network inspect -f '{{.Driver}} {{.IPAM.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}} {{index .Options "works.weave.multicast"}}' weave)" \
        "weavemesh weavemesh 10.32.0.0/12 true" "network weave"
    local st; st=$(lab_weft 1 status)
    expect_match "$st" '^        Service: plugin \(legacy\)$' "status plugin section"
    expect_match "$st" '^     DriverName: weave$' "status driver name"
    # A container on host 2, attached by weft.
    lab_container c2
    lab_hostname c2 c2.weave.local
    local ip2; ip2=$(lab_weft 2 attach "netns:${LAB}c2")
    expect_match "$ip2" '^10\.(3[2-9]|4[0-7])\.' "attach on host 2"
    # docker run --net=weave on host 1.
    # shellcheck disable=SC2046
    docker run -d --name "${LAB}-x" --net=weave $(lab_weft 1 dns-args) -h x.weave.local \
        "$DOCKER_IMAGE" sleep 600 >/dev/null
    local addr; addr=$(docker exec "${LAB}-x" ip -o -4 addr show ethwe0 | awk '{print $4}')
    expect_match "$addr" '^10\.(3[2-9]|4[0-7])\.[0-9]+\.[0-9]+/12$' "address on ethwe0 from IPAM"
    local ipx=${addr%/*}
    expect_match "$(docker exec "${LAB}-x" ip route)" '^224\.0\.0\.0/4 dev ethwe0' "multicast route"
    expect_match "$(ip netns exec "$(lab_ns 1)" curl -s http://127.0.0.1:6784/ip)" "\"containerid\":\"$ipx\"" "owned under its address"
    docker_ping() { docker exec "${LAB}-x" ping -c 1 -W 1 "$1" >/dev/null 2>&1; }
    lab_wait 20 docker_ping "$ip2" || { dump_logs; fail "x cannot reach c2 by address"; }
    lab_wait 10 docker_ping c2.weave.local || fail "x cannot reach c2 by name"
    # Weave's neighbour settings, given when the container started.
    tuned() { [ "$(docker exec "${LAB}-x" cat /proc/sys/net/ipv4/neigh/ethwe0/base_reachable_time)" = 5 ]; }
    lab_wait 10 tuned || fail "ethwe0's neighbour settings"
    looks_up() { [ "$(lab_weft "$1" dns-lookup "$2")" = "$3" ]; }
    lab_wait 10 looks_up 2 x "$ipx" || fail "x.weave.local not in weftDNS: [$(lab_weft 2 dns-lookup x)]"
    lab_wait 10 looks_up 2 "${LAB}-x" "$ipx" || fail "the container's name not in weftDNS"
    lab_wait 10 pings c2 "$ipx" || fail "c2 cannot reach x"
    # Other networks with the drivers.
    docker network create -d weavemesh "${LAB}-net2" >/dev/null || fail "network with weavemesh"
    docker network create -d weavemesh --ipam-driver weavemesh --subnet 10.40.0.0/16 "${LAB}-net3" >/dev/null \
        || fail "network with weavemesh IPAM"
    docker run --rm --net="${LAB}-net3" "$DOCKER_IMAGE" ip -o -4 addr show ethwe0 >"$LAB_DIR/net3" \
        || fail "run on net3"
    expect_match "$(cat "$LAB_DIR/net3")" ' 10\.40\.[0-9]+\.[0-9]+/16 ' "address on net3"
    docker network rm "${LAB}-net2" "${LAB}-net3" >/dev/null
    # Bad requests.
    expect_match "$(plugin_call 1 weavemesh /NetworkDriver.CreateNetwork '{')" '^\{"Err":"decoding request: .*"\} 500$' "bad JSON"
    expect_match "$(plugin_call 1 weave /NetworkDriver.CreateNetwork '{"NetworkID":"n","Options":{"com.docker.network.generic":{"works.weave.multicast":"x"}}}')" \
        '^\{"Err":"unrecognized value \\"x\\" for option works.weave.multicast"\} 500$' "bad option value"
    expect_match "$(plugin_call 1 weavemesh /NetworkDriver.Nope '{}')" ' 404$' "unknown endpoint"
    expect_match "$(plugin_call 1 weave /IpamDriver.RequestPool '{}')" ' 404$' "no IPAM on weave"
    # A router killed and started again finds the network it did not see made: a container
    # joining it gets the multicast route and its names.
    local pid; pid=$(cat "$LAB_DIR/h1/run/weft.pid")
    kill -9 "$pid"
    lab_wait 10 exited "$pid" || fail "router did not die"
    lab_weft 1 launch --nickname host1 --ipalloc-init consensus=2 "$(lab_ip 2)" >/dev/null
    # shellcheck disable=SC2046
    docker run -d --name "${LAB}-y" --net=weave $(lab_weft 1 dns-args) -h y.weave.local \
        "$DOCKER_IMAGE" sleep 600 >/dev/null
    local ipy; ipy=$(docker exec "${LAB}-y" ip -o -4 addr show ethwe0 | awk '{print $4}' | cut -d/ -f1)
    expect_match "$(docker exec "${LAB}-y" ip route)" '^224\.0\.0\.0/4 dev ethwe0' "multicast route after restart"
    lab_wait 10 looks_up 2 y "$ipy" || fail "y.weave.local not in weftDNS after restart"
    # The containers go, then the router: no veths left, no network, no sockets.
    docker rm -f "${LAB}-x" "${LAB}-y" >/dev/null
    no_veths() { ! ip -n "$(lab_ns 1)" -o link show | grep -q vethw[lg]; }
    lab_wait 10 no_veths || fail "veths left after the container went: $(ip -n "$(lab_ns 1)" -o link show | grep -o 'vethw[lg][^:@]*')"
    lab_weft 1 stop >/dev/null
    ! docker network inspect weave >/dev/null 2>&1 || fail "network weave still there after stop"
    [ ! -e "$LAB_DIR/h1/plugins/weave.sock" ] && [ ! -e "$LAB_DIR/h1/plugins/weavemesh.sock" ] \
        || fail "sockets left after stop"
    # Sockets a dead plugin left behind go on reset (Docker would hang on them).
    touch "$LAB_DIR/h1/plugins/weave.sock" "$LAB_DIR/h1/plugins/weavemesh.sock"
    lab_weft 1 reset --force >/dev/null 2>&1 || true
    [ ! -e "$LAB_DIR/h1/plugins/weave.sock" ] && [ ! -e "$LAB_DIR/h1/plugins/weavemesh.sock" ] \
        || fail "stale sockets left after reset"
}
