//! audiowire's player: receives a stream, buffers it to a target latency and plays it through a
//! cpal output device, or writes it to a WAV file, or both.
//!
//! - [`session`]: the sans-IO protocol state of one connection (bytes in, events out).
//! - [`codec`]: payloads to PCM, and concealment or FEC recovery of missing frames (PCM, Opus).
//! - [`playback`]: what the audio callback does (pop from the ring, pad with silence, count
//!   underruns in atomics), shared by the cpal device and the clocked null output.
//! - [`convert`]: channel mapping and resampling (rubato) when the device cannot take the stream
//!   as it is.
//! - [`device`]: cpal devices: listing, choosing a configuration, building the output stream.
//! - [`wav`]: the WAV recorder, valid at every moment.
//! - [`player`]: the edge that owns the socket and the clock and ties the rest together.
#![forbid(unsafe_code)]

pub mod codec;
pub mod control;
pub mod convert;
pub mod device;
pub mod error;
pub mod jitter;
pub mod link;
pub mod playback;
pub mod player;
pub mod playout;
pub mod session;
pub mod stats;
pub mod udp;
pub mod wav;

pub use error::{Error, Result};
pub use link::{Connector, Transport};
pub use player::{Output, PlayerConfig, StatsMode, Summary, play};
