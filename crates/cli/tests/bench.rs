//! What the benches read from the real binary: `play --summary-json` and `--latency-log`, and
//! `audiowire bench` itself on one short run over loopback, and against a "remote" sender.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn summary_json_and_latency_log_describe_the_stream() {
    let src = clip("clicks-48k-s16-mono.wav");
    let sender = Sender::start(&src, &["--transport", "udp"]);
    let tmp = tmpdir("summary-json");
    let dir = tmp.path();
    let (out, log) = (dir.join("rec.wav"), dir.join("latency.csv"));
    let res = run(
        &[
            "play",
            &sender.addr,
            "--transport",
            "udp",
            "--out",
            out.to_str().unwrap(),
            "--summary-json",
            "--latency-log",
            log.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(res.status.success(), "{}", text(&res.stderr));
    let stdout = text(&res.stdout);
    let line = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let s = &v["summary"];
    let (_, samples) = wav_samples(&src);
    assert_eq!(s["frames_out"].as_u64().unwrap(), samples.len() as u64);
    assert_eq!(s["interrupted"], false);
    assert_eq!(s["sample_rate"], 48_000);
    let l = &s["latency_ms"];
    let received = s["received"].as_u64().unwrap();
    assert_eq!(l["count"].as_u64().unwrap(), received);
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max + 0.05, "{l}");
    // One line per frame that carried a timestamp, after the header, in time order.
    let csv = std::fs::read_to_string(&log).unwrap();
    let mut rows = csv.lines();
    assert_eq!(rows.next(), Some("t_s,latency_ms"));
    let points: Vec<(f64, f64)> = rows
        .map(|r| {
            let (t, ms) = r.split_once(',').unwrap();
            (t.parse().unwrap(), ms.parse().unwrap())
        })
        .collect();
    assert_eq!(points.len() as u64, received);
    assert!(points.windows(2).all(|w| w[1].0 >= w[0].0));
}

#[test]
fn bench_runs_one_cell_and_writes_its_results() {
    let tmp = tmpdir("bench");
    let dir = tmp.path();
    let res = run(
        &[
            "bench",
            "--only",
            "udp-pcm-10ms-clean",
            "--seconds",
            "2",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(res.status.success(), "{}", text(&res.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("latency-quick.json")).unwrap())
            .unwrap();
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "{v}");
    let c = &cells[0];
    assert_eq!(c["label"], "udp-pcm-10ms-clean-default");
    assert!(c["error"].is_null(), "{c}");
    assert!(c["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // PCM carries no FEC: whatever was lost, nothing was recovered.
    assert!(c["lost"].is_u64(), "{c}");
    assert_eq!(c["recovered"], 0, "{c}");
    assert!((c["audio_s"].as_f64().unwrap() - 2.0).abs() < 0.05, "{c}");
    let md = std::fs::read_to_string(dir.join("latency-quick.md")).unwrap();
    assert!(
        md.contains("| udp | pcm | 10 ms | clean | default |"),
        "{md}"
    );
    assert!(dir.join("latency-quick-time.svg").exists());
}

#[test]
fn bench_remote_plays_from_a_running_sender_with_the_players_options() {
    let src = clip("clicks-48k-s16-mono.wav");
    let sender = Sender::start(&src, &["--transport", "udp", "--loop"]);
    let tmp = tmpdir("bench-remote");
    let dir = tmp.path();
    let res = run(
        &[
            "bench",
            "--remote",
            &sender.addr,
            "--transport",
            "udp",
            "--seconds",
            "3",
            "--out",
            dir.to_str().unwrap(),
            "--",
            "--latency",
            "40ms",
        ],
        Duration::from_secs(60),
    );
    assert!(res.status.success(), "{}", text(&res.stderr));
    // The run's line says what the player counted, as a local cell's does.
    let stderr = text(&res.stderr);
    assert!(
        stderr.contains("playing from 127.0.0.1:")
            && stderr.contains(" over udp for 3 s with --latency 40ms"),
        "{stderr}"
    );
    assert!(
        stderr.contains(" underruns (") && stderr.contains(" by FEC), "),
        "{stderr}"
    );
    // The local matrix's targets are not printed for a remote run.
    let stdout = text(&res.stdout);
    assert!(!stdout.contains("not measured"), "{stdout}");
    assert!(stdout.contains("latency-remote.json"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("latency-remote.json")).unwrap())
            .unwrap();
    assert_eq!(v["mode"], "remote");
    assert_eq!(v["cells"].as_array().unwrap().len(), 0, "{v}");
    let remote = v["remote"].as_array().unwrap();
    assert_eq!(remote.len(), 1, "{v}");
    let r = &remote[0];
    assert_eq!(r["transport"], "udp");
    assert!(r["error"].is_null(), "{r}");
    assert_eq!(r["play_args"], serde_json::json!(["--latency", "40ms"]));
    // Stopped after 3 s as Ctrl-C would: about 3 s of 10 ms frames, each with its latency.
    let s = &r["summary"];
    let seconds = s["seconds"].as_f64().unwrap();
    assert!((2.0..=3.5).contains(&seconds), "{s}");
    assert_eq!(r["latency_ms"]["count"], s["received"], "{r}");
    assert!(s["received"].as_u64().unwrap() >= 200, "{s}");
    // The player's pinned 40 ms, not the adaptive default's 10 ms.
    assert_eq!(s["target_ms"].as_f64().unwrap(), 40.0, "{s}");
    let p50 = r["latency_ms"]["p50"].as_f64().unwrap();
    assert!((39.0..50.0).contains(&p50), "{r}");
    let md = std::fs::read_to_string(dir.join("latency-remote.md")).unwrap();
    assert!(
        md.contains("| udp | remote | | your network | `--latency 40ms` | "),
        "{md}"
    );
    assert!(dir.join("latency-remote-cdf.svg").exists());
}

#[test]
fn bench_remote_refuses_player_options_it_sets_or_play_does_not_take() {
    let tmp = tmpdir("bench-remote-options");
    let out = tmp.path().to_str().unwrap();
    for (options, said) in [
        (
            &["--out", "x.wav"][..],
            "audiowire: `bench --remote` sets the player's --out itself: leave it out of the options after `--`",
        ),
        (
            &["--summary-json"][..],
            "audiowire: `bench --remote` sets the player's --summary-json itself: leave it out of the options after `--`",
        ),
        (
            &["--late=wait"][..],
            "audiowire: `bench --remote` sets the player's --late itself: leave it out of the options after `--`",
        ),
        (
            &["--stats"][..],
            "audiowire: `bench --remote` reads the player's --stats-json lines, which --stats (a status line) cannot go with: leave it out of the options after `--`",
        ),
        (
            &["--transport", "udp"][..],
            "audiowire: --transport is the bench's, not the player's: give it before `--` (`audiowire bench --remote HOST:PORT --transport ...`)",
        ),
        (
            &["--help"][..],
            "audiowire: help and version are not player options: see `audiowire play --help` for those that go after `--`",
        ),
        (
            &["--latency", "lots"][..],
            "audiowire: the player options after `--` are not ones `audiowire play` takes: invalid value 'lots' for '--latency <LATENCY>'",
        ),
        (
            &["--bogus"][..],
            "audiowire: the player options after `--` are not ones `audiowire play` takes: unexpected argument '--bogus' found (see `audiowire play --help`)",
        ),
    ] {
        // Port 9 (discard): nothing is ever asked of it, the options are refused first.
        let mut args = vec!["bench", "--remote", "127.0.0.1:9", "--out", out, "--"];
        args.extend_from_slice(options);
        let res = run(&args, Duration::from_secs(10));
        assert_eq!(res.status.code(), Some(1), "{options:?}");
        let err = text(&res.stderr);
        assert!(err.starts_with(said), "{options:?}: {err}");
        // Refused before anything ran: no results written.
        assert!(!tmp.path().join("latency-remote.json").exists());
    }
}
