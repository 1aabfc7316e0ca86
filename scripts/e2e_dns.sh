# shellcheck shell=bash
# End-to-end tests of weftDNS (sourced by scripts/e2e.sh): names of attached containers
# resolve on every host with real `dig` from container namespaces (each with an eth0 on its
# host's docker0, where weftDNS listens); round robin, PTR, case, unqualified names, large
# answers over UDP, TCP and EDNS0; names go when containers go; dns-add/remove/lookup/args;
# forwarding to a fake upstream; restarts; and a mesh of weft and Weave Net routers.

FAKE_UPSTREAM="${FAKE_UPSTREAM:-$CARGO_TARGET_DIR/release/examples/fake_upstream}"
DNS=172.17.0.1

# q <container> <dig args...>: `dig +short` against weftDNS from that container.
q() { local c=$1; shift; lab_in "$c" dig +short +time=2 +tries=1 @"$DNS" "$@" 2>&1; }
# status_of <container> <dig args...>: the rcode dig reports.
status_of() { local c=$1; shift; lab_in "$c" dig +time=2 +tries=1 @"$DNS" "$@" 2>&1 | grep -o 'status: [A-Z]*' | cut -d' ' -f2; }
# sorted <container> <dig args...>: the short answer, sorted, on one line.
sorted() { q "$@" | sort | tr '\n' ' '; }
resolves_to() { [ "$(sorted "$1" "$2")" = "$3" ]; }
gone() { [ "$(status_of "$1" "$2")" = NXDOMAIN ]; }

# dns_container <host#> <name> <n>: container <name> on that host with hostname <name>.weave.local,
# 10.2.1.<n> on the weave network and 172.17.<host>.<n> on docker0.
dns_container() {
    local h=$1 c=$2 n=$3
    lab_container "$c"
    lab_hostname "$c" "$c.weave.local"
    lab_docker_eth0 "$h" "$c" "172.17.$h.$n"
    expect_eq "$(lab_weft "$h" attach "10.2.1.$n/24" "netns:$LAB$c")" "10.2.1.$n" "attach $c"
}

test_dns_names_across_hosts() {
    lab_up 3
    lab_weft 1 launch --nickname host1 --ipalloc-range "" >/dev/null
    lab_weft 2 launch --nickname host2 --ipalloc-range "" "$(lab_ip 1)" >/dev/null
    lab_weft 3 launch --nickname host3 --ipalloc-range "" "$(lab_ip 2)" >/dev/null
    lab_wait 30 full_mesh_of 1 3 || { dump_logs; fail "no mesh"; }
    dns_container 1 c1 1; dns_container 2 c2 2; dns_container 3 c3 3
    # Each name, from each host.
    local c n
    for c in c1 c2 c3; do
        for n in 1 2 3; do
            lab_wait 10 resolves_to "$c" "c$n.weave.local" "10.2.1.$n " || fail "$c cannot resolve c$n: [$(q "$c" "c$n.weave.local")]"
        done
    done
    # Unqualified names take the domain; case does not matter; the answer keeps the asked case.
    expect_eq "$(q c1 c3)" "10.2.1.3" "single-label name"
    expect_eq "$(q c1 C2.WEAVE.Local)" "10.2.1.2" "case-insensitive"
    expect_match "$(lab_in c1 dig +noall +answer @"$DNS" C2.Weave.Local)" '^C2\.Weave\.Local\.[[:space:]]+1[[:space:]]+IN[[:space:]]+A[[:space:]]+10\.2\.1\.2$' "owner as asked, TTL 1"
    # Reverse lookups, NXDOMAIN, and NOERROR without records for another type of a known name.
    expect_eq "$(q c3 -x 10.2.1.1)" "c1.weave.local." "PTR"
    expect_eq "$(status_of c1 nosuch.weave.local)" "NXDOMAIN" "unknown name"
    expect_eq "$(status_of c1 c2.weave.local AAAA)" "NOERROR" "AAAA of a known name"
    expect_eq "$(q c1 c2.weave.local AAAA)" "" "no AAAA records"
    expect_match "$(lab_in c1 dig @"$DNS" c2.weave.local)" 'flags: qr aa rd ra;' "authoritative, recursion available"
    # The resolver of a container: plain names work, as with Docker's --dns and --dns-search.
    lab_wait 10 pings c1 c2 || fail "ping c2 by name from c1"
    lab_wait 10 pings c3 c1.weave.local || fail "ping c1.weave.local from c3"
    # Status, report, metrics, dns-args, dns-lookup.
    local st; st=$(lab_weft 2 status)
    expect_match "$st" '^        Service: dns$' "status dns section"
    expect_match "$st" '^         Domain: weave\.local\.$' "status domain"
    expect_match "$st" '^            TTL: 1$' "status TTL"
    expect_match "$st" '^        Entries: 3$' "status entries"
    expect_match "$(lab_weft 2 status dns)" "^c1 +10\.2\.1\.1 +netns:${LAB} [0-9a-f:]{17}$" "status dns row"
    expect_eq "$(lab_weft 1 dns-args)" "--dns=172.17.0.1 --dns-search=weave.local." "dns-args"
    expect_eq "$(lab_weft 2 dns-lookup c3)" "10.2.1.3" "dns-lookup"
    expect_eq "$(lab_weft 2 report -f '{{.DNS.Domain}} {{len .DNS.Entries}}')" "weave.local. 3" "report DNS"
    expect_match "$(ip netns exec "$(lab_ns 1)" curl -s http://127.0.0.1:6782/metrics)" '^weave_dns_entries 1$' "metric: our entries"
    # Round robin: a name with four addresses on three hosts; every answer has them all, in
    # varying order.
    lab_weft 1 dns-add 10.2.1.1 "netns:${LAB}c1" -h web.weave.local
    lab_weft 2 dns-add 10.2.9.1 10.2.9.2 -h web.weave.local
    lab_weft 3 dns-add 10.2.9.3 -h WEB.weave.local
    lab_wait 10 resolves_to c2 web.weave.local "10.2.1.1 10.2.9.1 10.2.9.2 10.2.9.3 " || fail "round robin set: [$(sorted c2 web.weave.local)]"
    local orders; orders=$(for _ in $(seq 12); do q c2 web.weave.local | tr '\n' ' '; echo; done | sort -u | wc -l)
    [ "$orders" -ge 2 ] || fail "12 answers came in $orders order(s): no shuffling"
    # dns-remove of one address; the others stay.
    lab_weft 2 dns-remove 10.2.9.2 -h web.weave.local
    lab_wait 10 resolves_to c3 web.weave.local "10.2.1.1 10.2.9.1 10.2.9.3 " || fail "dns-remove: [$(sorted c3 web.weave.local)]"
    # Detach takes a name away everywhere; a namespace that disappears too.
    lab_weft 2 detach 10.2.1.2/24 "netns:${LAB}c2" >/dev/null
    for c in c1 c3; do lab_wait 10 gone "$c" c2.weave.local || fail "c2 still resolves from $c after detach"; done
    ip netns del "${LAB}c3"
    lab_wait 10 gone c1 c3.weave.local || fail "c3 still resolves after its namespace went"
    expect_eq "$(lab_weft 1 status | grep -o 'Entries: [0-9]*')" "Entries: 4" "entries after removals"
    # A restarted router registers again the names of its containers that still run; the
    # other hosts keep answering meanwhile.
    lab_weft 1 stop
    lab_weft 1 launch --nickname host1 --ipalloc-range "" "$(lab_ip 2)" >/dev/null
    lab_wait 30 full_mesh_of 1 3 || { dump_logs; fail "no mesh after restart"; }
    lab_wait 10 resolves_to c1 c1.weave.local "10.2.1.1 " || fail "c1's name not back on host1 after restart"
    expect_eq "$(q c1 -x 10.2.1.1)" "c1.weave.local." "PTR after restart"
    sleep_until_gossip() { resolves_to c1 web.weave.local "10.2.1.1 10.2.9.1 10.2.9.3 "; }
    lab_wait 20 sleep_until_gossip || fail "other hosts' names not back on host1: [$(sorted c1 web.weave.local)]"
}

test_dns_large_answers_and_bad_queries() {
    lab_up 1
    lab_weft 1 launch --nickname host1 --ipalloc-range "" >/dev/null
    lab_container d1
    lab_docker_eth0 1 d1 172.17.1.1
    local i ips=()
    for i in $(seq 1 50); do ips+=("10.3.0.$i"); done
    lab_weft 1 dns-add "${ips[@]}" -h big.weave.local
    # UDP without EDNS0: cut to 512 bytes, TC set; dig then retries over TCP and gets all 50.
    local udp; udp=$(lab_in d1 dig +noedns +ignore +time=2 @"$DNS" big.weave.local)
    expect_match "$udp" 'flags: qr aa tc rd ra;' "truncated over UDP"
    local n; n=$(grep -c 'IN[[:space:]]*A[[:space:]]*10\.3\.0\.' <<<"$udp")
    { [ "$n" -ge 1 ] && [ "$n" -lt 50 ]; } || fail "UDP answer kept $n records"
    expect_eq "$(q d1 +noedns big.weave.local | wc -l)" 50 "dig falls back to TCP"
    expect_eq "$(q d1 +tcp big.weave.local | wc -l)" 50 "TCP answer"
    expect_eq "$(q d1 +bufsize=4096 big.weave.local | wc -l)" 50 "EDNS0 4096 answer over UDP"
    # Bad input: garbage, a query with no question, ANY, a huge TCP length prefix, a
    # truncated message; the server stays up and keeps answering.
    lab_in d1 python3 - "$DNS" <<'PY'
import socket, struct, sys
dns = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1)
for payload in [b"", b"\x00", b"\xff" * 600, struct.pack(">HHHHHH", 7, 0x0100, 0, 0, 0, 0),
                struct.pack(">HHHHHH", 8, 0x0100, 5000, 0, 0, 0) + b"\x03abc",
                struct.pack(">HHHHHH", 9, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"]:
    u.sendto(payload, (dns, 53))
    try: u.recv(4096)
    except OSError: pass
t = socket.create_connection((dns, 53), timeout=2)
t.sendall(struct.pack(">H", 65535) + b"\x00" * 100)
t.close()
PY
    expect_eq "$(status_of d1 big.weave.local ANY)" "NOERROR" "ANY for a known name"
    expect_eq "$(q d1 +tcp big.weave.local | wc -l)" 50 "still answering after bad input"
    lab_weft 1 status >/dev/null || fail "router gone after bad input"
}

test_dns_forwards_to_upstream() {
    lab_up 2
    # Host 2 plays the upstream resolver: the fake server on its underlay address.
    ip netns exec "$(lab_ns 2)" "$FAKE_UPSTREAM" "$(lab_ip 2):53" >"$LAB_DIR/upstream.log" 2>&1 &
    trap "kill $! 2>/dev/null; lab_down" EXIT
    upstream_ready() { grep -q ready "$LAB_DIR/upstream.log"; }
    lab_wait 10 upstream_ready || fail "fake upstream did not start"
    printf 'nameserver 172.17.0.1\nnameserver %s\n' "$(lab_ip 2)" >"$LAB_DIR/resolv.conf"
    lab_weft 1 launch --nickname host1 --ipalloc-range "" --resolv-conf "$LAB_DIR/resolv.conf" \
        --dns-fallback-timeout 1000 >/dev/null
    # Our own address is never an upstream (no loop).
    expect_match "$(lab_weft 1 status)" "Upstream: $(lab_ip 2)\$" "status upstream"
    lab_container d1
    lab_docker_eth0 1 d1 172.17.1.1
    expect_eq "$(q d1 www.example.test)" "192.0.2.1" "forwarded over UDP"
    expect_eq "$(q d1 +tcp www.example.test)" "192.0.2.1" "forwarded over TCP"
    expect_eq "$(status_of d1 nx.example.test)" "NXDOMAIN" "upstream NXDOMAIN passed on"
    expect_eq "$(q d1 +tcp big.example.test | wc -l)" 60 "large upstream answer over TCP"
    expect_eq "$(q d1 +bufsize=4096 big.example.test | wc -l)" 60 "large upstream answer over UDP with EDNS0"
    # A silent upstream: SERVFAIL once the fallback timeout has passed.
    expect_eq "$(lab_in d1 dig +time=4 +tries=1 @"$DNS" silent.example.test | grep -o 'status: [A-Z]*')" "status: SERVFAIL" "silent upstream"
    # A reverse lookup for an address weftDNS does not know goes upstream too.
    expect_eq "$(status_of d1 -x 192.0.2.1)" "NOERROR" "unknown PTR forwarded"
    # The resolv.conf is re-read when it changes: no upstream left, SERVFAIL at once.
    echo "nameserver 172.17.0.1" >"$LAB_DIR/resolv.conf"
    touch -d '+1 minute' "$LAB_DIR/resolv.conf"
    no_upstream() { lab_weft 1 status | grep -q 'Upstream: none'; }
    lab_wait 15 no_upstream || fail "resolv.conf change not seen"
    expect_eq "$(status_of d1 www.example.test)" "SERVFAIL" "no upstream"
}

test_dns_off_and_flags() {
    lab_up 1
    lab_weft 1 launch --nickname host1 --ipalloc-range "" --no-dns >/dev/null
    expect_exit 1 "Invalid 'weft status' sub-command: dns" "status dns with DNS off" lab_weft 1 status dns
    ! lab_weft 1 status | grep -q 'Service: dns' || fail "dns section with DNS off"
    expect_eq "$(lab_weft 1 dns-args)" "" "dns-args with DNS off"
    expect_exit 4 "" "GET /domain with DNS off" lab_weft_http 1 /domain
    lab_weft 1 stop
    expect_exit 1 "^--dns-listen-address: invalid address \"nonsense\", expected IP:PORT" "bad listen address" \
        lab_weft 1 launch --dns-listen-address nonsense
    expect_exit 1 "^--dns-domain: invalid domain" "bad domain" lab_weft 1 launch --dns-domain 'a..b'
    # Another domain and address.
    lab_weft 1 launch --nickname host1 --ipalloc-range "" --dns-domain example.internal \
        --dns-listen-address 127.0.0.1:5353 --dns-ttl 30 >/dev/null
    lab_weft 1 dns-add 10.4.0.1 -h alpha.example.internal
    expect_eq "$(ip netns exec "$(lab_ns 1)" dig +short -p 5353 @127.0.0.1 alpha.example.internal)" "10.4.0.1" "custom domain and address"
    expect_match "$(ip netns exec "$(lab_ns 1)" dig +noall +answer -p 5353 @127.0.0.1 alpha)" '[[:space:]]30[[:space:]]+IN[[:space:]]+A' "custom TTL"
    expect_eq "$(lab_weft 1 dns-args)" "--dns=127.0.0.1 --dns-search=example.internal." "dns-args"
    # A name outside the domain is ignored, as Weave does.
    lab_weft 1 dns-add 10.4.0.2 -h b.weave.local
    expect_eq "$(ip netns exec "$(lab_ns 1)" curl -s -H 'Accept: application/json' http://127.0.0.1:6784/name | jq length)" 1 "outside the domain: not registered"
}

# lab_weft_http <host#> <path>: GET on that host's router API, exit code as the CLI's (4: 404).
lab_weft_http() {
    local code
    code=$(ip netns exec "$(lab_ns "$1")" curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:6784$2")
    case "$code" in 2*) return 0 ;; 404) return 4 ;; *) return 1 ;; esac
}

test_dns_mixed_with_weave_net() {
    have_weaver || return 0
    lab_up 2
    start_weaver 2 --name 02:ac:00:00:00:02 --nickname gohost --ipalloc-range "" \
        --no-dns=false --dns-listen-address 172.17.0.1:53 --resolv-conf /dev/null "$(lab_ip 1)"
    local d="$LAB_DIR/go"
    lab_weft 1 launch --nickname rust1 --ipalloc-range "" >/dev/null
    lab_wait 60 full_mesh_of 1 2 || { dump_logs; tail -30 "$d/weaver.log" >&2; fail "no mesh with weaver"; }
    lab_container d1; lab_docker_eth0 1 d1 172.17.1.1
    lab_container d2; lab_docker_eth0 2 d2 172.17.2.1
    # A name registered on Weave Net resolves on weft, and the other way round.
    ip netns exec "$(lab_ns 2)" curl -sf -X PUT http://127.0.0.1:6784/name/goc/10.5.0.2 -d fqdn=gohost-c.weave.local. \
        || fail "PUT /name on weaver"
    lab_weft 1 dns-add 10.5.0.1 -h rust-c.weave.local
    lab_wait 20 resolves_to d1 gohost-c.weave.local "10.5.0.2 " || { tail -20 "$d/weaver.log" >&2; fail "weft does not resolve weaver's name"; }
    lab_wait 20 resolves_to d2 rust-c.weave.local "10.5.0.1 " || { tail -20 "$d/weaver.log" >&2; fail "weaver does not resolve weft's name"; }
    # Removal on either side disappears on both.
    ip netns exec "$(lab_ns 2)" curl -sf -X DELETE http://127.0.0.1:6784/name/goc || fail "DELETE /name on weaver"
    lab_weft 1 dns-remove 10.5.0.1 -h rust-c.weave.local
    lab_wait 20 gone d1 gohost-c.weave.local || fail "weaver's removal not seen by weft"
    lab_wait 20 gone d2 rust-c.weave.local || fail "weft's removal not seen by weaver"
}

test_dns_hostile_gossip() {
    lab_up 2
    lab_weft 1 launch --nickname host1 --ipalloc-range "" >/dev/null
    lab_weft 1 dns-add 10.6.0.1 -h keep.weave.local
    local before; before=$(ip netns exec "$(lab_ns 1)" curl -s -H 'Accept: application/json' http://127.0.0.1:6784/name)
    # Garbage, clock skew, a bad name, 100,000 entries: each refused, its connection closed.
    local out; out=$(ip netns exec "$(lab_ns 2)" "$HOSTILE" "$(lab_ip 1):6783" dns-gossip 8 100000 2>&1)
    expect_match "$out" "^closed 8 of 8$" "every hostile DNS message closed its connection"
    kill -0 "$(cat "$LAB_DIR/h1/run/weft.pid")" || fail "router died"
    expect_eq "$(ip netns exec "$(lab_ns 1)" curl -s -H 'Accept: application/json' http://127.0.0.1:6784/name)" "$before" "zone unchanged"
    expect_match "$(grep -c 'DNS message from' "$LAB_DIR/h1/run/weft.log")" '^[1-9]' "refusals logged"
    lab_container d1; lab_docker_eth0 1 d1 172.17.1.1
    expect_eq "$(q d1 keep.weave.local)" "10.6.0.1" "still answering"
}
