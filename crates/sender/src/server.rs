//! The stream server, over TCP or Bluetooth RFCOMM: one listening socket, one thread per player.
//! Both carry the same framed messages through a blocking [`Conn`], so one code path serves both.
//!
//! Each player gets its own reader of the file, from the start, and its own pacer, so a slow or
//! dead player never stalls the others: its writes time out and it alone is dropped. A shutdown
//! flag (set by Ctrl-C in the binary) ends every stream with an `End` message.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use audiowire_protocol::auth::{Cipher, Key, from_hex};
use audiowire_protocol::clock::answer_probe;
use audiowire_protocol::message::{ErrorCode, option};
use audiowire_protocol::{
    Audio, DEFAULT_MAX_FRAME_LEN, FrameDecoder, Message, PROTOCOL_VERSION, StreamInfo,
};
use audiowire_transport::{Conn, rfcomm};
use socket2::{Domain, Socket, Type};
use tracing::{info, warn};

use crate::broadcast::Hub;
use crate::error::{Error, Result};
use crate::feed::{Frames, PlayerFeed, Progress};
use crate::pacing::Pacer;

/// Largest control message (a `Hello`) a player may send.
const MAX_CONTROL_FRAME: u64 = 64 * 1024;
/// Longest a pacing sleep lasts before the shutdown flag is checked again.
const SLEEP_SLICE: Duration = Duration::from_millis(50);
/// Longest the listener waits for a player before the shutdown flag is checked again. A player
/// that connects is accepted at once; this only bounds how long a shutdown takes to be noticed.
const ACCEPT_WAIT: Duration = Duration::from_millis(100);

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The audio file to stream (WAV, or anything symphonia decodes); unused with `input`.
    pub path: PathBuf,
    /// Capture from an input device instead of reading a file: `Some(None)` the default
    /// device, `Some(Some(name))` the one whose id or name matches. Always a broadcast.
    pub input: Option<Option<String>>,
    /// The codec and its settings.
    pub codec: crate::feed::CodecConfig,
    /// Resample to this rate (PCM; Opus always runs at 48 kHz).
    pub rate: Option<u32>,
    /// One live stream for everyone: players join where it stands instead of from the start.
    pub broadcast: bool,
    /// Duration of one `Audio` frame in milliseconds.
    pub frame_ms: f64,
    /// Start again at the end of the file instead of ending the stream.
    pub looping: bool,
    /// Pre-roll for players that do not ask for one.
    pub default_preroll: Duration,
    /// The most pre-roll a player may ask for.
    pub max_preroll: Duration,
    /// How long a write to a player may block before the player is dropped.
    pub write_timeout: Duration,
    /// How long a new connection has to send its `Hello`.
    pub handshake_timeout: Duration,
    /// UDP: the largest datagram to send; frames are made short enough to fit.
    pub max_datagram: usize,
    /// UDP: a player that sends nothing (no report) for this long is dropped.
    pub silence_timeout: Duration,
    /// A pre-shared key: players must prove they hold it, and audio is sealed with it.
    pub key: Option<Key>,
    /// Send as fast as the player reads instead of in real time: every deadline is zero (as if
    /// the whole stream were pre-roll). For soak and throughput tests (`send --unpaced`).
    pub unpaced: bool,
}

impl ServerConfig {
    /// Defaults for `path`: 10 ms frames, 50 ms pre-roll, players dropped after 2 s stalled.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            input: None,
            codec: crate::feed::CodecConfig::Pcm,
            rate: None,
            broadcast: false,
            frame_ms: 10.0,
            looping: false,
            default_preroll: Duration::from_millis(50),
            max_preroll: Duration::from_secs(5),
            write_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            max_datagram: 1400,
            silence_timeout: Duration::from_secs(5),
            key: None,
            unpaced: false,
        }
    }
}

/// A bound sender, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: Listening,
    /// The largest `Audio` payload (RFCOMM: one message per RFCOMM frame); `None`: no limit.
    max_payload: Option<usize>,
    config: Arc<ServerConfig>,
    info: StreamInfo,
    /// The live stream, for `--input` and `--broadcast`.
    hub: Option<Arc<Hub>>,
    progress: Arc<Progress>,
}

/// What the server listens on.
#[derive(Debug)]
enum Listening {
    Tcp(TcpListener),
    Rfcomm(rfcomm::Listener),
    /// Nothing: players come through [`Server::serve`] only.
    Nothing,
}

impl Listening {
    /// A new player and its name, or `None` when none came (after a short wait).
    /// `send_buffer`: TCP's kernel send buffer, which bounds what a player that stops reading
    /// can cost (writes then block, time out, and that player alone is dropped).
    fn accept(&self, send_buffer: usize) -> std::io::Result<Option<(Box<dyn Conn>, String)>> {
        match self {
            Listening::Tcp(l) => match l.accept() {
                Ok((stream, peer)) => {
                    stream.set_nonblocking(false)?;
                    // The listener's receive timeout (Linux) is inherited: not for the player.
                    stream.set_read_timeout(None)?;
                    stream.set_nodelay(true)?;
                    socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer)?;
                    Ok(Some((Box::new(stream), peer.to_string())))
                }
                // Linux: `ACCEPT_WAIT` passed without a player (see `bind`).
                Err(e) if e.kind() == ErrorKind::WouldBlock && cfg!(target_os = "linux") => {
                    Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(10));
                    Ok(None)
                }
                Err(e) => Err(e),
            },
            Listening::Rfcomm(l) => Ok(l
                .accept(ACCEPT_WAIT)?
                .map(|(c, peer)| (Box::new(c) as Box<dyn Conn>, peer))),
            Listening::Nothing => {
                thread::sleep(ACCEPT_WAIT);
                Ok(None)
            }
        }
    }
}

/// Sample frames per `Audio` message for `frame_ms` at `rate`, checked against the protocol.
pub fn samples_per_frame(frame_ms: f64, rate: u32, bytes_per_frame: usize) -> Result<u32> {
    let bad = |reason: String| Error::FrameSize { frame_ms, reason };
    if !(0.1..=1000.0).contains(&frame_ms) {
        return Err(bad("out of range".into()));
    }
    let spf = (f64::from(rate) * frame_ms / 1000.0).round().max(1.0) as u64;
    let bytes = spf * bytes_per_frame as u64 + audiowire_protocol::message::AUDIO_HEADER_LEN as u64;
    if spf > u64::from(audiowire_protocol::message::MAX_SAMPLES_PER_FRAME)
        || bytes > DEFAULT_MAX_FRAME_LEN
    {
        return Err(bad(format!(
            "{spf} samples ({bytes} bytes), more than one message may carry"
        )));
    }
    Ok(spf as u32)
}

/// Resolves `addr` to its first socket address.
pub(crate) fn resolve(addr: &str) -> Result<SocketAddr> {
    let err = |error| Error::Listen {
        addr: addr.to_string(),
        error,
    };
    addr.to_socket_addrs()
        .map_err(err)?
        .next()
        .ok_or_else(|| err(std::io::Error::new(ErrorKind::NotFound, "no such address")))
}

/// Opens the file and describes the stream it makes, for `frame_ms` frames of at most
/// `max_payload` bytes of samples (`None`: no limit but the protocol's).
pub(crate) fn describe(config: &ServerConfig, max_payload: Option<usize>) -> Result<StreamInfo> {
    crate::feed::describe(config, max_payload)
}

fn bind(addr: &str) -> Result<TcpListener> {
    let err = |error| Error::Listen {
        addr: addr.to_string(),
        error,
    };
    let sa = resolve(addr)?;
    let socket = Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if sa.is_ipv6() {
        // [::] serves IPv4 players too, where the system allows it.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&sa.into()).map_err(err)?;
    socket.listen(128).map_err(err)?;
    // On Linux a blocking accept honours the receive timeout: it returns as soon as a player
    // connects, or after `ACCEPT_WAIT` to check for a shutdown, so an idle sender wakes 10 times
    // a second, not 100. Elsewhere the listener does not block, and is polled every 10 ms.
    if cfg!(target_os = "linux") {
        socket.set_read_timeout(Some(ACCEPT_WAIT)).map_err(err)?;
    } else {
        socket.set_nonblocking(true).map_err(err)?;
    }
    Ok(socket.into())
}

impl Server {
    /// Checks the file and binds `addr` (`HOST:PORT`; port 0 picks a free one).
    pub fn bind(addr: &str, config: ServerConfig) -> Result<Self> {
        let progress = Arc::new(Progress::default());
        let (info, hub) = if config.input.is_some() || config.broadcast {
            let hub = Hub::prepare(&config, None, Arc::clone(&progress))?;
            (hub.stream_info(), Some(hub))
        } else {
            (describe(&config, None)?, None)
        };
        let listener = Listening::Tcp(bind(addr)?);
        Ok(Self {
            listener,
            max_payload: None,
            config: Arc::new(config),
            info,
            hub,
            progress,
        })
    }

    /// Checks the file and listens on Bluetooth RFCOMM at `addr` (`ADAPTER_MAC:CHANNEL`,
    /// `any:CHANNEL` or `CHANNEL`). Every `Audio` message fits one RFCOMM frame.
    pub fn bind_rfcomm(addr: &str, config: ServerConfig) -> Result<Self> {
        let at = rfcomm::Addr::parse_listen(addr)?;
        let mut server = Self::rfcomm_sized(config)?;
        server.listener = Listening::Rfcomm(rfcomm::Listener::bind(at)?);
        Ok(server)
    }

    /// A server that listens nowhere and makes its frames as on RFCOMM: players come through
    /// [`Server::serve`] (the tests run the RFCOMM stream code over a throttled socketpair).
    pub fn rfcomm_sized(config: ServerConfig) -> Result<Self> {
        let payload = rfcomm::MAX_MESSAGE.saturating_sub(
            audiowire_protocol::frame::HEADER_LEN + audiowire_protocol::message::AUDIO_HEADER_LEN,
        );
        let progress = Arc::new(Progress::default());
        let (info, hub) = if config.input.is_some() || config.broadcast {
            let hub = Hub::prepare(&config, Some(payload), Arc::clone(&progress))?;
            (hub.stream_info(), Some(hub))
        } else {
            (describe(&config, Some(payload))?, None)
        };
        Ok(Self {
            listener: Listening::Nothing,
            max_payload: Some(payload),
            config: Arc::new(config),
            info,
            hub,
            progress,
        })
    }

    /// Where it listens, as the user would write it (`127.0.0.1:7878`, `any:3`).
    pub fn local_name(&self) -> String {
        match &self.listener {
            Listening::Tcp(_) => self.local_addr().to_string(),
            Listening::Rfcomm(l) => l.local().to_string(),
            Listening::Nothing => "nowhere".into(),
        }
    }

    /// Serves one player on an already connected stream, as if it had been accepted (tests
    /// run the stream code over a socketpair this way); returns the sample frames sent.
    pub fn serve(&self, stream: Box<dyn Conn>, shutdown: &AtomicBool) -> Result<u64> {
        serve_player(
            stream,
            &self.config,
            self.info,
            self.hub.as_ref(),
            &self.progress,
            shutdown,
            self.max_payload,
        )
    }

    /// Players being served and the furthest position reached, for a progress line.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        let none = SocketAddr::from(([0, 0, 0, 0], 0));
        match &self.listener {
            Listening::Tcp(l) => l.local_addr().unwrap_or(none),
            Listening::Rfcomm(_) | Listening::Nothing => none,
        }
    }

    /// What every player is told in `StreamInfo`.
    pub fn stream_info(&self) -> StreamInfo {
        self.info
    }

    /// Accepts players until `shutdown` is set, then ends every stream and returns.
    pub fn run(&self, shutdown: &Arc<AtomicBool>) -> Result<()> {
        let active = Arc::new(AtomicUsize::new(0));
        let mut threads: Vec<thread::JoinHandle<()>> = Vec::new();
        let producer = self.hub.as_ref().map(|h| h.start(shutdown)).transpose()?;
        while !shutdown.load(Ordering::Relaxed) {
            // A broadcast that ended (its file did) ends the server.
            if producer.as_ref().is_some_and(|p| p.is_finished()) {
                break;
            }
            // About a second of audio queued in the kernel (at least 256 KiB).
            let bytes_per_sec = self.info.sample_rate as usize * self.info.bytes_per_frame();
            match self.listener.accept(bytes_per_sec.max(256 * 1024)) {
                Ok(None) => {}
                Ok(Some((stream, peer))) => {
                    let config = Arc::clone(&self.config);
                    let info = self.info;
                    let hub = self.hub.clone();
                    let progress = Arc::clone(&self.progress);
                    let shutdown = Arc::clone(shutdown);
                    let n = active.fetch_add(1, Ordering::Relaxed) + 1;
                    let player_active = Arc::clone(&active);
                    let max_payload = self.max_payload;
                    let name = peer.clone();
                    info!("player {peer} connected ({n} connected)");
                    let spawned =
                        thread::Builder::new()
                            .name(format!("player {peer}"))
                            .spawn(move || {
                                match serve_player(
                                    stream,
                                    &config,
                                    info,
                                    hub.as_ref(),
                                    &progress,
                                    &shutdown,
                                    max_payload,
                                ) {
                                    Ok(sent) => info!(
                                        "player {peer} finished: {:.2} s sent",
                                        sent as f64 / f64::from(info.sample_rate)
                                    ),
                                    Err(e) => warn!("player {peer} dropped: {e}"),
                                }
                                player_active.fetch_sub(1, Ordering::Relaxed);
                            });
                    match spawned {
                        Ok(t) => threads.push(t),
                        Err(e) => {
                            active.fetch_sub(1, Ordering::Relaxed);
                            warn!("player {name} refused: cannot start a thread: {e}");
                        }
                    }
                    threads.retain(|t| !t.is_finished());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        for t in threads {
            let _ = t.join();
        }
        if let Some(p) = producer {
            let _ = p.join();
        }
        // A live input that failed ends the sender with its error.
        match self.hub.as_ref().and_then(|h| h.take_failure()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// What the reader of a streaming player passes on: a probe with its arrival time, or why the
/// player's bytes are not the protocol (the player is then dropped).
type Probe = std::result::Result<(Message, u64), String>;

/// Reads what a streaming player sends (until `stop`, the player's end of file, or an error) and
/// passes its probes (`Ping`, `Echo`) on with their arrival time; bytes that are not the protocol
/// (a bad length, a bad envelope) are passed on as an error, and reading stops. Other valid
/// messages are ignored. Bounded: wakes every 100 ms.
fn read_probes(stream: &mut dyn Conn, stop: &AtomicBool, probes: &mpsc::Sender<Probe>) {
    if stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .is_err()
    {
        return;
    }
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => return,
        };
        let received = unix_micros();
        let mut input = &buf[..n];
        while !input.is_empty() {
            let used = match decoder.push(input) {
                Ok(used) => used,
                Err(e) => {
                    let _ = probes.send(Err(e.to_string()));
                    return;
                }
            };
            input = &input[used..];
            let Some(frame) = decoder.next_frame() else {
                continue;
            };
            let msg = match Message::decode(frame) {
                Ok(msg) => msg,
                Err(e) => {
                    let _ = probes.send(Err(e.to_string()));
                    return;
                }
            };
            if matches!(msg, Message::Ping { .. } | Message::Echo { .. })
                && probes.send(Ok((msg, received))).is_err()
            {
                return;
            }
        }
    }
}

/// How one player's stream goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan<'a> {
    /// Audio sent at once before pacing in real time.
    pub preroll: Duration,
    /// Start again at the end of the file.
    pub looping: bool,
    /// Where to start.
    pub resume: Resume,
    /// With a pre-shared key: the session's cipher, which seals every `Audio` payload.
    pub cipher: Option<&'a Cipher>,
}

/// Where a player asks to start: from the beginning, or, after a dropped connection, right
/// after the last frame it has (Hello options `start-sequence` and `start-position`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resume {
    /// The first sequence number to send.
    pub sequence: u64,
    /// The first sample frame to send.
    pub position: u64,
}

impl Resume {
    /// What a player's `Hello` asks for.
    pub fn of(hello: &audiowire_protocol::Hello) -> Self {
        let num = |key| hello.option(key).and_then(|v| v.parse().ok()).unwrap_or(0);
        Self {
            sequence: num(option::START_SEQUENCE),
            position: num(option::START_POSITION),
        }
    }
}

/// The nonce a player sent, if it uses a key.
pub(crate) fn key_nonce(hello: &audiowire_protocol::Hello) -> Option<[u8; 16]> {
    hello.option(option::NONCE).and_then(from_hex::<16>)
}

/// An `Error` message refusing a player.
pub(crate) fn refusal(text: &str) -> Message {
    Message::Error {
        code: ErrorCode::Unauthorized,
        text: text.to_string(),
    }
}

/// 64 random bits from the system.
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // The system's generator does not fail on Linux; fall back to the time if it ever does.
    if getrandom::fill(&mut b).is_err() {
        return unix_micros().wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    u64::from_be_bytes(b)
}

/// The pre-roll a player asked for, within the configured maximum. Unpaced, everything is
/// pre-roll: the pacer's deadlines are all zero.
pub(crate) fn preroll_of(hello: &audiowire_protocol::Hello, config: &ServerConfig) -> Duration {
    if config.unpaced {
        return Duration::MAX;
    }
    hello
        .option(option::PREROLL_MS)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(config.default_preroll, Duration::from_millis)
        .min(config.max_preroll)
}

/// Reads the player's `Hello`, bounded by the handshake timeout. Bytes that are not the protocol,
/// or another message than `Hello` (or a probe), are refused: the player is told why in an `Error`
/// (code 2, best effort) and the error is returned, for the log.
fn read_hello(stream: &mut dyn Conn, timeout: Duration) -> Result<audiowire_protocol::Hello> {
    let result = receive_hello(stream, timeout);
    if let Err(e) = &result {
        let bad = match e {
            Error::Protocol(_) => true,
            Error::Io(io) => io.kind() == ErrorKind::InvalidData,
            _ => false,
        };
        if bad {
            let text = e.to_string();
            let code = ErrorCode::BadMessage;
            let _ = send(stream, &Message::Error { code, text }, &mut Vec::new());
        }
    }
    result
}

fn receive_hello(stream: &mut dyn Conn, timeout: Duration) -> Result<audiowire_protocol::Hello> {
    let deadline = Instant::now() + timeout;
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Io(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("no Hello within {} s", timeout.as_secs_f64()),
            )));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                return Err(Error::Io(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    if decoder.is_idle() {
                        "closed before sending Hello"
                    } else {
                        "closed in the middle of a frame, before sending Hello"
                    },
                )));
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let mut input = &buf[..n];
        while !input.is_empty() {
            let used = decoder.push(input)?;
            input = &input[used..];
            if let Some(frame) = decoder.next_frame() {
                let received = unix_micros();
                let msg = Message::decode(frame)?;
                if let Message::Hello(h) = msg {
                    return Ok(h);
                }
                // Every audiowire server answers Echo and Ping, so a client can check it.
                let Some(reply) = answer_probe(&msg, received, unix_micros()) else {
                    return Err(Error::Io(std::io::Error::new(
                        ErrorKind::InvalidData,
                        format!("expected Hello, got {}", msg.name()),
                    )));
                };
                let mut out = Vec::new();
                reply.encode_frame(&mut out)?;
                stream.write_all(&out)?;
            }
        }
    }
}

fn send(stream: &mut dyn Conn, msg: &Message, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    msg.encode_frame(out)?;
    stream.write_all(out)?;
    Ok(())
}

/// Streams `source` as framed `Audio` messages through `send`, paced from absolute deadlines
/// with `preroll` sent at once, until the file ends (or, `looping`, forever) or `stop()` says
/// so. Returns the position reached, for the `End` message. Errors from `send` come back as
/// [`Error::Io`]; errors reading the file as the source's error.
pub(crate) fn stream_file(
    source: &mut Frames,
    info: StreamInfo,
    plan: &Plan<'_>,
    send: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    stop: &dyn Fn() -> bool,
    out: &mut Vec<u8>,
) -> Result<u64> {
    let Plan {
        preroll,
        looping,
        resume,
        cipher,
    } = *plan;
    // A live stream comes as it is made; a file is paced here.
    let source = match source {
        Frames::Live(sub) => return sub.stream(cipher, send, stop, out),
        Frames::File(f) => f,
    };
    // A resuming player continues where it was: the file from that position (modulo its
    // length when looping), the numbering from its next sequence number, paced afresh.
    let total = source.total_frames();
    let from = if looping && total > 0 {
        resume.position % total
    } else {
        resume.position
    };
    if from > 0 {
        source.seek(from)?;
    }
    let base = resume.position;
    // Pieces of one asked-for frame (cut to fit a datagram) go out together: one wake-up each.
    let pacer = Pacer::new(info.sample_rate, preroll).grouped(source.pacing_group());
    let start = Instant::now();
    let start_us = unix_micros();
    let mut position = resume.position;
    let mut sequence = resume.sequence;
    let mut audio = Audio {
        sequence: 0,
        position: 0,
        timestamp_us: 0,
        payload: Vec::with_capacity(info.samples_per_frame as usize * info.bytes_per_frame()),
    };
    loop {
        // Wait for this frame's deadline in slices, so a stop is noticed promptly.
        loop {
            if stop() {
                return Ok(position);
            }
            let wait = pacer.wait(position - base, start.elapsed());
            if wait.is_zero() {
                break;
            }
            thread::sleep(wait.min(SLEEP_SLICE));
        }
        audio.payload.clear();
        let read = source.read_frame(&mut audio.payload)?;
        if read == 0 {
            if looping && source.total_frames() > 0 {
                source.rewind()?;
                continue;
            }
            return Ok(position);
        }
        audio.sequence = sequence;
        audio.position = position;
        audio.timestamp_us = start_us + pacer.due(position - base).as_micros() as u64;
        if let Some(c) = cipher {
            c.seal(&mut audio);
        }
        out.clear();
        audio.encode_frame(out);
        send(out)?;
        sequence += 1;
        position += u64::from(read);
    }
}

pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Streams the file to one player; returns the sample frames sent.
fn serve_player(
    mut conn: Box<dyn Conn>,
    config: &ServerConfig,
    info: StreamInfo,
    hub: Option<&Arc<Hub>>,
    progress: &Arc<Progress>,
    shutdown: &AtomicBool,
    max_payload: Option<usize>,
) -> Result<u64> {
    let stream: &mut dyn Conn = conn.as_mut();
    stream.set_write_timeout(Some(config.write_timeout))?;
    let mut out = Vec::new();
    let mut hello = read_hello(stream, config.handshake_timeout)?;
    if hello.version != PROTOCOL_VERSION {
        let text = format!(
            "protocol version {} is not supported (this sender speaks {PROTOCOL_VERSION})",
            hello.version
        );
        let _ = send(
            stream,
            &Message::Error {
                code: ErrorCode::UnsupportedVersion,
                text: text.clone(),
            },
            &mut out,
        );
        return Err(Error::Io(std::io::Error::new(ErrorKind::InvalidData, text)));
    }
    // With a key: challenge, check the player's proof, prove ours. Without one: refuse a
    // player that expects one, so both ends say what is wrong.
    let cipher = match (&config.key, key_nonce(&hello)) {
        (None, None) => None,
        (None, Some(_)) => {
            let text = "this sender has no key: start it with the same --key as the player, \
                        or play without one"
                .to_string();
            let _ = send(stream, &refusal(&text), &mut out);
            return Err(Error::Refused(
                "the player uses a key and this sender has none".into(),
            ));
        }
        (Some(_), None) => {
            let text = "this sender requires a key: give the player the same --key".to_string();
            let _ = send(stream, &refusal(&text), &mut out);
            return Err(Error::Refused("the player has no key".into()));
        }
        (Some(key), Some(nonce)) => {
            let challenge = random_u64();
            send(stream, &Message::Cookie { cookie: challenge }, &mut out)?;
            hello = read_hello(stream, config.handshake_timeout)?;
            let proved = hello
                .option(option::PROOF)
                .and_then(from_hex::<32>)
                .is_some_and(|p| {
                    key_nonce(&hello) == Some(nonce) && key.verify_player(challenge, &nonce, &p)
                });
            if !proved {
                let text = "wrong key: the player's --key differs from this sender's".to_string();
                let _ = send(stream, &refusal(&text), &mut out);
                return Err(Error::Refused("wrong key".into()));
            }
            send(
                stream,
                &Message::Auth {
                    proof: key.sender_proof(challenge, &nonce),
                },
                &mut out,
            )?;
            Some(key.cipher(challenge, &nonce))
        }
    };
    let preroll = preroll_of(&hello, config);
    let mut feed = PlayerFeed::tcp(Arc::clone(progress));
    feed.max_payload = max_payload;
    let mut source = match Frames::open(config, info, hub, preroll, Resume::of(&hello), &feed) {
        Ok(s) => s,
        Err(e) => {
            let _ = send(
                stream,
                &Message::Error {
                    code: ErrorCode::SourceFailed,
                    text: e.to_string(),
                },
                &mut out,
            );
            return Err(e);
        }
    };
    send(stream, &Message::StreamInfo(info), &mut out)?;

    // The player may probe during the stream (Ping for the clock offset, Echo): a reader thread
    // answers through this thread, between audio frames, so only one thread writes.
    let (probes, answers) = mpsc::channel::<Probe>();
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let mut rd = stream.try_clone_conn()?;
        let stop = Arc::clone(&reader_stop);
        thread::Builder::new()
            .name("player probes".into())
            .spawn(move || read_probes(rd.as_mut(), &stop, &probes))?
    };
    let mut frame = Vec::new();
    let stop = || shutdown.load(Ordering::Relaxed);
    let plan = Plan {
        preroll,
        looping: config.looping,
        resume: Resume::of(&hello),
        cipher: cipher.as_ref(),
    };
    let result = stream_file(
        &mut source,
        info,
        &plan,
        &mut |bytes| {
            for probe in answers.try_iter() {
                let (probe, received) =
                    probe.map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
                if let Some(reply) = answer_probe(&probe, received, unix_micros()) {
                    let mut out = Vec::new();
                    if reply.encode_frame(&mut out).is_ok() {
                        stream.write_all(&out)?;
                    }
                }
            }
            stream.write_all(bytes)
        },
        &stop,
        &mut frame,
    );
    // End goes out at once; then the reader is stopped (it may take its 100 ms timeout).
    if let Ok(position) = result {
        send(stream, &Message::End { position }, &mut out)?;
    }
    reader_stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let position = match result {
        Ok(p) => p,
        Err(Error::Io(e)) => return Err(Error::Io(e)),
        Err(e) => {
            let _ = send(
                stream,
                &Message::Error {
                    code: ErrorCode::SourceFailed,
                    text: e.to_string(),
                },
                &mut out,
            );
            return Err(e);
        }
    };
    // Half-close and wait for the player to hang up, so the last bytes are not lost to a reset.
    stream.shutdown_write()?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut sink = [0u8; 1024];
    for _ in 0..64 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(position)
}
