//! The tools crate's one error type. Every message is one line that says what happened and, where
//! there is something to do, what to do.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong in a tool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address to listen on could not be resolved or bound. Pick another address or port.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: String,
        /// Why (kept out of the source chain so it is printed once).
        error: std::io::Error,
    },
    /// A connection could not be opened. Check the address, and that the server runs there.
    #[error("cannot connect to {addr}: {reason} (is {what} running there?)")]
    Connect {
        /// The address.
        addr: String,
        /// Why, in words (`connection refused`, `timed out after 5 s`, `no such host`).
        reason: String,
        /// What should be listening there.
        what: &'static str,
    },
    /// An address is not `HOST:PORT`. Fix the argument.
    #[error("{addr:?} is not an address: {reason}")]
    BadAddress {
        /// The argument.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket operation with a peer failed (reset, broken pipe). Try again.
    #[error("{peer}: {error}")]
    Io {
        /// Who we were talking to.
        peer: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The peer did not answer in time. Is it the right kind of server?
    #[error("no reply from {peer} within {} s (is {what} running there?)", .after.as_secs_f64())]
    NoReply {
        /// Who.
        peer: String,
        /// How long we waited.
        after: Duration,
        /// What should be listening there.
        what: &'static str,
    },
    /// The peer closed the connection before answering.
    #[error("{peer} closed the connection {when}")]
    Closed {
        /// Who.
        peer: String,
        /// At which point (`before answering`, `after 3 of 5 bytes`).
        when: String,
    },
    /// The peer sent bytes that are not the protocol, or a message that makes no sense here.
    /// Close the connection; check both sides run compatible versions.
    #[error("{peer} broke the protocol: {reason}")]
    PeerBroke {
        /// Who.
        peer: String,
        /// What it did.
        reason: String,
    },
    /// The peer refused what we sent, with an `Error` message.
    #[error("{peer} refused: {text}")]
    Refused {
        /// Who.
        peer: String,
        /// Its one-line reason.
        text: String,
    },
    /// A format string or value is wrong (from the protocol crate's `pystruct`).
    #[error("{0}")]
    Protocol(#[from] audiowire_protocol::Error),
    /// A file could not be opened, read or written.
    #[error("{}: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A line receiver's state file does not match its output file. The message says which file
    /// to move away to start a new stream.
    #[error("{}: {reason}", path.display())]
    State {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Options that do not go together, or a value out of range.
    #[error("{0}")]
    Usage(String),
    /// Some ping targets are down (each was reported on its own line).
    #[error("{down} of {total} targets down")]
    TargetsDown {
        /// How many are down.
        down: usize,
        /// How many were checked.
        total: usize,
    },
}

/// The tools crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
