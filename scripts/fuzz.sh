#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-fuzz (libFuzzer): every target in fuzz/, from its kept
# corpus (fuzz/corpus/TARGET, read only: what the fuzzer finds goes to a temporary folder), for
# a bounded number of executions each. See docs/fuzzing.md.
#
#   scripts/fuzz.sh            200 000 executions per target (what scripts/test.sh runs)
#   scripts/fuzz.sh 5000000    the long run whose figures docs/fuzzing.md gives
#   FUZZ_TARGETS="pystruct" scripts/fuzz.sh 100000
#
# It prints one cargo-style line per target and a `test result:` line, so scripts/test.sh counts
# the targets with the tests. Where cargo-fuzz is not installed it tries `cargo install
# cargo-fuzz` (crates.io; no nightly toolchain is needed: the targets build with
# `--sanitizer none`, whose flags are all stable); if that fails too, it says the fuzzing was
# skipped and exits 0. A crash, a failed check or a leak in a target fails it (exit 1), with the
# input that did it in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200000}
# Per target, whatever the count: the suite must stay short.
max_time=${FUZZ_MAX_TIME:-60}
targets=${FUZZ_TARGETS:-"frame_decoder message_decode udp_datagram pystruct wav_source"}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is not installed; installing it from crates.io"
    if ! timeout 300 cargo install cargo-fuzz --locked --quiet; then
        echo "fuzz: skipped (cargo-fuzz could not be installed here)"
        exit 0
    fi
fi

started=$(date +%s)
if ! build_log=$(cargo fuzz build --sanitizer none 2>&1); then
    echo "$build_log" | tail -30
    echo "fuzz: the targets do not build"
    exit 1
fi
echo "fuzz: targets built in $(($(date +%s) - started)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
for t in $targets; do
    mkdir -p "$work/$t" "fuzz/artifacts/$t"
    t0=$(date +%s%N)
    # -rss_limit_mb: an input that makes a target hold more than 512 MiB is a failure;
    # -max_len: inputs up to 64 KiB (a whole WAV header and some data; records at their limit).
    if cargo fuzz run --sanitizer none "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -runs="$runs" -max_total_time="$max_time" -rss_limit_mb=512 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$work/$t.log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
        secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
        cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -1)
        echo "test fuzz::$t ... ok (${execs:-?} executions in $secs s, $cov, corpus $(ls "$work/$t" | wc -l) new)"
        passed=$((passed + 1))
    else
        tail -40 "$work/$t.log"
        echo "test fuzz::$t ... FAILED (see fuzz/artifacts/$t/)"
        failed=$((failed + 1))
    fi
done
echo "test result: $([ $failed -eq 0 ] && echo ok || echo FAILED). $passed passed; $failed failed; 0 ignored; 0 measured; 0 filtered out; finished in $(($(date +%s) - started))s"
[ $failed -eq 0 ]
