//! The playback core: what runs inside the audio callback, and the clocked null output.
//!
//! [`render`] is the whole audio callback: pop what the ring holds, fill the rest with silence,
//! and count an underrun in an atomic when the ring ran dry mid-stream. No locks, allocation,
//! logging or blocking. The cpal device and [`NullClock`] (a real-time clock with no sound card,
//! for `--out` alone) both call it, so they count underruns the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringbuf::HeapCons;
use ringbuf::traits::{Consumer, Observer};

/// State shared between the feeding thread and the output, all atomics.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set by the feeder once the buffer reached the target latency: playback may begin.
    pub started: AtomicBool,
    /// Set by the feeder once the last sample is in the ring: running dry is then the end, not
    /// an underrun.
    pub ended: AtomicBool,
    /// Callbacks that found the ring short mid-stream.
    pub underruns: AtomicU64,
    /// Samples replaced by silence in those callbacks.
    pub missing_samples: AtomicU64,
    /// Samples taken from the ring and played.
    pub played_samples: AtomicU64,
    /// The device's last reported delay from callback to playback, in ns.
    pub device_delay_ns: AtomicU64,
    /// Underruns the device itself reported (xruns: the callback came too late).
    pub device_xruns: AtomicU64,
    /// Other errors the backend reported. ALSA's pulse plugin, for one, reports a burst of I/O
    /// errors before its first timing update while playing perfectly, so these are only logged.
    pub backend_errors: AtomicU64,
    /// The most samples the output asked for in one callback (sets how much the feeder keeps
    /// queued).
    pub callback_samples: AtomicU64,
    /// The resampling ratio, as `f64` bits, for an output that applies it itself (the null
    /// clock consumes `1 / ratio` as fast).
    pub ratio_bits: AtomicU64,
    /// When the last callback began, in ns since `epoch` (0: none yet): with the callback's
    /// size, when the next one is due.
    pub last_callback_ns: AtomicU64,
    /// When the next callback is due, in ns since `epoch`, for an output that knows (the null
    /// clock, whose periods vary); 0: a period after the last.
    pub next_callback_ns: AtomicU64,
    /// The instant `last_callback_ns` counts from.
    pub epoch: Option<Instant>,
}

impl Shared {
    /// A fresh state behind an `Arc`.
    pub fn new() -> Arc<Self> {
        let s = Self {
            epoch: Some(Instant::now()),
            ..Self::default()
        };
        s.ratio_bits.store(1.0f64.to_bits(), Ordering::Relaxed);
        Arc::new(s)
    }

    /// Notes that a callback for `samples` samples (all channels) begins now. Real-time safe:
    /// reading the monotonic clock (vDSO) and two atomic stores.
    pub fn begin_callback(&self, samples: usize) {
        self.callback_samples
            .fetch_max(samples as u64, Ordering::Relaxed);
        if let Some(epoch) = self.epoch {
            let ns = epoch.elapsed().as_nanos().max(1) as u64;
            self.last_callback_ns.store(ns, Ordering::Relaxed);
        }
    }

    /// Notes when the next callback is due (an output whose periods vary).
    pub fn set_next_callback(&self, due: Instant) {
        if let Some(epoch) = self.epoch {
            let ns = due.saturating_duration_since(epoch).as_nanos().max(1) as u64;
            self.next_callback_ns.store(ns, Ordering::Relaxed);
        }
    }

    /// Seconds until the next callback is due: when the output said, else `period` seconds
    /// after the last; 0 when none came yet or the next is overdue.
    pub fn until_next_callback(&self, period: f64) -> f64 {
        let last = self.last_callback_ns.load(Ordering::Relaxed);
        let next = self.next_callback_ns.load(Ordering::Relaxed);
        match self.epoch {
            Some(epoch) if last > 0 => {
                let now = epoch.elapsed().as_nanos() as f64 / 1e9;
                let until = if next > 0 {
                    next as f64 / 1e9 - now
                } else {
                    period - (now - last as f64 / 1e9)
                };
                until.clamp(0.0, period)
            }
            _ => 0.0,
        }
    }

    /// The ratio the null clock applies.
    pub fn ratio(&self) -> f64 {
        f64::from_bits(self.ratio_bits.load(Ordering::Relaxed))
    }
}

/// Fills `out` from the ring and pads with silence. Real-time safe. The caller notes the
/// callback first ([`Shared::begin_callback`]).
pub fn render(cons: &mut HeapCons<f32>, out: &mut [f32], shared: &Shared) {
    if !shared.started.load(Ordering::Acquire) {
        out.fill(0.0);
        return;
    }
    let n = cons.pop_slice(out);
    shared.played_samples.fetch_add(n as u64, Ordering::Relaxed);
    if n < out.len() {
        out[n..].fill(0.0);
        if !shared.ended.load(Ordering::Acquire) {
            shared.underruns.fetch_add(1, Ordering::Relaxed);
            shared
                .missing_samples
                .fetch_add((out.len() - n) as u64, Ordering::Relaxed);
        }
    }
}

/// A real-time clock that consumes the ring as a sound card would, for when there is no device
/// (`--out` alone): one stream frame per callback (a few, for frames under 1 ms), each when its
/// turn comes, from the instant playback starts ([`Shared::started`], then [`NullClock::go`]).
/// Its callbacks fall on the frames' first samples, so a frame is wanted only when it is due to
/// play (less the feeding thread's slack), never a callback early as with a device whose periods
/// fall anywhere in a frame. A callback that finds more queued than whole callbacks takes just
/// that part (see `next_take`: Opus's pre-skip, a short frame), so that the frames after it stay
/// in phase. It applies the resampling ratio by stretching its periods (`ratio` times as long),
/// not by taking more or fewer samples, which would slide the callbacks off the frames.
#[derive(Debug)]
pub struct NullClock {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NullClock {
    /// Starts consuming `per_callback` sample frames of `channels` samples a callback (whole
    /// stream frames: see [`crate::player::null_frames_per_callback`]), at `rate` sample frames
    /// per second.
    pub fn start(
        mut cons: HeapCons<f32>,
        shared: Arc<Shared>,
        rate: u32,
        channels: u16,
        per_callback: u32,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("null output".into())
            .spawn(move || {
                let ch = usize::from(channels.max(1));
                let per = per_callback.max(1) as usize * ch;
                let mut buf = vec![0.0f32; per];
                // Bounded: `go` wakes it, the timeout only rechecks the flags.
                while !shared.started.load(Ordering::Acquire) && !stop2.load(Ordering::Relaxed) {
                    thread::park_timeout(Duration::from_millis(20));
                }
                let start = Instant::now();
                let mut played = 0.0f64;
                while !stop2.load(Ordering::Relaxed) {
                    let take = next_take(cons.occupied_len(), per);
                    // A device resampling by `ratio` plays `ratio` times as long (a ratio out
                    // of the controller's ±0.5 % by far is no ratio: play at 1).
                    let ratio = Some(shared.ratio())
                        .filter(|r| (0.5..=2.0).contains(r))
                        .unwrap_or(1.0);
                    played += (take / ch) as f64 / f64::from(rate) * ratio;
                    let due = start + Duration::from_secs_f64(played);
                    shared.set_next_callback(due);
                    shared.begin_callback(take);
                    render(&mut cons, &mut buf[..take], &shared);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Wakes the clock once playback has started (`Shared::started` set): it begins at once.
    pub fn go(&self) {
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

/// What the null clock's next callback takes of the `occupied` samples queued, callbacks being
/// `per` samples: what lies beyond whole callbacks, if anything, so that the frames queued
/// after it start on a callback (the first callback takes what the decoder left of the first
/// frames, less Opus's pre-skip; a later one, a short frame such as a looping file's last);
/// else a whole callback. Frames are queued whole, so the queue's end is a frame's end.
fn next_take(occupied: usize, per: usize) -> usize {
    match occupied % per {
        0 => per,
        part => part,
    }
}

impl Drop for NullClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbuf::HeapRb;
    use ringbuf::traits::{Producer, Split};

    #[test]
    fn silence_until_started_then_samples_then_counted_underrun() {
        let (mut prod, mut cons) = HeapRb::<f32>::new(16).split();
        let shared = Shared::new();
        prod.push_slice(&[1.0, 2.0, 3.0]);
        let mut out = [9.0f32; 2];
        render(&mut cons, &mut out, &shared);
        assert_eq!(out, [0.0, 0.0]);
        assert_eq!(shared.underruns.load(Ordering::Relaxed), 0);

        shared.started.store(true, Ordering::Release);
        render(&mut cons, &mut out, &shared);
        assert_eq!(out, [1.0, 2.0]);
        render(&mut cons, &mut out, &shared);
        assert_eq!(out, [3.0, 0.0]);
        assert_eq!(shared.underruns.load(Ordering::Relaxed), 1);
        assert_eq!(shared.missing_samples.load(Ordering::Relaxed), 1);
        assert_eq!(shared.played_samples.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_null_clock_begins_with_playback() {
        let (mut prod, cons) = HeapRb::<f32>::new(4096).split();
        prod.push_slice(&[0.25; 1024]);
        let shared = Shared::new();
        let clock = NullClock::start(cons, Arc::clone(&shared), 48_000, 2, 48).unwrap();
        // The stimulus: 30 periods with playback not started (not a synchronisation). A clock
        // that ran would have made 30 callbacks.
        thread::sleep(Duration::from_millis(30));
        assert_eq!(shared.callback_samples.load(Ordering::Relaxed), 0);
        assert_eq!(shared.last_callback_ns.load(Ordering::Relaxed), 0);
        shared.started.store(true, Ordering::Release);
        clock.go();
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.played_samples.load(Ordering::Relaxed) < 1024 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        // It takes a frame, 96 samples (1 ms of 48 kHz stereo), a callback (its first, the 64
        // beyond whole frames: see the test below).
        assert_eq!(shared.played_samples.load(Ordering::Relaxed), 1024);
        assert_eq!(shared.callback_samples.load(Ordering::Relaxed), 96);
    }

    #[test]
    fn a_callback_takes_what_lies_beyond_whole_frames_so_the_next_frame_starts_on_one() {
        // Opus at 48 kHz stereo, 2.5 ms frames (240 samples), the 312-sample-frame pre-skip
        // dropped from the first frames: 10 frames queue 2400 - 624 samples.
        assert_eq!(next_take(2400 - 624, 240), 96);
        assert_eq!(next_take(2400 - 624 - 96, 240), 240);
        // A short frame of 100 samples queued behind two whole ones, mid-stream: the next
        // callback takes 100 samples, and the frame queued next starts on the one after.
        assert_eq!(next_take(580, 240), 100);
        assert_eq!(next_take(480 + 240, 240), 240);
        assert_eq!(next_take(960, 240), 240);
        // Nothing queued (an underrun, or the end): a whole callback, padded with silence.
        assert_eq!(next_take(0, 240), 240);
    }

    #[test]
    fn running_dry_after_the_end_is_not_an_underrun() {
        let (mut prod, mut cons) = HeapRb::<f32>::new(16).split();
        let shared = Shared::new();
        prod.push_slice(&[0.5]);
        shared.started.store(true, Ordering::Release);
        shared.ended.store(true, Ordering::Release);
        let mut out = [1.0f32; 4];
        render(&mut cons, &mut out, &shared);
        assert_eq!(out, [0.5, 0.0, 0.0, 0.0]);
        assert_eq!(shared.underruns.load(Ordering::Relaxed), 0);
    }
}
