//! audiowire's wire protocol, sans-IO.
//!
//! Every message on a byte stream is a *frame*: a u64 big-endian payload length followed by the
//! payload ([`frame`]). The payload is a versioned envelope holding one [`Message`] ([`message`]).
//! Audio payloads carry PCM samples in one of the [`SampleFormat`]s ([`pcm`]), or Opus packets,
//! whose size and FEC flag [`opus`] reads without decoding them.
//! [`pystruct`] packs and unpacks records described by Python `struct` format strings, and
//! [`clock`] is the NTP-style offset and RTT math of `Ping`/`Pong`.
//!
//! This crate never touches a socket or reads a clock: bytes go in, frames and messages come out.
//! The sender and receiver crates own the I/O. The byte-level specification is `docs/protocol.md`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod error;
pub mod frame;
pub mod message;
pub mod opus;
pub mod pcm;
pub mod pystruct;

pub use error::{Error, Result};
pub use frame::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, HEADER_LEN, encode_frame};
pub use message::{
    Audio, Codec, ErrorCode, Hello, Message, PROTOCOL_VERSION, Report, StreamInfo, TotalLength,
};
pub use pcm::SampleFormat;
