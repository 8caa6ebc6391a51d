#!/usr/bin/env bash
# Quick start, part 2: the whole test suite, as CI runs it. Installs what the tests use: the build
# packages, and PulseAudio + ALSA's pulse plugin for the headless "fake speaker" that cpal plays
# into (scripts/fake-speaker.sh). Then formatting, lints, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/packages.sh
need_rust
need_packages "${BUILD_PACKAGES[@]}" pulseaudio pulseaudio-utils libasound2-plugins alsa-utils
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
