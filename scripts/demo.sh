#!/usr/bin/env bash
# Quick start, part 1: build audiowire and run its demo (a bundled clip streamed over loopback TCP
# and played on the default sound device; without one, written to a WAV file).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/packages.sh
need_rust
need_packages "${BUILD_PACKAGES[@]}"
exec cargo run --release --locked --quiet -p audiowire-cli -- demo "$@"
