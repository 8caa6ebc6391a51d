//! The player's playout core on the bench's networks, in virtual time: what its logic alone does
//! with jitter and loss, free of the machine's stops, which the end-to-end bench cannot tell
//! apart from it.
//!
//! Frames of a mono 48 kHz PCM stream (one datagram each) go through netsim's impairment model
//! ([`audiowire_netsim::Link`], the relay's own seeded model and profiles; over TCP its stream
//! form: in order, no loss) into the player's [`Playout`] (jitter buffer, adaptive target, level
//! controller), with the player's defaults (`play --late conceal`: the adaptive target from
//! 10 ms, late frames bridged for 40 ms). A null output takes a frame at a time, each at its
//! turn, as `play --out`'s null clock does, and the feeding rules are the player's own
//! functions: frames go to the output as they come; a missing one is given up only when the
//! queue cannot cover the next callback and that callback is about due ([`must_give_up`]); the
//! target keeps the feeding slack and [`OUTPUT_MARGIN`] above the quantile ([`null_margin`]),
//! and that is its floor, a frame more (at most 10 ms) for the first 2 s ([`null_floor`]); the
//! start waits for a frame more than the target ([`null_start_level`]). The
//! player's margin widening after underruns is left out. One clock, no drift; time moves in
//! 0.25 ms steps.
//!
//! Latency is the end-to-end bench's: from the instant a frame was due to be sent to the
//! instant its first sample leaves the null output. Each cell runs `RUNS` seeds of `SECONDS`.
//!
//! `cargo bench -p audiowire-bench --bench playout` prints a Markdown table.
#![allow(
    clippy::unwrap_used,
    reason = "bench code: a panic is the failure report"
)]

use std::time::Duration;

use audiowire_netsim::{Link, Profile};
use audiowire_protocol::{Audio, Codec, SampleFormat, StreamInfo};
use audiowire_receiver::jitter::{Popped, TargetPolicy};
use audiowire_receiver::player::{
    BRIDGE, DEFAULT_LATENCY, DEFAULT_LATENCY_MAX, DEFAULT_LATENCY_MIN, OUTPUT_MARGIN, START_WINDOW,
    must_give_up, null_floor, null_margin, null_start_level,
};
use audiowire_receiver::playout::Playout;

const RATE: u32 = 48_000;
const RUNS: u64 = 30;
const SECONDS: f64 = 20.0;
/// Virtual time moves in steps of this many seconds.
const TICK: f64 = 0.000_25;

/// What one run measured.
struct Run {
    latency_p50_ms: f64,
    network_p99_ms: f64,
    underruns: u64,
    underruns_after_2s: u64,
    concealed: u64,
    frames: u64,
}

fn run(profile: Profile, tcp: bool, frame_ms: f64, seed: u64) -> Run {
    let spf = (f64::from(RATE) * frame_ms / 1000.0).round() as u64;
    let frame = spf as f64 / f64::from(RATE);
    let info = StreamInfo {
        sample_rate: RATE,
        channels: 1,
        format: SampleFormat::S16,
        codec: Codec::Pcm,
        samples_per_frame: spf as u32,
        total_frames: None,
        live: false,
    };
    let mut policy =
        TargetPolicy::adaptive(DEFAULT_LATENCY_MIN, DEFAULT_LATENCY, DEFAULT_LATENCY_MAX);
    policy.bridge = BRIDGE;
    let mut playout = Playout::new(info, policy);
    let config = profile.config().with_seed(seed);
    let config = if tcp { config.for_stream() } else { config };
    let mut link: Link<Vec<u8>> = Link::new(config).unwrap();
    // The null output's rules: its target keeps `null_margin` above the quantile; its floor
    // (`null_floor`) and the start (a frame more than the target) are set as the feeding
    // thread goes.
    playout.set_margin(Duration::from_secs_f64(null_margin(OUTPUT_MARGIN, frame)));

    let mut sent = 0u64;
    let mut delays = Vec::new();
    let mut latencies = Vec::new();
    // Seconds of audio queued for the output; its first callback, and its next.
    let mut queued = 0.0f64;
    let mut first_callback: Option<f64> = None;
    let mut next_callback = 0.0f64;
    let mut underruns_at_2s = None;
    let at = Duration::from_secs_f64;
    for step in 0..(SECONDS / TICK) as u64 {
        let now = step as f64 * TICK;
        // The sender: every frame whose time has come, its sequence number in its first bytes.
        while sent as f64 * frame <= now {
            let mut packet = sent.to_be_bytes().to_vec();
            packet.resize(spf as usize * 2, 0);
            link.send(at(sent as f64 * frame), packet);
            sent += 1;
        }
        while let Some((arrived, packet)) = link.poll(at(now)) {
            let seq = u64::from_be_bytes(packet[..8].try_into().unwrap());
            delays.push(arrived.as_secs_f64() - seq as f64 * frame);
            let audio = Audio {
                sequence: seq,
                position: seq * spf,
                timestamp_us: 0,
                payload: packet,
            };
            playout.push(audio, at(now));
        }
        if let Some(first) = first_callback
            && underruns_at_2s.is_none()
            && now - first >= START_WINDOW.as_secs_f64()
        {
            underruns_at_2s = Some(playout.stats().jitter.underruns);
        }
        playout.set_floor(at(null_floor(
            OUTPUT_MARGIN,
            frame,
            underruns_at_2s.is_none(),
        )));
        if first_callback.is_none() {
            playout.set_start_level(at(null_start_level(frame, playout.target().as_secs_f64())));
        }
        // The feeding thread. (The output takes whole samples, this model f64 seconds: a queue
        // of exactly a frame must not read as less.)
        for _ in 0..1_000 {
            let until = first_callback.map_or(0.0, |_| next_callback - now);
            let urgent = must_give_up(queued + 1e-9, until, frame);
            let downstream = until + queued;
            match playout.next_when(at(now), downstream, urgent) {
                // As the player: a frame a stall's fill stood in for is not played again.
                Popped::Frame { stood_in: true, .. } => {}
                Popped::Frame {
                    position, arrival, ..
                } => {
                    if arrival.is_some() {
                        latencies.push(now + downstream - position as f64 / f64::from(RATE));
                    }
                    queued += frame;
                }
                Popped::Stall { .. } => queued += frame,
                Popped::Waiting | Popped::Ended => break,
            }
        }
        // The output starts with the first audio queued, then takes a frame at a time, each
        // callback `ratio` times a frame after the last (as the null clock resamples).
        if first_callback.is_none() && queued > 0.0 {
            first_callback = Some(now);
            next_callback = now;
        }
        if first_callback.is_some() && now >= next_callback {
            next_callback += frame * playout.ratio();
            queued = (queued - frame).max(0.0);
        }
    }
    let stats = playout.stats().jitter;
    Run {
        latency_p50_ms: quantile(&mut latencies, 0.5) * 1e3,
        network_p99_ms: quantile(&mut delays, 0.99) * 1e3,
        underruns: stats.underruns,
        underruns_after_2s: stats.underruns - underruns_at_2s.unwrap_or(stats.underruns),
        concealed: stats.concealed,
        frames: sent,
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    println!(
        "{RUNS} runs of {SECONDS} s per cell (seeds 1-{RUNS}), mono PCM, one datagram a frame\n"
    );
    println!(
        "| network | transport | frame | latency p50, median of runs (range) | network p99 | runs within 10 ms of it | underruns (after 2 s) | runs with none after 2 s | concealed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for profile in Profile::ALL {
        for tcp in [true, false] {
            for frame_ms in [2.5, 5.0, 10.0, 20.0] {
                let runs: Vec<Run> = (1..=RUNS)
                    .map(|seed| run(profile, tcp, frame_ms, seed))
                    .collect();
                let mut p50: Vec<f64> = runs.iter().map(|r| r.latency_p50_ms).collect();
                let mut net: Vec<f64> = runs.iter().map(|r| r.network_p99_ms).collect();
                let within = runs
                    .iter()
                    .filter(|r| r.latency_p50_ms - r.network_p99_ms <= 10.0)
                    .count();
                let underruns: u64 = runs.iter().map(|r| r.underruns).sum();
                let after: u64 = runs.iter().map(|r| r.underruns_after_2s).sum();
                let clean = runs.iter().filter(|r| r.underruns_after_2s == 0).count();
                let concealed: u64 = runs.iter().map(|r| r.concealed).sum();
                let frames: u64 = runs.iter().map(|r| r.frames).sum();
                let (lo, hi) = (
                    p50.iter().copied().fold(f64::MAX, f64::min),
                    p50.iter().copied().fold(f64::MIN, f64::max),
                );
                println!(
                    "| {} | {} | {frame_ms} ms | {:.1} ms ({lo:.1}–{hi:.1}) | {:.1} ms | {within} of {RUNS} | {underruns} ({after}) | {clean} of {RUNS} | {:.2} % |",
                    profile.name(),
                    if tcp { "TCP" } else { "UDP" },
                    quantile(&mut p50, 0.5),
                    quantile(&mut net, 0.5),
                    100.0 * concealed as f64 / frames as f64,
                );
            }
        }
    }
}
