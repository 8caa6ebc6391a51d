//! audiowire's byte-stream connections: one blocking [`Conn`] trait that the sender, the player
//! and the tools read and write the u64-framed protocol through, whatever carries the bytes:
//! TCP, a Unix socket (tests), or Bluetooth RFCOMM ([`rfcomm`], Linux, feature `bluetooth`).
//!
//! Nothing here knows the protocol; it only moves bytes, with timeouts, and says in one line why
//! a connection could not be made.
#![forbid(unsafe_code)]

pub mod error;
pub mod realtime;
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
    /// Waits up to `timeout` for something to read; false when nothing came. Sockets wait to
    /// the microsecond (see [`wait_readable`]); the default says "maybe" at once and leaves the
    /// waiting to the read timeout.
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let _ = timeout;
        Ok(true)
    }
}

/// Waits up to `timeout` for `fd` to become readable (or hung up, or in error: the read then
/// says which); false when the time ran out. `ppoll` sleeps on a high-resolution timer, where a
/// socket's receive timeout (`SO_RCVTIMEO`) counts in scheduler ticks: 4 ms at 250 Hz, too
/// coarse for a player that must wake up a millisecond before its sound card's next callback.
#[cfg(unix)]
pub fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    match poll(&mut fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
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
    #[cfg(unix)]
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        use std::os::fd::AsFd;
        wait_readable(self.as_fd(), timeout)
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
    #[cfg(unix)]
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        use std::os::fd::AsFd;
        wait_readable(self.as_fd(), timeout)
    }
}

/// True for the errors a read or write with a timeout ends with when nothing came in time.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
