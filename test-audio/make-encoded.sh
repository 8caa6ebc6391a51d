#!/usr/bin/env bash
# Encodes test clips as FLAC, MP3 and Ogg Vorbis into OUTDIR, for the tests of the formats
# `audiowire send` decodes (crates/cli/tests/formats.rs runs it at test time; nothing it makes
# is committed).
#
#   bash test-audio/make-encoded.sh OUTDIR
#
# Needs sox with its FLAC and Ogg Vorbis handlers, and lame for MP3 (it writes the LAME/Info
# header that makes an MP3 gapless, which sox's MP3 writer does not). Debian: apt-get install sox
# libsox-fmt-base lame; scripts/test.sh installs them. sox runs with -D (no dither) and -R
# (repeatable), so the files are the same every run with the same sox and encoders.
#
# Writes:
#   sweep-48k-s16-stereo.flac   FLAC of the 16-bit sweep: decodes bit-exactly to the WAV
#   chords-44k-s24-stereo.flac  FLAC of the 24-bit chords: 24 bits kept, bit-exact
#   speech-22k-s16-mono.mp3     MP3 (lame, 128 kbit/s CBR, with its gapless header)
#   chords-44k-s24-stereo.mp3   MP3 (lame, 192 kbit/s CBR, from the chords cut to 16 bits)
#   speech-22k-s16-mono.ogg     Ogg Vorbis, quality 6
#   chords-44k-s24-stereo.ogg   Ogg Vorbis, quality 6
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"

for tool in sox lame; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "make-encoded.sh: $tool not found; install: apt-get install sox libsox-fmt-base lame" >&2
        exit 1
    }
done
for fmt in flac vorbis; do
    sox -h 2>/dev/null | grep -q "AUDIO FILE FORMATS:.* $fmt" || {
        echo "make-encoded.sh: this sox cannot write $fmt; install: apt-get install libsox-fmt-base" >&2
        exit 1
    }
done

SOX=(sox -D -R -q)
"${SOX[@]}" "$here/sweep-48k-s16-stereo.wav" "$out/sweep-48k-s16-stereo.flac"
"${SOX[@]}" "$here/chords-44k-s24-stereo.wav" "$out/chords-44k-s24-stereo.flac"
LAME=(lame --quiet --noreplaygain --cbr)
"${LAME[@]}" -b 128 "$here/speech-22k-s16-mono.wav" "$out/speech-22k-s16-mono.mp3"
"${SOX[@]}" "$here/chords-44k-s24-stereo.wav" -b 16 -t wav "$out/chords-16.wav"
"${LAME[@]}" -b 192 "$out/chords-16.wav" "$out/chords-44k-s24-stereo.mp3"
rm -f "$out/chords-16.wav"
"${SOX[@]}" "$here/speech-22k-s16-mono.wav" -C 6 "$out/speech-22k-s16-mono.ogg"
"${SOX[@]}" "$here/chords-44k-s24-stereo.wav" -C 6 "$out/chords-44k-s24-stereo.ogg"
