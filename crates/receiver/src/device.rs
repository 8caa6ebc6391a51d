//! cpal output devices: listing them, choosing a configuration for a stream, and building the
//! output stream whose callback is [`crate::playback::render`] and nothing else.
//!
//! A configuration with the stream's own rate and channel count is preferred (float samples
//! first); when the device has none, its default configuration is used and the player converts
//! (see [`crate::convert`]).
//!
//! The audio host (ALSA, JACK with the `jack` feature, ...) is chosen once per process with
//! [`select_host`] (`--host`); every lookup here, and any other module's, goes through [`host`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{
    BufferSize, Device, FromSample, OutputCallbackInfo, SampleFormat, SizedSample, StreamConfig,
    SupportedBufferSize,
};
use ringbuf::HeapCons;

use crate::error::{Error, Result};
use crate::playback::{Shared, render};

/// Routes libasound's error messages on this thread into a buffer instead of stderr, so a
/// missing sound card gives our one-line error, not a page of `ALSA lib ...` lines. What ALSA
/// said is logged at debug level (`-v`) by [`alsa_said`].
#[cfg(target_os = "linux")]
mod alsa_quiet {
    use std::cell::RefCell;
    use std::rc::Rc;

    thread_local! {
        static BUF: RefCell<Option<Rc<RefCell<alsa::Output>>>> = const { RefCell::new(None) };
    }

    pub fn install() {
        BUF.with_borrow_mut(|b| {
            if b.is_none() {
                *b = alsa::Output::local_error_handler().ok();
            }
        });
    }

    pub fn said(context: &str) {
        // Take the buffer (a fresh one replaces it), so memory stays bounded.
        let old = BUF.with_borrow_mut(|b| b.take());
        if let Some(out) = old {
            out.borrow().buffer_string(|bytes| {
                let text = String::from_utf8_lossy(bytes);
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::debug!("ALSA ({context}): {line}");
                }
            });
        }
        install();
    }
}

fn quiet_alsa() {
    #[cfg(target_os = "linux")]
    alsa_quiet::install();
}

fn alsa_said(context: &str) {
    #[cfg(target_os = "linux")]
    alsa_quiet::said(context);
    #[cfg(not(target_os = "linux"))]
    let _ = context;
}

/// The host [`select_host`] chose for this process.
static HOST: OnceLock<cpal::HostId> = OnceLock::new();

/// The audio hosts this build knows, by name (`alsa`, and `jack` in a build with the `jack`
/// feature), whether or not they work on this machine.
pub fn host_names() -> Vec<&'static str> {
    cpal::ALL_HOSTS.iter().map(|h| h.name()).collect()
}

/// Chooses the audio host by name (case-insensitive) for the rest of the process; call it
/// before any device is used. Choosing again the same host is fine; another one is refused.
pub fn select_host(name: &str) -> Result<()> {
    let want = name.trim().to_lowercase();
    let Some(id) = cpal::ALL_HOSTS
        .iter()
        .copied()
        .find(|h| h.name().to_lowercase() == want)
    else {
        let hint = if want == "jack" {
            " (this audiowire was built without JACK: build it with `--features jack`, which \
             needs libjack's headers, e.g. Debian's libjack-jackd2-dev)"
        } else {
            ""
        };
        return Err(Error::Device(format!(
            "no audio host \"{name}\"{hint}; this build has: {}",
            host_names().join(", ")
        )));
    };
    let chosen = *HOST.get_or_init(|| id);
    if chosen != id {
        return Err(Error::Device(format!(
            "the audio host is already {}, cannot switch to {}",
            chosen.name(),
            id.name()
        )));
    }
    Ok(())
}

/// The audio host: the one [`select_host`] chose, or cpal's default (ALSA on Linux).
pub fn host() -> Result<cpal::Host> {
    match HOST.get() {
        None => Ok(cpal::default_host()),
        Some(&id) => cpal::host_from_id(id)
            .map_err(|e| Error::Device(format!("the {} host is unavailable: {e}", id.name()))),
    }
}

/// Most samples rendered per inner step of the callback (scratch size, allocated up front).
const SCRATCH: usize = 8192;

/// One output device as `audiowire devices` shows it.
#[derive(Debug, Clone)]
pub struct DeviceListing {
    /// cpal's identifier, usable with `--device`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// True for the host's default output.
    pub is_default: bool,
    /// The default configuration, described.
    pub default_config: Option<String>,
    /// Every supported configuration range, described.
    pub configs: Vec<String>,
}

/// Describes a device's configuration ranges compactly: one line per rate range, with the
/// channel counts and the PCM sample formats offered at that range.
fn describe_ranges(configs: &[cpal::SupportedStreamConfigRange]) -> Vec<String> {
    /// A rate range, and the channel counts and formats offered at it.
    type Group = ((u32, u32), Vec<u16>, Vec<SampleFormat>);
    let mut groups: Vec<Group> = Vec::new();
    for c in configs {
        if format_rank(c.sample_format()) == usize::MAX {
            continue; // DSD and the like: not PCM we can play
        }
        let key = (c.min_sample_rate(), c.max_sample_rate());
        let i = match groups.iter().position(|g| g.0 == key) {
            Some(i) => i,
            None => {
                groups.push((key, Vec::new(), Vec::new()));
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        if !g.1.contains(&c.channels()) {
            g.1.push(c.channels());
        }
        if !g.2.contains(&c.sample_format()) {
            g.2.push(c.sample_format());
        }
    }
    groups
        .into_iter()
        .map(|((lo, hi), mut ch, mut fmts)| {
            ch.sort_unstable();
            fmts.sort_by_key(|f| format_rank(*f));
            let channels = match (ch.first(), ch.last()) {
                (Some(a), Some(b)) if a == b => format!("{a} ch"),
                (Some(a), Some(b)) if usize::from(b - a) + 1 == ch.len() => format!("{a}–{b} ch"),
                _ => format!(
                    "{} ch",
                    ch.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let rates = if lo == hi {
                format!("{lo} Hz")
            } else {
                format!("{lo}–{hi} Hz")
            };
            let formats: Vec<String> = fmts.iter().map(|f| f.to_string()).collect();
            format!("{channels}, {rates}, {}", formats.join(" "))
        })
        .collect()
}

/// A device's human-readable name (its id, or "unnamed device", when it has none).
pub fn device_name(d: &Device) -> String {
    d.description()
        .map(|desc| desc.name().to_string())
        .or_else(|_| d.id().map(|id| id.to_string()))
        .unwrap_or_else(|_| "unnamed device".into())
}

/// cpal's identifier of a device, as `--device` and `--input` accept it.
pub fn device_id(d: &Device) -> String {
    d.id().map(|id| id.to_string()).unwrap_or_default()
}

/// Lists the default host's output devices and what they support.
pub fn list_outputs() -> Result<Vec<DeviceListing>> {
    quiet_alsa();
    let host = host()?;
    let default_id = host.default_output_device().map(|d| device_id(&d));
    let devices = host
        .output_devices()
        .map_err(|e| Error::Device(format!("cannot list output devices: {e}")))?;
    let mut out = Vec::new();
    for d in devices {
        let id = device_id(&d);
        let default_config = d.default_output_config().ok().map(|c| {
            format!(
                "{} ch, {} Hz, {}",
                c.channels(),
                c.sample_rate(),
                c.sample_format()
            )
        });
        let ranges: Vec<_> = d
            .supported_output_configs()
            .map(|cs| cs.collect())
            .unwrap_or_default();
        let configs = describe_ranges(&ranges);
        out.push(DeviceListing {
            is_default: default_id.as_deref() == Some(id.as_str()),
            name: device_name(&d),
            id,
            default_config,
            configs,
        });
    }
    alsa_said("listing devices");
    Ok(out)
}

/// Checks that the output device can be found and queried, before anything is connected, so a
/// machine without sound fails fast with one clear line.
pub fn probe(name: Option<&str>) -> Result<()> {
    let result = find_device(name).and_then(|d| {
        d.supported_output_configs()
            .map(|_| ())
            .map_err(|e| Error::Device(format!("{}: {e}", device_name(&d))))
    });
    alsa_said("probing the output device");
    result
}

/// A device and the configuration chosen for a stream.
pub struct Chosen {
    device: Device,
    config: StreamConfig,
    format: SampleFormat,
    name: String,
}

impl std::fmt::Debug for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chosen")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("format", &self.format)
            .finish()
    }
}

/// Preference among sample formats when the device offers several.
fn format_rank(f: SampleFormat) -> usize {
    [
        SampleFormat::F32,
        SampleFormat::I32,
        SampleFormat::I24,
        SampleFormat::I16,
        SampleFormat::F64,
        SampleFormat::U16,
        SampleFormat::I8,
        SampleFormat::U8,
    ]
    .iter()
    .position(|&x| x == f)
    .unwrap_or(usize::MAX)
}

fn find_device(name: Option<&str>) -> Result<Device> {
    quiet_alsa();
    let host = host()?;
    let Some(want) = name else {
        return host.default_output_device().ok_or_else(|| {
            Error::Device(
                "no default output device (no sound card or sound server found; \
                 list devices with `audiowire devices`, or record with --out FILE.wav)"
                    .into(),
            )
        });
    };
    let devices: Vec<Device> = host
        .output_devices()
        .map_err(|e| Error::Device(format!("cannot list output devices: {e}")))?
        .collect();
    match_device(&devices, want).ok_or_else(|| {
        Error::Device(format!(
            "no output device matches \"{want}\"; `audiowire devices` lists them"
        ))
    })
}

/// The device `want` names among `devices`: its exact id or name first, else the first whose
/// id or name contains it, ignoring case (output and input devices alike).
pub fn match_device(devices: &[Device], want: &str) -> Option<Device> {
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
}

impl Chosen {
    /// Picks a device (by id or name, default when `None`) and a configuration for a stream of
    /// `rate` Hz and `channels` channels, asking for periods of about `period_frames`.
    pub fn pick(name: Option<&str>, rate: u32, channels: u16, period_frames: u32) -> Result<Self> {
        let chosen = Self::pick_inner(name, rate, channels, period_frames);
        alsa_said("choosing the output device");
        chosen
    }

    fn pick_inner(
        name: Option<&str>,
        rate: u32,
        channels: u16,
        period_frames: u32,
    ) -> Result<Self> {
        let device = find_device(name)?;
        let name = device_name(&device);
        let exact = device
            .supported_output_configs()
            .map_err(|e| Error::Device(format!("{name}: cannot query configurations: {e}")))?
            .filter(|c| c.channels() == channels && c.contains_rate(rate))
            .filter(|c| format_rank(c.sample_format()) != usize::MAX)
            .min_by_key(|c| format_rank(c.sample_format()));
        let supported = match exact {
            Some(c) => c.with_sample_rate(rate),
            None => device
                .default_output_config()
                .map_err(|e| Error::Device(format!("{name}: no usable configuration: {e}")))?,
        };
        let buffer_size = match supported.buffer_size() {
            SupportedBufferSize::Range { min, max } => {
                BufferSize::Fixed(period_frames.clamp(*min, *max))
            }
            SupportedBufferSize::Unknown => BufferSize::Default,
        };
        let mut config = supported.config();
        config.buffer_size = buffer_size;
        Ok(Self {
            device,
            config,
            format: supported.sample_format(),
            name,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's rate.
    pub fn rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// The device's channel count.
    pub fn channels(&self) -> u16 {
        self.config.channels
    }

    /// The device's sample format.
    pub fn sample_format(&self) -> SampleFormat {
        self.format
    }

    /// Builds and starts the output stream.
    pub fn start(self, cons: HeapCons<f32>, shared: Arc<Shared>) -> Result<DeviceOutput> {
        quiet_alsa();
        let stream = match self.format {
            SampleFormat::F32 => build::<f32>(&self, cons, shared),
            SampleFormat::I32 => build::<i32>(&self, cons, shared),
            SampleFormat::I24 => build::<cpal::I24>(&self, cons, shared),
            SampleFormat::I16 => build::<i16>(&self, cons, shared),
            SampleFormat::F64 => build::<f64>(&self, cons, shared),
            SampleFormat::U16 => build::<u16>(&self, cons, shared),
            SampleFormat::I8 => build::<i8>(&self, cons, shared),
            SampleFormat::U8 => build::<u8>(&self, cons, shared),
            other => Err(Error::Device(format!(
                "{}: sample format {other} is not supported",
                self.name
            ))),
        };
        alsa_said("opening the output stream");
        let stream = stream?;
        stream
            .play()
            .map_err(|e| Error::Device(format!("{}: cannot start playback: {e}", self.name)))?;
        Ok(DeviceOutput {
            _stream: stream,
            name: self.name,
        })
    }
}

fn build<T>(chosen: &Chosen, mut cons: HeapCons<f32>, shared: Arc<Shared>) -> Result<cpal::Stream>
where
    T: SizedSample + FromSample<f32> + Send + 'static,
{
    let mut scratch = vec![0.0f32; SCRATCH];
    let errors = Arc::clone(&shared);
    // The callback: record the device delay, pop and pad, convert. Nothing else.
    let callback = move |data: &mut [T], info: &OutputCallbackInfo| {
        shared.begin_callback(data.len());
        let ts = info.timestamp();
        if let Some(d) = ts.playback.checked_duration_since(ts.callback) {
            shared
                .device_delay_ns
                .store(d.as_nanos() as u64, Ordering::Relaxed);
        }
        for chunk in data.chunks_mut(SCRATCH) {
            let s = &mut scratch[..chunk.len()];
            render(&mut cons, s, &shared);
            for (o, &x) in chunk.iter_mut().zip(s.iter()) {
                *o = T::from_sample(x);
            }
        }
    };
    let on_error = move |e: cpal::Error| {
        let counter = if e.kind() == cpal::ErrorKind::Xrun {
            &errors.device_xruns
        } else {
            &errors.backend_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    };
    chosen
        .device
        .build_output_stream(chosen.config, callback, on_error, None)
        .map_err(|e| {
            Error::Device(format!(
                "{}: cannot open {} ch at {} Hz: {e}",
                chosen.name, chosen.config.channels, chosen.config.sample_rate
            ))
        })
}

/// A running output stream; dropping it stops playback.
pub struct DeviceOutput {
    _stream: cpal::Stream,
    /// The device's name.
    pub name: String,
}

impl std::fmt::Debug for DeviceOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceOutput")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
