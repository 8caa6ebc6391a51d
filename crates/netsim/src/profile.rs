//! Named network profiles: `clean`, `lan`, `wifi`, `internet`, each a [`Config`] for one
//! direction of a link.
//!
//! | profile | delay | jitter (uniform) | loss | why |
//! |---|---|---|---|---|
//! | `clean` | 0 | 0 | 0 | the baseline: the relay alone, no impairment |
//! | `lan` | 0.5 ms | ± 0.2 ms | 0 | a switched wired LAN: sub-millisecond one-way, no loss |
//! | `wifi` | 5 ms | ± 10 ms (clamped at 0) | 1 % random | issue 7's Wi-Fi: airtime contention and MAC retries spread arrivals over 0–15 ms; the MAC's retransmissions hide most bursts, so what is left is lost at random |
//! | `internet` | 30 ms | ± 15 ms | 2 %, bursts of 2 packets on average (Gilbert–Elliott) | a continental path (≈ 60 ms round trip) under load: the 30 ms ± 15 ms of issue 3's tests, and losses that come in short bursts as measured on real paths, which concealment must ride out |
//!
//! Each applies to each direction separately (so the round trip has twice the delay). None has a
//! rate limit, reordering beyond what its jitter causes, or duplication: add them with explicit
//! options. Jitter draws are independent per packet, so `wifi` and `internet` reorder packets
//! sent closer together than twice their jitter, as `tc netem` does; the seed is 0 until set with
//! [`Config::with_seed`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::impair::{Config, GilbertElliott, Loss};

/// A named network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// No impairment.
    Clean,
    /// A wired LAN: 0.5 ms ± 0.2 ms, no loss.
    Lan,
    /// Wi-Fi: 5 ms ± 10 ms (clamped at 0), 1 % random loss.
    Wifi,
    /// The Internet: 30 ms ± 15 ms, 2 % loss in bursts of 2 packets on average.
    Internet,
}

impl Profile {
    /// Every profile, from the best network to the worst (the order of issue 7's matrix).
    pub const ALL: [Profile; 4] = [
        Profile::Clean,
        Profile::Lan,
        Profile::Wifi,
        Profile::Internet,
    ];

    /// The profile's name, as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Clean => "clean",
            Profile::Lan => "lan",
            Profile::Wifi => "wifi",
            Profile::Internet => "internet",
        }
    }

    /// The impairments of one direction, with seed 0.
    pub fn config(self) -> Config {
        let ms = |n: u64| Duration::from_micros(n * 1000);
        match self {
            Profile::Clean => Config::default(),
            Profile::Lan => Config {
                delay: Duration::from_micros(500),
                jitter: Duration::from_micros(200),
                ..Config::default()
            },
            Profile::Wifi => Config {
                delay: ms(5),
                jitter: ms(10),
                loss: Loss::Random(0.01),
                ..Config::default()
            },
            Profile::Internet => Config {
                delay: ms(30),
                jitter: ms(15),
                loss: Loss::Bursty(INTERNET_LOSS),
                ..Config::default()
            },
        }
    }
}

/// 2 % loss in bursts of 2 packets on average: `GilbertElliott::from_average(0.02, 2.0)`,
/// written out (`p = 0.02 · 0.5 / 0.98`).
const INTERNET_LOSS: GilbertElliott = GilbertElliott {
    p_good_to_bad: 0.01 / 0.98,
    p_bad_to_good: 0.5,
    loss_good: 0.0,
    loss_bad: 1.0,
};

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    /// Parses a name, ignoring case, `-` and `_` (`Wi-Fi` is `wifi`).
    fn from_str(s: &str) -> Result<Self> {
        let key: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == key)
            .ok_or_else(|| Error::UnknownProfile(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().ok(), Some(p));
        }
        assert_eq!("Wi-Fi".parse::<Profile>().ok(), Some(Profile::Wifi));
        assert_eq!("LAN".parse::<Profile>().ok(), Some(Profile::Lan));
        let e = "dialup".parse::<Profile>().err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("unknown network profile \"dialup\" (choose clean, lan, wifi or internet)")
        );
    }

    #[test]
    fn profiles_hold_what_the_docs_say() {
        for p in Profile::ALL {
            assert!(p.config().validate().is_ok(), "{p}");
        }
        assert!(Profile::Clean.config().is_clean());
        let wifi = Profile::Wifi.config();
        assert_eq!(
            (wifi.delay, wifi.jitter, wifi.loss),
            (
                Duration::from_millis(5),
                Duration::from_millis(10),
                Loss::Random(0.01)
            )
        );
        let lan = Profile::Lan.config();
        assert_eq!(lan.to_string(), "delay 0.5 ms ± 0.2 ms (uniform)");
        let internet = Profile::Internet.config();
        let Loss::Bursty(ge) = internet.loss else {
            panic!("internet loss is bursty");
        };
        let built = GilbertElliott::from_average(0.02, 2.0).unwrap_or_else(|e| panic!("{e}"));
        assert!((ge.p_good_to_bad - built.p_good_to_bad).abs() < 1e-15);
        assert_eq!(ge.p_bad_to_good, built.p_bad_to_good);
        assert!((ge.average_loss() - 0.02).abs() < 1e-12);
        assert_eq!(
            (internet.delay, internet.jitter),
            (Duration::from_millis(30), Duration::from_millis(15))
        );
    }
}
