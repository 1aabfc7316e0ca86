# shellcheck shell=bash
# A Docker daemon for the tests (sourced by scripts/e2e_docker.sh): docker_up starts dockerd on
# the default socket if none answers (and docker_down stops only a daemon it started), and
# imports the test image weft-busybox from the busybox-static binary (no registry is used);
# docker_image does the import alone, for a daemon started elsewhere.

DOCKER_IMAGE=weft-busybox
DOCKERD_PID=
# The machine's iptables FORWARD policy before a daemon we started set it to DROP.
FORWARD_POLICY=

docker_answers() { docker info >/dev/null 2>&1; }

docker_up() {
    if ! docker_answers; then
        command -v dockerd >/dev/null || { echo "needs dockerd (Debian's docker.io)" >&2; return 1; }
        FORWARD_POLICY=$(iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}')
        dockerd --host unix:///var/run/docker.sock >"/tmp/weft-dockerd-$$.log" 2>&1 &
        DOCKERD_PID=$!
        lab_wait 30 docker_answers || { tail -20 "/tmp/weft-dockerd-$$.log" >&2; return 1; }
    fi
    docker_image
}

# docker_image: imports the test image into the daemon at DOCKER_HOST unless it has it.
docker_image() {
    docker image inspect "$DOCKER_IMAGE" >/dev/null 2>&1 && return 0
    local d; d=$(mktemp -d)
    mkdir -p "$d/bin" "$d/etc"
    cp /bin/busybox "$d/bin/busybox"
    local a
    for a in sh ping ip hostname cat sleep nslookup wget ifconfig; do ln -s busybox "$d/bin/$a"; done
    tar -C "$d" -c . | docker import - "$DOCKER_IMAGE" >/dev/null
    rm -rf "$d"
}

# docker_rm_named <prefix>: removes every container whose name starts with <prefix>.
docker_rm_named() {
    local ids
    ids=$(docker ps -aq --filter "name=^$1" 2>/dev/null) || true
    # shellcheck disable=SC2086 # one ID per word
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
}

docker_down() {
    [ -n "$DOCKERD_PID" ] || return 0
    kill "$DOCKERD_PID" 2>/dev/null || true
    local _
    for _ in $(seq 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    DOCKERD_PID=
    rm -f "/tmp/weft-dockerd-$$.log"
    # What the daemon changed and leaves behind that would change the machine for others.
    [ -z "$FORWARD_POLICY" ] || iptables -P FORWARD "$FORWARD_POLICY" 2>/dev/null || true
}
