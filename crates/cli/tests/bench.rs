//! What the benches read from the real binary: `play --summary-json` and `--latency-log`, and
//! `audiowire bench` itself on one short run over loopback.
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
