#!/usr/bin/env bash
# Quick start, part 2: the whole test suite, as CI runs it. Installs what the tests use: the build
# packages, PulseAudio + ALSA's pulse plugin for the headless "fake speaker" that cpal plays
# into (scripts/fake-speaker.sh), and sox and lame for the FLAC/MP3/Ogg test files. Then
# formatting, lints, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/packages.sh
need_rust
# One build, never rebuilt: no incremental caches (they are half again the build's disk).
export CARGO_INCREMENTAL=0
# The build and the tests need about 2.5 GB of disk (a fresh clone's run peaked at 1.6 GB:
# target/ 1.1, fuzz/target 0.5; cargo's registry 0.6 GB more, and the packages). Say so at
# the start rather than as a compiler's I/O error.
free_mb=$(df -Pm "${CARGO_TARGET_DIR:-.}" 2>/dev/null | awk 'NR == 2 { print $4 }') || true
if [ -n "$free_mb" ] && [ "$free_mb" -lt 2500 ]; then
    echo "warning: only ${free_mb} MB free for the build; the build and tests need about 2 500 MB (free some, or point CARGO_TARGET_DIR at a roomier disk)" >&2
fi
need_packages "${BUILD_PACKAGES[@]}" pulseaudio pulseaudio-utils libasound2-plugins alsa-utils \
    "${CODEC_TEST_PACKAGES[@]}"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# A short coverage-guided fuzz run of every target in fuzz/ (docs/fuzzing.md), counted with the
# tests; skipped, in one line, where cargo-fuzz cannot be had. AUDIOWIRE_FUZZ_RUNS=0 skips it.
if [ "${AUDIOWIRE_FUZZ_RUNS:-200000}" != 0 ]; then
    bash scripts/fuzz.sh "${AUDIOWIRE_FUZZ_RUNS:-200000}" 2>&1 | tee -a "$log"
fi
# audiowire over the real Linux Bluetooth stack in a qemu VM (scripts/btvm.sh, about 30 s plus
# its packages), counted with the tests. AUDIOWIRE_BTVM=0 skips it.
if [ "${AUDIOWIRE_BTVM:-1}" != 0 ]; then
    bash scripts/btvm.sh 2>&1 | tee -a "$log"
fi
# One closing line for the whole run (cargo's last line is a crate's doc-tests, often 0 of 0).
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
