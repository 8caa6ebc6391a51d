//! The jitter buffer, sans-IO: frames in with their arrival time, frames out in order.
//!
//! - [`JitterBuffer::push`] files a frame by sequence number; a duplicate, or a frame whose turn
//!   has passed (late), is counted and dropped.
//! - [`JitterBuffer::pop`] gives the next frame of the stream. A frame that is missing while
//!   later frames are already here is declared lost and *concealed* (so the stream keeps its
//!   length and timing). When nothing at all is buffered the buffer *stalls*: it hands out a
//!   frame of concealment without advancing, which raises the latency at once (the stream is not
//!   skipped); stalls are counted as underruns. A stall raises the level by one frame however
//!   long it lasts: when the frames it waited for turn out lost (a later one comes first), the
//!   turns its further fills took are theirs, so they go to a recording but not to the output.
//!   Until the buffer first holds its target, `pop` waits.
//! - The target delay adapts to the network: it is a high quantile of the frames' relative
//!   transit delay over a sliding window (as WebRTC's NetEQ and roc do), rises at once when the
//!   network gets worse and falls slowly when it calms, within `[min, max]`.
//!
//! Frames go out decoded by the stream's codec ([`crate::codec`]), which also makes up for the
//! missing ones: PCM is returned as the exact bytes received, and a lost PCM frame is a
//! raised-cosine cross-fade between its neighbours that never clicks; a lost Opus frame is
//! *recovered* from the next packet's in-band FEC when that packet is already here, and
//! otherwise concealed by Opus's own PLC. Positions, the level and the target count the
//! stream's own sample frames (for Opus, 48 kHz samples including the encoder's pre-skip).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use audiowire_protocol::{Audio, Codec, StreamInfo};

use crate::codec::{Decoder, PcmDecoder};

/// How the target delay is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetPolicy {
    /// The lowest target.
    pub min: Duration,
    /// The highest target.
    pub max: Duration,
    /// The first target, before anything is measured (also the fixed target when min == max).
    pub initial: Duration,
    /// The quantile of relative delay to cover, e.g. 0.98.
    pub quantile: f64,
    /// The window the quantile is taken over.
    pub window: Duration,
    /// How fast the target may fall, in seconds per second.
    pub fall_rate: f64,
    /// On a lossy transport (UDP): how much of the stream may be concealed as lost when the
    /// next frame is missing and nothing is buffered behind it, before the buffer stalls. The
    /// timeline is kept, as a lost frame's is, and the frame is dropped as late if it comes
    /// after all. Zero (reliable transports, and the default): stall at once, skipping nothing.
    pub bridge: Duration,
    /// Opus over a lossy transport, with an adaptive target and a `bridge`: for a window after
    /// each loss, hold one frame more, so that the packet after a lost one (which carries its
    /// in-band FEC copy) is already here when the loss is found, and stall on an empty buffer
    /// instead of bridging (which fills that frame at once). More lost frames are recovered
    /// rather than concealed, for a frame more latency. Off (the default), a lost frame is
    /// recovered whenever its successor happens to be here already, as WebRTC's NetEQ does,
    /// and concealed otherwise.
    pub fec_hold: bool,
}

impl TargetPolicy {
    /// A fixed target.
    pub fn fixed(target: Duration) -> Self {
        Self {
            min: target,
            max: target,
            initial: target,
            ..Self::adaptive(target, target, target)
        }
    }

    /// An adaptive target within `[min, max]`, starting at `initial`.
    pub fn adaptive(min: Duration, initial: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            initial: initial.clamp(min, max.max(min)),
            quantile: 0.98,
            window: Duration::from_secs(5),
            fall_rate: 0.004,
            bridge: Duration::ZERO,
            fec_hold: false,
        }
    }
}

/// What the buffer counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames accepted.
    pub received: u64,
    /// Frames that never came in time: concealed (or recovered) and skipped.
    pub lost: u64,
    /// Of the lost frames, those rebuilt from the next frame's redundant data (Opus in-band
    /// FEC) instead of concealed.
    pub recovered: u64,
    /// Frames that came after their turn (they had been concealed).
    pub late: u64,
    /// Frames received twice (or after they were played).
    pub duplicated: u64,
    /// Frames of concealment handed out (lost frames not recovered, and stall fill).
    pub concealed: u64,
    /// Times the buffer ran empty mid-stream and stalled.
    pub underruns: u64,
    /// Interarrival jitter as RFC 3550 computes it, in µs.
    pub jitter_us: u64,
    /// Frames a live stream skipped to catch up when it started with more buffered than its
    /// target (see [`crate::playout::Playout`]).
    pub skipped: u64,
}

/// What [`JitterBuffer::pop`] hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum Popped {
    /// The next frame of the stream: received (decoded; PCM's exact bytes), concealed
    /// (`concealed`) or recovered from redundant data (`recovered`).
    Frame {
        /// Sequence number.
        sequence: u64,
        /// Position of its first sample frame.
        position: u64,
        /// Samples in the stream's format.
        payload: Vec<u8>,
        /// True when synthesized in place of a lost frame.
        concealed: bool,
        /// True when rebuilt in place of a lost frame from the next frame's FEC data.
        recovered: bool,
        /// True when the output already played a stall's fill in this frame's turn: the buffer
        /// stalled for more than a frame waiting for it, and it then turned out lost (a later
        /// frame came first). A recording takes it (one frame per sequence number); the output
        /// does not, so an outage leaves the level one frame higher, as any stall does, not
        /// higher by all it lasted.
        stood_in: bool,
        /// When it arrived (`None` when concealed).
        arrival: Option<Duration>,
        /// The sender's timestamp, µs since the Unix epoch (`None` when concealed).
        timestamp_us: Option<u64>,
    },
    /// Concealment played while the buffer is empty; not part of the stream (a recorder skips it).
    Stall {
        /// Samples in the stream's format, one frame long.
        payload: Vec<u8>,
    },
    /// Still filling up to the target: nothing to play yet.
    Waiting,
    /// The stream ended and everything was handed out.
    Ended,
}

#[derive(Debug, Clone)]
struct Stored {
    position: u64,
    payload: Vec<u8>,
    arrival: Duration,
    timestamp_us: u64,
}

/// The jitter buffer of one stream.
#[derive(Debug)]
pub struct JitterBuffer {
    info: StreamInfo,
    decoder: Box<dyn Decoder>,
    policy: TargetPolicy,
    frames: BTreeMap<u64, Stored>,
    /// The next sequence number to hand out, and the position it starts at.
    next_seq: u64,
    next_position: u64,
    started: bool,
    stalled: bool,
    /// Stall fills handed out, beyond a stall's first, since a received frame was last handed
    /// out: turns the output has already filled, should the frames they waited for turn out
    /// lost (see `Popped::Frame::stood_in`).
    fills_owed: u64,
    /// Sample frames concealed in a row with nothing buffered (see [`TargetPolicy::bridge`]).
    bridged: u64,
    /// Where playout started: the first [`BRIDGE_AFTER`] of playout stalls, never bridges.
    first_position: Option<u64>,
    /// Where playout was when a concealed frame last came after all: for [`BRIDGE_AFTER`]
    /// from there, a missing frame stalls rather than bridges.
    late_at: Option<u64>,
    /// Losses counted at the last target update, and when the last new one was seen.
    losses_seen: u64,
    last_loss: Option<Duration>,
    /// With [`TargetPolicy::fec_hold`]: frames are being lost and the codec rebuilds them from
    /// the next frame, so the target holds one frame more, and an empty buffer stalls (fills
    /// that frame at once) rather than bridging.
    fec_wanted: bool,
    end: Option<u64>,
    /// Sequence numbers concealed recently (to tell late from duplicate).
    concealed_recent: VecDeque<u64>,
    /// (arrival, transit) of recent frames, transit = arrival − position / rate.
    transits: VecDeque<(Duration, f64)>,
    target: f64,
    last_target_update: Option<Duration>,
    newest_end: u64,
    /// Transit of the previous arrival and the jitter estimate (RFC 3550), in seconds.
    prev_transit: Option<f64>,
    jitter: f64,
    stats: JitterStats,
    /// The lowest adaptive target the output allows, in seconds (see [`JitterBuffer::set_floor`]).
    floor: f64,
    /// The least audio, in seconds, the start waits for besides the target (see
    /// [`JitterBuffer::set_start_level`]).
    start_level: f64,
    /// What the target keeps above the quantile, in seconds, when the output says (see
    /// [`JitterBuffer::set_margin`]); else half a frame and 2 ms.
    margin: Option<f64>,
    /// The last quantile taken: when, the mean transit then, and the quantile above it.
    quantile: Option<(Duration, f64, f64)>,
    /// Scratch space for taking it.
    scratch: Vec<f64>,
}

/// How often the target's quantile is taken afresh (unless a frame comes later than it covers).
const QUANTILE_EVERY: Duration = Duration::from_millis(20);
/// How much of the stream plays before a missing frame may be bridged (see
/// [`TargetPolicy::bridge`]).
const BRIDGE_AFTER: Duration = Duration::from_secs(2);

/// How many recent concealed sequence numbers are remembered.
const RECENT: usize = 4096;

impl JitterBuffer {
    /// A buffer for a stream described by `info`, decoded by its codec's decoder (PCM when the
    /// codec's decoder cannot be made; [`JitterBuffer::with_decoder`] reports that instead).
    pub fn new(info: StreamInfo, policy: TargetPolicy) -> Self {
        let decoder = crate::codec::decoder_for(&info).unwrap_or_else(|e| {
            tracing::error!("{e}");
            Box::new(PcmDecoder::new(&info))
        });
        Self::with_decoder(info, policy, decoder)
    }

    /// A buffer for a stream described by `info`, decoded by `decoder`.
    pub fn with_decoder(info: StreamInfo, policy: TargetPolicy, decoder: Box<dyn Decoder>) -> Self {
        Self {
            info,
            decoder,
            policy,
            frames: BTreeMap::new(),
            next_seq: 0,
            next_position: 0,
            started: false,
            stalled: false,
            fills_owed: 0,
            bridged: 0,
            late_at: None,
            first_position: None,
            losses_seen: 0,
            last_loss: None,
            fec_wanted: false,
            end: None,
            concealed_recent: VecDeque::new(),
            transits: VecDeque::new(),
            target: policy.initial.as_secs_f64(),
            last_target_update: None,
            newest_end: 0,
            prev_transit: None,
            jitter: 0.0,
            stats: JitterStats::default(),
            floor: 0.0,
            start_level: 0.0,
            margin: None,
            quantile: None,
            scratch: Vec::new(),
        }
    }

    /// What was counted so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The current target delay.
    pub fn target(&self) -> Duration {
        Duration::from_secs_f64(self.target)
    }

    /// True once playback began.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Seconds at the start of the stream that its decoder drops (Opus's pre-skip, in 48 kHz
    /// samples); 0 for PCM.
    fn start_skip(&self) -> f64 {
        match self.info.codec {
            Codec::Opus { pre_skip } => {
                f64::from(pre_skip) / f64::from(audiowire_protocol::opus::RATE)
            }
            _ => 0.0,
        }
    }

    /// Audio buffered ahead of the read position, in seconds: from the next frame to hand out to
    /// the end of the newest frame received.
    pub fn level(&self) -> f64 {
        self.newest_end.saturating_sub(self.next_position) as f64 / f64::from(self.info.sample_rate)
    }

    /// Where a resumed stream should continue: after the newest frame received (its sequence
    /// number + 1, and the end of its samples). Frames still missing before it are concealed as
    /// lost when their turn comes.
    pub fn resume_point(&self) -> (u64, u64) {
        let seq = self
            .frames
            .keys()
            .next_back()
            .map_or(self.next_seq, |s| s + 1)
            .max(self.next_seq);
        (seq, self.newest_end.max(self.next_position))
    }

    /// The stream ended at `position` sample frames (an `End` message).
    pub fn end(&mut self, position: u64) {
        self.end = Some(position);
        self.newest_end = self.newest_end.max(position);
    }

    fn frame_samples(&self) -> u64 {
        u64::from(self.info.samples_per_frame)
    }

    /// `d` in the stream's sample frames.
    fn samples_in(&self, d: Duration) -> u64 {
        (d.as_secs_f64() * f64::from(self.info.sample_rate)).round() as u64
    }

    /// Files one frame that arrived at `arrival` (any monotonic clock).
    pub fn push(&mut self, audio: Audio, arrival: Duration) {
        let seq = audio.sequence;
        if seq < self.next_seq {
            if self.concealed_recent.contains(&seq) {
                self.stats.late += 1;
                // It was concealed; now it is here: count it once. Its delay is the network's
                // all the same, and the one the target most needs to see: learning only from
                // frames that came in time, a bridged stream would never raise it.
                self.concealed_recent.retain(|&s| s != seq);
                self.learn(audio.position, arrival);
                self.late_at = Some(self.next_position);
            } else {
                self.stats.duplicated += 1;
            }
            return;
        }
        if self.frames.contains_key(&seq) {
            self.stats.duplicated += 1;
            return;
        }
        self.stats.received += 1;
        let frames = self.info.frames_in(&audio.payload).unwrap_or(0);
        self.newest_end = self.newest_end.max(audio.position + frames);
        self.learn(audio.position, arrival);
        self.file(seq, audio, arrival);
    }

    /// Measures the transit of a frame that starts at `position` and arrived at `arrival`: the
    /// jitter statistic, and, once playback runs, the target's window.
    fn learn(&mut self, position: u64, arrival: Duration) {
        let transit = arrival.as_secs_f64() - position as f64 / f64::from(self.info.sample_rate);
        if let Some(prev) = self.prev_transit {
            self.jitter += ((transit - prev).abs() - self.jitter) / 16.0;
            self.stats.jitter_us = (self.jitter * 1e6) as u64;
        }
        self.prev_transit = Some(transit);
        // Frames that arrive before playback starts come in a burst (a live sender's history,
        // a file's pre-roll): their transit says nothing of the network, so the target learns
        // from the frames that follow.
        if !self.started {
            return;
        }
        self.transits.push_back((arrival, transit));
        while let Some(&(t, _)) = self.transits.front() {
            if arrival.saturating_sub(t) > self.policy.window {
                self.transits.pop_front();
            } else {
                break;
            }
        }
        self.update_target(arrival);
    }

    fn file(&mut self, seq: u64, audio: Audio, arrival: Duration) {
        self.frames.insert(
            seq,
            Stored {
                position: audio.position,
                payload: audio.payload,
                arrival,
                timestamp_us: audio.timestamp_us,
            },
        );
    }

    /// Forgets the transits measured so far (after a live stream skipped its start-up surplus,
    /// whose frames arrived in a burst).
    pub fn forget_transits(&mut self) {
        self.transits.clear();
        self.quantile = None;
    }

    /// Sets the least audio the start waits for, whatever the target: the output's first
    /// callback takes a whole period at once, and the frames after the pre-roll come at the
    /// sender's pace, a frame after the burst, so with a device the start needs two callbacks'
    /// worth (what the decoder drops, Opus's pre-skip, not counted) not to run dry at the
    /// second; with the null output, a frame more than the target.
    pub fn set_start_level(&mut self, level: Duration) {
        self.start_level = level.as_secs_f64();
    }

    /// Sets the lowest target the output allows: below about one output callback the device
    /// would run dry between frames whatever the network does. An adaptive target never goes
    /// below it (a pinned one is the user's to choose).
    pub fn set_floor(&mut self, floor: Duration) {
        self.floor = floor.as_secs_f64();
        if self.policy.min != self.policy.max {
            // Up at once, like any rise: a target under the floor would run the output dry.
            self.target = self
                .target
                .max(self.floor.min(self.policy.max.as_secs_f64()));
        }
    }

    /// Sets what the target keeps above the quantile of relative delay. By default half a
    /// frame and 2 ms, for an output whose callbacks fall anywhere against the frames, so that
    /// a frame may be wanted up to a callback before its first sample plays. An output that
    /// takes the stream frame by frame, each at its turn (the null clock), wants a frame only
    /// the feeding slack before it plays: that slack and a margin are enough.
    pub fn set_margin(&mut self, margin: Duration) {
        self.margin = Some(margin.as_secs_f64());
    }

    /// Recomputes the target from the transit window. The target is the mean time a frame waits
    /// from arrival to playout; a frame that arrives `x` later than the mean waits `x` less. So
    /// the target covers the policy's quantile of relative delay above its mean, plus half a
    /// frame and 2 ms of margin.
    fn update_target(&mut self, now: Duration) {
        if self.policy.min == self.policy.max || self.transits.len() < 8 {
            return;
        }
        // The quantile costs a pass over the window (a thousand frames at 5 ms): it is taken
        // again every 20 ms, or at once when the newest frame is later than it covers.
        let newest = self.transits.back().map_or(0.0, |t| t.1);
        let q = match self.quantile {
            Some((at, mean, q))
                if now.saturating_sub(at) < QUANTILE_EVERY && newest - mean <= q =>
            {
                q
            }
            _ => {
                let mean =
                    self.transits.iter().map(|t| t.1).sum::<f64>() / self.transits.len() as f64;
                self.scratch.clear();
                self.scratch
                    .extend(self.transits.iter().map(|t| t.1 - mean));
                let k = ((self.scratch.len() - 1) as f64 * self.policy.quantile).round() as usize;
                let (_, q, _) = self
                    .scratch
                    .select_nth_unstable_by(k, |a, b| a.total_cmp(b));
                let q = *q;
                self.quantile = Some((now, mean, q));
                q
            }
        };
        let frame = self.frame_samples() as f64 / f64::from(self.info.sample_rate);
        // Over a lossy link, while frames are being lost, a codec that rebuilds a lost frame
        // from the next one (Opus FEC) needs that next frame here when the loss is found: with
        // `fec_hold`, one frame more. Without losses (no FEC sent) nothing is added.
        if self.stats.lost > self.losses_seen {
            self.losses_seen = self.stats.lost;
            self.last_loss = Some(now);
        }
        self.fec_wanted = self.policy.fec_hold
            && !self.policy.bridge.is_zero()
            && self.decoder.recovers_from_next()
            && self
                .last_loss
                .is_some_and(|t| now.saturating_sub(t) < self.policy.window);
        let fec = if self.fec_wanted { frame } else { 0.0 };
        let margin = self.margin.unwrap_or(frame / 2.0 + 0.002);
        let wanted = ((q.max(0.0) + margin).max(self.floor) + fec)
            .clamp(self.policy.min.as_secs_f64(), self.policy.max.as_secs_f64());
        let dt = self
            .last_target_update
            .map_or(0.0, |t| now.saturating_sub(t).as_secs_f64());
        self.last_target_update = Some(now);
        if wanted >= self.target {
            self.target = wanted; // up at once
        } else {
            self.target = (self.target - self.policy.fall_rate * dt).max(wanted); // down slowly
        }
    }

    /// Drops the next frame unplayed if it is here (a live stream catching up); true if one was
    /// dropped.
    pub fn skip(&mut self) -> bool {
        let Some(f) = self.frames.remove(&self.next_seq) else {
            return false;
        };
        let frames = self.info.frames_in(&f.payload).unwrap_or(0);
        self.next_seq += 1;
        self.next_position = f.position + frames;
        self.stats.skipped += 1;
        true
    }

    /// Hands out the next frame (see [`Popped`]) if it is here. When it is missing, only an
    /// `urgent` pop (the output is about to run dry) conceals it or stalls; otherwise the buffer
    /// waits for it.
    pub fn pop_when(&mut self, urgent: bool) -> Popped {
        if !urgent && self.started && !self.frames.contains_key(&self.next_seq) {
            if self.end.is_some_and(|end| self.next_position >= end) {
                return Popped::Ended;
            }
            return Popped::Waiting;
        }
        self.pop()
    }

    /// Hands out the next frame (see [`Popped`]): concealing a missing one, or stalling.
    pub fn pop(&mut self) -> Popped {
        if !self.started {
            // The decoder drops the stream's first samples (Opus's pre-skip): they are not
            // audio the output gets, so the start waits for the target without them.
            // (Less a microsecond: whole frames that make the level exactly are enough.)
            let wanted = self.target.max(self.start_level) - 1e-6;
            let ready = self.level() - self.start_skip() >= wanted || self.end.is_some();
            if !ready || self.frames.is_empty() && self.end.is_none() {
                return Popped::Waiting;
            }
            self.started = true;
        }
        if let Some(end) = self.end
            && self.next_position >= end
        {
            return Popped::Ended;
        }
        if let Some(f) = self.frames.remove(&self.next_seq) {
            let seq = self.next_seq;
            self.stalled = false;
            self.fills_owed = 0;
            self.bridged = 0;
            self.first_position.get_or_insert(f.position);
            self.next_seq += 1;
            let frames = self.info.frames_in(&f.payload).unwrap_or(0);
            self.next_position = f.position + frames;
            return Popped::Frame {
                sequence: seq,
                position: f.position,
                payload: self.decoder.decode(f.payload),
                concealed: false,
                recovered: false,
                stood_in: false,
                arrival: Some(f.arrival),
                timestamp_us: Some(f.timestamp_us),
            };
        }
        let successor = self.frames.iter().next().map(|(_, f)| f.position);
        // Nothing behind it on a lossy transport: most likely late or lost, so bridge it like a
        // gap (the timeline kept) for as long as the policy allows, then stall.
        let bridge = successor.is_none()
            && self.end.is_none()
            && !self.stalled
            && !self.fec_wanted
            && self.bridged < self.samples_in(self.policy.bridge)
            // While the target is still learning the network (the first 2 s), a late frame says
            // it is too low: stalling raises the level to what is needed at once.
            && self
                .first_position
                .is_some_and(|p| self.next_position.saturating_sub(p) >= self.samples_in(BRIDGE_AFTER))
            // Bridging is for a frame late now and then. Another within 2 s says the level is
            // too low for this network (or for a pinned target): stalling raises it by a frame
            // at once, where bridging would conceal frame after frame and never catch up.
            && self
                .late_at
                .is_none_or(|p| self.next_position.saturating_sub(p) >= self.samples_in(BRIDGE_AFTER))
            // Never past a known length: a file's last frames are followed by silence, not loss.
            && self.info.total_frames.is_none_or(|t| self.next_position < t);
        if successor.is_some() || self.end.is_some() || bridge {
            // A gap: this frame is lost (or so late it no longer matters). Conceal and skip.
            // After an outage the buffer stalled through (a burst of losses), the fills beyond
            // the stall's first already took these frames' turns at the output: they are not
            // played again.
            let stood_in = successor.is_some() && self.fills_owed > 0;
            if stood_in {
                self.fills_owed -= 1;
            }
            let limit = successor
                .or(self.end)
                .or(self.info.total_frames)
                .unwrap_or(u64::MAX);
            let frames = self
                .frame_samples()
                .min(limit.saturating_sub(self.next_position))
                .max(1);
            let next = self
                .frames
                .get(&(self.next_seq + 1))
                .filter(|f| f.position == self.next_position + frames)
                .map(|f| f.payload.as_slice());
            let made = self.decoder.conceal(frames as usize, next);
            let seq = self.next_seq;
            let position = self.next_position;
            self.stats.lost += 1;
            if made.recovered {
                self.stats.recovered += 1;
            } else {
                self.stats.concealed += 1;
            }
            self.concealed_recent.push_back(seq);
            if self.concealed_recent.len() > RECENT {
                self.concealed_recent.pop_front();
            }
            self.next_seq += 1;
            self.next_position += frames;
            self.stalled = false;
            if bridge {
                self.bridged += frames;
            } else {
                self.bridged = 0;
            }
            return Popped::Frame {
                sequence: seq,
                position,
                payload: made.payload,
                concealed: !made.recovered,
                recovered: made.recovered,
                stood_in,
                arrival: None,
                timestamp_us: None,
            };
        }
        // Nothing buffered: stall, playing concealment without moving on.
        if self.stalled {
            self.fills_owed += 1;
        } else {
            self.stats.underruns += 1;
            self.stalled = true;
        }
        self.stats.concealed += 1;
        let payload = self.decoder.fill(self.frame_samples() as usize);
        Popped::Stall { payload }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::mirror;
    use audiowire_protocol::{Codec, SampleFormat};

    const RATE: u32 = 48_000;
    const SPF: u32 = 480;

    fn info() -> StreamInfo {
        StreamInfo {
            sample_rate: RATE,
            channels: 1,
            format: SampleFormat::S16,
            codec: Codec::Pcm,
            samples_per_frame: SPF,
            total_frames: None,
            live: false,
        }
    }

    /// Frame `seq` of a 440 Hz sine at half scale.
    fn frame(seq: u64) -> Audio {
        let samples: Vec<f32> = (0..SPF as u64)
            .map(|i| {
                let t = (seq * u64::from(SPF) + i) as f32 / RATE as f32;
                0.5 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
            })
            .collect();
        let mut payload = Vec::new();
        SampleFormat::S16.encode_floats(&samples, &mut payload);
        Audio {
            sequence: seq,
            position: seq * u64::from(SPF),
            timestamp_us: 0,
            payload,
        }
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn floats(bytes: &[u8]) -> Vec<f32> {
        let mut v = Vec::new();
        SampleFormat::S16.decode_floats(bytes, &mut v);
        v
    }

    #[test]
    fn waits_for_the_target_then_plays_in_order_bit_exactly() {
        let mut jb = JitterBuffer::new(info(), TargetPolicy::fixed(ms(30)));
        jb.push(frame(1), ms(0));
        jb.push(frame(0), ms(1));
        assert_eq!(jb.pop(), Popped::Waiting);
        jb.push(frame(2), ms(2));
        for seq in 0..3 {
            match jb.pop() {
                Popped::Frame {
                    sequence,
                    payload,
                    concealed,
                    ..
                } => {
                    assert_eq!((sequence, concealed), (seq, false));
                    assert_eq!(payload, frame(seq).payload);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(jb.stats().received, 3);
    }

    #[test]
    fn a_lost_frame_is_concealed_and_skipped_and_a_late_one_counted() {
        let mut jb = JitterBuffer::new(info(), TargetPolicy::fixed(ms(20)));
        for seq in [0, 2, 3] {
            jb.push(frame(seq), ms(seq));
        }
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(jb.pop());
        }
        let Popped::Frame {
            sequence: 1,
            position: 480,
            concealed: true,
            ..
        } = &out[1]
        else {
            panic!("{:?}", out[1]);
        };
        jb.push(frame(1), ms(40));
        jb.push(frame(3), ms(41));
        let s = jb.stats();
        assert_eq!((s.lost, s.late, s.duplicated, s.concealed), (1, 1, 1, 1));
    }

    #[test]
    fn concealment_joins_both_neighbours_without_a_step() {
        let mut jb = JitterBuffer::new(info(), TargetPolicy::fixed(ms(10)));
        for seq in [0, 2] {
            jb.push(frame(seq), ms(seq));
        }
        let Popped::Frame { payload: p0, .. } = jb.pop() else {
            panic!()
        };
        let Popped::Frame { payload: pc, .. } = jb.pop() else {
            panic!()
        };
        let Popped::Frame { payload: p2, .. } = jb.pop() else {
            panic!()
        };
        let (a, c, b) = (floats(&p0), floats(&pc), floats(&p2));
        // A 440 Hz sine at 0.5 moves at most 0.029 per sample: no step larger than that.
        let step_in = (c[0] - a[a.len() - 1]).abs();
        let step_out = (b[0] - c[c.len() - 1]).abs();
        assert!(step_in < 0.03 && step_out < 0.03, "{step_in} {step_out}");
        let max_step = c
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max);
        assert!(
            max_step < 0.06,
            "largest step inside the concealment {max_step}"
        );
    }

    #[test]
    fn an_empty_buffer_stalls_once_then_fades_to_silence() {
        let mut jb = JitterBuffer::new(info(), TargetPolicy::fixed(ms(10)));
        jb.push(frame(0), ms(0));
        assert!(matches!(jb.pop(), Popped::Frame { .. }));
        let mut last_peak = f32::MAX;
        for _ in 0..3 {
            let Popped::Stall { payload } = jb.pop() else {
                panic!()
            };
            let peak = floats(&payload).iter().map(|x| x.abs()).fold(0.0, f32::max);
            assert!(peak <= last_peak);
            last_peak = peak;
        }
        assert!(last_peak < 0.01, "silence after a few frames: {last_peak}");
        assert_eq!(jb.stats().underruns, 1);
        // The stream resumes where it was: nothing skipped.
        jb.push(frame(1), ms(50));
        assert!(matches!(
            jb.pop(),
            Popped::Frame {
                sequence: 1,
                concealed: false,
                ..
            }
        ));
    }

    #[test]
    fn lost_frames_at_the_end_are_concealed_up_to_end() {
        let mut jb = JitterBuffer::new(info(), TargetPolicy::fixed(ms(10)));
        jb.push(frame(0), ms(0));
        jb.end(3 * 480 - 100);
        let mut positions = Vec::new();
        loop {
            match jb.pop() {
                Popped::Frame {
                    position, payload, ..
                } => positions.push((position, payload.len() / 2)),
                Popped::Ended => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(positions, [(0, 480), (480, 480), (960, 380)]);
        assert_eq!(jb.stats().lost, 2);
    }

    #[test]
    fn the_target_rises_at_once_with_jitter_and_falls_slowly() {
        let policy = TargetPolicy::adaptive(ms(5), ms(20), ms(500));
        let mut jb = JitterBuffer::new(info(), policy);
        let mut seq = 0;
        // 2 s of a calm network: 10 ms frames arriving every 10 ms plus 1 ms of noise.
        for _ in 0..200 {
            jb.push(frame(seq), ms(seq * 10 + 5 + seq % 2));
            seq += 1;
            let _ = jb.pop();
        }
        let calm = jb.target();
        assert!(calm <= ms(20), "{calm:?}");
        // Then every 5th frame is 60 ms late.
        for _ in 0..100 {
            let extra = if seq % 5 == 0 { 60 } else { 0 };
            jb.push(frame(seq), ms(seq * 10 + 5 + extra));
            seq += 1;
            let _ = jb.pop();
        }
        // Transit now averages 12 ms more, and the late fifth lies 48 ms above that mean: the
        // target (the mean wait) must cover those 48 ms, plus half a frame and the margin.
        let rough = jb.target();
        assert!(rough >= ms(55), "grew at once to cover 60 ms: {rough:?}");
        // Calm again for 8 s: after 5 s the window has forgotten the late frames, then the
        // target falls at 4 ms/s at most: under 12 ms in the last 3 s (late frames leave the
        // window one by one, so it starts falling a little later).
        for _ in 0..800 {
            jb.push(frame(seq), ms(seq * 10 + 5));
            seq += 1;
            let _ = jb.pop();
        }
        let fell = rough - jb.target();
        assert!(
            fell >= ms(6) && fell <= ms(12),
            "fell {fell:?} from {rough:?}"
        );
    }

    #[test]
    fn an_output_taking_frames_at_their_turn_keeps_only_its_margin_above_the_quantile() {
        // Every 5th 10 ms frame 8 ms late: transit averages 1.6 ms above the rest, and the
        // 98th percentile lies 6.4 ms above that mean.
        let targets: Vec<f64> = [None, Some(ms(2))]
            .into_iter()
            .map(|margin| {
                let mut jb =
                    JitterBuffer::new(info(), TargetPolicy::adaptive(ms(1), ms(1), ms(500)));
                if let Some(m) = margin {
                    jb.set_margin(m);
                }
                for seq in 0..300 {
                    let late = if seq % 5 == 0 { 8 } else { 0 };
                    jb.push(frame(seq), ms(seq * 10 + 5 + late));
                    let _ = jb.pop();
                }
                jb.target().as_secs_f64() * 1e3
            })
            .collect();
        // With the null clock's margin, that margin alone above it (8.4 ms, less a few µs as
        // the late frames' share of the window is not exactly a fifth); by default half a frame
        // and 2 ms (a device's callbacks fall anywhere in a frame): 5 ms more.
        assert!((targets[1] - 8.4).abs() < 0.05, "{targets:?}");
        assert!((targets[0] - targets[1] - 5.0).abs() < 1e-6, "{targets:?}");
    }

    #[test]
    fn with_a_bridge_a_missing_frame_with_nothing_behind_it_is_concealed_and_keeps_the_timeline() {
        let mut policy = TargetPolicy::fixed(ms(10));
        policy.bridge = ms(20);
        let mut jb = JitterBuffer::new(info(), policy);
        jb.push(frame(0), ms(0));
        assert!(matches!(jb.pop(), Popped::Frame { sequence: 0, .. }));
        // In the first 2 s an empty buffer stalls (the target is still learning the network).
        assert!(matches!(jb.pop(), Popped::Stall { .. }));
        assert_eq!(jb.stats().underruns, 1);
        // 2 s of frames on time.
        for seq in 1..=200 {
            jb.push(frame(seq), ms(seq * 10));
            assert!(matches!(jb.pop(), Popped::Frame { sequence, .. } if sequence == seq));
        }
        // Frame 201 is late and nothing is behind it: concealed in its place, not a stall.
        match jb.pop() {
            Popped::Frame {
                sequence,
                position,
                concealed,
                ..
            } => assert_eq!((sequence, position, concealed), (201, 201 * 480, true)),
            other => panic!("expected a concealed frame 201, got {other:?}"),
        }
        // It comes after all: dropped as late; frame 202 plays in its own place.
        jb.push(frame(201), ms(2025));
        jb.push(frame(202), ms(2026));
        assert!(matches!(
            jb.pop(),
            Popped::Frame {
                sequence: 202,
                position: 96_960,
                concealed: false,
                ..
            }
        ));
        let s = jb.stats();
        assert_eq!((s.lost, s.late, s.underruns), (1, 1, 1));
        // Another frame late within 2 s of that one: the level is too low for this network,
        // so the buffer stalls (raising it by a frame) instead of bridging again.
        assert!(matches!(jb.pop(), Popped::Stall { .. }));
        assert_eq!(jb.stats().underruns, 2);
        // 2 s of frames on time after it.
        for seq in 203..=403 {
            jb.push(frame(seq), ms(seq * 10 + 5));
            assert!(matches!(jb.pop(), Popped::Frame { sequence, .. } if sequence == seq));
        }
        // A sender that stops: 20 ms (two frames) are bridged, then the buffer stalls.
        for seq in [404, 405] {
            let popped = jb.pop();
            let ok = matches!(popped, Popped::Frame { sequence, concealed: true, .. } if sequence == seq);
            assert!(ok, "{popped:?}");
        }
        assert!(matches!(jb.pop(), Popped::Stall { .. }));
        assert!(matches!(jb.pop(), Popped::Stall { .. }));
        assert_eq!(jb.stats().underruns, 3);
        // When frames come again, the stream goes on from where it stalled.
        jb.push(frame(406), ms(4100));
        let popped = jb.pop();
        let ok = matches!(
            popped,
            Popped::Frame {
                sequence: 406,
                concealed: false,
                ..
            }
        );
        assert!(ok, "{popped:?}");
    }

    /// An outage the buffer stalls through, whose frames turn out lost (later ones come
    /// first): the stall raises the level by one frame, as any stall does, and the turns its
    /// further fills took are the lost frames': they are recorded but not played again. Frames
    /// that come after a stall, however late, all play.
    #[test]
    fn a_stall_through_an_outage_of_lost_frames_raises_the_level_by_one_frame() {
        let mut policy = TargetPolicy::fixed(ms(10));
        policy.bridge = ms(20);
        let mut jb = JitterBuffer::new(info(), policy);
        // What reaches the output (`None`: a stall's fill) and what a recording gets.
        let (mut out, mut rec) = (Vec::new(), Vec::new());
        let mut pop = |jb: &mut JitterBuffer| match jb.pop() {
            Popped::Frame {
                sequence, stood_in, ..
            } => {
                rec.push(sequence);
                if !stood_in {
                    out.push(Some(sequence));
                }
            }
            Popped::Stall { .. } => out.push(None),
            other => panic!("{other:?}"),
        };
        jb.push(frame(0), ms(0));
        pop(&mut jb);
        // Frames 1 to 4 are lost; the buffer stalls four turns for them.
        for _ in 0..4 {
            pop(&mut jb);
        }
        // Frame 5 comes: 1 to 4 are lost. Three of their turns were filled already; one is
        // concealed now, and 5 plays a frame later than its turn.
        jb.push(frame(5), ms(50));
        for _ in 0..5 {
            pop(&mut jb);
        }
        // Frames 6 and 7 come late, after three fills: they all play (nothing was lost).
        for _ in 0..3 {
            pop(&mut jb);
        }
        jb.push(frame(6), ms(90));
        jb.push(frame(7), ms(91));
        pop(&mut jb);
        pop(&mut jb);
        assert_eq!(
            out,
            [
                Some(0),
                None,
                None,
                None,
                None,
                Some(4), // concealed: the one lost turn not filled
                Some(5),
                None,
                None,
                None,
                Some(6),
                Some(7),
            ]
        );
        // The recording holds one frame per sequence number.
        assert_eq!(rec, [0, 1, 2, 3, 4, 5, 6, 7]);
        let s = jb.stats();
        assert_eq!((s.lost, s.underruns, s.received), (4, 2, 4));
    }

    #[test]
    fn frames_that_come_after_being_bridged_raise_the_target() {
        let mut policy = TargetPolicy::adaptive(ms(1), ms(10), ms(1000));
        policy.bridge = ms(40);
        let mut jb = JitterBuffer::new(info(), policy);
        // A frame on time, played as soon as it came.
        let on_time = |jb: &mut JitterBuffer, seq: u64| {
            jb.push(frame(seq), ms(seq * 10));
            let popped = jb.pop();
            let ok = matches!(
                popped,
                Popped::Frame {
                    concealed: false,
                    ..
                }
            );
            assert!(ok, "{popped:?}");
        };
        // 3 s of them.
        for seq in 0..300 {
            on_time(&mut jb, seq);
        }
        let calm = jb.target();
        assert!(calm < ms(15), "{calm:?}");
        // Then a frame comes 25 ms late: its turn passes first (bridged, concealed), and it
        // is dropped as late when it comes.
        let popped = jb.pop();
        let ok = matches!(
            popped,
            Popped::Frame {
                sequence: 300,
                concealed: true,
                ..
            }
        );
        assert!(ok, "{popped:?}");
        jb.push(frame(300), ms(3000 + 25));
        // Then every 10th: within 2 s of a late one, the buffer stalls for it (a frame more
        // buffered at once), and it plays when it comes.
        for k in 0..10 {
            for next in 301 + k * 10..310 + k * 10 {
                on_time(&mut jb, next);
            }
            let seq = 310 + k * 10;
            assert!(matches!(jb.pop(), Popped::Stall { .. }));
            jb.push(frame(seq), ms(seq * 10 + 25));
            let popped = jb.pop();
            let ok = matches!(popped, Popped::Frame { sequence, concealed: false, .. } if sequence == seq);
            assert!(ok, "{popped:?}");
        }
        assert_eq!((jb.stats().late, jb.stats().underruns), (1, 10));
        // Every delay counted, the late one's too: 25 ms above the mean (which they raise by
        // 2.5 ms), plus half a frame and 2 ms.
        assert!(jb.target() >= ms(27), "{:?}", jb.target());
    }

    #[test]
    fn a_bridge_never_runs_past_a_known_length() {
        let mut policy = TargetPolicy::fixed(ms(10));
        policy.bridge = ms(40);
        let mut known = info();
        known.total_frames = Some(201 * 480);
        let mut jb = JitterBuffer::new(known, policy);
        // 2 s and a frame: the whole file, on time.
        for seq in 0..=200 {
            jb.push(frame(seq), ms(seq * 10));
            assert!(matches!(jb.pop(), Popped::Frame { sequence, .. } if sequence == seq));
        }
        // The file's frames are all out and its End has not come yet: wait, nothing made up.
        assert!(matches!(jb.pop(), Popped::Stall { .. }));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn a_burst_fades_out_then_silence_then_fades_into_the_next_frame() {
        let mut jb = JitterBuffer::new(info(), TargetPolicy::fixed(ms(10)));
        for seq in [0, 1, 6, 7] {
            jb.push(frame(seq), ms(seq));
        }
        let mut out = Vec::new();
        for _ in 0..8 {
            let Popped::Frame {
                sequence,
                payload,
                concealed,
                ..
            } = jb.pop()
            else {
                panic!()
            };
            out.push((sequence, concealed, floats(&payload)));
        }
        let lost: Vec<u64> = out.iter().filter(|f| f.1).map(|f| f.0).collect();
        assert_eq!(lost, [2, 3, 4, 5]);
        let peak = |v: &[f32]| v.iter().map(|x| x.abs()).fold(0.0, f32::max);
        // 2 fades out from frame 1 (ending in silence), 3 and 4 are silence, 5 fades into 6.
        assert!(out[2].2.last().unwrap().abs() < 1e-3);
        assert_eq!(peak(&out[3].2), 0.0);
        assert_eq!(peak(&out[4].2), 0.0);
        assert!(out[5].2[0].abs() < 1e-3);
        assert_eq!(out[5].2.last(), out[6].2.first());
        let steps = out
            .windows(2)
            .map(|w| (w[1].2[0] - w[0].2[w[0].2.len() - 1]).abs())
            .fold(0.0, f32::max);
        assert!(steps < 0.03, "a step at a frame boundary: {steps}");
        let s = jb.stats();
        assert_eq!((s.lost, s.concealed, s.underruns), (4, 4, 0));
    }

    #[test]
    fn the_start_waits_for_two_callbacks_of_audio_whatever_the_target() {
        let mut jb = JitterBuffer::new(info(), TargetPolicy::adaptive(ms(1), ms(10), ms(1000)));
        jb.set_start_level(ms(20));
        jb.push(frame(0), ms(0));
        // 10 ms is the target, but not two 10 ms callbacks.
        assert_eq!(jb.pop(), Popped::Waiting);
        jb.push(frame(1), ms(0));
        assert!(matches!(jb.pop(), Popped::Frame { sequence: 0, .. }));
        assert!(matches!(jb.pop(), Popped::Frame { sequence: 1, .. }));
    }

    #[test]
    fn an_opus_stream_starts_once_the_target_is_here_without_the_pre_skip() {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Audio).unwrap();
        let pre_skip = enc.get_lookahead().unwrap() as u16;
        assert!(pre_skip > 0);
        let info = StreamInfo {
            codec: Codec::Opus { pre_skip },
            format: SampleFormat::F32,
            ..info()
        };
        let mut packet = |seq: u64| {
            let mut payload = vec![0u8; 1500];
            let n = enc
                .encode_float(&[0.0; SPF as usize], &mut payload)
                .unwrap();
            payload.truncate(n);
            Audio {
                sequence: seq,
                position: seq * u64::from(SPF),
                timestamp_us: 0,
                payload,
            }
        };
        // 10 ms frames, a 10 ms target: the first frame gives only 10 ms less the pre-skip.
        let mut jb = JitterBuffer::new(info, TargetPolicy::fixed(ms(10)));
        jb.push(packet(0), ms(0));
        assert_eq!(jb.pop(), Popped::Waiting);
        jb.push(packet(1), ms(10));
        match jb.pop() {
            Popped::Frame {
                sequence, payload, ..
            } => {
                assert_eq!(sequence, 0);
                // F32 mono: the first frame is short by the pre-skip.
                assert_eq!(payload.len(), 4 * (SPF as usize - usize::from(pre_skip)));
            }
            other => panic!("{other:?}"),
        }
    }

    /// `n` 20 ms frames of a 330 Hz sine, encoded by libopus as speech at 32 kbit/s with
    /// in-band FEC for 10 % loss (so each packet carries its predecessor's FEC copy), and the
    /// stream's description; the encoder's pre-skip is in it.
    fn opus_fec_stream(n: u64) -> (StreamInfo, Vec<Audio>) {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
        enc.set_inband_fec(true).unwrap();
        enc.set_packet_loss_perc(10).unwrap();
        let pre_skip = enc.get_lookahead().unwrap() as u16;
        let info = StreamInfo {
            sample_rate: RATE,
            channels: 1,
            format: SampleFormat::F32,
            codec: Codec::Opus { pre_skip },
            samples_per_frame: 960,
            total_frames: None,
            live: false,
        };
        let packets = (0..n)
            .map(|seq| {
                let pcm: Vec<f32> = (0..960)
                    .map(|i| {
                        let t = (seq * 960 + i) as f32 / RATE as f32;
                        0.5 * (2.0 * std::f32::consts::PI * 330.0 * t).sin()
                    })
                    .collect();
                Audio {
                    sequence: seq,
                    position: seq * 960,
                    timestamp_us: 0,
                    payload: enc.encode_vec_float(&pcm, 4000).unwrap(),
                }
            })
            .collect();
        (info, packets)
    }

    #[test]
    fn a_lost_opus_frame_is_recovered_by_fec_when_the_next_is_here_else_concealed() {
        let (info, packets) = opus_fec_stream(12);
        let Codec::Opus { pre_skip } = info.codec else {
            unreachable!()
        };
        let mut jb = JitterBuffer::new(info, TargetPolicy::fixed(ms(20)));
        // Frame 5 never comes (its successor is here: FEC); 9 and 10 neither (9's successor is
        // missing too: PLC; 10 is followed by 11: FEC).
        for a in packets {
            if ![5, 9, 10].contains(&a.sequence) {
                let at = ms(a.sequence);
                jb.push(a, at);
            }
        }
        jb.end(12 * 960);
        let mut got = Vec::new();
        loop {
            match jb.pop() {
                Popped::Frame {
                    sequence,
                    payload,
                    concealed,
                    recovered,
                    ..
                } => got.push((sequence, concealed, recovered, payload.len() / 4)),
                Popped::Ended => break,
                other => panic!("{other:?}"),
            }
        }
        let expected_len = |seq: u64| 960 - if seq == 0 { usize::from(pre_skip) } else { 0 };
        for (seq, concealed, recovered, len) in &got {
            assert_eq!(
                *len,
                expected_len(*seq),
                "frame {seq}: the pre-skip is dropped once"
            );
            let want = match seq {
                5 | 10 => (false, true),
                9 => (true, false),
                _ => (false, false),
            };
            assert_eq!((*concealed, *recovered), want, "frame {seq}");
        }
        let s = jb.stats();
        assert_eq!((s.lost, s.recovered, s.concealed), (3, 2, 1));
    }

    #[test]
    fn only_with_fec_hold_does_a_loss_raise_the_target_by_a_frame_and_stall_not_bridge() {
        // FEC-carrying Opus, 20 ms frames arriving on time, played one frame behind the newest;
        // frame 20 is lost (its successor is here when it is found, so it is recovered either
        // way). Then, 2.6 s in (past the first 2 s, which always stall), frame 130 does not
        // come and nothing is behind it: bridged without the hold, a stall with it.
        let (info, packets) = opus_fec_stream(131);
        let mut seen = Vec::new();
        for hold in [false, true] {
            let mut policy = TargetPolicy::adaptive(ms(1), ms(10), ms(500));
            policy.bridge = ms(40);
            policy.fec_hold = hold;
            let mut jb = JitterBuffer::new(info, policy);
            let mut before = Duration::ZERO;
            for a in packets.iter().take(130).cloned() {
                let seq = a.sequence;
                if seq != 20 {
                    jb.push(a, ms(seq * 20));
                }
                if seq >= 1 {
                    assert!(
                        matches!(jb.pop(), Popped::Frame { .. }),
                        "frame {}",
                        seq - 1
                    );
                }
                if seq == 19 {
                    before = jb.target();
                }
            }
            let s = jb.stats();
            assert_eq!((s.lost, s.recovered), (1, 1), "hold {hold}: {s:?}");
            assert!(matches!(jb.pop(), Popped::Frame { sequence: 129, .. }));
            let bridged = match jb.pop() {
                Popped::Frame {
                    sequence: 130,
                    concealed: true,
                    ..
                } => true,
                Popped::Stall { .. } => false,
                other => panic!("hold {hold}: {other:?}"),
            };
            seen.push((before.as_secs_f64(), jb.target().as_secs_f64(), bridged));
        }
        let frame = 0.020;
        let (before, after, bridged) = seen[0];
        assert!((after - before).abs() < 1e-6, "without the hold: {seen:?}");
        assert!(bridged, "without the hold an empty buffer is bridged");
        let (before, after, bridged) = seen[1];
        assert!(
            (after - before - frame).abs() < 1e-6,
            "with it a frame more: {seen:?}"
        );
        assert!(!bridged, "with the hold an empty buffer stalls");
    }

    #[test]
    fn mirror_reads_back_and_forth() {
        let seq: Vec<usize> = (0..8).map(|i| mirror(i, 3)).collect();
        assert_eq!(seq, [0, 1, 2, 2, 1, 0, 0, 1]);
    }
}
