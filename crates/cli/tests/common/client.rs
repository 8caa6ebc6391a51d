//! A lightweight in-process player for load and bad-input tests: it speaks the protocol with
//! `audiowire-protocol` (TCP, or UDP with the cookie handshake), checks every `Audio` frame
//! bit for bit against the source file, and models a player's playout to count underruns, so
//! hundreds of players fit in one test process on 2 cores where hundreds of `audiowire play`
//! processes would not. Every wait is bounded.
//!
//! The playout model: playback starts once `target` of audio has arrived (as a real player fills
//! its buffer to its target latency), then consumes samples in real time. A frame that arrives
//! after the instant its first sample is due to play is an underrun. `min_slack` is how early the
//! latest frame still was.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audiowire_protocol::message::option;
use audiowire_protocol::{
    FrameDecoder, HEADER_LEN, Hello, Message, PROTOCOL_VERSION, Report, StreamInfo,
};

/// The source a player should receive: its wire bytes (the WAV data chunk, which for PCM is
/// exactly what `Audio` carries) and the stream's shape.
#[derive(Debug, Clone)]
pub struct Source {
    /// The data chunk's bytes.
    pub bytes: Arc<Vec<u8>>,
    /// Sample frames per second.
    pub rate: u32,
    /// Bytes per sample frame (all channels).
    pub bytes_per_frame: usize,
}

impl Source {
    /// Reads a PCM WAV file's data chunk.
    pub fn wav(path: &Path) -> Source {
        let file = std::fs::read(path).unwrap();
        assert_eq!(&file[..4], b"RIFF", "{} is not RIFF", path.display());
        let mut at = 12;
        let (mut rate, mut bpf, mut data) = (0, 0, None);
        while at + 8 <= file.len() {
            let id = &file[at..at + 4];
            let len = u32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()) as usize;
            let body = &file[at + 8..(at + 8 + len).min(file.len())];
            match id {
                b"fmt " => {
                    rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                    bpf = usize::from(u16::from_le_bytes(body[12..14].try_into().unwrap()));
                }
                b"data" => data = Some(body.to_vec()),
                _ => {}
            }
            at += 8 + len + len % 2;
        }
        Source {
            bytes: Arc::new(data.expect("a data chunk")),
            rate,
            bytes_per_frame: bpf,
        }
    }

    /// Length in sample frames.
    pub fn frames(&self) -> u64 {
        (self.bytes.len() / self.bytes_per_frame) as u64
    }

    /// True when `payload` is the source's audio from sample frame `position` on.
    fn matches(&self, position: u64, payload: &[u8]) -> bool {
        let start = position as usize * self.bytes_per_frame;
        self.bytes.get(start..start + payload.len()) == Some(payload)
    }
}

/// What one in-process player saw.
#[derive(Debug, Clone, Default)]
pub struct Played {
    /// The stream as announced.
    pub info: Option<StreamInfo>,
    /// `Audio` messages received (distinct ones, on UDP).
    pub messages: u64,
    /// Sample frames received (distinct, on UDP).
    pub frames: u64,
    /// The `End` position, if `End` arrived.
    pub end: Option<u64>,
    /// Frames that arrived after their first sample was due to play.
    pub underruns: u64,
    /// How early the latest frame still arrived (negative: late).
    pub min_slack: Option<Duration>,
    /// The most any frame was late.
    pub max_late: Duration,
    /// When the first late frame arrived, counted from the player's start.
    pub first_late: Option<Duration>,
    /// UDP: frames never received before `End`.
    pub lost: u64,
    /// UDP: frames received twice.
    pub duplicated: u64,
}

/// The playout model (see the module doc).
struct Playout {
    began: Instant,
    rate: u32,
    target_frames: u64,
    buffered: u64,
    start: Option<Instant>,
}

impl Playout {
    fn new(rate: u32, target: Duration) -> Self {
        Self {
            began: Instant::now(),
            rate,
            target_frames: (target.as_secs_f64() * f64::from(rate)).ceil() as u64,
            buffered: 0,
            start: None,
        }
    }

    fn arrive(&mut self, position: u64, frames: u64, at: Instant, played: &mut Played) {
        let Some(start) = self.start else {
            self.buffered += frames;
            if self.buffered >= self.target_frames {
                self.start = Some(at);
            }
            return;
        };
        let due = start + Duration::from_secs_f64(position as f64 / f64::from(self.rate));
        if at > due {
            played.underruns += 1;
            played.max_late = played.max_late.max(at - due);
            played.first_late.get_or_insert(at - self.began);
            played.min_slack = Some(Duration::ZERO);
        } else {
            let slack = due - at;
            played.min_slack = Some(played.min_slack.map_or(slack, |s| s.min(slack)));
        }
    }
}

/// A framed `Hello` asking for `preroll_ms`, with a cookie on UDP.
pub fn hello(client: &str, preroll_ms: u64, cookie: Option<u64>) -> Vec<u8> {
    let mut options = vec![(option::PREROLL_MS.to_string(), preroll_ms.to_string())];
    if let Some(c) = cookie {
        options.push((option::COOKIE.to_string(), format!("{c:016x}")));
    }
    let mut out = Vec::new();
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        client: client.into(),
        options,
    })
    .encode_frame(&mut out)
    .unwrap();
    out
}

/// Plays a whole stream over TCP from `addr`: `Hello`, `StreamInfo`, every `Audio` checked
/// against `source` (consecutive, bit-exact), `End`. `target` is the playout model's latency
/// (and the pre-roll asked for). Fails on anything else or after `timeout`.
pub fn play_tcp(
    addr: &str,
    source: &Source,
    target: Duration,
    timeout: Duration,
) -> Result<Played, String> {
    let deadline = Instant::now() + timeout;
    let sa = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(&hello("load-tcp", target.as_millis() as u64, None))
        .map_err(|e| format!("hello: {e}"))?;
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut played = Played::default();
    let mut playout = Playout::new(source.rate, target);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no End within {timeout:?}: {played:?}"));
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let n = match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed before End: {played:?}")),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}: {played:?}")),
        };
        let at = Instant::now();
        let mut input = &buf[..n];
        while !input.is_empty() {
            let used = decoder.push(input).map_err(|e| e.to_string())?;
            input = &input[used..];
            let Some(frame) = decoder.next_frame() else {
                continue;
            };
            match Message::decode(frame).map_err(|e| e.to_string())? {
                Message::StreamInfo(i) if played.info.is_none() => played.info = Some(i),
                Message::Audio(a) if played.info.is_some() => {
                    let frames = (a.payload.len() / source.bytes_per_frame) as u64;
                    if a.sequence != played.messages || a.position != played.frames {
                        return Err(format!("out of order: #{} at {}", a.sequence, a.position));
                    }
                    if !source.matches(a.position, &a.payload) {
                        return Err(format!("Audio #{} differs from the source", a.sequence));
                    }
                    playout.arrive(a.position, frames, at, &mut played);
                    played.messages += 1;
                    played.frames += frames;
                }
                Message::End { position } => {
                    played.end = Some(position);
                    return Ok(played);
                }
                Message::Pong { .. } => {}
                other => return Err(format!("unexpected {}: {played:?}", other.name())),
            }
        }
    }
}

/// Plays a whole stream over UDP from `addr`: the cookie handshake (each `Hello` re-sent every
/// 250 ms until answered), every `Audio` checked against `source`, a `Report` every 500 ms, then
/// `Bye` after `End`. Reordered and duplicated frames are sorted out as the real player does;
/// lost ones are counted. Fails after `timeout`.
pub fn play_udp(
    addr: &str,
    source: &Source,
    target: Duration,
    timeout: Duration,
) -> Result<Played, String> {
    let deadline = Instant::now() + timeout;
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    s.connect(addr).map_err(|e| e.to_string())?;
    // Wake at most 5 times a second when idle: a thousand of these share two cores.
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_536];
    let mut cookie = None;
    let mut last_hello: Option<Instant> = None;
    let mut last_report = Instant::now();
    let mut played = Played::default();
    let mut playout = Playout::new(source.rate, target);
    let mut seen: Vec<bool> = Vec::new();
    loop {
        let now = Instant::now();
        if now > deadline {
            return Err(format!("no End within {timeout:?}: {played:?}"));
        }
        if played.info.is_none() && last_hello.is_none_or(|t| now - t >= Duration::from_millis(250))
        {
            s.send(&hello("load-udp", target.as_millis() as u64, cookie))
                .map_err(|e| e.to_string())?;
            last_hello = Some(now);
        }
        if played.info.is_some() && now - last_report >= Duration::from_millis(500) {
            let mut r = Vec::new();
            Message::Report(Report {
                received: played.messages,
                ..Report::default()
            })
            .encode_frame(&mut r)
            .unwrap();
            let _ = s.send(&r);
            last_report = now;
        }
        let n = match s.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(format!("recv: {e}")),
        };
        let at = Instant::now();
        if n < HEADER_LEN
            || u64::from_be_bytes(buf[..HEADER_LEN].try_into().unwrap()) != (n - HEADER_LEN) as u64
        {
            return Err(format!("a malformed datagram of {n} bytes"));
        }
        match Message::decode(&buf[HEADER_LEN..n]).map_err(|e| e.to_string())? {
            Message::Cookie { cookie: c } => {
                if cookie.is_none() {
                    cookie = Some(c);
                    last_hello = None; // answer at once
                }
            }
            Message::StreamInfo(i) => {
                if played.info.is_none() {
                    let per = u64::from(i.samples_per_frame);
                    seen = vec![false; source.frames().div_ceil(per) as usize];
                    played.info = Some(i);
                }
            }
            Message::Audio(a) => {
                let Some(info) = played.info else { continue };
                let per = u64::from(info.samples_per_frame);
                let index = (a.position / per) as usize;
                if a.position % per != 0 || index >= seen.len() {
                    return Err(format!("Audio at position {} is off the grid", a.position));
                }
                if !source.matches(a.position, &a.payload) {
                    return Err(format!("Audio #{} differs from the source", a.sequence));
                }
                if seen[index] {
                    played.duplicated += 1;
                    continue;
                }
                seen[index] = true;
                let frames = (a.payload.len() / source.bytes_per_frame) as u64;
                playout.arrive(a.position, frames, at, &mut played);
                played.messages += 1;
                played.frames += frames;
            }
            Message::End { position } if played.info.is_some() => {
                played.end = Some(position);
                played.lost = seen.iter().filter(|s| !**s).count() as u64;
                let mut bye = Vec::new();
                Message::Bye.encode_frame(&mut bye).unwrap();
                let _ = s.send(&bye);
                return Ok(played);
            }
            Message::End { .. } | Message::Pong { .. } => {}
            other => return Err(format!("unexpected {}", other.name())),
        }
    }
}

/// The resident memory of process `pid` in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The open file descriptors of process `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The threads of process `pid` (Threads in /proc/PID/status).
pub fn thread_count(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads in /proc/PID/status")
}

/// CPU time (user + system) process `pid` has used ("self" for this one), from /proc/PID/stat.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // Clock ticks, 100 per second on Linux.
    Duration::from_millis((f[0] + f[1]) * 10)
}
