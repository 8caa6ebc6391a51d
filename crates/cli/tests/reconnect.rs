//! Faults: the sender is killed mid-stream and restarted; the player reconnects with capped
//! backoff, resumes within a second of the sender's return, and the recording is still
//! bit-identical to the source. With `--no-reconnect` it gives up at once, in one line.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A port that was free a moment ago, for TCP or UDP.
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

fn kill_restart_resume(transport: &str) {
    let src = clip("speech-22k-s16-mono.wav");
    let listen = format!("127.0.0.1:{}", free_port(transport == "udp"));
    let extra = ["--transport", transport];
    let mut sender = Sender::start_on(&src, &listen, &extra);
    let tmp = tmpdir(&format!("reconnect-{transport}"));
    let dir = tmp.path();
    let out = dir.join("rec.wav");
    let mut player = Command::new(bin())
        .args([
            "play",
            &listen,
            "--transport",
            transport,
            "--latency",
            "60ms",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = player.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    // A second of the 3.5 s clip is recorded (22050 Hz mono s16: 44 kB/s): kill the sender.
    wait_until("1 s recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 44 + 44_100)
    });
    sender.child.kill().unwrap();
    sender.child.wait().unwrap();
    drop(sender);
    // The outage: the sender is gone for 300 ms, then comes back on the same address.
    std::thread::sleep(Duration::from_millis(300));
    let back = Sender::start_on(&src, &listen, &extra);
    let returned = Instant::now();
    let deadline = returned + Duration::from_secs(10);
    let resumed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, line) = lines
            .recv_timeout(left)
            .expect("the player never said the stream resumed");
        if line.contains("stream resumed") {
            break at;
        }
    };
    let took = resumed.saturating_duration_since(returned);
    assert!(
        took < Duration::from_secs(1),
        "resumed {took:?} after the sender's return"
    );
    let res = wait_output(player, Duration::from_secs(20));
    let summary = text(&res.stdout);
    assert!(res.status.success(), "{summary}");
    // Resumed right after the last frame it had: nothing lost, nothing repeated.
    let (_, want) = wav_samples(&src);
    let (_, got) = wav_samples(&out);
    assert_eq!(got.len(), want.len(), "{summary}");
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "{summary}");
    drop(back);
}

#[test]
fn tcp_player_resumes_after_the_sender_is_killed_and_restarted() {
    kill_restart_resume("tcp");
}

#[test]
fn udp_player_resumes_after_the_sender_is_killed_and_restarted() {
    kill_restart_resume("udp");
}

#[test]
fn no_reconnect_gives_up_at_once_in_one_line() {
    let src = clip("speech-22k-s16-mono.wav");
    let mut sender = Sender::start(&src, &[]);
    let addr = sender.addr.clone();
    let tmp = tmpdir("no-reconnect");
    let dir = tmp.path();
    let out = dir.join("rec.wav");
    let player = Command::new(bin())
        .args(["play", &addr, "--no-reconnect", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("some audio recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 10_000)
    });
    sender.child.kill().unwrap();
    let res = wait_output(player, Duration::from_secs(5));
    let err = text(&res.stderr);
    assert!(!res.status.success());
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("audiowire: connection to {addr} closed by the sender mid-stream, before End")
    );
    // What was received is a valid recording.
    let (_, got) = wav_samples(&out);
    assert!(!got.is_empty());
}

#[test]
fn sigterm_stops_player_and_sender_cleanly() {
    let src = clip("sweep-48k-s16-stereo.wav");
    let mut sender = Sender::start(&src, &["--loop"]);
    let tmp = tmpdir("sigterm");
    let dir = tmp.path();
    let out = dir.join("rec.wav");
    let player = Command::new(bin())
        .args(["play", &sender.addr, "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("0.5 s recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 100_000)
    });
    signal(&player, "-TERM");
    let res = wait_output(player, Duration::from_secs(10));
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert!(
        text(&res.stdout).starts_with("stopped after"),
        "{}",
        text(&res.stdout)
    );
    // Finalized: the header counts every sample in the file.
    let (_, got) = wav_samples(&out);
    assert_eq!(
        got.len() as u64 * 2 + 44,
        std::fs::metadata(&out).unwrap().len()
    );
    signal(&sender.child, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = sender.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the sender ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_live_player_resumes_where_the_stream_stands() {
    let src = clip("sweep-48k-s16-stereo.wav");
    let listen = format!("127.0.0.1:{}", free_port(false));
    let extra = ["--broadcast", "--loop"];
    let mut sender = Sender::start_on(&src, &listen, &extra);
    let tmp = tmpdir("reconnect-live");
    let dir = tmp.path();
    let out = dir.join("rec.wav");
    let mut player = Command::new(bin())
        .args(["play", &listen, "--latency", "60ms", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = player.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    wait_until("0.5 s recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 44 + 96_000)
    });
    sender.child.kill().unwrap();
    sender.child.wait().unwrap();
    drop(sender);
    // The outage being simulated: 300 ms without a sender.
    std::thread::sleep(Duration::from_millis(300));
    let back = Sender::start_on(&src, &listen, &extra);
    let returned = Instant::now();
    let resumed = loop {
        let (at, line) = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the player never said the stream resumed");
        if line.contains("stream resumed") {
            break at;
        }
    };
    let took = resumed.saturating_duration_since(returned);
    assert!(
        took < Duration::from_secs(1),
        "resumed {took:?} after the sender's return"
    );
    // A second of the resumed live stream, then stop: the recording keeps growing, no error.
    let size = std::fs::metadata(&out).unwrap().len();
    wait_until("the live stream to go on", Duration::from_secs(10), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > size + 192_000)
    });
    signal(&player, "-INT");
    let res = wait_output(player, Duration::from_secs(10));
    let summary = text(&res.stdout);
    assert!(res.status.success(), "{summary}{}", text(&res.stderr));
    assert!(summary.starts_with("stopped after"), "{summary}");
    drop(back);
}
