//! The WAV recorder: writes exactly the received samples, in the stream's own format.
//!
//! The header is rewritten every half second of audio, so a process killed mid-stream (even by
//! SIGKILL) leaves a playable file holding everything up to the last update; a clean stop or
//! Ctrl-C finalizes it completely.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use audiowire_protocol::{SampleFormat, StreamInfo};
use hound::{WavSpec, WavWriter};

use crate::error::{Error, Result};

/// Writes a stream to a WAV file, bit-exactly.
pub struct WavRecorder {
    path: PathBuf,
    writer: Option<WavWriter<BufWriter<File>>>,
    format: SampleFormat,
    channels: usize,
    flush_every: u64,
    since_flush: u64,
    frames: u64,
    ints: Vec<i32>,
    floats: Vec<f32>,
}

impl std::fmt::Debug for WavRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavRecorder")
            .field("path", &self.path)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl WavRecorder {
    /// Creates (or replaces) `path` for a stream described by `info`.
    pub fn create(path: &Path, info: &StreamInfo) -> Result<Self> {
        let spec = WavSpec {
            channels: info.channels,
            sample_rate: info.sample_rate,
            bits_per_sample: info.format.bits(),
            sample_format: if info.format.is_float() {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let writer = WavWriter::create(path, spec).map_err(|e| Error::Wav {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(writer),
            format: info.format,
            channels: usize::from(info.channels),
            flush_every: u64::from(info.sample_rate / 2).max(1),
            since_flush: 0,
            frames: 0,
            ints: Vec::new(),
            floats: Vec::new(),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sample frames written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn err(&self, e: hound::Error) -> Error {
        Error::Wav {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Appends a payload of whole sample frames in the stream's format.
    pub fn write(&mut self, payload: &[u8]) -> Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let res = if self.format.is_float() {
            self.floats.clear();
            self.format.decode_floats(payload, &mut self.floats);
            self.floats.iter().try_for_each(|&s| w.write_sample(s))
        } else {
            self.ints.clear();
            self.format.decode_ints(payload, &mut self.ints);
            self.ints.iter().try_for_each(|&s| w.write_sample(s))
        };
        res.map_err(|e| self.err(e))?;
        let frames = (payload.len() / (self.format.bytes() * self.channels)) as u64;
        self.frames += frames;
        self.since_flush += frames;
        if self.since_flush >= self.flush_every {
            self.since_flush = 0;
            if let Some(w) = self.writer.as_mut() {
                w.flush().map_err(|e| Error::Wav {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    /// Writes the final header and closes the file.
    pub fn finalize(&mut self) -> Result<()> {
        match self.writer.take() {
            Some(w) => w.finalize().map_err(|e| self.err(e)),
            None => Ok(()),
        }
    }
}

impl Drop for WavRecorder {
    fn drop(&mut self) {
        let _ = self.finalize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiowire_protocol::Codec;

    #[test]
    fn header_is_valid_before_finalize_and_samples_are_exact() {
        let dir = tempfile::Builder::new()
            .prefix("audiowire-wav-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("rec.wav");
        let info = StreamInfo {
            sample_rate: 1000,
            channels: 1,
            format: SampleFormat::S24,
            codec: Codec::Pcm,
            samples_per_frame: 100,
            total_frames: None,
            live: false,
        };
        let mut rec = WavRecorder::create(&path, &info).unwrap();
        let samples: Vec<i32> = (0..700).map(|i| (i - 350) * 20_000).collect();
        let mut bytes = Vec::new();
        SampleFormat::S24.encode_ints(&samples, &mut bytes);
        rec.write(&bytes).unwrap();
        // Not finalized: as after SIGKILL, the file must already read back the first flush.
        let partial: Vec<i32> = hound::WavReader::open(&path)
            .unwrap()
            .into_samples::<i32>()
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(partial, samples);
        rec.finalize().unwrap();
        let all: Vec<i32> = hound::WavReader::open(&path)
            .unwrap()
            .into_samples::<i32>()
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(all, samples);
    }
}
