//! The relays: the simulator's I/O edge. They own the sockets, the threads and the clock, and ask
//! the sans-IO model in [`crate::impair`] what to do with each datagram or chunk.
//!
//! [`UdpRelay`] listens on an address and forwards each client's datagrams to a target from an
//! upstream socket of its own (NAT-style: one upstream socket per client address, so the target
//! sees each client as a separate peer and its answers go back to the right client). Each
//! direction has one [`Link`] shared by every client, as packets on one network path share it:
//! `upstream` (client → target) and `downstream` (target → client). One thread receives from the
//! clients, one per client receives from the target, and one timer thread sleeps until the
//! earliest deadline of either link (a condition variable, woken early when a packet arrives) and
//! sends what is due.
//!
//! [`TcpRelay`] pipes each accepted connection to a new connection to the target, applying
//! [`Config::for_stream`]: delay, jitter and rate, never loss, and never reordering bytes (each
//! chunk read is delivered no earlier than the one before it). Each connection has its own model
//! per direction, seeded from the relay's seed and the connection's number. Half-closes are
//! passed on after the data before them; a reset on either side closes both.
//!
//! Every loop is bounded in time: blocking calls time out every [`POLL`] to check the stop flag,
//! and stopping a relay (or dropping it) joins every thread it started. Nothing the network sends
//! can make a relay panic; problems are counted in its stats.

use std::collections::HashMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::impair::{Config, Fate, Impairment, Link, Stats, splitmix64};

/// Longest any relay thread blocks before it checks the stop flag again.
pub const POLL: Duration = Duration::from_millis(20);
/// Largest datagram a UDP relay receives whole.
const MAX_DATAGRAM: usize = 65_536;
/// Bytes a TCP relay reads at once (one chunk of the stream).
const TCP_CHUNK: usize = 16 * 1024;
/// Chunks a TCP direction holds in flight before it stops reading (then TCP's own flow control
/// slows the sender): 64 × 16 KiB = 1 MiB at most.
const TCP_CHUNKS_IN_FLIGHT: usize = 64;
/// How often a UDP relay looks for idle clients.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Salt of the downstream seed derived by [`RelayConfig::symmetric`].
const DOWNSTREAM_SALT: u64 = 0x646f_776e_7374_7265;

/// What a relay does to each direction, and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// Impairments from the clients to the target.
    pub upstream: Config,
    /// Impairments from the target back to the clients.
    pub downstream: Config,
    /// UDP: a client silent (both ways) for this long loses its upstream socket; its next
    /// datagram gets a new one.
    pub idle_timeout: Duration,
    /// UDP: the most clients at once (datagrams from more are dropped and counted as
    /// `refused`). TCP: the most connections at once (more are closed at once, and counted).
    pub max_clients: usize,
    /// TCP: how long to wait for the target to accept a connection.
    pub connect_timeout: Duration,
}

impl RelayConfig {
    /// The same impairments both ways, with a downstream seed derived from `config.seed` (so
    /// the two directions do not lose the same packets); idle clients dropped after 60 s, at most
    /// 256 clients, 5 s to connect.
    pub fn symmetric(config: Config) -> Self {
        let down_seed = splitmix64(config.seed ^ DOWNSTREAM_SALT);
        Self {
            downstream: config.clone().with_seed(down_seed),
            upstream: config,
            idle_timeout: Duration::from_secs(60),
            max_clients: 256,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    let err = |error| Error::Resolve {
        addr: addr.to_string(),
        error,
    };
    addr.to_socket_addrs()
        .map_err(err)?
        .next()
        .ok_or_else(|| err(std::io::Error::new(ErrorKind::NotFound, "no such address")))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name).spawn(f)
}

/// A delivery this late past the instant the model gave it, or later, counts as late.
pub const LATE: Duration = Duration::from_millis(2);
/// Late deliveries a relay keeps the instants of, per direction (the count goes on).
const LATE_KEPT: usize = 10_000;

/// How late a relay itself sent packets (or TCP chunks) past the instants its model gave them:
/// the machine holding up the relay's threads, on top of the network the profile simulates.
/// Per direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lateness {
    /// Deliveries timed.
    pub sent: u64,
    /// Deliveries [`LATE`] or more late.
    pub late: u64,
    /// The latest any delivery was.
    pub worst: Duration,
    /// The first late deliveries (at most 10,000): the instant each was due, and how late it
    /// went out.
    pub when: Vec<(Instant, Duration)>,
}

impl Lateness {
    /// Records a delivery due at `due` that went out `late` after it.
    fn record(&mut self, due: Instant, late: Duration) {
        self.sent += 1;
        self.worst = self.worst.max(late);
        if late >= LATE {
            self.late += 1;
            if self.when.len() < LATE_KEPT {
                self.when.push((due, late));
            }
        }
    }
}

impl fmt::Display for Lateness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} sent {} ms or more late (worst {:.1} ms)",
            self.late,
            self.sent,
            LATE.as_millis(),
            self.worst.as_secs_f64() * 1e3
        )
    }
}

// ---------------------------------------------------------------------------------------------
// UDP

/// One datagram in flight, with the client it belongs to.
#[derive(Debug, Clone)]
struct Datagram {
    client: SocketAddr,
    data: Vec<u8>,
}

impl AsRef<[u8]> for Datagram {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// What a [`UdpRelay`] has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpStats {
    /// The client → target model's counters.
    pub upstream: Stats,
    /// The target → client model's counters.
    pub downstream: Stats,
    /// Clients with an upstream socket now.
    pub clients: usize,
    /// Clients seen since the start.
    pub clients_total: u64,
    /// Datagrams dropped because the relay had `max_clients` already or could not open an
    /// upstream socket.
    pub refused: u64,
    /// Datagrams the system would not send (target unreachable, buffers full).
    pub send_errors: u64,
    /// Upstream datagrams whose client was dropped as idle while they were in flight.
    pub unroutable: u64,
}

impl fmt::Display for UdpStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "upstream: {}; downstream: {}; {} clients ({} now), {} refused, {} send errors",
            self.upstream,
            self.downstream,
            self.clients_total,
            self.clients,
            self.refused + self.unroutable,
            self.send_errors
        )
    }
}

/// A running UDP relay. Stops (joining its threads) on [`UdpRelay::stop`] or when dropped.
#[derive(Debug)]
pub struct UdpRelay {
    shared: Arc<UdpShared>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct UdpShared {
    start: Instant,
    stop: AtomicBool,
    listen: UdpSocket,
    local_addr: SocketAddr,
    forward: SocketAddr,
    idle_timeout: Duration,
    max_clients: usize,
    state: Mutex<UdpState>,
    wake: Condvar,
}

#[derive(Debug)]
struct UdpState {
    up: Link<Datagram>,
    down: Link<Datagram>,
    clients: HashMap<SocketAddr, Client>,
    /// Threads of clients dropped as idle, joined at the latest when the relay stops.
    retired: Vec<JoinHandle<()>>,
    clients_total: u64,
    refused: u64,
    send_errors: u64,
    unroutable: u64,
    up_late: Lateness,
    down_late: Lateness,
}

#[derive(Debug)]
struct Client {
    socket: Arc<UdpSocket>,
    last_seen: Instant,
    gone: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl UdpRelay {
    /// Binds `listen` (HOST:PORT; port 0 picks a free one) and starts relaying to `forward`.
    pub fn start(listen: &str, forward: &str, config: RelayConfig) -> Result<Self> {
        let up = Link::new(config.upstream)?;
        let down = Link::new(config.downstream)?;
        let forward = resolve(forward)?;
        let listen_err = |error| Error::Listen {
            addr: listen.to_string(),
            error,
        };
        let socket = UdpSocket::bind(listen).map_err(listen_err)?;
        let local_addr = socket.local_addr().map_err(listen_err)?;
        socket.set_read_timeout(Some(POLL)).map_err(listen_err)?;
        let shared = Arc::new(UdpShared {
            start: Instant::now(),
            stop: AtomicBool::new(false),
            listen: socket,
            local_addr,
            forward,
            idle_timeout: config.idle_timeout,
            max_clients: config.max_clients,
            state: Mutex::new(UdpState {
                up,
                down,
                clients: HashMap::new(),
                retired: Vec::new(),
                clients_total: 0,
                refused: 0,
                send_errors: 0,
                unroutable: 0,
                up_late: Lateness::default(),
                down_late: Lateness::default(),
            }),
            wake: Condvar::new(),
        });
        let mut relay = Self {
            shared: Arc::clone(&shared),
            threads: Vec::new(),
        };
        let s = Arc::clone(&shared);
        relay
            .threads
            .push(spawn(format!("netsim udp {local_addr}"), move || {
                s.receive_from_clients();
            })?);
        let s = Arc::clone(&shared);
        relay
            .threads
            .push(spawn("netsim udp timer".into(), move || s.deliver())?);
        Ok(relay)
    }

    /// The address clients send to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The target.
    pub fn forward_addr(&self) -> SocketAddr {
        self.shared.forward
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UdpStats {
        let st = lock(&self.shared.state);
        UdpStats {
            upstream: st.up.stats(),
            downstream: st.down.stats(),
            clients: st.clients.len(),
            clients_total: st.clients_total,
            refused: st.refused,
            send_errors: st.send_errors,
            unroutable: st.unroutable,
        }
    }

    /// How late the relay sent datagrams past their instants: (upstream, downstream).
    pub fn lateness(&self) -> (Lateness, Lateness) {
        let st = lock(&self.shared.state);
        (st.up_late.clone(), st.down_late.clone())
    }

    /// Datagrams waiting in either direction.
    pub fn in_flight(&self) -> usize {
        let st = lock(&self.shared.state);
        st.up.in_flight() + st.down.in_flight()
    }

    /// Stops relaying (datagrams still in flight are dropped), joins every thread (within about
    /// [`POLL`]) and returns the final counters.
    pub fn stop(mut self) -> UdpStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let (clients, retired) = {
            let mut st = lock(&self.shared.state);
            let clients: Vec<Client> = st.clients.drain().map(|(_, c)| c).collect();
            (clients, std::mem::take(&mut st.retired))
        };
        for c in clients {
            let _ = c.thread.join();
        }
        for t in retired {
            let _ = t.join();
        }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.halt();
    }
}

impl UdpShared {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The listening socket's loop: datagrams from clients into the upstream link.
    fn receive_from_clients(self: &Arc<Self>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.stopping() {
            match self.listen.recv_from(&mut buf) {
                Ok((n, client)) => self.from_client(client, &buf[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    // An ICMP error reported on the socket, say: keep serving the others, but
                    // never spin.
                    debug!("receive from clients: {e}");
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    fn from_client(self: &Arc<Self>, client: SocketAddr, data: &[u8]) {
        let now = self.now();
        let mut st = lock(&self.state);
        if !st.clients.contains_key(&client) {
            if st.clients.len() >= self.max_clients {
                st.refused += 1;
                return;
            }
            match self.open_client(client) {
                Ok(c) => {
                    debug!("new client {client}");
                    st.clients.insert(client, c);
                    st.clients_total += 1;
                }
                Err(e) => {
                    warn!("cannot relay for {client}: {e}");
                    st.refused += 1;
                    return;
                }
            }
        }
        if let Some(c) = st.clients.get_mut(&client) {
            c.last_seen = Instant::now();
        }
        st.up.send(
            now,
            Datagram {
                client,
                data: data.to_vec(),
            },
        );
        drop(st);
        self.wake.notify_one();
    }

    /// An upstream socket "connected" to the target, and its receiving thread.
    fn open_client(self: &Arc<Self>, client: SocketAddr) -> std::io::Result<Client> {
        let any: SocketAddr = if self.forward.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(any)?;
        socket.connect(self.forward)?;
        socket.set_read_timeout(Some(POLL))?;
        let socket = Arc::new(socket);
        let gone = Arc::new(AtomicBool::new(false));
        let (s, sock, g) = (Arc::clone(self), Arc::clone(&socket), Arc::clone(&gone));
        let thread = spawn(format!("netsim udp {client}"), move || {
            s.receive_from_target(client, &sock, &g);
        })?;
        Ok(Client {
            socket,
            last_seen: Instant::now(),
            gone,
            thread,
        })
    }

    /// One client's upstream socket loop: the target's answers into the downstream link.
    fn receive_from_target(&self, client: SocketAddr, socket: &UdpSocket, gone: &AtomicBool) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.stopping() && !gone.load(Ordering::Relaxed) {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let now = self.now();
                    let mut st = lock(&self.state);
                    if let Some(c) = st.clients.get_mut(&client) {
                        c.last_seen = Instant::now();
                    }
                    st.down.send(
                        now,
                        Datagram {
                            client,
                            data: buf[..n].to_vec(),
                        },
                    );
                    drop(st);
                    self.wake.notify_one();
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    // Typically "connection refused": the target is not listening (yet).
                    debug!("receive from {} for {client}: {e}", self.forward);
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// The timer loop: sleeps until the earliest deadline, sends what is due, drops idle
    /// clients.
    fn deliver(&self) {
        let mut st = lock(&self.state);
        let mut last_sweep = Instant::now();
        let mut up: Vec<(Arc<UdpSocket>, Vec<u8>)> = Vec::new();
        let mut down: Vec<Datagram> = Vec::new();
        while !self.stopping() {
            let now = self.now();
            while let Some((at, d)) = st.up.poll(now) {
                st.up_late.record(self.start + at, now - at);
                match st.clients.get(&d.client) {
                    Some(c) => up.push((Arc::clone(&c.socket), d.data)),
                    None => st.unroutable += 1,
                }
            }
            while let Some((at, d)) = st.down.poll(now) {
                st.down_late.record(self.start + at, now - at);
                down.push(d);
            }
            if !up.is_empty() || !down.is_empty() {
                drop(st);
                let mut errors = 0;
                for (socket, data) in up.drain(..) {
                    errors += u64::from(socket.send(&data).is_err());
                }
                for d in down.drain(..) {
                    errors += u64::from(self.listen.send_to(&d.data, d.client).is_err());
                }
                st = lock(&self.state);
                st.send_errors += errors;
                continue;
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep(&mut st);
            }
            let next = [st.up.next_deadline(), st.down.next_deadline()]
                .into_iter()
                .flatten()
                .min();
            let wait = next.map_or(POLL, |at| at.saturating_sub(now).min(POLL));
            if !wait.is_zero() {
                st = self
                    .wake
                    .wait_timeout(st, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }

    /// Drops clients silent for longer than the idle timeout.
    fn sweep(&self, st: &mut UdpState) {
        let idle: Vec<SocketAddr> = st
            .clients
            .iter()
            .filter(|(_, c)| c.last_seen.elapsed() >= self.idle_timeout)
            .map(|(a, _)| *a)
            .collect();
        for addr in idle {
            if let Some(c) = st.clients.remove(&addr) {
                debug!("client {addr} idle: dropped");
                c.gone.store(true, Ordering::Relaxed);
                st.retired.push(c.thread);
            }
        }
        st.retired.retain(|t| !t.is_finished());
    }
}

// ---------------------------------------------------------------------------------------------
// TCP

/// What a [`TcpRelay`] has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpStats {
    /// Connections accepted and relayed since the start.
    pub connections_total: u64,
    /// Connections open now.
    pub active: usize,
    /// Connections closed at once because `max_clients` were open.
    pub refused: u64,
    /// Connections closed because the target did not accept.
    pub connect_failures: u64,
    /// Bytes delivered to the target.
    pub bytes_up: u64,
    /// Bytes delivered back to the clients.
    pub bytes_down: u64,
}

impl fmt::Display for TcpStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections ({} open), {} refused, {} target failures; {} bytes upstream, {} bytes downstream",
            self.connections_total,
            self.active,
            self.refused,
            self.connect_failures,
            self.bytes_up,
            self.bytes_down
        )
    }
}

/// A running TCP relay. Stops (joining its threads) on [`TcpRelay::stop`] or when dropped.
#[derive(Debug)]
pub struct TcpRelay {
    shared: Arc<TcpShared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct TcpShared {
    start: Instant,
    stop: AtomicBool,
    local_addr: SocketAddr,
    forward: SocketAddr,
    config: RelayConfig,
    connections_total: AtomicU64,
    active: AtomicUsize,
    refused: AtomicU64,
    connect_failures: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    up_late: Mutex<Lateness>,
    down_late: Mutex<Lateness>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

/// One of a connection's pipe ends, run on its own thread.
type PipeEnd = Box<dyn FnOnce(&TcpShared) + Send>;

/// One piece of a stream in flight from a reader to a writer thread.
#[derive(Debug)]
enum Piece {
    /// Bytes to write at the given time.
    Data(Duration, Vec<u8>),
    /// The reader saw the end of the stream: pass the half-close on.
    End,
    /// The reader failed: reset both sides.
    Abort,
}

impl TcpRelay {
    /// Binds `listen` (HOST:PORT; port 0 picks a free one) and starts relaying each connection
    /// to `forward`.
    pub fn start(listen: &str, forward: &str, config: RelayConfig) -> Result<Self> {
        // Checked now so a bad config fails here, not per connection.
        Impairment::new(config.upstream.for_stream())?;
        Impairment::new(config.downstream.for_stream())?;
        let forward = resolve(forward)?;
        let listen_err = |error| Error::Listen {
            addr: listen.to_string(),
            error,
        };
        let listener = TcpListener::bind(listen).map_err(listen_err)?;
        let local_addr = listener.local_addr().map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let shared = Arc::new(TcpShared {
            start: Instant::now(),
            stop: AtomicBool::new(false),
            local_addr,
            forward,
            config,
            connections_total: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            up_late: Mutex::default(),
            down_late: Mutex::default(),
            connections: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = spawn(format!("netsim tcp {local_addr}"), move || {
            s.accept_loop(&listener);
        })?;
        Ok(Self {
            shared,
            accept: Some(accept),
        })
    }

    /// The address clients connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The target.
    pub fn forward_addr(&self) -> SocketAddr {
        self.shared.forward
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TcpStats {
        let s = &self.shared;
        TcpStats {
            connections_total: s.connections_total.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            connect_failures: s.connect_failures.load(Ordering::Relaxed),
            bytes_up: s.bytes_up.load(Ordering::Relaxed),
            bytes_down: s.bytes_down.load(Ordering::Relaxed),
        }
    }

    /// How late the relay wrote chunks past their instants, over all connections: (upstream,
    /// downstream).
    pub fn lateness(&self) -> (Lateness, Lateness) {
        (
            lock(&self.shared.up_late).clone(),
            lock(&self.shared.down_late).clone(),
        )
    }

    /// Stops relaying (open connections are reset), joins every thread (within about
    /// [`POLL`], or the target's connect timeout for a connection still being set up) and
    /// returns the final counters.
    pub fn stop(mut self) -> TcpStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let connections = std::mem::take(&mut *lock(&self.shared.connections));
        for t in connections {
            let _ = t.join();
        }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.halt();
    }
}

impl TcpShared {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        let mut number: u64 = 0;
        while !self.stopping() {
            match listener.accept() {
                Ok((client, peer)) => {
                    if self.active.load(Ordering::Relaxed) >= self.config.max_clients {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.active.fetch_add(1, Ordering::Relaxed);
                    let s = Arc::clone(self);
                    let n = number;
                    number += 1;
                    match spawn(format!("netsim tcp {peer}"), move || {
                        s.connection(client, peer, n);
                        s.active.fetch_sub(1, Ordering::Relaxed);
                    }) {
                        Ok(t) => {
                            let mut conns = lock(&self.connections);
                            conns.retain(|t| !t.is_finished());
                            conns.push(t);
                        }
                        Err(e) => {
                            self.active.fetch_sub(1, Ordering::Relaxed);
                            warn!("connection from {peer} refused: cannot start a thread: {e}");
                        }
                    }
                }
                Err(e) if is_timeout(&e) => thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    // Out of file descriptors and the like: keep accepting.
                    warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Relays one connection: connects to the target, then runs the four pipe ends (a reader
    /// and a writer per direction) until both directions end.
    fn connection(self: &Arc<Self>, client: TcpStream, peer: SocketAddr, n: u64) {
        let server = match TcpStream::connect_timeout(&self.forward, self.config.connect_timeout) {
            Ok(s) => s,
            Err(e) => {
                warn!("{peer}: cannot connect to {}: {e}", self.forward);
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        debug!("{peer} connected to {}", self.forward);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let salt = splitmix64(n);
        let up_config = self.config.upstream.for_stream();
        let down_config = self.config.downstream.for_stream();
        let (Ok(up), Ok(down)) = (
            Impairment::new(up_config.clone().with_seed(up_config.seed ^ salt)),
            Impairment::new(down_config.clone().with_seed(down_config.seed ^ salt)),
        ) else {
            return; // checked in TcpRelay::start
        };
        let ends = (|| -> std::io::Result<_> {
            Ok([
                client.try_clone()?,
                client.try_clone()?,
                client.try_clone()?,
                server.try_clone()?,
                server.try_clone()?,
                server.try_clone()?,
            ])
        })();
        let Ok(
            [
                client_in,
                client_out,
                client_also,
                server_in,
                server_out,
                server_also,
            ],
        ) = ends
        else {
            warn!("{peer}: cannot clone sockets");
            return;
        };
        let (up_tx, up_rx) = mpsc::sync_channel(TCP_CHUNKS_IN_FLIGHT);
        let (down_tx, down_rx) = mpsc::sync_channel(TCP_CHUNKS_IN_FLIGHT);
        let mut handles = Vec::new();
        let roles: [PipeEnd; 3] = [
            Box::new(move |s| s.read_side(client_in, up, &up_tx)),
            Box::new(move |s| s.read_side(server_in, down, &down_tx)),
            Box::new(move |s| {
                s.write_side(
                    &down_rx,
                    client_out,
                    &server_also,
                    (&s.bytes_down, &s.down_late),
                );
            }),
        ];
        for role in roles {
            let s = Arc::clone(self);
            match spawn(format!("netsim tcp {peer}"), move || role(&s)) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    warn!("{peer}: cannot start a thread: {e}");
                    reset(&client, &server);
                }
            }
        }
        self.write_side(
            &up_rx,
            server_out,
            &client_also,
            (&self.bytes_up, &self.up_late),
        );
        for h in handles {
            let _ = h.join();
        }
        debug!("{peer} closed");
    }

    /// Reads chunks and schedules each through the model, in order.
    fn read_side(&self, mut input: TcpStream, mut model: Impairment, tx: &SyncSender<Piece>) {
        let mut buf = vec![0u8; TCP_CHUNK];
        let _ = input.set_read_timeout(Some(POLL));
        loop {
            if self.stopping() {
                let _ = tx.send(Piece::Abort);
                return;
            }
            let piece = match input.read(&mut buf) {
                Ok(0) => Piece::End,
                Ok(n) => {
                    let now = self.now();
                    let at = match model.submit(now, n) {
                        Fate::Delivered { at, .. } => at,
                        // A stream config neither loses nor drops.
                        Fate::Lost | Fate::RateDropped => now,
                    };
                    Piece::Data(at, buf[..n].to_vec())
                }
                Err(e) if is_timeout(&e) => continue,
                Err(_) => Piece::Abort,
            };
            let last = !matches!(piece, Piece::Data(..));
            if tx.send(piece).is_err() || last {
                return;
            }
        }
    }

    /// Writes each chunk to `out` when it is due and passes the end on, counting its bytes and
    /// how late it went out in `counters`. On a reset, a failed write or a stop it shuts down
    /// both `out` and `source` (the socket this direction reads from), which ends every thread
    /// of the connection.
    fn write_side(
        &self,
        rx: &Receiver<Piece>,
        mut out: TcpStream,
        source: &TcpStream,
        (counter, late): (&AtomicU64, &Mutex<Lateness>),
    ) {
        let _ = out.set_write_timeout(Some(Duration::from_secs(10)));
        loop {
            if self.stopping() {
                reset(&out, source);
                return;
            }
            match rx.recv_timeout(POLL) {
                Ok(Piece::Data(at, bytes)) => {
                    if !self.wait_until(at) {
                        reset(&out, source);
                        return;
                    }
                    lock(late).record(self.start + at, self.now().saturating_sub(at));
                    if out.write_all(&bytes).is_err() {
                        reset(&out, source);
                        return;
                    }
                    counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Ok(Piece::End) => {
                    let _ = out.shutdown(Shutdown::Write);
                    return;
                }
                Ok(Piece::Abort) | Err(RecvTimeoutError::Disconnected) => {
                    reset(&out, source);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Sleeps until `at` on the relay's clock, in slices of at most [`POLL`]; false if the
    /// relay is stopping.
    fn wait_until(&self, at: Duration) -> bool {
        loop {
            if self.stopping() {
                return false;
            }
            let left = at.saturating_sub(self.now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(POLL));
        }
    }
}

fn reset(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_counts_deliveries_from_two_ms_late_and_keeps_their_instants() {
        let t0 = Instant::now();
        let mut l = Lateness::default();
        for (i, us) in [0u64, 1_999, 2_000, 7_500, 300].into_iter().enumerate() {
            l.record(
                t0 + Duration::from_millis(i as u64),
                Duration::from_micros(us),
            );
        }
        assert_eq!((l.sent, l.late), (5, 2));
        assert_eq!(l.worst, Duration::from_micros(7_500));
        assert_eq!(
            l.when,
            [
                (t0 + Duration::from_millis(2), Duration::from_micros(2_000)),
                (t0 + Duration::from_millis(3), Duration::from_micros(7_500)),
            ]
        );
        assert_eq!(
            l.to_string(),
            "2 of 5 sent 2 ms or more late (worst 7.5 ms)"
        );
        // The count goes on past what is kept.
        for _ in 0..LATE_KEPT {
            l.record(t0, LATE);
        }
        assert_eq!((l.late, l.when.len()), (LATE_KEPT as u64 + 2, LATE_KEPT));
    }
}
