//! audiowire's byte-stream connections: one blocking [`Conn`] trait that the sender, the player
//! and the tools read and write the u64-framed protocol through, whatever carries the bytes:
//! TCP, a Unix socket (tests), or Bluetooth RFCOMM ([`rfcomm`], Linux, feature `bluetooth`).
//!
//! Nothing here knows the protocol; it only moves bytes, with timeouts, and says in one line why
//! a connection could not be made.
#![forbid(unsafe_code)]

pub mod error;
pub mod rfcomm;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

pub use error::{Error, Result};

/// A connected, blocking byte stream with read and write timeouts.
///
/// A read that times out fails with [`io::ErrorKind::WouldBlock`] or [`io::ErrorKind::TimedOut`],
/// as `std`'s sockets do; a clone ([`Conn::try_clone_conn`]) reads and writes the same
/// connection, so one thread can read while another writes.
pub trait Conn: Read + Write + Send + std::fmt::Debug {
    /// Bounds every following read (`None`: block).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bounds every following write (`None`: block).
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Another handle on the same connection.
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>>;
    /// Closes the writing half: the peer reads end of file, and may still answer.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Conn for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

#[cfg(unix)]
impl Conn for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_write_timeout(self, timeout)
    }
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// True for the errors a read or write with a timeout ends with when nothing came in time.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
