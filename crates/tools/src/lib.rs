//! audiowire's socket tools: the building blocks of socket programming, each a real tool that
//! also talks to plain scripts written with Python's `socket` and `struct` modules.
//!
//! - [`echo`]: an echo server (TCP or UDP, many clients at once) and client; it answers framed
//!   `Echo` and `Ping` messages too.
//! - [`ping`]: a TCP up-check of many targets at once, and `Ping`/`Pong` round-trip time and clock
//!   offset against any audiowire server.
//! - [`structs`]: records described by Python `struct` format strings, raw or framed, printed or
//!   appended to CSV or JSON lines.
//! - [`tail`] and [`lines`]: follow a growing file and stream its lines with acknowledgements, so a
//!   dropped connection resumes with nothing lost or written twice; [`linestream`] is the sans-IO
//!   state machine both ends run.
//!
//! The protocol logic (framing, messages, `struct` packing, clock math) is in
//! `audiowire-protocol`; this crate owns the sockets, files and clocks around it. Every loop here
//! is bounded by timeouts and checks a shutdown flag; a peer's bytes never cause a panic.
#![forbid(unsafe_code)]

pub mod echo;
pub mod error;
pub mod lines;
pub mod linestream;
pub mod net;
pub mod ping;
pub mod structs;
pub mod tail;

pub use error::{Error, Result};
