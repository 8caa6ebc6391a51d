//! Audio files as sources of sample frames: WAV through `hound` (the bit-exact path, see
//! [`crate::source`]), everything else symphonia decodes (FLAC, MP3, Ogg Vorbis, AAC and ALAC in
//! MP4, AIFF, CAF-less PCM, Matroska/WebM audio, ADPCM WAV).
//!
//! A [`Source`] hands out whole sample frames as wire bytes in its [`SampleFormat`]: integer
//! sources (WAV, FLAC, ALAC, AIFF) in the integer format that holds their bit depth, exactly
//! (FLAC comes out bit-identical to the WAV it was made from); lossy codecs (MP3, Vorbis, AAC) as
//! f32, never clipped. Files are checked when opened, so a file nobody can read is refused
//! before any player connects.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use audiowire_protocol::SampleFormat;
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::error::{Error, Result};
use crate::source::WavSource;

/// Where sample frames come from.
pub trait Source: std::fmt::Debug + Send {
    /// The file's path.
    fn path(&self) -> &Path;
    /// Sample frames per second.
    fn sample_rate(&self) -> u32;
    /// Interleaved channels.
    fn channels(&self) -> u16;
    /// The wire format that carries the samples at full resolution.
    fn format(&self) -> SampleFormat;
    /// Length in sample frames, when the file says.
    fn total_frames(&self) -> Option<u64>;
    /// Reads up to `max_frames` sample frames and appends them to `out` in [`Source::format`].
    /// Returns the number read; 0 at the end.
    fn read_frames(&mut self, max_frames: u32, out: &mut Vec<u8>) -> Result<u32>;
    /// Moves to sample frame `frame` (clamped to the end).
    fn seek(&mut self, frame: u64) -> Result<()>;
    /// Goes back to the first sample.
    fn rewind(&mut self) -> Result<()> {
        self.seek(0)
    }
}

impl Source for WavSource {
    fn path(&self) -> &Path {
        WavSource::path(self)
    }
    fn sample_rate(&self) -> u32 {
        WavSource::sample_rate(self)
    }
    fn channels(&self) -> u16 {
        WavSource::channels(self)
    }
    fn format(&self) -> SampleFormat {
        WavSource::format(self)
    }
    fn total_frames(&self) -> Option<u64> {
        Some(WavSource::total_frames(self))
    }
    fn read_frames(&mut self, max_frames: u32, out: &mut Vec<u8>) -> Result<u32> {
        WavSource::read_frames(self, max_frames, out)
    }
    fn seek(&mut self, frame: u64) -> Result<()> {
        WavSource::seek(self, frame)
    }
    fn rewind(&mut self) -> Result<()> {
        WavSource::rewind(self)
    }
}

/// True when the file starts like a RIFF/RF64 WAVE file.
fn looks_like_wav(path: &Path) -> bool {
    let mut head = [0u8; 12];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| (&head[..4] == b"RIFF" || &head[..4] == b"RF64") && &head[8..] == b"WAVE")
}

/// Opens an audio file: WAV through hound (bit-exact, checked for truncation), anything else
/// (and WAV encodings hound does not read, such as ADPCM) through symphonia.
pub fn open(path: impl AsRef<Path>) -> Result<Box<dyn Source>> {
    let path = path.as_ref();
    if looks_like_wav(path) {
        match WavSource::open(path) {
            Ok(s) => return Ok(Box::new(s)),
            // A WAV encoding hound does not read: symphonia may.
            Err(Error::Unsupported { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Box::new(DecodedSource::open(path)?))
}

/// A file symphonia decodes.
pub struct DecodedSource {
    path: PathBuf,
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track: u32,
    rate: u32,
    channels: u16,
    format: SampleFormat,
    total: Option<u64>,
    /// Decoded samples not handed out yet, in `format`, and where they start.
    pending: Vec<u8>,
    pending_at: usize,
    ints: Vec<i32>,
    floats: Vec<f32>,
    ended: bool,
}

impl std::fmt::Debug for DecodedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedSource")
            .field("path", &self.path)
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl DecodedSource {
    /// Opens `path` and checks that symphonia can decode its first audio track.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let not_audio = |reason: String| Error::NotAudio {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|error| Error::Open {
            path: path.to_path_buf(),
            error,
        })?;
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let reader = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| match e {
                SymError::IoError(error) if error.kind() != std::io::ErrorKind::UnexpectedEof => {
                    Error::Open {
                        path: path.to_path_buf(),
                        error,
                    }
                }
                SymError::Unsupported(_) | SymError::IoError(_) => {
                    not_audio("no format audiowire knows".into())
                }
                other => not_audio(other.to_string()),
            })?;
        let track = reader
            .default_track(TrackType::Audio)
            .ok_or_else(|| not_audio("it has no audio track".into()))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| not_audio("its audio track has no codec parameters".into()))?
            .clone();
        let total = track.num_frames;
        let track_id = track.id;
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| Error::Unsupported {
                path: path.to_path_buf(),
                reason: format!("its codec cannot be decoded ({e})"),
            })?;
        let rate = params
            .sample_rate
            .filter(|&r| r > 0)
            .ok_or_else(|| not_audio("its audio track does not say its sample rate".into()))?;
        let channels = params
            .channels
            .as_ref()
            .map(|c| c.count())
            .filter(|&c| c > 0)
            .ok_or_else(|| not_audio("its audio track does not say its channels".into()))?;
        let channels = u16::try_from(channels).map_err(|_| Error::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{channels} channels"),
        })?;
        // Integer codecs keep their resolution; lossy ones decode to floats.
        let lossless = params.bits_per_sample.filter(|&b| (1..=32).contains(&b));
        let float = params.sample_format.is_some_and(|f| {
            matches!(
                f,
                symphonia::core::audio::sample::SampleFormat::F32
                    | symphonia::core::audio::sample::SampleFormat::F64
            )
        });
        let format = match lossless {
            Some(bits) if !float => match bits {
                1..=8 => SampleFormat::U8,
                9..=16 => SampleFormat::S16,
                17..=24 => SampleFormat::S24,
                _ => SampleFormat::S32,
            },
            _ => SampleFormat::F32,
        };
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            decoder,
            track: track_id,
            rate,
            channels,
            format,
            total,
            pending: Vec::new(),
            pending_at: 0,
            ints: Vec::new(),
            floats: Vec::new(),
            ended: false,
        })
    }

    /// Decodes the next packet of the track into `pending`; false at the end of the file.
    fn decode_more(&mut self) -> Result<bool> {
        // Bounded: a file of nothing but undecodable packets ends after this many.
        for _ in 0..100_000 {
            let packet = match self.reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(false),
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(false);
                }
                Err(SymError::IoError(error)) => {
                    return Err(Error::Open {
                        path: self.path.clone(),
                        error,
                    });
                }
                Err(e) => {
                    return Err(Error::Decode {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    });
                }
            };
            if packet.track_id != self.track {
                continue;
            }
            let buf = match self.decoder.decode(&packet) {
                Ok(b) => b,
                // A damaged packet: skip it, as players do.
                Err(SymError::DecodeError(e)) => {
                    tracing::debug!("{}: skipped a damaged packet ({e})", self.path.display());
                    continue;
                }
                Err(e) => {
                    return Err(Error::Decode {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    });
                }
            };
            if buf.spec().channels().count() != usize::from(self.channels) {
                return Err(Error::Decode {
                    path: self.path.clone(),
                    reason: "the channel count changes mid-file".into(),
                });
            }
            if self.format.is_float() {
                buf.copy_to_vec_interleaved::<f32>(&mut self.floats);
                self.format.encode_floats(&self.floats, &mut self.pending);
            } else {
                buf.copy_to_vec_interleaved::<i32>(&mut self.ints);
                let shift = 32 - self.format.bits();
                for s in &mut self.ints {
                    *s >>= shift;
                }
                self.format.encode_ints(&self.ints, &mut self.pending);
            }
            return Ok(true);
        }
        Ok(false)
    }

    fn bytes_per_frame(&self) -> usize {
        self.format.bytes() * usize::from(self.channels)
    }
}

impl Source for DecodedSource {
    fn path(&self) -> &Path {
        &self.path
    }
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn channels(&self) -> u16 {
        self.channels
    }
    fn format(&self) -> SampleFormat {
        self.format
    }
    fn total_frames(&self) -> Option<u64> {
        self.total
    }

    fn read_frames(&mut self, max_frames: u32, out: &mut Vec<u8>) -> Result<u32> {
        let bpf = self.bytes_per_frame();
        let want = max_frames as usize * bpf;
        while self.pending.len() - self.pending_at < want && !self.ended {
            if self.pending_at > 0 {
                self.pending.drain(..self.pending_at);
                self.pending_at = 0;
            }
            if !self.decode_more()? {
                self.ended = true;
            }
        }
        let have = (self.pending.len() - self.pending_at).min(want) / bpf * bpf;
        out.extend_from_slice(&self.pending[self.pending_at..self.pending_at + have]);
        self.pending_at += have;
        Ok((have / bpf) as u32)
    }

    /// Seeks by reopening the file and decoding forward: exact to the sample for every codec.
    fn seek(&mut self, frame: u64) -> Result<()> {
        *self = Self::open(&self.path)?;
        let mut skip = frame;
        let mut scratch = Vec::new();
        while skip > 0 {
            scratch.clear();
            let n = self.read_frames(skip.min(65_536) as u32, &mut scratch)?;
            if n == 0 {
                break;
            }
            skip -= u64::from(n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_file_is_not_audio() {
        let (_dir, path) = crate::testwav::scratch("audiowire-input-", "notes.txt");
        std::fs::write(&path, "these are not the samples you are looking for").unwrap();
        let err = open(&path).unwrap_err().to_string();
        assert!(err.contains("is not an audio file"), "{err}");
    }
}
