#!/usr/bin/env bash
# Docker integration benchmark, against the machine's dockerd (started if none answers, and
# then stopped again) with a weft router on a lab host, measured in turns in the same run:
#   (1) `docker run --rm IMG sh -c :` directly against dockerd and through weft's Docker API
#       proxy (the proxy's run includes the attach: IPAM, veth, DNS name, weavewait), and
#       through the proxy with WEAVE_CIDR=none (left alone: what passing through costs);
#   (2) `docker run -d IMG sleep 600` directly against dockerd and `weft run IMG sleep 600`
#       (docker run -d with weftDNS's settings, then attach), each returning once the
#       container runs (weft run: once it is attached).
# Each figure is the median of RUNS (default 7) wall-clock times, in ms; the difference is
# what weft adds. Needs root. Usage: bench/docker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
source scripts/lab.sh
source scripts/e2e_docker.sh
RUNS=${RUNS:-7}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
[ -x "$WEFT" ] || cargo build --release -p weft
export WEFT_WAIT="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/weft-wait"
[ -x "$WEFT_WAIT" ] || (cd crates/weft-wait && cargo build --release --target x86_64-unknown-linux-gnu)

LAB="wb$(printf '%04x' $((RANDOM % 65536)))"
LAB_DIR="/tmp/$LAB-lab"
LAB_HOSTS=0
trap docker_test_down EXIT
docker_up
lab_up 1
lab_weft 1 launch --nickname bench --no-plugin >/dev/null
PROXY="unix://$LAB_DIR/h1/run/weave.sock"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# timed <command...>: its wall-clock time in ms (its output discarded).
timed() { local t0; t0=$(now_ms); "$@" >/dev/null; echo $(($(now_ms) - t0)); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

direct_rm=() proxy_rm=() none_rm=() direct_d=() weft_d=()
# One unmeasured round first: the image and the caches are warm for both.
docker run --rm "$DOCKER_IMAGE" sh -c : >/dev/null
docker -H "$PROXY" run --rm "$DOCKER_IMAGE" sh -c : >/dev/null
for i in $(seq "$RUNS"); do
    direct_rm+=("$(timed docker run --rm "$DOCKER_IMAGE" sh -c :)")
    proxy_rm+=("$(timed docker -H "$PROXY" run --rm "$DOCKER_IMAGE" sh -c :)")
    none_rm+=("$(timed docker -H "$PROXY" run --rm -e WEAVE_CIDR=none "$DOCKER_IMAGE" sh -c :)")
    direct_d+=("$(timed docker run -d --name "${LAB}d$i" "$DOCKER_IMAGE" sleep 600)")
    weft_d+=("$(timed lab_weft 1 run --name "${LAB}w$i" "$DOCKER_IMAGE" sleep 600)")
    docker rm -f "${LAB}d$i" "${LAB}w$i" >/dev/null
done
m() { printf '%s\n' "$@" | median; }
a=$(m "${direct_rm[@]}") b=$(m "${proxy_rm[@]}") n=$(m "${none_rm[@]}")
c=$(m "${direct_d[@]}") d=$(m "${weft_d[@]}")
echo "runs: $RUNS each, in turns; medians in ms"
printf '%-44s %6s ms   (runs: %s)\n' "docker run --rm sh -c : (direct)" "$a" "${direct_rm[*]}"
printf '%-44s %6s ms   (runs: %s)\n' "docker run --rm sh -c : (through the proxy)" "$b" "${proxy_rm[*]}"
printf '%-44s %+6d ms   (target <= +150)\n' "  proxy adds" "$((b - a))"
printf '%-44s %6s ms   (runs: %s)\n' "  ... WEAVE_CIDR=none (pass-through only)" "$n" "${none_rm[*]}"
printf '%-44s %+6d ms\n' "  passing through adds" "$((n - a))"
printf '%-44s %6s ms   (runs: %s)\n' "docker run -d sleep (direct)" "$c" "${direct_d[*]}"
printf '%-44s %6s ms   (runs: %s)\n' "weft run sleep (docker run -d + attach)" "$d" "${weft_d[*]}"
printf '%-44s %+6d ms   (target <= +150)\n' "  weft run adds" "$((d - c))"
