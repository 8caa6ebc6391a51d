//! audiowire's latency benches (issue 7): the end-to-end runner behind `audiowire bench`.
//!
//! It runs the real `audiowire send` and `audiowire play`, each its own process, on loopback
//! through the network simulator's relays, over a matrix of transport × codec × frame ×
//! network ([`matrix`]), and records what the player reports (latency percentiles from the
//! sender's schedule to the output, underruns, concealment) and what each end costs in CPU,
//! read from `/proc/PID/stat` ([`procstat`]). [`report`] writes the results as JSON and a
//! Markdown table and checks them against the targets; [`plot`] draws latency over
//! time and its distribution to SVG. With a remote address it measures the user's own network
//! instead ([`run::run_remote`]). Beside every cell, [`wakeup`] measures how late the machine
//! wakes a sleeping thread, the floor under what any low-latency stream can do on it.
//!
//! The criterion micro-benchmarks of the hot paths are in `benches/benches/micro.rs`
//! (`cargo bench -p audiowire-bench`); the side-by-side lab with other tools is
//! `benches/peer-lab/`. Nothing here runs in `cargo test` but the unit tests of the helpers.
#![forbid(unsafe_code)]

pub mod error;
pub mod matrix;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod run;
pub mod stats;
pub mod suite;
pub mod wakeup;

pub use error::{Error, Result};
pub use matrix::{Cell, Codec, Mode, Setting, Transport};
pub use report::Report;
pub use run::{CellResult, Runner};
pub use suite::{Options, Written, run};
