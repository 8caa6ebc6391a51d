//! The live stream (`send --input`, `send --broadcast`): one producer makes the frames once, in
//! real time, and every player joins the stream where it stands.
//!
//! The producer is a thread that reads an input device ([`crate::capture`]) or a file paced in
//! real time, resamples and encodes once (one Opus encoder, whose loss hint is the worst loss any
//! UDP player reports), and publishes each frame to the [`Hub`]. The hub keeps the last
//! `max_preroll` of frames: a player that joins gets the latest `preroll` of them at once (so its
//! buffer fills immediately, as with a file), then every new frame as it is made. Each player's
//! frames are numbered from its own start (sequence 0, position 0, or where a resuming player
//! left off), so the player's checks are the same as for a file. A player whose queue fills
//! (it cannot keep up) is dropped; it never holds the others back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use audiowire_protocol::auth::Cipher;
use audiowire_protocol::{Audio, Codec, StreamInfo};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use ringbuf::traits::{Consumer, Observer};
use tracing::{info, warn};

use crate::capture::{InputSpec, live_frame_ms, split_period};
use crate::error::{Error, Result};
use crate::feed::{Encoder, FileFrames, Framer, PlayerFeed, Progress, plan};
use crate::pacing::Pacer;
use crate::resample::Resampler;
use crate::server::{Resume, ServerConfig, samples_per_frame, unix_micros};

/// One frame as made by the producer.
#[derive(Debug)]
pub struct Frame {
    /// Position of its first sample frame in the broadcast (from the producer's start).
    pub position: u64,
    /// Sample frames it holds.
    pub frames: u32,
    /// When its first sample was captured (live) or scheduled (file), µs since the Unix epoch.
    pub timestamp_us: u64,
    /// The encoded payload.
    pub payload: Vec<u8>,
}

/// What the producer reads.
enum Origin {
    File(Box<FileFrames>),
    Input(InputSpec),
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(ff) => write!(f, "File({})", ff.path().display()),
            Origin::Input(spec) => write!(f, "Input({})", spec.name()),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    history: VecDeque<Arc<Frame>>,
    subscribers: Vec<Sender<Arc<Frame>>>,
    /// The broadcast is over (the file ended, or the device failed).
    ended: bool,
}

/// The live stream's frames, for every player.
#[derive(Debug)]
pub struct Hub {
    info: StreamInfo,
    state: Mutex<State>,
    /// Sample frames of history kept for joining players.
    keep: u64,
    origin: Mutex<Option<(Origin, ServerConfig, Option<usize>)>>,
    /// The expected loss in percent that the Opus encoder's FEC is set for.
    loss_hint: Arc<AtomicU32>,
    /// The broadcast's position and its players.
    progress: Arc<Progress>,
    /// Why the producer stopped, when it failed (a device that went away).
    failure: Mutex<Option<Error>>,
}

/// Most frames queued for one player before it counts as unable to keep up.
const QUEUE: usize = 4096;
/// Longest the live input's reader sleeps without a wake-up from the capture callback before it
/// checks for a shutdown and for a device that stopped delivering.
const WAKE_CHECK: Duration = Duration::from_millis(50);

impl Hub {
    /// Prepares the live stream `config` asks for (an input device, or a file with
    /// `--broadcast`) and describes it; nothing is read until [`Hub::start`]. `max_payload` is
    /// the datagram limit on UDP (and turns on Opus FEC there); the broadcast's position and
    /// its players are counted in `progress`.
    pub fn prepare(
        config: &ServerConfig,
        max_payload: Option<usize>,
        progress: Arc<Progress>,
    ) -> Result<Arc<Self>> {
        let loss_hint = Arc::new(AtomicU32::new(0));
        let feed = PlayerFeed {
            fec: max_payload.is_some(),
            loss_hint: Arc::clone(&loss_hint),
            max_payload,
            progress: Arc::new(Progress::default()),
        };
        let (info, origin) = match &config.input {
            Some(device) => {
                let spec = pick_input(config, device.as_deref())?;
                let what = format!("input \"{}\"", spec.name());
                let mut info = plan(
                    config,
                    spec.rate(),
                    spec.channels(),
                    spec.wire_format(),
                    max_payload,
                    &what,
                )?;
                info.total_frames = None;
                // A PCM frame cut short to fit a datagram still ends where a callback does.
                if let (Codec::Pcm, Some(period)) = (info.codec, spec.period()) {
                    let asked = samples_per_frame(
                        config.frame_ms,
                        info.sample_rate,
                        info.bytes_per_frame(),
                    )?;
                    if info.sample_rate == spec.rate() && info.samples_per_frame < asked {
                        info.samples_per_frame = split_period(info.samples_per_frame, period);
                    }
                }
                info.validate().map_err(|e| Error::Input(e.to_string()))?;
                (info, Origin::Input(spec))
            }
            None => {
                let info = crate::feed::describe(config, max_payload)?;
                let frames = FileFrames::open(config, info, &feed)?;
                (info, Origin::File(Box::new(frames)))
            }
        };
        // Players join a broadcast where it stands: it is live (they may skip to catch up).
        let info = StreamInfo { live: true, ..info };
        let keep = (config.max_preroll.as_secs_f64() * f64::from(info.sample_rate)).ceil() as u64;
        Ok(Arc::new(Self {
            info,
            state: Mutex::new(State::default()),
            keep,
            origin: Mutex::new(Some((origin, config.clone(), max_payload))),
            loss_hint,
            progress,
            failure: Mutex::new(None),
        }))
    }

    /// What every player is told in `StreamInfo`.
    pub fn stream_info(&self) -> StreamInfo {
        self.info
    }

    /// Why the producer stopped, if it failed; the server returns it once its players are done.
    pub fn take_failure(&self) -> Option<Error> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }

    /// The loss hint (percent) the encoder's FEC follows; the UDP server sets it.
    pub fn loss_hint(&self) -> &AtomicU32 {
        &self.loss_hint
    }

    /// Starts the producer (once); it runs until the file ends, the device fails or `shutdown`
    /// is set, then ends every player's stream.
    pub fn start(self: &Arc<Self>, shutdown: &Arc<AtomicBool>) -> Result<thread::JoinHandle<()>> {
        let origin = self
            .origin
            .lock()
            .map_err(|_| Error::Input("the broadcast's state is poisoned".into()))?
            .take();
        let Some((origin, config, max_payload)) = origin else {
            return Err(Error::Input("the broadcast was already started".into()));
        };
        let hub = Arc::clone(self);
        let shutdown = Arc::clone(shutdown);
        let thread = thread::Builder::new()
            .name("broadcast".into())
            .spawn(move || {
                let result = match origin {
                    Origin::File(frames) => hub.run_file(*frames, &shutdown),
                    Origin::Input(spec) => hub.run_input(&spec, &config, max_payload, &shutdown),
                };
                if let Err(e) = result {
                    tracing::debug!("the broadcast stopped: {e}");
                    if let Ok(mut f) = hub.failure.lock() {
                        *f = Some(e);
                    }
                }
                hub.finish();
            })?;
        Ok(thread)
    }

    fn publish(&self, frame: Frame) {
        let frame = Arc::new(frame);
        self.progress
            .position
            .store(frame.position + u64::from(frame.frames), Ordering::Relaxed);
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.history.push_back(Arc::clone(&frame));
        while st
            .history
            .front()
            .is_some_and(|f| frame.position.saturating_sub(f.position) > self.keep)
        {
            st.history.pop_front();
        }
        st.subscribers
            .retain(|tx| match tx.try_send(Arc::clone(&frame)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    warn!("a player cannot keep up with the live stream: dropped");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }

    fn finish(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.ended = true;
            // Dropping the senders ends every player's stream once it has taken the rest.
            st.subscribers.clear();
        }
    }

    /// A new player's view of the stream: the latest `preroll` of frames at once, then each new
    /// one, numbered from `resume`.
    pub fn subscribe(self: &Arc<Self>, preroll: Duration, resume: Resume) -> Subscription {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let want = (preroll.as_secs_f64() * f64::from(self.info.sample_rate)).round() as u64;
        if let Ok(mut st) = self.state.lock() {
            if let Some(newest) = st.history.back() {
                let end = newest.position + u64::from(newest.frames);
                for f in st
                    .history
                    .iter()
                    .filter(|f| end - f.position <= want.max(u64::from(f.frames)))
                {
                    let _ = tx.try_send(Arc::clone(f));
                }
            }
            if !st.ended {
                st.subscribers.push(tx);
            }
        }
        self.progress.players.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hub: Arc::clone(self),
            rx,
            resume,
            base: None,
        }
    }

    /// The file, paced in real time from absolute deadlines (no pre-roll: the players' pre-roll
    /// comes from the history).
    fn run_file(&self, mut frames: FileFrames, shutdown: &AtomicBool) -> Result<()> {
        let pacer = Pacer::new(self.info.sample_rate, Duration::ZERO);
        let start = Instant::now();
        let start_us = unix_micros();
        let mut position = 0u64;
        loop {
            loop {
                if shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let wait = pacer.wait(position, start.elapsed());
                if wait.is_zero() {
                    break;
                }
                thread::sleep(wait.min(Duration::from_millis(50)));
            }
            let mut payload = Vec::new();
            let n = frames.read_frame(&mut payload)?;
            if n == 0 {
                info!(
                    "the broadcast reached the end of {}",
                    frames.path().display()
                );
                return Ok(());
            }
            self.publish(Frame {
                position,
                frames: n,
                timestamp_us: start_us + pacer.due(position).as_micros() as u64,
                payload,
            });
            position += u64::from(n);
        }
    }

    /// The input device: capture, resample to the stream's rate, encode, publish, each frame
    /// stamped with the instant its first sample was captured.
    fn run_input(
        &self,
        spec: &InputSpec,
        config: &ServerConfig,
        max_payload: Option<usize>,
        shutdown: &AtomicBool,
    ) -> Result<()> {
        let info = self.info;
        // This thread reads the ring; the capture callback wakes it when it has pushed samples.
        let mut capture = spec.start(2.0, thread::current())?;
        info!(
            "capturing from \"{}\" ({} Hz, {} ch)",
            spec.name(),
            spec.rate(),
            spec.channels()
        );
        let mut resampler = if spec.rate() == info.sample_rate {
            None
        } else {
            Some(Resampler::new(
                spec.rate(),
                info.sample_rate,
                info.channels,
            )?)
        };
        // FEC is for UDP, where the hub was prepared with a datagram limit.
        let encoder = Encoder::new(
            &info,
            &config.codec,
            max_payload.is_some(),
            Arc::clone(&self.loss_hint),
            max_payload,
        )?;
        let mut framer = Framer::new(info, encoder);
        let pre_skip = match info.codec {
            Codec::Opus { pre_skip } => u64::from(pre_skip),
            _ => 0,
        };
        let ch = usize::from(spec.channels());
        let in_rate = f64::from(spec.rate());
        let out_rate = f64::from(info.sample_rate);
        let period = spec.period().unwrap_or(0) as usize;
        let mut block = vec![0.0f32; (spec.rate() as usize / 100).max(period).max(64) * ch];
        let mut resampled = Vec::new();
        let mut position = 0u64;
        let mut last_overrun = 0u64;
        let mut last_data = Instant::now();
        while !shutdown.load(Ordering::Relaxed) {
            let n = capture.cons.pop_slice(&mut block) / ch * ch;
            if n == 0 {
                if last_data.elapsed() > Duration::from_secs(5) {
                    return Err(Error::Input(format!(
                        "\"{}\" delivered nothing for 5 s",
                        spec.name()
                    )));
                }
                // Until the callback has pushed more (a wake-up that came since the ring was
                // found empty is kept, so this returns at once), or a while to check the rest.
                thread::park_timeout(WAKE_CHECK);
                continue;
            }
            last_data = Instant::now();
            // Taken together, as soon as the samples are out: the ring then holds `left` newer
            // samples, the newest of them captured about `capture_delay` before `now_us` (the
            // callback that pushed it just woke this thread).
            let left = capture.cons.occupied_len();
            let now_us = unix_micros();
            match resampler.as_mut() {
                Some(r) => {
                    resampled.clear();
                    r.process(&block[..n], &mut resampled)?;
                    framer.push(&resampled);
                }
                None => framer.push(&block[..n]),
            }
            let overrun = capture.shared.overrun_samples.load(Ordering::Relaxed);
            if overrun > last_overrun {
                warn!("capture overrun: {} samples lost", overrun - last_overrun);
                last_overrun = overrun;
            }
            while framer.ready() {
                // The newest sample queued was captured `behind` seconds ago, and the frame's
                // first sample `frame + queued` stream samples before it.
                let delay = capture.shared.capture_delay_ns.load(Ordering::Relaxed) as f64 / 1e9;
                let behind = left as f64 / ch as f64 / in_rate + delay;
                let queued = framer.queued_frames() as u64 + pre_skip;
                let first = now_us as f64 - (behind + queued as f64 / out_rate) * 1e6;
                let mut payload = Vec::new();
                let frames = framer.next(&mut payload)?;
                self.publish(Frame {
                    position,
                    frames,
                    timestamp_us: first.max(0.0) as u64,
                    payload,
                });
                position += u64::from(frames);
            }
        }
        Ok(())
    }
}

/// The input device `config` asks for (`device`: by id or name, the default when `None`), in
/// the configuration its codec wants.
fn pick_input(config: &ServerConfig, device: Option<&str>) -> Result<InputSpec> {
    let wanted = match config.codec {
        crate::feed::CodecConfig::Opus(_) => Some(audiowire_protocol::opus::RATE),
        crate::feed::CodecConfig::Pcm => config.rate,
    };
    let max_channels = match config.codec {
        crate::feed::CodecConfig::Opus(_) => 2,
        crate::feed::CodecConfig::Pcm => audiowire_protocol::message::MAX_CHANNELS,
    };
    InputSpec::pick(device, wanted, max_channels)
}

/// The frame duration in ms for `config`'s live input: `user`'s when given, otherwise what suits
/// the device (one callback's worth where the host has a fixed callback size, as JACK does; see
/// [`crate::capture::live_frame_ms`]), which is looked up. Set it in `config.frame_ms` before
/// the server is bound, since players are told the frame size when they connect. Without
/// `config.input`: `user`'s, or `config.frame_ms` as it is.
pub fn input_frame_ms(config: &ServerConfig, user: Option<f64>) -> Result<f64> {
    match (&config.input, user) {
        (_, Some(ms)) => Ok(ms),
        (None, None) => Ok(config.frame_ms),
        (Some(device), None) => {
            let spec = pick_input(config, device.as_deref())?;
            let ms = live_frame_ms(None, spec.buffer_size(), spec.rate(), &config.codec);
            tracing::debug!(
                "\"{}\" reports callbacks of {:?} at {} Hz: {ms} ms frames",
                spec.name(),
                spec.buffer_size(),
                spec.rate()
            );
            Ok(ms)
        }
    }
}

/// One player's view of the live stream.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    rx: Receiver<Arc<Frame>>,
    resume: Resume,
    /// The broadcast position of the player's first frame.
    base: Option<u64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.progress.players.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// Sends every frame through `send` as it comes (sealed with `cipher` when the session has
    /// one), until the broadcast ends or `stop()`. Returns the position reached (for `End`).
    pub(crate) fn stream(
        &mut self,
        cipher: Option<&Cipher>,
        send: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        stop: &dyn Fn() -> bool,
        out: &mut Vec<u8>,
    ) -> Result<u64> {
        let mut sequence = self.resume.sequence;
        let mut position = self.resume.position;
        loop {
            if stop() {
                return Ok(position);
            }
            let frame = match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(f) => f,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(position),
            };
            let base = *self.base.get_or_insert(frame.position);
            let mut audio = Audio {
                sequence,
                position: self.resume.position + (frame.position - base),
                timestamp_us: frame.timestamp_us,
                payload: frame.payload.clone(),
            };
            if let Some(c) = cipher {
                c.seal(&mut audio);
            }
            out.clear();
            audio.encode_frame(out);
            send(out)?;
            sequence += 1;
            position = self.resume.position + (frame.position - base) + u64::from(frame.frames);
        }
    }
}
