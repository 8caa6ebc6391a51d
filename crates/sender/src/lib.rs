//! audiowire's sender: reads audio files, cuts them into frames and streams them to players.
//!
//! [`source`] reads WAV files; [`pacing`] is the sans-IO pacer that says when each frame is due;
//! [`server`] owns the listening socket and one thread per player. The wire format is the
//! `audiowire-protocol` crate's.
#![forbid(unsafe_code)]

pub mod error;
pub mod pacing;
pub mod server;
pub mod source;
pub mod udp;

pub use error::{Error, Result};
pub use pacing::Pacer;
pub use server::{Server, ServerConfig};
pub use source::WavSource;
pub use udp::UdpServer;
