//! The real binary end to end over loopback TCP: every test clip arrives bit-identical, many
//! players are served at once, a dead player stalls nobody, recordings survive Ctrl-C and
//! SIGKILL, and bad input gives one clear line and a non-zero exit.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Streams `name` to `play --out` and asserts the written samples equal the source's.
fn assert_bit_exact(name: &str) {
    let src = clip(name);
    let sender = Sender::start(&src, &[]);
    let tmp = tmpdir(name);
    let dir = tmp.path();
    let out = dir.join("received.wav");
    let res = run(
        &[
            "play",
            &sender.addr,
            "--latency",
            "60ms",
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    let stdout = text(&res.stdout);
    assert!(
        res.status.success(),
        "{name}: play failed: {}{stdout}",
        text(&res.stderr)
    );
    assert!(stdout.contains(" 0 underruns"), "{name}: {stdout}");
    let (want_spec, want) = wav_samples(&src);
    let (got_spec, got) = wav_samples(&out);
    assert_eq!(got_spec.channels, want_spec.channels, "{name}");
    assert_eq!(got_spec.sample_rate, want_spec.sample_rate, "{name}");
    assert_eq!(
        got_spec.bits_per_sample, want_spec.bits_per_sample,
        "{name}"
    );
    assert_eq!(got_spec.sample_format, want_spec.sample_format, "{name}");
    assert_eq!(got.len(), want.len(), "{name}: sample count");
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "{name}: samples differ");
}

#[test]
fn sweep_48k_s16_stereo_is_bit_exact() {
    assert_bit_exact("sweep-48k-s16-stereo.wav");
}

#[test]
fn clicks_48k_s16_mono_is_bit_exact() {
    assert_bit_exact("clicks-48k-s16-mono.wav");
}

#[test]
fn speech_22k_s16_mono_is_bit_exact() {
    assert_bit_exact("speech-22k-s16-mono.wav");
}

#[test]
fn chords_44k_s24_stereo_keeps_24_bits() {
    assert_bit_exact("chords-44k-s24-stereo.wav");
}

#[test]
fn tone_8k_u8_mono_is_bit_exact() {
    assert_bit_exact("tone-8k-u8-mono.wav");
}

#[test]
fn sine_96k_s32_mono_is_bit_exact() {
    assert_bit_exact("sine-96k-s32-mono.wav");
}

#[test]
fn chords_32k_f32_stereo_is_bit_exact() {
    assert_bit_exact("chords-32k-f32-stereo.wav");
}

#[test]
fn channels_48k_8ch_extensible_is_bit_exact() {
    assert_bit_exact("channels-48k-s16-8ch-ext.wav");
}

/// Starts `play ADDR --out FILE` as a child.
fn spawn_player(addr: &str, out: &std::path::Path) -> std::process::Child {
    Command::new(bin())
        .args(["play", addr, "--latency", "60ms", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn many_players_at_once_each_from_the_start() {
    let src = clip("speech-22k-s16-mono.wav");
    let sender = Sender::start(&src, &[]);
    let tmp = tmpdir("many");
    let dir = tmp.path();
    let started = Instant::now();
    let players: Vec<_> = (0..4)
        .map(|i| {
            let out = dir.join(format!("p{i}.wav"));
            (spawn_player(&sender.addr, &out), out)
        })
        .collect();
    let (_, want) = wav_samples(&src);
    for (child, out) in players {
        let res = wait_output(child, Duration::from_secs(30));
        assert!(res.status.success(), "{}", text(&res.stderr));
        let (_, got) = wav_samples(&out);
        assert_eq!(got, want, "{} differs", out.display());
        // Ping/Pong during the stream measured the sender's clock: the same machine, so ~0.
        assert_sender_clock_near_zero(&text(&res.stdout));
    }
    // 3.54 s of audio paced in real time, four players served side by side, not in turn.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(7),
        "players took {took:?} for a 3.54 s clip"
    );
}

#[test]
fn a_dead_player_is_dropped_and_stalls_nobody() {
    let src = clip("sweep-48k-s16-stereo.wav");
    let sender = Sender::start(&src, &["--loop"]);
    // A "dead" player: says Hello, then never reads a byte.
    let mut dead = std::net::TcpStream::connect(&sender.addr).unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    let mut hello = Vec::new();
    audiowire_hello(&mut hello);
    dead.write_all(&hello).unwrap();

    let tmp = tmpdir("dead");
    let dir = tmp.path();
    let out = dir.join("live.wav");
    let live = spawn_player(&sender.addr, &out);
    // The dead player's socket fills (about 1 s of audio plus kernel buffers), its writes time
    // out after 2 s, and it alone is dropped.
    let line = sender.wait_for_line(&format!(":{dead_port} dropped"), Duration::from_secs(30));
    assert!(
        line.contains("timed out") || line.contains("Resource temporarily unavailable"),
        "{line}"
    );
    signal(&live, "-INT");
    let res = wait_output(live, Duration::from_secs(10));
    let summary = text(&res.stdout);
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert!(summary.contains(" 0 underruns"), "{summary}");
    let (_, got) = wav_samples(&out);
    let (_, one) = wav_samples(&src);
    assert!(
        got.len() > one.len(),
        "the live player kept playing while the dead one stalled"
    );
    for (i, s) in got.iter().enumerate() {
        assert_eq!(*s, one[i % one.len()], "sample {i}");
    }
    drop(dead);
}

/// The bytes of a framed Hello, written by hand from docs/protocol.md, so this test also checks
/// the documented layout.
fn audiowire_hello(out: &mut Vec<u8>) {
    let client = b"dead-player";
    let mut body = vec![1u8, 0x01, 0x00, 0x01];
    body.extend_from_slice(&(client.len() as u16).to_be_bytes());
    body.extend_from_slice(client);
    body.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&body);
}

#[test]
fn ctrl_c_on_the_player_finalizes_the_recording() {
    let src = clip("sweep-48k-s16-stereo.wav");
    let sender = Sender::start(&src, &["--loop"]);
    let tmp = tmpdir("ctrlc");
    let dir = tmp.path();
    let out = dir.join("rec.wav");
    let child = spawn_player(&sender.addr, &out);
    // Wait until more than a second of audio (192 kB/s) is on disk, then interrupt.
    wait_until("1.2 s recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 230_000)
    });
    signal(&child, "-INT");
    let res = wait_output(child, Duration::from_secs(10));
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert!(
        text(&res.stdout).starts_with("stopped after"),
        "{}",
        text(&res.stdout)
    );
    let (_, got) = wav_samples(&out);
    let (_, one) = wav_samples(&src);
    let file_len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(
        got.len() as u64 * 2 + 44,
        file_len,
        "the header counts every sample written"
    );
    // The looped source, repeated, is what must have been recorded.
    for (i, s) in got.iter().enumerate() {
        assert_eq!(*s, one[i % one.len()], "sample {i}");
    }
}

/// `timeout -s INT` signals the command and then its process group: two signals at once. That
/// is one request to stop, which ends cleanly with the summary, not the second Ctrl-C's exit at
/// once (status 130, no summary), as it did.
#[test]
fn two_signals_at_once_stop_the_player_as_one_ctrl_c() {
    let src = clip("sweep-48k-s16-stereo.wav");
    let sender = Sender::start(&src, &["--loop"]);
    let tmp = tmpdir("two-signals");
    let out = tmp.path().join("rec.wav");
    let child = spawn_player(&sender.addr, &out);
    wait_until("0.5 s recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 100_000)
    });
    let pid = child.id().to_string();
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -INT failed");
    let res = wait_output(child, Duration::from_secs(10));
    assert!(
        res.status.success(),
        "{:?}: {}",
        res.status,
        text(&res.stderr)
    );
    assert!(
        text(&res.stdout).starts_with("stopped after"),
        "{}",
        text(&res.stdout)
    );
}

/// A player the machine holds up (here: stopped for 300 ms, as a busy machine or a stalled VM
/// would) says so: the summary counts the wake-ups that came late and the worst one, and an
/// underrun's warning names the machine instead of the network.
#[test]
fn a_player_held_up_by_the_machine_says_so() {
    let src = clip("sweep-48k-s16-stereo.wav");
    let sender = Sender::start(&src, &["--loop"]);
    let tmp = tmpdir("held-up");
    let out = tmp.path().join("rec.wav");
    let child = Command::new(bin())
        .args([
            "play",
            &sender.addr,
            "--latency",
            "20ms",
            "--stats-json",
            "--summary-json",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("0.5 s recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 100_000)
    });
    signal(&child, "-STOP");
    // The stimulus: the machine holds the player for 300 ms (not a synchronisation).
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-CONT");
    let recorded = std::fs::metadata(&out).unwrap().len();
    wait_until("0.5 s more recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > recorded + 100_000)
    });
    signal(&child, "-INT");
    let res = wait_output(child, Duration::from_secs(10));
    let (stdout, stderr) = (text(&res.stdout), text(&res.stderr));
    assert!(res.status.success(), "{stderr}");
    // Stats lines (twice a second), then the summary.
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    let (v, stats) = lines.split_last().expect("a summary");
    let s = &v["summary"];
    let woke = s["woke_late"].as_u64().unwrap();
    assert!(woke >= 1, "{stdout}");
    // Each stats line counts the late wake-ups so far.
    let so_far: Vec<u64> = stats
        .iter()
        .map(|l| l["woke_late"].as_u64().expect("woke_late in a stats line"))
        .collect();
    assert!(!so_far.is_empty(), "{stdout}");
    assert!(so_far.windows(2).all(|w| w[0] <= w[1]), "{so_far:?}");
    assert!(so_far.last() <= Some(&woke), "{so_far:?}, {woke}");
    let worst = s["woke_late_worst_ms"].as_f64().unwrap();
    assert!((250.0..5000.0).contains(&worst), "{stdout}");
    if s["underruns"].as_u64().unwrap() > 0 {
        assert!(
            stderr.contains("this machine woke the player 2 ms or more late"),
            "{stderr}"
        );
    }
}

#[test]
fn sigkill_leaves_a_playable_recording() {
    let src = clip("sweep-48k-s16-stereo.wav");
    let sender = Sender::start(&src, &["--loop"]);
    let tmp = tmpdir("sigkill");
    let dir = tmp.path();
    let out = dir.join("rec.wav");
    let mut child = spawn_player(&sender.addr, &out);
    wait_until("1.2 s recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 230_000)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let (_, got) = wav_samples(&out);
    let (_, one) = wav_samples(&src);
    // The header is rewritten every 0.5 s: at least 1 s of audio is readable.
    assert!(got.len() >= 96_000, "only {} samples readable", got.len());
    for (i, s) in got.iter().enumerate() {
        assert_eq!(*s, one[i % one.len()], "sample {i}");
    }
}

#[test]
fn ctrl_c_on_the_sender_ends_every_stream_cleanly() {
    let src = clip("sweep-48k-s16-stereo.wav");
    let sender = Sender::start(&src, &["--loop"]);
    let tmp = tmpdir("sender-ctrlc");
    let dir = tmp.path();
    let out = dir.join("rec.wav");
    let child = spawn_player(&sender.addr, &out);
    sender.wait_for_line("connected", Duration::from_secs(10));
    wait_until("0.5 s recorded", Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 100_000)
    });
    signal(&sender.child, "-INT");
    let res = wait_output(child, Duration::from_secs(10));
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert!(
        text(&res.stdout).starts_with("played"),
        "{}",
        text(&res.stdout)
    );
    let mut sender = sender;
    let status = sender.child.wait().unwrap();
    assert!(status.success(), "sender exit {status:?}");
}

/// Asserts a failed run: non-zero exit, exactly one line on stderr that contains `needle`, and
/// no panic.
fn assert_one_line_error(res: &std::process::Output, needle: &str) {
    let err = text(&res.stderr);
    assert!(!res.status.success(), "exit status {:?}", res.status);
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{err}");
    assert!(lines[0].starts_with("audiowire: "), "{err}");
    assert!(lines[0].contains(needle), "expected {needle:?} in:\n{err}");
}

#[test]
fn a_non_wav_file_is_refused_in_one_line() {
    let res = run(
        &["send", repo().join("Cargo.toml").to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_one_line_error(
        &res,
        "Cargo.toml is not an audio file audiowire can read (no format audiowire knows); \
         audiowire send reads WAV, FLAC, MP3, Ogg Vorbis",
    );
}

#[test]
fn a_truncated_wav_is_refused_in_one_line() {
    let tmp = tmpdir("truncated");
    let dir = tmp.path();
    let path = dir.join("cut.wav");
    let bytes = std::fs::read(clip("sweep-48k-s16-stereo.wav")).unwrap();
    std::fs::write(&path, &bytes[..100_044]).unwrap();
    let res = run(&["send", path.to_str().unwrap()], Duration::from_secs(10));
    assert_one_line_error(
        &res,
        "is truncated: its header promises 192000 bytes of audio but only 100000 are there",
    );
}

#[test]
fn an_unreachable_address_is_one_line() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let res = run(
        &["play", &addr, "--out", "/dev/null"],
        Duration::from_secs(10),
    );
    assert_one_line_error(
        &res,
        &format!(
            "cannot connect to {addr}: connection refused (is `audiowire send` running there?)"
        ),
    );
}

/// A fake sender that answers the player's Hello with `reply`.
fn fake_sender(reply: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        let _ = s.write_all(&reply);
        // Hold the connection until the player hangs up (bounded by the read timeout).
        let _ = s.read(&mut buf);
    });
    (addr, t)
}

#[test]
fn a_length_header_of_2_pow_63_is_one_line() {
    let (addr, t) = fake_sender((1u64 << 63).to_be_bytes().to_vec());
    let res = run(
        &["play", &addr, "--out", "/dev/null"],
        Duration::from_secs(10),
    );
    assert_one_line_error(
        &res,
        "broke the protocol: a frame declares 9223372036854775808 bytes, above the limit of 1048576 bytes",
    );
    t.join().unwrap();
}

#[test]
fn a_stream_info_with_zero_channels_is_one_line() {
    // StreamInfo: 48000 Hz, 0 channels, s16, PCM, 480 per frame, length unknown.
    let body: Vec<u8> = [
        &[1u8, 0x02][..],
        &48_000u32.to_be_bytes(),
        &0u16.to_be_bytes(),
        &[2, 0],
        &480u32.to_be_bytes(),
        &[0],
        &0u64.to_be_bytes(),
    ]
    .concat();
    let mut frame = (body.len() as u64).to_be_bytes().to_vec();
    frame.extend(body);
    let (addr, t) = fake_sender(frame);
    let res = run(
        &["play", &addr, "--out", "/dev/null"],
        Duration::from_secs(10),
    );
    assert_one_line_error(
        &res,
        "StreamInfo message: invalid channel count 0 (must be 1 to 64)",
    );
    t.join().unwrap();
}

#[test]
fn the_sender_answers_framed_ping_and_echo() {
    let sender = Sender::start(&clip("tone-8k-u8-mono.wav"), &["--loop"]);
    let res = run(
        &[
            "ping",
            "--framed",
            "-c",
            "3",
            "--interval",
            "20ms",
            &sender.addr,
        ],
        Duration::from_secs(10),
    );
    let out = text(&res.stdout);
    assert!(res.status.success(), "{out}{}", text(&res.stderr));
    assert!(out.contains("3 sent, 3 received, 0% loss"), "{out}");
    assert!(out.contains("clock offset "), "{out}");
    let res = run(
        &["echo", "--framed", &sender.addr, "are you there"],
        Duration::from_secs(10),
    );
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert_eq!(text(&res.stdout).trim(), "are you there");
}
