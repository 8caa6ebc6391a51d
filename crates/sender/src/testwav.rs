//! Test helpers: scratch folders that go when their guard drops (also when a test fails), and
//! 16-bit WAV files written into them.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A fresh folder whose name starts with `prefix`, and the path `name` in it. The folder and
/// all in it go when the guard drops.
pub(crate) fn scratch(prefix: &str, name: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// Writes `samples` (interleaved) to `path` as a WAV of 16-bit integers, `channels` at `rate`.
pub(crate) fn write_s16(
    path: &Path,
    rate: u32,
    channels: u16,
    samples: impl IntoIterator<Item = i16>,
) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}
