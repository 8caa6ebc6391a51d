//! The netsim crate's one error type. Each variant says what went wrong and, in its doc, what the
//! caller should do about it.

/// What can go wrong while configuring or starting the simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An impairment parameter is out of range (a probability outside 0–100 %, a rate of 0 bit/s,
    /// a loss that bursts of the requested length cannot produce). Fix the parameter; nothing was
    /// started.
    #[error("invalid {parameter}: {reason}")]
    Invalid {
        /// Which parameter.
        parameter: &'static str,
        /// What it must be instead.
        reason: String,
    },
    /// A profile name that is not one of `clean`, `lan`, `wifi`, `internet`. Pick one of those.
    #[error("unknown network profile \"{0}\" (choose clean, lan, wifi or internet)")]
    UnknownProfile(String),
    /// The listening address could not be resolved or bound. Pick another address or port (port 0
    /// picks a free one).
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: String,
        /// Why (kept out of the source chain so it is printed once).
        error: std::io::Error,
    },
    /// The address to relay to does not resolve. Check the HOST:PORT.
    #[error("cannot resolve {addr}: {error}")]
    Resolve {
        /// The address.
        addr: String,
        /// Why (kept out of the source chain so it is printed once).
        error: std::io::Error,
    },
    /// A socket or thread could not be set up while starting a relay. Usually a resource limit
    /// (file descriptors, threads): free some and start again.
    #[error("cannot start the relay: {0}")]
    Io(#[from] std::io::Error),
}

/// The netsim crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
