//! Live input from a cpal input device (`send --input`): listing input devices, choosing a
//! configuration, and capturing into a lock-free ring.
//!
//! The capture callback does two things only: convert the device's samples to f32 and push them
//! into the ring (an overrun is counted in an atomic), and note the device's capture delay. The
//! broadcast's producer thread pops whole frames from the ring and stamps each with the wall
//! clock instant its first sample was captured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use audiowire_protocol::SampleFormat;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{Device, FromSample, InputCallbackInfo, SizedSample, StreamConfig};
use ringbuf::traits::{Producer, Split};
use ringbuf::{HeapCons, HeapRb};

use crate::error::{Error, Result};

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

fn device_name(d: &Device) -> String {
    d.description()
        .map(|desc| desc.name().to_string())
        .or_else(|_| d.id().map(|id| id.to_string()))
        .unwrap_or_else(|_| "unnamed device".into())
}

/// The audio host `--host` chose for the process (one choice, shared with the player's
/// devices: `audiowire_receiver::device::select_host`), or cpal's default.
fn host() -> Result<cpal::Host> {
    audiowire_receiver::device::host().map_err(|e| Error::Input(e.to_string()))
}

fn device_id(d: &Device) -> String {
    d.id().map(|id| id.to_string()).unwrap_or_default()
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
    let lower = want.to_lowercase();
    devices
        .iter()
        .find(|d| device_id(d) == want || device_name(d) == want)
        .or_else(|| {
            devices.iter().find(|d| {
                device_id(d).to_lowercase().contains(&lower)
                    || device_name(d).to_lowercase().contains(&lower)
            })
        })
        .cloned()
        .ok_or_else(|| {
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
    name: String,
}

impl std::fmt::Debug for InputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSpec")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("format", &self.format)
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

    /// Opens and starts the stream, with a ring of `ring_secs` seconds. The stream lives as long
    /// as the returned [`Capture`].
    pub fn start(&self, ring_secs: f64) -> Result<Capture> {
        quiet_alsa("opening the input stream", || {
            let per_sec = self.rate() as usize * usize::from(self.channels());
            let (prod, cons) = HeapRb::<f32>::new((per_sec as f64 * ring_secs) as usize).split();
            let shared = Arc::new(CaptureShared::default());
            let stream = match self.format {
                cpal::SampleFormat::F32 => self.build::<f32>(prod, Arc::clone(&shared)),
                cpal::SampleFormat::F64 => self.build::<f64>(prod, Arc::clone(&shared)),
                cpal::SampleFormat::I32 => self.build::<i32>(prod, Arc::clone(&shared)),
                cpal::SampleFormat::I24 => self.build::<cpal::I24>(prod, Arc::clone(&shared)),
                cpal::SampleFormat::I16 => self.build::<i16>(prod, Arc::clone(&shared)),
                cpal::SampleFormat::U16 => self.build::<u16>(prod, Arc::clone(&shared)),
                cpal::SampleFormat::I8 => self.build::<i8>(prod, Arc::clone(&shared)),
                cpal::SampleFormat::U8 => self.build::<u8>(prod, Arc::clone(&shared)),
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
    ) -> Result<cpal::Stream>
    where
        T: SizedSample + Send + 'static,
        f32: FromSample<T>,
    {
        let errors = Arc::clone(&shared);
        // The callback: note the capture delay, convert, push. Nothing else.
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
