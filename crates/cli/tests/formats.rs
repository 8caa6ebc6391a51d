//! Formats other than WAV, with the real binaries: FLAC, MP3 and Ogg Vorbis files made from the
//! test clips at test time (by `test-audio/make-encoded.sh`, with sox) are streamed as PCM and
//! recorded; FLAC comes back bit-identical to the WAV it was made from, MP3 and Vorbis within
//! their codec's tolerance. `--rate` resamples at the sender.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;
mod signal;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tempfile::TempDir;

/// The encoded clips, made for each test that uses them (a tenth of a second), in a folder
/// removed when the returned guard drops.
fn encoded() -> TempDir {
    let dir = tmpdir("encoded");
    let out = Command::new("bash")
        .arg(repo().join("test-audio/make-encoded.sh"))
        .arg(dir.path())
        .output()
        .expect("run bash test-audio/make-encoded.sh");
    assert!(
        out.status.success(),
        "make-encoded.sh failed (scripts/test.sh installs sox and its codecs): {}",
        text(&out.stderr)
    );
    dir
}

/// Streams `file` (extra `send` options) and records it; returns the recording's folder (removed
/// when it drops), the recording and the player's summary line.
fn stream_and_record(file: &Path, extra: &[&str], name: &str) -> (TempDir, PathBuf, String) {
    let sender = Sender::start(file, extra);
    let tmp = tmpdir(name);
    let out = tmp.path().join("received.wav");
    let res = run(
        &["play", &sender.addr, "--out", out.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let summary = text(&res.stdout);
    assert!(
        res.status.success(),
        "{name}: play failed: {}{summary}",
        text(&res.stderr)
    );
    (tmp, out, summary)
}

fn assert_flac_bit_exact(name: &str) {
    let wav = clip(&format!("{name}.wav"));
    let encoded = encoded();
    let flac = encoded.path().join(format!("{name}.flac"));
    let (_tmp, rec, _) = stream_and_record(&flac, &[], &format!("flac-{name}"));
    let (want_spec, want) = wav_samples(&wav);
    let (got_spec, got) = wav_samples(&rec);
    assert_eq!(
        (
            got_spec.sample_rate,
            got_spec.channels,
            got_spec.bits_per_sample
        ),
        (
            want_spec.sample_rate,
            want_spec.channels,
            want_spec.bits_per_sample
        ),
        "{name}"
    );
    assert_eq!(got.len(), want.len(), "{name}: sample count");
    assert_eq!(
        got.iter().zip(&want).position(|(a, b)| a != b),
        None,
        "{name}: samples differ"
    );
}

#[test]
fn flac_16_bit_decodes_bit_exactly() {
    assert_flac_bit_exact("sweep-48k-s16-stereo");
}

#[test]
fn flac_24_bit_keeps_24_bits_bit_exactly() {
    assert_flac_bit_exact("chords-44k-s24-stereo");
}

/// A lossy file against its source: same rate and channels, length within `slack` frames,
/// aligned within a few samples, and each channel's SNR above `min_snr_db`.
fn assert_lossy(name: &str, ext: &str, min_snr_db: f64, slack: usize) {
    let encoded = encoded();
    let file = encoded.path().join(format!("{name}.{ext}"));
    let (_tmp, rec, summary) = stream_and_record(&file, &[], &format!("{ext}-{name}"));
    assert!(
        summary.contains(" f32)"),
        "lossy codecs decode to f32: {summary}"
    );
    let src = signal::read_wav(&clip(&format!("{name}.wav")));
    let got = signal::read_wav(&rec);
    assert_eq!((got.rate, got.channels), (src.rate, src.channels), "{name}");
    let (lag, peak, snrs) = signal::compare(&got, &src, 3000);
    eprintln!(
        "{name}.{ext}: {} frames for {}, lag {lag}, correlation {peak:.5}, SNR {snrs:.1?} dB",
        got.frames(),
        src.frames()
    );
    assert!(
        got.frames().abs_diff(src.frames()) <= slack,
        "{name}.{ext}: {} frames, the source has {}",
        got.frames(),
        src.frames()
    );
    // The encoder's delay is trimmed (gapless), so the audio lines up with the source.
    assert!(
        lag.abs() <= 2,
        "{name}.{ext}: the audio starts {lag} frames off"
    );
    assert!(peak > 0.99, "{name}.{ext}: correlation {peak}");
    for (c, snr) in snrs.iter().enumerate() {
        assert!(
            *snr > min_snr_db,
            "{name}.{ext} channel {c}: SNR {snr:.1} dB, expected > {min_snr_db} dB"
        );
    }
}

// Measured SNRs (lame 3.100, sox 14.4.2 with libvorbis, decoded by symphonia 0.6.1; the same
// every run, the encoders being deterministic): see each test; the thresholds leave about 6 dB.

#[test]
fn mp3_speech_decodes_within_tolerance() {
    // Measured: lag 0 (gapless), SNR 41.8 dB (128 kbit/s CBR, 22 kHz mono).
    assert_lossy("speech-22k-s16-mono", "mp3", 35.0, 0);
}

#[test]
fn mp3_chords_decode_within_tolerance() {
    // Measured: lag 0 (gapless), SNR 76.3 / 77.3 dB (192 kbit/s CBR of pure tones).
    assert_lossy("chords-44k-s24-stereo", "mp3", 70.0, 0);
}

#[test]
fn ogg_vorbis_speech_decodes_within_tolerance() {
    // Measured: lag 0, SNR 25.6 dB (quality 6).
    assert_lossy("speech-22k-s16-mono", "ogg", 19.0, 0);
}

#[test]
fn ogg_vorbis_chords_decode_within_tolerance() {
    // Measured: lag 0, SNR 39.9 / 36.9 dB (quality 6).
    assert_lossy("chords-44k-s24-stereo", "ogg", 30.0, 0);
}

#[test]
fn rate_resamples_a_flac_at_the_sender() {
    let encoded = encoded();
    let flac = encoded.path().join("chords-44k-s24-stereo.flac");
    let (_tmp, rec, summary) = stream_and_record(&flac, &["--rate", "48000"], "rate-flac");
    assert!(summary.contains("48000 Hz 2 ch s24"), "{summary}");
    let src = signal::read_wav(&clip("chords-44k-s24-stereo.wav"));
    let got = signal::read_wav(&rec);
    // 22 050 frames at 44.1 kHz are 24 000 at 48 kHz.
    assert_eq!(got.frames(), 24_000);
    let (lag, peak, snrs) = signal::compare(&got, &src, 200);
    eprintln!("--rate 48000: lag {lag}, correlation {peak:.6}, SNR {snrs:.1?} dB");
    assert_eq!(lag, 0, "the resampler's delay is trimmed");
    // Measured: 104.3 / 98.3 dB against this test's own resampling.
    assert!(snrs.iter().all(|&s| s > 90.0), "{snrs:?}");
}
