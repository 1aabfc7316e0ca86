# shellcheck shell=bash
# End-to-end tests with a real Docker daemon (sourced by scripts/e2e.sh): Docker containers
# found by name or ID for attach, detach and dns-add; `weft run` (docker run with weftDNS's
# settings, then attach) and `weft restart` (the same addresses back); the router following
# Docker's events (names go on die, addresses on destroy). One dockerd in the
# machine's own namespaces serves the lab hosts (containers run with --net=none and get only
# their weave interface). Without dockerd installed the tests say they are skipped, unless
# WEFT_REQUIRE_DOCKER=1 (as CI sets it), which makes that a failure. The routers run without
# the Docker plugin: this daemon cannot see their sockets (scripts/e2e_plugin.sh tests it).

source scripts/docker_lab.sh

have_docker() {
    command -v dockerd >/dev/null && command -v docker >/dev/null && return 0
    [ "${WEFT_REQUIRE_DOCKER:-0}" = 1 ] && { fail "dockerd is not installed"; return 1; }
    echo "    (skipped: needs Debian's docker.io)"; return 1
}

# docker_test_down: removes the test's containers, stops a daemon it started, then the lab.
docker_test_down() {
    local ids
    ids=$(docker ps -aq --filter "name=^${LAB}" 2>/dev/null) || true
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    docker_down
    lab_down
}

test_docker_run_attach_and_names() {
    have_docker || return 0
    trap docker_test_down EXIT
    docker_up
    lab_up 2
    lab_weft 1 launch --nickname host1 --no-plugin --ipalloc-init consensus=2 >/dev/null
    lab_weft 2 launch --nickname host2 --no-plugin --ipalloc-init consensus=2 "$(lab_ip 1)" >/dev/null
    lab_wait 30 full_mesh_of 1 2 || { dump_logs; fail "no mesh"; }
    # weft run: docker run with weftDNS's settings, then attach; prints the container's ID.
    local id; id=$(lab_weft 1 run --name "${LAB}a" --net=none "$DOCKER_IMAGE" sleep 600)
    expect_match "$id" '^[0-9a-f]{64}$' "weft run prints the container ID"
    expect_eq "$(docker inspect -f '{{.Config.Hostname}} {{.HostConfig.Dns}} {{.HostConfig.DnsSearch}}' "$id")" \
        "${LAB}a.weave.local [172.17.0.1] [.]" "docker run got weftDNS's settings"
    local ipa; ipa=$(docker exec "$id" ip -o -4 addr show ethwe | awk '{print $4}' | cut -d/ -f1)
    expect_match "$ipa" '^10\.(3[2-9]|4[0-7])\.' "address from the pool"
    # A container started by docker itself, attached by name on the other host.
    docker run -d --name "${LAB}b" --net=none -h "b.weave.local" "$DOCKER_IMAGE" sleep 600 >/dev/null
    local ipb; ipb=$(lab_weft 2 attach "${LAB}b")
    expect_match "$ipb" '^10\.(3[2-9]|4[0-7])\.' "attach by name"
    docker_ping() { docker exec "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1; }
    lab_wait 15 docker_ping "${LAB}a" "$ipb" || fail "a cannot reach b across hosts"
    # IPAM and DNS file the container under its full ID; names registered on attach resolve
    # on both hosts.
    expect_eq "$(ip netns exec "$(lab_ns 2)" curl -s "http://127.0.0.1:6784/ip/$id")" "" "a is not host2's"
    expect_eq "$(ip netns exec "$(lab_ns 1)" curl -s "http://127.0.0.1:6784/ip/$id" | cut -d/ -f1)" "$ipa" "IPAM ident is the ID"
    looks_up() { [ "$(lab_weft "$1" dns-lookup "$2")" = "$3" ]; }
    lab_wait 10 looks_up 2 "${LAB}a" "$ipa" || fail "a's name not seen on host2"
    lab_wait 10 looks_up 1 b "$ipb" || fail "b's name not seen on host1"
    # dns-add by name with -h; dns-remove by ID.
    lab_weft 2 dns-add "${LAB}b" -h extra.weave.local
    lab_wait 10 looks_up 1 extra "$ipb" || fail "dns-add by container name"
    lab_weft 2 dns-remove "$(docker inspect -f '{{.Id}}' "${LAB}b")" -h extra.weave.local
    gone_name() { [ -z "$(lab_weft "$1" dns-lookup "$2")" ]; }
    lab_wait 10 gone_name 1 extra || fail "dns-remove by ID"
    # weft restart: docker restart, then the same address again (IPAM keeps it under the ID).
    lab_weft 1 restart "${LAB}a" >/dev/null
    expect_eq "$(docker exec "$id" ip -o -4 addr show ethwe | awk '{print $4}' | cut -d/ -f1)" "$ipa" "same address after restart"
    # The router follows Docker: a container that dies loses its names at once everywhere and
    # keeps its addresses while it may start again; destroyed, it loses them.
    lab_wait 10 looks_up 2 "${LAB}a" "$ipa" || fail "a's name not back after restart"
    docker stop -t 0 "${LAB}a" >/dev/null
    lab_wait 10 gone_name 2 "${LAB}a" || fail "a's name still there after it died"
    expect_eq "$(ip netns exec "$(lab_ns 1)" curl -s "http://127.0.0.1:6784/ip/$id" | cut -d/ -f1)" "$ipa" "address kept after die"
    docker rm "${LAB}a" >/dev/null
    released() { [ -z "$(ip netns exec "$(lab_ns 1)" curl -s "http://127.0.0.1:6784/ip/$id")" ]; }
    lab_wait 10 released || fail "a's address not released when destroyed"
    # Detach by ID prefix; the name goes.
    expect_eq "$(lab_weft 2 detach "$(docker inspect -f '{{.Id}}' "${LAB}b" | cut -c1-12)")" "$ipb" "detach by ID prefix"
    lab_wait 10 gone_name 1 b || fail "b's name still there after detach"
    # Bad input: a container Docker does not know, one that is stopped.
    expect_exit 1 "^Error: No such container: ${LAB}nosuch$" "unknown container" lab_weft 1 attach "${LAB}nosuch"
    docker stop -t 0 "${LAB}b" >/dev/null
    expect_exit 1 "^container ${LAB}b is not running$" "stopped container" lab_weft 2 attach "${LAB}b"
}
