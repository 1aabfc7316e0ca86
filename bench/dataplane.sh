#!/usr/bin/env bash
# Data-plane benchmark: container-to-container single-stream TCP throughput (iperf3 -t 5) and
# ping RTT (100 pings, 50 ms apart, average) between two emulated lab hosts, for
#   (1) a reference measured in the same run: plain kernel VXLAN (Linux bridge + classic VXLAN
#       device, learning, MTU 1376 like weft's fastdp) set up by hand with `ip`,
#   (2) weft fastdp, (3) weft sleeve (--no-fastdp), (4) weft's Weave-compatible encrypted sleeve
#   (--password, WEFT_SLEEVE_CRYPTO=nacl), (5) weft's own encrypted sleeve between weft peers
#   (--password: AES-256-GCM), and (6) Weave Net 2.8.1's encrypted sleeve when WEAVE_REF_DIR
#   holds a built weaver and nlshim (see ../shared/tools/weave-reference) and ethtool is there,
# printed as ratios against the reference, plus (7) the routers' RSS sampled every 5 s during a
# 60 s iperf3 run over weft's own encrypted sleeve (start/max/end, growth > 10% is flagged).
# The set-ups are up at the same time and measured in turns (kernel, fastdp, sleeve, encrypted,
# kernel, ...): RTT and throughput five times each, and each figure is the median
# of its runs, so that a slow spell of the machine falls on all alike.
# Needs root, iperf3, jq, bc. Usage: bench/dataplane.sh [--quick]   (--quick: 10 s memory run).
# Waits first (up to BENCH_WAIT s, default 900) while other labs (w* namespaces) exist.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"

MEM_SECS=60
for a in "$@"; do
    case "$a" in
        --quick) MEM_SECS=10 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in iperf3 jq bc; do command -v "$c" >/dev/null || { echo "needs $c" >&2; exit 1; }; done
cargo build --release -q -p weft

# Not "w...": lab_down removes every namespace whose name *starts with* its LAB, so the other
# scripts' labs (wd = demo.sh, wt... = e2e.sh, wb... = mesh.sh, wl) must not be a prefix of ours.
# One lab per set-up: dp<id>k (kernel), dp<id>f (fastdp), dp<id>s (sleeve), dp<id>e (encrypted
# sleeve, Weave Net's scheme), dp<id>n (encrypted sleeve, weft's scheme), dp<id>w (Weave Net's
# encrypted sleeve).
BASE="dp$(printf '%04x' $((RANDOM % 65536)))"
LAB="${BASE}k"; source scripts/lab.sh
declare -A HOSTS=()
# use_lab <k|f|s>: makes lab.sh's functions act on that set-up's lab.
use_lab() {
    if [ -n "${LAB:-}" ]; then HOSTS[$LAB]=$LAB_HOSTS; fi
    LAB="$BASE$1"; LAB_DIR="/tmp/$LAB-lab"; LAB_HOSTS=${HOSTS[$LAB]:-0}
}
MY_PIDS=()
MY_WEAVERS=()
cleanup() {
    local p l
    for p in "${MY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${MY_WEAVERS[@]}"; do kill_tree "$p"; done
    for l in k f s e n w; do use_lab "$l"; lab_down; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Other labs on this machine (e2e.sh wt*, demo.sh wd*, mesh.sh wb*, wl*) would make the figures
# noisy: wait them out (at most BENCH_WAIT seconds, default 900).
others() { ip netns list | awk '{print $1}' | grep -q '^w[a-z]'; }
if others; then
    echo "waiting for other labs' namespaces (w*) to go away..." >&2
    end=$((SECONDS + ${BENCH_WAIT:-900}))
    while others; do
        if ((SECONDS >= end)); then echo "warning: still there; figures may be noisy" >&2; break; fi
        sleep 2
    done
fi

# --- measurement helpers ------------------------------------------------------------------
# iperf_mbps <var> <server container> <server ip> <client container> <secs>: sets <var> to the
# Mbit/s received. Runs in this shell (not in $(...)) so that the trap knows both iperf3 PIDs.
iperf_mbps() {
    local var=$1 srv=$2 ip=$3 cli=$4 secs=$5 spid cpid
    ip netns exec "$LAB$srv" timeout $((secs + 30)) iperf3 -s -1 >/dev/null 2>&1 &
    spid=$!; MY_PIDS=("$spid")
    listening() { lab_in "$srv" ss -ltn | grep -q ':5201 '; }
    lab_wait 10 listening || { echo "iperf3 server did not start" >&2; return 1; }
    ip netns exec "$LAB$cli" timeout $((secs + 20)) iperf3 -c "$ip" -t "$secs" -J >"$LAB_DIR/iperf.json" &
    cpid=$!; MY_PIDS+=("$cpid")
    wait "$cpid" || {
        echo "iperf3 client failed: $(jq -r '.error // empty' "$LAB_DIR/iperf.json" 2>/dev/null)" >&2
        return 1; }
    wait "$spid" 2>/dev/null || true
    MY_PIDS=()
    printf -v "$var" '%s' "$(jq -r '.end.sum_received.bits_per_second / 1e6' "$LAB_DIR/iperf.json")"
}
# rtt_ms <container> <ip>: average RTT of 100 pings (5 s, so that a few slow wake-ups do not
# swing the ratio).
rtt_ms() {
    lab_in "$1" ping -q -c 100 -i 0.05 "$2" | awk -F/ '/^rtt|^round-trip/{print $5}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
pings() { lab_in "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1; }
# Other labs that start while we measure are noted and reported at the end.
NOISY=""
note_others() { if others; then NOISY+=" $1"; fi; }
ratio() { echo "scale=4; $1 / $2" | bc -l; }
verdict() { [ "$(echo "$1" | bc -l)" = 1 ] && echo PASS || echo MISS; }

# --- 1. reference: kernel VXLAN ---------------------------------------------------------------
use_lab k
lab_up 2
for i in 1 2; do
    ns=$(lab_ns "$i"); o=$((3 - i))
    ip -n "$ns" link add "${LAB}br" type bridge
    ip -n "$ns" link add "${LAB}vx" type vxlan id 42 dstport 4789 local "$(lab_ip "$i")" \
        remote "$(lab_ip "$o")" dev eth0 learning
    ip -n "$ns" link set "${LAB}vx" mtu 1376 master "${LAB}br" up
    ip -n "$ns" link set "${LAB}br" mtu 1376 up
    lab_container "c$i"
    ip -n "$ns" link add "${LAB}v$i" mtu 1376 type veth peer name ethwe netns "${LAB}c$i"
    ip -n "$ns" link set "${LAB}v$i" master "${LAB}br" up
    ip -n "${LAB}c$i" link set ethwe mtu 1376 up
    ip -n "${LAB}c$i" addr add "10.250.0.$i/24" dev ethwe
done
lab_wait 15 pings c1 10.250.0.2 || { echo "kernel vxlan reference: no ping" >&2; exit 1; }

# --- 2./3. weft fastdp and sleeve -----------------------------------------------------------
# weft_lab <mode> [launch flags]: two hosts, a container on each, waits for "established <mode>".
weft_lab() {
    local mode=$1; shift
    lab_up 2
    lab_weft 1 launch --nickname host1 "$@" >/dev/null
    lab_weft 2 launch --nickname host2 "$@" "$(lab_ip 1)" >/dev/null
    for i in 1 2; do
        lab_container "c$i"
        lab_weft "$i" attach "10.2.1.$i/24" "netns:${LAB}c$i" >/dev/null
    done
    est() { lab_weft 1 status connections | grep -q "established $mode"; }
    lab_wait 30 est || { lab_weft 1 status connections >&2; echo "no $mode connection" >&2; return 1; }
    lab_wait 15 pings c1 10.2.1.2 || { echo "$mode: no ping" >&2; return 1; }
}
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$(cat "$LAB_DIR/h$1/run/weft.pid")/status"; }
use_lab f; weft_lab fastdp
use_lab s; weft_lab sleeve --no-fastdp
use_lab e; WEFT_SLEEVE_CRYPTO=nacl weft_lab "encrypted   sleeve" --no-fastdp --password bench-s3cret
use_lab n; weft_lab "encrypted   sleeve" --no-fastdp --password bench-s3cret
LABS="k f s e n"

# --- 5. Weave Net's encrypted sleeve, when a built weaver is at hand --------------------------
# start_weaver <host#> <flags...>: weaver on that host, from a fresh dir (its log: weaver.log).
start_weaver() {
    local i=$1 d="$LAB_DIR/go$1"; shift
    mkdir -p "$d"
    ( cd "$d" && exec env CHECKPOINT_DISABLE=1 ip netns exec "$(lab_ns "$i")" unshare --pid --fork \
        --kill-child --mount-proc "$WEAVE_REF_DIR/nlshim" "$WEAVE_REF_DIR/weaver" --port 6783 \
        --weave-bridge weave --datapath datapath --no-dns --http-addr 127.0.0.1:6784 \
        --status-addr 127.0.0.1:6782 --docker-api '' --db-prefix "$d/weave" "$@" ) >"$d/weaver.log" 2>&1 &
    MY_WEAVERS+=("$!")
}
if [ -x "${WEAVE_REF_DIR:-/nonexistent}/weaver" ] && [ -x "$WEAVE_REF_DIR/nlshim" ] \
    && command -v ethtool >/dev/null; then
    use_lab w
    lab_up 2
    start_weaver 1 --name 02:ac:00:00:00:01 --password bench-s3cret --ipalloc-range 10.32.0.0/12
    start_weaver 2 --name 02:ac:00:00:00:02 --password bench-s3cret --ipalloc-range 10.32.0.0/12 "$(lab_ip 1)"
    for i in 1 2; do
        lab_container "c$i"
        # `weft attach` needs no weft router: it plumbs into weaver's bridge.
        answers() { ip netns exec "$(lab_ns "$1")" curl -sf http://127.0.0.1:6784/status >/dev/null; }
        lab_wait 30 answers "$i" || { echo "weaver on host $i did not start" >&2; exit 1; }
        lab_weft "$i" attach "10.2.1.$i/24" "netns:${LAB}c$i" >/dev/null
        # As `weave attach` does: Weave Net's sleeve takes no offloaded frames (with them its
        # TCP stalls).
        lab_in "c$i" ethtool -K ethwe tx off >/dev/null
    done
    go_est() { ip netns exec "$(lab_ns 1)" curl -s http://127.0.0.1:6784/status/connections | grep -q "established encrypted"; }
    lab_wait 30 go_est || { echo "weaver: no encrypted connection" >&2; exit 1; }
    lab_wait 15 pings c1 10.2.1.2 || { echo "weaver: no ping" >&2; exit 1; }
    LABS="k f s e n w"
fi

# --- measurements, in turns ------------------------------------------------------------------
declare -A IP=([k]=10.250.0.2 [f]=10.2.1.2 [s]=10.2.1.2 [e]=10.2.1.2 [n]=10.2.1.2 [w]=10.2.1.2)
declare -A RTTS=() BWS=()
for r in 1 2 3 4 5; do
    for l in $LABS; do
        use_lab "$l"
        RTTS[$l]+=" $(rtt_ms c1 "${IP[$l]}")"
        iperf_mbps bw c2 "${IP[$l]}" c1 5; BWS[$l]+=" $bw"
        note_others "$l"
    done
done
for l in $LABS; do
    echo "  $l: bw runs:${BWS[$l]} Mbit/s; rtt runs:${RTTS[$l]} ms" >&2
done
# shellcheck disable=SC2086 # the run lists are meant to split
{
    k_bw=$(median ${BWS[k]}); f_bw=$(median ${BWS[f]}); s_bw=$(median ${BWS[s]})
    k_rtt=$(median ${RTTS[k]}); f_rtt=$(median ${RTTS[f]}); s_rtt=$(median ${RTTS[s]})
    e_bw=$(median ${BWS[e]}); e_rtt=$(median ${RTTS[e]})
    n_bw=$(median ${BWS[n]}); n_rtt=$(median ${RTTS[n]})
}
printf 'kernel vxlan: %.0f Mbit/s, rtt %.3f ms\n' "$k_bw" "$k_rtt"
fb=$(ratio "$f_bw" "$k_bw"); fr=$(ratio "$f_rtt" "$k_rtt")
sb=$(ratio "$s_bw" "$k_bw"); sr=$(ratio "$s_rtt" "$k_rtt")
printf 'weft fastdp:  %.0f Mbit/s (%.2f x kernel) %s, rtt %.3f ms (%.2f x)\n' \
    "$f_bw" "$fb" "$(verdict "$fb >= 0.90")" "$f_rtt" "$fr"
printf 'weft sleeve:  %.0f Mbit/s (%.2f x kernel) %s, rtt %.3f ms (%.2f x) %s\n' \
    "$s_bw" "$sb" "$(verdict "$sb >= 0.40")" "$s_rtt" "$sr" "$(verdict "$sr <= 3")"
printf 'weft encrypted sleeve (Weave-compatible): %.0f Mbit/s (%.2f x kernel, %.2f x weft sleeve), rtt %.3f ms (%.2f x)\n' \
    "$e_bw" "$(ratio "$e_bw" "$k_bw")" "$(ratio "$e_bw" "$s_bw")" "$e_rtt" "$(ratio "$e_rtt" "$k_rtt")"
nk=$(ratio "$n_bw" "$k_bw"); ns=$(ratio "$n_bw" "$s_bw"); nr=$(ratio "$n_rtt" "$k_rtt")
printf 'weft encrypted sleeve (weft peers, AES-256-GCM): %.0f Mbit/s (%.2f x kernel %s, %.2f x weft sleeve %s), rtt %.3f ms (%.2f x) %s\n' \
    "$n_bw" "$nk" "$(verdict "$nk >= 0.35")" "$ns" "$(verdict "$ns >= 0.75")" "$n_rtt" "$nr" "$(verdict "$nr <= 3")"
if [ -n "${BWS[w]:-}" ]; then
    # shellcheck disable=SC2086
    w_bw=$(median ${BWS[w]}); w_rtt=$(median ${RTTS[w]})
    we=$(ratio "$e_bw" "$w_bw")
    printf 'Weave Net 2.8.1 encrypted sleeve: %.0f Mbit/s, rtt %.3f ms; weft encrypted / Weave Net encrypted = %.2f x %s\n' \
        "$w_bw" "$w_rtt" "$we" "$(verdict "$we >= 10")"
fi

# --- 7. router memory during a long run over weft's own encrypted sleeve ---------------------
use_lab n
ip netns exec "${LAB}c2" timeout $((MEM_SECS + 30)) iperf3 -s -1 >/dev/null 2>&1 &
spid=$!; MY_PIDS=("$spid")
listening() { lab_in c2 ss -ltn | grep -q ':5201 '; }
lab_wait 10 listening || { echo "iperf3 server did not start" >&2; exit 1; }
ip netns exec "${LAB}c1" timeout $((MEM_SECS + 20)) iperf3 -c 10.2.1.2 -t "$MEM_SECS" -J >"$LAB_DIR/mem-iperf.json" &
cpid=$!; MY_PIDS+=("$cpid")
declare -a s1 s2
for ((t = 0; t <= MEM_SECS; t += 5)); do
    s1+=("$(rss_kb 1)"); s2+=("$(rss_kb 2)"); note_others memory
    if ((t + 5 <= MEM_SECS)); then sleep 5; fi
done
wait "$cpid" || { echo "memory run: iperf3 client failed" >&2; exit 1; }
wait "$spid" 2>/dev/null || true
MY_PIDS=()
m_bw=$(jq -r '.end.sum_received.bits_per_second / 1e6' "$LAB_DIR/mem-iperf.json")
mem_line() { # <host> <samples...>: "h1 6.1 -> 6.3 MB (max 6.4)"
    local h=$1; shift
    local first=$1 last=${*: -1} max=0 v
    for v in "$@"; do if ((v > max)); then max=$v; fi; done
    printf '%s %.1f -> %.1f MB (max %.1f)' "$h" "$(echo "$first/1024" | bc -l)" \
        "$(echo "$last/1024" | bc -l)" "$(echo "$max/1024" | bc -l)"
}
# grew <samples...>: the last sample exceeds the first by more than 10%.
grew() { local first=$1 last=${*: -1}; ((last * 100 > first * 110)); }
l1=$(mem_line h1 "${s1[@]}"); l2=$(mem_line h2 "${s2[@]}")
if grew "${s1[@]}" || grew "${s2[@]}"; then g="GROWTH > 10% MISS"; else g="growth ok PASS"; fi
printf 'encrypted sleeve %d s (%.0f Mbit/s): router RSS %s, %s; %s\n' "$MEM_SECS" "$m_bw" "$l1" "$l2" "$g"
echo "  samples (kB, every 5 s): h1 ${s1[*]}; h2 ${s2[*]}" >&2
if [ -n "$NOISY" ]; then
    echo "warning: other labs (w* namespaces) were running during: $(tr ' ' '\n' <<<"$NOISY" | sort -u | xargs echo) — figures are noisy" >&2
fi
