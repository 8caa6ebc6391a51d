# Sourced by demo.sh and test.sh: installs Debian/Ubuntu packages that are missing, with apt-get
# (through sudo when not root). Packages already installed cost nothing: no apt-get update.
need_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "audiowire: needs these packages (or your system's equivalents): ${missing[*]}" >&2
        return 1
    fi
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

need_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "audiowire: needs Rust (cargo); install it from https://rustup.rs and run this again" >&2
        return 1
    fi
}

# What building audiowire needs: a C toolchain, pkg-config and ALSA's headers for cpal, cmake
# for the Opus codec.
BUILD_PACKAGES=(build-essential pkg-config libasound2-dev cmake)

# What the format tests add: sox (with its FLAC and Ogg Vorbis handlers) and lame, which make
# FLAC, Ogg and MP3 files from the test clips at test time (test-audio/make-encoded.sh).
CODEC_TEST_PACKAGES=(sox libsox-fmt-base lame)

# What the peer lab (benches/peer-lab/run.sh) adds: a JACK server and its Python client for the
# measuring harness, libjack's headers for audiowire's `jack` feature (cpal's JACK host), ALSA's
# jack plugin, and the peers measured beside audiowire. Not needed to build or test.
LAB_PACKAGES=(jackd2 libjack-jackd2-dev python3-jack-client python3-numpy libasound2-plugins
    jacktrip trx gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad)

# What the Bluetooth VM test (scripts/btvm.sh) adds: qemu, Debian's stock kernel (it has the
# Bluetooth modules CI's own kernel lacks), busybox for the initramfs, bluez's btvirt, btmgmt
# and hciconfig, and the tools that pack the initramfs. About 100 MB.
BTVM_PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static bluez bluez-test-tools cpio kmod)
