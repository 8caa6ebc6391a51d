//! Echo: a server that sends back every byte it receives, and a client.
//!
//! The TCP server gives each client its own thread (at most [`EchoConfig::max_clients`] at once;
//! more are refused), with a fixed 16 KiB buffer and a write timeout, so a client that stops
//! reading is dropped alone and never blocks the others. The UDP server answers each datagram to
//! its sender.
//!
//! **Raw or framed.** Plain clients (`nc`, a Python `socket` script) get their bytes back exactly.
//! A client that speaks the audiowire protocol is recognised from its first bytes ([`sniff`]): a
//! TCP connection whose first ten bytes are a frame header of at most 1 MiB, envelope version 1
//! and the type `Echo` (0x10) or `Ping` (0x11) is *framed*: the server decodes its frames and
//! answers each `Echo` with the same `Echo` and each `Ping` with a `Pong`. The decision is made at
//! the first byte that cannot begin such a frame (text never can: its first byte is not zero), or
//! [`EchoConfig::sniff_timeout`] after the first byte when fewer than ten have come; either way a
//! connection that is not framed is raw and gets every byte back. On UDP, a datagram that is
//! exactly one framed `Ping` is answered with a `Pong`; every other datagram comes back as is
//! (which answers a framed `Echo` too).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use audiowire_protocol::message::{ENVELOPE_VERSION, ErrorCode};
use audiowire_protocol::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, HEADER_LEN, Message, clock};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::net::{self, Framed, Recv, now_us};

/// Type tags a framed echo client may start with.
const ECHO_TAG: u8 = 0x10;
const PING_TAG: u8 = 0x11;
/// Bytes [`sniff`] needs to recognise a framed client: header, version, type.
pub const SNIFF_LEN: usize = HEADER_LEN + 2;
/// How long the servers wait between checks of the shutdown flag.
const SLICE: Duration = Duration::from_millis(100);

/// What a connection's first bytes say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// An audiowire client: decode frames, answer `Echo` and `Ping`.
    Framed,
    /// Anything else: send every byte back.
    Raw,
    /// Every byte so far could begin a framed `Echo` or `Ping`: wait for more.
    NeedMore,
}

/// Classifies a connection from its first bytes (sans-IO; see the module doc for the rule).
pub fn sniff(head: &[u8]) -> Sniff {
    let max = DEFAULT_MAX_FRAME_LEN.to_be_bytes();
    // The length is at most 1 MiB: bytes 0..5 are zero and byte 5 at most 0x10.
    for (i, &b) in head.iter().take(HEADER_LEN).enumerate() {
        if i < 5 && b != 0 || i == 5 && b > max[5] {
            return Sniff::Raw;
        }
    }
    if head.len() < HEADER_LEN {
        return Sniff::NeedMore;
    }
    let mut len = [0u8; HEADER_LEN];
    len.copy_from_slice(&head[..HEADER_LEN]);
    let len = u64::from_be_bytes(len);
    if !(2..=DEFAULT_MAX_FRAME_LEN).contains(&len) {
        return Sniff::Raw;
    }
    match head.get(HEADER_LEN) {
        None => return Sniff::NeedMore,
        Some(&v) if v != ENVELOPE_VERSION => return Sniff::Raw,
        Some(_) => {}
    }
    match head.get(HEADER_LEN + 1) {
        None => Sniff::NeedMore,
        Some(&ECHO_TAG) => Sniff::Framed,
        Some(&PING_TAG) if len == 18 => Sniff::Framed,
        Some(_) => Sniff::Raw,
    }
}

/// Limits of an echo server.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Most TCP clients served at once; more are refused (closed at once).
    pub max_clients: usize,
    /// A TCP client silent this long is closed.
    pub idle_timeout: Duration,
    /// A write blocked this long (the client does not read) drops the client.
    pub write_timeout: Duration,
    /// How long a connection that might be framed may take to send its first ten bytes.
    pub sniff_timeout: Duration,
    /// Largest framed message accepted, in bytes.
    pub max_frame: u64,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            max_clients: 64,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(2),
            sniff_timeout: Duration::from_millis(200),
            max_frame: 256 * 1024,
        }
    }
}

/// A bound echo server (TCP or UDP), ready to [`EchoServer::run`].
#[derive(Debug)]
pub struct EchoServer {
    socket: Socket,
    config: Arc<EchoConfig>,
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl EchoServer {
    /// Binds `addr` over TCP, or UDP when `udp` (port 0 picks a free one).
    pub fn bind(addr: &str, udp: bool, config: EchoConfig) -> Result<Self> {
        let socket = if udp {
            let s = net::bind_udp(addr)?;
            s.set_read_timeout(Some(SLICE))
                .map_err(|error| Error::Listen {
                    addr: addr.into(),
                    error,
                })?;
            Socket::Udp(s)
        } else {
            Socket::Tcp(net::bind_tcp(addr)?)
        };
        Ok(Self {
            socket,
            config: Arc::new(config),
        })
    }

    /// The bound address, as `tcp://…` or `udp://…` would name it (without the scheme).
    pub fn local_addr(&self) -> String {
        match &self.socket {
            Socket::Tcp(l) => net::local(l),
            Socket::Udp(s) => s
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
        }
    }

    /// Serves until `shutdown` is set.
    pub fn run(&self, shutdown: &Arc<AtomicBool>) -> Result<()> {
        match &self.socket {
            Socket::Tcp(l) => self.run_tcp(l, shutdown),
            Socket::Udp(s) => run_udp(s, shutdown),
        }
    }

    fn run_tcp(&self, listener: &TcpListener, shutdown: &Arc<AtomicBool>) -> Result<()> {
        let active = Arc::new(AtomicUsize::new(0));
        let mut threads: Vec<thread::JoinHandle<()>> = Vec::new();
        while !shutdown.load(Ordering::Relaxed) {
            let Some((stream, peer)) = net::try_accept(listener) else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            threads.retain(|t| !t.is_finished());
            if active.load(Ordering::Relaxed) >= self.config.max_clients {
                warn!(
                    "refusing {peer}: {} clients already connected",
                    self.config.max_clients
                );
                continue;
            }
            let n = active.fetch_add(1, Ordering::Relaxed) + 1;
            info!("client {peer} connected ({n} connected)");
            let config = Arc::clone(&self.config);
            let shutdown = Arc::clone(shutdown);
            let client_active = Arc::clone(&active);
            let spawned = thread::Builder::new()
                .name(format!("echo {peer}"))
                .spawn(move || {
                    match serve_client(stream, peer, &config, &shutdown) {
                        Ok(summary) => info!("client {peer} done: {summary}"),
                        Err(e) => warn!("client {peer} dropped: {e}"),
                    }
                    client_active.fetch_sub(1, Ordering::Relaxed);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    active.fetch_sub(1, Ordering::Relaxed);
                    warn!("client {peer} refused: cannot start a thread: {e}");
                }
            }
        }
        for t in threads {
            let _ = t.join();
        }
        Ok(())
    }
}

/// Serves one TCP client; returns what it did, for the log.
fn serve_client(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: &EchoConfig,
    shutdown: &AtomicBool,
) -> Result<String> {
    let io = |error| Error::Io {
        peer: peer.to_string(),
        error,
    };
    stream
        .set_write_timeout(Some(config.write_timeout))
        .map_err(io)?;
    stream.set_read_timeout(Some(SLICE)).map_err(io)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut first_byte_at: Option<Instant> = None;
    let mut last_activity = Instant::now();
    // Sniff: read until the first bytes decide raw or framed.
    let mode = loop {
        if shutdown.load(Ordering::Relaxed) {
            return Ok("stopped".into());
        }
        match sniff(&head) {
            Sniff::NeedMore
                if head.is_empty()
                    || first_byte_at.is_some_and(|t| t.elapsed() < config.sniff_timeout) => {}
            Sniff::NeedMore => break Sniff::Raw,
            decided => break decided,
        }
        match stream.read(&mut buf[..SNIFF_LEN - head.len()]) {
            Ok(0) => {
                // Closed before deciding: echo what came, as raw.
                stream.write_all(&head).map_err(io)?;
                return Ok(format!("{} bytes echoed", head.len()));
            }
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                first_byte_at.get_or_insert_with(Instant::now);
                last_activity = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if last_activity.elapsed() > config.idle_timeout {
                    return Ok("idle, closed".into());
                }
            }
            Err(e) => return Err(io(e)),
        }
    };
    debug!("client {peer}: {mode:?}");
    if mode == Sniff::Framed {
        let answered = serve_framed(stream, peer, &head, config, shutdown)?;
        return Ok(format!("{answered} framed messages answered"));
    }
    let mut echoed = head.len() as u64;
    stream.write_all(&head).map_err(io)?;
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(format!("{echoed} bytes echoed"));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(format!("{echoed} bytes echoed")),
            Ok(n) => {
                stream.write_all(&buf[..n]).map_err(io)?;
                echoed += n as u64;
                last_activity = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if last_activity.elapsed() > config.idle_timeout {
                    return Ok(format!("{echoed} bytes echoed, then idle: closed"));
                }
            }
            Err(e) => return Err(io(e)),
        }
    }
}

/// Serves a client that speaks the protocol: `Echo` → `Echo`, `Ping` → `Pong`.
fn serve_framed(
    stream: TcpStream,
    peer: SocketAddr,
    head: &[u8],
    config: &EchoConfig,
    shutdown: &AtomicBool,
) -> Result<u64> {
    let mut conn = Framed::new(stream, peer.to_string(), config.max_frame).with_prefix(head);
    let mut answered = 0u64;
    let mut last_activity = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        match conn.recv(Instant::now() + SLICE)? {
            Recv::Closed => break,
            Recv::Timeout => {
                if last_activity.elapsed() > config.idle_timeout {
                    break;
                }
            }
            Recv::Message(msg, arrived) => {
                last_activity = Instant::now();
                match clock::answer_probe(&msg, arrived, now_us()) {
                    Some(reply) => {
                        conn.send(&reply)?;
                        answered += 1;
                    }
                    None => {
                        let text = format!(
                            "the echo server answers Echo and Ping only, not {}",
                            msg.name()
                        );
                        let _ = conn.send(&Message::Error {
                            code: ErrorCode::BadMessage,
                            text: text.clone(),
                        });
                        return Err(Error::PeerBroke {
                            peer: peer.to_string(),
                            reason: text,
                        });
                    }
                }
            }
        }
    }
    Ok(answered)
}

/// The UDP echo loop: every datagram back to its sender; a framed `Ping` gets a `Pong`.
fn run_udp(socket: &UdpSocket, shutdown: &AtomicBool) -> Result<()> {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::new();
    while !shutdown.load(Ordering::Relaxed) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // An ICMP error from an earlier reply (the client went away): not ours to stop on.
                debug!("udp receive: {e}");
                continue;
            }
        };
        let arrived = now_us();
        let datagram = &buf[..n];
        out.clear();
        let reply: &[u8] = match ping_in_datagram(datagram) {
            Some(ping) => {
                match clock::answer_probe(&ping, arrived, now_us())
                    .map(|m| m.encode_frame(&mut out))
                {
                    Some(Ok(())) => &out,
                    _ => datagram,
                }
            }
            None => datagram,
        };
        if let Err(e) = socket.send_to(reply, peer) {
            debug!("udp reply to {peer}: {e}");
        }
    }
    Ok(())
}

/// The `Ping` a datagram holds, if it is exactly one framed `Ping`.
fn ping_in_datagram(d: &[u8]) -> Option<Message> {
    if sniff(d) != Sniff::Framed {
        return None;
    }
    let mut dec = FrameDecoder::new(64);
    let used = dec.push(d).ok()?;
    if used != d.len() {
        return None;
    }
    match Message::decode(dec.next_frame()?) {
        Ok(m @ Message::Ping { .. }) => Some(m),
        _ => None,
    }
}

/// How an [`EchoClient`] talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EchoMode {
    /// UDP datagrams instead of a TCP stream.
    pub udp: bool,
    /// Framed `Echo` messages instead of raw bytes.
    pub framed: bool,
}

/// A client of an echo server.
#[derive(Debug)]
pub struct EchoClient {
    addr: String,
    conn: Conn,
    timeout: Duration,
}

#[derive(Debug)]
enum Conn {
    Tcp(TcpStream),
    Framed(Box<Framed>),
    Udp { socket: UdpSocket, framed: bool },
}

const WHAT: &str = "an echo server";

impl EchoClient {
    /// Connects to `addr`; each reply must come within `timeout`.
    pub fn connect(addr: &str, mode: EchoMode, timeout: Duration) -> Result<Self> {
        let conn = if mode.udp {
            let targets = net::resolve(addr, WHAT)?;
            let target = targets[0];
            let local = if target.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let io = |error| Error::Io {
                peer: addr.to_string(),
                error,
            };
            let socket = UdpSocket::bind(local).map_err(io)?;
            socket.connect(target).map_err(io)?;
            Conn::Udp {
                socket,
                framed: mode.framed,
            }
        } else {
            let stream = net::connect(addr, timeout, WHAT)?;
            stream
                .set_write_timeout(Some(timeout))
                .map_err(|error| Error::Io {
                    peer: addr.to_string(),
                    error,
                })?;
            if mode.framed {
                Conn::Framed(Box::new(Framed::new(stream, addr, DEFAULT_MAX_FRAME_LEN)))
            } else {
                Conn::Tcp(stream)
            }
        };
        Ok(Self {
            addr: addr.to_string(),
            conn,
            timeout,
        })
    }

    /// Sends `payload` and returns the reply. Raw TCP: reads as many bytes as were sent.
    pub fn echo(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        let peer = Peer {
            addr: &self.addr,
            timeout: self.timeout,
        };
        match &mut self.conn {
            Conn::Tcp(stream) => echo_raw_tcp(stream, payload, deadline, &peer),
            Conn::Framed(conn) => {
                conn.send(&Message::Echo {
                    payload: payload.to_vec(),
                })?;
                match conn.recv(deadline)? {
                    Recv::Message(Message::Echo { payload }, _) => Ok(payload),
                    Recv::Message(Message::Error { text, .. }, _) => Err(Error::Refused {
                        peer: peer.addr.to_string(),
                        text,
                    }),
                    Recv::Message(other, _) => {
                        Err(peer.broke(format!("it answered Echo with {}", other.name())))
                    }
                    Recv::Closed => Err(Error::Closed {
                        peer: peer.addr.to_string(),
                        when: "before answering".into(),
                    }),
                    Recv::Timeout => Err(peer.no_reply()),
                }
            }
            Conn::Udp { socket, framed } => echo_udp(socket, *framed, payload, deadline, &peer),
        }
    }
}

/// Who a client talks to, for its error messages.
struct Peer<'a> {
    addr: &'a str,
    timeout: Duration,
}

impl Peer<'_> {
    fn io(&self, error: std::io::Error) -> Error {
        Error::Io {
            peer: self.addr.to_string(),
            error,
        }
    }
    fn no_reply(&self) -> Error {
        Error::NoReply {
            peer: self.addr.to_string(),
            after: self.timeout,
            what: WHAT,
        }
    }
    fn broke(&self, reason: String) -> Error {
        Error::PeerBroke {
            peer: self.addr.to_string(),
            reason,
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn echo_raw_tcp(
    stream: &mut TcpStream,
    payload: &[u8],
    deadline: Instant,
    peer: &Peer<'_>,
) -> Result<Vec<u8>> {
    stream.write_all(payload).map_err(|e| peer.io(e))?;
    let mut reply = vec![0u8; payload.len()];
    let mut got = 0;
    while got < reply.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(peer.no_reply());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| peer.io(e))?;
        match stream.read(&mut reply[got..]) {
            Ok(0) => {
                return Err(Error::Closed {
                    peer: peer.addr.to_string(),
                    when: format!("after echoing {got} of {} bytes", payload.len()),
                });
            }
            Ok(n) => got += n,
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(peer.io(e)),
        }
    }
    Ok(reply)
}

fn echo_udp(
    socket: &UdpSocket,
    framed: bool,
    payload: &[u8],
    deadline: Instant,
    peer: &Peer<'_>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if framed {
        Message::Echo {
            payload: payload.to_vec(),
        }
        .encode_frame(&mut out)?;
    } else {
        out.extend_from_slice(payload);
    }
    socket.send(&out).map_err(|e| peer.io(e))?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(peer.no_reply());
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| peer.io(e))?;
        match socket.recv(&mut buf) {
            Ok(n) if !framed => return Ok(buf[..n].to_vec()),
            Ok(n) => {
                let frames = FrameDecoder::default()
                    .decode(&buf[..n])
                    .unwrap_or_default();
                return match frames.as_slice() {
                    [frame] => match Message::decode(frame) {
                        Ok(Message::Echo { payload }) => Ok(payload),
                        _ => Err(peer.broke("its reply is not a framed Echo".into())),
                    },
                    _ => Err(peer.broke("its reply is not one framed Echo".into())),
                };
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Err(Error::Connect {
                    addr: peer.addr.to_string(),
                    reason: "connection refused (nothing listens on that UDP port)".into(),
                    what: WHAT,
                });
            }
            Err(e) => return Err(peer.io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(m: Message) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode_frame(&mut out).unwrap_or_default();
        out
    }

    #[test]
    fn text_is_raw_at_the_first_byte() {
        assert_eq!(sniff(b"h"), Sniff::Raw);
        assert_eq!(sniff(b"hello\n"), Sniff::Raw);
        assert_eq!(sniff(b""), Sniff::NeedMore);
    }

    #[test]
    fn framed_echo_and_ping_are_recognised_from_ten_bytes() {
        let echo = frame(Message::Echo {
            payload: b"x".to_vec(),
        });
        let ping = frame(Message::Ping { id: 1, t1_us: 2 });
        for f in [&echo, &ping] {
            for n in 0..SNIFF_LEN {
                assert_eq!(sniff(&f[..n]), Sniff::NeedMore, "{n} bytes");
            }
            assert_eq!(sniff(&f[..SNIFF_LEN]), Sniff::Framed);
            assert_eq!(sniff(f), Sniff::Framed);
        }
    }

    #[test]
    fn other_frames_and_binary_are_raw() {
        let end = frame(Message::End { position: 1 });
        assert_eq!(sniff(&end), Sniff::Raw);
        // A Ping tag with the wrong length.
        let mut ping = frame(Message::Ping { id: 1, t1_us: 2 });
        ping[7] = 19;
        assert_eq!(sniff(&ping), Sniff::Raw);
        // Zeros, then a length above 1 MiB.
        assert_eq!(sniff(&[0, 0, 0, 0, 0, 0x11]), Sniff::Raw);
        // Version 2.
        assert_eq!(sniff(&[0, 0, 0, 0, 0, 0, 0, 3, 2]), Sniff::Raw);
        assert_eq!(sniff(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 0x10]), Sniff::Raw);
    }

    #[test]
    fn a_datagram_holding_one_ping_is_answered() {
        let ping = frame(Message::Ping { id: 9, t1_us: 5 });
        assert_eq!(
            ping_in_datagram(&ping),
            Some(Message::Ping { id: 9, t1_us: 5 })
        );
        let mut two = ping.clone();
        two.extend_from_slice(&ping);
        assert_eq!(ping_in_datagram(&two), None);
        assert_eq!(ping_in_datagram(&ping[..12]), None);
        assert_eq!(ping_in_datagram(b"ping"), None);
    }
}
