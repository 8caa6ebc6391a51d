//! The receiver crate's one error type; every message says what happened and what to do.

use std::path::PathBuf;

/// What can go wrong while playing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sender's address could not be resolved or reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address given.
        addr: String,
        /// Why, with a hint.
        reason: String,
    },
    /// The connection failed or went silent mid-stream.
    #[error("connection to {addr} {reason}")]
    Connection {
        /// The sender's address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The sender sent bytes that are not the protocol, or a message out of place.
    #[error("the sender at {addr} broke the protocol: {reason}")]
    Protocol {
        /// The sender's address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The pre-shared key did not match, or one side has none.
    #[error("key exchange with {addr} failed: {reason}")]
    Key {
        /// The sender's address.
        addr: String,
        /// What went wrong, with what to do.
        reason: String,
    },
    /// The sender gave up and said why.
    #[error("the sender reported an error: {0}")]
    Sender(String),
    /// A framing or message error from the protocol crate.
    #[error("{0}")]
    Wire(#[from] audiowire_protocol::Error),
    /// No output device could be opened.
    #[error("no sound output: {0}")]
    Device(String),
    /// The stream's codec cannot be decoded.
    #[error("cannot decode the stream: {0}")]
    Codec(String),
    /// The stream's format cannot be converted for the device.
    #[error("cannot convert the stream for the device: {0}")]
    Convert(String),
    /// The WAV file could not be written.
    #[error("cannot write {}: {reason}", path.display())]
    Wav {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The receiver crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
