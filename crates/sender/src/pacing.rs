//! The pacer: when each frame is due, sans-IO.
//!
//! Deadlines are absolute, computed from the stream's start and a frame's position in samples
//! (`start + position / rate`), never by adding frame durations, so rounding never accumulates and
//! pacing never drifts. A pre-roll shifts every deadline earlier by a fixed amount, so the first
//! `preroll` of audio is due at once: it fills the player's buffer in one burst.
//!
//! Frames may be grouped ([`Pacer::grouped`]): when a frame of the length the user asked for is
//! cut into shorter pieces (a UDP datagram holds 341 sample frames of 48 kHz stereo s16, not the
//! 480 of 10 ms), the pieces that start within one such frame are sent together, at its
//! deadline, so the sender wakes once a frame instead of once a piece. No piece is sent later
//! than its own deadline, nor earlier than one group ahead of it.

use std::time::Duration;

/// Says when the frame starting at a given sample position is due, relative to the stream start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    rate: u32,
    preroll: Duration,
    /// Sample frames per group: frames that start in the same group are sent together.
    group: u64,
}

impl Pacer {
    /// A pacer for a stream of `rate` sample frames per second (`rate` > 0) that runs `preroll`
    /// ahead of real time.
    pub fn new(rate: u32, preroll: Duration) -> Self {
        Self {
            rate: rate.max(1),
            preroll,
            group: 1,
        }
    }

    /// The same pacer sending frames in groups of `group` sample frames (counted from position
    /// 0): every frame that starts within a group is sent at the group's deadline. `group` 0 or
    /// 1: each frame at its own deadline.
    pub fn grouped(self, group: u32) -> Self {
        Self {
            group: u64::from(group.max(1)),
            ..self
        }
    }

    /// When the sample at `position` is nominally played: `position / rate` after the start.
    pub fn nominal(&self, position: u64) -> Duration {
        let nanos = u128::from(position) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// When the frame starting at `position` is due to be sent: its nominal time less the
    /// pre-roll, and never before the start.
    pub fn due(&self, position: u64) -> Duration {
        self.nominal(position).saturating_sub(self.preroll)
    }

    /// When the frame starting at `position` is sent: the deadline of its group (its own
    /// deadline when frames are not grouped).
    pub fn send_at(&self, position: u64) -> Duration {
        self.due(position / self.group * self.group)
    }

    /// How long to wait at `elapsed` (time since the start) before sending the frame at
    /// `position`; zero when it is due or late.
    pub fn wait(&self, position: u64, elapsed: Duration) -> Duration {
        self.send_at(position).saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_do_not_drift_over_an_hour_of_441_sample_frames() {
        let p = Pacer::new(44_100, Duration::ZERO);
        let frames_per_hour = 3600 * 100;
        let pos = frames_per_hour * 441;
        assert_eq!(p.due(pos), Duration::from_secs(3600));
        // Summing rounded 10 ms frame durations would be off; absolute deadlines are exact.
        assert_eq!(p.due(441), Duration::from_millis(10));
        assert_eq!(p.due(1), Duration::from_nanos(22_675));
    }

    #[test]
    fn preroll_makes_the_first_frames_due_at_once_then_real_time() {
        let p = Pacer::new(48_000, Duration::from_millis(50));
        for pos in (0..=2400).step_by(480) {
            assert_eq!(p.due(pos), Duration::ZERO, "position {pos}");
        }
        assert_eq!(p.due(2880), Duration::from_millis(10));
        assert_eq!(p.due(48_000), Duration::from_millis(950));
    }

    #[test]
    fn virtual_time_sender_sends_each_frame_on_its_deadline() {
        // Drive the pacer as the sender does, with a virtual clock that jumps to each wake-up.
        let p = Pacer::new(48_000, Duration::from_millis(20));
        let mut now = Duration::ZERO;
        let mut sent = Vec::new();
        for n in 0..200u64 {
            let pos = n * 480;
            now += p.wait(pos, now);
            sent.push(now);
        }
        assert_eq!(sent[0], Duration::ZERO);
        assert_eq!(sent[2], Duration::ZERO);
        assert_eq!(sent[3], Duration::from_millis(10));
        assert_eq!(sent[199], Duration::from_millis(1970));
        assert!(sent.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn an_unbounded_preroll_makes_every_deadline_zero() {
        // `send --unpaced`: the whole stream is pre-roll, 24 h of it included.
        let p = Pacer::new(48_000, Duration::MAX);
        for pos in [0, 480, 48_000 * 86_400, u64::MAX] {
            assert_eq!(
                p.wait(pos, Duration::ZERO),
                Duration::ZERO,
                "position {pos}"
            );
        }
    }

    #[test]
    fn grouped_pieces_go_together_once_a_frame_never_late_nor_a_frame_early() {
        // 10 ms frames of 48 kHz cut into 341-sample pieces: 141 pieces a second, sent in 100
        // wake-ups, one per 10 ms frame, each piece at most 10 ms before its own deadline.
        let p = Pacer::new(48_000, Duration::ZERO).grouped(480);
        let mut now = Duration::ZERO;
        let mut wakeups = 0;
        let mut pos = 0u64;
        while pos < 48_000 {
            let wait = p.wait(pos, now);
            if !wait.is_zero() {
                wakeups += 1;
                now += wait;
            }
            assert!(now <= p.due(pos), "piece at {pos} late");
            assert!(
                p.due(pos) - now < Duration::from_millis(10),
                "piece at {pos} early"
            );
            pos += 341;
        }
        assert_eq!(wakeups, 99, "one wake-up per 10 ms frame after the first");
        assert_eq!(p.send_at(341), Duration::ZERO);
        assert_eq!(p.send_at(682), Duration::from_millis(10));
        assert_eq!(p.send_at(1023), Duration::from_millis(20));
        assert_eq!(p.send_at(1364), Duration::from_millis(20));
        // The timestamps stay each piece's own.
        assert_eq!(p.due(341), Duration::from_nanos(7_104_166));
        // Ungrouped (and grouped by 0 or 1), every piece waits for its own deadline.
        for g in [0, 1] {
            let p = Pacer::new(48_000, Duration::ZERO).grouped(g);
            assert_eq!(p.send_at(341), p.due(341));
        }
    }

    #[test]
    fn a_late_sender_catches_up_without_waiting() {
        let p = Pacer::new(48_000, Duration::ZERO);
        assert_eq!(p.wait(480, Duration::from_millis(30)), Duration::ZERO);
        assert_eq!(
            p.wait(4800, Duration::from_millis(30)),
            Duration::from_millis(70)
        );
    }
}
