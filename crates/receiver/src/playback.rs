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
use ringbuf::traits::Consumer;

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

    /// Seconds until the next callback is due, given that callbacks come every `period`
    /// seconds: 0 when none came yet or the next is overdue.
    pub fn until_next_callback(&self, period: f64) -> f64 {
        let last = self.last_callback_ns.load(Ordering::Relaxed);
        match self.epoch {
            Some(epoch) if last > 0 => {
                let since = epoch.elapsed().as_nanos() as f64 / 1e9 - last as f64 / 1e9;
                (period - since).clamp(0.0, period)
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
/// (`--out` alone): one period every `period`, on absolute deadlines, from the instant playback
/// starts ([`Shared::started`], then [`NullClock::go`]): its first period takes the first audio
/// queued, as a sound card's would if it opened just then. A clock that ran from before the
/// audio came started the stream up to a period late, at a phase that changed from run to run.
#[derive(Debug)]
pub struct NullClock {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NullClock {
    /// Starts consuming `rate` sample frames of `channels` samples per second, one `period` at
    /// a time (fractions carried over, so the clock is exact).
    pub fn start(
        mut cons: HeapCons<f32>,
        shared: Arc<Shared>,
        rate: u32,
        channels: u16,
        period: Duration,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("null output".into())
            .spawn(move || {
                let ch = usize::from(channels.max(1));
                let per = f64::from(rate) * period.as_secs_f64();
                let mut buf = vec![0.0f32; (per as usize + 1) * 2 * ch];
                // Bounded: `go` wakes it, the timeout only rechecks the flags.
                while !shared.started.load(Ordering::Acquire) && !stop2.load(Ordering::Relaxed) {
                    thread::park_timeout(Duration::from_millis(20));
                }
                let start = Instant::now();
                let mut k: u32 = 0;
                let mut owed = 0.0f64;
                while !stop2.load(Ordering::Relaxed) {
                    // A device resampling by `ratio` takes `1 / ratio` as many input samples.
                    owed += per / shared.ratio();
                    let frames = (owed as usize).min(buf.len() / ch);
                    owed -= frames as f64;
                    shared.begin_callback(frames * ch);
                    render(&mut cons, &mut buf[..frames * ch], &shared);
                    k = k.wrapping_add(1);
                    let due = start + period * k;
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
        let clock = NullClock::start(
            cons,
            Arc::clone(&shared),
            48_000,
            2,
            Duration::from_millis(1),
        )
        .unwrap();
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
        // From its first period on it takes 96 samples (1 ms of 48 kHz stereo) a period.
        assert_eq!(shared.played_samples.load(Ordering::Relaxed), 1024);
        assert_eq!(shared.callback_samples.load(Ordering::Relaxed), 96);
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
