#!/usr/bin/env bash
# IPAM benchmark, through Weave Net's HTTP API on a two-peer cluster (both routers launched with
# --ipalloc-range 10.32.0.0/12 --ipalloc-init consensus=2, host 2 joining host 1):
#   (1) one allocation once the ring exists (after GET /ring): p50/p99 of POST /ip/<id> and of
#       the DELETE /ip/<id> that follows it, over 2000 back-to-back pairs (distinct ids) and over
#       300 pairs spaced 10 ms apart (background persistence has finished by the next one);
#       each against a reference at the same pace: a request that does no IPAM work;
#   (2) the first allocation on a fresh cluster, consensus included: POST on host 1 to its
#       answer, both routers connected beforehand; median over 5 fresh clusters;
#   (3) the router's RSS before and after 100,000 allocate/release cycles, sampled every 10,000
#       (given up after 10 minutes); flat means growth < 10%.
# With WEAVE_REF_DIR pointing at a locally built Weave Net 2.8 router (weaver + nlshim), the same
# figures are measured for it in the same run and weft's are printed as ratios against them.
# Requests come from crates/weftd/examples/ipam_load.rs (one kept-alive connection).
# Needs root, curl, bc. Usage: bench/ipam.sh [--quick]   (--quick: 10x fewer of everything).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"

N_LAT=2000 N_SPACED=300 N_FIRST=5 N_CYCLES=100000 EVERY=10000 MAX_SECS=600
for a in "$@"; do
    case "$a" in
        --quick) N_LAT=200 N_SPACED=30 N_FIRST=3 N_CYCLES=10000 EVERY=1000 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in curl bc; do command -v "$c" >/dev/null || { echo "needs $c" >&2; exit 1; }; done
cargo build --release -q -p weft
cargo build --release -q -p weftd --example ipam_load
LOAD="$CARGO_TARGET_DIR/release/examples/ipam_load"

REF="${WEAVE_REF_DIR:-}"
if [ -n "$REF" ] && [ -x "$REF/weaver" ] && [ -x "$REF/nlshim" ]; then WEAVE=1; else WEAVE=0; fi

# Not "w...": lab_down removes every namespace whose name starts with its LAB (see dataplane.sh).
BASE="bi$(printf '%04x' $((RANDOM % 65536)))"
LAB="$BASE"; source scripts/lab.sh
RANGE=10.32.0.0/12
API=127.0.0.1:6784
MY_PIDS=()   # load clients and weavers (unshare's PID: --kill-child takes its PID namespace down)
cleanup() {
    local p
    for p in "${MY_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    MY_PIDS=()
    lab_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the two routers --------------------------------------------------------------------
# cluster_up <weft|weave>: a fresh two-host lab (fresh state dirs), both routers launched with
# consensus=2, host 2 joining host 1; returns once both say their connection is established.
cluster_up() {
    cleanup; lab_up 2
    local i peer
    for i in 1 2; do
        peer=(); [ "$i" = 2 ] && peer=("$(lab_ip 1)")
        if [ "$1" = weft ]; then
            lab_weft "$i" launch --nickname "h$i" --ipalloc-range "$RANGE" \
                --ipalloc-init consensus=2 "${peer[@]}" >/dev/null
        else
            weave_up "$i" "${peer[@]}"
        fi
    done
    for i in 1 2; do
        lab_wait 30 established "$1" "$i" || { echo "$1: host $i: no connection" >&2; return 1; }
    done
}
# weave_up <host#> [peer]: weaver in that host's namespace, from a fresh dir (see
# /work/shared/tools/weave-reference/README.md: nlshim, its own PID namespace, no Docker).
weave_up() {
    local i=$1 d="$LAB_DIR/go$1"; shift
    mkdir -p "$d"
    ( cd "$d" && exec env CHECKPOINT_DISABLE=1 ip netns exec "$(lab_ns "$i")" \
        unshare --pid --fork --kill-child --mount-proc \
        "$REF/nlshim" "$REF/weaver" --port 6783 --name "02:ac:00:00:00:0$i" --nickname "go$i" \
        --weave-bridge weave --datapath datapath --ipalloc-range "$RANGE" \
        --ipalloc-init consensus=2 --no-dns --http-addr "$API" --status-addr 127.0.0.1:6782 \
        --docker-api '' --db-prefix "$d/weave" "$@" ) >"$d/weaver.log" 2>&1 &
    MY_PIDS+=("$!"); disown "$!"  # killed by cleanup; no "Killed" notice from bash
    lab_wait 20 api "$i" status || { tail -20 "$d/weaver.log" >&2; echo "weaver $i did not start" >&2; return 1; }
}
api() { ip netns exec "$(lab_ns "$1")" curl -sf --max-time "${3:-2}" "http://$API/$2"; }
established() { api "$2" status/connections | grep -q established; }
# router_pid <weft|weave> <host#>: weft's from its pid file; weaver's by name and namespace.
router_pid() {
    if [ "$1" = weft ]; then cat "$LAB_DIR/h$2/run/weft.pid"; return; fi
    local p
    for p in $(pgrep -x weaver); do
        if [ "$(ip netns identify "$p" 2>/dev/null)" = "$(lab_ns "$2")" ]; then echo "$p"; return; fi
    done
    return 1
}
# load <host#> <outvar> <ipam_load args...>: the load client in that host's namespace.
load() {
    local i=$1 var=$2 p; shift 2
    ip netns exec "$(lab_ns "$i")" "$LOAD" "$@" >"$LAB_DIR/load.out" &
    p=$!; MY_PIDS+=("$p")
    wait "$p" || { echo "ipam_load $1 failed" >&2; return 1; }
    printf -v "$var" '%s' "$(cat "$LAB_DIR/load.out")"
}
field() { grep -o "$1=[^ ]*" <<<"$2" | tail -1 | cut -d= -f2; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
verdict() { [ "$(echo "$1" | bc -l)" = 1 ] && echo PASS || echo MISS; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }

ROUTERS=(weft); [ "$WEAVE" = 1 ] && ROUTERS+=(weave)
declare -A LAT SPACED FIRST MEM

# --- (1) and (3): one cluster per router ----------------------------------------------------
for r in "${ROUTERS[@]}"; do
    cluster_up "$r"
    api 1 ring 60 >/dev/null || { echo "$r: GET /ring failed" >&2; exit 1; }
    load 1 out latency "$API" "$N_LAT" 0 lat; LAT[$r]=$out
    load 1 out latency "$API" "$N_SPACED" 10 spaced; SPACED[$r]=$out
    pid=$(router_pid "$r" 1)
    load 1 out cycles "$API" "$N_CYCLES" "$EVERY" "$pid" "$MAX_SECS" mem; MEM[$r]=$out
    echo "  $r memory samples: $(grep -o 'rss_kb=[0-9]*' <<<"$out" | cut -d= -f2 | xargs echo) kB" >&2
done

# --- (2): fresh clusters, the routers in turns ----------------------------------------------
declare -A FIRSTS
for ((n = 1; n <= N_FIRST; n++)); do
    for r in "${ROUTERS[@]}"; do
        cluster_up "$r"
        load 1 out once "$API" first; FIRSTS[$r]+=" $(field ms "$out")"
    done
done
cleanup
for r in "${ROUTERS[@]}"; do
    # shellcheck disable=SC2086 # the run list is meant to split
    FIRST[$r]=$(median ${FIRSTS[$r]})
    echo "  $r first allocation runs (ms):${FIRSTS[$r]}" >&2
done

# --- report -------------------------------------------------------------------------------
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
# mem_summary <cycles output>: "10000 cycles in 3.1 s: 6.1 -> 6.3 MB (max 6.4), +3.2%".
mem_summary() {
    local s first last max=0 v done_
    s=$(grep -o 'rss_kb=[0-9]*' <<<"$1" | cut -d= -f2)
    first=$(head -1 <<<"$s"); last=$(tail -1 <<<"$s")
    for v in $s; do if ((v > max)); then max=$v; fi; done
    done_=$(grep '^cycles=' <<<"$1" | tail -1)
    printf '%s cycles in %s s: %.1f -> %.1f MB (max %.1f), %+.1f%%' \
        "$(field cycles "$done_")" "$(field secs "$done_")" "$(echo "$first/1024" | bc -l)" \
        "$(echo "$last/1024" | bc -l)" "$(echo "$max/1024" | bc -l)" \
        "$(echo "($last - $first) * 100 / $first" | bc -l)"
    if grep -q stopped=time-limit <<<"$1"; then printf ' (stopped at the %d s limit)' "$MAX_SECS"; fi
}
growth_ok() {
    local s; s=$(grep -o 'rss_kb=[0-9]*' <<<"$1" | cut -d= -f2)
    (($(tail -1 <<<"$s") * 100 < $(head -1 <<<"$s") * 110))
}
for r in "${ROUTERS[@]}"; do
    for kind in LAT SPACED; do
        o=${LAT[$r]} label="back-to-back x$N_LAT"
        [ "$kind" = SPACED ] && o=${SPACED[$r]} label="every 10 ms x$N_SPACED"
        line=$(printf '%-5s allocate %-18s p50 %.3f ms p99 %.3f ms; delete p50 %.3f ms p99 %.3f ms' \
            "$r" "($label)" "$(field alloc_p50_ms "$o")" "$(field alloc_p99_ms "$o")" \
            "$(field delete_p50_ms "$o")" "$(field delete_p99_ms "$o")")
        if [ "$r" = weft ]; then
            line+=" $(verdict "$(field alloc_p50_ms "$o") <= 0.2 && $(field alloc_p99_ms "$o") <= 2")"
            # Spaced requests also pay the machine's wake-up from idle, which the reference
            # (a request with no IPAM work, same pace) measures: IPAM's own share is the rest.
            [ "$kind" = SPACED ] && line+=" (IPAM's share p50 $(printf '%.3f' "$(echo "$(field alloc_p50_ms "$o") - $(field ref_p50_ms "$o")" | bc -l)") ms: $(verdict "$(field alloc_p50_ms "$o") - $(field ref_p50_ms "$o") <= 0.2"))"
        fi
        echo "$line"
        printf '%-5s   reference: GET of an id holding nothing, same pace: p50 %.3f ms p99 %.3f ms\n' \
            "$r" "$(field ref_p50_ms "$o")" "$(field ref_p99_ms "$o")"
    done
    line=$(printf '%-5s first allocation on a fresh cluster (consensus): median %.1f ms over %d' \
        "$r" "${FIRST[$r]}" "$N_FIRST")
    [ "$r" = weft ] && line+=" $(verdict "${FIRST[$r]} <= 30")"
    echo "$line"
    if growth_ok "${MEM[$r]}"; then g="flat PASS"; else g="GROWTH >= 10% MISS"; fi
    echo "$(printf '%-5s' "$r") router RSS over $(mem_summary "${MEM[$r]}"); $g"
done
if [ "$WEAVE" = 1 ]; then
    # latency_ratios <LAT|SPACED>: weft's four latency figures over weave's.
    latency_ratios() {
        local -n m=$1
        local f
        for f in alloc_p50_ms alloc_p99_ms delete_p50_ms delete_p99_ms; do
            ratio "$(field "$f" "${m[weft]}")" "$(field "$f" "${m[weave]}")"; echo
        done | xargs printf 'alloc p50 %s p99 %s, delete p50 %s p99 %s'
    }
    echo "ratio weft/weave: back-to-back $(latency_ratios LAT)"
    echo "ratio weft/weave: spaced $(latency_ratios SPACED)"
    last_rss() { grep -o 'rss_kb=[0-9]*' <<<"$1" | tail -1 | cut -d= -f2; }
    printf 'ratio weft/weave: first allocation %s, RSS after the cycles %s\n' \
        "$(ratio "${FIRST[weft]}" "${FIRST[weave]}")" \
        "$(ratio "$(last_rss "${MEM[weft]}")" "$(last_rss "${MEM[weave]}")")"
else
    echo "weave: skipped (set WEAVE_REF_DIR to a dir with a locally built weaver and nlshim)"
fi
