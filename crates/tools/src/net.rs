//! The socket edge shared by the tools: binding, connecting with a timeout, errors in words, the
//! wall clock, and [`Framed`], a blocking reader and writer of protocol messages on a TCP stream
//! with deadlines.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use audiowire_protocol::{FrameDecoder, Message};
use socket2::{Domain, Socket, Type};

use crate::error::{Error, Result};

/// Microseconds since the Unix epoch on this machine's wall clock (0 if the clock is before 1970).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A socket error in a few plain words.
pub fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out".into(),
        ErrorKind::ConnectionReset => "connection reset by peer".into(),
        ErrorKind::ConnectionAborted => "connection aborted".into(),
        ErrorKind::BrokenPipe => "the peer closed the connection".into(),
        ErrorKind::AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

/// Splits `HOST:PORT` (or `[V6]:PORT`) into host and port, without resolving.
pub fn split_host_port(addr: &str) -> Result<(String, u16)> {
    let bad = |reason: &str| Error::BadAddress {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("write HOST:PORT, for example 127.0.0.1:7000 or [::1]:7000"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad("the host is missing (write HOST:PORT)"));
    }
    Ok((host.to_string(), port))
}

/// Resolves `HOST:PORT` to its addresses; an unknown host is [`Error::Connect`] with `no such host`.
pub fn resolve(addr: &str, what: &'static str) -> Result<Vec<SocketAddr>> {
    let (host, port) = split_host_port(addr)?;
    let addrs: Vec<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => Vec::new(),
    };
    if addrs.is_empty() {
        return Err(Error::Connect {
            addr: addr.to_string(),
            reason: "no such host".into(),
            what,
        });
    }
    Ok(addrs)
}

/// Connects to `addr` (each of its addresses in turn), each try bounded by `timeout`.
pub fn connect(addr: &str, timeout: Duration, what: &'static str) -> Result<TcpStream> {
    let mut last = None;
    for sa in resolve(addr, what)? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let reason = match last {
        Some(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            format!("timed out after {} s", timeout.as_secs_f64())
        }
        Some(e) => reason(&e),
        None => "no address".into(),
    };
    Err(Error::Connect {
        addr: addr.to_string(),
        reason,
        what,
    })
}

fn first_addr(addr: &str) -> std::result::Result<SocketAddr, std::io::Error> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no such address"))
}

/// Binds a TCP listener on `addr` (port 0 picks a free one), non-blocking, with `SO_REUSEADDR`
/// so that a restarted server gets its port back at once.
pub fn bind_tcp(addr: &str) -> Result<TcpListener> {
    let err = |error| Error::Listen {
        addr: addr.to_string(),
        error,
    };
    let sa = first_addr(addr).map_err(err)?;
    let socket = Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if sa.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&sa.into()).map_err(err)?;
    socket.listen(128).map_err(err)?;
    let listener: TcpListener = socket.into();
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// Binds a UDP socket on `addr`.
pub fn bind_udp(addr: &str) -> Result<UdpSocket> {
    let err = |error| Error::Listen {
        addr: addr.to_string(),
        error,
    };
    let sa = first_addr(addr).map_err(err)?;
    UdpSocket::bind(sa).map_err(err)
}

/// The local address of a listener, for the "listening on" line.
pub fn local(l: &TcpListener) -> String {
    l.local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string())
}

/// Accepts one pending connection from a non-blocking listener, if any. The stream is returned
/// in blocking mode.
pub fn try_accept(l: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    match l.accept() {
        Ok((s, peer)) => {
            let _ = s.set_nonblocking(false);
            let _ = s.set_nodelay(true);
            Some((s, peer))
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => None,
        Err(e) => {
            // Out of file descriptors and the like: keep serving the others.
            tracing::warn!("accept failed: {e}");
            None
        }
    }
}

/// What [`Framed::recv`] found.
#[derive(Debug)]
pub enum Recv {
    /// A whole message, and the wall-clock time (µs) when its last bytes were read.
    Message(Message, u64),
    /// The peer closed the connection between messages.
    Closed,
    /// The deadline passed first.
    Timeout,
}

/// Protocol messages on a blocking TCP stream: [`Framed::send`] writes one whole frame,
/// [`Framed::recv`] reads until a message is complete, the peer closes, or a deadline passes.
#[derive(Debug)]
pub struct Framed {
    stream: TcpStream,
    peer: String,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
}

impl Framed {
    /// Wraps a connected stream; frames longer than `max_frame` bytes are refused.
    pub fn new(stream: TcpStream, peer: impl Into<String>, max_frame: u64) -> Self {
        Self {
            stream,
            peer: peer.into(),
            decoder: FrameDecoder::new(max_frame),
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
            out: Vec::new(),
        }
    }

    /// Starts with bytes already read from the stream (for example by a protocol sniff).
    pub fn with_prefix(mut self, prefix: &[u8]) -> Self {
        if prefix.len() > self.buf.len() {
            self.buf.resize(prefix.len(), 0);
        }
        self.buf[..prefix.len()].copy_from_slice(prefix);
        self.start = 0;
        self.end = prefix.len();
        self
    }

    /// The peer's name for messages.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn io(&self, error: std::io::Error) -> Error {
        Error::Io {
            peer: self.peer.clone(),
            error,
        }
    }

    /// Writes one message as a frame (bounded by the stream's write timeout, if set).
    pub fn send(&mut self, msg: &Message) -> Result<()> {
        self.out.clear();
        msg.encode_frame(&mut self.out)?;
        let out = std::mem::take(&mut self.out);
        let r = self.stream.write_all(&out).map_err(|e| self.io(e));
        self.out = out;
        r
    }

    /// Writes several messages in one write.
    pub fn send_all<'a>(&mut self, msgs: impl IntoIterator<Item = &'a Message>) -> Result<()> {
        self.out.clear();
        for m in msgs {
            m.encode_frame(&mut self.out)?;
        }
        let out = std::mem::take(&mut self.out);
        let r = self.stream.write_all(&out).map_err(|e| self.io(e));
        self.out = out;
        r
    }

    /// True when bytes already read are waiting to be decoded.
    pub fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Reads until one message is complete (returned with the time its last bytes arrived), the
    /// peer closes between messages, or `deadline` passes.
    pub fn recv(&mut self, deadline: Instant) -> Result<Recv> {
        let mut arrived = now_us();
        loop {
            if self.start < self.end {
                let used = self
                    .decoder
                    .push(&self.buf[self.start..self.end])
                    .map_err(|e| self.broke(e.to_string()))?;
                self.start += used;
                if let Some(frame) = self.decoder.next_frame() {
                    let msg = Message::decode(frame).map_err(|e| Error::PeerBroke {
                        peer: self.peer.clone(),
                        reason: e.to_string(),
                    })?;
                    return Ok(Recv::Message(msg, arrived));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Recv::Timeout);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| self.io(e))?;
            match self.stream.read(&mut self.buf) {
                Ok(0) => {
                    return if self.decoder.is_idle() {
                        Ok(Recv::Closed)
                    } else {
                        Err(Error::Closed {
                            peer: self.peer.clone(),
                            when: "in the middle of a message".into(),
                        })
                    };
                }
                Ok(n) => {
                    arrived = now_us();
                    self.start = 0;
                    self.end = n;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    fn broke(&self, reason: String) -> Error {
        Error::PeerBroke {
            peer: self.peer.clone(),
            reason,
        }
    }

    /// Gives the stream back.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            split_host_port("127.0.0.1:80").unwrap(),
            ("127.0.0.1".into(), 80)
        );
        assert_eq!(split_host_port("[::1]:7").unwrap(), ("::1".into(), 7));
        assert_eq!(
            split_host_port("example.com").unwrap_err().to_string(),
            "\"example.com\" is not an address: write HOST:PORT, for example 127.0.0.1:7000 or [::1]:7000"
        );
        assert_eq!(
            split_host_port("h:99999").unwrap_err().to_string(),
            "\"h:99999\" is not an address: the port must be a number from 0 to 65535"
        );
        assert!(split_host_port(":80").is_err());
    }
}
