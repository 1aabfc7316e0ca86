# shellcheck shell=bash
# End-to-end tests of IPAM (sourced by scripts/e2e.sh): routers in lab hosts share one address
# pool; containers attached without an address get one; claims, rmpeer, reset, restarts, kills
# and vanished containers; and a mesh of weft and Weave Net routers sharing one ring.

IPAM_RANGE=172.16.16.0/24

# api <host#> <curl args...>: the router's control API on that host.
api() { local i=$1; shift; ip netns exec "$(lab_ns "$i")" curl -sS --max-time 20 "$@"; }
# owned <host#>: "ident=cidr ..." for everything that router's IPAM holds, sorted.
owned() { api "$1" http://127.0.0.1:6784/ip | jq -r '.owned[]? | .containerid + "=" + (.addrs | join(","))' | sort | tr '\n' ' '; }
ipam_ready() { lab_weft "$1" status | grep -q 'Status: ready'; }

# ipam_hosts <n> [extra launch flags]: n hosts on IPAM_RANGE, consensus among all n (or the
# --ipalloc-init mode in $IPAM_INIT), h2.. joined to h1; waits for the mesh.
ipam_hosts() {
    local n=$1 i; shift
    local init=${IPAM_INIT:-consensus=$n}
    lab_up "$n"
    for ((i = 1; i <= n; i++)); do
        local join=(); ((i > 1)) && join=("$(lab_ip 1)")
        lab_weft "$i" launch --name "02:00:00:00:00:0$i" --nickname "host$i" \
            --ipalloc-range "$IPAM_RANGE" --ipalloc-init "$init" "$@" "${join[@]}" >/dev/null
    done
    lab_wait 30 full_mesh_of 1 "$n" || { dump_logs; fail "no mesh"; }
}

test_ipam_walkthrough() {
    ipam_hosts 2
    expect_match "$(lab_weft 1 status)" "Service: ipam" "status has the ipam section"
    expect_match "$(lab_weft 1 status)" "Status: idle" "idle before the first request"
    lab_container c1; lab_container c2; lab_container c3
    # Weave Net's worked example: two peers, first containers get .1 and .128.
    expect_eq "$(lab_weft 1 attach "netns:${LAB}c1")" "172.16.16.1" "first container on host1"
    expect_eq "$(lab_weft 2 attach "netns:${LAB}c2")" "172.16.16.128" "first container on host2"
    expect_eq "$(lab_in c1 ip -o -4 addr show ethwe | awk '{print $4}')" "172.16.16.1/24" "address in the container"
    ping_ok c1 172.16.16.128
    lab_wait 10 ipam_ready 1 || fail "host1 not ready"
    expect_match "$(lab_weft 1 status ipam)" \
        "^02:00:00:00:00:01\(host1\) +128 IPs \(50.0% of total\) \(1 active\)" "status ipam, ours first"
    expect_match "$(lab_weft 1 status ipam)" \
        "02:00:00:00:00:02\(host2\) +128 IPs \(50.0% of total\) $" "status ipam, the other peer"
    expect_eq "$(owned 1)" "netns:${LAB}c1=172.16.16.1/24 " "GET /ip"
    expect_eq "$(api 1 http://127.0.0.1:6784/ip/netns:${LAB}c1)" "172.16.16.1/24" "lookup"
    expect_eq "$(lab_weft 1 report -f '{{.IPAM.Range}} {{.IPAM.ActiveIPs}}')" "172.16.16.0/24 1" "report IPAM"
    # Attaching again keeps the address; detach releases it; a new attach gets the lowest free.
    expect_eq "$(lab_weft 1 attach "netns:${LAB}c1")" "172.16.16.1" "attach again"
    expect_eq "$(lab_weft 1 detach "netns:${LAB}c1")" "172.16.16.1" "detach"
    expect_eq "$(owned 1)" "" "released on detach"
    expect_eq "$(lab_weft 1 attach "netns:${LAB}c1")" "172.16.16.1" "re-attach"
    # A third peer joins later: it asks for space and its first container gets .224 or .96.
    lab_add_host 3
    lab_weft 3 launch --name 02:00:00:00:00:03 --nickname host3 --ipalloc-range "$IPAM_RANGE" \
        --ipalloc-init consensus=2 "$(lab_ip 1)" >/dev/null
    local a3; a3=$(lab_weft 3 attach "netns:${LAB}c3")
    expect_match "$a3" '^172\.16\.16\.(224|96)$' "third peer's first container"
    ping_ok c3 172.16.16.1
    ping_ok c3 172.16.16.128
    # net:CIDR allocates in a subnet of the range; expose allocates for the host.
    expect_match "$(lab_weft 2 attach net:172.16.16.0/25 "netns:${LAB}c2")" '^172\.16\.16\.[0-9]+$' "net:CIDR"
    local e; e=$(lab_weft 1 expose)
    expect_match "$e" '^172\.16\.16\.[0-9]+$' "expose without an address"
    lab_wait 15 pings c2 "$e" || fail "exposed host address not reachable"
    expect_eq "$(lab_weft 1 hide)" "$e" "hide"
    expect_match "$(owned 1)" "^netns:${LAB}c1=172.16.16.1/24 $" "hide released the host address"
}

test_ipam_claims_and_bad_input() {
    ipam_hosts 2
    lab_container c1; lab_container c2; lab_container c3
    lab_weft 1 prime
    # A claim in our own space, and one in the other peer's space (negotiated with it).
    expect_eq "$(lab_weft 1 attach 172.16.16.5/24 "netns:${LAB}c1")" "172.16.16.5" "claim in own space"
    expect_eq "$(lab_weft 2 attach 172.16.16.9/24 "netns:${LAB}c2")" "172.16.16.9" "claim in the other peer's space"
    ping_ok c1 172.16.16.9
    # Taken addresses are refused, here and across the mesh.
    expect_exit 1 "172.16.16.5" "claim of a held address" lab_weft 1 attach 172.16.16.5/24 "netns:${LAB}c3"
    expect_exit 1 "172.16.16.9" "claim of an address held on the other peer" \
        lab_weft 1 attach 172.16.16.9/24 "netns:${LAB}c3"
    ! lab_in c3 ip link show ethwe >/dev/null 2>&1 || fail "refused claim left an interface"
    # The API refuses bad input with Weave Net's messages.
    expect_eq "$(api 1 -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:6784/ip/x/10.0.0.1/24)" 400 "subnet with host bits"
    expect_match "$(api 1 -X POST http://127.0.0.1:6784/ip/x/10.9.0.0/16)" "out of bounds" "subnet outside the range"
    expect_match "$(api 1 -X DELETE http://127.0.0.1:6784/ip/nobody)" "^Delete: no addresses for nobody" "delete unknown"
    expect_match "$(api 1 -X PUT http://127.0.0.1:6784/ip/x/172.16.16.999/24)" "invalid CIDR" "claim bad address"
    expect_exit 1 "^Unable to parse --ipalloc-init" "bad init flag" \
        lab_weft 1 launch --ipalloc-init paxos
    expect_exit 1 "does not overlap with allocation range" "default subnet outside" \
        lab_weft 1 launch --ipalloc-range 10.40.0.0/16 --ipalloc-default-subnet 10.50.0.0/16
    # A peer with another range refuses our ring (it has none of its own yet, so the seeds
    # cannot differ first), and the connection it came on is closed.
    lab_add_host 3
    lab_weft 3 launch --name 02:00:00:00:00:03 --nickname host3 --ipalloc-range 172.16.0.0/16 \
        "$(lab_ip 1)" >/dev/null
    incompatible() { grep -q "Incompatible IP allocation ranges (received: 172.16.16.0/24, ours: 172.16.0.0/16)" "$LAB_DIR/h3/run/weft.log"; }
    lab_wait 20 incompatible || { dump_logs; fail "no 'Incompatible IP allocation ranges' on host3"; }
    lab_weft 3 status | grep -q "Status: idle" || fail "host3 took the foreign ring"
    expect_eq "$(owned 1)" "netns:${LAB}c1=172.16.16.5/24 " "state unchanged by the foreign ring"
}

test_ipam_rmpeer_and_rolling_reset() {
    # Seeded, so that every peer owns a third (a quorum of two may leave one out).
    IPAM_INIT=seed=02:00:00:00:00:01,02:00:00:00:00:02,02:00:00:00:00:03 ipam_hosts 3
    lab_container c1; lab_container c2
    lab_weft 1 attach "netns:${LAB}c1" >/dev/null
    lab_weft 3 prime
    lab_weft 2 stop
    lab_wait 30 full_mesh_of 1 2 || fail "stopped peer not gone"
    expect_match "$(lab_weft 1 status ipam)" "host2\) .* - unreachable!" "dead peer shown unreachable"
    local out; out=$(lab_weft 1 rmpeer host2)
    expect_match "$out" '^[0-9]+ IPs taken over from host2$' "rmpeer output"
    [ "${out%% *}" -gt 0 ] || fail "rmpeer took nothing: $out"
    ! lab_weft 1 status ipam | grep -q host2 || fail "host2 still owns ranges"
    expect_eq "$(lab_weft 1 rmpeer host2)" "0 IPs taken over from host2" "rmpeer again"
    # Rolling reset of every peer: each hands its space to a live one before leaving.
    local i
    for i in 1 3; do
        lab_weft "$i" reset
        lab_weft "$i" launch --name "02:00:00:00:00:0$i" --nickname "host$i" --ipalloc-range "$IPAM_RANGE" \
            --ipalloc-init consensus=2 "$(lab_ip $((i == 1 ? 3 : 1)))" >/dev/null
        lab_wait 30 full_mesh_of "$i" 2 || { dump_logs; fail "host$i did not rejoin"; }
    done
    local t0=$SECONDS
    expect_match "$(lab_weft 1 attach "netns:${LAB}c2")" '^172\.16\.16\.' "allocation after the rolling reset"
    ((SECONDS - t0 <= 10)) || fail "allocation took $((SECONDS - t0)) s after the reset"
}

test_ipam_restart_kill_and_vanished_containers() {
    ipam_hosts 2
    lab_container c1; lab_container c2; lab_container c3
    lab_weft 1 attach "netns:${LAB}c1" >/dev/null
    lab_weft 1 attach "netns:${LAB}c2" >/dev/null
    local before; before=$(owned 1)
    # A clean restart keeps everything.
    lab_weft 1 stop
    lab_weft 1 launch --name 02:00:00:00:00:01 --nickname host1 --ipalloc-range "$IPAM_RANGE" \
        --ipalloc-init consensus=2 "$(lab_ip 2)" >/dev/null
    expect_eq "$(owned 1)" "$before" "allocations after restart"
    # kill -9 right after an allocation: nothing lost, nothing handed out twice.
    local pid; pid=$(cat "$LAB_DIR/h1/run/weft.pid")
    local a3; a3=$(lab_weft 1 attach "netns:${LAB}c3")
    kill -9 "$pid"; lab_wait 10 exited "$pid" || fail "router did not die"
    # c2 goes away while the router is down: its address is free after relaunch.
    ip netns del "${LAB}c2"
    lab_weft 1 launch --name 02:00:00:00:00:01 --nickname host1 --ipalloc-range "$IPAM_RANGE" \
        --ipalloc-init consensus=2 "$(lab_ip 2)" >/dev/null
    expect_eq "$(owned 1)" "netns:${LAB}c1=172.16.16.1/24 netns:${LAB}c3=$a3/24 " "after kill -9 and a vanished container"
    lab_container c4
    expect_eq "$(lab_weft 1 attach "netns:${LAB}c4")" "172.16.16.2" "the vanished container's address is reused, no other"
    # While running: a deleted namespace and an exited process release their addresses.
    ip netns del "${LAB}c4"
    gone4() { ! owned 1 | grep -q "c4="; }
    lab_wait 10 gone4 || fail "address of a deleted namespace not released"
    lab_container c5
    ip netns exec "${LAB}c5" sleep 60 & local p=$!
    expect_match "$(lab_weft 1 attach "pid:$p")" '^172\.16\.16\.' "attach a process"
    kill "$p"; wait "$p" 2>/dev/null || true
    gone_pid() { ! owned 1 | grep -q "pid:$p="; }
    lab_wait 10 gone_pid || fail "address of an exited process not released"
}

test_ipam_mixed_with_weave_net() {
    have_weaver || return 0
    # The ring is seeded between weft host 1 and the Weave Net router on host 2 (each owns a
    # /25); weft host 3 owns nothing and must be given space.
    local seed=seed=02:00:00:00:00:01,02:00:00:00:00:02
    lab_up 3
    start_weaver 2 --name 02:00:00:00:00:02 --nickname gohost --ipalloc-range "$IPAM_RANGE" \
        --ipalloc-init "$seed" "$(lab_ip 1)"
    local d="$LAB_DIR/go"
    lab_weft 1 launch --name 02:00:00:00:00:01 --nickname rust1 --ipalloc-range "$IPAM_RANGE" --ipalloc-init "$seed" >/dev/null
    lab_weft 3 launch --name 02:00:00:00:00:03 --nickname rust3 --ipalloc-range "$IPAM_RANGE" --ipalloc-init "$seed" "$(lab_ip 2)" >/dev/null
    lab_wait 60 full_mesh_of 1 3 || { dump_logs; tail -30 "$d/weaver.log" >&2; fail "mixed mesh did not form"; }
    local all=() i
    # alloc_on <host#> <id>: one allocation, added to all; a failure names the call.
    alloc_on() {
        local got
        got=$(api "$1" -X POST "http://127.0.0.1:6784/ip/$2") ||
            { dump_logs; tail -30 "$d/weaver.log" >&2; fail "POST /ip/$2 on host $1 failed"; return 1; }
        all+=("$got")
    }
    # Host 1 fills its /25; then host 3 can get space only from the Weave Net router.
    for i in $(seq 1 127); do alloc_on 1 "a$i" || return 1; done
    for i in $(seq 1 20); do alloc_on 3 "c$i" || return 1; done
    expect_match "$(lab_weft 3 status ipam)" "^02:00:00:00:00:03\(rust3\) +[1-9][0-9]* IPs" "Weave Net gave weft space"
    # The Weave Net router allocates more than it has left: only host 3 has free space.
    for i in $(seq 1 97); do alloc_on 2 "g$i" || return 1; done
    expect_eq "$(printf '%s\n' "${all[@]}" | grep -c '^172\.16\.16\.')" 244 "every allocation answered" ||
        { tail -20 "$d/weaver.log" >&2; return 1; }
    expect_eq "$(printf '%s\n' "${all[@]}" | sort | uniq -d | head -3 | tr '\n' ' ')" "" "no address given twice"
    local gring; gring=$(ip netns exec "$(lab_ns 2)" curl -s http://127.0.0.1:6782/status/ipam)
    expect_match "$gring" "rust3" "weaver sees rust3 owning ranges" || echo "$gring" >&2
    expect_match "$(lab_weft 3 status ipam)" "gohost" "weft sees weaver owning ranges"
    # The allocations on each router are inside the ranges the ring gives it.
    local w1; w1=$(printf '%s\n' "${all[@]:0:127}" | sort -t. -k4 -n | sed -n '1p;$p' | tr '\n' ' ')
    expect_eq "$w1" "172.16.16.1/24 172.16.16.127/24 " "host 1 gave out its /25"
}

test_ipam_hostile_rings() {
    ipam_hosts 2
    lab_container c1
    lab_weft 1 attach "netns:${LAB}c1" >/dev/null
    local before ring; before=$(owned 1); ring=$(lab_weft 1 status ipam)
    # Garbage, disordered and out-of-range tokens, a ring claiming everything at huge
    # versions, and 100,000 entries: each refused, its connection closed, nothing changed.
    local out; out=$(ip netns exec "$(lab_ns 2)" "$HOSTILE" "$(lab_ip 1):6783" ipam-rings 10 100000 2>&1)
    expect_match "$out" "^closed 10 of 10$" "every hostile ring closed its connection"
    kill -0 "$(cat "$LAB_DIR/h1/run/weft.pid")" || fail "router died"
    expect_eq "$(owned 1)" "$before" "allocations unchanged"
    expect_eq "$(lab_weft 1 status ipam)" "$ring" "ring unchanged"
    expect_match "$(grep -c 'IPAM message from 0a:' "$LAB_DIR/h1/run/weft.log")" '^[1-9]' "refusals logged"
    lab_container c2
    expect_eq "$(lab_weft 1 attach "netns:${LAB}c2")" "172.16.16.2" "allocation still works"
}

test_ipam_consensus_with_weave_net() {
    have_weaver || return 0
    lab_up 3
    start_weaver 2 --name 02:00:00:00:00:02 --nickname gohost --ipalloc-range "$IPAM_RANGE" \
        --ipalloc-init consensus=3 "$(lab_ip 1)"
    local d="$LAB_DIR/go"
    lab_weft 1 launch --name 02:00:00:00:00:01 --nickname rust1 --ipalloc-range "$IPAM_RANGE" --ipalloc-init consensus=3 >/dev/null
    lab_weft 3 launch --name 02:00:00:00:00:03 --nickname rust3 --ipalloc-range "$IPAM_RANGE" --ipalloc-init consensus=3 "$(lab_ip 2)" >/dev/null
    lab_wait 60 full_mesh_of 1 3 || { dump_logs; tail -30 "$d/weaver.log" >&2; fail "mixed mesh did not form"; }
    expect_match "$(lab_weft 1 status)" "Status: idle" "idle before the first request"
    # The first request is on the Weave Net router: Paxos runs across both kinds of router.
    expect_match "$(api 2 -X POST http://127.0.0.1:6784/ip/g1)" '^172\.16\.16\.[0-9]+/24$' "allocation on weaver" ||
        { tail -30 "$d/weaver.log" >&2; return 1; }
    lab_wait 10 ipam_ready 1 || fail "weft host 1 has no ring"
    lab_wait 10 ipam_ready 3 || fail "weft host 3 has no ring"
    local a1 a3; a1=$(api 1 -X POST http://127.0.0.1:6784/ip/w1); a3=$(api 3 -X POST http://127.0.0.1:6784/ip/w3)
    expect_match "$a1 $a3" '^172\.16\.16\.[0-9]+/24 172\.16\.16\.[0-9]+/24$' "allocations on weft"
    [ "$a1" != "$a3" ] || fail "the same address twice: $a1"
}
