//! audiowire's network simulator: delay, jitter, random and bursty loss, reordering, duplication
//! and a rate limit, from a seed so a run repeats exactly.
//!
//! [`impair`] is the sans-IO model: `(now, packet)` in, `(deliver_at, packet)` out, in virtual
//! time, for tests that never touch a socket. [`relay`] is the I/O edge: a [`UdpRelay`] and a
//! [`TcpRelay`] that put the model between real sockets (the `audiowire netsim` command, and
//! integration tests of the real binaries). [`profile`] names the networks the benches run:
//!
//! | profile | one-way delay | jitter (uniform) | loss |
//! |---|---|---|---|
//! | `clean` | 0 | 0 | 0 |
//! | `lan` | 0.5 ms | ± 0.2 ms | 0 |
//! | `wifi` | 5 ms | ± 10 ms, clamped at 0 | 1 % random |
//! | `internet` | 30 ms | ± 15 ms | 2 %, Gilbert–Elliott bursts of 2 on average |
//!
//! ```
//! use std::time::Duration;
//! use audiowire_netsim::{Fate, Impairment, Profile};
//!
//! let mut wifi = Impairment::new(Profile::Wifi.config().with_seed(42)).unwrap();
//! let sent = Duration::from_millis(100);
//! match wifi.submit(sent, 1200) {
//!     Fate::Delivered { at, .. } => assert!(at >= sent && at <= sent + Duration::from_millis(15)),
//!     Fate::Lost | Fate::RateDropped => {}
//! }
//! ```
//!
//! `docs/netsim.md` describes every impairment and profile in full.
#![forbid(unsafe_code)]

pub mod error;
pub mod impair;
pub mod profile;
pub mod relay;

pub use error::{Error, Result};
pub use impair::{Config, Fate, GilbertElliott, Impairment, Link, Loss, RateLimit, Stats};
pub use profile::Profile;
pub use relay::{Lateness, RelayConfig, TcpRelay, TcpStats, UdpRelay, UdpStats};
