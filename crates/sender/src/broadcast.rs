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
//!
//! A UDP player's frames do not go through a queue: the producer sends them itself, as soon as
//! each is made ([`Subscription::stream_direct`]), since a datagram's send does not wait for the
//! player. A frame then wakes one thread fewer (the producer's, not also the player's), which
//! is most of what a live stream costs when frames are a few milliseconds long.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use audiowire_protocol::auth::Cipher;
use audiowire_protocol::{Audio, Codec, StreamInfo};
use crossbeam_channel::{RecvTimeoutError, Sender, TrySendError};
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
    subscribers: Vec<Subscriber>,
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
        st.subscribers.retain_mut(|s| s.deliver(&frame));
    }

    /// Adds a player: the latest `want` sample frames of history at once (at least the newest
    /// frame), then every new frame.
    fn join(&self, want: u64, mut sub: Subscriber) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if let Some(newest) = st.history.back() {
            let end = newest.position + u64::from(newest.frames);
            for f in st
                .history
                .iter()
                .filter(|f| end - f.position <= want.max(u64::from(f.frames)))
            {
                if !sub.deliver(f) {
                    return;
                }
            }
        }
        if !st.ended {
            st.subscribers.push(sub);
        }
    }

    /// Removes the player the producer sends to through `shared`; once this returns, nothing
    /// more is sent to it.
    fn leave(&self, shared: &Arc<DirectShared>) {
        if let Ok(mut st) = self.state.lock() {
            st.subscribers
                .retain(|s| !matches!(s, Subscriber::Direct(d) if Arc::ptr_eq(&d.shared, shared)));
        }
    }

    fn finish(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.ended = true;
            // Dropping the senders ends every player's stream once it has taken the rest.
            st.subscribers.clear();
        }
    }

    /// A new player's view of the stream: once it streams, the latest `preroll` of frames at
    /// once, then each new one, numbered from `resume`.
    pub fn subscribe(self: &Arc<Self>, preroll: Duration, resume: Resume) -> Subscription {
        let want = (preroll.as_secs_f64() * f64::from(self.info.sample_rate)).round() as u64;
        self.progress.players.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hub: Arc::clone(self),
            want,
            resume,
        }
    }

    /// The file, paced in real time from absolute deadlines (no pre-roll: the players' pre-roll
    /// comes from the history).
    fn run_file(&self, mut frames: FileFrames, shutdown: &AtomicBool) -> Result<()> {
        let pacer =
            Pacer::new(self.info.sample_rate, Duration::ZERO).grouped(frames.pacing_group());
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

/// Sends one datagram to a player: what the producer calls for a [`Subscriber::Direct`].
pub(crate) type Sink = Box<dyn FnMut(&[u8]) -> std::io::Result<()> + Send>;

/// How the producer's frames reach one player.
enum Subscriber {
    /// Through a queue, to the player's own thread (TCP and RFCOMM, whose writes may block).
    Queue(Sender<Arc<Frame>>),
    /// Sent by the producer itself, as soon as made (UDP).
    Direct(Box<Direct>),
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subscriber::Queue(_) => f.write_str("Queue"),
            Subscriber::Direct(d) => write!(f, "Direct(sequence {})", d.numbering.sequence),
        }
    }
}

impl Subscriber {
    /// Passes `frame` on; false when the player is to be let go (it cannot keep up, it is gone,
    /// or sending to it failed).
    fn deliver(&mut self, frame: &Arc<Frame>) -> bool {
        match self {
            Subscriber::Queue(tx) => match tx.try_send(Arc::clone(frame)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    warn!("a player cannot keep up with the live stream: dropped");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            },
            Subscriber::Direct(d) => d.send(frame),
        }
    }
}

/// Numbers one player's frames from its own start (or where a resuming player left off).
#[derive(Debug)]
struct Numbering {
    resume: Resume,
    /// The broadcast position of the player's first frame.
    base: Option<u64>,
    /// The next frame's sequence number.
    sequence: u64,
    /// Where the next frame starts, in the player's numbering.
    position: u64,
}

impl Numbering {
    fn new(resume: Resume) -> Self {
        Self {
            resume,
            base: None,
            sequence: resume.sequence,
            position: resume.position,
        }
    }

    /// Encodes `frame` as the player's next `Audio` message into `out`, sealed with `cipher`
    /// when the session has one, and counts it.
    fn encode(&mut self, frame: &Frame, cipher: Option<&Cipher>, out: &mut Vec<u8>) {
        let base = *self.base.get_or_insert(frame.position);
        let position = self.resume.position + (frame.position - base);
        let mut audio = Audio {
            sequence: self.sequence,
            position,
            timestamp_us: frame.timestamp_us,
            payload: frame.payload.clone(),
        };
        if let Some(c) = cipher {
            c.seal(&mut audio);
        }
        out.clear();
        audio.encode_frame(out);
        self.sequence += 1;
        self.position = position + u64::from(frame.frames);
    }
}

/// What a player's thread and the producer that sends to it share.
#[derive(Debug, Default)]
struct DirectShared {
    /// The position after the last frame sent (for the player's `End`).
    position: AtomicU64,
    /// The producer let go of the player: the broadcast ended, or a send failed (`error`).
    done: AtomicBool,
    error: Mutex<Option<std::io::Error>>,
}

/// A player the producer sends to itself.
struct Direct {
    sink: Sink,
    cipher: Option<Cipher>,
    numbering: Numbering,
    out: Vec<u8>,
    shared: Arc<DirectShared>,
    /// The player's thread, woken when the producer lets go.
    waiter: Thread,
}

impl Direct {
    /// Sends `frame`; false when sending failed.
    fn send(&mut self, frame: &Frame) -> bool {
        self.numbering
            .encode(frame, self.cipher.as_ref(), &mut self.out);
        match (self.sink)(&self.out) {
            Ok(()) => {
                self.shared
                    .position
                    .store(self.numbering.position, Ordering::Relaxed);
                true
            }
            Err(e) => {
                if let Ok(mut slot) = self.shared.error.lock() {
                    *slot = Some(e);
                }
                false
            }
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::Release);
        self.waiter.unpark();
    }
}

/// One player's view of the live stream.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    /// Sample frames of history to send at once.
    want: u64,
    resume: Resume,
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
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        self.hub.join(self.want, Subscriber::Queue(tx));
        let mut numbering = Numbering::new(self.resume);
        loop {
            if stop() {
                return Ok(numbering.position);
            }
            let frame = match rx.recv_timeout(WAKE_CHECK) {
                Ok(f) => f,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(numbering.position),
            };
            numbering.encode(&frame, cipher, out);
            send(out)?;
        }
    }

    /// Hands the player to the producer, which sends every frame itself through `sink` as soon
    /// as it is made (sealed with `cipher` when the session has one); this thread only waits
    /// for the broadcast to end (or the sink to fail) or `stop()`. For a sink that never waits
    /// long (a UDP socket). Returns the position reached, for `End`.
    pub(crate) fn stream_direct(
        &mut self,
        sink: Sink,
        cipher: Option<Cipher>,
        stop: &dyn Fn() -> bool,
    ) -> Result<u64> {
        let shared = Arc::new(DirectShared {
            position: AtomicU64::new(self.resume.position),
            ..DirectShared::default()
        });
        let direct = Direct {
            sink,
            cipher,
            numbering: Numbering::new(self.resume),
            out: Vec::new(),
            shared: Arc::clone(&shared),
            waiter: thread::current(),
        };
        self.hub
            .join(self.want, Subscriber::Direct(Box::new(direct)));
        while !shared.done.load(Ordering::Acquire) {
            if stop() {
                // Once it has left, nothing more is sent: the position is final.
                self.hub.leave(&shared);
                break;
            }
            thread::park_timeout(WAKE_CHECK);
        }
        if let Some(e) = shared.error.lock().ok().and_then(|mut e| e.take()) {
            return Err(e.into());
        }
        Ok(shared.position.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiowire_protocol::Message;
    use std::path::PathBuf;
    use tempfile::TempDir;

    /// A WAV of `frames` sample frames of 8 kHz mono s16 (a ramp: every frame differs) in a
    /// fresh folder, removed when the returned guard drops, and its samples as the wire carries
    /// them.
    fn ramp_wav(name: &str, frames: usize) -> (TempDir, PathBuf, Vec<u8>) {
        let (dir, path) = crate::testwav::scratch("audiowire-broadcast-", name);
        let samples: Vec<i16> = (0..frames)
            .map(|i| (i as i32 * 7 % 65_536 - 32_768) as i16)
            .collect();
        crate::testwav::write_s16(&path, 8000, 1, samples.iter().copied());
        let pcm = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        (dir, path, pcm)
    }

    /// A broadcast of `path` in datagrams of 100 bytes of samples: 50-sample frames (6.25 ms),
    /// paced in groups of 80 (the 10 ms asked for).
    fn broadcast(path: &PathBuf) -> Arc<Hub> {
        let mut config = ServerConfig::new(path);
        config.broadcast = true;
        let hub = Hub::prepare(&config, Some(100), Arc::default()).unwrap();
        assert_eq!(hub.stream_info().samples_per_frame, 50);
        hub
    }

    /// A sink that keeps every datagram.
    fn keeping() -> (Sink, Arc<Mutex<Vec<Vec<u8>>>>) {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let k = Arc::clone(&kept);
        let sink: Sink = Box::new(move |d: &[u8]| {
            k.lock().unwrap().push(d.to_vec());
            Ok(())
        });
        (sink, kept)
    }

    #[test]
    fn a_direct_player_gets_from_the_producer_what_a_queued_player_gets() {
        let (_dir, path, pcm) = ramp_wav("direct.wav", 2400);
        let hub = broadcast(&path);
        // Both ask for the whole history (5 s is kept), so they get every frame whenever their
        // thread joins.
        let all = Duration::from_secs(5);
        let direct = {
            let mut sub = hub.subscribe(all, Resume::default());
            let (sink, kept) = keeping();
            thread::spawn(move || (sub.stream_direct(sink, None, &|| false).unwrap(), kept))
        };
        let queued = {
            let mut sub = hub.subscribe(all, Resume::default());
            thread::spawn(move || {
                let mut got = Vec::new();
                let mut send = |d: &[u8]| {
                    got.push(d.to_vec());
                    Ok(())
                };
                let end = sub.stream(None, &mut send, &|| false, &mut Vec::new());
                (end.unwrap(), got)
            })
        };
        // The file's end ends the broadcast, and both streams with it.
        hub.start(&Arc::new(AtomicBool::new(false)))
            .unwrap()
            .join()
            .unwrap();
        let (direct_end, kept) = direct.join().unwrap();
        let (queued_end, queued) = queued.join().unwrap();
        let direct = kept.lock().unwrap().clone();
        assert_eq!((direct_end, queued_end), (2400, 2400));
        assert!(direct == queued, "the two players got different datagrams");
        let mut position = 0;
        let mut samples = Vec::new();
        for (i, d) in direct.iter().enumerate() {
            let Some(Message::Audio(a)) = crate::udp::decode_datagram(d) else {
                panic!("datagram {i} is not an Audio message");
            };
            assert_eq!((a.sequence, a.position), (i as u64, position));
            position += a.payload.len() as u64 / 2;
            samples.extend_from_slice(&a.payload);
        }
        assert!(samples == pcm, "the samples differ from the file's");
    }

    #[test]
    fn a_direct_player_that_fails_or_stops_is_let_go() {
        let (_dir, path, _) = ramp_wav("leave.wav", 80_000);
        let hub = broadcast(&path);
        let shutdown = Arc::new(AtomicBool::new(false));
        let producer = hub.start(&shutdown).unwrap();
        // A send that fails (not a lost datagram: the UDP sink takes those as sent) ends the
        // player's stream with its error.
        let mut sends = 0;
        let failing: Sink = Box::new(move |_: &[u8]| {
            sends += 1;
            if sends < 3 {
                Ok(())
            } else {
                Err(std::io::Error::other("no route"))
            }
        });
        let mut sub = hub.subscribe(Duration::ZERO, Resume::default());
        let err = sub.stream_direct(failing, None, &|| false).unwrap_err();
        assert!(
            matches!(&err, Error::Io(e) if e.to_string() == "no route"),
            "{err}"
        );
        // One that stops after five frames: numbered from where it resumes, it ends after the
        // last frame sent, and nothing is sent to it once it has returned.
        let (sink, kept) = keeping();
        let mut sub = hub.subscribe(
            Duration::ZERO,
            Resume {
                sequence: 100,
                position: 10_000,
            },
        );
        let seen = Arc::clone(&kept);
        let stop = move || seen.lock().unwrap().len() >= 5;
        let end = sub.stream_direct(sink, None, &stop).unwrap();
        let sent = kept.lock().unwrap().len();
        assert!(hub.state.lock().unwrap().subscribers.is_empty());
        let frames: u64 = kept
            .lock()
            .unwrap()
            .iter()
            .map(|d| match crate::udp::decode_datagram(d) {
                Some(Message::Audio(a)) => a.payload.len() as u64 / 2,
                other => panic!("{other:?}"),
            })
            .sum();
        assert!(sent >= 5);
        assert_eq!(end, 10_000 + frames);
        // Another player gets three more frames, published after the first one left.
        let (sink, later) = keeping();
        let seen = Arc::clone(&later);
        let stop = move || seen.lock().unwrap().len() >= 3;
        let mut sub = hub.subscribe(Duration::ZERO, Resume::default());
        sub.stream_direct(sink, None, &stop).unwrap();
        assert_eq!(kept.lock().unwrap().len(), sent, "sent to after it left");
        shutdown.store(true, Ordering::Relaxed);
        producer.join().unwrap();
    }
}
