# shellcheck shell=bash
# The hostile-peer suite, sourced by scripts/e2e.sh: a real router in one lab namespace, an
# attacker (crates/weft-core/examples/hostile_peer.rs, or plain sockets) in another, each
# attack bounded in count and time. Every test checks that the router is alive, that `status`
# answers within a second, that its legitimate connections hold, and that its memory stays
# within bounds: resident below 64 MB after the attack, peak below 128 MB.

HOSTILE="${HOSTILE:-${CARGO_TARGET_DIR:-/var/tmp/weft-target}/release/examples/hostile_peer}"

# hostile <host#> <target host#> <attack> [args...]: runs the hostile peer from a host's
# namespace against another host's mesh port.
hostile() {
    local from=$1 to=$2; shift 2
    ip netns exec "$(lab_ns "$from")" timeout 90 "$HOSTILE" "$(lab_ip "$to"):6783" "$@"
}

# proc_kb <host#> <VmRSS|VmHWM>: the router's memory figure in kB.
proc_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$(cat "$LAB_DIR/h$1/run/weft.pid")/status"; }

# router_holds_up <host#> <peers> <what>: alive, status within 1 s, full mesh of <peers>,
# memory within bounds.
router_holds_up() {
    local h=$1 n=$2 what=$3 rss hwm
    ip netns exec "$(lab_ns "$h")" env WEFT_STATE_DIR="$LAB_DIR/h$h/state" WEFT_RUN_DIR="$LAB_DIR/h$h/run" \
        timeout 1 "$WEFT" status >/dev/null || fail "$what: status did not answer within 1 s"
    lab_wait 10 full_mesh_of "$h" "$n" || { dump_logs; fail "$what: mesh of $n lost"; }
    rss=$(proc_kb "$h" VmRSS); hwm=$(proc_kb "$h" VmHWM)
    echo "    $what: RSS $((rss / 1024)) MB, peak $((hwm / 1024)) MB"
    [ "$rss" -lt $((64 * 1024)) ] || fail "$what: resident ${rss} kB >= 64 MB"
    [ "$hwm" -lt $((128 * 1024)) ] || fail "$what: peak ${hwm} kB >= 128 MB"
}

two_routers() {
    lab_up 3
    lab_weft 1 launch --nickname a >/dev/null
    lab_weft 2 launch --nickname b "$(lab_ip 1)" >/dev/null
    lab_wait 20 full_mesh_of 1 2 || { dump_logs; fail "no mesh"; }
}

test_hostile_peer_that_does_not_read_and_digests() {
    two_routers
    # 20,000 empty digests (each asks for our whole view), never reading an answer.
    hostile 3 1 digests 20000 0 3 || fail "hostile intro refused"
    router_holds_up 1 2 "digest flood"
}

test_hostile_unknown_channel_broadcasts() {
    two_routers
    # 200 distinct 1 MiB broadcasts on a channel nobody implements: relayed on to the
    # legitimate peer, never held; then the same one replayed 200 times: relayed once.
    hostile 3 1 unknown-broadcasts 200 1048576 2 || fail "hostile intro refused"
    router_holds_up 1 2 "unknown broadcasts"
    router_holds_up 2 2 "unknown broadcasts (relay target)"
    hostile 3 1 replayed-broadcasts 200 65536 2 || fail "hostile intro refused"
    router_holds_up 1 2 "replayed broadcasts"
}

test_hostile_idle_connections_and_oversized_intro() {
    two_routers
    # 500 connections that never introduce themselves, held 15 s; meanwhile a third router
    # from another address must still join.
    (hostile 2 1 open-idle 500 0 15 >/dev/null 2>&1 &)
    lab_wait 10 bash -c "[ \$(ip netns exec $(lab_ns 1) ss -tn state established '( sport = :6783 )' | wc -l) -gt 5 ]" || true
    lab_weft 3 launch --nickname c "$(lab_ip 1)" >/dev/null
    lab_wait 20 full_mesh_of 1 3 || { dump_logs; fail "third router could not join during the flood"; }
    router_holds_up 1 3 "idle connections"
    # A features frame announcing 1 MiB is refused before it is read.
    hostile 3 1 big-intro 0 1048576 || true
    lab_wait 5 grep -q "incoming message exceeds maximum size: 1048576 > 65536" "$LAB_DIR/h1/run/weft.log" ||
        fail "oversized intro frame not refused"
    router_holds_up 1 3 "oversized intro"
}

test_hostile_gob_bombs_in_the_intro() {
    two_routers
    # 30 features frames just under the 64 KiB cap, each a gob type-definition bomb (long-named
    # type chains with empty values, with full values, and types too large to expand): each
    # is refused with a logged reason and its connection closed, within the memory bounds.
    local out; out=$(hostile 3 1 gob-bombs 30 60000) || fail "hostile peer failed"
    expect_match "$out" "^closed 30 of 30$" "every bomb closed its connection"
    expect_eq "$(grep -c 'error during handshake: malformed features: gob: ' "$LAB_DIR/h1/run/weft.log")" 30 \
        "each refusal logged with its reason"
    router_holds_up 1 2 "gob bombs"
}

test_hostile_fake_peers_flood() {
    two_routers
    # 20,000 made-up peers in 2,000-peer topology broadcasts, held 10 s: the router takes at
    # most its cap (4,096 peers) and answers status within a second meanwhile; once the
    # attacker leaves, the made-up peers are unreachable and go.
    hostile 3 1 fake-peers 20000 2000 10 >"$LAB_DIR/hostile.out" 2>&1 &
    local hp=$! n=0 most=0 i
    for i in $(seq 20); do
        n=$(ip netns exec "$(lab_ns 1)" env WEFT_STATE_DIR="$LAB_DIR/h1/state" WEFT_RUN_DIR="$LAB_DIR/h1/run" \
            timeout 1 "$WEFT" status | sed -n 's/^ *Peers: \([0-9]*\).*/\1/p') ||
            fail "fake peers: status did not answer within 1 s"
        ((n > most)) && most=$n
        ((most > 2)) && ((i > 5)) && break
        sleep 0.5
    done
    echo "    router a saw at most $most peers during the flood"
    ((most > 2)) || { cat "$LAB_DIR/hostile.out" >&2; fail "fake peers never reached the router"; }
    ((most <= 4096)) || fail "router took $most peers, over its cap of 4096"
    wait "$hp" || { cat "$LAB_DIR/hostile.out" >&2; fail "hostile intro refused"; }
    router_holds_up 1 2 "fake peers"
    router_holds_up 2 2 "fake peers (relay target)"
}
