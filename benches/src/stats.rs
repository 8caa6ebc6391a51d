//! Percentiles and the network's own delay, as the reports quote them.

use audiowire_netsim::Config;

/// The `q` quantile (0..=1) of `sorted` (ascending) by the nearest-rank method: the smallest
/// value with at least `q` of the values at or below it, as the player's histogram counts.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    Some(sorted[rank - 1])
}

/// Count, extremes and the percentiles the reports quote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distribution {
    /// Values.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Distribution {
    /// The distribution of `values` (any order; NaNs ignored), `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        Some(Self {
            count: v.len(),
            min: *v.first()?,
            p50: percentile(&v, 0.5)?,
            p95: percentile(&v, 0.95)?,
            p99: percentile(&v, 0.99)?,
            max: *v.last()?,
        })
    }
}

/// The `q` quantile of the one-way delay a netsim [`Config`] gives a packet, in ms: its delay
/// plus jitter drawn uniformly from `[-jitter, +jitter]`, clamped at zero (see docs/netsim.md).
/// Reordering holds and rate limits are not counted (no profile has them).
pub fn network_delay_quantile_ms(config: &Config, q: f64) -> f64 {
    let d = config.delay.as_secs_f64() * 1e3;
    let j = config.jitter.as_secs_f64() * 1e3;
    (d - j + 2.0 * j * q.clamp(0.0, 1.0)).max(0.0)
}

/// The median of `values`, if any (for CPU figures over repeated readings).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use audiowire_netsim::Profile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn distribution_sorts_and_ignores_nan() {
        let d = Distribution::of([3.0, f64::NAN, 1.0, 2.0, 4.0]).unwrap();
        assert_eq!(d.count, 4);
        assert_eq!((d.min, d.p50, d.max), (1.0, 2.0, 4.0));
        assert_eq!(d.p99, 4.0);
        assert!(Distribution::of([]).is_none());
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    }

    #[test]
    fn network_quantiles_of_the_profiles() {
        let q = |p: Profile, q| network_delay_quantile_ms(&p.config(), q);
        assert_eq!(q(Profile::Clean, 0.99), 0.0);
        assert!((q(Profile::Lan, 0.5) - 0.5).abs() < 1e-9);
        // Wi-Fi: uniform on [-5, 15] ms clamped at 0: p99 = 14.8 ms, a quarter at 0.
        assert!((q(Profile::Wifi, 0.99) - 14.8).abs() < 1e-9);
        assert_eq!(q(Profile::Wifi, 0.2), 0.0);
        // Internet: uniform on [15, 45] ms.
        assert!((q(Profile::Internet, 0.99) - 44.7).abs() < 1e-9);
        assert!((q(Profile::Internet, 0.0) - 15.0).abs() < 1e-9);
    }
}
