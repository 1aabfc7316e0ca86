#!/usr/bin/env bash
# DNS benchmark: dnsperf in a "container" namespace (eth0 172.17.0.2/16 on its host's docker0)
# querying the router's DNS server on 172.17.0.1:53 (UDP), with 50 names registered in
# weave.local through the HTTP API (PUT /name/<id>/<ip>, one address each). Query mix: an A
# query for each of the 50 names and a PTR query for 10 of their addresses (1 in 6 is a PTR).
#   (1) latency, paced at 2000 queries/s for 10 s (-v, every query's latency): mean and p99;
#   (2) saturation for 60 s: queries per second, dnsperf's mean latency, the router's CPU
#       seconds over the run (utime+stime of /proc/<pid>/stat), queries per CPU-second, and its
#       RSS before/after (flat means growth < 10%). The client is one dnsperf thread (the other
#       core is the router's), so a router that needs less than a core leaves dnsperf the limit:
#       then q/s is the client's, and queries per CPU-second the router's figure;
#   (3) forwarding to a silent upstream for 60 s at 1000 queries/s (names outside the domain;
#       the router's --resolv-conf names an address in a namespace that drops every packet):
#       the router's RSS before/peak/after must stay flat; also how many answers (SERVFAIL) came
#       at once rather than after the router's upstream timeout.
# The floor: (1) and (2) on a UDP echo that does no DNS work (crates/weftd/examples/dns_echo.rs),
# the kernel's share of a query, which is charged to the server (the veth delivery included).
# With WEAVE_REF_DIR pointing at a locally built Weave Net 2.8 router (weaver + nlshim), WeaveDNS
# is measured in the same run and weft's figures are printed as ratios against its. Each
# server has a host namespace of its own, all run at once; (1) and (2) go to them in turns, in
# 5 rounds (2 s and 12 s a round), so the machine's other load falls on all of them alike.
# Needs root, dig, bc; installs dnsperf with apt-get when missing.
# Usage: bench/dns.sh [--quick]   (--quick: every phase ~10x shorter).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"

ROUNDS=5 LAT_QPS=2000 LAT_ROUND=2 SAT_ROUND=12 FWD_QPS=1000 FWD_SECS=60
for a in "$@"; do
    case "$a" in
        --quick) ROUNDS=1 LAT_ROUND=1 SAT_ROUND=6 FWD_SECS=6 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in dig bc curl; do command -v "$c" >/dev/null || { echo "needs $c (scripts/deps.sh)" >&2; exit 1; }; done
if ! command -v dnsperf >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends dnsperf >/dev/null
fi
cargo build --release -q -p weft
cargo build --release -q -p weftd --example dns_echo
ECHO="$CARGO_TARGET_DIR/release/examples/dns_echo"

REF="${WEAVE_REF_DIR:-}"
if [ -n "$REF" ] && [ -x "$REF/weaver" ] && [ -x "$REF/nlshim" ]; then WEAVE=1; else WEAVE=0; fi

# Not "w...": lab_down removes every namespace whose name starts with its LAB (see dataplane.sh).
LAB="bd$(printf '%04x' $((RANDOM % 65536)))"; source scripts/lab.sh
API=127.0.0.1:6784
DNS=172.17.0.1
N_NAMES=50 N_PTR=10
UPSTREAM=$(lab_ip 250)   # the silent upstream
MY_PIDS=()   # dnsperf runs and weavers (unshare's PID: --kill-child takes its PID namespace down)
cleanup() {
    local p
    for p in "${MY_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    MY_PIDS=()
    lab_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the lab: host 1 runs weft, host 2 WeaveDNS, host 3 the floor; each host has a container
# c<host#> on its docker0 ---------------------------------------------------------------------------
lab_up 3
for i in 1 2 3; do
    lab_container "c$i"
    lab_docker_eth0 "$i" "c$i" 172.17.0.2
done
# The silent upstream: an address on the underlay whose namespace drops everything it receives
# (no ICMP unreachable either, so a forward can only end by the router's own timeout).
lab_add_host 250
ip netns exec "$(lab_ns 250)" nft -f - <<NFT
table inet ${LAB}drop {
    chain in { type filter hook input priority 0; policy drop; }
}
NFT
RESOLV="$LAB_DIR/resolv.conf"
printf 'nameserver %s\n' "$UPSTREAM" >"$RESOLV"

# Query files: A for every name, PTR for the first N_PTR addresses; forwarded: outside the domain.
QUERIES="$LAB_DIR/queries" FWD_QUERIES="$LAB_DIR/fwd-queries"
name_ip() { echo "10.32.$(($1 / 200)).$(($1 % 200 + 1))"; }
for ((n = 1; n <= N_NAMES; n++)); do echo "bdweb$n.weave.local A"; done >"$QUERIES"
for ((n = 1; n <= N_PTR; n++)); do
    IFS=. read -r a b c d <<<"$(name_ip "$n")"
    echo "$d.$c.$b.$a.in-addr.arpa PTR"
done >>"$QUERIES"
for ((n = 1; n <= 20; n++)); do echo "bdfwd$n.example.com A"; done >"$FWD_QUERIES"

api() { ip netns exec "$(lab_ns "$1")" curl -sf --max-time 2 "${@:3}" "http://$API/$2"; }
# register <host#>: the 50 names, each under its own container id, as Weave's proxy would.
register() {
    local n
    for ((n = 1; n <= N_NAMES; n++)); do
        api "$1" "name/bdc$(printf '%06d' "$n")/$(name_ip "$n")" -X PUT -d "fqdn=bdweb$n.weave.local." ||
            { echo "host $1: PUT /name failed for bdweb$n" >&2; return 1; }
    done
}
# answers <host#>: the container gets the right A and PTR answers (one try, 1 s).
answers() {
    local ns="${LAB}c$1" a p
    a=$(ip netns exec "$ns" dig +short +time=1 +tries=1 "@$DNS" bdweb7.weave.local A) || true
    p=$(ip netns exec "$ns" dig +short +time=1 +tries=1 "@$DNS" -x "$(name_ip 7)") || true
    [ "$a" = "$(name_ip 7)" ] && [ "$p" = bdweb7.weave.local. ]
}

# weft_up: weft on host 1 serving DNS on docker0's address, upstream from our resolv.conf.
weft_up() {
    if ! lab_weft 1 launch --nickname h1 --ipalloc-range 10.32.0.0/12 \
        --dns-listen-address "$DNS:53" --resolv-conf "$RESOLV" >"$LAB_DIR/weft-launch.out" 2>&1; then
        cat "$LAB_DIR/weft-launch.out" >&2
        echo "weft: launch with --dns-listen-address/--resolv-conf failed (no DNS server in this weft?)" >&2
        return 1
    fi
    lab_wait 20 api 1 status || { echo "weft: no HTTP API on $API" >&2; return 1; }
}
# weave_up: weaver on host 2 per /work/shared/tools/weave-reference/README.md (nlshim, its own PID
# namespace, no Docker, a fresh dir), DNS on docker0's address, upstream from our resolv.conf.
# The two routers never peer: neither is given a peer to start from.
WEAVE_UNSHARE=
weave_up() {
    local d="$LAB_DIR/go2"
    mkdir -p "$d"
    ( cd "$d" && exec env CHECKPOINT_DISABLE=1 ip netns exec "$(lab_ns 2)" \
        unshare --pid --fork --kill-child --mount-proc \
        "$REF/nlshim" "$REF/weaver" --port 6783 --name 02:ac:00:00:00:02 --nickname go2 \
        --weave-bridge weave --datapath datapath --ipalloc-range 10.32.0.0/12 \
        --dns-listen-address "$DNS:53" --resolv-conf "$RESOLV" \
        --http-addr "$API" --status-addr 127.0.0.1:6782 \
        --docker-api '' --db-prefix "$d/weave" ) >"$d/weaver.log" 2>&1 &
    WEAVE_UNSHARE=$!; MY_PIDS+=("$WEAVE_UNSHARE"); disown "$WEAVE_UNSHARE"
    lab_wait 20 api 2 status || { tail -20 "$d/weaver.log" >&2; echo "weaver did not start" >&2; return 1; }
}
# The weaver process among the descendants of $1 (it runs under unshare and nlshim).
weaver_of() {
    local c
    for c in $(pgrep -P "$1" || true); do
        if [ "$(cat "/proc/$c/comm" 2>/dev/null)" = weaver ]; then echo "$c"; return; fi
        weaver_of "$c"
    done
}

TCK=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }  # utime stime
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
field() { grep -o "$1=[^ ]*" <<<"$2" | tail -1 | cut -d= -f2; }
# dnsperf_stat <output file> <label>: one figure of dnsperf's summary.
dnsperf_stat() {
    case "$2" in
        sent) awk '/Queries sent:/{print $3}' "$1" ;;
        completed) awk '/Queries completed:/{print $3}' "$1" ;;
        lost) awk '/Queries lost:/{print $3}' "$1" ;;
        runtime) awk '/Run time \(s\):/{print $4}' "$1" ;;
        avg) awk '/Average Latency/{print $4}' "$1" ;;
        rcodes) sed -n 's/^ *Response codes: *//p' "$1" ;;
    esac
}

# run_load <host#> <pid> <secs> <out> <dnsperf args...>: dnsperf in that host's container for at
# most <secs> (and at most 1,000,000 passes over its query file), sampling the server's RSS
# every second; sets LOADRES to "user_s= sys_s= rss_before= rss_peak= rss_after=" and
# LOADSAMPLES to the RSS samples (kB, one a second), and leaves dnsperf's output in <out>.
# (Not meant for $(...): the dnsperf PID must reach MY_PIDS.)
LOADRES= LOADSAMPLES=()
run_load() {
    local host=$1 pid=$2 secs=$3 out=$4 u0 s0 u1 s1 r0 r1 peak p v
    shift 4
    read -r u0 s0 < <(cpu_ticks "$pid"); r0=$(rss_kb "$pid"); peak=$r0
    LOADSAMPLES=()
    # -l and -n bound it; `timeout` is the backstop should dnsperf hang.
    ip netns exec "${LAB}c$host" timeout -s KILL $((secs + 60)) \
        dnsperf -s "$DNS" -l "$secs" -n 1000000 "$@" >"$out" 2>&1 &
    p=$!; MY_PIDS+=("$p")
    while kill -0 "$p" 2>/dev/null; do
        v=$(rss_kb "$pid" 2>/dev/null) || { echo "server (pid $pid) died under load" >&2; return 1; }
        ((v > peak)) && peak=$v
        LOADSAMPLES+=("$v")
        sleep 1
    done
    wait "$p" || { tail -5 "$out" >&2; echo "dnsperf failed" >&2; return 1; }
    read -r u1 s1 < <(cpu_ticks "$pid"); r1=$(rss_kb "$pid"); ((r1 > peak)) && peak=$r1
    LOADSAMPLES+=("$r1")
    LOADRES="user_s=$(echo "($u1 - $u0) / $TCK" | bc -l) sys_s=$(echo "($s1 - $s0) / $TCK" | bc -l)"
    LOADRES+=" rss_before=$r0 rss_peak=$peak rss_after=$r1"
}
# percentile <p> <file of numbers>: nearest-rank percentile.
percentile() { sort -g "$2" | awk -v p="$1" '{v[NR] = $1} END {i = int(NR * p / 100 + 0.999999); if (i < 1) i = 1; print v[i]}'; }
mean() { awk '{s += $1} END {if (NR) printf "%.9f", s / NR}' "$1"; }
# samples_mb <kB...>: about 12 of them, evenly spaced, in MB.
samples_mb() {
    local v=("$@") n=$# step i
    step=$(((n + 11) / 12))
    for ((i = 0; i < n; i += step)); do printf '%.1f ' "$(echo "${v[i]} / 1024" | bc -l)"; done
    printf '(one every %d s of load)' "$step"
}
add() { RES[$1]=$(echo "${RES[$1]:-0} + $2" | bc -l); }

declare -A RES HOST PID   # RES[<server>.<figure>]
# lat_round <server>: one round of (1); every answered query's latency (s) goes to lat.s.
lat_round() {
    local r=$1 d="$LAB_DIR/$1"
    run_load "${HOST[$r]}" "${PID[$r]}" "$LAT_ROUND" "$d/lat.out" -d "$QUERIES" -Q "$LAT_QPS" \
        -c 1 -t 2 -v
    awk '$1 == ">" && $2 != "T" {print $NF}' "$d/lat.out" >>"$d/lat.s"
    add "$r.lat_lost" "$(dnsperf_stat "$d/lat.out" lost)"
}
# sat_round <server>: one round of (2), many queries in flight from several sockets; one dnsperf
# thread, so the client takes at most one of the machine's cores. Sums the rounds' figures.
declare -A SAMPLES
sat_round() {
    local r=$1 d="$LAB_DIR/$1" done_
    run_load "${HOST[$r]}" "${PID[$r]}" "$SAT_ROUND" "$d/sat.out" -d "$QUERIES" -c 8 -T 1 -q 500 -t 2
    done_=$(dnsperf_stat "$d/sat.out" completed)
    add "$r.sat_done" "$done_"
    add "$r.sat_lost" "$(dnsperf_stat "$d/sat.out" lost)"
    add "$r.sat_secs" "$(dnsperf_stat "$d/sat.out" runtime)"
    add "$r.sat_lat_sum" "$done_ * $(dnsperf_stat "$d/sat.out" avg)"
    add "$r.sat_user" "$(field user_s "$LOADRES")"
    add "$r.sat_sys" "$(field sys_s "$LOADRES")"
    [ -n "${RES[$r.sat_rss0]:-}" ] || RES[$r.sat_rss0]=$(field rss_before "$LOADRES")
    RES[$r.sat_rss1]=$(field rss_after "$LOADRES")
    SAMPLES[$r.sat]+=" ${LOADSAMPLES[*]}"
    grep -q 'NOERROR [0-9]* (100.00%)' "$d/sat.out" ||
        echo "  $r: not every answer was NOERROR: $(dnsperf_stat "$d/sat.out" rcodes)" >&2
}
# forward <router>: (3), dnsperf waits longer than WeaveDNS's 5 s upstream timeout, so
# answers the router gives up with (SERVFAIL) still count.
forward() {
    local r=$1 d="$LAB_DIR/$1"
    run_load "${HOST[$r]}" "${PID[$r]}" "$FWD_SECS" "$d/fwd.out" -d "$FWD_QUERIES" -Q "$FWD_QPS" \
        -c 4 -q $((FWD_QPS * 10)) -t 8 -v
    RES[$r.fwd_sent]=$(dnsperf_stat "$d/fwd.out" sent)
    RES[$r.fwd_done]=$(dnsperf_stat "$d/fwd.out" completed)
    RES[$r.fwd_rcodes]=$(dnsperf_stat "$d/fwd.out" rcodes)
    # How soon the router gave up: at once (a bound on forwards in flight) or by its timeout.
    RES[$r.fwd_fast]=$(awk '$1 == ">" && $2 != "T" && $NF < 1 {n++} END {print n + 0}' "$d/fwd.out")
    RES[$r.fwd_avg]=$(dnsperf_stat "$d/fwd.out" avg)
    RES[$r.fwd_cpu]=$(echo "$(field user_s "$LOADRES") + $(field sys_s "$LOADRES")" | bc -l)
    RES[$r.fwd_rss0]=$(field rss_before "$LOADRES") RES[$r.fwd_rss1]=$(field rss_after "$LOADRES")
    RES[$r.fwd_rsspk]=$(field rss_peak "$LOADRES")
    echo "  $r RSS while forwarding (MB): $(samples_mb "${LOADSAMPLES[@]}")" >&2
}

# --- the servers ---------------------------------------------------------------------------------
SERVERS=() ROUTERS=() FAILED=()
if weft_up && register 1 && { lab_wait 10 answers 1 || { echo "weft: no DNS answers on $DNS:53" >&2; false; }; }; then
    HOST[weft]=1 PID[weft]=$(cat "$LAB_DIR/h1/run/weft.pid")
    ROUTERS+=(weft)
else
    FAILED+=(weft)
    echo "weft: FAILED to set up its DNS server; its half is skipped" >&2
fi
if [ "$WEAVE" = 1 ]; then
    weave_up
    register 2
    lab_wait 10 answers 2 || { echo "weave: no DNS answers on $DNS:53" >&2; exit 1; }
    HOST[weave]=2 PID[weave]=$(weaver_of "$WEAVE_UNSHARE")
    [ -n "${PID[weave]}" ] || { echo "weave: no weaver process under $WEAVE_UNSHARE" >&2; exit 1; }
    ROUTERS+=(weave)
fi
ip netns exec "$(lab_ns 3)" "$ECHO" "$DNS:53" $((ROUNDS * (LAT_ROUND + SAT_ROUND) * 3 + 600)) &
HOST[floor]=3 PID[floor]=$!; MY_PIDS+=("${PID[floor]}"); disown "${PID[floor]}"
lab_wait 10 ip netns exec "${LAB}c3" dig +time=1 +tries=1 "@$DNS" bdfloor.weave.local ||
    { echo "dns_echo does not answer" >&2; exit 1; }
SERVERS=("${ROUTERS[@]}" floor)
for r in "${SERVERS[@]}"; do mkdir -p "$LAB_DIR/$r"; RES[$r.rss_idle]=$(rss_kb "${PID[$r]}"); done

# --- (1) and (2) in turns, then (3) router by router ------------------------------------------------
for ((k = 1; k <= ROUNDS; k++)); do for r in "${SERVERS[@]}"; do lat_round "$r"; done; done
for ((k = 1; k <= ROUNDS; k++)); do for r in "${SERVERS[@]}"; do sat_round "$r"; done; done
for r in "${SERVERS[@]}"; do
    d="$LAB_DIR/$r"
    RES[$r.lat_n]=$(wc -l <"$d/lat.s")
    RES[$r.lat_mean]=$(echo "$(mean "$d/lat.s") * 1000" | bc -l)
    RES[$r.lat_p99]=$(echo "$(percentile 99 "$d/lat.s") * 1000" | bc -l)
    RES[$r.sat_qps]=$(echo "${RES[$r.sat_done]} / ${RES[$r.sat_secs]}" | bc -l)
    RES[$r.sat_avg]=$(echo "${RES[$r.sat_lat_sum]} * 1000 / ${RES[$r.sat_done]}" | bc -l)
    RES[$r.sat_cpu]=$(echo "${RES[$r.sat_user]} + ${RES[$r.sat_sys]}" | bc -l)
    RES[$r.sat_qpcpu]=$(echo "${RES[$r.sat_done]} / ${RES[$r.sat_cpu]}" | bc -l)
    # shellcheck disable=SC2086 # the sample list is meant to split
    [ "$r" = floor ] || echo "  $r RSS under saturation (MB): $(samples_mb ${SAMPLES[$r.sat]})" >&2
done
for r in "${ROUTERS[@]}"; do forward "$r"; done
cleanup

# --- report -------------------------------------------------------------------------------------
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
mb() { printf '%.1f' "$(echo "$1 / 1024" | bc -l)"; }
growth() { printf '%+.1f%%' "$(echo "($2 - $1) * 100 / $1" | bc -l)"; }
flat() { if (($2 * 100 < $1 * 110)); then echo "flat"; else echo "GROWTH >= 10%"; fi; }
us_per_query() { echo "1000000 / ${RES[$1.sat_qpcpu]}" | bc -l; }
SAT_SECS=$((ROUNDS * SAT_ROUND))
for r in floor "${ROUTERS[@]}"; do
    label=$r; [ "$r" = floor ] && label="floor (a UDP echo, no DNS work)"
    printf '%s latency at %d q/s, %d s (%d queries, %.0f lost): mean %.3f ms, p99 %.3f ms\n' \
        "$label" "$LAT_QPS" $((ROUNDS * LAT_ROUND)) "${RES[$r.lat_n]}" "${RES[$r.lat_lost]}" \
        "${RES[$r.lat_mean]}" "${RES[$r.lat_p99]}"
    printf '%s saturated %d s: %.0f q/s, mean latency %.3f ms, %.0f completed (%.0f lost)\n' "$r" \
        "$SAT_SECS" "${RES[$r.sat_qps]}" "${RES[$r.sat_avg]}" "${RES[$r.sat_done]}" "${RES[$r.sat_lost]}"
    line=$(printf '%s   CPU %.2f s (user %.2f, system %.2f): %.0f queries per CPU-second, %.2f us a query' \
        "$r" "${RES[$r.sat_cpu]}" "${RES[$r.sat_user]}" "${RES[$r.sat_sys]}" "${RES[$r.sat_qpcpu]}" \
        "$(us_per_query "$r")")
    [ "$r" = floor ] || line+=$(printf ' (%.2f above the floor)' "$(echo "$(us_per_query "$r") - $(us_per_query floor)" | bc -l)")
    echo "$line"
    [ "$r" = floor ] && continue
    printf '%s   RSS idle %s MB; before %s MB, after %s MB, %s: %s\n' "$r" \
        "$(mb "${RES[$r.rss_idle]}")" "$(mb "${RES[$r.sat_rss0]}")" "$(mb "${RES[$r.sat_rss1]}")" \
        "$(growth "${RES[$r.sat_rss0]}" "${RES[$r.sat_rss1]}")" \
        "$(flat "${RES[$r.sat_rss0]}" "${RES[$r.sat_rss1]}")"
    printf '%s forwarding to a silent upstream %d s at %d q/s: %s sent, %s answered (%s), CPU %.2f s\n' \
        "$r" "$FWD_SECS" "$FWD_QPS" "${RES[$r.fwd_sent]}" "${RES[$r.fwd_done]}" \
        "${RES[$r.fwd_rcodes]:-none}" "${RES[$r.fwd_cpu]}"
    printf '%s   %s answered within 1 s, the rest after the upstream timeout; mean %.3f s\n' "$r" \
        "${RES[$r.fwd_fast]}" "${RES[$r.fwd_avg]:-0}"
    printf '%s   RSS before %s MB, after %s MB (peak %s), %s: %s\n' "$r" \
        "$(mb "${RES[$r.fwd_rss0]}")" "$(mb "${RES[$r.fwd_rss1]}")" "$(mb "${RES[$r.fwd_rsspk]}")" \
        "$(growth "${RES[$r.fwd_rss0]}" "${RES[$r.fwd_rss1]}")" \
        "$(flat "${RES[$r.fwd_rss0]}" "${RES[$r.fwd_rss1]}")"
done
verdict() { [ "$(echo "$1" | bc -l)" = 1 ] && echo PASS || echo MISS; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
if [ "${#ROUTERS[@]}" = 2 ]; then
    q=$(ratio "${RES[weft.sat_qpcpu]}" "${RES[weave.sat_qpcpu]}")
    m=$(ratio "${RES[weft.lat_mean]}" "${RES[weave.lat_mean]}")
    p=$(ratio "${RES[weft.lat_p99]}" "${RES[weave.lat_p99]}")
    echo "ratio weft/weave: queries per CPU-second $q $(verdict "$q >= 3")," \
        "saturated q/s $(ratio "${RES[weft.sat_qps]}" "${RES[weave.sat_qps]}")," \
        "saturated mean latency $(ratio "${RES[weft.sat_avg]}" "${RES[weave.sat_avg]}")"
    echo "ratio weft/weave: CPU a query above the floor (the DNS work itself)" \
        "$(ratio "$(echo "$(us_per_query weft) - $(us_per_query floor)" | bc -l)" \
            "$(echo "$(us_per_query weave) - $(us_per_query floor)" | bc -l)")"
    echo "ratio weft/weave: paced latency mean $m $(verdict "$m < 1"), p99 $p $(verdict "$p < 1")"
    echo "ratio weft/weave: RSS after saturation $(ratio "${RES[weft.sat_rss1]}" "${RES[weave.sat_rss1]}")," \
        "after forwarding $(ratio "${RES[weft.fwd_rss1]}" "${RES[weave.fwd_rss1]}")"
elif [ "$WEAVE" = 0 ]; then
    echo "weave: skipped (set WEAVE_REF_DIR to a dir with a locally built weaver and nlshim)"
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "FAILED: ${FAILED[*]} (see the messages above)"
    exit 1
fi
