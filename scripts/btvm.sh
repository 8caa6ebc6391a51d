#!/usr/bin/env bash
# audiowire over the real Linux Bluetooth stack, in a VM: CI's kernel has no Bluetooth, so this
# boots Debian's stock kernel (linux-image-amd64) in qemu with software emulation (TCG; KVM does
# not work on CI machines) from a small initramfs: busybox, the kernel modules `bluetooth
# hci_vhci rfcomm` and the crypto helpers the stack wants, bluez's `btvirt -l2` (two virtual
# controllers joined by a virtual air) and `btmgmt` to power them on, and the audiowire binary
# with its shared libraries. Inside the VM `audiowire send --transport rfcomm` on one
# controller and `audiowire play --out` on the other stream a test clip; the results are printed
# on the serial console and checked here; then the echo, ping and struct tools over RFCOMM.
# Prints a `test result:` line like cargo's.
#
#   scripts/btvm.sh [path/to/audiowire]     # default: target/debug/audiowire (built if missing)
#
# Needs root for nothing but installing packages (scripts/packages.sh: BTVM_PACKAGES). About
# 1-2 minutes on 2 cores; bounded by `timeout`. See docs/bluetooth.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/packages.sh
need_packages "${BTVM_PACKAGES[@]}"
BIN=${1:-target/debug/audiowire}
[ -x "$BIN" ] || cargo build -p audiowire-cli --locked
K=$(ls /lib/modules | grep -- '-amd64$' | sort -V | tail -1)
[ -n "$K" ] && [ -e "/boot/vmlinuz-$K" ] || { echo "btvm: no Debian amd64 kernel installed (linux-image-amd64)" >&2; exit 1; }
W=$(mktemp -d /tmp/audiowire-btvm.XXXXXX)
trap 'rm -rf "$W"' EXIT
R=$W/root
mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,clips}
cp "$(command -v busybox)" "$R/bin/"
for a in $(busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
ln -s ../bin/busybox "$R/sbin/modprobe"
# The binary (stripped: the VM's memory is small) and the tools, with their shared libraries.
strip -o "$R/bin/audiowire" "$BIN"
for b in /usr/bin/btvirt /usr/bin/btmgmt /usr/bin/hciconfig "$R/bin/audiowire"; do
    [ "$b" = "$R/bin/audiowire" ] || cp "$b" "$R/bin/"
    for l in $(ldd "$b" | grep -o '/[^ ]*'); do cp --parents -L "$l" "$R/"; done
done
cp test-audio/speech-22k-s16-mono.wav "$R/clips/speech.wav"
M="sha512_generic ctr drbg af_alg algif_hash algif_skcipher ecb cmac bluetooth hci_vhci rfcomm"
# shellcheck disable=SC2086
modprobe -aS "$K" --show-depends $M | awk '$1=="insmod"{print $2}' | sort -u | xargs -I{} cp --parents {} "$R/"
cp /lib/modules/"$K"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$K/"
depmod -b "$R" "$K"
cat > "$R/init" <<EOF
#!/bin/sh
export PATH=/bin:/sbin HOME=/tmp RUST_LOG=info
mount -t proc p /proc; mount -t sysfs s /sys; mount -t devtmpfs d /dev
# Loopback: the tools reach RFCOMM through a relay on 127.0.0.1.
ip link set lo up
for m in $M; do modprobe \$m || echo "modprobe \$m FAILED"; done
btvirt -l2 >/dev/null 2>&1 &
for i in \$(seq 100); do [ -e /sys/class/bluetooth/hci1 ] && break; sleep 0.1; done
for i in 0 1; do for c in connectable bondable power; do btmgmt --index \$i \$c on >/dev/null; done; done
A0=\$(hciconfig hci0 | grep -o '..:..:..:..:..:..'); A1=\$(hciconfig hci1 | grep -o '..:..:..:..:..:..')
echo "BTVM: up at \$(cut -d' ' -f1 /proc/uptime)s hci0=\$A0 hci1=\$A1"
# The sender on hci1, channel 3; wait (bounded) until it listens.
audiowire send /clips/speech.wav --transport rfcomm --listen \$A1:3 2>/tmp/send.log &
for i in \$(seq 200); do grep -q serving /tmp/send.log && break; sleep 0.1; done
grep -o 'serving.*' /tmp/send.log | sed 's/^/BTVM-SEND: /'
T0=\$(cut -d' ' -f1 /proc/uptime)
timeout 120 audiowire play --transport rfcomm \$A1:3 --out /tmp/out.wav >/tmp/play.out 2>/tmp/play.err
echo "BTVM-PLAY: rc=\$? from \$T0 s to \$(cut -d' ' -f1 /proc/uptime) s: \$(cat /tmp/play.out)"
tail -n 3 /tmp/play.err | sed 's/^/BTVM-PLAY-LOG: /'
echo "BTVM-WAV: \$(wc -c < /tmp/out.wav) bytes"
kill %2 2>/dev/null
# Errors in one line: a channel nobody listens on.
audiowire play --transport rfcomm \$A1:9 --out /tmp/none.wav 2>&1 | sed 's/^/BTVM-REFUSED: /'
# The tools over RFCOMM: an echo server and a struct listener on hci1, and their clients.
audiowire echo-server --transport rfcomm --listen \$A1:4 2>/tmp/echo.log &
ES=\$!
for i in \$(seq 200); do grep -q listening /tmp/echo.log && break; sleep 0.1; done
echo "BTVM-ECHO: \$(timeout 60 audiowire echo --transport rfcomm --timeout 20 \$A1:4 'hello over rfcomm' 2>&1)"
echo "BTVM-ECHO-FRAMED: \$(timeout 60 audiowire echo --framed --transport rfcomm --timeout 20 \$A1:4 'framed hello' 2>&1)"
timeout 60 audiowire ping --framed --transport rfcomm --timeout 20 -c 2 --interval 0.2 \$A1:4 2>&1 | grep -m1 'sent,' | sed 's/^/BTVM-PING: /'
kill \$ES 2>/dev/null
audiowire struct listen --transport rfcomm --listen \$A1:5 --count 1 >/tmp/struct.out 2>/tmp/struct.log &
SL=\$!
for i in \$(seq 200); do grep -q listening /tmp/struct.log && break; sleep 0.1; done
timeout 60 audiowire struct send --transport rfcomm --timeout 20 \$A1:5 --format '!I30sd' 3 hello 0.5 2>&1 | sed 's/^/BTVM-STRUCT-SEND: /'
for i in \$(seq 100); do [ -s /tmp/struct.out ] && break; sleep 0.1; done
echo "BTVM-STRUCT: \$(cat /tmp/struct.out)"
kill \$SL 2>/dev/null
echo "BTVM-DONE at \$(cut -d' ' -f1 /proc/uptime)s"
poweroff -f
EOF
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initrd.gz"
echo "btvm: initramfs $(du -h "$W/initrd.gz" | cut -f1), kernel $K; booting (TCG)" >&2
T=$(date +%s)
timeout 600 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m 1024 -smp 2 -nic none \
    -no-reboot -nographic -kernel "/boot/vmlinuz-$K" -initrd "$W/initrd.gz" \
    -append 'console=ttyS0 quiet panic=-1' </dev/null 2>&1 | tr -d '\r' |
    sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' > "$W/console.log" || true
grep '^BTVM' "$W/console.log" || tail -n 20 "$W/console.log"
echo "btvm: qemu ran $(( $(date +%s) - T )) s" >&2
# The checks, outside the VM.
pass=0 fail=0
check() { if eval "$2"; then echo "test btvm::$1 ... ok"; pass=$((pass + 1)); else echo "test btvm::$1 ... FAILED"; fail=$((fail + 1)); fi; }
c=$W/console.log
# Under TCG the whole VM (radio emulation included) runs slower than real time, so underruns
# are reported, not failed on; the socketpair test (crates/cli/tests/rfcomm.rs) checks them.
check stream_over_rfcomm "grep -q 'BTVM-PLAY: rc=0 .*played 3\.5' '$c'"
# 3.54 s of 48 kHz mono f32 Opus output: about 680 KB.
bytes=$(sed -n 's/^BTVM-WAV: \([0-9]*\) bytes/\1/p' "$c")
check recording_complete "[ '${bytes:-0}' -gt 660000 ] && [ '${bytes:-0}' -lt 700000 ]"
check refused_channel_one_line "[ \$(grep -c '^BTVM-REFUSED: ' '$c') = 1 ] && grep -q 'BTVM-REFUSED: .*refused' '$c'"
check echo_over_rfcomm "grep -qx 'BTVM-ECHO: hello over rfcomm' '$c' && grep -qx 'BTVM-ECHO-FRAMED: framed hello' '$c'"
check ping_over_rfcomm "grep -q 'BTVM-PING: 2 sent, 2 received' '$c'"
check struct_over_rfcomm "grep -qx 'BTVM-STRUCT: 3 hello 0.5' '$c'"
echo "test result: $([ $fail = 0 ] && echo ok || echo FAILED). $pass passed; $fail failed; 0 ignored; 0 measured; 0 filtered out; finished in $(( $(date +%s) - T ))s"
[ $fail = 0 ]
