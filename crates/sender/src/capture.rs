//! Live input from a cpal input device (`send --input`): listing input devices, choosing a
//! configuration and the frame size that suits it, and capturing into a lock-free ring.
//!
//! The capture callback does three things only: convert the device's samples to f32 and push them
//! into the ring (an overrun is counted in an atomic), note the device's capture delay, and wake
//! the reader. The broadcast's producer thread pops whole frames from the ring and stamps each
//! with the wall clock instant its first sample was captured.
//!
//! Waking the reader: the callback runs on the audio server's real-time thread, where nothing may
//! lock, allocate, log or block. It calls [`std::thread::Thread::unpark`] on the reader's handle,
//! which it owns (moved into the closure before the stream starts, so reaching it takes no lock).
//! `unpark` is one atomic swap, plus one `futex(FUTEX_WAKE)` system call only when the reader is
//! actually parked: it never waits for anything, never allocates, and a wake-up that comes while
//! the reader is busy is kept as a token, so none is lost. The reader parks with a timeout
//! (`park_timeout`), so it still notices a shutdown or a device that stopped delivering. Without
//! the wake-up the reader had to poll, and each block waited for the next poll.
//!
//! Frame size ([`live_frame_ms`]): the samples of one callback arrive at once, so a frame that
//! holds exactly one callback's worth goes out as soon as the callback returns, while a longer
//! frame makes its first samples wait for later callbacks. Where the host reports a fixed
//! callback size (cpal's JACK host reports the server's period as a range whose minimum equals
//! its maximum), live PCM frames are one period long; elsewhere 5 ms. Opus takes the largest of
//! its 2.5, 5, 10 and 20 ms frames that fits in one period (at least 2.5 ms), and 10 ms where the
//! period is unknown: the shortest frame that keeps all of Opus's modes and its CPU cost low
//! (2.5 ms frames cost about three times as much).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;

use audiowire_protocol::SampleFormat;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{Device, FromSample, InputCallbackInfo, SizedSample, StreamConfig, SupportedBufferSize};
use ringbuf::traits::{Producer, Split};
use ringbuf::{HeapCons, HeapRb};

use audiowire_receiver::device::{device_id, device_name, match_device};

use crate::error::{Error, Result};
use crate::feed::CodecConfig;

/// Routes libasound's error messages on this thread into a buffer instead of stderr (listing
/// ALSA devices makes it print a page of `ALSA lib ...` lines); what it said goes to the debug
/// log.
#[cfg(target_os = "linux")]
fn quiet_alsa<T>(context: &str, f: impl FnOnce() -> T) -> T {
    let out = alsa::Output::local_error_handler().ok();
    let result = f();
    if let Some(out) = out {
        out.borrow().buffer_string(|bytes| {
            for line in String::from_utf8_lossy(bytes)
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                tracing::debug!("ALSA ({context}): {line}");
            }
        });
    }
    result
}

#[cfg(not(target_os = "linux"))]
fn quiet_alsa<T>(_context: &str, f: impl FnOnce() -> T) -> T {
    f()
}

/// One input device as `audiowire devices` shows it.
#[derive(Debug, Clone)]
pub struct InputListing {
    /// cpal's identifier, usable with `--input`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// True for the host's default input.
    pub is_default: bool,
    /// The default configuration, described.
    pub default_config: Option<String>,
}

/// The audio host `--host` chose for the process (one choice, shared with the player's
/// devices: `audiowire_receiver::device::select_host`), or cpal's default.
fn host() -> Result<cpal::Host> {
    audiowire_receiver::device::host().map_err(|e| Error::Input(e.to_string()))
}

/// Lists the default host's input devices.
pub fn list_inputs() -> Result<Vec<InputListing>> {
    quiet_alsa("listing input devices", || {
        let host = host()?;
        let default_id = host.default_input_device().map(|d| device_id(&d));
        let devices = host
            .input_devices()
            .map_err(|e| Error::Input(format!("cannot list input devices: {e}")))?;
        Ok(devices
            .map(|d| InputListing {
                is_default: default_id.as_deref() == Some(device_id(&d).as_str()),
                name: device_name(&d),
                id: device_id(&d),
                default_config: d.default_input_config().ok().map(|c| {
                    format!(
                        "{} ch, {} Hz, {}",
                        c.channels(),
                        c.sample_rate(),
                        c.sample_format()
                    )
                }),
            })
            .collect())
    })
}

fn find_device(name: Option<&str>) -> Result<Device> {
    let host = host()?;
    let Some(want) = name.filter(|n| !n.is_empty()) else {
        return host.default_input_device().ok_or_else(|| {
            Error::Input(
                "no default input device (no sound card or sound server found); \
                 list devices with `audiowire devices`"
                    .into(),
            )
        });
    };
    let devices: Vec<Device> = host
        .input_devices()
        .map_err(|e| Error::Input(format!("cannot list input devices: {e}")))?
        .collect();
    match_device(&devices, want).ok_or_else(|| {
        Error::Input(format!(
            "no input device matches \"{want}\"; `audiowire devices` lists them"
        ))
    })
}

/// An input device and the configuration chosen for it; the stream is opened by
/// [`InputSpec::start`] on the thread that reads it.
#[derive(Clone)]
pub struct InputSpec {
    device: Device,
    config: StreamConfig,
    format: cpal::SampleFormat,
    /// The callback sizes the host reports for this configuration.
    buffer_size: SupportedBufferSize,
    name: String,
}

impl std::fmt::Debug for InputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSpec")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("format", &self.format)
            .field("buffer_size", &self.buffer_size)
            .finish_non_exhaustive()
    }
}

impl InputSpec {
    /// Picks the device (by id or name; the default when `None` or empty) and a configuration:
    /// `rate` and at most `max_channels` channels if the device offers them, else its default.
    pub fn pick(name: Option<&str>, rate: Option<u32>, max_channels: u16) -> Result<Self> {
        quiet_alsa("choosing the input device", || {
            let device = find_device(name)?;
            let name = device_name(&device);
            let configs: Vec<_> = device
                .supported_input_configs()
                .map_err(|e| Error::Input(format!("{name}: cannot query configurations: {e}")))?
                .filter(|c| c.channels() <= max_channels && c.channels() > 0)
                .filter(|c| rank(c.sample_format()).is_some())
                .collect();
            let default = device
                .default_input_config()
                .map_err(|e| Error::Input(format!("{name}: no usable configuration: {e}")))?;
            let wanted_rate = rate.unwrap_or(default.sample_rate());
            let best = configs
                .iter()
                .filter(|c| c.contains_rate(wanted_rate))
                .min_by_key(|c| {
                    (
                        u16::from(c.channels() != default.channels()),
                        rank(c.sample_format()),
                    )
                })
                .map(|c| c.with_sample_rate(wanted_rate));
            let supported = match best {
                Some(c) => c,
                None if default.channels() <= max_channels => default,
                None => configs
                    .iter()
                    .min_by_key(|c| rank(c.sample_format()))
                    .map(|c| c.with_max_sample_rate())
                    .ok_or_else(|| {
                        Error::Input(format!(
                            "{name} offers no configuration with at most {max_channels} channels"
                        ))
                    })?,
            };
            Ok(Self {
                config: supported.config(),
                format: supported.sample_format(),
                buffer_size: *supported.buffer_size(),
                device,
                name,
            })
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Capture rate.
    pub fn rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// Captured channels.
    pub fn channels(&self) -> u16 {
        self.config.channels
    }

    /// The callback sizes the host reports (JACK: exactly its period).
    pub fn buffer_size(&self) -> &SupportedBufferSize {
        &self.buffer_size
    }

    /// The device's callback size in sample frames, when the host reports a fixed one.
    pub fn period(&self) -> Option<u32> {
        fixed_period(&self.buffer_size)
    }

    /// The wire format that keeps the device's resolution.
    pub fn wire_format(&self) -> SampleFormat {
        match self.format {
            cpal::SampleFormat::F32 | cpal::SampleFormat::F64 => SampleFormat::F32,
            cpal::SampleFormat::I32 | cpal::SampleFormat::U32 => SampleFormat::S32,
            cpal::SampleFormat::I24 => SampleFormat::S24,
            cpal::SampleFormat::U8 | cpal::SampleFormat::I8 => SampleFormat::U8,
            _ => SampleFormat::S16,
        }
    }

    /// Opens and starts the stream, with a ring of `ring_secs` seconds; the callback unparks
    /// `reader` each time it has pushed samples. The stream lives as long as the returned
    /// [`Capture`].
    pub fn start(&self, ring_secs: f64, reader: Thread) -> Result<Capture> {
        quiet_alsa("opening the input stream", || {
            let per_sec = self.rate() as usize * usize::from(self.channels());
            let (prod, cons) = HeapRb::<f32>::new((per_sec as f64 * ring_secs) as usize).split();
            let shared = Arc::new(CaptureShared::default());
            let stream = match self.format {
                cpal::SampleFormat::F32 => {
                    self.build::<f32>(prod, Arc::clone(&shared), reader.clone())
                }
                cpal::SampleFormat::F64 => {
                    self.build::<f64>(prod, Arc::clone(&shared), reader.clone())
                }
                cpal::SampleFormat::I32 => {
                    self.build::<i32>(prod, Arc::clone(&shared), reader.clone())
                }
                cpal::SampleFormat::I24 => {
                    self.build::<cpal::I24>(prod, Arc::clone(&shared), reader.clone())
                }
                cpal::SampleFormat::I16 => {
                    self.build::<i16>(prod, Arc::clone(&shared), reader.clone())
                }
                cpal::SampleFormat::U16 => {
                    self.build::<u16>(prod, Arc::clone(&shared), reader.clone())
                }
                cpal::SampleFormat::I8 => {
                    self.build::<i8>(prod, Arc::clone(&shared), reader.clone())
                }
                cpal::SampleFormat::U8 => {
                    self.build::<u8>(prod, Arc::clone(&shared), reader.clone())
                }
                other => Err(Error::Input(format!(
                    "{}: sample format {other} is not supported",
                    self.name
                ))),
            }?;
            stream
                .play()
                .map_err(|e| Error::Input(format!("{}: cannot start capturing: {e}", self.name)))?;
            Ok(Capture {
                _stream: stream,
                cons,
                shared,
            })
        })
    }

    fn build<T>(
        &self,
        mut prod: ringbuf::HeapProd<f32>,
        shared: Arc<CaptureShared>,
        reader: Thread,
    ) -> Result<cpal::Stream>
    where
        T: SizedSample + Send + 'static,
        f32: FromSample<T>,
    {
        let errors = Arc::clone(&shared);
        // The callback: note the capture delay, convert, push, wake the reader. Nothing else
        // (see the module's documentation for why `unpark` is allowed here).
        let callback = move |data: &[T], info: &InputCallbackInfo| {
            let ts = info.timestamp();
            if let Some(d) = ts.callback.checked_duration_since(ts.capture) {
                shared
                    .capture_delay_ns
                    .store(d.as_nanos() as u64, Ordering::Relaxed);
            }
            let mut chunk = [0.0f32; 256];
            for part in data.chunks(chunk.len()) {
                for (o, &x) in chunk.iter_mut().zip(part) {
                    *o = x.to_sample::<f32>();
                }
                let pushed = prod.push_slice(&chunk[..part.len()]);
                if pushed < part.len() {
                    shared
                        .overrun_samples
                        .fetch_add((part.len() - pushed) as u64, Ordering::Relaxed);
                }
            }
            if !data.is_empty() {
                reader.unpark();
            }
        };
        let on_error = move |_e: cpal::Error| {
            errors.errors.fetch_add(1, Ordering::Relaxed);
        };
        self.device
            .build_input_stream(self.config, callback, on_error, None)
            .map_err(|e| {
                Error::Input(format!(
                    "{}: cannot open {} ch at {} Hz for capture: {e}",
                    self.name, self.config.channels, self.config.sample_rate
                ))
            })
    }
}

/// The callback size, in sample frames, when `report` says it is fixed (cpal's JACK host reports
/// the server's period as `Range { min: n, max: n }`); `None` when it may vary or is unknown
/// (ALSA reports the range of periods the device accepts).
pub fn fixed_period(report: &SupportedBufferSize) -> Option<u32> {
    match *report {
        SupportedBufferSize::Range { min, max } if min == max && min > 0 => Some(min),
        _ => None,
    }
}

/// Live PCM frames where the callback size is unknown, in ms.
const LIVE_PCM_MS: f64 = 5.0;
/// Live Opus frames where the callback size is unknown, in ms.
const LIVE_OPUS_MS: f64 = 10.0;
/// The Opus frame durations a live stream picks from, in ms (40 and 60 ms frames only add
/// latency).
const LIVE_OPUS_CHOICES: [f64; 4] = [2.5, 5.0, 10.0, 20.0];

/// The frame duration in ms for live input: `user`'s (`--frame-ms`) when given; otherwise, for a
/// device that captures at `rate` Hz with the callback sizes in `report`, one callback's worth
/// (PCM) or the largest Opus frame within one callback, and 5 ms (PCM) or 10 ms (Opus) where the
/// callback size is not fixed. See the module's documentation.
pub fn live_frame_ms(
    user: Option<f64>,
    report: &SupportedBufferSize,
    rate: u32,
    codec: &CodecConfig,
) -> f64 {
    if let Some(ms) = user {
        return ms;
    }
    let period_ms = fixed_period(report)
        .filter(|_| rate > 0)
        .map(|p| f64::from(p) * 1000.0 / f64::from(rate));
    match (codec, period_ms) {
        (CodecConfig::Pcm, Some(ms)) => ms,
        (CodecConfig::Pcm, None) => LIVE_PCM_MS,
        (CodecConfig::Opus(_), Some(ms)) => LIVE_OPUS_CHOICES
            .iter()
            .copied()
            // A little tolerance: a period of 5 ms computed from samples may land a hair short.
            .rfind(|&c| c <= ms + 1e-9)
            .unwrap_or(LIVE_OPUS_CHOICES[0]),
        (CodecConfig::Opus(_), None) => LIVE_OPUS_MS,
    }
}

/// A live PCM frame of `cap` sample frames, the most a datagram holds, where the device
/// delivers `period` at a time: the largest divisor of the period within `cap`, so every
/// callback still ends on a frame boundary (256-sample periods and room for 170: frames of 128,
/// two per callback). `cap` itself when the period is no larger, or when the best divisor is
/// less than half of `cap` (a period with few divisors).
pub fn split_period(cap: u32, period: u32) -> u32 {
    if cap == 0 || period <= cap {
        return cap;
    }
    let best = (1..=cap).rev().find(|d| period % d == 0).unwrap_or(1);
    if best * 2 < cap { cap } else { best }
}

/// Lower is preferred.
fn rank(f: cpal::SampleFormat) -> Option<usize> {
    [
        cpal::SampleFormat::F32,
        cpal::SampleFormat::I32,
        cpal::SampleFormat::I24,
        cpal::SampleFormat::I16,
        cpal::SampleFormat::F64,
        cpal::SampleFormat::U16,
        cpal::SampleFormat::I8,
        cpal::SampleFormat::U8,
    ]
    .iter()
    .position(|&x| x == f)
}

/// Shared between the capture callback and the reader, all atomics.
#[derive(Debug, Default)]
pub struct CaptureShared {
    /// Samples dropped because the ring was full (the reader fell behind).
    pub overrun_samples: AtomicU64,
    /// The device's last reported delay from capture to callback, in ns.
    pub capture_delay_ns: AtomicU64,
    /// Errors the backend reported.
    pub errors: AtomicU64,
}

/// A running capture; dropping it stops the stream.
pub struct Capture {
    _stream: cpal::Stream,
    /// Captured samples, interleaved f32.
    pub cons: HeapCons<f32>,
    /// Counters and the capture delay.
    pub shared: Arc<CaptureShared>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::OpusSettings;
    use crate::server::samples_per_frame;

    const JACK_256: SupportedBufferSize = SupportedBufferSize::Range { min: 256, max: 256 };
    const ALSA: SupportedBufferSize = SupportedBufferSize::Range {
        min: 32,
        max: 262_144,
    };
    const OPUS: CodecConfig = CodecConfig::Opus(OpusSettings {
        bitrate: None,
        complexity: 10,
        dtx: false,
        fec: true,
    });

    #[test]
    fn only_a_range_of_one_size_is_a_fixed_period() {
        assert_eq!(fixed_period(&JACK_256), Some(256));
        assert_eq!(fixed_period(&ALSA), None);
        assert_eq!(fixed_period(&SupportedBufferSize::Unknown), None);
        assert_eq!(
            fixed_period(&SupportedBufferSize::Range { min: 0, max: 0 }),
            None
        );
    }

    #[test]
    fn the_users_frame_wins() {
        for report in [JACK_256, ALSA, SupportedBufferSize::Unknown] {
            for codec in [CodecConfig::Pcm, OPUS] {
                assert_eq!(live_frame_ms(Some(20.0), &report, 48_000, &codec), 20.0);
                assert_eq!(live_frame_ms(Some(2.5), &report, 48_000, &codec), 2.5);
            }
        }
    }

    #[test]
    fn live_pcm_frames_are_one_jack_period_exactly() {
        for (period, rate) in [
            (256, 48_000),
            (128, 48_000),
            (64, 44_100),
            (1024, 96_000),
            (256, 44_100),
            (32, 48_000),
            (4096, 192_000),
        ] {
            let report = SupportedBufferSize::Range {
                min: period,
                max: period,
            };
            let ms = live_frame_ms(None, &report, rate, &CodecConfig::Pcm);
            // The stream's frame, as the sender sizes it from the duration: the period itself.
            let spf = samples_per_frame(ms, rate, 8).expect("a valid frame");
            assert_eq!(spf, period, "{period} at {rate} Hz: {ms} ms");
        }
    }

    #[test]
    fn live_pcm_frames_are_5_ms_without_a_fixed_period() {
        assert_eq!(live_frame_ms(None, &ALSA, 48_000, &CodecConfig::Pcm), 5.0);
        let unknown = SupportedBufferSize::Unknown;
        assert_eq!(
            live_frame_ms(None, &unknown, 44_100, &CodecConfig::Pcm),
            5.0
        );
        // A host that reports no rate cannot size a period.
        assert_eq!(live_frame_ms(None, &JACK_256, 0, &CodecConfig::Pcm), 5.0);
    }

    #[test]
    fn live_opus_frames_are_the_largest_that_fit_in_a_period() {
        let at = |period: u32, rate: u32| {
            let report = SupportedBufferSize::Range {
                min: period,
                max: period,
            };
            live_frame_ms(None, &report, rate, &OPUS)
        };
        assert_eq!(at(256, 48_000), 5.0); // 5.33 ms
        assert_eq!(at(240, 48_000), 5.0); // exactly 5 ms
        assert_eq!(at(128, 48_000), 2.5); // 2.67 ms
        assert_eq!(at(64, 48_000), 2.5); // 1.33 ms: the shortest Opus frame
        assert_eq!(at(512, 48_000), 10.0); // 10.67 ms
        assert_eq!(at(1024, 48_000), 20.0); // 21.3 ms
        assert_eq!(at(4096, 48_000), 20.0); // 85 ms: no 40 or 60 ms frames
        assert_eq!(at(256, 44_100), 5.0); // 5.8 ms, resampled to 48 kHz
        assert_eq!(at(441, 44_100), 10.0); // exactly 10 ms
    }

    #[test]
    fn live_opus_frames_are_10_ms_without_a_fixed_period() {
        assert_eq!(live_frame_ms(None, &ALSA, 48_000, &OPUS), 10.0);
        let unknown = SupportedBufferSize::Unknown;
        assert_eq!(live_frame_ms(None, &unknown, 48_000, &OPUS), 10.0);
    }

    #[test]
    fn a_frame_cut_to_fit_a_datagram_divides_the_period() {
        // Stereo f32 in a 1366-byte payload: 170 samples fit, 256 come per callback.
        assert_eq!(split_period(170, 256), 128);
        assert_eq!(split_period(85, 256), 64);
        assert_eq!(split_period(300, 1024), 256);
        assert_eq!(split_period(170, 240), 120);
        // Nothing to cut, or no useful divisor (a prime period).
        assert_eq!(split_period(256, 256), 256);
        assert_eq!(split_period(480, 256), 480);
        assert_eq!(split_period(170, 257), 170);
        assert_eq!(split_period(0, 256), 0);
        assert_eq!(split_period(1, 256), 1);
    }
}
