# shellcheck shell=bash
# End-to-end test of Docker Compose over weft's network plugin, across two emulated hosts with
# a Docker daemon each (sourced by scripts/e2e.sh; the daemons as in scripts/e2e_plugin.sh).
# A Compose project on each host whose default network has the driver weavemesh (weft's
# IPAM as IPAM driver) brings up its services; they get addresses from weft's IPAM, reach the
# other host's services by their weave.local names (service name, container name, hostname)
# and their own host's by Docker's embedded DNS; an alias added with `docker network connect
# --alias` is in weftDNS too, and goes on disconnect; `docker-compose down` takes the names and
# addresses away.
# Names start with wpc. Skipped without dockerd or docker-compose unless WEFT_REQUIRE_DOCKER=1.

# compose_file <services...>: a Compose file whose services sleep on the weavemesh network,
# with weftDNS as their resolver.
compose_file() {
    local s
    echo 'version: "2.4"'
    echo 'services:'
    for s in "$@"; do
        cat <<EOF
  $s:
    image: $DOCKER_IMAGE
    command: sleep 600
    hostname: $s-host
    domainname: weave.local
    dns: [172.17.0.1]
    dns_search: [weave.local]
EOF
    done
    cat <<'EOF'
networks:
  default:
    driver: weavemesh
    ipam:
      driver: weavemesh
EOF
}

test_compose_across_docker_hosts() {
    have_docker || return 0
    if ! command -v docker-compose >/dev/null; then
        [ "${WEFT_REQUIRE_DOCKER:-0}" = 1 ] && { fail "docker-compose is not installed"; return 1; }
        echo "    (skipped: needs Debian's docker-compose)"; return 0
    fi
    LAB="wpc${LAB#wt}"; LAB_DIR="/tmp/$LAB-lab"
    trap plugin_test_down EXIT
    lab_up 2
    local h
    for h in 1 2; do
        plugin_dockerd_up "$h"
    done
    DOCKER_HOST=$(plugin_docker_host 1) lab_weft 1 launch --nickname host1 --ipalloc-init consensus=2 >/dev/null
    DOCKER_HOST=$(plugin_docker_host 2) lab_weft 2 launch --nickname host2 --ipalloc-init consensus=2 \
        "$(lab_ip 1)" >/dev/null
    lab_wait 30 full_mesh_of 1 2 || { dump_logs; fail "no mesh"; }
    # on <host#> <cmd...>: a command against that host's daemon.
    on() { local h=$1; shift; DOCKER_HOST=$(plugin_docker_host "$h") "$@"; }
    plugin_answers() { on "$1" docker network inspect weave >/dev/null 2>&1; }
    for h in 1 2; do
        # Docker retries an unknown driver for 15 s: the project comes up once the plugin answers.
        lab_wait 30 plugin_answers "$h" || { dump_logs; fail "no plugin on host $h"; }
    done
    compose_file web db >"$LAB_DIR/h1/compose.yml"
    compose_file client >"$LAB_DIR/h2/compose.yml"
    for h in 1 2; do
        on "$h" docker-compose -p "${LAB}p$h" -f "$LAB_DIR/h$h/compose.yml" up -d \
            >"$LAB_DIR/h$h/compose.log" 2>&1 || { cat "$LAB_DIR/h$h/compose.log" >&2; fail "compose up on host $h"; }
    done
    local web client db
    web=$(on 1 docker-compose -p "${LAB}p1" -f "$LAB_DIR/h1/compose.yml" ps -q web)
    db=$(on 1 docker-compose -p "${LAB}p1" -f "$LAB_DIR/h1/compose.yml" ps -q db)
    client=$(on 2 docker-compose -p "${LAB}p2" -f "$LAB_DIR/h2/compose.yml" ps -q client)
    [ -n "$web" ] && [ -n "$db" ] && [ -n "$client" ] || fail "containers of the projects: [$web] [$db] [$client]"
    addr_of() { on "$1" docker exec "$2" ip -o -4 addr show ethwe0 | awk '{print $4}'; }
    local a_web a_client
    a_web=$(addr_of 1 "$web"); a_client=$(addr_of 2 "$client")
    expect_match "$a_web" '^10\.(3[2-9]|4[0-7])\.[0-9]+\.[0-9]+/12$' "web's address from weft's IPAM"
    expect_match "$a_client" '^10\.(3[2-9]|4[0-7])\.[0-9]+\.[0-9]+/12$' "client's address from weft's IPAM"
    [ "${a_web%/*}" != "${a_client%/*}" ] || fail "both hosts gave out ${a_web%/*}"
    reaches() { on "$1" docker exec "$2" ping -c 1 -W 1 "$3" >/dev/null 2>&1; }
    lab_wait 20 reaches 2 "$client" "${a_web%/*}" || { dump_logs; fail "client cannot reach web by address"; }
    # Across hosts by weftDNS: the service name (Compose's network alias), with and without
    # the domain, the container name and the hostname.
    lab_wait 10 reaches 2 "$client" web.weave.local || fail "client cannot reach web.weave.local"
    lab_wait 10 reaches 2 "$client" web || fail "client cannot reach web (search domain)"
    lab_wait 10 reaches 2 "$client" "${LAB}p1_web_1.weave.local" || fail "client cannot reach web by its container name"
    lab_wait 10 reaches 2 "$client" web-host.weave.local || fail "client cannot reach web by its hostname"
    lab_wait 10 reaches 1 "$db" client.weave.local || fail "db cannot reach client.weave.local"
    # On one host, Docker's embedded DNS answers for the project's services as always.
    expect_match "$(on 1 docker exec "$db" cat /etc/resolv.conf)" '^nameserver 127\.0\.0\.11$' "Docker's embedded DNS"
    lab_wait 10 reaches 1 "$db" web || fail "db cannot reach web through Docker's embedded DNS"
    # An alias given when connecting a container to the network.
    on 1 docker network connect --alias extra "${LAB}p1_default" "$(on 1 docker run -d \
        --name "${LAB}x" "$DOCKER_IMAGE" sleep 600)" || fail "network connect --alias"
    lab_wait 10 reaches 2 "$client" extra.weave.local || fail "client cannot reach extra.weave.local"
    gone() { [ -z "$(lab_weft 2 dns-lookup "$1")" ]; }
    # Disconnected, it keeps running but loses the names of its address on that network.
    on 1 docker network disconnect "${LAB}p1_default" "${LAB}x" || fail "network disconnect"
    lab_wait 10 gone extra || fail "extra.weave.local still in weftDNS after disconnect"
    on 1 docker rm -f "${LAB}x" >/dev/null
    # Down: the names go everywhere, the addresses go back to IPAM, no veths stay.
    on 1 docker-compose -p "${LAB}p1" -f "$LAB_DIR/h1/compose.yml" down >"$LAB_DIR/h1/compose.log" 2>&1 \
        || { cat "$LAB_DIR/h1/compose.log" >&2; fail "compose down"; }
    for n in web db web-host extra; do
        lab_wait 10 gone "$n" || fail "$n.weave.local still in weftDNS after down"
    done
    owned() { ip netns exec "$(lab_ns 1)" curl -s http://127.0.0.1:6784/ip | grep -o '"containerid"' | wc -l; }
    none_owned() { [ "$(owned)" = 0 ]; }
    lab_wait 10 none_owned || fail "host 1 still owns $(owned) addresses after down"
    no_veths() { ! ip -n "$(lab_ns 1)" -o link show | grep -q vethw[lg]; }
    lab_wait 10 no_veths || fail "veths left after down"
    on 1 docker network inspect "${LAB}p1_default" >/dev/null 2>&1 && fail "the project's network is still there"
    return 0
}
