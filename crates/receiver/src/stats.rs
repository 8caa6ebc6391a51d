//! Latency statistics: a fixed histogram, so memory stays flat however long the stream runs.

/// Width of one histogram bucket in µs.
const BUCKET_US: i64 = 100;
/// Buckets: 0 to 10 s; later values land in the last one.
const BUCKETS: usize = 100_000;

/// A histogram of per-frame latencies in µs, with exact min, max and count.
#[derive(Debug, Clone)]
pub struct LatencyStats {
    buckets: Vec<u32>,
    count: u64,
    min_us: i64,
    max_us: i64,
}

impl Default for LatencyStats {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            min_us: i64::MAX,
            max_us: i64::MIN,
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
    fn empty_has_no_quantiles() {
        assert_eq!(LatencyStats::default().quantile_ms(0.5), None);
    }
}
