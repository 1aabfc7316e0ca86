# shellcheck shell=bash
# End-to-end tests of the Docker API proxy (sourced by scripts/e2e.sh), against the machine's
# dockerd (started if none answers, as scripts/e2e_docker.sh does) with the router on a lab
# host: `docker -H unix://$WEFT_RUN_DIR/weave.sock run` gives a container its weave address
# before its command runs (weavewait), registers its name in weftDNS, lets it reach a
# container attached with `weft attach`; attach (-i), exec and logs pass through; WEAVE_CIDR=none
# and --net=host are left alone; bad requests get Docker-style errors and never stop the
# router; /etc/hosts is Weave's; nothing is left behind. Also `weft env`/`config`, the -H forms and --proxy=false,
# TLS on the TCP listener (certificates made with openssl) and the launch copying dockerd's TLS flags.
# Names start with the lab prefix. Skipped without dockerd unless WEFT_REQUIRE_DOCKER=1.

source scripts/docker_lab.sh

proxy_sock() { echo "$LAB_DIR/h$1/run/weave.sock"; }
# pdocker <host#> <docker args...>: docker through that host's proxy.
pdocker() { local h=$1; shift; docker -H "unix://$(proxy_sock "$h")" "$@"; }
# raw_http <socket> <bytes (with \r, \n, \xNN escapes)> [<n>]: the first line of what the
# socket answers to these bytes (followed by n 'a's and an empty line when n is given).
raw_http() {
    python3 - "$1" "$2" "${3:-}" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
data = sys.argv[2].encode().decode('unicode_escape').encode('latin-1')
if sys.argv[3]:
    data += b'a' * int(sys.argv[3]) + b'\r\n\r\n'
try:
    s.sendall(data)
except OSError:
    pass
try:
    print(s.recv(4096).split(b'\r\n')[0].decode())
except OSError as e:
    print(e)
EOF
}

# proxy_lab_up: dockerd and a lab host whose router runs the proxy, gone when the test ends;
# sets `sock` (the caller's local) to the proxy's socket.
proxy_lab_up() {
    trap docker_test_down EXIT
    docker_up
    lab_up 1
    lab_weft 1 launch --nickname host1 --no-plugin >/dev/null
    sock=$(proxy_sock 1)
    lab_wait 10 test -S "$sock" || { dump_logs; fail "no proxy socket"; }
}

test_proxy_containers_come_up_attached() {
    have_docker || return 0
    command -v python3 >/dev/null || fail "needs python3"
    local sock
    proxy_lab_up
    expect_eq "$(lab_weft 1 config)" "-H=unix://$sock" "weft config"
    expect_eq "$(DOCKER_HOST= lab_weft 1 env)" "export DOCKER_HOST=unix://$sock ORIG_DOCKER_HOST=" "weft env"
    expect_eq "$(DOCKER_HOST="unix://$sock" lab_weft 1 env)" "export DOCKER_HOST=unix://$sock" "weft env when already set"
    expect_eq "$(ORIG_DOCKER_HOST=unix:///x lab_weft 1 env --restore)" "DOCKER_HOST=unix:///x" "weft env --restore"
    expect_exit 1 "^Nothing to restore" "nothing to restore" env -u ORIG_DOCKER_HOST "$WEFT" env --restore
    # The command itself sees ethwe with its address: weavewait ran it after the attach.
    local out
    out=$(pdocker 1 run --rm --name "${LAB}a" -e WEAVE_CIDR=10.2.1.5/24 "$DOCKER_IMAGE" ip -4 -o addr show ethwe)
    expect_match "$out" "inet 10\.2\.1\.5/24" "the entrypoint saw ethwe"
    out=$(pdocker 1 run --rm -e WEAVE_CIDR=10.2.1.5/24 "$DOCKER_IMAGE" ip route show 224.0.0.0/4)
    expect_match "$out" "^224\.0\.0\.0/4 dev ethwe" "the entrypoint saw the multicast route"
    # The default: an address from IPAM, the hostname NAME.weave.local, weftDNS.
    local id ip
    id=$(pdocker 1 run -d --name "${LAB}b" "$DOCKER_IMAGE" sleep 600)
    ip=$(docker exec "$id" ip -4 -o addr show ethwe | awk '{print $4}' | cut -d/ -f1)
    expect_match "$ip" '^10\.(3[2-9]|4[0-7])\.' "address from the pool"
    expect_eq "$(docker inspect -f '{{.Config.Hostname}} {{.Config.Domainname}} {{index .Config.Entrypoint 0}} {{.HostConfig.DnsSearch}}' "$id")" \
        "${LAB}b weave.local /w/w [.]" "create was rewritten"
    looks_up() { [ "$(lab_weft 1 dns-lookup "$1")" = "$2" ]; }
    lab_wait 10 looks_up "${LAB}b" "$ip" || fail "the name is not in weftDNS"
    expect_match "$(docker exec "$id" cat /etc/hosts)" "^$(printf '%-15s' "$ip") ${LAB}b\.weave\.local ${LAB}b$" "/etc/hosts rewritten"
    expect_eq "$(ip netns exec "$(lab_ns 1)" curl -s "http://127.0.0.1:6784/ip/$id" | cut -d/ -f1)" "$ip" "IPAM has it under the ID"
    # exec, logs and attach with stdin pass through.
    expect_match "$(pdocker 1 exec "${LAB}b" ip -4 -o addr show ethwe)" "inet $ip/" "exec through the proxy"
    local exec_id
    exec_id=$(curl -s --unix-socket "$sock" -X POST -H 'Content-Type: application/json' \
        -d '{"Cmd":["true"]}' "http://d/containers/${LAB}b/exec" | sed -n 's/.*"Id":"\([0-9a-f]*\)".*/\1/p')
    expect_eq "$(curl -s --unix-socket /var/run/docker.sock "http://d/exec/$exec_id/json" | grep -o '"entrypoint":"[^"]*"')" \
        '"entrypoint":"/w/w"' "exec runs through weavewait"
    pdocker 1 run -d --name "${LAB}c" "$DOCKER_IMAGE" sh -c 'echo hello-from-c; sleep 600' >/dev/null
    logged() { [ "$(pdocker 1 logs "${LAB}c" 2>&1)" = hello-from-c ]; }
    lab_wait 5 logged || fail "logs through the proxy: [$(pdocker 1 logs "${LAB}c" 2>&1)], $(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "${LAB}c")"
    expect_eq "$(echo through-stdin | pdocker 1 run -i --rm --name "${LAB}d" "$DOCKER_IMAGE" cat)" "through-stdin" "run -i (attach, upgraded stream)"
    # Reaches a container attached with weft attach, both ways.
    lab_container n1
    lab_weft 1 attach 10.2.1.9/24 "netns:${LAB}n1" >/dev/null
    pdocker 1 run -d --name "${LAB}e" -e WEAVE_CIDR=10.2.1.6/24 "$DOCKER_IMAGE" sleep 600 >/dev/null
    docker exec "${LAB}e" ping -c 1 -W 2 10.2.1.9 >/dev/null || fail "proxy container cannot ping the attached one"
    lab_in n1 ping -c 1 -W 2 10.2.1.6 >/dev/null || fail "attached container cannot ping the proxy one"
    # Left alone: WEAVE_CIDR=none, --net=host.
    pdocker 1 run -d --name "${LAB}f" -e WEAVE_CIDR=none "$DOCKER_IMAGE" sleep 600 >/dev/null
    pdocker 1 run -d --name "${LAB}g" --net=host "$DOCKER_IMAGE" sleep 600 >/dev/null
    expect_eq "$(docker inspect -f '{{.Config.Entrypoint}} {{.HostConfig.Binds}}' "${LAB}f" "${LAB}g")" $'[] []\n[] []' "left alone"
    docker exec "${LAB}f" ip link show ethwe >/dev/null 2>&1 && fail "WEAVE_CIDR=none got ethwe"
    # Bad input: Docker-style errors, the router keeps going.
    local s="$sock"
    expect_match "$(curl -s -w ' %{http_code}' --unix-socket "$s" -X POST -H 'Content-Type: application/json' -d '{bad' http://d/containers/create | tr -d '\n')" \
        '^\{"message":.*\} *(400|500)$' "bad JSON: Docker's own error"
    expect_match "$(curl -s -w ' %{http_code}' --unix-socket "$s" -X POST -H 'Content-Type: application/json' -d '{"Image":"x","Cmd":["a"],"Env":["WEAVE_CIDR=bogus"]}' http://d/containers/create)" \
        '^\{"message":"invalid WEAVE_CIDR item \\"bogus\\".*\} 500$' "bad WEAVE_CIDR"
    expect_match "$(curl -s -w ' %{http_code}' --unix-socket "$s" -X POST -H 'Content-Type: application/json' -d '{"Image":"'"${LAB}"'nosuch"}' http://d/v1.41/containers/create)" \
        "^\\{\"message\":\"No such image: ${LAB}nosuch\"\\} 404$" "unknown image"
    expect_match "$(curl -s -w ' %{http_code}' --unix-socket "$s" -X POST "http://d/v1.41/containers/${LAB}nosuch/start" | tr -d '\n')" \
        ' 404$' "unknown container start"
    expect_match "$(head -c 2000000 /dev/zero | tr '\0' ' ' | curl -s -w ' %{http_code}' --unix-socket "$s" -X POST -H 'Content-Type: application/json' --data-binary @- http://d/containers/create)" \
        '^\{"message":"request body larger than 1048576 bytes"\} 500$' "huge body"
    expect_eq "$(raw_http "$s" 'GARBAGE\x00\xff\r\n\r\n')" "HTTP/1.1 400 Bad Request" "garbage"
    expect_eq "$(raw_http "$s" 'GET /_ping HTTP/1.1\r\nX-Big: ' 300000)" \
        "HTTP/1.1 431 Request Header Fields Too Large" "huge header"
    expect_match "$(pdocker 1 version --format '{{.Server.Version}}')" '^[0-9]' "still answers"
    lab_weft 1 status >/dev/null || fail "router gone"
    # Nothing left behind: containers gone, their veths and addresses too.
    docker rm -f "${LAB}b" "${LAB}c" "${LAB}e" "${LAB}f" "${LAB}g" >/dev/null
    no_veths() { [ "$(ip -n "$(lab_ns 1)" -o link show | grep -c vethwepl)" = 1 ]; }
    lab_wait 10 no_veths || fail "veths left: $(ip -n "$(lab_ns 1)" -o link show | grep vethwepl)"
    released() { [ -z "$(ip netns exec "$(lab_ns 1)" curl -s "http://127.0.0.1:6784/ip/$id")" ]; }
    lab_wait 10 released || fail "address not released"
    lab_weft 1 stop >/dev/null
    [ ! -e "$sock" ] || fail "socket left after stop"
}

# Already running containers are attached when the router starts; -H forms; --proxy=false.
test_proxy_listen_flags_and_restart() {
    have_docker || return 0
    trap docker_test_down EXIT
    docker_up
    lab_up 1
    expect_exit 1 "^When launching the proxy, unix sockets must be specified as an absolute path\.$" \
        "relative unix path" lab_weft 1 launch -H unix://rel.sock
    lab_weft 1 launch --nickname host1 --no-plugin -H "unix://$LAB_DIR/x/other.sock" -H tcp://127.0.0.1:12375 >/dev/null
    [ -L "$LAB_DIR/x/other.sock" ] || fail "no symlink for the second unix address"
    expect_eq "$(readlink "$LAB_DIR/x/other.sock")" "$(proxy_sock 1)" "the symlink names the real socket"
    expect_match "$(docker -H "unix://$LAB_DIR/x/other.sock" version --format '{{.Server.Version}}')" '^[0-9]' "through the symlink"
    expect_match "$(ip netns exec "$(lab_ns 1)" docker -H tcp://127.0.0.1:12375 version --format '{{.Server.Version}}')" '^[0-9]' "through tcp"
    expect_eq "$(lab_weft 1 config)" "-H=unix://$LAB_DIR/x/other.sock" "config shows the first address"
    expect_match "$(DOCKER_HOST="unix://$LAB_DIR/x/other.sock" lab_weft 1 stop 2>&1)" "^WARNING: It appears that your environment is configured to use the Weave Docker API proxy" "stop warns"
    [ ! -e "$LAB_DIR/x/other.sock" ] || fail "symlink left after stop"
    # A container created through the proxy while the router is down is attached when it
    # comes back (created with the proxy's settings by hand, as the proxy would).
    lab_weft 1 launch --nickname host1 --no-plugin >/dev/null
    pdocker 1 create --name "${LAB}r" -e WEAVE_CIDR=10.2.1.7/24 "$DOCKER_IMAGE" sleep 600 >/dev/null
    lab_weft 1 stop >/dev/null
    docker start "${LAB}r" >/dev/null
    lab_weft 1 launch --nickname host1 --no-plugin --rewrite-inspect >/dev/null
    has_addr() { docker exec "${LAB}r" ip -4 -o addr show ethwe 2>/dev/null | grep -q 'inet 10\.2\.1\.7/24'; }
    lab_wait 20 has_addr || { dump_logs; fail "running container not attached at start-up"; }
    expect_eq "$(pdocker 1 inspect -f '{{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}}' "${LAB}r")" "10.2.1.7/24" "--rewrite-inspect"
    expect_match "$(docker inspect -f '{{.NetworkSettings.IPAddress}}' "${LAB}r")" '^172\.' "Docker's own inspect keeps Docker's address"
    docker rm -f "${LAB}r" >/dev/null
    # A router killed leaves its socket; reset removes it.
    local pid; pid=$(cat "$LAB_DIR/h1/run/weft.pid")
    kill -9 "$pid"
    lab_wait 10 exited "$pid" || fail "router did not die"
    [ -S "$(proxy_sock 1)" ] || fail "no socket left by the killed router (the check below would prove nothing)"
    [ -d "$LAB_DIR/h1/run/weavewait" ] || fail "no weavewait copies before reset"
    lab_weft 1 reset --force >/dev/null 2>&1 || true
    [ ! -e "$(proxy_sock 1)" ] || fail "stale proxy socket left after reset"
    [ ! -e "$LAB_DIR/h1/run/weavewait" ] || fail "weavewait copies left after reset"
    # --proxy=false: no socket, and env says why.
    lab_weft 1 launch --nickname host1 --no-plugin --proxy=false >/dev/null
    [ ! -e "$(proxy_sock 1)" ] || fail "socket with --proxy=false"
    expect_exit 1 "proxy is not running" "env without proxy" lab_weft 1 env
    # Without weavewait the proxy cannot make containers: launch says so, with the path.
    lab_weft 1 stop >/dev/null
    expect_match "$(WEFT_WAIT=/nonexistent/weft-wait lab_weft 1 launch --nickname host1 --no-plugin 2>&1 >/dev/null)" \
        "^WARNING: weavewait \(weft-wait\) not found at /nonexistent/weft-wait: containers cannot be created through the proxy" \
        "launch without weavewait"
}

# tls_certs <dir>: a CA (ca.pem), a server certificate for 127.0.0.1 (cert.pem, key.pem) and a
# client certificate (client-cert.pem, client-key.pem) signed by it, made with openssl.
tls_certs() {
    local d=$1 who
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=weft-test-ca -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$d/ca-key.pem" -out "$d/ca.pem" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
    printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext"
    for who in server client; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$who" \
            -keyout "$d/$who-key.pem" -out "$d/$who.csr" 2>/dev/null
        openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -set_serial "$RANDOM" \
            -days 1 -extfile "$d/$who.ext" -out "$d/$who-cert.pem" 2>/dev/null
    done
    mv "$d/server-cert.pem" "$d/cert.pem"
    mv "$d/server-key.pem" "$d/key.pem"
}

# --tlsverify: docker with a client certificate runs a container through the proxy, attached;
# no certificate and plain HTTP are refused; a missing file stops the launch naming it.
# --tls alone (files from DOCKER_CERT_PATH): clients without a certificate; Unix stays plain.
test_proxy_tls() {
    have_docker || return 0
    command -v openssl >/dev/null || fail "needs openssl"
    trap docker_test_down EXIT
    docker_up
    lab_up 1
    local d="$LAB_DIR/tls" a=127.0.0.1:12375
    tls_certs "$d"
    # In the lab host; DOCKER_CERT_PATH names no directory, so docker uses no files but those given.
    tdocker() { ip netns exec "$(lab_ns 1)" env DOCKER_CERT_PATH="$d/none" docker -H "tcp://$a" "$@"; }
    tcurl() { ip netns exec "$(lab_ns 1)" curl -s -m 10 "$@"; }
    local verify=(--tlsverify --tlscacert "$d/ca.pem" --tlscert "$d/cert.pem" --tlskey "$d/key.pem")
    expect_exit 1 "^cannot load --tlscert $d/nope\.pem: " "a missing certificate" \
        lab_weft 1 launch --nickname host1 --no-plugin -H "tcp://$a" --tlsverify --tlscacert "$d/ca.pem" --tlscert "$d/nope.pem" --tlskey "$d/key.pem"
    lab_weft 1 launch --nickname host1 --no-plugin -H "tcp://$a" "${verify[@]}" >/dev/null
    local client=(--tlsverify --tlscacert "$d/ca.pem" --tlscert "$d/client-cert.pem" --tlskey "$d/client-key.pem") out
    out=$(tdocker "${client[@]}" run --rm --name "${LAB}t" -e WEAVE_CIDR=10.2.1.5/24 "$DOCKER_IMAGE" ip -4 -o addr show ethwe) ||
        { dump_logs; fail "docker --tlsverify through the proxy"; }
    expect_match "$out" "inet 10\.2\.1\.5/24" "the container came up attached"
    expect_eq "$(tcurl --cacert "$d/ca.pem" --cert "$d/client-cert.pem" --key "$d/client-key.pem" "https://$a/_ping")" "OK" "curl with a client certificate"
    [ "$(tcurl --cacert "$d/ca.pem" "https://$a/_ping")" = OK ] && fail "curl without a client certificate got through"
    tdocker --tlsverify --tlscacert "$d/ca.pem" version --format '{{.Server.Version}}' >/dev/null 2>&1 &&
        fail "docker without a client certificate got through"
    [ "$(tcurl "http://$a/_ping")" = OK ] && fail "plain HTTP got through"
    tdocker version --format '{{.Server.Version}}' >/dev/null 2>&1 && fail "plain docker got through"
    expect_match "$(tdocker "${client[@]}" version --format '{{.Server.Version}}')" '^[0-9]' "still answers"
    lab_weft 1 status >/dev/null || fail "router gone"
    lab_weft 1 stop >/dev/null
    DOCKER_CERT_PATH="$d" lab_weft 1 launch --nickname host1 --no-plugin -H "tcp://$a" -H "unix://$(proxy_sock 1)" --tls >/dev/null
    expect_eq "$(tcurl --cacert "$d/ca.pem" "https://$a/_ping")" "OK" "--tls: curl without a client certificate"
    expect_match "$(tdocker --tlsverify --tlscacert "$d/ca.pem" version --format '{{.Server.Version}}')" '^[0-9]' "--tls: docker without a client certificate"
    [ "$(tcurl "http://$a/_ping")" = OK ] && fail "--tls: plain HTTP got through"
    expect_match "$(pdocker 1 version --format '{{.Server.Version}}')" '^[0-9]' "the unix socket stays plain"
    lab_weft 1 stop >/dev/null
}

# in_pidns <host#> <script> [args]: runs bash <script> in a PID namespace of its own (with its
# own /proc: only what the script starts is seen there) inside the lab host; $WEFT and the lab
# host's directories in the environment as lab_weft sets them.
in_pidns() {
    local i=$1; shift
    ip netns exec "$(lab_ns "$i")" unshare --pid --fork --mount-proc env \
        WEFT_STATE_DIR="$LAB_DIR/h$i/state" WEFT_RUN_DIR="$LAB_DIR/h$i/run" \
        WEFT_PLUGINS_DIR="$LAB_DIR/h$i/plugins" WEFT="$WEFT" bash -c "$@"
}

# Without TLS flags the launch copies those of the running dockerd (a stand-in named dockerd,
# alone in a PID namespace with the launch), and warns when there is none though a daemon's
# socket is there, unless the proxy is off or --no-detect-tls. Each launch in a PID namespace is made to fail at the router's start,
# so that no router is left there.
test_proxy_tls_detected_from_dockerd() {
    lab_up 1
    local d="$LAB_DIR/tls"
    mkdir -p "$d"
    printf '#!/bin/sh\nsleep 600\n' >"$d/dockerd"
    chmod +x "$d/dockerd"
    # The router fails on the certificate the daemon's flags name: they were copied, the
    # relative path taken from the daemon's working directory.
    expect_exit 1 "^cannot load --tlscert $d/certs/nope\.pem: " "flags copied from dockerd" \
        in_pidns 1 '(cd "$1" && exec ./dockerd -H tcp://0.0.0.0:2376 --tlsverify --tlscacert="$1/ca.pem" --tlscert certs/nope.pem) &
            sleep 0.2; "$WEFT" launch --nickname host1 --no-plugin -H tcp://127.0.0.1:12375' _ "$d"
    local warning="^Warning: unable to detect proxy TLS configuration\. To enable TLS, launch the proxy with 'weft launch' and supply TLS options\. To suppress this warning, supply the '--no-detect-tls' option\.$"
    # A daemon's socket but no dockerd to be seen: the warning.
    touch "$d/docker.sock"
    export DOCKER_HOST="unix://$d/docker.sock"
    expect_exit 1 "$warning" "no dockerd: the warning" \
        in_pidns 1 '"$WEFT" launch --nickname host1 --no-plugin -H unix:///proc/weft-none/x.sock'
    local out
    # No Docker on the host at all: nothing to warn of.
    export DOCKER_HOST="unix://$d/no-docker.sock"
    out=$(in_pidns 1 '"$WEFT" launch --nickname host1 --no-plugin -H unix:///proc/weft-none/x.sock' 2>&1) &&
        fail "the launch was to fail"
    grep -q "^Warning" <<<"$out" && fail "a host without Docker warned: $out"
    out=$(in_pidns 1 '"$WEFT" launch --nickname host1 --no-plugin --no-detect-tls -H unix:///proc/weft-none/x.sock' 2>&1) &&
        fail "the launch was to fail"
    expect_match "$out" "x\.sock" "--no-detect-tls: the start error"
    grep -q "^Warning" <<<"$out" && fail "--no-detect-tls warned: $out"
    out=$(in_pidns 1 '"$WEFT" launch --nickname host1 --no-plugin --no-proxy --status-addr 192.0.2.1:6782' 2>&1) &&
        fail "the launch was to fail"
    expect_match "$out" "192\.0\.2\.1" "--no-proxy: the start error"
    grep -q "^Warning" <<<"$out" && fail "--no-proxy warned: $out"
    return 0
}
# Clients before Docker 1.12: a start call carrying a HostConfig (API < 1.24) keeps the /w bind
# and weftDNS (the no-op weavewait on the host's network); attach and exec start hijack the
# connection without `Upgrade:` and still pass stdin both ways (crates/weftd/examples/
# raw_stream.rs is such a client).
test_proxy_old_clients() {
    have_docker || return 0
    local raw="${CARGO_TARGET_DIR}/release/examples/raw_stream"
    [ -x "$raw" ] || cargo build --release -p weftd --example raw_stream
    local sock
    proxy_lab_up
    local id
    id=$(pdocker 1 create -i --name "${LAB}o" -e WEAVE_CIDR=10.2.1.8/24 "$DOCKER_IMAGE" cat)
    expect_eq "$(curl -s -w '%{http_code}' --unix-socket "$sock" -X POST -H 'Content-Type: application/json' \
        -d '{"Dns":["8.8.8.8"],"PublishAllPorts":false}' "http://x/v1.23/containers/$id/start")" 204 "old-style start"
    expect_match "$(docker exec "$id" ip -4 -o addr show ethwe)" "inet 10\.2\.1\.8/24" "attached after an old-style start"
    expect_match "$(docker inspect -f '{{.HostConfig.Binds}} {{.HostConfig.Dns}} {{.HostConfig.DnsSearch}}' "$id")" \
        "^\[$LAB_DIR/h1/run/weavewait/w:/w:ro\] \[8\.8\.8\.8 [0-9.]+\] \[\.\]$" "the start's HostConfig got the /w bind and weftDNS"
    local out exec_id
    exec_id=$(curl -s --unix-socket "$sock" -X POST -H 'Content-Type: application/json' \
        -d '{"AttachStdin":true,"AttachStdout":true,"Cmd":["cat"]}' "http://x/v1.23/containers/$id/exec" |
        sed -n 's/.*"Id":"\([0-9a-f]*\)".*/\1/p')
    out=$("$raw" "$sock" "/v1.23/exec/$exec_id/start" $'exec-cat-and-back\n' '{"Detach":false,"Tty":false}') ||
        fail "exec start without Upgrade: [$out]"
    expect_eq "$out" $'HTTP/1.1 200 OK\nexec-cat-and-back' "exec start without Upgrade"
    # Last: the end of the attach's stdin may end cat.
    out=$("$raw" "$sock" "/v1.23/containers/$id/attach?stream=1&stdin=1&stdout=1&stderr=1" $'to-cat-and-back\n') ||
        fail "attach without Upgrade: [$out]"
    expect_eq "$out" $'HTTP/1.1 200 OK\nto-cat-and-back' "attach without Upgrade"
    # Started on the host's network: weavewait's no-op variant, which runs the command at once.
    pdocker 1 create --name "${LAB}q" "$DOCKER_IMAGE" sh -c 'echo up-on-host; sleep 600' >/dev/null
    expect_eq "$(curl -s -w '%{http_code}' --unix-socket "$sock" -X POST -H 'Content-Type: application/json' \
        -d '{"NetworkMode":"host"}' "http://x/v1.23/containers/${LAB}q/start")" 204 "old-style start on the host's network"
    expect_eq "$(docker inspect -f '{{.HostConfig.Binds}} {{.HostConfig.NetworkMode}}' "${LAB}q")" \
        "[$LAB_DIR/h1/run/weavewait/w-noop:/w:ro] host" "the no-op weavewait"
    up() { [ "$(docker logs "${LAB}q" 2>&1)" = up-on-host ]; }
    lab_wait 5 up || fail "the command did not run on the host's network: [$(docker logs "${LAB}q" 2>&1)]"
    # An old-style start of a container that is not the proxy's is passed on as it came.
    pdocker 1 create --name "${LAB}p" -e WEAVE_CIDR=none "$DOCKER_IMAGE" sleep 600 >/dev/null
    curl -s --unix-socket "$sock" -X POST -H 'Content-Type: application/json' \
        -d '{"Dns":["8.8.4.4"]}' "http://x/v1.23/containers/${LAB}p/start" >/dev/null
    expect_eq "$(docker inspect -f '{{json .HostConfig.Binds}} {{.HostConfig.Dns}} {{.State.Running}}' "${LAB}p")" "null [8.8.4.4] true" "left alone"
    docker rm -f "${LAB}o" "${LAB}p" "${LAB}q" >/dev/null
    lab_weft 1 stop >/dev/null
}
