//! The transport's one error type (connections, and `realtime`'s refusal). Every message is one line that says what happened and what
//! to check.

use std::io;

/// Why a Bluetooth connection or listener could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address is not `MAC:CHANNEL`. Fix the command line.
    #[error("\"{addr}\" is not an RFCOMM address: expected {expected}")]
    BadAddress {
        /// What was given.
        addr: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// This build has no Bluetooth (another platform, or built without the feature).
    #[error(
        "this audiowire has no Bluetooth support (built without the `bluetooth` feature, or not on Linux)"
    )]
    NotBuilt,
    /// The kernel has no Bluetooth sockets (EAFNOSUPPORT / EPROTONOSUPPORT).
    #[error(
        "this machine has no Bluetooth: the kernel refused an RFCOMM socket ({0}); check that the \
         kernel has Bluetooth and RFCOMM (`modprobe bluetooth rfcomm`) and, in a container or VM, \
         that Bluetooth is passed through"
    )]
    NoBluetooth(io::Error),
    /// No local adapter (none at all, the one named is missing, or it is powered off).
    #[error(
        "no Bluetooth adapter {what} ({error}); check `btmgmt info` (or `bluetoothctl list`) and \
         that the adapter is powered on (`btmgmt power on`)"
    )]
    NoAdapter {
        /// Which adapter, in words.
        what: String,
        /// What the kernel said.
        error: io::Error,
    },
    /// The peer answered but nobody listens on the channel.
    #[error(
        "{addr} refused RFCOMM channel {channel}: is `audiowire send --transport rfcomm` (or the \
         tool) listening on that channel there?"
    )]
    Refused {
        /// The peer.
        addr: String,
        /// The channel.
        channel: u8,
    },
    /// The peer did not answer in time (out of range, off, or not reachable).
    #[error(
        "{addr} did not answer on RFCOMM channel {channel} ({why}); check it is on, in range and \
         its Bluetooth is powered on"
    )]
    Unreachable {
        /// The peer.
        addr: String,
        /// The channel.
        channel: u8,
        /// What happened.
        why: String,
    },
    /// The channel is taken on this adapter.
    #[error("RFCOMM channel {channel} is already in use on {adapter}; pick another channel")]
    InUse {
        /// The adapter.
        adapter: String,
        /// The channel.
        channel: u8,
    },
    /// Anything else the system said.
    #[error("Bluetooth: {what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The system's error.
        error: io::Error,
    },
    /// The system would not run an audio thread under real-time scheduling (`realtime`).
    #[error(
        "could not give the audio threads real-time priority {priority} ({reason}); they run as \
         ordinary threads, which a busy machine can delay into dropouts. Allow it with an rtprio \
         limit (e.g. `@audio - rtprio 95` in /etc/security/limits.d/audio.conf, and the user in \
         group audio), or pass --rt-priority 0 to not ask"
    )]
    Realtime {
        /// The SCHED_FIFO priority asked for.
        priority: u8,
        /// What the system said.
        reason: String,
    },
}

/// The transport's result.
pub type Result<T> = std::result::Result<T, Error>;
