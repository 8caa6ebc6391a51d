//! audiowire's sender: reads audio files, cuts them into frames and streams them to players.
//!
//! [`source`] reads WAV files bit-exactly and [`input`] every other format symphonia decodes;
//! [`capture`] records a cpal input device; [`resample`] converts rates; [`feed`] turns a
//! source into the stream's frames (PCM or Opus); [`broadcast`] is the live stream every player
//! joins where it stands; [`pacing`] is the sans-IO pacer that says when each frame is due;
//! [`server`] and [`udp`] own the sockets and one thread per player. The wire format is the
//! `audiowire-protocol` crate's.
#![forbid(unsafe_code)]

pub mod broadcast;
pub mod capture;
pub mod error;
pub mod feed;
pub mod input;
pub mod pacing;
pub mod resample;
pub mod server;
pub mod source;
#[cfg(test)]
mod testwav;
pub mod udp;

pub use error::{Error, Result};
pub use feed::{CodecConfig, OpusSettings};
pub use pacing::Pacer;
pub use server::{Server, ServerConfig};
pub use source::WavSource;
pub use udp::UdpServer;
