//! How late this machine wakes a sleeping thread, measured beside the bench's cells: a probe
//! thread sleeps to absolute deadlines 1 ms apart, as the sender's pacer and the player's null
//! output do, and records how late each wake-up came. It runs in the bench's process at the
//! priority the bench's threads got (real-time where granted), so it sees what audiowire's own
//! threads see: a stream with a few milliseconds of buffer cannot ride out a wake-up that comes
//! later than its buffer, whatever audiowire does.
//!
//! It also measures what a wake-up costs: the probe thread's own CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`, the clock `/proc/PID/stat`'s utime + stime are scaled to)
//! divided by its wake-ups. The loop does little else (a few clock reads and a push), so that
//! is the floor of a thread that wakes on a timer on this machine: the switch in and out, the
//! sleep's system calls, and whatever the hypervisor adds to them. The thread body allocates
//! only to grow its record.

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
    record: Arc<Mutex<Record>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What the probe thread has recorded; both fields change together, under one lock.
#[derive(Debug)]
struct Record {
    /// How late each wake-up came, µs.
    late_us: Vec<u32>,
    /// The probe thread's CPU time from its first sleep to its last recorded wake-up, ns
    /// (`None` where the platform has no per-thread CPU clock).
    cpu_ns: Option<u64>,
}

/// Where the probe's record stood at [`Probe::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    wakeups: usize,
    cpu_ns: Option<u64>,
}

impl Mark {
    /// Wake-ups recorded until then.
    pub fn wakeups(&self) -> usize {
        self.wakeups
    }
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
    /// The probe thread's CPU time per wake-up, µs: what one timer wake-up of a thread costs
    /// on this machine. `None` when not measured.
    pub cpu_us_per_wakeup: Option<f64>,
}

/// CPU time per wake-up, µs, of `cpu_ns` spent over `wakeups`; `None` for no wake-up.
pub fn cpu_us_per_wakeup(cpu_ns: u64, wakeups: usize) -> Option<f64> {
    (wakeups > 0).then(|| cpu_ns as f64 / 1e3 / wakeups as f64)
}

impl Lateness {
    /// The lateness of `late_us` (microseconds, any order), and what the wake-ups cost if
    /// `cpu_ns` (the waking thread's CPU time over them) is given; `None` when empty.
    pub fn of(late_us: &[u32], cpu_ns: Option<u64>) -> Option<Self> {
        Some(Self {
            count: late_us.len(),
            late_ms: Distribution::of(late_us.iter().map(|&u| f64::from(u) / 1000.0))?,
            over_2ms: late_us.iter().filter(|&&u| u >= 2000).count(),
            over_5ms: late_us.iter().filter(|&&u| u >= 5000).count(),
            cpu_us_per_wakeup: cpu_ns.and_then(|c| cpu_us_per_wakeup(c, late_us.len())),
        })
    }

    /// The cores `per_second` wake-ups a second cost at this cost per wake-up.
    pub fn cores_for(&self, per_second: f64) -> Option<f64> {
        self.cpu_us_per_wakeup.map(|us| us * per_second / 1e6)
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        format!(
            "{} wake-ups, late p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms; {} late by 2 ms or more, {} by 5 ms or more{}",
            self.count,
            self.late_ms.p50,
            self.late_ms.p99,
            self.late_ms.max,
            self.over_2ms,
            self.over_5ms,
            self.cpu_us_per_wakeup.map_or(String::new(), |us| format!(
                "; {us:.1} µs of CPU per wake-up"
            ))
        )
    }
}

/// The calling thread's CPU time, ns.
#[cfg(unix)]
fn thread_cpu_ns() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// No per-thread CPU clock here: the cost is not measured.
#[cfg(not(unix))]
fn thread_cpu_ns() -> Option<u64> {
    None
}

impl Probe {
    /// Starts the probe thread.
    pub fn start() -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record {
            late_us: Vec::with_capacity(1 << 16),
            cpu_ns: None,
        }));
        let (stop2, record2) = (Arc::clone(&stop), Arc::clone(&record));
        let thread = thread::Builder::new()
            .name("wake-up probe".into())
            .spawn(move || {
                // The thread's start-up is not a wake-up: CPU counts from here.
                let cpu0 = thread_cpu_ns();
                let start = Instant::now();
                let mut k: u32 = 0;
                while !stop2.load(Ordering::Relaxed) {
                    k = k.wrapping_add(1);
                    let due = start + INTERVAL * k;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    let late = Instant::now().saturating_duration_since(due);
                    let cpu_ns = thread_cpu_ns()
                        .zip(cpu0)
                        .map(|(t, t0)| t.saturating_sub(t0));
                    let mut r = record2.lock().unwrap_or_else(PoisonError::into_inner);
                    // Once full, neither wake-ups nor their CPU are counted: the two agree.
                    if r.late_us.len() < MAX_SAMPLES {
                        r.late_us
                            .push(u32::try_from(late.as_micros()).unwrap_or(u32::MAX));
                        r.cpu_ns = cpu_ns;
                    }
                    drop(r);
                    // A stall longer than an interval is one late wake-up, not many.
                    let behind = start.elapsed().as_nanos() / INTERVAL.as_nanos();
                    k = k.max(u32::try_from(behind).unwrap_or(u32::MAX));
                }
            })?;
        Ok(Self {
            stop,
            record,
            thread: Some(thread),
        })
    }

    /// Where the record stands now, to pass to [`Probe::since`] later.
    pub fn mark(&self) -> Mark {
        let r = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        Mark {
            wakeups: r.late_us.len(),
            cpu_ns: r.cpu_ns,
        }
    }

    /// The wake-ups since `mark`, and their CPU time.
    pub fn since(&self, mark: Mark) -> Option<Lateness> {
        // Copied out, so that the probe thread is not kept waiting on the lock while the
        // percentiles are sorted: its next wake-up would look late.
        let (late_us, cpu_ns) = {
            let r = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            let late_us = r.late_us.get(mark.wakeups..).unwrap_or(&[]).to_vec();
            let cpu_ns = r.cpu_ns.map(|c| c.saturating_sub(mark.cpu_ns.unwrap_or(0)));
            (late_us, cpu_ns)
        };
        Lateness::of(&late_us, cpu_ns)
    }

    /// Stops the probe and returns every wake-up it recorded.
    pub fn finish(mut self) -> Option<Lateness> {
        self.halt();
        self.since(Mark {
            wakeups: 0,
            cpu_ns: None,
        })
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
        let l = Lateness::of(&late, None).unwrap();
        assert_eq!(l.count, 1000);
        assert_eq!(l.over_2ms, 4);
        assert_eq!(l.over_5ms, 1);
        assert!((l.late_ms.p50 - 0.1).abs() < 1e-9);
        assert!((l.late_ms.max - 7.8).abs() < 1e-9);
        assert!(
            l.line()
                .ends_with("4 late by 2 ms or more, 1 by 5 ms or more")
        );
        assert_eq!(l.cpu_us_per_wakeup, None);
        assert_eq!(l.cores_for(100.0), None);
        assert_eq!(Lateness::of(&[], None), None);
        assert_eq!(Lateness::of(&[], Some(1000)), None);
    }

    #[test]
    fn the_cost_per_wake_up_is_the_cpu_time_over_the_wake_ups() {
        assert_eq!(cpu_us_per_wakeup(36_000_000, 1000), Some(36.0));
        assert_eq!(cpu_us_per_wakeup(1_500, 4), Some(0.375));
        assert_eq!(cpu_us_per_wakeup(0, 7), Some(0.0));
        assert_eq!(cpu_us_per_wakeup(5, 0), None);
        // 2000 wake-ups that cost 0.07 s of CPU: 35 µs each; 100 a second cost 0.0035 cores.
        let l = Lateness::of(&[100; 2000], Some(70_000_000)).unwrap();
        assert_eq!(l.cpu_us_per_wakeup, Some(35.0));
        assert!((l.cores_for(100.0).unwrap() - 0.0035).abs() < 1e-12);
        assert!(
            l.line().ends_with("; 35.0 µs of CPU per wake-up"),
            "{}",
            l.line()
        );
    }

    #[test]
    fn the_probe_records_about_one_wake_up_per_interval() {
        let probe = Probe::start().unwrap();
        // Bounded wait for at least 50 wake-ups (50 ms at 1 ms), 5 s at most.
        let deadline = Instant::now() + Duration::from_secs(5);
        while probe.mark().wakeups() < 50 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let mark = probe.mark().wakeups();
        assert!(mark >= 50, "only {mark} wake-ups in 5 s");
        let all = probe.finish().unwrap();
        assert!(all.count >= mark);
        // However slow the machine, a wake-up is never early.
        assert!(all.late_ms.min >= 0.0);
    }

    #[test]
    fn the_probe_measures_what_its_wake_ups_cost() {
        let probe = Probe::start().unwrap();
        thread::sleep(Duration::from_millis(100));
        let mark = probe.mark();
        // About 200 wake-ups after the mark; bounded at 5 s on a crowded machine.
        let deadline = Instant::now() + Duration::from_secs(5);
        while probe.mark().wakeups() < mark.wakeups() + 200 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let cell = probe.since(mark).unwrap();
        let all = probe.finish().unwrap();
        for l in [cell, all] {
            let us = l.cpu_us_per_wakeup.unwrap();
            // A wake-up costs something, and far less than the 1 ms between two of them.
            assert!(
                us > 0.0 && us < 1000.0,
                "{us} µs per wake-up over {}",
                l.count
            );
        }
        assert!(cell.count >= 200, "only {} wake-ups in 5 s", cell.count);
        assert!(all.count >= mark.wakeups() + cell.count);
    }
}
