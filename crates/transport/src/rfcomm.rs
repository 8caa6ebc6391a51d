//! Bluetooth RFCOMM: a byte stream between two Bluetooth adapters, on a channel (1 to 30).
//!
//! The sender listens on a channel of one adapter (or of every adapter); the player connects to
//! `MAC:CHANNEL`. audiowire speaks the same u64-framed messages as on TCP through a blocking
//! [`RfcommConn`], a [`Conn`](crate::Conn) like any other.
//!
//! The sockets are bluer's (feature `rfcomm` only: no D-Bus, no bluetoothd needed), which are
//! asynchronous: a small tokio runtime lives inside this module, and every read, write, accept
//! and connect is run to completion (or to its timeout) on it, so the rest of audiowire stays
//! blocking and never sees tokio. Without the `bluetooth` feature, or off Linux, every call
//! says so in one line.

use std::fmt;

use crate::error::{Error, Result};

/// The channel `send --transport rfcomm` listens on when none is given.
pub const DEFAULT_CHANNEL: u8 = 3;

/// The largest message (8-byte length included) the sender makes on RFCOMM: one `Audio` fits
/// one RFCOMM frame at the largest MTU Linux negotiates (1013 bytes over basic L2CAP), so a
/// dropped link loses whole frames and small controllers are not asked for more.
pub const MAX_MESSAGE: usize = 1000;

/// An RFCOMM address: an adapter or peer (all zeros: any local adapter) and a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    /// The Bluetooth address, most significant byte first (as written `AA:BB:..`).
    pub mac: [u8; 6],
    /// The channel, 1 to 30.
    pub channel: u8,
}

const PEER_FORM: &str = "MAC:CHANNEL, e.g. 00:1A:7D:DA:71:13:3";
const LISTEN_FORM: &str = "ADAPTER_MAC:CHANNEL, any:CHANNEL or CHANNEL, e.g. any:3";

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_channel(s: &str) -> Option<u8> {
    s.parse::<u8>().ok().filter(|c| (1..=30).contains(c))
}

impl Addr {
    /// A peer to connect to: `MAC:CHANNEL`.
    pub fn parse_peer(s: &str) -> Result<Self> {
        let bad = || Error::BadAddress {
            addr: s.to_string(),
            expected: PEER_FORM,
        };
        let (mac, channel) = s.trim().rsplit_once(':').ok_or_else(bad)?;
        let mac = parse_mac(mac).ok_or_else(bad)?;
        let channel = parse_channel(channel).ok_or_else(bad)?;
        if mac == [0; 6] {
            return Err(bad());
        }
        Ok(Self { mac, channel })
    }

    /// Where to listen: `ADAPTER_MAC:CHANNEL`, `any:CHANNEL`, or a bare `CHANNEL` (any adapter).
    pub fn parse_listen(s: &str) -> Result<Self> {
        let bad = || Error::BadAddress {
            addr: s.to_string(),
            expected: LISTEN_FORM,
        };
        let s = s.trim();
        if let Some(channel) = parse_channel(s) {
            return Ok(Self {
                mac: [0; 6],
                channel,
            });
        }
        let (mac, channel) = s.rsplit_once(':').ok_or_else(bad)?;
        let channel = parse_channel(channel).ok_or_else(bad)?;
        let mac = if mac.eq_ignore_ascii_case("any") || mac.is_empty() {
            [0; 6]
        } else {
            parse_mac(mac).ok_or_else(bad)?
        };
        Ok(Self { mac, channel })
    }

    /// True for "any local adapter".
    pub fn is_any(&self) -> bool {
        self.mac == [0; 6]
    }

    /// The address alone, `AA:BB:CC:DD:EE:FF` (or `any`).
    pub fn mac_string(&self) -> String {
        if self.is_any() {
            return "any".into();
        }
        let m = self.mac;
        format!(
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.mac_string(), self.channel)
    }
}

#[cfg(all(feature = "bluetooth", target_os = "linux"))]
mod imp;

#[cfg(not(all(feature = "bluetooth", target_os = "linux")))]
mod imp {
    //! No Bluetooth in this build: every call says so.
    use std::io;
    use std::time::Duration;

    use super::Addr;
    use crate::error::{Error, Result};

    /// Never made in this build.
    #[derive(Debug)]
    pub enum RfcommConn {}

    /// Never made in this build.
    #[derive(Debug)]
    pub enum Listener {}

    /// Always [`Error::NotBuilt`].
    pub fn connect(_peer: Addr, _timeout: Duration) -> Result<RfcommConn> {
        Err(Error::NotBuilt)
    }

    impl Listener {
        /// Always [`Error::NotBuilt`].
        pub fn bind(_at: Addr) -> Result<Self> {
            Err(Error::NotBuilt)
        }
        /// Unreachable: no listener exists.
        pub fn local(&self) -> Addr {
            match *self {}
        }
        /// Unreachable: no listener exists.
        pub fn accept(&self, _wait: Duration) -> io::Result<Option<(RfcommConn, String)>> {
            match *self {}
        }
    }

    impl io::Read for RfcommConn {
        fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            match *self {}
        }
    }
    impl io::Write for RfcommConn {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            match *self {}
        }
        fn flush(&mut self) -> io::Result<()> {
            match *self {}
        }
    }
    impl crate::Conn for RfcommConn {
        fn set_read_timeout(&self, _t: Option<Duration>) -> io::Result<()> {
            match *self {}
        }
        fn set_write_timeout(&self, _t: Option<Duration>) -> io::Result<()> {
            match *self {}
        }
        fn try_clone_conn(&self) -> io::Result<Box<dyn crate::Conn>> {
            match *self {}
        }
        fn shutdown_write(&self) -> io::Result<()> {
            match *self {}
        }
    }
}

pub use imp::{Listener, RfcommConn, connect};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_parse() {
        let a = Addr::parse_peer("00:1a:7D:DA:71:13:3").expect("valid");
        assert_eq!(a.mac, [0x00, 0x1a, 0x7d, 0xda, 0x71, 0x13]);
        assert_eq!(a.channel, 3);
        assert_eq!(a.to_string(), "00:1A:7D:DA:71:13:3");
        for bad in [
            "00:1a:7D:DA:71:13",
            "127.0.0.1:7878",
            "00:1a:7D:DA:71:13:31",
            "00:00:00:00:00:00:1",
            "x",
        ] {
            assert!(Addr::parse_peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            Addr::parse_listen("5").expect("valid"),
            Addr {
                mac: [0; 6],
                channel: 5
            }
        );
        assert!(Addr::parse_listen("any:7").expect("valid").is_any());
        let a = Addr::parse_listen("00:AA:01:00:00:23:12").expect("valid");
        assert_eq!((a.mac[1], a.channel), (0xaa, 12));
        assert!(Addr::parse_listen("127.0.0.1:7878").is_err());
        assert!(Addr::parse_listen("0").is_err());
    }

    #[test]
    fn errors_are_one_line() {
        let e = Error::NoBluetooth(std::io::Error::from_raw_os_error(97));
        let text = e.to_string();
        assert!(!text.contains('\n'));
        assert!(
            text.contains("no Bluetooth") && text.contains("modprobe"),
            "{text}"
        );
    }
}
