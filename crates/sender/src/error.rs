//! The sender crate's one error type; every message says what happened and what to do.

use std::path::PathBuf;

/// What can go wrong while sending.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input file could not be opened or read.
    #[error("cannot read {}: {error}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why (kept out of the source chain so it is printed once).
        error: std::io::Error,
    },
    /// The input is not a WAV file hound can parse.
    #[error("{} is not a WAV file ({reason}); audiowire send reads PCM WAV files", path.display())]
    NotWav {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        reason: String,
    },
    /// The file is not in an audio format audiowire reads.
    #[error("{} is not an audio file audiowire can read ({reason}); audiowire send reads WAV, FLAC, MP3, Ogg Vorbis, AAC and ALAC (MP4), AIFF and Matroska/WebM audio", path.display())]
    NotAudio {
        /// The file.
        path: PathBuf,
        /// What the probe found.
        reason: String,
    },
    /// The file went bad mid-stream.
    #[error("cannot decode {}: {reason}; check the file, for example with `ffprobe`", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The codec settings cannot work (or the encoder refused them).
    #[error("{0}")]
    Codec(String),
    /// The input device could not be found, opened or read.
    #[error("{0}")]
    Input(String),
    /// The file is a WAV file in an encoding we cannot stream.
    #[error("{} uses an unsupported WAV encoding ({reason}); convert it to PCM, for example with `sox in.wav -b 16 out.wav`", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported.
        reason: String,
    },
    /// The file's data chunk is shorter than its header says.
    #[error("{} is truncated: its header promises {expected} bytes of audio but only {found} are there; re-export or repair the file", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header declares.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The requested frame duration does not fit the protocol.
    #[error("a frame of {frame_ms} ms is {reason}; choose a --frame-ms between 0.1 and 1000")]
    FrameSize {
        /// The duration asked for.
        frame_ms: f64,
        /// Why it does not fit.
        reason: String,
    },
    /// The listening address could not be resolved or bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: String,
        /// Why (kept out of the source chain so it is printed once).
        error: std::io::Error,
    },
    /// Bluetooth RFCOMM could not listen (no Bluetooth, no adapter, channel in use): the text
    /// says what to check; fix the machine or the address and start again.
    #[error("{0}")]
    Bluetooth(#[from] audiowire_transport::Error),
    /// A player was refused (no key, or the wrong one); the text says why.
    #[error("refused: {0}")]
    Refused(String),
    /// A socket operation with one player failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The player sent bytes that are not the protocol.
    #[error("{0}")]
    Protocol(#[from] audiowire_protocol::Error),
}

/// The sender crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
