//! Clock math for `Ping`/`Pong`, sans-IO: the NTP offset and delay from the four timestamps of an
//! exchange, round-trip statistics as ping(8) prints them (min/avg/max/mdev), and the answer a
//! server gives to a probe.
//!
//! Nothing here reads a clock: callers pass timestamps in (µs since the Unix epoch on each side's
//! wall clock) and get numbers out, so every formula is tested with exact values.
//!
//! A client sends `Ping { t1 }` at `t1` on its clock; the server notes `t2` (arrival) and `t3`
//! (departure) on its clock and answers `Pong { t1, t2, t3 }`; the client notes `t4` (arrival).
//! Then, as in NTP (RFC 5905):
//!
//! - offset θ = ((t2 − t1) + (t3 − t4)) / 2, how far the server's clock is ahead of the client's;
//! - delay δ = (t4 − t1) − (t3 − t2), the round trip without the time the server held the ping.
//!
//! θ is exact when both directions take equally long; its error is at most δ/2. Of several
//! exchanges, the one with the smallest delay gives the best offset ([`OffsetFilter`]).

use crate::message::Message;

/// The four timestamps of one exchange, in µs since the Unix epoch: `t1` and `t4` on the client's
/// clock, `t2` and `t3` on the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Client: the ping left.
    pub t1_us: u64,
    /// Server: the ping arrived.
    pub t2_us: u64,
    /// Server: the pong left.
    pub t3_us: u64,
    /// Client: the pong arrived.
    pub t4_us: u64,
}

impl Exchange {
    /// θ, in µs: how far the server's clock is ahead of the client's (negative: behind).
    pub fn offset_us(&self) -> f64 {
        let d = |a: u64, b: u64| i128::from(a) - i128::from(b);
        (d(self.t2_us, self.t1_us) + d(self.t3_us, self.t4_us)) as f64 / 2.0
    }

    /// δ, in µs: the round trip less the server's holding time. Can come out slightly negative
    /// when a clock is stepped during the exchange.
    pub fn delay_us(&self) -> f64 {
        let d = |a: u64, b: u64| i128::from(a) - i128::from(b);
        (d(self.t4_us, self.t1_us) - d(self.t3_us, self.t2_us)) as f64
    }
}

/// Round-trip time statistics, as ping(8) reports them: min, avg, max and mdev (the population
/// standard deviation, `sqrt(mean(rtt²) − mean(rtt)²)`), computed with Welford's method so that
/// long runs stay accurate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RttStats {
    count: u64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

impl RttStats {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one round-trip time (any unit; the statistics come out in the same unit).
    pub fn push(&mut self, rtt: f64) {
        if !rtt.is_finite() {
            return;
        }
        self.count += 1;
        if self.count == 1 {
            self.min = rtt;
            self.max = rtt;
        } else {
            self.min = self.min.min(rtt);
            self.max = self.max.max(rtt);
        }
        let delta = rtt - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (rtt - self.mean);
    }

    /// Samples so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest sample.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// The largest sample.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// The mean.
    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// ping(8)'s mdev: the population standard deviation.
    pub fn mdev(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2 / self.count as f64).max(0.0).sqrt())
    }
}

/// Keeps the exchange with the smallest delay, whose offset is the best estimate (its error is
/// at most half its delay).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OffsetFilter {
    best: Option<Exchange>,
}

impl OffsetFilter {
    /// No exchanges yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Considers one exchange.
    pub fn push(&mut self, x: Exchange) {
        if self.best.is_none_or(|b| x.delay_us() < b.delay_us()) {
            self.best = Some(x);
        }
    }

    /// The exchange with the smallest delay so far.
    pub fn best(&self) -> Option<Exchange> {
        self.best
    }

    /// The best offset estimate, in µs (server ahead of client when positive).
    pub fn offset_us(&self) -> Option<f64> {
        self.best.map(|b| b.offset_us())
    }

    /// Half the best exchange's delay: a bound on the estimate's error, in µs.
    pub fn error_bound_us(&self) -> Option<f64> {
        self.best.map(|b| b.delay_us().max(0.0) / 2.0)
    }
}

/// What any audiowire server answers to a probe: the same `Echo` for an `Echo`, a `Pong` for a
/// `Ping` (`received_us`: when the ping arrived, `now_us`: when the pong leaves, both on the
/// server's wall clock). `None` for every other message.
pub fn answer_probe(msg: &Message, received_us: u64, now_us: u64) -> Option<Message> {
    match msg {
        Message::Echo { payload } => Some(Message::Echo {
            payload: payload.clone(),
        }),
        Message::Ping { id, t1_us } => Some(Message::Pong {
            id: *id,
            t1_us: *t1_us,
            t2_us: received_us,
            t3_us: now_us,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_delay_follow_rfc_5905() {
        // Server clock 5 s ahead; 300 µs each way; the server holds the ping 50 µs.
        let t1 = 1_000_000_000;
        let x = Exchange {
            t1_us: t1,
            t2_us: t1 + 300 + 5_000_000,
            t3_us: t1 + 350 + 5_000_000,
            t4_us: t1 + 650,
        };
        assert_eq!(x.offset_us(), 5_000_000.0);
        assert_eq!(x.delay_us(), 600.0);
        // Asymmetric paths: 100 µs out, 500 µs back. The offset is off by half the difference.
        let y = Exchange {
            t1_us: t1,
            t2_us: t1 + 100,
            t3_us: t1 + 100,
            t4_us: t1 + 600,
        };
        assert_eq!(y.offset_us(), -200.0);
        assert_eq!(y.delay_us(), 600.0);
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let x = Exchange {
            t1_us: u64::MAX,
            t2_us: 0,
            t3_us: 0,
            t4_us: u64::MAX,
        };
        assert_eq!(x.offset_us(), -(u64::MAX as f64));
        assert_eq!(x.delay_us(), 0.0);
    }

    #[test]
    fn rtt_statistics_match_ping8() {
        let mut s = RttStats::new();
        assert_eq!(s.min(), None);
        assert_eq!(s.mdev(), None);
        for rtt in [1.0, 2.0, 3.0, 4.0] {
            s.push(rtt);
        }
        s.push(f64::NAN); // ignored
        assert_eq!(s.count(), 4);
        assert_eq!(s.min(), Some(1.0));
        assert_eq!(s.max(), Some(4.0));
        assert_eq!(s.avg(), Some(2.5));
        // ping(8): sqrt(mean(x²) − mean(x)²) = sqrt(7.5 − 6.25)
        let mdev = s.mdev().unwrap();
        assert!((mdev - 1.25f64.sqrt()).abs() < 1e-12, "{mdev}");
        let mut one = RttStats::new();
        one.push(0.25);
        assert_eq!(one.mdev(), Some(0.0));
    }

    #[test]
    fn the_filter_keeps_the_exchange_with_the_lowest_delay() {
        let mk = |delay: u64, offset: u64| Exchange {
            t1_us: 0,
            t2_us: offset + delay / 2,
            t3_us: offset + delay / 2,
            t4_us: delay,
        };
        let mut f = OffsetFilter::new();
        assert_eq!(f.offset_us(), None);
        f.push(mk(800, 1000));
        f.push(mk(200, 2000));
        f.push(mk(400, 3000));
        assert_eq!(f.offset_us(), Some(2000.0));
        assert_eq!(f.error_bound_us(), Some(100.0));
    }

    #[test]
    fn probes_are_answered_and_other_messages_are_not() {
        assert_eq!(
            answer_probe(&Message::Ping { id: 7, t1_us: 10 }, 20, 25),
            Some(Message::Pong {
                id: 7,
                t1_us: 10,
                t2_us: 20,
                t3_us: 25
            })
        );
        let echo = Message::Echo {
            payload: b"abc".to_vec(),
        };
        assert_eq!(answer_probe(&echo, 0, 0), Some(echo));
        assert_eq!(answer_probe(&Message::End { position: 1 }, 0, 0), None);
    }
}
