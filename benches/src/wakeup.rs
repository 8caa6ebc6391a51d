//! How late this machine wakes a sleeping thread, measured beside the bench's cells: a probe
//! thread sleeps to absolute deadlines 1 ms apart, as the sender's pacer and the player's null
//! output do, and records how late each wake-up came. It runs in the bench's process at the
//! priority the bench's threads got (real-time where granted), so it sees what audiowire's own
//! threads see: a stream with a few milliseconds of buffer cannot ride out a wake-up that comes
//! later than its buffer, whatever audiowire does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::stats::Distribution;

/// The probe's sleep, as the 1 ms cells' threads sleep.
pub const INTERVAL: Duration = Duration::from_millis(1);
/// At most this many wake-ups are kept (about 70 minutes at 1 ms): the probe stops recording,
/// never allocates without bound.
const MAX_SAMPLES: usize = 4_200_000;

/// A running probe; [`Probe::mark`] and [`Probe::since`] give the wake-ups of one cell.
#[derive(Debug)]
pub struct Probe {
    stop: Arc<AtomicBool>,
    late_us: Arc<Mutex<Vec<u32>>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// How late wake-ups came over some stretch of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lateness {
    /// Wake-ups recorded.
    pub count: usize,
    /// Lateness percentiles, ms.
    pub late_ms: Distribution,
    /// Wake-ups 2 ms or more late.
    pub over_2ms: usize,
    /// Wake-ups 5 ms or more late.
    pub over_5ms: usize,
}

impl Lateness {
    /// The lateness of `late_us` (microseconds, any order); `None` when empty.
    pub fn of(late_us: &[u32]) -> Option<Self> {
        Some(Self {
            count: late_us.len(),
            late_ms: Distribution::of(late_us.iter().map(|&u| f64::from(u) / 1000.0))?,
            over_2ms: late_us.iter().filter(|&&u| u >= 2000).count(),
            over_5ms: late_us.iter().filter(|&&u| u >= 5000).count(),
        })
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        format!(
            "{} wake-ups, late p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms; {} late by 2 ms or more, {} by 5 ms or more",
            self.count,
            self.late_ms.p50,
            self.late_ms.p99,
            self.late_ms.max,
            self.over_2ms,
            self.over_5ms
        )
    }
}

impl Probe {
    /// Starts the probe thread.
    pub fn start() -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let late_us = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
        let (stop2, late2) = (Arc::clone(&stop), Arc::clone(&late_us));
        let thread = thread::Builder::new()
            .name("wake-up probe".into())
            .spawn(move || {
                let start = Instant::now();
                let mut k: u32 = 0;
                while !stop2.load(Ordering::Relaxed) {
                    k = k.wrapping_add(1);
                    let due = start + INTERVAL * k;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    let late = Instant::now().saturating_duration_since(due);
                    let mut v = late2.lock().unwrap_or_else(PoisonError::into_inner);
                    if v.len() < MAX_SAMPLES {
                        v.push(u32::try_from(late.as_micros()).unwrap_or(u32::MAX));
                    }
                    drop(v);
                    // A stall longer than an interval is one late wake-up, not many.
                    let behind = start.elapsed().as_nanos() / INTERVAL.as_nanos();
                    k = k.max(u32::try_from(behind).unwrap_or(u32::MAX));
                }
            })?;
        Ok(Self {
            stop,
            late_us,
            thread: Some(thread),
        })
    }

    /// Where the record stands now, to pass to [`Probe::since`] later.
    pub fn mark(&self) -> usize {
        self.late_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The wake-ups since `mark`.
    pub fn since(&self, mark: usize) -> Option<Lateness> {
        let v = self.late_us.lock().unwrap_or_else(PoisonError::into_inner);
        Lateness::of(v.get(mark..).unwrap_or(&[]))
    }

    /// Stops the probe and returns every wake-up it recorded.
    pub fn finish(mut self) -> Option<Lateness> {
        self.halt();
        self.since(0)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn lateness_counts_the_late_ones_and_its_percentiles() {
        let mut late = vec![100u32; 996];
        late.extend([2000, 2500, 4999, 7800]);
        let l = Lateness::of(&late).unwrap();
        assert_eq!(l.count, 1000);
        assert_eq!(l.over_2ms, 4);
        assert_eq!(l.over_5ms, 1);
        assert!((l.late_ms.p50 - 0.1).abs() < 1e-9);
        assert!((l.late_ms.max - 7.8).abs() < 1e-9);
        assert!(
            l.line()
                .contains("4 late by 2 ms or more, 1 by 5 ms or more")
        );
        assert_eq!(Lateness::of(&[]), None);
    }

    #[test]
    fn the_probe_records_about_one_wake_up_per_interval() {
        let probe = Probe::start().unwrap();
        // Bounded wait for at least 50 wake-ups (50 ms at 1 ms), 5 s at most.
        let deadline = Instant::now() + Duration::from_secs(5);
        while probe.mark() < 50 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let mark = probe.mark();
        assert!(mark >= 50, "only {mark} wake-ups in 5 s");
        let all = probe.finish().unwrap();
        assert!(all.count >= mark);
        // However slow the machine, a wake-up is never early.
        assert!(all.late_ms.min >= 0.0);
    }
}
