//! The level controller, sans-IO: holds the jitter buffer's level at its target by nudging the
//! resampling ratio, as roc's PI controller does. This absorbs the drift between the sender's
//! clock and the sound card's and moves the level smoothly when the target changes; no sample is
//! ever skipped or repeated to do it.
//!
//! The ratio is output samples per input sample: above 1 the buffer fills (playback slows by a
//! hair), below 1 it drains. It stays within ±0.5 %. The controller is *idle* (ratio exactly 1,
//! nothing integrated) until the filtered level strays more than `wake_band` from the target;
//! then a plain PI loop (no dead band, so no limit cycle) runs until the error is within
//! `sleep_band` and the learned drift is negligible, when it goes idle again. A stream with
//! nothing to correct is therefore never resampled, and one with drift is corrected steadily.

/// Tuning of the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControllerConfig {
    /// Proportional gain: ratio change per second of level error.
    pub kp: f64,
    /// Integral gain: ratio change per second of error per second.
    pub ki: f64,
    /// Time constant of the level's low-pass filter, in seconds.
    pub smoothing: f64,
    /// Error (seconds) beyond which an idle controller starts correcting.
    pub wake_band: f64,
    /// Error (seconds) within which an active controller with negligible drift goes idle.
    pub sleep_band: f64,
    /// Largest deviation of the ratio from 1.
    pub max_deviation: f64,
    /// Seconds to observe before steering: the wait a stream settles at when it starts (a
    /// frame more or less than the target, depending on how its first frames arrived) becomes
    /// the reference, so a stream with nothing else to correct is not resampled for that
    /// structural offset. Once the controller wakes for anything else, it steers to the
    /// target itself (the resampler runs by then in any case).
    pub calibration: f64,
    /// The largest offset calibration accepts as structural (a frame and a little); a larger
    /// start-up error is corrected like any other.
    pub max_offset: f64,
    /// Nor more than this fraction of the target: at a low target every millisecond of offset
    /// is latency worth resampling away.
    pub max_offset_fraction: f64,
    /// Error (seconds) beyond which nothing is integrated: a larger error is a step (a target
    /// change, a start-up surplus, a stall), which the proportional term corrects, not drift.
    /// Drift alone leaves the proportional term an error of drift / kp: 1.7 ms at 500 ppm, so
    /// 3 ms covers any sound card's. Without this the integrator winds up while a big step
    /// drains and then overshoots the target as spurious "drift"; at 10 ms it still learned
    /// 45 ppm on one shared clock from a falling target and a draining start.
    pub integrate_band: f64,
    /// Nothing is integrated either while the (filtered) level is on its way to the target:
    /// moving towards it at more than this fraction of the rate the proportional term alone
    /// would move it. A step being corrected approaches the target at that rate; drift holds
    /// the level still at an error, and that is what the integrator is for.
    pub integrate_slope: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            kp: 0.3,
            ki: 0.004,
            smoothing: 1.0,
            wake_band: 0.001,
            sleep_band: 0.0003,
            max_deviation: 0.005,
            calibration: 5.0,
            max_offset: 0.012,
            max_offset_fraction: 0.25,
            integrate_band: 0.003,
            integrate_slope: 0.5,
        }
    }
}

/// A PI controller of buffer level.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    filtered: Option<f64>,
    integral: f64,
    ratio: f64,
    last: Option<f64>,
    active: bool,
    first: Option<f64>,
    offset: Option<f64>,
    /// How fast the filtered level moves, seconds per second (smoothed).
    slope: f64,
}

impl Controller {
    /// A controller with `config`.
    pub fn new(config: ControllerConfig) -> Self {
        Self {
            config,
            filtered: None,
            integral: 0.0,
            ratio: 1.0,
            last: None,
            active: false,
            first: None,
            offset: None,
            slope: 0.0,
        }
    }

    /// The ratio to resample with now.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The filtered level, in seconds.
    pub fn level(&self) -> Option<f64> {
        self.filtered
    }

    /// How far the level is from the target, relative to the reference taken at calibration, in
    /// seconds: what the controller drives to zero. `None` until calibrated.
    pub fn error(&self, target: f64) -> Option<f64> {
        Some(self.filtered? - self.offset? - target)
    }

    /// The drift the integrator has learned, in parts per million (positive: the sender's clock
    /// runs fast relative to the output's).
    pub fn drift_ppm(&self) -> f64 {
        self.config.ki * self.integral * 1e6
    }

    /// Feeds the level measured at `now` (seconds on any monotonic clock) against `target`;
    /// returns the new ratio.
    pub fn update(&mut self, now: f64, level: f64, target: f64) -> f64 {
        let dt = self.last.map_or(0.0, |t| (now - t).clamp(0.0, 1.0));
        self.last = Some(now);
        let filtered = match self.filtered {
            None => level,
            Some(f) => f + (level - f) * (dt / self.config.smoothing).min(1.0),
        };
        if let Some(f) = self.filtered
            && dt > 0.0
        {
            let k = (dt / self.config.smoothing).min(1.0);
            self.slope += ((filtered - f) / dt - self.slope) * k;
        }
        self.filtered = Some(filtered);
        let first = *self.first.get_or_insert(now);
        let offset = match self.offset {
            Some(o) => o,
            None if now - first >= self.config.calibration => {
                let max = self
                    .config
                    .max_offset
                    .min(self.config.max_offset_fraction * target);
                *self.offset.insert((filtered - target).clamp(-max, max))
            }
            None => return self.ratio,
        };
        let mut error = filtered - offset - target;
        let c = &self.config;
        if !self.active {
            if error.abs() <= c.wake_band {
                return self.ratio; // exactly 1
            }
            self.active = true;
            // The offset was kept so that a stream with nothing to correct is never resampled.
            // Once something must be corrected, the resampler runs anyway: steer to the target
            // itself (a start above it is latency, one below it is an underrun waiting).
            self.offset = Some(0.0);
            error = filtered - target;
        } else if error.abs() <= c.sleep_band && (c.ki * self.integral).abs() < 10e-6 {
            self.active = false;
            self.integral = 0.0;
            self.ratio = 1.0;
            return self.ratio;
        }
        // Too much buffered (error > 0): drain, ratio below 1. Integrate only near the target
        // and while the output is not pinned at a limit (no wind-up).
        let p = c.kp * error;
        let unclamped = 1.0 - p - c.ki * (self.integral + error * dt);
        let approaching = -self.slope * error.signum() > c.integrate_slope * c.kp * error.abs();
        if error.abs() <= c.integrate_band
            && !approaching
            && (unclamped - 1.0).abs() < c.max_deviation
        {
            self.integral += error * dt;
        }
        self.ratio =
            (1.0 - p - c.ki * self.integral).clamp(1.0 - c.max_deviation, 1.0 + c.max_deviation);
        self.ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_correct_keeps_the_ratio_at_exactly_one() {
        let mut c = Controller::new(ControllerConfig::default());
        for i in 0..10_000 {
            let wobble = if i % 2 == 0 { 0.0005 } else { -0.0005 };
            assert_eq!(c.update(i as f64 * 0.01, 0.050 + wobble, 0.050), 1.0);
        }
    }

    #[test]
    fn a_full_buffer_drains_within_the_half_percent_limit() {
        let mut c = Controller::new(ControllerConfig::default());
        // Calibrate at the target, then the wait jumps to 200 ms against a 50 ms target.
        for i in 0..600 {
            assert_eq!(c.update(f64::from(i) * 0.01, 0.050, 0.050), 1.0);
        }
        let mut r = 1.0;
        for i in 600..1100 {
            r = c.update(f64::from(i) * 0.01, 0.200, 0.050);
            assert!((0.995..=1.0).contains(&r), "{r}");
        }
        assert_eq!(r, 0.995, "pinned at the limit");
    }

    /// One shared clock, so no drift: an adaptive target falling from 21 ms to 11 ms at 4 ms/s
    /// while the level starts 9 ms over where it ends (as TCP on loopback does). The level
    /// ends at the target, nothing is learned as drift, and the controller goes idle at
    /// ratio exactly 1. With a 10 ms integration band it learned 27 ppm here (45 ppm on TCP
    /// over loopback, 3 runs of 12 s; 0 with 3 ms) and kept resampling.
    #[test]
    fn a_falling_target_and_a_draining_start_learn_no_drift() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut level = 0.020;
        let mut r = 0.0;
        for i in 0..3000 {
            let now = f64::from(i) * 0.01;
            let target = (0.021 - 0.004 * now).max(0.011);
            r = c.update(now, level, target);
            level -= (1.0 - r) * 0.010;
        }
        assert!(c.drift_ppm().abs() < 5.0, "learned {} ppm", c.drift_ppm());
        assert_eq!(r, 1.0, "idle at the end, level {level}");
        assert!(
            c.error(0.011).unwrap().abs() < 0.001,
            "{:?}",
            c.error(0.011)
        );
    }

    /// A start 2.5 ms over the target is kept as it is (ratio exactly 1, nothing resampled);
    /// once a step (a stall's frame, 10 ms) wakes the controller, it steers to the target
    /// itself, not back to the start's offset: the resampler runs by then in any case.
    #[test]
    fn once_awake_the_controller_steers_to_the_target_not_to_the_start_offset() {
        let mut c = Controller::new(ControllerConfig::default());
        for i in 0..600 {
            assert_eq!(c.update(f64::from(i) * 0.01, 0.0425, 0.040), 1.0);
        }
        let mut level = 0.0525;
        for i in 600..4600 {
            let r = c.update(f64::from(i) * 0.01, level, 0.040);
            level -= (1.0 - r) * 0.010;
        }
        assert!((level - 0.040).abs() < 0.0005, "settled at {level}");
        assert!(
            c.error(0.040).unwrap().abs() < 0.0005,
            "{:?}",
            c.error(0.040)
        );
    }

    /// A large start-up surplus (70 ms over the target, as a player whose device took 70 ms to
    /// open sees) drains without the integrator learning it as drift: no overshoot below the
    /// target afterwards, and the learned drift stays near 0.
    #[test]
    fn draining_a_surplus_learns_no_drift_and_does_not_overshoot() {
        let mut c = Controller::new(ControllerConfig::default());
        for i in 0..600 {
            c.update(f64::from(i) * 0.01, 0.050, 0.050);
        }
        // The level follows the ratio: each 10 ms step, (1 - ratio) * 10 ms drains.
        let mut level = 0.120;
        let mut lowest = level;
        for i in 600..6600 {
            let r = c.update(f64::from(i) * 0.01, level, 0.050);
            level -= (1.0 - r) * 0.010;
            lowest = lowest.min(level);
        }
        assert!((level - 0.050).abs() < 0.0005, "settled at {level}");
        assert!(lowest > 0.050 - 0.002, "overshot to {lowest}");
        assert!(c.drift_ppm().abs() < 50.0, "learned {} ppm", c.drift_ppm());
    }
}
