//! The player's connection to a sender, over TCP, Bluetooth RFCOMM or UDP: the I/O edge around
//! the sans-IO [`Session`] (TCP and RFCOMM: one byte stream, the same framed messages) and
//! [`UdpClient`] (UDP). All yield the same [`Event`]s.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audiowire_protocol::{DEFAULT_MAX_FRAME_LEN, Report};
use audiowire_transport::{Conn, rfcomm};

use crate::error::{Error, Result};
use crate::session::{Event, Greeting, Session, SessionError};
use crate::udp::UdpClient;

/// How the stream travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// One TCP connection: reliable and ordered.
    #[default]
    Tcp,
    /// UDP datagrams, one frame each: lossy, unordered, low latency.
    Udp,
    /// Bluetooth RFCOMM (Linux): a byte stream like TCP, to `MAC:CHANNEL`; small bandwidth,
    /// links that drop.
    Rfcomm,
}

/// Opens a byte stream to the sender some other way than an address (the tests run the stream
/// code over a socketpair this way). Called again for every reconnection.
#[derive(Clone)]
pub struct Connector(pub Arc<dyn Fn() -> std::io::Result<Box<dyn Conn>> + Send + Sync>);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// A connection to a sender.
#[derive(Debug)]
pub enum Link {
    /// A byte stream (TCP, RFCOMM) and its protocol session.
    Tcp {
        /// The connection.
        stream: Box<dyn Conn>,
        /// Protocol state.
        session: Session,
        /// Read buffer.
        buf: Vec<u8>,
    },
    /// A connected UDP socket and its handshake state.
    Udp {
        /// The socket, connected to the sender.
        socket: UdpSocket,
        /// Handshake and datagram state.
        client: UdpClient,
        /// Receive buffer.
        buf: Vec<u8>,
    },
}

fn resolve(addr: &str) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| Error::Connect {
            addr: addr.to_string(),
            reason: format!("cannot resolve the address ({e}); expected HOST:PORT"),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Connect {
            addr: addr.to_string(),
            reason: "the name resolved to no address".into(),
        });
    }
    Ok(addrs)
}

impl Link {
    /// Sends the greeting on a connected byte stream and starts its session.
    pub fn over(mut stream: Box<dyn Conn>, greeting: &Greeting) -> std::io::Result<Self> {
        stream.write_all(&Session::hello(greeting))?;
        let session = match greeting.resume {
            Some((seq, pos)) => Session::resuming(DEFAULT_MAX_FRAME_LEN, seq, pos),
            None => Session::new(DEFAULT_MAX_FRAME_LEN),
        }
        .with_greeting(greeting.clone());
        Ok(Link::Tcp {
            stream,
            session,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Connects to `addr` and sends the greeting. For UDP this only opens the socket; the
    /// handshake runs in [`Link::poll`].
    pub fn open(
        addr: &str,
        transport: Transport,
        timeout: Duration,
        greeting: &Greeting,
    ) -> Result<Self> {
        let fail = |reason: String| Error::Connect {
            addr: addr.to_string(),
            reason,
        };
        if transport == Transport::Rfcomm {
            let peer = rfcomm::Addr::parse_peer(addr).map_err(|e| fail(e.to_string()))?;
            let conn = rfcomm::connect(peer, timeout).map_err(|e| fail(e.to_string()))?;
            // A link refused just after it was set up fails the greeting's write.
            return Link::over(Box::new(conn), greeting).map_err(|e| {
                fail(match e.kind() {
                    ErrorKind::ConnectionRefused | ErrorKind::NotConnected => {
                        audiowire_transport::Error::Refused {
                            addr: peer.mac_string(),
                            channel: peer.channel,
                        }
                        .to_string()
                    }
                    _ => e.to_string(),
                })
            });
        }
        let addrs = resolve(addr)?;
        match transport {
            Transport::Tcp => {
                let mut last = fail("no address worked".into());
                for a in addrs {
                    match TcpStream::connect_timeout(&a, timeout) {
                        Ok(stream) => {
                            let io = |e: std::io::Error| fail(e.to_string());
                            stream.set_nodelay(true).map_err(io)?;
                            return Link::over(Box::new(stream), greeting).map_err(io);
                        }
                        Err(e) => {
                            last = fail(match e.kind() {
                                ErrorKind::ConnectionRefused => {
                                    "connection refused (is `audiowire send` running there?)".into()
                                }
                                ErrorKind::TimedOut | ErrorKind::WouldBlock => format!(
                                    "timed out after {} s (check the address and any firewall)",
                                    timeout.as_secs()
                                ),
                                _ => e.to_string(),
                            })
                        }
                    }
                }
                Err(last)
            }
            Transport::Rfcomm => Err(fail("not a byte stream".into())),
            Transport::Udp => {
                let a = addrs[0];
                let local: SocketAddr = if a.is_ipv6() {
                    "[::]:0"
                        .parse()
                        .map_err(|_| fail("bad local address".into()))?
                } else {
                    "0.0.0.0:0"
                        .parse()
                        .map_err(|_| fail("bad local address".into()))?
                };
                let io = |e: std::io::Error| fail(e.to_string());
                let socket = UdpSocket::bind(local).map_err(io)?;
                socket.connect(a).map_err(io)?;
                // `poll` waits with `ppoll` and then reads what is queued without blocking:
                // three system calls a wake-up, where toggling the socket took six.
                #[cfg(unix)]
                socket.set_nonblocking(true).map_err(io)?;
                Ok(Link::Udp {
                    socket,
                    client: UdpClient::new(greeting.clone()),
                    buf: vec![0; 65_536],
                })
            }
        }
    }

    /// Waits up to `timeout` for data and appends the events it carries. `now` is the player's
    /// monotonic clock. Returns false when a TCP sender closed the connection.
    pub fn poll(
        &mut self,
        addr: &str,
        now: Duration,
        timeout: Duration,
        events: &mut Vec<Event>,
    ) -> Result<bool> {
        let lost = |e: std::io::Error| Error::Connection {
            addr: addr.to_string(),
            reason: format!("failed: {e}"),
        };
        match self {
            Link::Tcp {
                stream,
                session,
                buf,
            } => {
                // Wait precisely (see `wait_readable`); the read timeout only bounds a read that
                // finds nothing after all.
                if !stream.wait_readable(timeout).map_err(lost)? {
                    return Ok(true);
                }
                stream
                    .set_read_timeout(Some(timeout.max(Duration::from_micros(100))))
                    .map_err(lost)?;
                match stream.read(buf) {
                    Ok(0) => Ok(false),
                    Ok(n) => {
                        session.receive(&buf[..n], events).map_err(|e| match e {
                            SessionError::Key(reason) => Error::Key {
                                addr: addr.to_string(),
                                reason,
                            },
                            e => Error::Protocol {
                                addr: addr.to_string(),
                                reason: e.to_string(),
                            },
                        })?;
                        // The answer to the sender's challenge, if it asked one.
                        let answer = session.take_outgoing();
                        if !answer.is_empty() {
                            stream.write_all(&answer).map_err(lost)?;
                        }
                        Ok(true)
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) =>
                    {
                        Ok(true)
                    }
                    Err(e) => Err(lost(e)),
                }
            }
            Link::Udp {
                socket,
                client,
                buf,
            } => {
                if let Some(d) = client.poll_transmit(now) {
                    let _ = socket.send(&d);
                }
                // The socket is non-blocking (see `open`): wait for the first datagram.
                #[cfg(unix)]
                {
                    use std::os::fd::AsFd;
                    if !audiowire_transport::wait_readable(socket.as_fd(), timeout).map_err(lost)? {
                        return Ok(true);
                    }
                }
                #[cfg(not(unix))]
                socket
                    .set_read_timeout(Some(timeout.max(Duration::from_micros(100))))
                    .map_err(lost)?;
                // Drain what is queued (bounded).
                for _i in 0..256 {
                    #[cfg(not(unix))]
                    if _i == 1 {
                        socket.set_nonblocking(true).map_err(lost)?;
                    }
                    match socket.recv(buf) {
                        Ok(n) => {
                            if let Some(reply) = client.receive(&buf[..n], now, events) {
                                let _ = socket.send(&reply);
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) =>
                        {
                            break;
                        }
                        // ICMP port unreachable: nobody listens there. Before the stream starts,
                        // keep trying until the connect timeout says otherwise; once it runs,
                        // the sender is gone.
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                            if client.is_subscribed() {
                                return Err(lost(e));
                            }
                            break;
                        }
                        Err(e) => return Err(lost(e)),
                    }
                }
                #[cfg(not(unix))]
                socket.set_nonblocking(false).map_err(lost)?;
                Ok(true)
            }
        }
    }

    /// True once the stream's format is known.
    pub fn is_subscribed(&self) -> bool {
        match self {
            Link::Tcp { session, .. } => session.info().is_some(),
            Link::Udp { client, .. } => client.is_subscribed(),
        }
    }

    /// Sends a reception report (UDP only; TCP needs none).
    pub fn report(&mut self, report: Report) {
        if let Link::Udp { socket, .. } = self {
            let _ = socket.send(&UdpClient::report(report));
        }
    }

    /// Sends a `Ping` (the sender answers with a `Pong` carrying its clock).
    pub fn ping(&mut self, id: u64, t1_us: u64) {
        let mut out = Vec::new();
        if (audiowire_protocol::Message::Ping { id, t1_us })
            .encode_frame(&mut out)
            .is_err()
        {
            return;
        }
        match self {
            Link::Tcp { stream, .. } => {
                let _ = stream.write_all(&out);
            }
            Link::Udp { socket, .. } => {
                let _ = socket.send(&out);
            }
        }
    }

    /// Tells a UDP sender to stop sending.
    pub fn bye(&mut self) {
        if let Link::Udp { socket, .. } = self {
            let _ = socket.send(&UdpClient::bye());
        }
    }

    /// Datagrams dropped as malformed (UDP).
    pub fn malformed(&self) -> u64 {
        match self {
            Link::Tcp { .. } => 0,
            Link::Udp { client, .. } => client.malformed(),
        }
    }
}

/// A deadline helper: time left until `deadline`, zero when past.
pub fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
