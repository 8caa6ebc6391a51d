//! Strangers: with `--key`, a player must prove it holds the pre-shared key before any audio is
//! sent, a wrong or missing key is a clear error on both sides, and the audio on the wire is
//! sealed (ChaCha20-Poly1305), on TCP and UDP; replayed datagrams are dropped.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use audiowire_netsim::{Config, RelayConfig, UdpRelay};
use audiowire_protocol::auth::{Key, to_hex};
use audiowire_protocol::message::option;
use audiowire_protocol::{HEADER_LEN, Hello, Message, PROTOCOL_VERSION};
use common::*;

fn key_file(dir: &std::path::Path, name: &str, secret: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    p
}

fn play(
    addr: &str,
    transport: &str,
    key: Option<&PathBuf>,
    out: &std::path::Path,
) -> std::process::Output {
    let mut args = vec![
        "play".to_string(),
        addr.to_string(),
        "--transport".into(),
        transport.into(),
        "--no-reconnect".into(),
        "--out".into(),
        out.to_str().unwrap().into(),
    ];
    if let Some(k) = key {
        args.push("--key".into());
        args.push(k.to_str().unwrap().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args, Duration::from_secs(20))
}

fn keyed_stream_is_bit_exact_and_wrong_keys_are_refused(transport: &str) {
    let tmp = tmpdir(&format!("keys-{transport}"));
    let dir = tmp.path();
    let good = key_file(dir, "good.key", "correct horse battery staple");
    let bad = key_file(dir, "bad.key", "incorrect horse");
    let src = clip("chords-44k-s24-stereo.wav");
    let sender = Sender::start(
        &src,
        &["--transport", transport, "--key", good.to_str().unwrap()],
    );
    // The right key: the stream plays, bit-exact after decryption.
    let out = dir.join("ok.wav");
    let res = play(&sender.addr, transport, Some(&good), &out);
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert_eq!(wav_samples(&out).1, wav_samples(&src).1);
    // The wrong key: one clear line at the player, and the sender logs the refusal.
    let res = play(&sender.addr, transport, Some(&bad), &dir.join("bad.wav"));
    let err = text(&res.stderr);
    assert!(!res.status.success());
    assert!(
        err.trim_end()
            .ends_with("wrong key: the player's --key differs from this sender's"),
        "{err}"
    );
    sender.wait_for_line("wrong key", Duration::from_secs(5));
    // No key at all.
    let res = play(&sender.addr, transport, None, &dir.join("none.wav"));
    let err = text(&res.stderr);
    assert!(
        err.trim_end()
            .ends_with("this sender requires a key: give the player the same --key"),
        "{err}"
    );
    // A key the sender does not have.
    let open = Sender::start(&src, &["--transport", transport]);
    let res = play(&open.addr, transport, Some(&good), &dir.join("open.wav"));
    let err = text(&res.stderr);
    assert!(!res.status.success());
    assert!(err.contains("this sender has no key"), "{err}");
}

#[test]
fn tcp_keyed_stream_is_bit_exact_and_wrong_keys_are_refused() {
    keyed_stream_is_bit_exact_and_wrong_keys_are_refused("tcp");
}

#[test]
fn udp_keyed_stream_is_bit_exact_and_wrong_keys_are_refused() {
    keyed_stream_is_bit_exact_and_wrong_keys_are_refused("udp");
}

/// Receives one datagram (bounded), decoded.
fn recv(socket: &UdpSocket) -> Message {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            return Message::decode(&buf[HEADER_LEN..n]).unwrap();
        }
    }
    panic!("nothing received within 2 s");
}

#[test]
fn audio_on_the_wire_is_sealed() {
    let tmp = tmpdir("keys-wire");
    let dir = tmp.path();
    let src = clip("sweep-48k-s16-stereo.wav");
    let secret = "a shared secret";
    let file = key_file(dir, "k", secret);
    let sender = Sender::start(
        &src,
        &["--transport", "udp", "--key", file.to_str().unwrap()],
    );
    let key = Key::from_secret(secret.as_bytes()).unwrap();
    let nonce = [9u8; 16];
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(&sender.addr).unwrap();
    let hello = |extra: Vec<(String, String)>| {
        let mut options = vec![(option::NONCE.to_string(), to_hex(&nonce))];
        options.extend(extra);
        let mut out = Vec::new();
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            client: "wire".into(),
            options,
        })
        .encode_frame(&mut out)
        .unwrap();
        out
    };
    socket.send(&hello(vec![])).unwrap();
    let Message::Cookie { cookie } = recv(&socket) else {
        panic!("expected a cookie")
    };
    socket
        .send(&hello(vec![
            (option::COOKIE.to_string(), format!("{cookie:016x}")),
            (
                option::PROOF.to_string(),
                to_hex(&key.player_proof(cookie, &nonce)),
            ),
        ]))
        .unwrap();
    let Message::Auth { proof } = recv(&socket) else {
        panic!("expected Auth")
    };
    assert!(key.verify_sender(cookie, &nonce, &proof));
    assert!(matches!(recv(&socket), Message::StreamInfo(_)));
    let Message::Audio(mut a) = recv(&socket) else {
        panic!("expected Audio")
    };
    // 341 stereo s16 sample frames and a 16-byte tag; the bytes are not the samples.
    assert_eq!(a.payload.len(), 341 * 4 + 16);
    let mut plain = Vec::new();
    for s in &wav_samples(&src).1[..341 * 2] {
        plain.extend_from_slice(&(*s as i16).to_le_bytes());
    }
    assert_ne!(a.payload[..341 * 4], plain[..]);
    key.cipher(cookie, &nonce).open(&mut a).unwrap();
    assert_eq!(a.payload, plain);
}

#[test]
fn replayed_datagrams_are_dropped() {
    // netsim duplicates half the datagrams: each duplicate is a replay of a valid, sealed frame.
    let tmp = tmpdir("keys-replay");
    let dir = tmp.path();
    let file = key_file(dir, "k", "replay me");
    let src = clip("speech-22k-s16-mono.wav");
    let sender = Sender::start(
        &src,
        &["--transport", "udp", "--key", file.to_str().unwrap()],
    );
    let relay = UdpRelay::start(
        "127.0.0.1:0",
        &sender.addr,
        RelayConfig::symmetric(Config {
            duplicate: 0.5,
            seed: 3,
            ..Config::default()
        }),
    )
    .unwrap();
    let out = dir.join("rec.wav");
    let res = play(&relay.local_addr().to_string(), "udp", Some(&file), &out);
    let stats = relay.stop();
    let summary = text(&res.stdout);
    assert!(res.status.success(), "{}{summary}", text(&res.stderr));
    assert!(stats.downstream.duplicated > 50, "{stats}");
    let dup: u64 = summary
        .split(" duplicated")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(dup > 50, "the replays were counted and dropped: {summary}");
    assert_eq!(wav_samples(&out).1, wav_samples(&src).1, "{summary}");
}

#[test]
fn listening_beyond_loopback_without_a_key_warns() {
    let src = clip("tone-8k-u8-mono.wav");
    let open = Sender::start_on(&src, "0.0.0.0:0", &[]);
    open.wait_for_line(
        "without a key: anyone who can reach it",
        Duration::from_secs(5),
    );
    let tmp = tmpdir("keys-warn");
    let dir = tmp.path();
    let file = key_file(dir, "k", "secret");
    let keyed = Sender::start_on(&src, "0.0.0.0:0", &["--key", file.to_str().unwrap()]);
    // The keyed one says nothing of the kind: its next line is about players, or nothing.
    let quiet = keyed.lines.recv_timeout(Duration::from_millis(300));
    assert!(
        quiet
            .as_ref()
            .map_or(true, |l| !l.contains("without a key")),
        "{quiet:?}"
    );
}
