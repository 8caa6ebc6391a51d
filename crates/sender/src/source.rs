//! WAV input through `hound`: every PCM WAV it reads (8-bit unsigned, 16/24/32-bit integer,
//! 32-bit float, any channel count and rate, WAVE_FORMAT_EXTENSIBLE), read frame by frame at full
//! resolution into wire bytes.
//!
//! The file is checked when it is opened, so a truncated or foreign file is refused before any
//! player connects, not halfway through a stream.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};

use audiowire_protocol::SampleFormat;
use hound::{SampleFormat as HoundFormat, WavReader};

use crate::error::{Error, Result};

/// A WAV file opened for streaming.
pub struct WavSource {
    path: PathBuf,
    reader: WavReader<BufReader<File>>,
    format: SampleFormat,
    ints: Vec<i32>,
    floats: Vec<f32>,
    remaining: u64,
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSource")
            .field("path", &self.path)
            .field("spec", &self.reader.spec())
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

fn hound_error(path: &Path, e: hound::Error) -> Error {
    let path = path.to_path_buf();
    match e {
        hound::Error::IoError(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::NotWav {
                path,
                reason: "the file ends inside its header".into(),
            }
        }
        hound::Error::IoError(source) => Error::Open {
            path,
            error: source,
        },
        hound::Error::FormatError(reason) => Error::NotWav {
            path,
            reason: reason.to_string(),
        },
        hound::Error::Unsupported => Error::Unsupported {
            path,
            reason: "not integer or float PCM".into(),
        },
        other => Error::Unsupported {
            path,
            reason: other.to_string(),
        },
    }
}

impl WavSource {
    /// Opens and checks `path`: a WAV header hound accepts, a sample format the protocol carries,
    /// and a data chunk as long as the header promises.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let open = || {
            File::open(path).map_err(|source| Error::Open {
                path: path.to_path_buf(),
                error: source,
            })
        };
        let file = open()?;
        let file_len = file
            .metadata()
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                error: source,
            })?
            .len();
        let reader = WavReader::new(BufReader::new(file)).map_err(|e| hound_error(path, e))?;
        let spec = reader.spec();
        let format = match spec.sample_format {
            HoundFormat::Int => SampleFormat::int_with_bits(spec.bits_per_sample),
            HoundFormat::Float if spec.bits_per_sample == 32 => Some(SampleFormat::F32),
            HoundFormat::Float => None,
        }
        .ok_or_else(|| Error::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "{}-bit {:?} samples",
                spec.bits_per_sample, spec.sample_format
            ),
        })?;
        if spec.channels == 0 || spec.sample_rate == 0 {
            return Err(Error::NotWav {
                path: path.to_path_buf(),
                reason: format!(
                    "its header says {} channels at {} Hz",
                    spec.channels, spec.sample_rate
                ),
            });
        }
        // hound leaves the reader at the start of the data chunk: check the data is all there.
        let samples = u64::from(reader.len());
        let mut inner = reader.into_inner();
        let data_start = inner.stream_position().map_err(|source| Error::Open {
            path: path.to_path_buf(),
            error: source,
        })?;
        let expected = samples * u64::from(spec.bits_per_sample).div_ceil(8);
        let found = file_len.saturating_sub(data_start);
        if found < expected {
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                expected,
                found,
            });
        }
        let reader = WavReader::new(BufReader::new(open()?)).map_err(|e| hound_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            remaining: u64::from(reader.duration()),
            reader,
            format,
            ints: Vec::new(),
            floats: Vec::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sample frames per second.
    pub fn sample_rate(&self) -> u32 {
        self.reader.spec().sample_rate
    }

    /// Interleaved channels.
    pub fn channels(&self) -> u16 {
        self.reader.spec().channels
    }

    /// The wire format that carries the file's samples at full resolution.
    pub fn format(&self) -> SampleFormat {
        self.format
    }

    /// Length in sample frames.
    pub fn total_frames(&self) -> u64 {
        u64::from(self.reader.duration())
    }

    /// Goes back to the first sample.
    pub fn rewind(&mut self) -> Result<()> {
        self.reader.seek(0).map_err(|source| Error::Open {
            path: self.path.clone(),
            error: source,
        })?;
        self.remaining = self.total_frames();
        Ok(())
    }

    /// Reads up to `max_frames` sample frames and appends them to `out` in the wire format.
    /// Returns the number of sample frames read; 0 at the end of the file.
    pub fn read_frames(&mut self, max_frames: u32, out: &mut Vec<u8>) -> Result<u32> {
        let frames = u64::from(max_frames).min(self.remaining) as u32;
        if frames == 0 {
            return Ok(0);
        }
        let n = frames as usize * usize::from(self.channels());
        let path = &self.path;
        let read_err = |e: hound::Error| match e {
            hound::Error::IoError(source) => Error::Open {
                path: path.clone(),
                error: source,
            },
            other => hound_error(path, other),
        };
        if self.format.is_float() {
            self.floats.clear();
            for s in self.reader.samples::<f32>().take(n) {
                self.floats.push(s.map_err(read_err)?);
            }
            self.format.encode_floats(&self.floats, out);
        } else {
            self.ints.clear();
            for s in self.reader.samples::<i32>().take(n) {
                self.ints.push(s.map_err(read_err)?);
            }
            self.format.encode_ints(&self.ints, out);
        }
        self.remaining -= u64::from(frames);
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, spec: hound::WavSpec, samples: &[i32]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("audiowire-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn reads_24_bit_at_full_resolution_frame_by_frame() {
        let path = temp("s24.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 24,
            sample_format: HoundFormat::Int,
        };
        let samples: Vec<i32> = (0..20).map(|i| (i - 10) * 400_001).collect();
        write_wav(&path, spec, &samples);
        let mut src = WavSource::open(&path).unwrap();
        assert_eq!(src.format(), SampleFormat::S24);
        assert_eq!(src.total_frames(), 10);
        let mut bytes = Vec::new();
        assert_eq!(src.read_frames(4, &mut bytes).unwrap(), 4);
        assert_eq!(src.read_frames(4, &mut bytes).unwrap(), 4);
        assert_eq!(src.read_frames(4, &mut bytes).unwrap(), 2);
        assert_eq!(src.read_frames(4, &mut bytes).unwrap(), 0);
        let mut back = Vec::new();
        SampleFormat::S24.decode_ints(&bytes, &mut back);
        assert_eq!(back, samples);
        src.rewind().unwrap();
        bytes.clear();
        assert_eq!(src.read_frames(100, &mut bytes).unwrap(), 10);
    }

    #[test]
    fn a_truncated_data_chunk_is_refused_on_open() {
        let path = temp("trunc.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: HoundFormat::Int,
        };
        write_wav(&path, spec, &[1; 1000]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 501]).unwrap();
        let err = WavSource::open(&path).unwrap_err();
        assert!(matches!(
            err,
            Error::Truncated {
                expected: 2000,
                found: 1499,
                ..
            }
        ));
    }

    #[test]
    fn a_text_file_is_not_wav() {
        let path = temp("notes.txt");
        std::fs::write(&path, "these are not the samples you are looking for").unwrap();
        let err = WavSource::open(&path).unwrap_err().to_string();
        assert!(err.contains("is not a WAV file"), "{err}");
        assert!(err.ends_with("audiowire send reads PCM WAV files"), "{err}");
    }
}
