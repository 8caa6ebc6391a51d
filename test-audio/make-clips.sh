#!/usr/bin/env bash
# Regenerates the audiowire test clips in this folder.
#
#   bash test-audio/make-clips.sh        (from any directory)
#
# Needs: sox, espeak-ng (Debian: apt-get install sox espeak-ng) and python3
# (stdlib only, used for the sample-exact click track).
#
# Everything is deterministic: sox runs with -D (no dither) and -R (repeatable
# mode, fixed seeds), no noise generators are used, and the click track is
# computed sample by sample. Re-running gives byte-identical files, except
# possibly the speech clip across different espeak-ng versions.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

missing=()
for tool in sox espeak-ng python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "make-clips.sh: missing tool(s): ${missing[*]}" >&2
    echo "install with: apt-get install sox espeak-ng   (python3 is also required)" >&2
    exit 1
fi

export LC_ALL=C
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# sox with no dither, repeatable mode, and no progress output.
SOX=(sox -D -R -q)

# 10 ms half-sine fade in and out for a clip of length $1 seconds.
fade() { echo "fade h 0.01 $1 0.01"; }

# 1. sweep-48k-s16-stereo.wav: 1.0 s exponential (log) sine sweep 20 Hz -> 20 kHz,
#    -6 dBFS, 48 kHz, 16-bit, stereo, plain WAVE_FORMAT_PCM.
"${SOX[@]}" -n -r 48000 -b 16 -e signed-integer -c 2 -t wavpcm sweep-48k-s16-stereo.wav \
    synth 1.0 sine 20/20000 gain -6 $(fade 1.0)

# 2. clicks-48k-s16-mono.wav: 1.0 s of digital silence with four clicks whose first
#    sample is exactly at 4800, 16800, 28800, 40800. Each click is one cycle (48
#    samples = 1 ms) of a 1 kHz cosine at -3 dBFS, so the onset sample is the
#    click's peak (+0.708 FS). Written with python3's stdlib wave module (plain PCM).
python3 - clicks-48k-s16-mono.wav <<'PY'
import math, struct, sys, wave

RATE = 48000
LENGTH = RATE                         # 1.0 s
STARTS = (4800, 16800, 28800, 40800)  # 100 ms, then every 250 ms
BURST = 48                            # 1 ms
AMP = 10 ** (-3 / 20)                 # -3 dBFS

samples = [0] * LENGTH
for start in STARTS:
    for n in range(BURST):
        v = AMP * math.cos(2 * math.pi * 1000 * n / RATE)
        samples[start + n] = int(round(v * 32767))

with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(RATE)
    w.writeframes(struct.pack("<%dh" % LENGTH, *samples))
PY

# 3. speech-22k-s16-mono.wav: espeak-ng at its native 22050 Hz, normalised to -3 dBFS.
espeak-ng -v en -s 175 -w "$tmp/speech.wav" \
    "audiowire demo. If you can hear this, streaming works."
"${SOX[@]}" "$tmp/speech.wav" -r 22050 -b 16 -e signed-integer -c 1 -t wavpcm \
    speech-22k-s16-mono.wav norm -3

# 4. chords-44k-s24-stereo.wav: 0.5 s, two 0.25 s chords (C major, then F major),
#    three sine partials each. Left = root position around C4, right = one octave
#    higher (so a channel swap is detectable). -6 dBFS, 44.1 kHz, 24-bit, plain PCM.
chord() { # chord <out> <rate> <seconds> <f1> <f2> <f3>
    "${SOX[@]}" -n -r "$2" -b 32 -e floating-point -c 1 "$1" \
        synth "$3" sine "$4" sine mix "$5" sine mix "$6" $(fade "$3")
}
chord "$tmp/c4.wav"  44100 0.25 261.63 329.63 392.00
chord "$tmp/f4.wav"  44100 0.25 349.23 440.00 523.25
chord "$tmp/c5.wav"  44100 0.25 523.25 659.26 783.99
chord "$tmp/f5.wav"  44100 0.25 698.46 880.00 1046.50
"${SOX[@]}" "$tmp/c4.wav" "$tmp/f4.wav" "$tmp/left.wav"
"${SOX[@]}" "$tmp/c5.wav" "$tmp/f5.wav" "$tmp/right.wav"
"${SOX[@]}" -M "$tmp/left.wav" "$tmp/right.wav" \
    -r 44100 -b 24 -e signed-integer -c 2 -t wavpcm chords-44k-s24-stereo.wav norm -6

# 5. tone-8k-u8-mono.wav: 0.5 s 440 Hz sine, -6 dBFS, 8 kHz, 8-bit unsigned, mono.
"${SOX[@]}" -n -r 8000 -b 8 -e unsigned-integer -c 1 -t wavpcm tone-8k-u8-mono.wav \
    synth 0.5 sine 440 gain -6 $(fade 0.5)

# 6. sine-96k-s32-mono.wav: 0.25 s 1 kHz sine, -6 dBFS, 96 kHz, 32-bit signed int, mono.
"${SOX[@]}" -n -r 96000 -b 32 -e signed-integer -c 1 -t wavpcm sine-96k-s32-mono.wav \
    synth 0.25 sine 1000 gain -6 $(fade 0.25)

# 7. chords-32k-f32-stereo.wav: 0.4 s A minor chord (A3 C4 E4) left, same chord one
#    octave up right, -6 dBFS, 32 kHz, 32-bit IEEE float (format tag 3), stereo.
chord "$tmp/am3.wav" 32000 0.4 220.00 261.63 329.63
chord "$tmp/am4.wav" 32000 0.4 440.00 523.25 659.26
"${SOX[@]}" -M "$tmp/am3.wav" "$tmp/am4.wav" \
    -r 32000 -b 32 -e floating-point -c 2 -t wavpcm chords-32k-f32-stereo.wav norm -6

# 8. channels-48k-s16-8ch-ext.wav: 0.15 s, 48 kHz, 16-bit, 8 channels; channel k
#    (1-based) carries a k*250 Hz sine at -6 dBFS. sox writes WAVE_FORMAT_EXTENSIBLE
#    (tag 0xFFFE) for more than two channels with -t wav.
"${SOX[@]}" -n -r 48000 -b 16 -e signed-integer -c 8 -t wav channels-48k-s16-8ch-ext.wav \
    synth 0.15 sine 250 sine 500 sine 750 sine 1000 sine 1250 sine 1500 sine 1750 sine 2000 \
    gain -6 $(fade 0.15)

# Sanity check: the 8-channel file must really be extensible.
tag="$(od -An -tx1 -j20 -N2 channels-48k-s16-8ch-ext.wav | tr -d ' \n')"
if [[ "$tag" != "feff" ]]; then
    echo "make-clips.sh: channels-48k-s16-8ch-ext.wav is not WAVE_FORMAT_EXTENSIBLE (tag bytes $tag)" >&2
    exit 1
fi

ls -l -- *.wav
