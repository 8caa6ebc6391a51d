//! Latency statistics: a fixed histogram, so memory stays flat however long the stream runs,
//! and a bounded trace of latency over time for plots (`play --latency-log`), thinned by half
//! whenever it fills.

use std::time::Duration;

/// Width of one histogram bucket in µs.
const BUCKET_US: i64 = 100;
/// Buckets: 0 to 10 s; later values land in the last one.
const BUCKETS: usize = 100_000;
/// Most points the trace keeps (16 bytes each); when full, every other point is dropped and
/// from then on only every `stride`-th value is kept.
const TRACE_MAX: usize = 1 << 16;

/// How late the player's thread woke after the deadlines it slept to (the instant it must look
/// at the output's ring again): the machine's share in an underrun. A stream cannot ride out a
/// wake-up that comes later than its buffer, whatever it does, so the summary says when that
/// happened.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WakeLateness {
    /// Waits timed.
    pub waits: u64,
    /// Wake-ups [`WakeLateness::LATE`] or more after the deadline.
    pub late: u64,
    /// The latest wake-up, past its deadline.
    pub worst: Duration,
}

impl WakeLateness {
    /// A wake-up this late counts as late: more than the player's slack before a callback.
    pub const LATE: Duration = Duration::from_millis(2);

    /// A wait for at most `asked` that returned after `took`: late by what it took beyond that
    /// (a wait that returned early, for data, is on time).
    pub fn record(&mut self, asked: Duration, took: Duration) {
        self.waits += 1;
        let late = took.saturating_sub(asked);
        if late >= Self::LATE {
            self.late += 1;
        }
        self.worst = self.worst.max(late);
    }
}

/// A histogram of per-frame latencies in µs, with exact min, max and count.
#[derive(Debug, Clone)]
pub struct LatencyStats {
    buckets: Vec<u32>,
    count: u64,
    min_us: i64,
    max_us: i64,
    /// `(seconds since the player started, latency in ms)`, every `stride`-th value.
    trace: Vec<(f64, f64)>,
    stride: u64,
    traced: u64,
}

impl Default for LatencyStats {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            min_us: i64::MAX,
            max_us: i64::MIN,
            trace: Vec::new(),
            stride: 1,
            traced: 0,
        }
    }
}

impl LatencyStats {
    /// Records one latency.
    pub fn record(&mut self, us: i64) {
        let i = (us.max(0) / BUCKET_US).min(BUCKETS as i64 - 1) as usize;
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.count += 1;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// Records one latency measured at `at` (on the player's monotonic clock), and keeps it
    /// in the trace.
    pub fn record_at(&mut self, at: Duration, us: i64) {
        self.record(us);
        if self.traced % self.stride == 0 {
            if self.trace.len() >= TRACE_MAX {
                let mut i = 0;
                self.trace.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
            if self.traced % self.stride == 0 {
                self.trace.push((at.as_secs_f64(), us as f64 / 1000.0));
            }
        }
        self.traced += 1;
    }

    /// Latency over time: `(seconds since the player started, ms)`, in order, at most
    /// 65 536 points (evenly thinned when the stream had more).
    pub fn trace(&self) -> &[(f64, f64)] {
        &self.trace
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest value, if any.
    pub fn min_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.min_us as f64 / 1000.0)
    }

    /// The largest value, if any.
    pub fn max_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.max_us as f64 / 1000.0)
    }

    /// The `q` quantile (0..=1) to the bucket's middle, in ms, clamped to [min, max].
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                let mid = i as i64 * BUCKET_US + BUCKET_US / 2;
                return Some(mid.clamp(self.min_us, self.max_us) as f64 / 1000.0);
            }
        }
        self.max_ms()
    }
}

/// A JSON string literal of `s` (quotes and escapes included).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or `null` for nothing (or not finite).
fn json_num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "null".into(),
    }
}

impl crate::player::Summary {
    /// The summary as one line of JSON (`play --summary-json`), for scripts and the benches:
    /// `{"summary":{...}}` with the counters, latency percentiles in ms and the end state.
    pub fn to_json(&self) -> String {
        let j = &self.playout.jitter;
        let l = &self.latency;
        let q = |p: f64| json_num(l.quantile_ms(p));
        format!(
            concat!(
                "{{\"summary\":{{\"interrupted\":{},\"seconds\":{:.3},\"frames_out\":{},",
                "\"sample_rate\":{},\"channels\":{},\"format\":{},\"samples_per_frame\":{},",
                "\"received\":{},\"lost\":{},\"recovered\":{},\"late\":{},\"duplicated\":{},",
                "\"concealed\":{},\"skipped\":{},",
                "\"underruns\":{},\"buffer_underruns\":{},\"ring_underruns\":{},\"device_xruns\":{},",
                "\"woke_late\":{},\"woke_late_worst_ms\":{:.3},",
                "\"malformed\":{},\"latency_ms\":{{\"count\":{},\"min\":{},\"p50\":{},\"p95\":{},",
                "\"p99\":{},\"max\":{}}},\"device_delay_ms\":{:.3},\"level_ms\":{:.3},",
                "\"target_ms\":{:.3},\"drift_ppm\":{:.1},\"output\":{},\"recorded\":{}}}}}"
            ),
            self.interrupted,
            self.frames_out as f64 / f64::from(self.info.sample_rate.max(1)),
            self.frames_out,
            self.info.sample_rate,
            self.info.channels,
            json_str(self.info.format.name()),
            self.info.samples_per_frame,
            j.received,
            j.lost,
            j.recovered,
            j.late,
            j.duplicated,
            j.concealed,
            j.skipped,
            self.underruns(),
            j.underruns,
            self.ring_underruns,
            self.device_xruns,
            self.woke.late,
            self.woke.worst.as_secs_f64() * 1e3,
            self.malformed,
            l.count(),
            json_num(l.min_ms()),
            q(0.5),
            q(0.95),
            q(0.99),
            json_num(l.max_ms()),
            self.device_delay.as_secs_f64() * 1e3,
            self.playout.level * 1e3,
            self.playout.target * 1e3,
            self.playout.drift_ppm,
            json_str(&self.output),
            self.recorded
                .as_ref()
                .map_or("null".into(), |p| json_str(&p.display().to_string())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut s = LatencyStats::default();
        for ms in 1..=100 {
            s.record(ms * 1000);
        }
        assert_eq!(s.count(), 100);
        assert_eq!(s.min_ms(), Some(1.0));
        assert_eq!(s.max_ms(), Some(100.0));
        let p50 = s.quantile_ms(0.5).unwrap();
        assert!((p50 - 50.0).abs() <= 0.1, "{p50}");
        let p99 = s.quantile_ms(0.99).unwrap();
        assert!((p99 - 99.0).abs() <= 0.1, "{p99}");
    }

    #[test]
    fn the_trace_is_thinned_evenly_and_stays_bounded() {
        let mut s = LatencyStats::default();
        let n = 3 * TRACE_MAX as u64 + 5;
        for k in 0..n {
            s.record_at(Duration::from_millis(k), k as i64);
        }
        assert_eq!(s.count(), n);
        let t = s.trace();
        assert!(
            t.len() <= TRACE_MAX && t.len() >= TRACE_MAX / 2,
            "{}",
            t.len()
        );
        // Evenly spaced, in order, from the start.
        assert_eq!(t[0], (0.0, 0.0));
        let step = t[1].0 - t[0].0;
        assert!(
            t.windows(2)
                .all(|w| ((w[1].0 - w[0].0) - step).abs() < 1e-9)
        );
        assert_eq!(step, 0.004);
    }

    #[test]
    fn a_wake_up_is_late_by_what_it_took_past_its_deadline() {
        let mut w = WakeLateness::default();
        let ms = Duration::from_millis;
        w.record(ms(5), ms(2)); // data came first: on time
        w.record(ms(5), Duration::from_micros(6_900)); // 1.9 ms past: not late
        w.record(ms(5), ms(12)); // 7 ms past
        w.record(ms(1), ms(3)); // 2 ms past
        assert_eq!(w.waits, 4);
        assert_eq!(w.late, 2);
        assert_eq!(w.worst, ms(7));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(json_num(None), "null");
        assert_eq!(json_num(Some(f64::NAN)), "null");
        assert_eq!(json_num(Some(1.5)), "1.500");
    }

    #[test]
    fn empty_has_no_quantiles() {
        assert_eq!(LatencyStats::default().quantile_ms(0.5), None);
    }
}
