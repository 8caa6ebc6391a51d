//! The player's edge: the link, the clock and the outputs.
//!
//! It connects (TCP, or UDP with a cookie handshake), asking the sender for a pre-roll equal to
//! the starting target latency, and feeds every frame into [`Playout`] (jitter buffer and level
//! controller). A feeding loop keeps the output's ring topped up to a small low-water mark: each
//! frame the playout hands out goes to the WAV recorder (exactly as received, or concealed in
//! place of a lost one), and, resampled by the controller's ratio and converted to the output's
//! rate and channels, into the ring that the output consumes. At `End` it plays out what is
//! buffered and returns a [`Summary`].

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use audiowire_protocol::clock::{Exchange, OffsetFilter};
use audiowire_protocol::{Report, StreamInfo};
use ringbuf::traits::{Observer, Producer, Split};
use ringbuf::{HeapProd, HeapRb};
use tracing::{info, warn};

use crate::convert::Converter;
use crate::device::{Chosen, DeviceOutput};
use crate::error::{Error, Result};
use crate::jitter::{Popped, TargetPolicy};
use crate::link::{Connector, Link, Transport};
use crate::playback::{NullClock, Shared};
use crate::playout::{Playout, PlayoutStats};
use crate::session::{Event, Greeting};
use crate::stats::LatencyStats;
use crate::wav::WavRecorder;

/// The default starting target latency (see README: "Latency").
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(10);
/// The default lowest adaptive target: 1 ms, so in practice what the output needs (its
/// callback plus [`OUTPUT_MARGIN`]).
pub const DEFAULT_LATENCY_MIN: Duration = Duration::from_millis(1);
/// How long after the output starts its floor is two callbacks rather than one.
pub const START_WINDOW: Duration = Duration::from_secs(2);
/// What an adaptive target keeps above the output's callback at least, in seconds.
pub const OUTPUT_MARGIN: f64 = 0.001;
/// ... and at most, after underruns.
const MAX_MARGIN: f64 = 0.010;
/// How long without an underrun before the margin narrows again.
const MARGIN_CALM: Duration = Duration::from_secs(10);
/// How long before the output's next callback the feeding thread decides that a missing frame
/// will not make it, in seconds. It wakes up that long before the callback the ring cannot
/// cover (see `Pipeline::poll_wait`), so this is scheduling slack only.
pub const FEED_SLACK: f64 = 0.001;

/// How much of a stream the jitter buffer conceals in a row, with nothing buffered, before it
/// stalls when playing (see [`TargetPolicy::bridge`]): longer than the late frames of a jittery
/// network, shorter than a sender that stopped.
pub const BRIDGE: Duration = Duration::from_millis(40);
/// The default highest adaptive target.
pub const DEFAULT_LATENCY_MAX: Duration = Duration::from_secs(1);

// The feeding thread's rules, in seconds, pure so that the virtual-time bench
// (`benches/benches/playout.rs`) drives the playout core by the same ones.

/// How many frames of `frame` seconds the null output takes per callback: one, or for frames
/// under 1 ms as many as make 1 ms (a clock waking 10,000 times a second would cost more than
/// the stream).
pub fn null_frames_per_callback(frame: f64) -> u32 {
    (0.001 / frame - 1e-9).ceil().max(1.0) as u32
}

/// What the adaptive target keeps above the quantile of relative delay with the null output
/// (`--out` without a device), given the `margin` over the output, for frames of `frame`
/// seconds: its callbacks take the stream a frame at a time, each as its turn comes
/// ([`crate::playback::NullClock`]), so a frame is wanted only the feeding slack
/// ([`FEED_SLACK`]) before its first sample plays, not up to a callback earlier as with a
/// device whose periods fall anywhere in a frame (frames under 1 ms, taken a few at a time,
/// up to that many less one earlier).
pub fn null_margin(margin: f64, frame: f64) -> f64 {
    FEED_SLACK + margin + f64::from(null_frames_per_callback(frame) - 1) * frame
}

/// The null output's floor for the adaptive target: [`null_margin`], and for the first
/// [`START_WINDOW`] (`starting`), while the target still learns the network, a frame more, at
/// most 10 ms, as a device's start floor is a callback more. Without it, one of three players
/// and their sender on two cores stalled in 1 of 8 runs of `tests/udp.rs` (none in 10 with
/// it); in virtual
/// time it spares Wi-Fi at 10 ms frames its start stalls (18 in 30 runs over TCP, 32 over UDP,
/// against 0 and 8).
pub fn null_floor(margin: f64, frame: f64, starting: bool) -> f64 {
    null_margin(margin, frame) + if starting { frame.min(0.010) } else { 0.0 }
}

/// The audio the start waits for with the null output: a frame more than the `target` (its
/// first callback takes the first frame at once, and the frame after the pre-roll burst comes a
/// frame later), so the frames after the start wait about the target, as it wants.
pub fn null_start_level(frame: f64, target: f64) -> f64 {
    frame + target
}

/// The lowest adaptive target an output with `callback`-second callbacks allows: one callback
/// and `margin`, two callbacks while it is `starting` (its first [`START_WINDOW`]).
pub fn target_floor(callback: f64, margin: f64, starting: bool) -> f64 {
    let periods = if starting { 2.0 } else { 1.0 };
    periods * callback + margin
}

/// The audio the start waits for besides the target: two callbacks (the first takes a whole
/// period at once, and the next frame comes a frame after the pre-roll burst).
pub fn start_level(callback: f64) -> f64 {
    2.0 * callback
}

/// Whether a missing frame must be given up now (concealed, or the buffer stalls): the `queued`
/// audio cannot cover the next callback, which is under [`FEED_SLACK`] away (`until`).
pub fn must_give_up(queued: f64, until: f64, callback: f64) -> bool {
    queued < callback && until < FEED_SLACK
}

/// The first wait before reconnecting; it doubles on each failure.
const RECONNECT_FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between reconnection attempts (so a sender that comes back is found
/// within half a second).
const RECONNECT_MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A connection being re-established.
#[derive(Debug)]
struct Reconnect {
    since: Instant,
    next_try: Instant,
    backoff: Duration,
    why: String,
}

/// Where the audio goes besides an optional WAV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A cpal output device: the default one, or the one whose id or name matches.
    Device(Option<String>),
    /// No device: a real-time null clock consumes the buffer (used with `--out` alone).
    Null,
}

/// What a player does when a frame is not there in time and nothing is buffered behind it (a
/// datagram late or lost, or a TCP segment held up by the network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatePolicy {
    /// Conceal it in its place and drop it if it comes (the stream keeps its timing: what a
    /// listener wants), for up to [`BRIDGE`] in a row, then stall.
    Conceal,
    /// Stall until it comes (the latency rises by the wait; every frame that arrives is kept:
    /// what a recording wants).
    Wait,
}

/// How stats are shown while playing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatsMode {
    /// Only the summary at the end.
    #[default]
    Off,
    /// A status line on stderr, rewritten twice a second.
    Line,
    /// A JSON object per line on stdout, twice a second.
    Json,
}

/// How to play.
#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// `HOST:PORT` of the sender (RFCOMM: `MAC:CHANNEL`).
    pub addr: String,
    /// TCP, UDP or RFCOMM.
    pub transport: Transport,
    /// Reach the sender through this instead of `addr` (a byte stream, as on TCP).
    pub connector: Option<Connector>,
    /// Starting target latency (and the pre-roll asked of the sender).
    pub latency: Duration,
    /// True: the target stays at `latency`. False: it adapts within the bounds below.
    pub pinned: bool,
    /// Lowest adaptive target.
    pub latency_min: Duration,
    /// Highest adaptive target.
    pub latency_max: Duration,
    /// The output.
    pub output: Output,
    /// A WAV file to write the stream to (received frames exactly, lost ones concealed).
    pub record: Option<PathBuf>,
    /// Open the device at this rate instead of the stream's (the player converts).
    pub device_rate: Option<u32>,
    /// Open the device with this many channels instead of the stream's (the player maps them).
    pub device_channels: Option<u16>,
    /// Longest wait for the connection (TCP) or the first answer (UDP).
    pub connect_timeout: Duration,
    /// Longest silence from the sender before giving up.
    pub silence_timeout: Duration,
    /// Live stats.
    pub stats: StatsMode,
    /// Reconnect when the connection dies mid-stream, resuming where the stream was.
    pub reconnect: bool,
    /// Give up reconnecting after this long.
    pub reconnect_for: Duration,
    /// A pre-shared key: prove it to the sender and open its sealed audio.
    pub key: Option<audiowire_protocol::auth::Key>,
    /// The device period asked of the output (its callback size), 10 ms by default: smaller
    /// for lower latency, larger for a busy machine.
    pub period: Duration,
    /// Late frames; `None`: [`LatePolicy::Conceal`] when playing on a device,
    /// [`LatePolicy::Wait`] when only recording.
    pub late: Option<LatePolicy>,
    /// Opus over UDP, when playing with an adaptive target: for 5 s after each loss, hold one
    /// frame more and stall rather than bridge an empty buffer, so that more lost frames are
    /// recovered from the next packet's FEC (see [`TargetPolicy::fec_hold`]).
    pub fec_hold: bool,
}

impl PlayerConfig {
    /// Defaults: TCP, adaptive latency from 10 ms within 1 ms–1 s, the default device, 5 s to
    /// connect, 10 s of silence tolerated.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            transport: Transport::Tcp,
            connector: None,
            latency: DEFAULT_LATENCY,
            pinned: false,
            latency_min: DEFAULT_LATENCY_MIN,
            latency_max: DEFAULT_LATENCY_MAX,
            output: Output::Device(None),
            record: None,
            device_rate: None,
            device_channels: None,
            connect_timeout: Duration::from_secs(5),
            silence_timeout: Duration::from_secs(10),
            stats: StatsMode::Off,
            reconnect: true,
            reconnect_for: Duration::from_secs(30),
            key: None,
            period: Duration::from_millis(10),
            late: None,
            fec_hold: false,
        }
    }

    /// What is done with late frames: `--late`, or by the output.
    fn late(&self) -> LatePolicy {
        self.late.unwrap_or(match self.output {
            Output::Device(_) => LatePolicy::Conceal,
            Output::Null => LatePolicy::Wait,
        })
    }

    fn policy(&self) -> TargetPolicy {
        let mut policy = if self.pinned {
            TargetPolicy::fixed(self.latency)
        } else {
            TargetPolicy::adaptive(self.latency_min, self.latency, self.latency_max)
        };
        policy.fec_hold = self.fec_hold;
        // A frame that is not here when its turn comes, with nothing behind it, is late (or,
        // over UDP, lost): when playing, conceal it and keep the timeline, as for any lost
        // frame, rather than stall and play everything after it later. A longer silence
        // stalls.
        if self.late() == LatePolicy::Conceal {
            policy.bridge = BRIDGE;
        }
        policy
    }
}

/// What happened, for the one-line summary.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The stream as announced.
    pub info: StreamInfo,
    /// Sample frames handed to the output (received and concealed).
    pub frames_out: u64,
    /// Playout counters and state at the end.
    pub playout: PlayoutStats,
    /// Callbacks that found the output's ring short mid-stream.
    pub ring_underruns: u64,
    /// Underruns the device itself reported (xruns).
    pub device_xruns: u64,
    /// Datagrams dropped as malformed (UDP).
    pub malformed: u64,
    /// Per-frame latency, sender's schedule to the speaker.
    pub latency: LatencyStats,
    /// The device's own delay, last reported.
    pub device_delay: Duration,
    /// The output's description.
    pub output: String,
    /// The WAV file written, if any.
    pub recorded: Option<PathBuf>,
    /// True when stopped by Ctrl-C before the end.
    pub interrupted: bool,
    /// The best clock exchange with the sender (smallest round trip), if any.
    pub clock: Option<Exchange>,
    /// How late this machine woke the player's thread after its deadlines.
    pub woke: crate::stats::WakeLateness,
}

impl Summary {
    /// Underruns of every kind: the jitter buffer running empty and the ring running dry.
    pub fn underruns(&self) -> u64 {
        self.playout.jitter.underruns + self.ring_underruns
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.frames_out as f64 / f64::from(self.info.sample_rate);
        let j = &self.playout.jitter;
        let u = self.underruns();
        write!(
            f,
            "{} {secs:.2} s ({} frames, {} Hz {} ch {}{}) to {} · {u} underrun{}",
            if self.interrupted {
                "stopped after"
            } else {
                "played"
            },
            j.received,
            self.info.sample_rate,
            self.info.channels,
            self.info.format,
            match self.info.codec {
                audiowire_protocol::Codec::Pcm => String::new(),
                codec => format!(" from {codec}"),
            },
            self.output,
            if u == 1 { "" } else { "s" },
        )?;
        if u > 0 {
            write!(
                f,
                " (buffer ran empty {}×, output ring ran short {}×",
                j.underruns, self.ring_underruns
            )?;
            if self.woke.late > 0 {
                write!(
                    f,
                    "; this machine woke the player {} ms or more late {}×, at worst {:.1} ms",
                    crate::stats::WakeLateness::LATE.as_millis(),
                    self.woke.late,
                    self.woke.worst.as_secs_f64() * 1e3
                )?;
            }
            write!(f, ")")?;
        }
        if j.lost + j.late + j.duplicated > 0 {
            write!(
                f,
                " · {} lost, {} late, {} duplicated, {} concealed",
                j.lost, j.late, j.duplicated, j.concealed
            )?;
            if j.recovered > 0 {
                write!(f, ", {} recovered by FEC", j.recovered)?;
            }
        }
        if j.skipped > 0 {
            write!(
                f,
                " · {} frame{} skipped to catch up with the live stream",
                j.skipped,
                if j.skipped == 1 { "" } else { "s" }
            )?;
        }
        match (self.latency.quantile_ms(0.5), self.latency.max_ms()) {
            (Some(p50), Some(max)) => write!(
                f,
                " · latency {p50:.1} ms median, {max:.1} ms max (buffer {:.1} ms, target {:.1} ms, device {:.1} ms)",
                self.playout.level * 1e3,
                self.playout.target * 1e3,
                self.device_delay.as_secs_f64() * 1e3
            )?,
            _ => write!(f, " · latency n/a")?,
        }
        if let Some(x) = self.clock {
            write!(
                f,
                " · sender clock {:+.2} ms (±{:.2} ms)",
                x.offset_us() / 1e3,
                x.delay_us().max(0.0) / 2e3
            )?;
        }
        if self.playout.drift_ppm.abs() >= 1.0 {
            write!(f, " · drift {:+.0} ppm", self.playout.drift_ppm)?;
        }
        if self.device_xruns > 0 {
            write!(f, " · {} device xruns", self.device_xruns)?;
        }
        if self.malformed > 0 {
            write!(f, " · {} malformed datagrams", self.malformed)?;
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

/// The output side: playout, converter, ring and whatever consumes the ring.
struct Pipeline {
    info: StreamInfo,
    playout: Playout,
    recorder: Option<WavRecorder>,
    prod: HeapProd<f32>,
    shared: Arc<Shared>,
    converter: Converter,
    per_sec: f64,
    floats: Vec<f32>,
    converted: Vec<f32>,
    latency: LatencyStats,
    description: String,
    device: Option<DeviceOutput>,
    null: Option<NullClock>,
    frames_out: u64,
    fade_in: bool,
    finished: bool,
    /// The sender's clock offset (best exchange so far).
    clock: Option<Exchange>,
    /// The device period asked for (the callback size until the first callback tells).
    period: Duration,
    /// When the output started.
    started_at: Option<Duration>,
    /// What the adaptive target keeps over the output's period, in seconds (see
    /// `Pipeline::adapt_margin`).
    margin: f64,
    /// Underruns counted so far, and since when there was none.
    underruns_seen: u64,
    calm_since: Duration,
}

impl Pipeline {
    fn new(info: StreamInfo, config: &PlayerConfig) -> Result<Self> {
        let recorder = match &config.record {
            Some(p) => Some(WavRecorder::create(p, &info)?),
            None => None,
        };
        let rate = config.device_rate.unwrap_or(info.sample_rate);
        let period_frames = ((f64::from(rate) * config.period.as_secs_f64()) as u32).max(32);
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
        // A device always goes through the resampler, so drift control can steer it; the null
        // clock applies the ratio itself.
        let converter = Converter::new(
            info.sample_rate,
            info.channels,
            out_rate,
            out_channels,
            chosen.is_some(),
        )?;
        let per_sec = f64::from(out_rate) * f64::from(out_channels);
        let capacity = (per_sec * (config.latency_max.as_secs_f64() + 1.0)) as usize;
        let (prod, cons) = HeapRb::<f32>::new(capacity).split();
        let shared = Shared::new();
        // A recording has no device: the null clock takes a frame at a time, each at its turn.
        let frame = f64::from(info.samples_per_frame) / f64::from(info.sample_rate);
        let null_frames = null_frames_per_callback(frame);
        let period = match chosen {
            Some(_) => config.period,
            None => Duration::from_secs_f64(frame * f64::from(null_frames)),
        };
        let (device, null, description) = match chosen {
            Some(c) => {
                let desc = format!(
                    "\"{}\" ({} Hz {} ch {}{})",
                    c.name(),
                    c.rate(),
                    c.channels(),
                    c.sample_format(),
                    if converter.changes_format() {
                        ", converted"
                    } else {
                        ""
                    }
                );
                (Some(c.start(cons, Arc::clone(&shared))?), None, desc)
            }
            None => {
                let clock = NullClock::start(
                    cons,
                    Arc::clone(&shared),
                    out_rate,
                    out_channels,
                    info.samples_per_frame * null_frames,
                )
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
            playout: {
                let mut playout =
                    Playout::with_decoder(info, config.policy(), crate::codec::decoder_for(&info)?);
                // A recording keeps every frame that arrives (`--late wait`), a live stream's
                // start too: it is not caught up by dropping frames, as a player's is.
                if config.late() == LatePolicy::Wait {
                    playout.keep_every_frame();
                }
                playout
            },
            recorder,
            prod,
            shared,
            converter,
            per_sec,
            floats: Vec::new(),
            converted: Vec::new(),
            latency: LatencyStats::default(),
            description,
            device,
            null,
            frames_out: 0,
            fade_in: false,
            finished: false,
            clock: None,
            period,
            started_at: None,
            margin: OUTPUT_MARGIN,
            underruns_seen: 0,
            calm_since: Duration::ZERO,
        })
    }

    /// The output's callback period, in seconds: its largest callback so far, or the period
    /// asked for until the first one.
    fn callback(&self) -> f64 {
        match self.shared.callback_samples.load(Ordering::Relaxed) {
            0 => self.period.as_secs_f64(),
            n => n as f64 / self.per_sec,
        }
    }

    /// Seconds until a sample queued now would start to play: until the output's next
    /// callback, plus the audio queued in the ring ahead of it.
    fn downstream(&self) -> f64 {
        self.shared.until_next_callback(self.callback()) + self.ring()
    }

    /// Underruns of every kind so far: the buffer stalling and the output ring running short.
    fn underruns(&self) -> u64 {
        self.playout.stats().jitter.underruns + self.shared.underruns.load(Ordering::Relaxed)
    }

    /// Widens the margin over the output's period by 1 ms (up to [`MAX_MARGIN`]) at every
    /// underrun after the start, and narrows it by 0.5 ms after every [`MARGIN_CALM`] without
    /// one (down to [`OUTPUT_MARGIN`]): a busy or virtual machine that wakes this thread or the
    /// output late gets the slack it shows it needs, a quiet one keeps the lowest latency.
    fn adapt_margin(&mut self, now: Duration) {
        let underruns = self.underruns();
        if underruns > self.underruns_seen {
            self.underruns_seen = underruns;
            if self.started_at.is_some() {
                self.margin = (self.margin + 0.001).min(MAX_MARGIN);
            }
            self.calm_since = now;
        } else if now.saturating_sub(self.calm_since) >= MARGIN_CALM {
            self.margin = (self.margin - 0.0005).max(OUTPUT_MARGIN);
            self.calm_since = now;
        }
    }

    /// How long the loop may wait for the network before it must look at the ring again: until
    /// [`FEED_SLACK`] before the first callback the ring cannot cover (when a missing frame
    /// must be concealed), between 0.5 and 20 ms (the loop's other duties, pings and reports,
    /// keep to whole tens of milliseconds).
    fn poll_wait(&self) -> Duration {
        let callback = self.callback();
        let until = self.shared.until_next_callback(callback);
        let covered = (self.ring() / callback).floor();
        let deadline = until + covered * callback - FEED_SLACK;
        Duration::from_secs_f64(deadline.clamp(0.0005, 0.020))
    }

    /// Seconds of audio queued in the ring.
    fn ring(&self) -> f64 {
        self.prod.occupied_len() as f64 / self.per_sec
    }

    /// Moves frames to the output's ring. Frames that are here go at once, so the buffered
    /// audio sits in the ring, where a busy machine delaying this thread cannot starve the
    /// device. A missing frame is waited for as long as the ring can still cover the output's
    /// next callback: only when it cannot, and that callback is less than [`FEED_SLACK`] away,
    /// is the frame concealed, or the buffer stalls. With a device the adaptive target never
    /// falls below one callback (two while the output starts) plus a margin ([`OUTPUT_MARGIN`],
    /// widened after underruns), so whatever the phase of the arrivals against the callbacks,
    /// the ring covers the next one; the null clock's callbacks fall on the frames, so there
    /// the feeding slack and the margin are enough ([`null_margin`]).
    fn fill(&mut self, now: Duration) -> Result<()> {
        let callback = self.callback();
        // While the output starts, a device's floor is two callbacks: it may take its whole
        // buffer (two periods or more) in quick callbacks, and the frames after the pre-roll
        // burst come a frame later, in phase with the callbacks, so one callback of margin is
        // what keeps the start from stalling while the target still learns the network (with
        // one, 2 of 6 runs of three UDP players and their sender on two cores stalled at the
        // start). The null output's floor is a frame higher then (see `null_floor`).
        let starting = self
            .started_at
            .is_none_or(|t| now.saturating_sub(t) < START_WINDOW);
        self.adapt_margin(now);
        let frame = f64::from(self.info.samples_per_frame) / f64::from(self.info.sample_rate);
        if self.null.is_some() {
            // The null clock takes each frame at its turn (see `null_margin`).
            self.playout
                .set_margin(Duration::from_secs_f64(null_margin(self.margin, frame)));
            self.playout.set_floor(Duration::from_secs_f64(null_floor(
                self.margin,
                frame,
                starting,
            )));
        } else if self.shared.callback_samples.load(Ordering::Relaxed) > 0 {
            // Only a callback a device made says how large they are: a guess would raise the
            // target, which then takes seconds to come down.
            self.playout.set_floor(Duration::from_secs_f64(target_floor(
                callback,
                self.margin,
                starting,
            )));
        }
        if self.started_at.is_none() {
            let level = if self.null.is_some() {
                null_start_level(frame, self.playout.target().as_secs_f64())
            } else {
                start_level(callback)
            };
            self.playout.set_start_level(Duration::from_secs_f64(level));
        }
        // Bounded: each pass hands out a frame or stops.
        for _ in 0..10_000 {
            let room = self.prod.vacant_len() as f64 / self.per_sec;
            if self.finished || room < 2.0 * frame {
                break;
            }
            let until = self.shared.until_next_callback(callback);
            let ring = self.ring();
            let downstream = until + ring;
            let urgent = must_give_up(ring, until, callback);
            match self.playout.next_when(now, downstream, urgent) {
                Popped::Frame {
                    payload,
                    timestamp_us,
                    stood_in,
                    ..
                } => {
                    if let Some(r) = self.recorder.as_mut() {
                        r.write(&payload)?;
                    }
                    self.frames_out += (payload.len() / self.info.bytes_per_frame()) as u64;
                    if stood_in {
                        // A stall's fill already played in its turn (see `Popped::Frame`).
                        continue;
                    }
                    if let Some(ts) = timestamp_us {
                        let device =
                            self.shared.device_delay_ns.load(Ordering::Relaxed) as f64 / 1e9;
                        let at = unix_micros() + ((downstream + device) * 1e6) as i64;
                        // The timestamp is on the sender's clock: bring it to ours.
                        let offset = self.clock.map_or(0, |x| x.offset_us() as i64);
                        self.latency.record_at(now, at - (ts as i64 - offset));
                    }
                    self.output(&payload, false)?;
                }
                Popped::Stall { payload } => self.output(&payload, true)?,
                Popped::Waiting => break,
                Popped::Ended => {
                    self.converted.clear();
                    self.converter.flush(&mut self.converted)?;
                    self.enqueue();
                    self.shared.ended.store(true, Ordering::Release);
                    self.shared.started.store(true, Ordering::Release);
                    self.finished = true;
                }
            }
        }
        // The output starts once a whole pass is queued, not between the first frames.
        if (self.frames_out > 0 || self.finished) && self.started_at.is_none() {
            self.shared.started.store(true, Ordering::Release);
            self.started_at = Some(now);
            if let Some(clock) = &self.null {
                clock.go();
            }
        }
        Ok(())
    }

    /// Converts one frame for the output and queues it. After a stall the next frame fades in
    /// over 2.5 ms on the way to the device (the recording keeps the exact samples).
    fn output(&mut self, payload: &[u8], stall: bool) -> Result<()> {
        self.floats.clear();
        self.info.format.decode_floats(payload, &mut self.floats);
        if self.fade_in && !stall {
            let ch = usize::from(self.info.channels);
            let n =
                ((f64::from(self.info.sample_rate) * 0.0025) as usize).min(self.floats.len() / ch);
            for i in 0..n {
                let g = i as f32 / n as f32;
                for c in 0..ch {
                    self.floats[i * ch + c] *= g;
                }
            }
        }
        self.fade_in = stall;
        let ratio = self.playout.ratio();
        self.converter.set_ratio(ratio)?;
        self.shared
            .ratio_bits
            .store(ratio.to_bits(), Ordering::Relaxed);
        self.converted.clear();
        self.converter.process(&self.floats, &mut self.converted)?;
        self.enqueue();
        Ok(())
    }

    fn enqueue(&mut self) {
        // The ring holds the largest target plus a second: a frame always fits.
        let n = self.prod.push_slice(&self.converted);
        if n < self.converted.len() {
            warn!(
                "output ring full: {} samples dropped",
                self.converted.len() - n
            );
        }
    }

    /// Waits (bounded) for the output to play what is queued.
    fn drain(&self, shutdown: &AtomicBool) {
        let deadline = Instant::now() + Duration::from_secs_f64(self.downstream() + 3.0);
        while self.prod.occupied_len() > 0 && Instant::now() < deadline {
            if shutdown.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let device = Duration::from_nanos(self.shared.device_delay_ns.load(Ordering::Relaxed));
        thread::sleep(device.min(Duration::from_millis(500)) + Duration::from_millis(20));
    }

    fn report(&self) -> Report {
        let s = self.playout.stats();
        Report {
            received: s.jitter.received,
            lost: s.jitter.lost,
            late: s.jitter.late,
            concealed: s.jitter.concealed,
            jitter_us: s.jitter.jitter_us.min(u64::from(u32::MAX)) as u32,
            level_us: (s.level * 1e6).clamp(0.0, f64::from(u32::MAX)) as u32,
            target_us: (s.target * 1e6).clamp(0.0, f64::from(u32::MAX)) as u32,
        }
    }

    fn summary(
        &mut self,
        link: Option<&Link>,
        interrupted: bool,
        woke: crate::stats::WakeLateness,
    ) -> Result<Summary> {
        if let Some(r) = self.recorder.as_mut() {
            r.finalize()?;
        }
        let backend = self.shared.backend_errors.load(Ordering::Relaxed);
        if backend > 0 {
            tracing::debug!("the audio backend reported {backend} non-fatal errors");
        }
        Ok(Summary {
            info: self.info,
            frames_out: self.frames_out,
            playout: self.playout.stats(),
            ring_underruns: self.shared.underruns.load(Ordering::Relaxed),
            device_xruns: self.shared.device_xruns.load(Ordering::Relaxed),
            malformed: link.map_or(0, Link::malformed),
            latency: self.latency.clone(),
            device_delay: Duration::from_nanos(self.shared.device_delay_ns.load(Ordering::Relaxed)),
            output: self.description.clone(),
            recorded: self.recorder.as_ref().map(|r| r.path().to_path_buf()),
            interrupted,
            clock: self.clock,
            woke,
        })
    }

    /// One stats line; `woke_late` is how many times the machine woke the player 2 ms or more
    /// late so far (JSON only).
    fn stats_line(&self, mode: StatsMode, woke_late: u64) {
        let s = self.playout.stats();
        let j = s.jitter;
        let underruns = self.underruns();
        match mode {
            StatsMode::Off => {}
            StatsMode::Line => {
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r{:7.1} s · recv {} · lost {} · late {} · dup {} · concealed {} · skipped {} · underruns {} · buffer {:5.1} ms / target {:5.1} ms · jitter {:4.1} ms · drift {:+5.0} ppm ",
                    self.frames_out as f64 / f64::from(self.info.sample_rate),
                    j.received,
                    j.lost,
                    j.late,
                    j.duplicated,
                    j.concealed,
                    j.skipped,
                    underruns,
                    s.level * 1e3,
                    s.target * 1e3,
                    j.jitter_us as f64 / 1e3,
                    s.drift_ppm
                );
                let _ = err.flush();
            }
            StatsMode::Json => {
                println!(
                    "{{\"t\":{:.3},\"received\":{},\"lost\":{},\"recovered\":{},\"late\":{},\"duplicated\":{},\"concealed\":{},\"skipped\":{},\"underruns\":{},\"buffer_ms\":{:.2},\"target_ms\":{:.2},\"jitter_ms\":{:.2},\"drift_ppm\":{:.1},\"ratio\":{:.6},\"woke_late\":{}}}",
                    self.frames_out as f64 / f64::from(self.info.sample_rate),
                    j.received,
                    j.lost,
                    j.recovered,
                    j.late,
                    j.duplicated,
                    j.concealed,
                    j.skipped,
                    underruns,
                    s.level * 1e3,
                    s.target * 1e3,
                    j.jitter_us as f64 / 1e3,
                    s.drift_ppm,
                    s.ratio,
                    woke_late
                );
            }
        }
    }
}

/// Opens the link to the sender: through the configured connector, or to `config.addr`.
fn open_link(config: &PlayerConfig, timeout: Duration, greeting: &Greeting) -> Result<Link> {
    match &config.connector {
        Some(c) => (c.0)()
            .and_then(|conn| Link::over(conn, greeting))
            .map_err(|e| Error::Connect {
                addr: config.addr.clone(),
                reason: e.to_string(),
            }),
        None => Link::open(&config.addr, config.transport, timeout, greeting),
    }
}

/// Plays one stream from `config.addr` to the end (or until `shutdown` is set).
pub fn play(config: &PlayerConfig, shutdown: &AtomicBool) -> Result<Summary> {
    let addr = config.addr.as_str();
    if let Output::Device(name) = &config.output {
        crate::device::probe(name.as_deref())?;
    }
    // A fresh random nonce for every connection (with a key), so every session has its own
    // cipher key.
    let greeting = |resume| Greeting {
        client: concat!("audiowire-play/", env!("CARGO_PKG_VERSION")).to_string(),
        preroll_ms: config.latency.as_millis() as u64,
        resume,
        key: config.key.clone().map(|k| {
            let mut nonce = [0u8; 16];
            let _ = getrandom::fill(&mut nonce);
            (k, nonce)
        }),
    };
    let mut link = Some(open_link(config, config.connect_timeout, &greeting(None))?);
    // A reconnection attempt is short on IP; a Bluetooth page takes longer.
    let retry_timeout = match config.transport {
        Transport::Rfcomm => Duration::from_secs(5),
        Transport::Tcp | Transport::Udp => Duration::from_millis(500),
    };
    let clock = Instant::now();
    let mut pipeline: Option<Pipeline> = None;
    let mut events = Vec::new();
    let mut last_data = Instant::now();
    let mut last_report = Instant::now();
    let mut last_stats = Instant::now();
    let mut interrupted = false;
    let mut ended = false;
    let mut reconnect: Option<Reconnect> = None;
    let mut woke = crate::stats::WakeLateness::default();
    // Ping/Pong once a second: the sender's clock offset (NTP's method, best of the exchanges),
    // so latency is measured from the sender's schedule even across machines.
    let mut offsets = OffsetFilter::new();
    let mut pings = 0u64;
    let mut next_ping = Instant::now() + Duration::from_millis(200);
    // With reconnection on, a stream silent this long is taken for lost (frames come every few
    // milliseconds), so a sender that comes back is found within a second.
    let lost_after = if config.reconnect {
        Duration::from_millis(700).min(config.silence_timeout)
    } else {
        config.silence_timeout
    };
    loop {
        if shutdown.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        if let Some(r) = reconnect.as_mut()
            && link.is_none()
            && Instant::now() >= r.next_try
        {
            let resume = pipeline.as_ref().map(|p| p.playout.resume_point());
            match open_link(config, retry_timeout, &greeting(resume)) {
                Ok(l) => {
                    info!("reconnected to {addr}; resuming");
                    link = Some(l);
                    last_data = Instant::now();
                }
                Err(e) => {
                    if r.since.elapsed() > config.reconnect_for {
                        return Err(Error::Connection {
                            addr: addr.to_string(),
                            reason: format!(
                                "was lost ({}) and did not come back within {} s: {e}",
                                r.why,
                                config.reconnect_for.as_secs()
                            ),
                        });
                    }
                    r.backoff = (r.backoff * 2).min(RECONNECT_MAX_BACKOFF);
                    r.next_try = Instant::now() + r.backoff;
                }
            }
        }
        if let Some(l) = link.as_mut()
            && Instant::now() >= next_ping
            && l.is_subscribed()
        {
            next_ping = Instant::now() + Duration::from_secs(1);
            pings += 1;
            l.ping(pings, unix_micros() as u64);
        }
        let wait = pipeline
            .as_ref()
            .map_or(Duration::from_millis(50), Pipeline::poll_wait);
        let mut lost: Option<String> = None;
        let slept = Instant::now();
        let polled = link
            .as_mut()
            .map(|l| l.poll(addr, clock.elapsed(), wait, &mut events));
        if pipeline.is_some() && polled.is_some() {
            woke.record(wait, slept.elapsed());
        }
        match polled {
            Some(polled) => match polled {
                Ok(true) => {}
                Ok(false) if ended => {}
                Ok(false) => {
                    lost = Some(if pipeline.is_some() {
                        "closed by the sender mid-stream, before End".into()
                    } else {
                        "closed by the sender before the stream started".into()
                    });
                }
                // A connection that failed may come back; a broken protocol or key does not.
                Err(Error::Connection { reason, .. }) => lost = Some(reason),
                Err(e) => return Err(e),
            },
            None => thread::sleep(wait),
        }
        let now = clock.elapsed();
        if !events.is_empty() {
            last_data = Instant::now();
            if reconnect.take().is_some() {
                info!("stream resumed");
            }
        }
        for event in events.drain(..) {
            match event {
                Event::Info(info) => match pipeline.as_ref() {
                    None => pipeline = Some(Pipeline::new(info, config)?),
                    Some(p) if p.info != info => {
                        return Err(Error::Protocol {
                            addr: addr.to_string(),
                            reason: "the stream changed format while reconnecting".into(),
                        });
                    }
                    Some(_) => {}
                },
                Event::Audio(a) => {
                    if let Some(p) = pipeline.as_mut() {
                        p.playout.push(a, now);
                    }
                }
                Event::End { position } => {
                    ended = true;
                    if let Some(p) = pipeline.as_mut() {
                        p.playout.end(position);
                    }
                }
                Event::SenderError(text) => return Err(Error::Sender(text)),
                Event::KeyError(reason) => {
                    return Err(Error::Key {
                        addr: addr.to_string(),
                        reason,
                    });
                }
                Event::Handshake => {}
                Event::Pong {
                    t1_us,
                    t2_us,
                    t3_us,
                    ..
                } => {
                    let x = Exchange {
                        t1_us,
                        t2_us,
                        t3_us,
                        t4_us: unix_micros() as u64,
                    };
                    offsets.push(x);
                    if let Some(p) = pipeline.as_mut() {
                        p.clock = offsets.best();
                    }
                }
            }
        }
        if pipeline.is_some() && link.is_some() && !ended && last_data.elapsed() > lost_after {
            lost = Some(format!(
                "silent for {:.1} s",
                last_data.elapsed().as_secs_f64()
            ));
        }
        if let Some(why) = lost {
            // Once the stream runs, a lost connection is re-established (unless told not to),
            // while the output plays on what is buffered and then concealment.
            if config.reconnect && pipeline.is_some() {
                if reconnect.is_none() {
                    warn!("connection to {addr} {why}; reconnecting");
                    reconnect = Some(Reconnect {
                        since: Instant::now(),
                        next_try: Instant::now(),
                        backoff: RECONNECT_FIRST_BACKOFF,
                        why,
                    });
                } else if let Some(r) = reconnect.as_mut() {
                    // The new connection failed too: try again after the backoff.
                    r.next_try = Instant::now() + r.backoff;
                }
                link = None;
            } else if config.transport == Transport::Udp
                && pipeline
                    .as_ref()
                    .is_some_and(|p| p.info.total_frames.is_some())
                && why.starts_with("silent")
            {
                // The End (or the last frames) went missing: conceal up to the known length.
                if let Some(p) = pipeline.as_mut() {
                    p.playout.end(p.info.total_frames.unwrap_or(0));
                }
                ended = true;
            } else {
                return Err(Error::Connection {
                    addr: addr.to_string(),
                    reason: why,
                });
            }
        }
        let Some(p) = pipeline.as_mut() else {
            if link.as_ref().is_some_and(|l| !l.is_subscribed())
                && last_data.elapsed() > config.connect_timeout
            {
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    reason: format!(
                        "no answer within {} s (is `audiowire send --transport udp` running there?)",
                        config.connect_timeout.as_secs()
                    ),
                });
            }
            continue;
        };
        p.fill(now)?;
        if p.finished {
            break;
        }
        if let Some(l) = link.as_mut()
            && last_report.elapsed() >= Duration::from_millis(500)
        {
            last_report = Instant::now();
            l.report(p.report());
        }
        if config.stats != StatsMode::Off && last_stats.elapsed() >= Duration::from_millis(500) {
            last_stats = Instant::now();
            p.stats_line(config.stats, woke.late);
        }
    }
    if let Some(l) = link.as_mut() {
        l.bye();
    }
    let Some(mut p) = pipeline else {
        return Err(Error::Connection {
            addr: addr.to_string(),
            reason: "ended before the stream started".into(),
        });
    };
    if !interrupted {
        p.drain(shutdown);
        interrupted = shutdown.load(Ordering::Relaxed);
    }
    if config.stats == StatsMode::Line {
        p.stats_line(StatsMode::Line, woke.late);
        eprintln!();
    }
    let summary = p.summary(link.as_ref(), interrupted, woke)?;
    drop(p.device.take());
    if summary.underruns() > 0 && woke.late > 0 {
        warn!(
            "{} underruns: the buffer ran dry; this machine woke the player {} ms or more late {}× \
             (at worst {:.1} ms), which no buffer smaller than that rides out: a less busy \
             machine, real-time priority (see the README) or a larger --latency-min helps",
            summary.underruns(),
            crate::stats::WakeLateness::LATE.as_millis(),
            woke.late,
            woke.worst.as_secs_f64() * 1e3
        );
    } else if summary.underruns() > 0 {
        warn!(
            "{} underruns: the buffer ran dry; a larger --latency-min may help",
            summary.underruns()
        );
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_output_takes_a_frame_per_callback_and_keeps_2_ms_over_the_jitter() {
        assert_eq!(null_frames_per_callback(0.020), 1);
        assert_eq!(null_frames_per_callback(0.001), 1);
        assert_eq!(null_frames_per_callback(0.0005), 2);
        assert_eq!(null_frames_per_callback(0.0001), 10);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // The feeding slack and the margin; 0.1 ms frames taken ten at a time, 0.9 ms more.
        assert!(close(null_margin(OUTPUT_MARGIN, 0.010), 0.002));
        assert!(close(null_margin(OUTPUT_MARGIN, 0.0001), 0.0029));
        // The floor: that, and a frame more for the first 2 s, at most 10 ms.
        assert!(close(null_floor(OUTPUT_MARGIN, 0.005, true), 0.007));
        assert!(close(null_floor(OUTPUT_MARGIN, 0.020, true), 0.012));
        assert!(close(null_floor(OUTPUT_MARGIN, 0.020, false), 0.002));
        // The start: a frame more than the target.
        assert!(close(null_start_level(0.010, 0.012), 0.022));
    }

    #[test]
    fn late_frames_are_concealed_when_playing_and_waited_for_when_only_recording() {
        let bridge = |transport, output, late| {
            let mut c = PlayerConfig::new("127.0.0.1:1");
            c.transport = transport;
            c.output = output;
            c.late = late;
            c.policy().bridge
        };
        let device = || Output::Device(None);
        assert_eq!(bridge(Transport::Udp, device(), None), BRIDGE);
        assert_eq!(bridge(Transport::Udp, Output::Null, None), Duration::ZERO);
        assert_eq!(
            bridge(Transport::Udp, Output::Null, Some(LatePolicy::Conceal)),
            BRIDGE
        );
        assert_eq!(
            bridge(Transport::Udp, device(), Some(LatePolicy::Wait)),
            Duration::ZERO
        );
        // Over TCP nothing is lost, but a frame held up behind a slow segment is as late for
        // a listener: the same policy.
        assert_eq!(bridge(Transport::Tcp, device(), None), BRIDGE);
        assert_eq!(bridge(Transport::Tcp, Output::Null, None), Duration::ZERO);
        assert_eq!(
            bridge(Transport::Rfcomm, device(), Some(LatePolicy::Wait)),
            Duration::ZERO
        );
    }
}
