# shellcheck shell=bash
# End-to-end tests with a real Docker daemon (sourced by scripts/e2e.sh): Docker containers
# found by name or ID for attach, detach and dns-add; `weft run` (docker run with weftDNS's
# settings, Weave's /etc/hosts, then attach) and `weft restart` (the same addresses back); the
# router following Docker's events (names go on die, addresses on destroy). One dockerd in the
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
    docker_rm_named "$LAB"
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
    # ps by name, and ps of everything, show it under its short ID.
    local short; short=$(docker inspect -f '{{.Id}}' "${LAB}b" | cut -c1-12)
    expect_match "$(lab_weft 2 ps "${LAB}b")" "^$short ([0-9a-f]{2}:){5}[0-9a-f]{2} $ipb/" "ps by container name"
    expect_match "$(lab_weft 2 ps)" "^$short ([0-9a-f]{2}:){5}[0-9a-f]{2} $ipb/" "ps lists Docker containers"
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

# weft run as Weave Net 1.x: the container's /etc/hosts is Weave's (its weave address with its
# names, docker's --add-host entries) unless --no-rewrite-hosts; a --dns-search given is the
# only one; the container's own arguments are not docker's; weft restart brings back the
# addresses given (an address, a subnet) rather than net:default. attach --rewrite-hosts writes
# the file with its --add-host entries. Without a router, run and start do nothing.
test_docker_run_hosts_and_restart() {
    have_docker || return 0
    trap docker_test_down EXIT
    docker_up
    lab_up 1
    lab_weft 1 launch --nickname host1 --no-plugin --proxy=false >/dev/null
    ethwe_cidrs() { docker exec "$1" ip -o -4 addr show ethwe | awk '{print $4}' | sort | tr '\n' ' '; }
    local a; a=$(lab_weft 1 run 10.2.1.5/24 --name "${LAB}a" --net=none --add-host db:10.0.0.9 "$DOCKER_IMAGE" sleep 600)
    expect_eq "$(ethwe_cidrs "$a")" "10.2.1.5/24 " "weft run with an address"
    local hosts; hosts=$(docker exec "$a" cat /etc/hosts)
    expect_match "$hosts" "^# created by Weave - BEGIN$" "Weave's /etc/hosts"
    expect_match "$hosts" "^10\.2\.1\.5 +${LAB}a\.weave\.local ${LAB}a$" "/etc/hosts has the weave address"
    expect_match "$hosts" "^10\.0\.0\.9 +db$" "/etc/hosts has docker's --add-host"
    local n; n=$(lab_weft 1 run net:10.40.0.0/16 --name "${LAB}n" --net=none "$DOCKER_IMAGE" sleep 600)
    local ipn; ipn=$(ethwe_cidrs "$n")
    expect_match "$ipn" '^10\.40\.[0-9]+\.[0-9]+/16 $' "weft run in a subnet"
    # Restarted: the same addresses, claimed again.
    expect_eq "$(lab_weft 1 restart "${LAB}a")" "${LAB}a" "weft restart prints docker's output"
    expect_eq "$(ethwe_cidrs "$a")" "10.2.1.5/24 " "the address given to run after restart"
    lab_weft 1 restart "${LAB}n" >/dev/null
    expect_eq "$(ethwe_cidrs "$n")" "$ipn" "the subnet's address after restart"
    local owned; owned=$(ip netns exec "$(lab_ns 1)" curl -s "http://127.0.0.1:6784/ip/$n/10.40.0.0/16")
    expect_eq "$owned " "$ipn" "IPAM still files it under the container"
    # A --dns-search given is the only one; no rewrite asked, none done; the container's own -h
    # (after the image) is not docker's.
    local s; s=$(lab_weft 1 run --no-rewrite-hosts --name "${LAB}s" --dns-search x.example --net=none "$DOCKER_IMAGE" sh -c 'sleep 600' -h)
    expect_eq "$(docker inspect -f '{{.HostConfig.DnsSearch}} {{.Config.Hostname}}' "$s")" "[x.example] ${LAB}s.weave.local" "--dns-search given, hostname from --name"
    ! docker exec "$s" cat /etc/hosts | grep -q "created by Weave" || fail "/etc/hosts rewritten with --no-rewrite-hosts"
    # attach --rewrite-hosts, with --add-host.
    docker run -d --name "${LAB}d" --net=none -h d.weave.local "$DOCKER_IMAGE" sleep 600 >/dev/null
    expect_eq "$(lab_weft 1 attach 10.2.1.9/24 --rewrite-hosts --add-host=x:10.0.0.7 "${LAB}d")" "10.2.1.9" "attach --rewrite-hosts"
    hosts=$(docker exec "${LAB}d" cat /etc/hosts)
    expect_match "$hosts" "^10\.2\.1\.9 +d\.weave\.local d$" "attach wrote the weave address"
    expect_match "$hosts" "^10\.0\.0\.7 +x$" "attach wrote its --add-host"
    # No router: nothing is run.
    lab_weft 1 stop
    expect_exit 1 "^weft router is not running\. Have you launched it\?$" "run without a router" \
        lab_weft 1 run --name "${LAB}z" --net=none "$DOCKER_IMAGE" sleep 600
    ! docker inspect "${LAB}z" >/dev/null 2>&1 || fail "weft run made a container without a router"
    docker stop -t 0 "${LAB}d" >/dev/null
    expect_exit 1 "not running" "start without a router" lab_weft 1 start "${LAB}d"
    expect_eq "$(docker inspect -f '{{.State.Running}}' "${LAB}d")" "false" "weft start started it without a router"
}

# docker_forward <host#>: that host's firewall as Docker leaves it: bridged frames pass through
# iptables, FORWARD drops by default and jumps to DOCKER-USER first. Says whether bridged
# frames do pass through iptables here (the kernel's br_netfilter must be loaded).
docker_forward() {
    local ns; ns=$(lab_ns "$1")
    ip netns exec "$ns" iptables -w -N DOCKER-USER
    ip netns exec "$ns" iptables -w -A FORWARD -j DOCKER-USER
    ip netns exec "$ns" iptables -w -P FORWARD DROP
    ip netns exec "$ns" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null
}
weft_user_rules() { ip netns exec "$(lab_ns "$1")" iptables -w -S DOCKER-USER | grep -c -- '--comment weft'; }

# On a Docker host (FORWARD policy DROP, bridged frames through iptables) the weave network
# works: weft heads DOCKER-USER with Weave Net's accept rules, also when Docker comes after
# it, and `weft reset` takes them away again.
test_docker_forward_drop_host() {
    command -v iptables >/dev/null || fail "needs iptables"
    lab_up 2
    local bridged=yes
    docker_forward 1 || bridged=no
    lab_weft 1 launch --nickname host1 >/dev/null
    lab_weft 2 launch --nickname host2 "$(lab_ip 1)" >/dev/null
    lab_wait 20 full_mesh_of 1 2 || { dump_logs; fail "no mesh"; }
    # Docker starts on host 2 after the router.
    docker_forward 2 || bridged=no
    echo "    bridged frames through iptables: $bridged"
    has_rules() { [ "$(weft_user_rules "$1")" = 3 ]; }
    lab_wait 5 has_rules 1 || fail "no weft rules in DOCKER-USER on host 1: $(ip netns exec "$(lab_ns 1)" iptables -S DOCKER-USER)"
    lab_wait 15 has_rules 2 || fail "no weft rules in DOCKER-USER on host 2 (Docker came later)"
    expect_match "$(ip netns exec "$(lab_ns 1)" iptables -w -S DOCKER-USER | head -2 | tail -1)" "-i weave -o weave .*weft.* -j ACCEPT" "first rule"
    lab_container c1; lab_container c2; lab_container c3
    lab_weft 1 attach 10.2.1.1/24 "netns:${LAB}c1" >/dev/null
    lab_weft 1 attach 10.2.1.2/24 "netns:${LAB}c2" >/dev/null
    lab_weft 2 attach 10.2.1.3/24 "netns:${LAB}c3" >/dev/null
    ping_ok c1 10.2.1.2
    ping_ok c1 10.2.1.3
    ping_ok c3 10.2.1.2
    lab_weft 1 expose 10.2.1.254/24 >/dev/null
    host_pings() { ip netns exec "$(lab_ns 1)" ping -c1 -W1 10.2.1.3 >/dev/null 2>&1; }
    lab_wait 15 host_pings || fail "exposed host 1 cannot reach c3"
    # Removed after a restart's repair would have put them back: stop, then reset.
    lab_weft 1 stop
    lab_weft 1 reset --force >/dev/null
    expect_eq "$(weft_user_rules 1)" 0 "weft rules left after reset"
}

# A router started again keeps what the Docker containers that still run own (addresses and
# names) and lets go of what those that stopped or went while it was down owned, as Weave Net
# does, by asking the daemon which containers run.
test_docker_restart_prunes_gone_containers() {
    have_docker || return 0
    trap docker_test_down EXIT
    docker_up
    lab_up 1
    lab_weft 1 launch --nickname host1 --no-plugin >/dev/null
    local c ids=() ips=()
    for c in r1 r2 r3; do
        docker run -d --name "${LAB}$c" --net=none -h "$c.weave.local" "$DOCKER_IMAGE" sleep 600 >/dev/null
        ids+=("$(docker inspect -f '{{.Id}}' "${LAB}$c")")
        ips+=("$(lab_weft 1 attach "${LAB}$c")")
    done
    looks_up() { [ "$(lab_weft 1 dns-lookup "$1")" = "$2" ]; }
    lab_wait 10 looks_up r3 "${ips[2]}" || fail "r3's name"
    lab_weft 1 stop
    docker stop -t 0 "${LAB}r2" >/dev/null
    docker rm -f "${LAB}r3" >/dev/null
    lab_weft 1 launch --nickname host1 --no-plugin >/dev/null
    owner_of() { ip netns exec "$(lab_ns 1)" curl -s "http://127.0.0.1:6784/ip/$1" | cut -d/ -f1; }
    lab_wait 10 looks_up r1 "${ips[0]}" || fail "r1's name not back after the restart"
    expect_eq "$(owner_of "${ids[0]}")" "${ips[0]}" "r1 keeps its address"
    expect_eq "$(owner_of "${ids[1]}")" "" "the address of r2, stopped meanwhile, is free"
    expect_eq "$(owner_of "${ids[2]}")" "" "the address of r3, removed meanwhile, is free"
    expect_eq "$(lab_weft 1 dns-lookup r2)" "" "r2's name is not back"
    expect_eq "$(lab_weft 1 dns-lookup r3)" "" "r3's name is not back"
}
