//! The UDP server: one socket, one pacing thread per player, frames one per datagram.
//!
//! A player subscribes with `Hello`. The sender answers a `Hello` without a valid cookie with a
//! `Cookie` (a keyed hash of the player's address and a 30 s time bucket, so the sender keeps no
//! state for strangers), and never with more than 3× the bytes it received: a spoofed source
//! address gets nothing but a small cookie it never sees. Only a `Hello` that echoes a valid
//! cookie starts a stream. Players report about twice a second; one silent for
//! `silence_timeout` (5 s by default), or that says `Bye`, is dropped. Each player is served
//! from the start of the file on its own thread, so none waits for another.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use audiowire_protocol::clock::answer_probe;
use audiowire_protocol::message::{AUDIO_HEADER_LEN, ErrorCode, option};
use audiowire_protocol::{HEADER_LEN, Message, PROTOCOL_VERSION, Report, StreamInfo};
use tracing::{debug, info, warn};

use crate::broadcast::Hub;
use crate::error::{Error, Result};
use crate::feed::{Frames, PlayerFeed, Progress};
use crate::server::{
    Plan, Resume, ServerConfig, describe, key_nonce, preroll_of, refusal, resolve, stream_file,
};
use audiowire_protocol::auth::from_hex;

/// How long a cookie's time bucket lasts; a cookie is valid in its bucket and the next.
const COOKIE_BUCKET: Duration = Duration::from_secs(30);
/// Longest the server waits for a datagram before it checks for a shutdown, an ended broadcast
/// and silent players. A datagram (a `Hello`, a report) is handled as soon as it comes; this
/// only bounds how late those checks are, and how often an idle sender wakes (10 times a
/// second).
const RECEIVE_WAIT: Duration = Duration::from_millis(100);

/// Counters of what the server refused.
#[derive(Debug, Default)]
pub struct UdpCounters {
    /// Datagrams that were not valid frames or messages.
    pub malformed: AtomicU64,
    /// `Hello`s with a cookie that did not match the sender's address.
    pub bad_cookies: AtomicU64,
    /// Cookies sent.
    pub cookies_sent: AtomicU64,
}

struct Player {
    stop: Arc<AtomicBool>,
    last_seen: Instant,
    report: Option<Report>,
    thread: thread::JoinHandle<()>,
    /// The share of frames this player lost lately (smoothed over its reports).
    loss: f64,
    /// That loss in percent, for the Opus encoder's FEC.
    loss_hint: Arc<AtomicU32>,
}

/// Smoothing of the loss the players report: each report's share weighs this much.
const LOSS_WEIGHT: f64 = 0.3;

/// A bound UDP sender, ready to [`UdpServer::run`].
#[derive(Debug)]
pub struct UdpServer {
    socket: Arc<UdpSocket>,
    config: Arc<ServerConfig>,
    info: StreamInfo,
    /// The live stream, for `--input` and `--broadcast`.
    hub: Option<Arc<Hub>>,
    progress: Arc<Progress>,
    /// The largest `Audio` payload a datagram holds.
    payload: usize,
    secret: RandomState,
    epoch: Instant,
    counters: Arc<UdpCounters>,
}

/// Decodes one datagram: a frame header that matches the datagram's size, then a message.
pub fn decode_datagram(d: &[u8]) -> Option<Message> {
    if d.len() < HEADER_LEN {
        return None;
    }
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&d[..HEADER_LEN]);
    if u64::from_be_bytes(head) != (d.len() - HEADER_LEN) as u64 {
        return None;
    }
    Message::decode(&d[HEADER_LEN..]).ok()
}

/// Why [`decode_datagram`] refuses `d`, in words for the log.
pub fn datagram_error(d: &[u8]) -> String {
    if d.len() < HEADER_LEN {
        return format!("{} bytes, shorter than a frame header", d.len());
    }
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&d[..HEADER_LEN]);
    let declared = u64::from_be_bytes(head);
    let follow = d.len() - HEADER_LEN;
    if declared != follow as u64 {
        return format!("its header declares {declared} bytes but {follow} follow");
    }
    match Message::decode(&d[HEADER_LEN..]) {
        Ok(m) => format!("a valid {}", m.name()),
        Err(e) => e.to_string(),
    }
}

fn framed(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = msg.encode_frame(&mut out);
    out
}

impl UdpServer {
    /// Checks the file, sizes frames to fit `config.max_datagram`, and binds `addr`.
    pub fn bind(addr: &str, config: ServerConfig) -> Result<Self> {
        let payload = config
            .max_datagram
            .saturating_sub(HEADER_LEN + AUDIO_HEADER_LEN);
        let progress = Arc::new(Progress::default());
        let (info, hub) = if config.input.is_some() || config.broadcast {
            let hub = Hub::prepare(&config, Some(payload), Arc::clone(&progress))?;
            (hub.stream_info(), Some(hub))
        } else {
            (describe(&config, Some(payload))?, None)
        };
        let sa = resolve(addr)?;
        let socket = UdpSocket::bind(sa).map_err(|error| Error::Listen {
            addr: addr.to_string(),
            error,
        })?;
        socket.set_read_timeout(Some(RECEIVE_WAIT))?;
        Ok(Self {
            socket: Arc::new(socket),
            config: Arc::new(config),
            info,
            hub,
            progress,
            payload,
            secret: RandomState::new(),
            epoch: Instant::now(),
            counters: Arc::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// What every player is told in `StreamInfo`.
    pub fn stream_info(&self) -> StreamInfo {
        self.info
    }

    /// Players being served and the furthest position reached, for a progress line.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// What the server refused so far.
    pub fn counters(&self) -> Arc<UdpCounters> {
        Arc::clone(&self.counters)
    }

    fn bucket(&self) -> u64 {
        self.epoch.elapsed().as_secs() / COOKIE_BUCKET.as_secs()
    }

    fn cookie(&self, addr: SocketAddr, bucket: u64) -> u64 {
        self.secret.hash_one((addr, bucket))
    }

    fn cookie_ok(&self, addr: SocketAddr, value: &str) -> bool {
        let Ok(c) = u64::from_str_radix(value, 16) else {
            return false;
        };
        let b = self.bucket();
        c == self.cookie(addr, b) || b > 0 && c == self.cookie(addr, b - 1)
    }

    fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, to) {
            debug!("send to {to} failed: {e}");
        }
    }

    /// Serves players until `shutdown` is set, then ends every stream and returns.
    pub fn run(&self, shutdown: &Arc<AtomicBool>) -> Result<()> {
        let mut players: HashMap<SocketAddr, Player> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        let producer = self.hub.as_ref().map(|h| h.start(shutdown)).transpose()?;
        while !shutdown.load(Ordering::Relaxed) {
            // A broadcast that ended (its file did) ends the server.
            if producer.as_ref().is_some_and(|p| p.is_finished()) {
                break;
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => self.handle(&buf[..n], from, &mut players, shutdown),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock
                            | ErrorKind::TimedOut
                            | ErrorKind::Interrupted
                            | ErrorKind::ConnectionRefused
                            | ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    warn!("receive failed: {e}");
                    thread::sleep(Duration::from_millis(20));
                }
            }
            let timeout = self.config.silence_timeout;
            players.retain(|addr, p| {
                if p.thread.is_finished() {
                    return false;
                }
                if p.last_seen.elapsed() > timeout {
                    warn!(
                        "player {addr} dropped: silent for {} s",
                        timeout.as_secs_f64()
                    );
                    p.stop.store(true, Ordering::Relaxed);
                    return false;
                }
                true
            });
            // One encoder for everyone: its FEC covers the worst loss any player reports.
            if let Some(hub) = &self.hub {
                let worst = players
                    .values()
                    .map(|p| p.loss_hint.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0);
                hub.loss_hint().store(worst, Ordering::Relaxed);
            }
        }
        for p in players.values() {
            p.stop.store(true, Ordering::Relaxed);
        }
        for (_, p) in players {
            let _ = p.thread.join();
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

    fn handle(
        &self,
        d: &[u8],
        from: SocketAddr,
        players: &mut HashMap<SocketAddr, Player>,
        shutdown: &Arc<AtomicBool>,
    ) {
        let Some(msg) = decode_datagram(d) else {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            // Debug only: a flood of junk must not flood the log.
            debug!("datagram from {from} dropped: {}", datagram_error(d));
            return;
        };
        match msg {
            Message::Hello(hello) => {
                let valid = hello
                    .option(option::COOKIE)
                    .is_some_and(|c| self.cookie_ok(from, c));
                if !valid {
                    if hello.option(option::COOKIE).is_some() {
                        self.counters.bad_cookies.fetch_add(1, Ordering::Relaxed);
                    }
                    // Return routability: answer with a cookie, never more than 3× what came in.
                    let reply = framed(&Message::Cookie {
                        cookie: self.cookie(from, self.bucket()),
                    });
                    if reply.len() <= 3 * d.len() {
                        self.counters.cookies_sent.fetch_add(1, Ordering::Relaxed);
                        self.send_to(&reply, from);
                    }
                    return;
                }
                if hello.version != PROTOCOL_VERSION {
                    self.send_to(
                        &framed(&Message::Error {
                            code: ErrorCode::UnsupportedVersion,
                            text: format!(
                                "protocol version {} is not supported (this sender speaks {PROTOCOL_VERSION})",
                                hello.version
                            ),
                        }),
                        from,
                    );
                    return;
                }
                // With a key the cookie is also the challenge: the Hello must carry the proof.
                let cookie = hello
                    .option(option::COOKIE)
                    .and_then(|c| u64::from_str_radix(c, 16).ok())
                    .unwrap_or(0);
                let keyed = match (&self.config.key, key_nonce(&hello)) {
                    (None, None) => None,
                    (None, Some(_)) => {
                        self.send_to(
                            &framed(&refusal(
                                "this sender has no key: start it with the same --key as the player, or play without one",
                            )),
                            from,
                        );
                        return;
                    }
                    (Some(_), None) => {
                        self.send_to(
                            &framed(&refusal(
                                "this sender requires a key: give the player the same --key",
                            )),
                            from,
                        );
                        return;
                    }
                    (Some(key), Some(nonce)) => {
                        let proved = hello
                            .option(option::PROOF)
                            .and_then(from_hex::<32>)
                            .is_some_and(|p| key.verify_player(cookie, &nonce, &p));
                        if !proved {
                            warn!("player {from} refused: wrong key");
                            self.send_to(
                                &framed(&refusal(
                                    "wrong key: the player's --key differs from this sender's",
                                )),
                                from,
                            );
                            return;
                        }
                        Some((key.sender_proof(cookie, &nonce), key.cipher(cookie, &nonce)))
                    }
                };
                if let Some(p) = players.get_mut(&from) {
                    // The player did not get its StreamInfo yet: send it again.
                    p.last_seen = Instant::now();
                    if let Some((proof, _)) = &keyed {
                        self.send_to(&framed(&Message::Auth { proof: *proof }), from);
                    }
                    self.send_to(&framed(&Message::StreamInfo(self.info)), from);
                    return;
                }
                let preroll = preroll_of(&hello, &self.config);
                let resume = Resume::of(&hello);
                let stop = Arc::new(AtomicBool::new(false));
                let socket = Arc::clone(&self.socket);
                let config = Arc::clone(&self.config);
                let info = self.info;
                let hub = self.hub.clone();
                let loss_hint = Arc::new(AtomicU32::new(0));
                let feed = PlayerFeed {
                    fec: true,
                    loss_hint: Arc::clone(&loss_hint),
                    max_payload: Some(self.payload),
                    progress: Arc::clone(&self.progress),
                };
                let (stop2, shutdown2) = (Arc::clone(&stop), Arc::clone(shutdown));
                info!(
                    "player {from} subscribed over UDP ({} playing)",
                    players.len() + 1
                );
                let spawned = thread::Builder::new()
                    .name(format!("udp player {from}"))
                    .spawn(move || {
                        let stopped =
                            || stop2.load(Ordering::Relaxed) || shutdown2.load(Ordering::Relaxed);
                        let plan = Plan {
                            preroll,
                            looping: config.looping,
                            resume,
                            cipher: keyed.as_ref().map(|(_, c)| c),
                        };
                        let proof = keyed.as_ref().map(|(p, _)| *p);
                        match serve(
                            &socket,
                            from,
                            &config,
                            info,
                            &plan,
                            proof,
                            hub.as_ref(),
                            &feed,
                            &stopped,
                        ) {
                            Ok(sent) => info!(
                                "player {from} finished: {:.2} s sent",
                                sent as f64 / f64::from(info.sample_rate)
                            ),
                            Err(e) => warn!("player {from} dropped: {e}"),
                        }
                    });
                match spawned {
                    Ok(thread) => {
                        players.insert(
                            from,
                            Player {
                                stop,
                                last_seen: Instant::now(),
                                report: None,
                                thread,
                                loss: 0.0,
                                loss_hint,
                            },
                        );
                    }
                    Err(e) => warn!("player {from} refused: cannot start a thread: {e}"),
                }
            }
            Message::Report(r) => {
                if let Some(p) = players.get_mut(&from) {
                    p.last_seen = Instant::now();
                    if p.report
                        .is_none_or(|old| old.lost != r.lost || old.late != r.late)
                    {
                        debug!(
                            "player {from}: {} received, {} lost, {} late, jitter {:.1} ms, buffer {:.1} ms",
                            r.received,
                            r.lost,
                            r.late,
                            f64::from(r.jitter_us) / 1e3,
                            f64::from(r.level_us) / 1e3
                        );
                    }
                    // The share of frames lost since the last report, smoothed, steers FEC.
                    let (lost, got) = match p.report {
                        Some(old) => (
                            r.lost.saturating_sub(old.lost),
                            r.received.saturating_sub(old.received),
                        ),
                        None => (r.lost, r.received),
                    };
                    if lost + got > 0 {
                        let share = lost as f64 / (lost + got) as f64;
                        p.loss += LOSS_WEIGHT * (share - p.loss);
                        let hint = (p.loss * 100.0).ceil().clamp(0.0, 100.0) as u32;
                        p.loss_hint.store(hint, Ordering::Relaxed);
                    }
                    p.report = Some(r);
                }
            }
            Message::Echo { .. } | Message::Ping { .. } => {
                // Probes are answered statelessly, and never with more than 3× what came in.
                let received = crate::server::unix_micros();
                if let Some(reply) = answer_probe(&msg, received, crate::server::unix_micros()) {
                    let reply = framed(&reply);
                    if reply.len() <= 3 * d.len() {
                        self.send_to(&reply, from);
                    }
                }
            }
            Message::Bye => {
                if let Some(p) = players.remove(&from) {
                    p.stop.store(true, Ordering::Relaxed);
                    info!("player {from} said bye");
                }
            }
            other => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                debug!("unexpected {} from {from}, ignored", other.name());
            }
        }
    }
}

/// A datagram's send: a full socket buffer or an ICMP error only loses that datagram, as the
/// network may.
fn lossy(sent: std::io::Result<usize>) -> std::io::Result<()> {
    match sent {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

/// Streams the file to one UDP player: `StreamInfo`, the frames, then `End` three times (a lost
/// `End` is also covered by the player's silence timeout).
#[allow(
    clippy::too_many_arguments,
    reason = "the one call site passes what it parsed"
)]
fn serve(
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    config: &ServerConfig,
    info: StreamInfo,
    plan: &Plan<'_>,
    proof: Option<[u8; 32]>,
    hub: Option<&Arc<Hub>>,
    feed: &PlayerFeed,
    stopped: &dyn Fn() -> bool,
) -> Result<u64> {
    let mut source = Frames::open(config, info, hub, plan.preroll, plan.resume, feed)?;
    if let Some(proof) = proof {
        socket.send_to(&framed(&Message::Auth { proof }), to)?;
    }
    socket.send_to(&framed(&Message::StreamInfo(info)), to)?;
    let position = match &mut source {
        // Live: the producer sends each frame itself, as soon as it is made.
        Frames::Live(sub) => {
            let socket = Arc::clone(socket);
            let sink = Box::new(move |bytes: &[u8]| lossy(socket.send_to(bytes, to)));
            sub.stream_direct(sink, plan.cipher.cloned(), stopped)?
        }
        Frames::File(_) => stream_file(
            &mut source,
            info,
            plan,
            &mut |bytes| lossy(socket.send_to(bytes, to)),
            stopped,
            &mut Vec::new(),
        )?,
    };
    let end = framed(&Message::End { position });
    for _ in 0..3 {
        let _ = socket.send_to(&end, to);
    }
    Ok(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_bound_to_the_address() {
        let (_dir, path) = crate::testwav::scratch("audiowire-udp-", "a.wav");
        crate::testwav::write_s16(&path, 48_000, 2, std::iter::repeat_n(0, 960));
        let s = UdpServer::bind("127.0.0.1:0", ServerConfig::new(&path)).unwrap();
        // 48 kHz stereo s16 in 1400-byte datagrams: 341 sample frames (7.1 ms) per frame.
        assert_eq!(s.stream_info().samples_per_frame, 341);
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let c = format!("{:016x}", s.cookie(a, s.bucket()));
        assert!(s.cookie_ok(a, &c));
        assert!(!s.cookie_ok(b, &c));
        assert!(!s.cookie_ok(a, "not hex"));
    }
}
