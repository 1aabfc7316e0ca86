#!/bin/sh
# Runs each named target (default: every target) for SECONDS_PER_TARGET seconds (default 600),
# one at a time, into a scratch corpus /tmp/corpus-<target> seeded from corpus/<target>, and
# keeps libFuzzer's output in /tmp/fuzz-<target>.log. Needs cargo-fuzz; run from anywhere.
set -u
cd "$(dirname "$0")/.." || exit 1
secs=${SECONDS_PER_TARGET:-600}
[ $# -gt 0 ] || set -- $(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -v '^weft-fuzz$')
for t in "$@"; do
    mkdir -p "/tmp/corpus-$t"
    case $t in form_pairs | template) features="--features weftd" ;; *) features="" ;; esac
    # shellcheck disable=SC2086
    RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz run $features "$t" "/tmp/corpus-$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -timeout=30 -print_final_stats=1 \
        >"/tmp/fuzz-$t.log" 2>&1
    echo "$t: exit $? $(date -u +%H:%M:%S)"
done
