#!/usr/bin/env bash
# Mesh benchmarks: (1) time from starting a second router to its connection being established
# (the log's "connection fully established") and to what a user sees: `status` showing
# "Peers: 2 (with 2 established connections)"; (2) resident memory of an idle router in a two-peer mesh. With WEAVE_REF_DIR pointing at a
# locally built Weave Net 2.8 router (weaver + nlshim), the same figures are measured for it in
# the same run and printed as ratios. Needs root. Usage: bench/mesh.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
cargo build --release -q -p weft
LAB="wb$(printf '%04x' $((RANDOM % 65536)))"; source scripts/lab.sh
RUNS=${1:-5}
trap lab_down EXIT
lab_up 2
LAB_HOSTS=2

now() { date +%s.%N; }
# Seconds between $1 (epoch) and the first log line of $2 containing $3 (RFC 3339 stamp first).
log_delay() {
    local t0=$1 log=$2 pat=$3 line ts
    line=$(grep -m1 -- "$pat" "$log") || return 1
    ts=$(awk '{print $1}' <<<"$line")
    echo "$(date -d "$ts" +%s.%N) - $t0" | bc -l
}
established() { grep -q "connection fully established" "$LAB_DIR/h2/run/weft.log"; }
VISIBLE="Peers: 2 (with 2 established connections)"
# Polls (every 10 ms, up to 10 s) until `cmd...` prints $VISIBLE; prints the seconds since $1.
visible_after() {
    local t0=$1 end; shift
    end=$(echo "$(now) + 10" | bc -l)
    until "$@" 2>/dev/null | grep -qF "$VISIBLE"; do
        [ "$(echo "$(now) > $end" | bc -l)" = 1 ] && return 1
        sleep 0.01
    done
    echo "$(now) - $t0" | bc -l
}

weft_times=() weft_visible=()
for r in $(seq "$RUNS"); do
    lab_weft 1 launch --nickname a >/dev/null
    rm -f "$LAB_DIR/h2/run/weft.log"
    t0=$(now)
    lab_weft 2 launch --nickname b "$(lab_ip 1)" >/dev/null
    weft_visible+=("$(visible_after "$t0" lab_weft 2 status)")
    lab_wait 10 established
    weft_times+=("$(log_delay "$t0" "$LAB_DIR/h2/run/weft.log" "connection fully established")")
    if [ "$r" = "$RUNS" ]; then
        lab_wait 10 bash -c "grep -q 'fully established' $LAB_DIR/h1/run/weft.log"
        sleep 2 # idle: let start-up allocations settle before reading RSS
        weft_rss=$(awk '/VmRSS/{print $2}' "/proc/$(cat "$LAB_DIR/h2/run/weft.pid")/status")
    fi
    # reset removes the bridge and VXLAN device too: every run (and weaver after us) starts
    # from a host without weft's devices.
    lab_weft 2 reset >/dev/null; lab_weft 1 reset >/dev/null
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
wt=$(median "${weft_times[@]}")
wv=$(median "${weft_visible[@]}")
printf 'weft: start -> connection established: median %.3f s over %d runs (%s)\n' "$wt" "$RUNS" "${weft_times[*]}"
printf 'weft: start -> status shows both connections established: median %.3f s (%s)\n' "$wv" "${weft_visible[*]}"
printf 'weft: idle router RSS: %.1f MB\n' "$(echo "$weft_rss/1024" | bc -l)"

# The weaver process among the descendants of $1 (it runs under unshare and nlshim).
weaver_of() {
    local c
    for c in $(pgrep -P "$1" || true); do
        if [ "$(cat "/proc/$c/comm" 2>/dev/null)" = weaver ]; then echo "$c"; return; fi
        weaver_of "$c"
    done
}
ref="${WEAVE_REF_DIR:-}"
if [ -n "$ref" ] && [ -x "$ref/weaver" ]; then
    go_times=() go_visible=()
    for r in $(seq "$RUNS"); do
        for i in 1 2; do
            d="$LAB_DIR/go$i-$r"; mkdir -p "$d"
            peer=(); [ "$i" = 2 ] && peer=("$(lab_ip 1)")
            [ "$i" = 2 ] && t0=$(now)
            ( cd "$d" && exec env CHECKPOINT_DISABLE=1 ip netns exec "$(lab_ns "$i")" unshare --pid --fork --kill-child --mount-proc \
                "$ref/nlshim" "$ref/weaver" --port 6783 --name "02:ac:00:00:00:0$i" --nickname "go$i" \
                --weave-bridge weave --datapath datapath --ipalloc-range 10.32.0.0/12 --no-dns \
                --http-addr 127.0.0.1:6784 --status-addr 127.0.0.1:6782 --docker-api '' \
                --db-prefix "$d/weave" "${peer[@]}" ) >"$d/weaver.log" 2>&1 &
            echo $! >"$d/pid"
            [ "$i" = 1 ] && lab_wait 10 ip netns exec "$(lab_ns 1)" curl -sf http://127.0.0.1:6784/status
        done
        d2="$LAB_DIR/go2-$r"
        go_visible+=("$(visible_after "$t0" ip netns exec "$(lab_ns 2)" curl -sf http://127.0.0.1:6784/status)")
        lab_wait 15 grep -q "connection fully established" "$d2/weaver.log"
        ts=$(grep -m1 "connection fully established" "$d2/weaver.log" | awk '{print $2" "$3}')
        go_times+=("$(echo "$(date -d "${ts//\//-}" +%s.%N) - $t0" | bc -l)")
        if [ "$r" = "$RUNS" ]; then
            sleep 2
            wpid=$(weaver_of "$(cat "$d2/pid")")
            go_rss=$(awk '/VmRSS/{print $2}' "/proc/$wpid/status")
        fi
        for i in 1 2; do kill -9 "$(cat "$LAB_DIR/go$i-$r/pid")" 2>/dev/null || true; done
        # weaver refuses to start on the bridge it left behind: remove its devices.
        for i in 1 2; do
            lab_wait 5 bash -c "! ip netns exec $(lab_ns "$i") ss -ltn | grep -q ':6784 '" || true
            for l in weave datapath vethwe-bridge vethwe-pcap vethwe-datapath; do
                ip -n "$(lab_ns "$i")" link del "$l" 2>/dev/null || true
            done
        done
    done
    gt=$(median "${go_times[@]}")
    gv=$(median "${go_visible[@]}")
    printf 'weave: start -> connection established: median %.3f s (%s)\n' "$gt" "${go_times[*]}"
    printf 'weave: start -> status shows both connections established: median %.3f s (%s)\n' "$gv" "${go_visible[*]}"
    printf 'weave: idle router RSS: %.1f MB\n' "$(echo "$go_rss/1024" | bc -l)"
    printf 'ratio weft/weave: establish time %.2f, visible %.2f, RSS %.2f\n' "$(echo "$wt/$gt" | bc -l)" "$(echo "$wv/$gv" | bc -l)" "$(echo "$weft_rss/$go_rss" | bc -l)"
fi
