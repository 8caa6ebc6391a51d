//! The player's edge: the socket, the clock and the outputs.
//!
//! It connects, sends `Hello` (asking the sender for a pre-roll equal to the target latency),
//! feeds every received byte to the sans-IO [`Session`], and for each `Audio` event writes the
//! samples to the WAV recorder (exactly as received) and, converted to the output's rate and
//! channels, into the ring that the output consumes. Playback starts once the ring holds the
//! target latency. At `End` it plays out what is buffered and returns a [`Summary`].

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use audiowire_protocol::{Audio, DEFAULT_MAX_FRAME_LEN, StreamInfo};
use ringbuf::traits::{Observer, Producer, Split};
use ringbuf::{HeapProd, HeapRb};
use tracing::{info, warn};

use crate::convert::Converter;
use crate::device::{Chosen, DeviceOutput};
use crate::error::{Error, Result};
use crate::playback::{NullClock, Shared};
use crate::session::{Event, Session, SessionError};
use crate::stats::LatencyStats;
use crate::wav::WavRecorder;

/// The default target latency (see README: "Latency").
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(50);

/// Where the audio goes besides an optional WAV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A cpal output device: the default one, or the one whose id or name matches.
    Device(Option<String>),
    /// No device: a real-time null clock consumes the buffer (used with `--out` alone).
    Null,
}

/// How to play.
#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// `HOST:PORT` of the sender.
    pub addr: String,
    /// Target latency: how much audio is buffered before playback starts.
    pub latency: Duration,
    /// The output.
    pub output: Output,
    /// A WAV file to write the received samples to.
    pub record: Option<PathBuf>,
    /// Open the device at this rate instead of the stream's (the player converts).
    pub device_rate: Option<u32>,
    /// Open the device with this many channels instead of the stream's (the player maps them).
    pub device_channels: Option<u16>,
    /// Longest wait for the connection to open.
    pub connect_timeout: Duration,
    /// Longest silence from the sender before giving up.
    pub silence_timeout: Duration,
}

impl PlayerConfig {
    /// Defaults: 50 ms latency, the default device, 5 s to connect, 10 s of silence tolerated.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            latency: DEFAULT_LATENCY,
            output: Output::Device(None),
            record: None,
            device_rate: None,
            device_channels: None,
            connect_timeout: Duration::from_secs(5),
            silence_timeout: Duration::from_secs(10),
        }
    }
}

/// What happened, for the one-line summary.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The stream as announced.
    pub info: StreamInfo,
    /// Sample frames received.
    pub received_frames: u64,
    /// `Audio` messages received.
    pub messages: u64,
    /// Underruns (callbacks that found the buffer short mid-stream).
    pub underruns: u64,
    /// Samples of silence those underruns inserted.
    pub missing_samples: u64,
    /// Underruns the device itself reported (xruns).
    pub device_xruns: u64,
    /// Per-frame latency, sender's schedule to the speaker.
    pub latency: LatencyStats,
    /// The target latency.
    pub target: Duration,
    /// The device's own delay, last reported.
    pub device_delay: Duration,
    /// The output's description.
    pub output: String,
    /// The WAV file written, if any.
    pub recorded: Option<PathBuf>,
    /// True when stopped by Ctrl-C before the end.
    pub interrupted: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.received_frames as f64 / f64::from(self.info.sample_rate);
        write!(
            f,
            "{} {secs:.2} s ({} frames, {} Hz {} ch {}) to {} · {} underrun{}",
            if self.interrupted {
                "stopped after"
            } else {
                "played"
            },
            self.messages,
            self.info.sample_rate,
            self.info.channels,
            self.info.format,
            self.output,
            self.underruns,
            if self.underruns == 1 { "" } else { "s" },
        )?;
        match (self.latency.quantile_ms(0.5), self.latency.max_ms()) {
            (Some(p50), Some(max)) => write!(
                f,
                " · latency {p50:.1} ms median, {max:.1} ms max (target {} ms + device {:.1} ms)",
                self.target.as_millis(),
                self.device_delay.as_secs_f64() * 1000.0
            )?,
            _ => write!(f, " · latency n/a (stream shorter than the buffer)")?,
        }
        if self.device_xruns > 0 {
            write!(f, " · {} device xruns", self.device_xruns)?;
        }
        if let Some(p) = &self.recorded {
            write!(f, " · wrote {}", p.display())?;
        }
        Ok(())
    }
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn connect(config: &PlayerConfig) -> Result<TcpStream> {
    let fail = |reason: String| Error::Connect {
        addr: config.addr.clone(),
        reason,
    };
    let addrs: Vec<_> = config
        .addr
        .to_socket_addrs()
        .map_err(|e| {
            fail(format!(
                "cannot resolve the address ({e}); expected HOST:PORT"
            ))
        })?
        .collect();
    let mut last = fail("the name resolved to no address".into());
    for a in addrs {
        match TcpStream::connect_timeout(&a, config.connect_timeout) {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = fail(match e.kind() {
                    ErrorKind::ConnectionRefused => {
                        "connection refused (is `audiowire send` running there?)".into()
                    }
                    ErrorKind::TimedOut | ErrorKind::WouldBlock => format!(
                        "timed out after {} s (check the address and any firewall)",
                        config.connect_timeout.as_secs()
                    ),
                    _ => e.to_string(),
                })
            }
        }
    }
    Err(last)
}

/// The output side: ring producer, converter and the thing consuming the ring.
struct Pipeline {
    info: StreamInfo,
    recorder: Option<WavRecorder>,
    prod: HeapProd<f32>,
    shared: Arc<Shared>,
    converter: Converter,
    out_rate: u32,
    out_channels: u16,
    target_samples: usize,
    target: Duration,
    floats: Vec<f32>,
    converted: Vec<f32>,
    latency: LatencyStats,
    description: String,
    _device: Option<DeviceOutput>,
    _null: Option<NullClock>,
    received_frames: u64,
    messages: u64,
}

impl Pipeline {
    fn new(info: StreamInfo, config: &PlayerConfig) -> Result<Self> {
        let recorder = match &config.record {
            Some(p) => Some(WavRecorder::create(p, &info)?),
            None => None,
        };
        let period_frames = (info.sample_rate / 100).max(64); // about 10 ms
        let chosen = match &config.output {
            Output::Device(name) => Some(Chosen::pick(
                name.as_deref(),
                config.device_rate.unwrap_or(info.sample_rate),
                config.device_channels.unwrap_or(info.channels),
                period_frames,
            )?),
            Output::Null => None,
        };
        let (out_rate, out_channels) = chosen
            .as_ref()
            .map_or((info.sample_rate, info.channels), |c| {
                (c.rate(), c.channels())
            });
        let converter = Converter::new(info.sample_rate, info.channels, out_rate, out_channels)?;
        let per_sec = out_rate as usize * usize::from(out_channels);
        let target_samples = (config.latency.as_secs_f64() * per_sec as f64) as usize;
        let capacity = 2 * target_samples + per_sec;
        let (prod, cons) = HeapRb::<f32>::new(capacity).split();
        let shared = Shared::new();
        let (device, null, description) = match chosen {
            Some(c) => {
                let desc = format!(
                    "\"{}\" ({} Hz {} ch {}{})",
                    c.name(),
                    c.rate(),
                    c.channels(),
                    c.sample_format(),
                    if converter.is_identity() {
                        ""
                    } else {
                        ", converted"
                    }
                );
                (Some(c.start(cons, Arc::clone(&shared))?), None, desc)
            }
            None => {
                let period = Duration::from_millis(10);
                let spp = (per_sec as f64 * period.as_secs_f64()) as usize;
                let clock = NullClock::start(cons, Arc::clone(&shared), spp, period)
                    .map_err(|e| Error::Device(format!("cannot start the null output: {e}")))?;
                (None, Some(clock), "no device".to_string())
            }
        };
        info!(
            "stream: {} Hz, {} ch, {}, {} samples per frame; output: {description}",
            info.sample_rate, info.channels, info.format, info.samples_per_frame
        );
        Ok(Self {
            info,
            recorder,
            prod,
            shared,
            converter,
            out_rate,
            out_channels,
            target_samples,
            target: config.latency,
            floats: Vec::new(),
            converted: Vec::new(),
            latency: LatencyStats::default(),
            description,
            _device: device,
            _null: null,
            received_frames: 0,
            messages: 0,
        })
    }

    fn samples_per_sec(&self) -> f64 {
        f64::from(self.out_rate) * f64::from(self.out_channels)
    }

    /// Takes one frame: records it, converts it and queues it for the output.
    fn push(&mut self, audio: &Audio, shutdown: &AtomicBool) -> Result<()> {
        if let Some(r) = self.recorder.as_mut() {
            r.write(&audio.payload)?;
        }
        self.messages += 1;
        self.received_frames += (audio.payload.len() / self.info.bytes_per_frame()) as u64;
        self.floats.clear();
        self.info
            .format
            .decode_floats(&audio.payload, &mut self.floats);
        self.converted.clear();
        self.converter.process(&self.floats, &mut self.converted)?;
        if self.shared.started.load(Ordering::Acquire) {
            let queued = self.prod.occupied_len() as f64 / self.samples_per_sec();
            let device = self.shared.device_delay_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let at = unix_micros() + ((queued + device) * 1e6) as i64;
            self.latency.record(at - audio.timestamp_us as i64);
        }
        self.enqueue(shutdown)
    }

    /// Moves `converted` into the ring, waiting while it is full (the output drains it in real
    /// time). Bounded: an output that stops consuming is an error after 5 s.
    fn enqueue(&mut self, shutdown: &AtomicBool) -> Result<()> {
        let mut rest: &[f32] = &self.converted;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rest.is_empty() {
            let n = self.prod.push_slice(rest);
            rest = &rest[n..];
            if !self.shared.started.load(Ordering::Relaxed)
                && self.prod.occupied_len() >= self.target_samples
            {
                self.shared.started.store(true, Ordering::Release);
            }
            if rest.is_empty() || shutdown.load(Ordering::Relaxed) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Device(format!(
                    "the output {} stopped consuming audio",
                    self.description
                )));
            }
            // The ring is full and playback is running: the output makes room in real time.
            self.shared.started.store(true, Ordering::Release);
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Flushes the converter and plays out everything buffered (bounded in time).
    fn finish(&mut self, shutdown: &AtomicBool) -> Result<()> {
        self.converted.clear();
        self.converter.flush(&mut self.converted)?;
        self.enqueue(shutdown)?;
        self.shared.ended.store(true, Ordering::Release);
        self.shared.started.store(true, Ordering::Release);
        let buffered = self.prod.occupied_len() as f64 / self.samples_per_sec();
        let deadline = Instant::now() + Duration::from_secs_f64(buffered + 3.0);
        while self.prod.occupied_len() > 0 && Instant::now() < deadline {
            if shutdown.load(Ordering::Relaxed) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(5));
        }
        // The last samples are in the device; give it its own delay to play them.
        let device = Duration::from_nanos(self.shared.device_delay_ns.load(Ordering::Relaxed));
        thread::sleep(device.min(Duration::from_millis(500)) + Duration::from_millis(20));
        Ok(())
    }

    fn summary(&mut self, interrupted: bool) -> Result<Summary> {
        if let Some(r) = self.recorder.as_mut() {
            r.finalize()?;
        }
        let backend = self.shared.backend_errors.load(Ordering::Relaxed);
        if backend > 0 {
            tracing::debug!("the audio backend reported {backend} non-fatal errors");
        }
        Ok(Summary {
            info: self.info,
            received_frames: self.received_frames,
            messages: self.messages,
            underruns: self.shared.underruns.load(Ordering::Relaxed),
            missing_samples: self.shared.missing_samples.load(Ordering::Relaxed),
            device_xruns: self.shared.device_xruns.load(Ordering::Relaxed),
            latency: self.latency.clone(),
            target: self.target,
            device_delay: Duration::from_nanos(self.shared.device_delay_ns.load(Ordering::Relaxed)),
            output: self.description.clone(),
            recorded: self.recorder.as_ref().map(|r| r.path().to_path_buf()),
            interrupted,
        })
    }
}

/// Plays one stream from `config.addr` to the end (or until `shutdown` is set).
pub fn play(config: &PlayerConfig, shutdown: &AtomicBool) -> Result<Summary> {
    let addr = config.addr.clone();
    if let Output::Device(name) = &config.output {
        crate::device::probe(name.as_deref())?;
    }
    let mut stream = connect(config)?;
    let lost = |e: std::io::Error| Error::Connection {
        addr: addr.clone(),
        reason: format!("failed: {e}"),
    };
    stream.set_nodelay(true).map_err(lost)?;
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(lost)?;
    let client = concat!("audiowire-play/", env!("CARGO_PKG_VERSION"));
    stream
        .write_all(&Session::hello(client, config.latency.as_millis() as u64))
        .map_err(lost)?;

    let mut session = Session::new(DEFAULT_MAX_FRAME_LEN);
    let mut pipeline: Option<Pipeline> = None;
    let mut events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_data = Instant::now();
    let protocol = |e: SessionError| Error::Protocol {
        addr: addr.clone(),
        reason: e.to_string(),
    };
    let mut interrupted = false;
    while !session.is_ended() {
        if shutdown.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(Error::Connection {
                    addr,
                    reason: format!(
                        "was closed by the sender {}",
                        if pipeline.is_some() {
                            "mid-stream, before End"
                        } else {
                            "before the stream started"
                        }
                    ),
                });
            }
            Ok(n) => {
                last_data = Instant::now();
                session.receive(&buf[..n], &mut events).map_err(protocol)?;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if last_data.elapsed() > config.silence_timeout {
                    return Err(Error::Connection {
                        addr,
                        reason: format!(
                            "went silent: nothing received for {} s",
                            config.silence_timeout.as_secs()
                        ),
                    });
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(lost(e)),
        }
        for event in events.drain(..) {
            match event {
                Event::Info(info) => pipeline = Some(Pipeline::new(info, config)?),
                Event::Audio(a) => {
                    if let Some(p) = pipeline.as_mut() {
                        p.push(&a, shutdown)?;
                    }
                }
                Event::End { .. } => {}
                Event::SenderError(text) => return Err(Error::Sender(text)),
            }
        }
    }
    let Some(mut p) = pipeline else {
        return Err(Error::Connection {
            addr,
            reason: "ended before the stream started".into(),
        });
    };
    if !interrupted {
        p.finish(shutdown)?;
        interrupted = shutdown.load(Ordering::Relaxed);
    }
    let summary = p.summary(interrupted)?;
    if summary.underruns > 0 {
        warn!(
            "{} underruns inserted {:.1} ms of silence; a larger --latency may help",
            summary.underruns,
            summary.missing_samples as f64 / p.samples_per_sec() * 1000.0
        );
    }
    Ok(summary)
}
