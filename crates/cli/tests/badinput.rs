//! Hostile and broken peers against the real servers (`send` over TCP and UDP, `struct listen`,
//! `lines listen`, `echo-server`): a length header up to 2^64−1, a frame that ends early, a
//! message of the wrong type for the state, absurd sizes and counts. Each gets a typed error and
//! one log line naming the peer, its connection is closed, the server's memory stays bounded, and
//! the server goes on serving everyone else: a real client streaming at the same time finishes
//! unharmed (for `send`, a real `audiowire play` whose recording is bit-exact).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "common/client.rs"]
mod client;
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use audiowire_protocol::{ErrorCode, FrameDecoder, Message};
use client::{Source, hello, play_tcp, play_udp, rss_kib};
use common::*;

const T: Duration = Duration::from_secs(10);
/// How much a server's resident memory may grow over a whole barrage of bad input.
const RSS_BOUND_KIB: u64 = 32 * 1024;

/// A log (stderr lines of a server) searched by needle; lines seen while waiting for one needle
/// stay available for the next.
struct Log<'a> {
    rx: &'a Receiver<String>,
    seen: Vec<String>,
}

impl<'a> Log<'a> {
    fn new(rx: &'a Receiver<String>) -> Self {
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line containing every one of `needles`, waiting at most `timeout`.
    fn wait(&mut self, needles: &[&str], timeout: Duration) -> String {
        let hit = |l: &String| needles.iter().all(|n| l.contains(n));
        if let Some(l) = self.seen.iter().find(|l| hit(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    let found = hit(&l);
                    self.seen.push(l.clone());
                    if found {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needles:?} within {timeout:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// A frame around `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u64).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// An envelope: version 1, `tag`, `body`.
fn env(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![1, tag];
    out.extend_from_slice(body);
    out
}

fn framed(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_frame(&mut out).unwrap();
    out
}

/// An `Audio` message, as only a sender may send it.
fn audio() -> Vec<u8> {
    framed(&Message::Audio(audiowire_protocol::Audio {
        sequence: 0,
        position: 0,
        timestamp_us: 1,
        payload: vec![0; 8],
    }))
}

/// Connects to `addr`, writes `bytes` (then half-closes, if `half_close`), and reads until the
/// server closes the connection (bounded by `T`). Returns our port and what the server sent.
fn hit(addr: &str, bytes: &[u8], half_close: bool) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let port = s.local_addr().unwrap().port();
    // The server may close before everything is written: that is its right.
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    (port, read_to_close(&mut s))
}

/// Reads until EOF or a reset; panics if the peer keeps the connection open longer than `T`.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server kept the connection open");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// The messages in `bytes` (as far as they decode).
fn messages(bytes: &[u8]) -> Vec<Message> {
    let mut d = FrameDecoder::default();
    d.decode(bytes)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| Message::decode(f).ok())
        .collect()
}

/// A `Hello` written by hand: protocol `version`, client name, `count` declared options and the
/// option strings in `rest`.
fn hello_body(version: u16, count: u16, rest: &[u8]) -> Vec<u8> {
    let mut b = version.to_be_bytes().to_vec();
    b.extend_from_slice(&4u16.to_be_bytes());
    b.extend_from_slice(b"evil");
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(rest);
    env(0x01, &b)
}

/// Starts a real `audiowire play ADDR --out FILE` (TCP or UDP).
fn real_player(addr: &str, out: &std::path::Path, udp: bool) -> std::process::Child {
    let mut cmd = Command::new(bin());
    cmd.args(["play", addr, "--latency", "50ms", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if udp {
        cmd.args(["--transport", "udp"]);
    }
    cmd.spawn().unwrap()
}

/// Waits for the real player and asserts it finished with no underrun and a bit-exact recording.
fn assert_player_unharmed(
    child: std::process::Child,
    out: &std::path::Path,
    src: &std::path::Path,
) {
    let res = wait_output(child, Duration::from_secs(30));
    let summary = text(&res.stdout);
    assert!(res.status.success(), "{}{summary}", text(&res.stderr));
    assert!(summary.starts_with("played"), "{summary}");
    assert!(summary.contains(" 0 underruns"), "{summary}");
    let (_, want) = wav_samples(src);
    let (_, got) = wav_samples(out);
    assert!(
        got == want,
        "the real player's recording differs: {summary}"
    );
}

/// Every bad-input case against `send` over TCP: the bytes, whether we half-close after them,
/// and what the log line (and the `Error` sent back, if any) must say.
fn tcp_cases() -> Vec<(&'static str, Vec<u8>, bool, String)> {
    let too_long = |n: u64| {
        let mut b = n.to_be_bytes().to_vec();
        b.extend_from_slice(b"\x01\x01trailing");
        b
    };
    let limit = |n: u64| format!("a frame declares {n} bytes, above the limit of 65536 bytes");
    let mut huge_count = hello_body(1, u16::MAX, b"");
    huge_count = frame(&huge_count);
    vec![
        ("length 2^64-1", too_long(u64::MAX), false, limit(u64::MAX)),
        ("length 2^63", too_long(1 << 63), false, limit(1 << 63)),
        ("length limit+1", too_long(65_537), false, limit(65_537)),
        (
            "frame ends early",
            {
                let mut b = 100u64.to_be_bytes().to_vec();
                b.extend_from_slice(&[1, 1, 0, 1, 0]);
                b
            },
            true,
            "closed in the middle of a frame".into(),
        ),
        (
            "Audio instead of Hello",
            audio(),
            false,
            "expected Hello, got Audio".into(),
        ),
        (
            "End instead of Hello",
            framed(&Message::End { position: 3 }),
            false,
            "expected Hello, got End".into(),
        ),
        (
            "StreamInfo from a player",
            frame(&env(
                0x02,
                &[
                    0, 0, 0xbb, 0x80, 0, 2, 2, 0, 0, 0, 1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            )),
            false,
            "expected Hello, got StreamInfo".into(),
        ),
        (
            "envelope version 9",
            frame(&[9, 1, 0, 1]),
            false,
            "unsupported envelope version 9".into(),
        ),
        (
            "type 0x7f",
            frame(&[1, 0x7f]),
            false,
            "unknown message type 0x7f".into(),
        ),
        (
            "65535 options declared, none sent",
            huge_count,
            false,
            "Hello message truncated".into(),
        ),
        (
            "a Hello with trailing bytes",
            frame(&[hello_body(1, 0, b""), vec![0xff; 3]].concat()),
            false,
            "Hello message has 3 unexpected trailing bytes".into(),
        ),
        (
            "an option that is not UTF-8",
            frame(&hello_body(1, 1, &[0, 2, 0xff, 0xfe, 0, 0])),
            false,
            "field option key is not valid UTF-8".into(),
        ),
        (
            "a zero-length frame",
            frame(b""),
            false,
            "envelope message truncated".into(),
        ),
    ]
}

#[test]
fn the_tcp_sender_refuses_bad_input_and_a_real_player_streams_on_unharmed() {
    let src = clip("speech-22k-s16-mono.wav");
    let sender = Sender::start(&src, &[]);
    let pid = sender.child.id();
    let mut log = Log::new(&sender.lines);
    let tmp = tmpdir("bad-tcp");
    let dir = tmp.path();
    let out = dir.join("real.wav");
    // A real player streams the whole 3.5 s clip while everything below happens.
    let player = real_player(&sender.addr, &out, false);
    log.wait(&["connected"], T);
    let rss_before = rss_kib(pid);

    // A peer that sends half a header and then nothing is dropped after the handshake timeout.
    let mut slow = TcpStream::connect(&sender.addr).unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    slow.write_all(&[0, 0, 0]).unwrap();

    for (what, bytes, half_close, reason) in tcp_cases() {
        let (port, reply) = hit(&sender.addr, &bytes, half_close);
        let line = log.wait(&[&format!("player 127.0.0.1:{port} dropped: ")], T);
        assert!(line.contains(&reason), "{what}: {line}");
        // The peer is told why, in an Error message, before the close.
        let msgs = messages(&reply);
        if !half_close {
            assert!(
                matches!(
                    msgs.as_slice(),
                    [Message::Error { code: ErrorCode::BadMessage, text }] if text.contains(&reason)
                ),
                "{what}: the peer got {msgs:?}"
            );
        }
    }

    // Another protocol version is told so (Error code 1) and closed.
    let (port, reply) = hit(&sender.addr, &frame(&hello_body(99, 0, b"")), false);
    let line = log.wait(&[&format!("player 127.0.0.1:{port} dropped: ")], T);
    assert!(
        line.contains("protocol version 99 is not supported"),
        "{line}"
    );
    assert!(
        matches!(
            messages(&reply).as_slice(),
            [Message::Error {
                code: ErrorCode::UnsupportedVersion,
                ..
            }]
        ),
        "{reply:?}"
    );

    // Mid-stream: a valid Hello, audio flowing, then a length header of 2^64-1.
    let mut s = TcpStream::connect(&sender.addr).unwrap();
    let port = s.local_addr().unwrap().port();
    s.write_all(&hello("evil", 50, None)).unwrap();
    let mut first = [0u8; 256];
    s.set_read_timeout(Some(T)).unwrap();
    s.read_exact(&mut first).unwrap();
    s.write_all(&u64::MAX.to_be_bytes()).unwrap();
    let _ = read_to_close(&mut s);
    let line = log.wait(&[&format!("player 127.0.0.1:{port} dropped: ")], T);
    assert!(
        line.contains("a frame declares 18446744073709551615 bytes"),
        "{line}"
    );

    // The slow peer: dropped once its 5 s are up.
    let line = log.wait(
        &[&format!("player 127.0.0.1:{slow_port} dropped: ")],
        Duration::from_secs(15),
    );
    assert!(line.contains("no Hello within 5 s"), "{line}");
    let _ = read_to_close(&mut slow);

    // Memory stayed bounded: nothing was reserved for the declared lengths.
    let rss_after = rss_kib(pid);
    eprintln!("sender VmRSS: {rss_before} KiB before the barrage, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + RSS_BOUND_KIB,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );

    // The real player finished unharmed, and a new player is served as before.
    assert_player_unharmed(player, &out, &src);
    let played = play_tcp(
        &sender.addr,
        &Source::wav(&src),
        Duration::from_millis(50),
        T,
    )
    .unwrap();
    assert_eq!(played.end, Some(Source::wav(&src).frames()));
    assert_eq!(played.underruns, 0, "{played:?}");
}

#[test]
fn the_udp_sender_drops_bad_datagrams_and_a_real_player_streams_on_unharmed() {
    let src = clip("speech-22k-s16-mono.wav");
    let sender = Sender::start(&src, &["--transport", "udp", "-v"]);
    let pid = sender.child.id();
    let mut log = Log::new(&sender.lines);
    let tmp = tmpdir("bad-udp");
    let dir = tmp.path();
    let out = dir.join("real.wav");
    let player = real_player(&sender.addr, &out, true);
    log.wait(&["subscribed"], T);
    let rss_before = rss_kib(pid);

    let big = vec![0xa5u8; 65_000];
    let mut cut_hello = hello("evil", 50, None);
    cut_hello.truncate(cut_hello.len() - 4);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "length 2^64-1",
            [&u64::MAX.to_be_bytes()[..], b"\x01\x01x"].concat(),
            "declares 18446744073709551615 bytes but 3 follow",
        ),
        (
            "a short datagram",
            vec![0, 0, 0],
            "shorter than a frame header",
        ),
        ("a cut Hello", cut_hello, "declares"),
        ("65000 bytes of noise", big, "declares"),
        (
            "envelope version 9",
            frame(&[9, 1]),
            "unsupported envelope version 9",
        ),
        ("an Audio from a player", audio(), "unexpected Audio"),
        (
            "an End from a player",
            framed(&Message::End { position: 1 }),
            "unexpected End",
        ),
        (
            "a forged cookie",
            hello("evil", 50, Some(0x1234)),
            "", // answered with a fresh cookie: checked below
        ),
    ];
    for (what, bytes, reason) in cases {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(&sender.addr).unwrap();
        let port = s.local_addr().unwrap().port();
        s.send(&bytes).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let reply = s.recv(&mut buf).ok();
        if reason.is_empty() {
            // A forged cookie gets a valid one (as any stranger's Hello does), no audio.
            let n = reply.expect("a cookie for a stranger");
            assert!(matches!(
                Message::decode(&buf[8..n]),
                Ok(Message::Cookie { .. })
            ));
            assert!(n <= 3 * bytes.len());
            continue;
        }
        assert_eq!(reply, None, "{what}: the sender answered garbage");
        let line = log.wait(&[&format!("127.0.0.1:{port}")], T);
        assert!(line.contains(reason), "{what}: {line}");
    }

    let rss_after = rss_kib(pid);
    eprintln!("UDP sender VmRSS: {rss_before} KiB before the barrage, {rss_after} KiB after");
    assert!(rss_after < rss_before + RSS_BOUND_KIB);
    assert_player_unharmed(player, &out, &src);
    let source = Source::wav(&src);
    let played = play_udp(&sender.addr, &source, Duration::from_millis(50), T).unwrap();
    assert_eq!(
        (played.lost, played.frames),
        (0, source.frames()),
        "{played:?}"
    );
}

/// A framed `Struct` record `!I` holding `n`.
fn record(n: u32) -> Vec<u8> {
    framed(&Message::Struct {
        format: "!I".into(),
        data: n.to_be_bytes().to_vec(),
    })
}

#[test]
fn struct_listen_refuses_bad_input_and_serves_a_steady_client() {
    let (listener, addr) = start_tool(&["struct", "listen", "--listen", "127.0.0.1:0"]);
    let mut log = Log::new(&listener.err);
    let pid = listener.child.id();
    // A well-behaved client on one connection, a record every 10 ms throughout.
    let steady_addr = addr.clone();
    let steady = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&steady_addr).unwrap();
        for n in 0..100u32 {
            s.write_all(&record(n)).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let rss_before = rss_kib(pid);
    let limit = 2 + 2 + 65_535 + 65_536;
    let cases: Vec<(&str, Vec<u8>, bool, String)> = vec![
        (
            "length 2^64-1",
            u64::MAX.to_be_bytes().to_vec(),
            false,
            format!(
                "a frame declares 18446744073709551615 bytes, above the limit of {limit} bytes"
            ),
        ),
        (
            "frame ends early",
            [&100u64.to_be_bytes()[..], &[1, 0x13, 0]].concat(),
            true,
            "closed the connection in the middle of a message".into(),
        ),
        (
            "Audio",
            audio(),
            false,
            "expected a Struct message, got Audio".into(),
        ),
        (
            "a record too large for its format",
            framed(&Message::Struct {
                format: "!H".into(),
                data: vec![0; 3],
            }),
            false,
            "!H".into(),
        ),
        (
            "an absurd format",
            framed(&Message::Struct {
                format: "!65537s".into(),
                data: vec![],
            }),
            false,
            "the repeat count is too large".into(),
        ),
        (
            "a format length beyond the frame",
            frame(&env(0x13, &[0xff, 0xff, b'!'])),
            false,
            "Struct message truncated".into(),
        ),
    ];
    for (what, bytes, half_close, reason) in cases {
        let (port, _) = hit(&addr, &bytes, half_close);
        let line = log.wait(&[&format!("127.0.0.1:{port} dropped: ")], T);
        assert!(line.contains(&reason), "{what}: {line}");
    }
    assert!(rss_kib(pid) < rss_before + RSS_BOUND_KIB);
    steady.join().unwrap();
    // Every record of the steady client was printed, in order.
    let lines = take_lines(&listener.out, 100, T);
    let want: Vec<String> = (0..100).map(|n| format!("{n}")).collect();
    assert_eq!(lines, want);
}

#[test]
fn raw_struct_listen_names_a_record_cut_short() {
    let (listener, addr) = start_tool(&[
        "struct",
        "listen",
        "--listen",
        "127.0.0.1:0",
        "--raw",
        "--format",
        "!Id",
    ]);
    let mut log = Log::new(&listener.err);
    let (port, _) = hit(&addr, &[0, 0, 0, 7, 1, 2], true);
    let line = log.wait(&[&format!("127.0.0.1:{port} dropped: ")], T);
    assert!(
        line.contains("in the middle of a record (6 of 12 bytes)"),
        "{line}"
    );
    // The next client is served.
    let (_, _) = hit(&addr, &[0, 0, 0, 9, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0], true);
    assert_eq!(take_lines(&listener.out, 1, T), ["9 1.0"]);
}

#[test]
fn lines_listen_refuses_bad_input_and_a_real_tail_loses_no_line() {
    const N: usize = 400;
    let tmp = tmpdir("bad-lines");
    let dir = tmp.path();
    let log_file = dir.join("app.log");
    let out = dir.join("out.txt");
    std::fs::write(&log_file, "").unwrap();
    let (receiver, addr) = start_tool(&[
        "lines",
        "listen",
        "--listen",
        "127.0.0.1:0",
        "--append",
        out.to_str().unwrap(),
    ]);
    let mut log = Log::new(&receiver.err);
    let mut tail = Command::new(bin());
    tail.args(["tail", log_file.to_str().unwrap(), "--to", &addr])
        .stdin(Stdio::null());
    let _tail = Proc::spawn(tail);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_file)
        .unwrap();
    for i in 0..N / 2 {
        writeln!(f, "line {i}").unwrap();
    }
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "length 2^64-1",
            u64::MAX.to_be_bytes().to_vec(),
            false,
            "a frame declares 18446744073709551615 bytes",
        ),
        ("Audio", audio(), false, "unexpected Audio on a line stream"),
        (
            "frame ends early",
            [&50u64.to_be_bytes()[..], &[1, 0x16]].concat(),
            true,
            "in the middle of a message",
        ),
        (
            "a Line flag of 7",
            frame(&env(0x16, &[0, 0, 0, 0, 0, 0, 0, 0, 7])),
            false,
            "invalid flags 7",
        ),
    ];
    for (what, bytes, half_close, reason) in cases {
        let (port, _) = hit(&addr, &bytes, half_close);
        let line = log.wait(&[&format!("127.0.0.1:{port} dropped: ")], T);
        assert!(line.contains(reason), "{what}: {line}");
    }
    for i in N / 2..N {
        writeln!(f, "line {i}").unwrap();
    }
    drop(f);
    let want: String = (0..N).map(|i| format!("line {i}\n")).collect();
    wait_until("every line written once", Duration::from_secs(30), || {
        std::fs::read_to_string(&out).is_ok_and(|got| got.len() >= want.len())
    });
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
}

#[test]
fn the_echo_server_refuses_bad_framed_input_and_echoes_on() {
    let (server, addr) = start_tool(&["echo-server", "--listen", "127.0.0.1:0"]);
    let mut log = Log::new(&server.err);
    // A plain client echoing throughout.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain.set_read_timeout(Some(T)).unwrap();
    let echo_framed = framed(&Message::Echo {
        payload: b"hi".to_vec(),
    });
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "Audio after an Echo",
            [echo_framed.clone(), audio()].concat(),
            false,
            "answers Echo and Ping only, not Audio",
        ),
        (
            "frame ends early",
            [&100u64.to_be_bytes()[..], &[1, 0x10, 1, 2, 3]].concat(),
            true,
            "in the middle of a message",
        ),
        (
            "a bad envelope after an Echo",
            [echo_framed.clone(), frame(&[9, 0x10])].concat(),
            false,
            "unsupported envelope version 9",
        ),
    ];
    for (i, (what, bytes, half_close, reason)) in cases.into_iter().enumerate() {
        let (port, _) = hit(&addr, &bytes, half_close);
        let line = log.wait(&[&format!("client 127.0.0.1:{port} dropped: ")], T);
        assert!(line.contains(reason), "{what}: {line}");
        let msg = format!("still here {i}\n");
        plain.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        plain.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    // A length header of 2^64-1 cannot begin a frame the echo server takes: it is a plain client,
    // and gets its bytes back exactly (docs/protocol.md, "Answering probes").
    let mut s = TcpStream::connect(&addr).unwrap();
    let bytes = [&u64::MAX.to_be_bytes()[..], b"\x01\x10abc"].concat();
    s.write_all(&bytes).unwrap();
    let mut back = vec![0u8; bytes.len()];
    s.set_read_timeout(Some(T)).unwrap();
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, bytes);
}
