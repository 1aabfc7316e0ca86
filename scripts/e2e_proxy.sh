# shellcheck shell=bash
# End-to-end tests of the Docker API proxy (sourced by scripts/e2e.sh), against the machine's
# dockerd (started if none answers, as scripts/e2e_docker.sh does) with the router on a lab
# host: `docker -H unix://$WEFT_RUN_DIR/weave.sock run` gives a container its weave address
# before its command runs (weavewait), registers its name in weftDNS, lets it reach a
# container attached with `weft attach`; attach (-i), exec and logs pass through; WEAVE_CIDR=none
# and --net=host are left alone; bad requests get Docker-style errors and never stop the
# router; /etc/hosts is Weave's; nothing is left behind. Also `weft env`/`config`, the -H forms and --proxy=false.
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

test_proxy_containers_come_up_attached() {
    have_docker || return 0
    command -v python3 >/dev/null || fail "needs python3"
    trap docker_test_down EXIT
    docker_up
    lab_up 1
    lab_weft 1 launch --nickname host1 --no-plugin >/dev/null
    local sock; sock=$(proxy_sock 1)
    lab_wait 10 test -S "$sock" || { dump_logs; fail "no proxy socket"; }
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
