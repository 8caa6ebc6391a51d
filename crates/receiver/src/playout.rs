//! Playout, sans-IO: the jitter buffer and the level controller together.
//!
//! The feeding thread calls [`Playout::push`] for every frame that arrives and [`Playout::next`]
//! whenever the output needs more audio, telling it how much audio is already queued downstream
//! (in the ring and the device). The level the controller steers is the whole latency the player
//! adds: what the jitter buffer holds plus what is queued downstream. Everything is measured in
//! seconds on a monotonic clock the caller passes in, so tests run in virtual time.
//!
//! A live stream ([`StreamInfo::live`]: live input or a broadcast) that starts with more
//! buffered than its target, as
//! when the output device took a while to open and frames piled up meanwhile, *catches up*:
//! for [`CATCH_UP_WINDOW`] after it starts, whole frames beyond the target are dropped unplayed
//! (counted as `skipped`), where the controller alone would take seconds to drain the surplus
//! at its 0.5 % rate limit. A file, looping or not, is never skipped: every sample of it plays.

use std::time::Duration;

use audiowire_protocol::{Audio, StreamInfo};

use crate::control::{Controller, ControllerConfig};
use crate::jitter::{JitterBuffer, JitterStats, Popped, TargetPolicy};

/// A snapshot of playout state for the stats line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayoutStats {
    /// The jitter buffer's counters.
    pub jitter: JitterStats,
    /// The mean wait of a frame in the player (filtered), in seconds: the latency it adds.
    pub level: f64,
    /// The controller's error: level less the target, less the offset the stream started
    /// with (see [`ControllerConfig::calibration`]), in seconds; 0 until calibrated.
    pub error: f64,
    /// The target latency, in seconds.
    pub target: f64,
    /// The resampling ratio now.
    pub ratio: f64,
    /// The drift the controller has learned, in ppm.
    pub drift_ppm: f64,
}

/// How long after a live stream starts surplus frames are dropped to reach the target.
pub const CATCH_UP_WINDOW: Duration = Duration::from_millis(150);

/// How far beyond its target a catching-up live stream may be before frames are dropped.
const CATCH_UP_SLACK: f64 = 0.002;

/// Jitter buffer plus level controller.
#[derive(Debug)]
pub struct Playout {
    jitter: JitterBuffer,
    controller: Controller,
    /// A live stream: surplus at the start may be skipped.
    live: bool,
    /// Until when a live stream catches up (set once it started).
    catch_up_until: Option<Duration>,
    /// Seconds in a frame.
    frame: f64,
}

impl Playout {
    /// Playout of a stream described by `info` with target `policy`.
    pub fn new(info: StreamInfo, policy: TargetPolicy) -> Self {
        Self::with_jitter(info, JitterBuffer::new(info, policy))
    }

    /// Playout of a stream described by `info`, decoded by `decoder` (see [`crate::codec`]).
    pub fn with_decoder(
        info: StreamInfo,
        policy: TargetPolicy,
        decoder: Box<dyn crate::codec::Decoder>,
    ) -> Self {
        Self::with_jitter(info, JitterBuffer::with_decoder(info, policy, decoder))
    }

    fn with_jitter(info: StreamInfo, jitter: JitterBuffer) -> Self {
        Self {
            live: info.live,
            catch_up_until: None,
            frame: f64::from(info.samples_per_frame) / f64::from(info.sample_rate),
            jitter,
            controller: Controller::new(ControllerConfig {
                // One frame of structural offset, plus 2 ms.
                max_offset: f64::from(info.samples_per_frame) / f64::from(info.sample_rate) + 0.002,
                ..ControllerConfig::default()
            }),
        }
    }

    /// Never drops a live stream's frames to catch up at its start (a recording keeps every
    /// frame).
    pub fn keep_every_frame(&mut self) {
        self.live = false;
    }

    /// A frame arrived at `now`.
    pub fn push(&mut self, audio: Audio, now: Duration) {
        self.jitter.push(audio, now);
    }

    /// Where a resumed stream should continue (see [`JitterBuffer::resume_point`]).
    pub fn resume_point(&self) -> (u64, u64) {
        self.jitter.resume_point()
    }

    /// The stream ends at `position`.
    pub fn end(&mut self, position: u64) {
        self.jitter.end(position);
    }

    /// The next frame to play, given `downstream` seconds already queued after the buffer (so
    /// its first sample plays `downstream` from `now`). Updates the ratio to resample it with
    /// ([`Playout::ratio`]).
    ///
    /// The controller steers the *wait*: for each received frame, the time from its arrival to
    /// the playout of its first sample, `now - arrival + downstream`. Both ends of that are
    /// instants, so it carries no quantisation from frame-sized steps, and its mean is the
    /// latency the player adds.
    pub fn next(&mut self, now: Duration, downstream: f64) -> Popped {
        self.next_when(now, downstream, true)
    }

    /// As [`Playout::next`], but a missing frame is only concealed (or the buffer stalls) when
    /// `urgent`; otherwise `Waiting` is returned and the frame may still come.
    pub fn next_when(&mut self, now: Duration, downstream: f64, urgent: bool) -> Popped {
        self.catch_up(now, downstream);
        let popped = self.jitter.pop_when(urgent);
        if let Popped::Frame {
            arrival: Some(arrival),
            ..
        } = popped
        {
            let wait = now.saturating_sub(arrival).as_secs_f64() + downstream;
            self.controller
                .update(now.as_secs_f64(), wait, self.jitter.target().as_secs_f64());
        }
        popped
    }

    /// A live stream in its first moments (from the first call on): drops whole frames while
    /// the newest frame's first sample would play more than the target, a frame and
    /// [`CATCH_UP_SLACK`] from now.
    fn catch_up(&mut self, now: Duration, downstream: f64) {
        if !self.live {
            return;
        }
        if now >= *self.catch_up_until.get_or_insert(now + CATCH_UP_WINDOW) {
            return;
        }
        let frame = self.frame;
        let limit = self.jitter.target().as_secs_f64() + frame + CATCH_UP_SLACK;
        // Bounded by the frames buffered; each pass drops one or stops.
        let mut skipped = false;
        for _ in 0..100_000 {
            if downstream + self.jitter.level() - frame <= limit || !self.jitter.skip() {
                break;
            }
            skipped = true;
        }
        if skipped {
            self.jitter.forget_transits();
        }
    }

    /// The lowest adaptive target the output allows (see [`JitterBuffer::set_floor`]).
    pub fn set_floor(&mut self, floor: Duration) {
        self.jitter.set_floor(floor);
    }

    /// What the target keeps above the quantile (see [`JitterBuffer::set_margin`]).
    pub fn set_margin(&mut self, margin: Duration) {
        self.jitter.set_margin(margin);
    }

    /// The least audio the start waits for (see [`JitterBuffer::set_start_level`]).
    pub fn set_start_level(&mut self, level: Duration) {
        self.jitter.set_start_level(level);
    }

    /// The resampling ratio (output samples per input sample) for what `next` returned.
    pub fn ratio(&self) -> f64 {
        self.controller.ratio()
    }

    /// The latency target now.
    pub fn target(&self) -> Duration {
        self.jitter.target()
    }

    /// Counters and state.
    pub fn stats(&self) -> PlayoutStats {
        PlayoutStats {
            jitter: self.jitter.stats(),
            level: self.controller.level().unwrap_or(0.0),
            error: self
                .controller
                .error(self.jitter.target().as_secs_f64())
                .unwrap_or(0.0),
            target: self.jitter.target().as_secs_f64(),
            ratio: self.controller.ratio(),
            drift_ppm: self.controller.drift_ppm(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiowire_protocol::{Codec, SampleFormat};

    const RATE: u32 = 48_000;
    const SPF: u64 = 480;

    fn info() -> StreamInfo {
        StreamInfo {
            sample_rate: RATE,
            channels: 1,
            format: SampleFormat::S16,
            codec: Codec::Pcm,
            samples_per_frame: SPF as u32,
            total_frames: None,
            live: false,
        }
    }

    fn audio(seq: u64) -> Audio {
        Audio {
            sequence: seq,
            position: seq * SPF,
            timestamp_us: 0,
            payload: vec![0; SPF as usize * 2],
        }
    }

    /// What a virtual-time run measured.
    #[derive(Debug)]
    struct Run {
        underruns: u64,
        device_starved: u64,
        worst_after_convergence: f64,
        drift_ppm: f64,
    }

    /// Simulates `secs` seconds: a sender whose clock runs `ppm` fast (negative: slow) sends 10 ms
    /// frames over a network with `delay` plus a deterministic jitter pattern of `jitter`
    /// amplitude; a device consumes 10 ms periods at the nominal rate; the feeder keeps 15 ms
    /// queued downstream, resampling each frame by the controller's ratio. Checks the level
    /// against the target after `converge` seconds.
    fn simulate(ppm: f64, secs: f64, delay: f64, jitter: f64, target: f64, converge: f64) -> Run {
        let mut p = Playout::new(info(), TargetPolicy::fixed(Duration::from_secs_f64(target)));
        let frame = SPF as f64 / f64::from(RATE);
        let sender_period = frame / (1.0 + ppm * 1e-6);
        let tick = 0.001; // 1 ms steps of virtual time
        let mut next_send = 0u64;
        let mut in_flight: Vec<(f64, u64)> = Vec::new();
        let mut downstream = 0.0f64; // seconds queued after the buffer
        let mut next_period = 0.0f64;
        let mut started = false;
        let mut run = Run {
            underruns: 0,
            device_starved: 0,
            worst_after_convergence: 0.0,
            drift_ppm: 0.0,
        };
        let steps = (secs / tick) as u64;
        let mut levels = Vec::new();
        for step in 0..steps {
            let now = step as f64 * tick;
            // Sender: every frame whose send time has come, with a jittered arrival.
            while next_send as f64 * sender_period <= now {
                let j = jitter * (((next_send * 7919) % 13) as f64 / 6.0 - 1.0);
                in_flight.push((
                    next_send as f64 * sender_period + delay + j.max(-delay),
                    next_send,
                ));
                next_send += 1;
            }
            in_flight.retain(|&(at, seq)| {
                if at <= now {
                    p.push(audio(seq), Duration::from_secs_f64(now));
                    false
                } else {
                    true
                }
            });
            // Feeder: top the downstream queue up to 15 ms.
            while downstream < 0.015 {
                match p.next(Duration::from_secs_f64(now), downstream) {
                    Popped::Frame { .. } | Popped::Stall { .. } => {
                        if !started {
                            // The device starts with the first audio.
                            started = true;
                            next_period = now;
                        }
                        downstream += frame * p.ratio();
                    }
                    Popped::Waiting | Popped::Ended => break,
                }
            }
            // Device: one 10 ms period every 10 ms, at the nominal rate.
            if started && now >= next_period {
                next_period += 0.010;
                downstream -= 0.010;
                if downstream < 0.0 {
                    run.device_starved += 1;
                    downstream = 0.0;
                }
            }
            if now >= converge {
                let s = p.stats();
                run.worst_after_convergence = run.worst_after_convergence.max(s.error.abs());
                if step % 60_000 == 0 {
                    levels.push(format!("{:+.2}", s.error * 1e3));
                }
            }
        }
        let s = p.stats();
        eprintln!(
            "ppm {ppm:+}: learned {:+.0} ppm; level - target each minute after convergence (ms): {levels:?}",
            s.drift_ppm
        );
        run.underruns = s.jitter.underruns;
        run.drift_ppm = s.drift_ppm;
        run
    }

    #[test]
    fn sender_clock_500_ppm_fast_over_an_hour_holds_the_level() {
        let run = simulate(500.0, 3600.0, 0.005, 0.002, 0.040, 300.0);
        assert_eq!(run.underruns, 0, "{run:?}");
        assert_eq!(run.device_starved, 0, "{run:?}");
        assert!(run.worst_after_convergence <= 0.002, "{run:?}");
        assert!((run.drift_ppm - 500.0).abs() < 50.0, "{run:?}");
    }

    #[test]
    fn sender_clock_500_ppm_slow_over_an_hour_holds_the_level() {
        let run = simulate(-500.0, 3600.0, 0.005, 0.002, 0.040, 300.0);
        assert_eq!(run.underruns, 0, "{run:?}");
        assert_eq!(run.device_starved, 0, "{run:?}");
        assert!(run.worst_after_convergence <= 0.002, "{run:?}");
        assert!((run.drift_ppm + 500.0).abs() < 50.0, "{run:?}");
    }

    #[test]
    fn no_drift_no_jitter_keeps_the_ratio_at_exactly_one() {
        let mut p = Playout::new(info(), TargetPolicy::fixed(Duration::from_millis(30)));
        let mut downstream = 0.0;
        let mut seq = 0;
        for ms in 0..60_000u64 {
            let now = Duration::from_millis(ms);
            if ms % 10 == 0 {
                p.push(audio(seq), now);
                seq += 1;
            }
            while downstream < 0.015 {
                match p.next(now, downstream) {
                    Popped::Frame { .. } => downstream += 0.010 * p.ratio(),
                    _ => break,
                }
            }
            if ms % 10 == 5 && p.stats().jitter.received > 3 {
                downstream -= 0.010;
            }
            assert_eq!(p.ratio(), 1.0, "at {ms} ms: {:?}", p.stats());
        }
    }

    /// A live stream whose first 120 ms piled up (the device took that long to open) plays from
    /// near its 30 ms target at once, dropping the surplus; a file, or a looping one, with the
    /// same start plays every frame.
    fn start_with_surplus(total_frames: Option<u64>, live: bool) -> (u64, Vec<u64>) {
        start_with_surplus_kept(total_frames, live, false)
    }

    fn start_with_surplus_kept(
        total_frames: Option<u64>,
        live: bool,
        keep_every_frame: bool,
    ) -> (u64, Vec<u64>) {
        let info = StreamInfo {
            total_frames,
            live,
            ..info()
        };
        let mut p = Playout::new(info, TargetPolicy::fixed(Duration::from_millis(30)));
        if keep_every_frame {
            p.keep_every_frame();
        }
        for seq in 0..12 {
            p.push(audio(seq), Duration::from_millis(120));
        }
        let mut played = Vec::new();
        let mut downstream = 0.0;
        for ms in 120..400u64 {
            let now = Duration::from_millis(ms);
            if ms % 10 == 0 && ms > 120 {
                p.push(audio(ms / 10 - 1), now);
            }
            while downstream < 0.015 {
                match p.next(now, downstream) {
                    Popped::Frame { sequence, .. } => {
                        played.push(sequence);
                        downstream += 0.010;
                    }
                    _ => break,
                }
            }
            if ms % 10 == 5 {
                downstream = (downstream - 0.010).max(0.0);
            }
        }
        (p.stats().jitter.skipped, played)
    }

    #[test]
    fn a_live_stream_with_a_surplus_at_the_start_catches_up() {
        let (skipped, played) = start_with_surplus(None, true);
        // 120 ms buffered against 30 ms + a frame + 2 ms of slack: 7 frames go.
        assert_eq!(skipped, 7, "{played:?}");
        assert_eq!(played[0], 7, "the first frame played is the first one kept");
        assert!(played.windows(2).all(|w| w[1] == w[0] + 1), "{played:?}");
    }

    /// A recording alone keeps every frame of a live stream, its piled-up start too.
    #[test]
    fn a_recorded_live_stream_with_a_surplus_at_the_start_keeps_every_frame() {
        let (skipped, played) = start_with_surplus_kept(None, true, true);
        assert_eq!(skipped, 0);
        assert_eq!(played[..5], [0, 1, 2, 3, 4]);
        assert!(played.windows(2).all(|w| w[1] == w[0] + 1), "{played:?}");
    }

    #[test]
    fn a_file_with_a_surplus_at_the_start_plays_every_frame() {
        let (skipped, played) = start_with_surplus(Some(48_000), false);
        assert_eq!(skipped, 0);
        assert_eq!(played[..5], [0, 1, 2, 3, 4]);
        assert!(played.windows(2).all(|w| w[1] == w[0] + 1), "{played:?}");
    }

    #[test]
    fn a_looping_file_with_a_surplus_at_the_start_plays_every_frame() {
        let (skipped, played) = start_with_surplus(None, false);
        assert_eq!(skipped, 0);
        assert_eq!(played[..5], [0, 1, 2, 3, 4]);
    }
}
