# shellcheck shell=bash
# End-to-end tests of encryption (sourced by scripts/e2e.sh): `--password` seals control
# connections and sleeve traffic, as Weave Net does; nothing a container sends nor any handshake
# feature can be read on the underlay (captured with tcpdump, and the same capture without a
# password shows that the check can see them); mismatched passwords are refused with Weave
# Net's texts; `--trusted-subnets` lets peers that trust each other use plain fastdp; forged
# datagrams are counted and dropped; and weft and Weave Net 2.8.1 share an encrypted mesh.

PASSWORD=weft-e2e-s3cret
# A byte pattern containers send (ping -p), and what the underlay capture must not show.
SECRET_HEX=5745465453454352455421
SECRET_TEXT=WEFTSECRET!

# capture_start <file>: tcpdump on the lab's underlay bridge, into <file>, once it listens;
# capture_stop <file> sends a marker datagram across the underlay after everything else and
# ends the capture once the marker is in the file, so nothing sent before it is missed.
capture_start() {
    ip netns exec "$(lab_sw)" tcpdump -i br0 --immediate-mode -U -s 0 -w "$1" 2>"$1.err" &
    CAPTURE_PID=$!
    trap 'kill '"$CAPTURE_PID"' 2>/dev/null || true; lab_down' EXIT
    listening() { grep -q "listening on" "$1.err"; }
    lab_wait 10 listening "$1" || fail "tcpdump did not start"
}
capture_stop() {
    marked() {
        ip netns exec "$(lab_ns 1)" bash -c "echo WEFT-CAPTURE-END >/dev/udp/$(lab_ip 2)/9" 2>/dev/null
        seen "$1" WEFT-CAPTURE-END
    }
    lab_wait 10 marked "$1" || fail "capture marker never seen"
    kill "$CAPTURE_PID" 2>/dev/null; wait "$CAPTURE_PID" 2>/dev/null || true
}
# seen <file> <text>: the captured bytes contain <text>.
seen() { grep -aqF -- "$2" "$1"; }

metric() { ip netns exec "$(lab_ns "$1")" curl -sf http://127.0.0.1:6782/metrics | grep -F "$2" | awk '{print $2}' | head -1 || true; }

test_password_encrypts_what_crosses_the_underlay() {
    command -v tcpdump >/dev/null || fail "needs tcpdump"
    local pcap="$LAB_DIR/underlay.pcap" plain="$LAB_DIR/plain.pcap"
    lab_up 3
    # Positive control first: without a password the capture shows the pattern and the
    # nicknames, so the absence below means something.
    capture_start "$plain"
    lab_weft 1 launch --nickname plainhost1 --no-fastdp >/dev/null
    lab_weft 2 launch --nickname plainhost2 --no-fastdp "$(lab_ip 1)" >/dev/null
    lab_wait 20 full_mesh_of 1 2 || { dump_logs; fail "no plain mesh"; }
    lab_container c1; lab_container c2; lab_container c3
    lab_weft 1 attach 10.2.1.1/24 "netns:${LAB}c1" >/dev/null
    lab_weft 2 attach 10.2.1.2/24 "netns:${LAB}c2" >/dev/null
    ping_ok c1 10.2.1.2
    lab_in c1 ping -c 3 -i 0.2 -p "$SECRET_HEX" 10.2.1.2 >/dev/null || fail "plain pattern ping"
    capture_stop "$plain"
    seen "$plain" "$SECRET_TEXT" || fail "the capture does not show plain container traffic"
    seen "$plain" plainhost2 || fail "the capture does not show plain handshake features"
    lab_weft 1 detach 10.2.1.1/24 "netns:${LAB}c1" >/dev/null || fail "detach c1"
    lab_weft 2 detach 10.2.1.2/24 "netns:${LAB}c2" >/dev/null || fail "detach c2"
    lab_weft 1 stop; lab_weft 2 stop

    # Now with a password: one host by flag, one by environment, one by both.
    capture_start "$pcap"
    lab_weft 1 launch --nickname host1 --name 02:00:00:00:00:01 --password "$PASSWORD" >/dev/null
    WEAVE_PASSWORD=$PASSWORD lab_weft 2 launch --nickname host2 --name 02:00:00:00:00:02 "$(lab_ip 1)" >/dev/null
    WEAVE_PASSWORD=other lab_weft 3 launch --nickname host3 --password "$PASSWORD" "$(lab_ip 2)" >/dev/null
    for i in 1 2 3; do lab_wait 30 full_mesh_of "$i" 3 || { dump_logs; fail "no encrypted mesh"; }; done
    # The password never reaches a command line.
    local pid; pid=$(cat "$LAB_DIR/h1/run/weft.pid")
    ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$PASSWORD" || fail "password on the router's command line"
    local s; s=$(lab_weft 1 status)
    expect_match "$s" "Encryption: enabled" "status"
    expect_match "$s" "TrustedSubnets: none" "status"
    local conns; conns=$(lab_weft 1 status connections)
    expect_match "$conns" "established encrypted   sleeve 02:00:00:00:00:02\(host2\) encrypted=truefastdp-fallback=.* mtu=1414$" "connection line"
    expect_match "$conns" "IPsec ESP" "why no fastdp"
    expect_match "$(lab_weft 1 report)" '"Encryption": *true' "report"
    expect_match "$(lab_weft 1 report -f '{{.Router.Encryption}}')" '^true$' "report template"
    expect_eq "$(metric 1 'weave_connections{state="established",type="sleeve",encryption="yes"}')" 2 "encrypted connections metric"
    # Between weft peers the sleeve takes weft's own scheme.
    grep -q "(host2)\]: sleeve encrypted with aes-256-gcm" "$LAB_DIR/h1/run/weft.log" || fail "weft's scheme not chosen"
    attach_c123
    ping_ok c1 10.2.1.2
    ping_ok c3 10.2.1.1
    ping_ok c2 -s 8000 10.2.1.3
    lab_in c1 ping -c 5 -i 0.2 -p "$SECRET_HEX" 10.2.1.2 >/dev/null || fail "pattern ping"
    lab_in c3 ping -c 5 -i 0.2 -s 3000 -p "$SECRET_HEX" 10.2.1.2 >/dev/null || fail "large pattern ping"
    # TCP through the encrypted path (segmentation and coalescing with sealing).
    ! command -v iperf3 >/dev/null || iperf_at_least_50m "encrypted sleeve"
    capture_stop "$pcap"
    ! seen "$pcap" "$SECRET_TEXT" || fail "container bytes readable on the underlay"
    local word
    for word in host1 host2 host3 NickName PeerNameFlavour; do
        ! seen "$pcap" "$word" || fail "handshake feature '$word' readable on the underlay"
    done
    # Forged datagrams under a connected peer's name: counted, dropped, traffic unharmed.
    sleeve_flood 2 1 02:00:00:00:00:02 02:00:00:00:00:01 200 5 >/dev/null
    local n; n=$(metric 1 'weft_sleeve_dropped_frames_total{reason="undecryptable"}')
    [ "${n:-0}" -gt 0 ] || fail "forged datagrams not counted: $(ip netns exec "$(lab_ns 1)" curl -sf http://127.0.0.1:6782/metrics | grep dropped_frames)"
    ping_ok c1 10.2.1.2
}

test_weave_scheme_between_weft_peers_on_request() {
    lab_up 2
    WEFT_SLEEVE_CRYPTO=nacl lab_weft 1 launch --nickname host1 --password "$PASSWORD" >/dev/null
    lab_weft 2 launch --nickname host2 --password "$PASSWORD" "$(lab_ip 1)" >/dev/null
    lab_wait 20 full_mesh_of 1 2 || { dump_logs; fail "no mesh"; }
    grep -q "sleeve encrypted with nacl" "$LAB_DIR/h2/run/weft.log" || fail "host2 did not fall back to Weave Net's scheme"
    lab_container c1; lab_container c2
    lab_weft 1 attach 10.2.1.1/24 "netns:${LAB}c1" >/dev/null
    lab_weft 2 attach 10.2.1.2/24 "netns:${LAB}c2" >/dev/null
    ping_ok c1 10.2.1.2
    ping_ok c2 -s 8000 10.2.1.1
}

test_password_mismatch_is_refused() {
    lab_up 3
    lab_weft 1 launch --nickname host1 --password "$PASSWORD" >/dev/null
    lab_weft 2 launch --nickname host2 --password wrong "$(lab_ip 1)" >/dev/null
    lab_weft 3 launch --nickname host3 "$(lab_ip 1)" >/dev/null
    refused() { grep -q "$2" "$LAB_DIR/h$1/run/weft.log"; }
    lab_wait 20 refused 3 "password specified, but peer requested an unencrypted connection\|no password specificed, but peer requested an encrypted connection" \
        || { dump_logs; fail "no-password peer not refused with Weave's text"; }
    lab_wait 20 refused 1 "password specified, but peer requested an unencrypted connection" \
        || { dump_logs; fail "host1 did not refuse the unencrypted peer with Weave's text"; }
    lab_wait 20 refused 2 "error during handshake" || { dump_logs; fail "wrong password not refused"; }
    expect_match "$(lab_weft 1 status)" "Peers: 1$" "nobody joined host1"
    expect_match "$(lab_weft 2 status connections)" "retrying|failed" "host2's target"
    lab_weft 1 status >/dev/null || fail "host1 alive"
}

test_trusted_subnets_choose_plain_fastdp() {
    lab_up 3
    local net="$LAB_NET.$LAB_SUBNET.0/24"
    lab_weft 1 launch --nickname host1 --password "$PASSWORD" --trusted-subnets "$net" >/dev/null
    lab_weft 2 launch --nickname host2 --password "$PASSWORD" --trusted-subnets "10.255.0.0/16,$net" "$(lab_ip 1)" >/dev/null
    # Host 3 trusts the others, but nobody trusts host 3: its connections stay encrypted.
    lab_weft 3 launch --nickname host3 --password "$PASSWORD" "$(lab_ip 1)" "$(lab_ip 2)" >/dev/null
    for i in 1 2 3; do lab_wait 30 full_mesh_of "$i" 3 || { dump_logs; fail "no mesh"; }; done
    expect_match "$(lab_weft 1 status)" "TrustedSubnets: $net" "status"
    expect_match "$(lab_weft 2 status)" "TrustedSubnets: 10.255.0.0/16, $net" "status, two subnets"
    fastdp_between_1_and_2() { lab_weft 1 status connections | grep -q "established unencrypted fastdp .*(host2)"; }
    lab_wait 20 fastdp_between_1_and_2 || fail "trusted pair not on plain fastdp: $(lab_weft 1 status connections)"
    expect_match "$(lab_weft 1 status connections)" "established encrypted   sleeve .*\(host3\) .*encrypted=true" "host3 untrusted"
    expect_match "$(lab_weft 3 status connections)" "established encrypted   sleeve .*\(host1\)" "host3's view"
    lab_container c1; lab_container c2; lab_container c3
    attach_c123
    ping_ok c1 10.2.1.2
    ping_ok c1 10.2.1.3
    ping_ok c3 10.2.1.2
}

test_password_interop_with_weave_net() {
    have_weaver || return 0
    lab_up 3
    start_weaver 2 --name 02:ac:00:00:00:02 --nickname gohost --ipalloc-range 10.32.0.0/12 \
        --password "$PASSWORD" "$(lab_ip 1)"
    local d="$LAB_DIR/go"
    lab_weft 1 launch --nickname rust1 --password "$PASSWORD" >/dev/null
    lab_weft 3 launch --nickname rust3 --password "$PASSWORD" "$(lab_ip 2)" >/dev/null
    lab_wait 60 full_mesh_of 1 3 || { dump_logs; tail -30 "$d/weaver.log" >&2; fail "mixed encrypted mesh did not form"; }
    local go; go=$(ip netns exec "$(lab_ns 2)" curl -s http://127.0.0.1:6784/status/connections)
    expect_eq "$(grep -c established <<<"$go")" 2 "weaver established connections"
    expect_match "$(lab_weft 1 status connections)" "established encrypted   sleeve .*\(gohost\)" "weft's view of weaver"
    grep -q "(gohost)\]: sleeve encrypted with nacl" "$LAB_DIR/h1/run/weft.log" || fail "Weave Net's scheme not chosen with weaver"
    lab_container c1; lab_container c2; lab_container c3
    attach_c123
    ping_ok c1 10.2.1.2
    ping_ok c2 10.2.1.3
    ping_ok c3 -s 1200 10.2.1.1
    ping_ok c1 -s 8000 10.2.1.2
    # Weave Net verifies the encrypted path's MTU towards weft: 24 bytes less than plain.
    mtu_verified() { grep -q "rust1).*Effective MTU verified at 14[0-9][0-9]" "$d/weaver.log"; }
    lab_wait 20 mtu_verified || { grep -i mtu "$d/weaver.log" | tail -5 >&2; fail "weaver did not verify the MTU towards weft"; }
    # A weft peer with another password is refused by Weave Net.
    lab_add_host 4
    lab_weft 4 launch --nickname rust4 --password nope "$(lab_ip 2)" >/dev/null
    refused4() { grep -q "error during handshake" "$LAB_DIR/h4/run/weft.log"; }
    lab_wait 20 refused4 || { dump_logs; fail "wrong password not refused by weaver"; }
}

# Many intros with a wrong password from one address: each costs a key agreement and fails on
# the features frame; the accept throttle and the per-address intro limit bound what they cost.
test_wrong_password_floods_are_bounded() {
    lab_up 3
    lab_weft 1 launch --nickname host1 --password "$PASSWORD" >/dev/null
    lab_weft 2 launch --nickname host2 --password "$PASSWORD" "$(lab_ip 1)" >/dev/null
    lab_wait 20 full_mesh_of 1 2 || { dump_logs; fail "no mesh"; }
    # From host 3: 400 intros in at most 20 s, each the header, flag 1, a random public key and a
    # sealed-looking features frame that cannot open; prints how many got that far.
    ip netns exec "$(lab_ns 3)" timeout 60 python3 - "$(lab_ip 1)" <<'PY'
import os, socket, struct, sys, time
host, sent, end = sys.argv[1], 0, time.time() + 20
for i in range(400):
    if time.time() > end:
        break
    try:
        s = socket.create_connection((host, 6783), timeout=2)
        body = os.urandom(16 + 64)
        s.sendall(b"weave\x02\x02\x01" + os.urandom(32) + struct.pack(">I", len(body)) + body)
        s.settimeout(0.5)
        try:
            s.recv(4096)
        except OSError:
            pass
        s.close()
        sent += 1
    except OSError:
        pass
print(sent)
PY
    router_holds_up 1 2 "after 400 wrong-password intros"
    local failed; failed=$(metric 1 'weft_intros_failed_total')
    [ "${failed:-0}" -ge 20 ] || fail "wrong-password intros not counted (${failed:-none})"
    lab_wait 10 full_mesh_of 2 2 || fail "host2 lost the mesh"
    # One log line per refused intro at most: the log cannot grow faster than the throttle.
    local lines; lines=$(grep -c "error during handshake" "$LAB_DIR/h1/run/weft.log" || true)
    [ "$lines" -le 400 ] || fail "$lines handshake error lines for 400 intros"
}

