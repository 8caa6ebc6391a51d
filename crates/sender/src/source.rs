//! WAV input through `hound`: every PCM WAV it reads (8-bit unsigned, 16/24/32-bit integer,
//! 32-bit float, any channel count and rate, WAVE_FORMAT_EXTENSIBLE), read frame by frame at full
//! resolution into wire bytes.
//!
//! The file is checked when it is opened, so a truncated or foreign file is refused before any
//! player connects, not halfway through a stream.
//!
//! Where each sample is stored in as many bytes as it has bits (every common WAV), the file's
//! bytes already are the wire format (little-endian, 8-bit unsigned, 24-bit in 3 bytes, float as
//! IEEE bits): they are copied as they are, which is what decoding them through hound and
//! encoding them again gives, without the cost of doing it sample by sample. Samples in wider
//! containers (24 bits in 4 bytes) go through hound.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use audiowire_protocol::SampleFormat;
use hound::{SampleFormat as HoundFormat, WavReader};

use crate::error::{Error, Result};

/// Where the WAV bytes come from: a file, or memory (for tests and fuzzing, see
/// [`WavSource::from_bytes`]).
enum Input {
    File(BufReader<File>),
    Memory(Cursor<Arc<[u8]>>),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::File(f) => f.read(buf),
            Input::Memory(m) => m.read(buf),
        }
    }
}

impl Seek for Input {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match self {
            Input::File(f) => f.seek(pos),
            Input::Memory(m) => m.seek(pos),
        }
    }
}

/// Where to read the same bytes again from their start.
enum Origin {
    File,
    Memory(Arc<[u8]>),
}

/// How the samples are read.
enum Samples {
    /// The data chunk's bytes, which are the wire format's: copied as they are.
    Raw(Input),
    /// hound's reader, sample by sample (samples in wider containers).
    Hound(WavReader<Input>),
}

/// A WAV file opened for streaming.
pub struct WavSource {
    path: PathBuf,
    origin: Origin,
    spec: hound::WavSpec,
    /// Length in sample frames.
    total: u64,
    /// Where the data chunk's samples start, in bytes from the start of the file.
    data_start: u64,
    /// Raw when every sample is stored in `bits / 8` bytes, as the wire carries it (and as
    /// hound's `seek` steps). Not in a file whose samples sit in wider containers (24 bits in 4
    /// bytes): there hound reads them, and a seek reads its way.
    samples: Samples,
    format: SampleFormat,
    ints: Vec<i32>,
    floats: Vec<f32>,
    remaining: u64,
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSource")
            .field("path", &self.path)
            .field("spec", &self.spec)
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
        let reopen = || Ok(Input::File(BufReader::new(open()?)));
        Self::check(
            path,
            Origin::File,
            Input::File(BufReader::new(file)),
            file_len,
            reopen,
        )
    }

    /// Checks WAV bytes held in memory, as [`WavSource::open`] checks a file; `name` stands for
    /// the path in messages. The same parser and checks as for a file, without the file system
    /// (the fuzz target `wav_source` feeds it arbitrary bytes).
    pub fn from_bytes(name: impl AsRef<Path>, bytes: impl Into<Arc<[u8]>>) -> Result<Self> {
        let bytes: Arc<[u8]> = bytes.into();
        let len = bytes.len() as u64;
        let reopen = || Ok(Input::Memory(Cursor::new(Arc::clone(&bytes))));
        let origin = Origin::Memory(Arc::clone(&bytes));
        Self::check(name.as_ref(), origin, reopen()?, len, reopen)
    }

    /// The checks of [`WavSource::open`] on `input` (of `file_len` bytes); `reopen` gives the
    /// same bytes again from their start, for streaming.
    fn check(
        path: &Path,
        origin: Origin,
        input: Input,
        file_len: u64,
        reopen: impl Fn() -> Result<Input>,
    ) -> Result<Self> {
        let reader = WavReader::new(input).map_err(|e| hound_error(path, e))?;
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
        // How many bytes one sample really takes: read one and see how far the reader moved.
        let mut probe = WavReader::new(reopen()?).map_err(|e| hound_error(path, e))?;
        let exact_seek = samples == 0 || {
            let one = if format.is_float() {
                probe.samples::<f32>().next().is_some_and(|s| s.is_ok())
            } else {
                probe.samples::<i32>().next().is_some_and(|s| s.is_ok())
            };
            let mut inner = probe.into_inner();
            let moved = inner.stream_position().map_err(|source| Error::Open {
                path: path.to_path_buf(),
                error: source,
            })?;
            one && moved.checked_sub(data_start) == Some(u64::from(spec.bits_per_sample / 8))
        };
        let reader = WavReader::new(reopen()?).map_err(|e| hound_error(path, e))?;
        let total = u64::from(reader.duration());
        let samples = if exact_seek {
            let mut input = reader.into_inner();
            input
                .seek(SeekFrom::Start(data_start))
                .map_err(|source| Error::Open {
                    path: path.to_path_buf(),
                    error: source,
                })?;
            Samples::Raw(input)
        } else {
            Samples::Hound(reader)
        };
        Ok(Self {
            path: path.to_path_buf(),
            origin,
            spec,
            total,
            data_start,
            remaining: total,
            samples,
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
        self.spec.sample_rate
    }

    /// Interleaved channels.
    pub fn channels(&self) -> u16 {
        self.spec.channels
    }

    /// The wire format that carries the file's samples at full resolution.
    pub fn format(&self) -> SampleFormat {
        self.format
    }

    /// Length in sample frames.
    pub fn total_frames(&self) -> u64 {
        self.total
    }

    /// Bytes one sample frame takes in the file (and on the wire) when read raw.
    fn frame_bytes(&self) -> u64 {
        u64::from(self.spec.channels) * self.format.bytes() as u64
    }

    /// Moves to sample frame `frame` (clamped to the end), for a player resuming mid-file.
    pub fn seek(&mut self, frame: u64) -> Result<()> {
        let frame = frame.min(self.total_frames());
        self.rewind()?;
        let frame_bytes = self.frame_bytes();
        if let Samples::Raw(input) = &mut self.samples {
            let at = self.data_start + frame * frame_bytes;
            input
                .seek(SeekFrom::Start(at))
                .map_err(|source| Error::Open {
                    path: self.path.clone(),
                    error: source,
                })?;
            self.remaining = self.total - frame;
        } else {
            // Samples in wider containers: hound's seek would land off the samples; read there.
            let mut skip = frame;
            let mut scratch = Vec::new();
            while skip > 0 {
                scratch.clear();
                let n = self.read_frames(skip.min(4096) as u32, &mut scratch)?;
                if n == 0 {
                    break;
                }
                skip -= u64::from(n);
            }
        }
        Ok(())
    }

    /// Goes back to the first sample: raw, by seeking to the data; otherwise the bytes are read
    /// again from their start, by a fresh reader (hound's own seek is off in files whose samples
    /// sit in wider containers).
    pub fn rewind(&mut self) -> Result<()> {
        self.remaining = self.total;
        if let Samples::Raw(input) = &mut self.samples {
            input
                .seek(SeekFrom::Start(self.data_start))
                .map_err(|source| Error::Open {
                    path: self.path.clone(),
                    error: source,
                })?;
            return Ok(());
        }
        let input = match &self.origin {
            Origin::File => {
                let file = File::open(&self.path).map_err(|source| Error::Open {
                    path: self.path.clone(),
                    error: source,
                })?;
                Input::File(BufReader::new(file))
            }
            Origin::Memory(bytes) => Input::Memory(Cursor::new(Arc::clone(bytes))),
        };
        self.samples =
            Samples::Hound(WavReader::new(input).map_err(|e| hound_error(&self.path, e))?);
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
        let reader = match &mut self.samples {
            Samples::Raw(input) => {
                // The file's bytes are the wire's: copied as they are.
                let at = out.len();
                out.resize(at + n * self.format.bytes(), 0);
                if let Err(source) = input.read_exact(&mut out[at..]) {
                    out.truncate(at);
                    return Err(Error::Open {
                        path: path.clone(),
                        error: source,
                    });
                }
                self.remaining -= u64::from(frames);
                return Ok(frames);
            }
            Samples::Hound(reader) => reader,
        };
        let read_err = |e: hound::Error| match e {
            hound::Error::IoError(source) => Error::Open {
                path: path.clone(),
                error: source,
            },
            other => hound_error(path, other),
        };
        if self.format.is_float() {
            self.floats.clear();
            for s in reader.samples::<f32>().take(n) {
                self.floats.push(s.map_err(read_err)?);
            }
            self.format.encode_floats(&self.floats, out);
        } else {
            self.ints.clear();
            for s in reader.samples::<i32>().take(n) {
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
    use tempfile::TempDir;

    fn write_wav(path: &Path, spec: hound::WavSpec, samples: &[i32]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    /// A path named `name` in a fresh folder, removed when the returned guard drops.
    fn temp(name: &str) -> (TempDir, PathBuf) {
        crate::testwav::scratch("audiowire-source-", name)
    }

    #[test]
    fn reads_24_bit_at_full_resolution_frame_by_frame() {
        let (_dir, path) = temp("s24.wav");
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

    /// What hound decodes from `path`, encoded in the wire format sample by sample: what the
    /// raw copy must give, byte for byte.
    fn reference(path: &Path, format: SampleFormat) -> Vec<u8> {
        let mut r = WavReader::open(path).unwrap();
        let mut out = Vec::new();
        if format.is_float() {
            let f: Vec<f32> = r.samples::<f32>().map(|s| s.unwrap()).collect();
            format.encode_floats(&f, &mut out);
        } else {
            let i: Vec<i32> = r.samples::<i32>().map(|s| s.unwrap()).collect();
            format.encode_ints(&i, &mut out);
        }
        out
    }

    #[test]
    fn raw_reads_are_what_hound_decodes_in_every_format_and_after_seeks() {
        let int = HoundFormat::Int;
        let cases = [
            (8, int),
            (16, int),
            (24, int),
            (32, int),
            (32, HoundFormat::Float),
        ];
        for (bits, sample_format) in cases {
            for channels in [1u16, 2, 3] {
                let (_dir, path) = temp(&format!("raw-{bits}-{sample_format:?}-{channels}.wav"));
                let spec = hound::WavSpec {
                    channels,
                    sample_rate: 8000,
                    bits_per_sample: bits,
                    sample_format,
                };
                let frames = 1000u32;
                let mut w = hound::WavWriter::create(&path, spec).unwrap();
                for i in 0..frames * u32::from(channels) {
                    // Extremes, zero and a spread of values in between.
                    let x = (i as i64 * 2_654_435_761) as i32;
                    match (sample_format, bits) {
                        (HoundFormat::Float, _) => {
                            let f = match i % 5 {
                                0 => f32::from_bits(x as u32), // any bits, NaNs included
                                1 => -1.0,
                                _ => x as f32 / 2_147_483_648.0,
                            };
                            w.write_sample(f).unwrap();
                        }
                        (_, 32) => w.write_sample(x).unwrap(),
                        (_, b) => w.write_sample(x >> (32 - b)).unwrap(),
                    }
                }
                w.finalize().unwrap();
                let mut src = WavSource::open(&path).unwrap();
                assert!(matches!(src.samples, Samples::Raw(_)), "{spec:?}");
                let want = reference(&path, src.format());
                let frame = usize::from(channels) * src.format().bytes();
                // In uneven reads, twice (a rewind between), then from a seek.
                for _ in 0..2 {
                    let mut got = Vec::new();
                    let mut step = 1;
                    loop {
                        let n = src.read_frames(step, &mut got).unwrap();
                        if n == 0 {
                            break;
                        }
                        step = step * 3 % 401 + 1;
                    }
                    assert_eq!(got.len(), want.len(), "{spec:?}");
                    assert!(got == want, "{spec:?}: the raw bytes differ from hound's");
                    src.rewind().unwrap();
                }
                src.seek(777).unwrap();
                let mut tail = Vec::new();
                assert_eq!(src.read_frames(frames, &mut tail).unwrap(), frames - 777);
                assert!(tail == want[777 * frame..], "{spec:?}: after a seek");
                assert_eq!(src.read_frames(1, &mut tail).unwrap(), 0);
            }
        }
    }

    #[test]
    fn a_truncated_data_chunk_is_refused_on_open() {
        let (_dir, path) = temp("trunc.wav");
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
    fn bytes_in_memory_read_as_the_file_does() {
        let (_dir, path) = temp("mem.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: HoundFormat::Int,
        };
        let samples: Vec<i32> = (0..40).map(|i| i * 301 - 6000).collect();
        write_wav(&path, spec, &samples);
        let bytes = std::fs::read(&path).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut file = WavSource::open(&path).unwrap();
        let mut mem = WavSource::from_bytes("mem.wav", bytes.clone()).unwrap();
        assert_eq!(file.read_frames(100, &mut a).unwrap(), 20);
        assert_eq!(mem.read_frames(100, &mut b).unwrap(), 20);
        assert_eq!(a, b);
        mem.rewind().unwrap();
        b.clear();
        assert_eq!(mem.read_frames(7, &mut b).unwrap(), 7);
        assert_eq!(b, a[..28]);
        let err = WavSource::from_bytes("cut.wav", &bytes[..bytes.len() - 3]).unwrap_err();
        assert!(matches!(err, Error::Truncated { found: 77, .. }), "{err}");
    }

    #[test]
    fn samples_in_wider_containers_rewind_and_seek_exactly() {
        // Found by the fuzz target wav_source: 24-bit samples in 4-byte containers. hound's seek
        // steps 3 bytes a sample, so its rewind landed in the header.
        let data: Vec<u8> = (0..8u8).flat_map(|i| [0, i, 0x10, 0xe0]).collect();
        // WAVE_FORMAT_EXTENSIBLE, 2 channels, 8 kHz, 24 valid bits in 32-bit containers, PCM.
        let mut fmt = Vec::new();
        for v in [0xfffe_u16, 2] {
            fmt.extend_from_slice(&v.to_le_bytes());
        }
        fmt.extend_from_slice(&8000u32.to_le_bytes());
        fmt.extend_from_slice(&64_000u32.to_le_bytes());
        for v in [8u16, 32, 22, 24] {
            fmt.extend_from_slice(&v.to_le_bytes());
        }
        fmt.extend_from_slice(&3u32.to_le_bytes());
        fmt.extend_from_slice(&[
            1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71,
        ]);
        let mut body = b"WAVEfmt ".to_vec();
        body.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        body.extend_from_slice(&fmt);
        body.extend_from_slice(b"data");
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&data);
        let mut wav = b"RIFF".to_vec();
        wav.extend_from_slice(&(body.len() as u32).to_le_bytes());
        wav.extend_from_slice(&body);
        let mut src = WavSource::from_bytes("padded.wav", wav).unwrap();
        assert!(matches!(src.samples, Samples::Hound(_)));
        let (mut first, mut again, mut tail) = (Vec::new(), Vec::new(), Vec::new());
        assert_eq!(src.read_frames(100, &mut first).unwrap(), 4);
        src.rewind().unwrap();
        assert_eq!(src.read_frames(100, &mut again).unwrap(), 4);
        assert_eq!(first, again);
        src.seek(3).unwrap();
        assert_eq!(src.read_frames(100, &mut tail).unwrap(), 1);
        assert_eq!(tail, first[18..], "3-byte wire samples, 2 channels");
    }

    #[test]
    fn a_text_file_is_not_wav() {
        let (_dir, path) = temp("notes.txt");
        std::fs::write(&path, "these are not the samples you are looking for").unwrap();
        let err = WavSource::open(&path).unwrap_err().to_string();
        assert!(err.contains("is not a WAV file"), "{err}");
        assert!(err.ends_with("audiowire send reads PCM WAV files"), "{err}");
    }
}
