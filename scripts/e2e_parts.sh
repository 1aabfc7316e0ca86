# shellcheck shell=bash
# End-to-end test of Weave Net 1.x's commands for the router's Docker-facing parts (sourced by
# scripts/e2e.sh, after e2e_plugin.sh and e2e_proxy.sh, whose helpers it uses): with a dockerd
# of the lab host's own, `weft launch-router` starts the router alone; `launch-proxy` and
# `launch-plugin` start the proxy and the plugin in it (status, report, `weft env` follow), a
# container created through the proxy comes up attached, the network `weave` appears;
# `stop-proxy` and `stop-plugin` stop them again, removing the socket, the sockets and the
# network, and say so when nothing runs; bad flags and a missing router are refused; `weft
# reset` removes the network a killed router left. Also the router across a restart of the
# Docker daemon, and `--no-docker` keeping away from any daemon.
# Names start with wpt. Skipped without dockerd unless WEFT_REQUIRE_DOCKER=1.

test_launch_parts_separately() {
    have_docker || return 0
    LAB="wpt${LAB#wt}"; LAB_DIR="/tmp/$LAB-lab"
    trap plugin_test_down EXIT
    lab_up 1
    plugin_dockerd_up 1
    local sock="$LAB_DIR/h1/run/weave.sock" plugins="$LAB_DIR/h1/plugins"
    # Nothing runs: the parts need the router.
    expect_exit 1 "router must be running before the proxy can be launched" "launch-proxy without a router" \
        lab_weft 1 launch-proxy
    expect_exit 1 "router must be running before the plugin can be launched" "launch-plugin without a router" \
        lab_weft 1 launch-plugin
    expect_exit 0 "^Proxy is not running\.$" "stop-proxy without a router" lab_weft 1 stop-proxy
    # The router alone.
    expect_match "$(lab_weft 1 launch-router --nickname host1)" '^[0-9]+$' "launch-router prints the router's PID"
    local st; st=$(lab_weft 1 status)
    ! grep -q "Service: proxy\|Service: plugin" <<<"$st" || fail "launch-router started more than the router"
    [ ! -e "$sock" ] && [ ! -e "$plugins/weave.sock" ] || fail "sockets after launch-router"
    expect_exit 1 "proxy is not running" "weft env without the proxy" lab_weft 1 env
    expect_exit 3 "already running" "launch while the router runs" lab_weft 1 launch
    # The proxy in it.
    expect_exit 1 "absolute path" "a relative -H" lab_weft 1 launch-proxy -H unix://rel.sock
    expect_exit 1 "hostname-match" "a bad --hostname-match" lab_weft 1 launch-proxy --hostname-match '('
    expect_exit 1 "" "an unknown flag" lab_weft 1 launch-proxy --no-such-flag
    expect_match "$(lab_weft 1 launch-proxy --rewrite-inspect)" '^[0-9]+$' "launch-proxy"
    [ -S "$sock" ] || fail "no proxy socket after launch-proxy"
    expect_exit 1 "^The proxy is already running; you can stop it with 'weft stop-proxy'\.$" "launch-proxy twice" \
        lab_weft 1 launch-proxy
    st=$(lab_weft 1 status)
    expect_match "$st" "^        Service: proxy$" "status proxy section"
    expect_match "$st" "^        Address: unix://$sock$" "status proxy address"
    expect_eq "$(lab_weft 1 report -f '{{.Proxy.Addresses}}')" "[unix://$sock]" "report Proxy"
    expect_eq "$(lab_weft 1 config)" "-H=unix://$sock" "weft config"
    # Anyone on the host reaches the control API, but only root may move or stop the proxy:
    # the calls need the token in the run dir.
    local api=http://127.0.0.1:6784
    expect_match "$(ip netns exec "$(lab_ns 1)" curl -s -w ' %{http_code}' -X DELETE "$api/proxy")" ' 403$' \
        "stopping the proxy without the token"
    expect_match "$(ip netns exec "$(lab_ns 1)" curl -s -w ' %{http_code}' -X POST -H 'Content-Type: application/json' \
        -d '{"hosts":["tcp://127.0.0.1:2999"]}' "$api/proxy")" ' 403$' "moving the proxy without the token"
    expect_match "$(ip netns exec "$(lab_ns 1)" curl -s -w ' %{http_code}' -X DELETE -H 'X-Weft-Token: 00' "$api/plugin")" ' 403$' \
        "a wrong token"
    expect_eq "$(stat -c %a "$LAB_DIR/h1/run/control.token")" 600 "the token is root's alone"
    expect_exit 1 "cannot read the router's control token" "stop-proxy by another user" \
        ip netns exec "$(lab_ns 1)" setpriv --reuid=65534 --regid=65534 --clear-groups env \
        WEFT_RUN_DIR="$LAB_DIR/h1/run" WEFT_STATE_DIR="$LAB_DIR/h1/state" "$WEFT" stop-proxy
    [ -S "$sock" ] || fail "the proxy went"
    # Relaunched from a shell pointed at it (eval $(weft env)), the proxy does not make itself
    # its own daemon: it takes the one weft env saved.
    local env_vars; env_vars=$(lab_weft 1 env | sed 's/^export //')
    # shellcheck disable=SC2086 # NAME=value words
    expect_match "$( (export $env_vars; lab_weft 1 stop-proxy) 2>&1)" "^WARNING: It appears that your environment is configured to use the Weave Docker API proxy" \
        "stop-proxy warns when DOCKER_HOST is the proxy"
    # shellcheck disable=SC2086
    (export $env_vars; lab_weft 1 launch-proxy --rewrite-inspect >/dev/null) || fail "launch-proxy from a shell pointed at the proxy"
    expect_match "$(timeout 10 docker -H "unix://$sock" version --format '{{.Server.Version}}')" '^[0-9]' \
        "the relaunched proxy reaches the daemon"
    local ip
    ip=$(docker -H "unix://$sock" run --rm "$DOCKER_IMAGE" ip -4 -o addr show ethwe | awk '{print $4}')
    expect_match "$ip" '^10\.(3[2-9]|4[0-7])\.' "a container through the proxy came up attached"
    # The plugin in it.
    docker network inspect weave >/dev/null 2>&1 && fail "network weave before launch-plugin"
    expect_match "$(lab_weft 1 launch-plugin)" '^[0-9]+$' "launch-plugin"
    expect_match "$(lab_weft 1 launch-plugin)" '^[0-9]+$' "launch-plugin again is no error"
    lab_wait 30 docker network inspect weave || fail "no network weave after launch-plugin"
    expect_eq "$(docker network inspect -f '{{index .Options "works.weave.multicast"}}' weave)" "true" "multicast on weave"
    expect_match "$(lab_weft 1 status)" '^        Service: plugin \(legacy\)$' "status plugin section"
    expect_eq "$(lab_weft 1 report -f '{{.Plugin.DriverName}} {{.Plugin.MeshDriverName}} {{.Plugin.Config.Socket}}')" \
        "weave weavemesh $plugins/weave.sock" "report Plugin"
    expect_match "$(docker run --rm --net=weave "$DOCKER_IMAGE" ip -4 -o addr show ethwe0)" ' 10\.(3[2-9]|4[0-7])\.' \
        "a container on network weave"
    # A container still attached keeps the network there: Weave Net's warning names it.
    local held out; held=$(docker run -d --net=weave "$DOCKER_IMAGE" sleep 600)
    out=$(lab_weft 1 stop-plugin 2>&1) || fail "stop-plugin with a container attached: $out"
    expect_match "$out" '^WARNING: the following containers are still attached to network "weave":$' "the warning"
    expect_match "$out" "^  ${held:0:12} $" "the warning names the container"
    docker network inspect weave >/dev/null 2>&1 || fail "network weave went with a container attached"
    lab_weft 1 launch-plugin >/dev/null || fail "launch-plugin after the warning"
    docker rm -f "$held" >/dev/null || fail "the container could not go once the plugin was back"
    # Each stops alone; the router keeps running.
    expect_exit 0 "" "stop-proxy" lab_weft 1 stop-proxy
    [ ! -e "$sock" ] || fail "proxy socket left after stop-proxy"
    ! grep -q "Service: proxy" <<<"$(lab_weft 1 status)" || fail "status proxy section after stop-proxy"
    expect_exit 0 "^Proxy is not running\.$" "stop-proxy twice" lab_weft 1 stop-proxy
    expect_exit 0 "" "stop-plugin" lab_weft 1 stop-plugin
    ! docker network inspect weave >/dev/null 2>&1 || fail "network weave left after stop-plugin"
    [ ! -e "$plugins/weave.sock" ] && [ ! -e "$plugins/weavemesh.sock" ] || fail "plugin sockets left after stop-plugin"
    expect_exit 0 "^Plugin is not running\.$" "stop-plugin twice" lab_weft 1 stop-plugin
    lab_weft 1 status >/dev/null || fail "the router stopped with its parts"
    # Started again, with other flags.
    lab_weft 1 launch-plugin --no-multicast-route >/dev/null || fail "launch-plugin --no-multicast-route"
    lab_wait 30 docker network inspect weave || fail "no network weave after the second launch-plugin"
    expect_eq "$(docker network inspect -f '{{index .Options "works.weave.multicast"}}' weave)" "" \
        "no multicast on weave"
    lab_weft 1 launch-proxy -H "unix://$LAB_DIR/h1/other.sock" >/dev/null || fail "launch-proxy -H"
    [ -L "$LAB_DIR/h1/other.sock" ] || fail "no -H link"
    # stop-router stops the process, and its parts with it.
    lab_weft 1 stop-router >/dev/null
    [ ! -e "$sock" ] && [ ! -e "$LAB_DIR/h1/other.sock" ] && [ ! -e "$plugins/weave.sock" ] \
        || fail "sockets left after stop-router"
    ! docker network inspect weave >/dev/null 2>&1 || fail "network weave left after stop-router"
    # A router without Docker runs no proxy.
    lab_weft 1 launch-router --no-docker >/dev/null
    expect_exit 1 "no-docker" "launch-proxy on a --no-docker router" lab_weft 1 launch-proxy
    lab_weft 1 stop >/dev/null
    # A killed router leaves the network weave behind; reset removes it, and the sockets.
    lab_weft 1 launch --nickname host1 >/dev/null
    lab_wait 30 docker network inspect weave || fail "no network weave after launch"
    local pid; pid=$(cat "$LAB_DIR/h1/run/weft.pid")
    kill -9 "$pid"
    lab_wait 10 exited "$pid" || fail "router did not die"
    docker network inspect weave >/dev/null 2>&1 || fail "the killed router took the network with it"
    expect_exit 0 "" "reset after a kill" lab_weft 1 reset --force
    ! docker network inspect weave >/dev/null 2>&1 || fail "network weave left after reset"
    [ ! -e "$sock" ] && [ ! -e "$plugins/weave.sock" ] && [ ! -e "$plugins/weavemesh.sock" ] \
        || fail "sockets left after reset"
}

# plugin_dockerd_restart <host#>: stops that host's daemon (its containers stop with it) and
# starts it again on the same data.
plugin_dockerd_restart() {
    local h=$1 i pid=""
    for i in "${!PLUGIN_DOCKERD_PIDS[@]}"; do
        [ "${PLUGIN_DOCKERD_PIDS[$i]%%:*}" = "$h" ] || continue
        pid=${PLUGIN_DOCKERD_PIDS[$i]#*:}
        unset "PLUGIN_DOCKERD_PIDS[$i]"
    done
    [ -n "$pid" ] || return 1
    kill "$pid"
    lab_wait 60 exited "$pid" || return 1
    plugin_dockerd_up "$h"
}

# A Docker daemon that restarts closes its API before it stops its containers and starts
# those with a restart policy before its API is back: the router learns of both when it
# reconnects. A proxied --restart=always container is attached again with its address and
# name; one that stayed stopped loses its names on every host and its address after the grace
# period.
test_docker_daemon_restart() {
    have_docker || return 0
    LAB="wdr${LAB#wt}"; LAB_DIR="/tmp/$LAB-lab"
    trap plugin_test_down EXIT
    lab_up 2
    plugin_dockerd_up 1
    lab_weft 1 launch --nickname host1 --no-plugin --ipalloc-init consensus=2 >/dev/null
    lab_weft 2 launch --nickname host2 --no-docker --ipalloc-init consensus=2 "$(lab_ip 1)" >/dev/null
    lab_wait 30 full_mesh_of 1 2 || { dump_logs; fail "no mesh"; }
    local sock="$LAB_DIR/h1/run/weave.sock"
    lab_wait 10 test -S "$sock" || fail "no proxy socket"
    local a ipa b ipb
    a=$(docker -H "unix://$sock" run -d --restart=always --name "${LAB}a" "$DOCKER_IMAGE" sleep 600)
    ipa=$(docker exec "$a" ip -4 -o addr show ethwe | awk '{print $4}' | cut -d/ -f1)
    b=$(lab_weft 1 run --name "${LAB}b" "$DOCKER_IMAGE" sleep 600)
    ipb=$(docker exec "$b" ip -4 -o addr show ethwe | awk '{print $4}' | cut -d/ -f1)
    expect_match "$ipa $ipb" '^10\.[0-9.]+ 10\.[0-9.]+$' "addresses before the restart"
    looks_up() { [ "$(lab_weft 2 dns-lookup "$1")" = "$2" ]; }
    lab_wait 10 looks_up "${LAB}a" "$ipa" || fail "a's name before the restart"
    lab_wait 10 looks_up "${LAB}b" "$ipb" || fail "b's name before the restart"
    plugin_dockerd_restart 1 || fail "the daemon did not restart"
    expect_eq "$(docker inspect -f '{{.State.Running}}' "$a" "$b" | tr '\n' ' ')" "true false " "a restarted, b did not"
    # a: attached again, same address, its command ran past weavewait; its name is back.
    attached() { [ "$(docker exec "$a" ip -4 -o addr show ethwe 2>/dev/null | awk '{print $4}' | cut -d/ -f1)" = "$ipa" ]; }
    lab_wait 20 attached || { dump_logs; fail "a was not attached again with $ipa"; }
    expect_match "$(docker exec "$a" cat /proc/1/cmdline | tr '\0' ' ')" '^sleep 600 $' "a's command runs"
    lab_wait 10 looks_up "${LAB}a" "$ipa" || fail "a's name after the restart"
    # b: its names go at once, everywhere; its address after the grace period.
    lab_wait 10 looks_up "${LAB}b" "" || fail "b's name still on host 2"
    owns() { ip netns exec "$(lab_ns 1)" curl -s "http://127.0.0.1:6784/ip/$b" | grep -q .; }
    owns || fail "b's address released before the grace period"
    lab_wait 50 eval '! owns' || fail "b's address not released after the grace period"
    docker rm -f "$a" "$b" >/dev/null
}

# `--no-docker`: the router and the commands never talk to a daemon, even with DOCKER_HOST set
# (a stand-in socket counts who connects); without it, the router does (the control).
test_no_docker_never_touches_a_daemon() {
    command -v python3 >/dev/null || fail "needs python3"
    lab_up 1
    local fake="$LAB_DIR/fake-docker.sock" calls="$LAB_DIR/fake-docker.calls"
    : >"$calls"
    python3 - "$fake" "$calls" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(64)
while True:
    c, _ = s.accept()
    with open(sys.argv[2], 'a') as f:
        f.write('connection\n')
    c.close()
PY
    local fake_pid=$!
    # shellcheck disable=SC2064 # the PID now
    trap "kill $fake_pid 2>/dev/null; lab_down" EXIT
    lab_wait 5 test -S "$fake" || fail "no stand-in socket"
    export DOCKER_HOST="unix://$fake"
    lab_weft 1 launch --nickname host1 --no-docker >/dev/null
    lab_container c1
    local ip; ip=$(lab_weft 1 attach "netns:${LAB}c1")
    expect_match "$ip" '^10\.' "attach without Docker"
    lab_weft 1 dns-add "$ip" "netns:${LAB}c1" -h c1.weave.local >/dev/null
    expect_match "$(lab_weft 1 ps "netns:${LAB}c1")" "$ip/" "ps"
    lab_weft 1 status >/dev/null
    lab_weft 1 detach "netns:${LAB}c1" >/dev/null
    lab_weft 1 stop >/dev/null 2>&1
    expect_eq "$(wc -l <"$calls")" 0 "connections to the daemon with --no-docker"
    # The control: without --no-docker the router looks for the daemon at once.
    lab_weft 1 launch --nickname host1 --no-plugin --no-proxy >/dev/null
    lab_wait 10 grep -q connection "$calls" || fail "the router never tried the daemon without --no-docker"
    lab_weft 1 stop >/dev/null 2>&1
}
