//! Load and soak against the real `audiowire send`: many players at once over TCP and UDP, all
//! bit-exact with no underrun; connect/disconnect cycles after which the sender's file
//! descriptors, threads and memory are back where they were; and an unpaced stream of many hours
//! of audio during which the sender's memory stays flat.
//!
//! The players are in-process (`common/client.rs`): a thread each that speaks the protocol,
//! checks every frame against the source and models a player's playout to count underruns.
//!
//! CI runs smaller counts. `AUDIOWIRE_LOAD=full` runs the full ones (docs/reliability.md):
//! 200 TCP players, 1000 UDP players, 1000 cycles, 24 hours of audio.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

#[path = "common/client.rs"]
mod client;
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use client::{
    Played, Source, cpu_time, fd_count, hello, play_tcp, play_udp, rss_kib, thread_count,
};
use common::*;

/// True when `AUDIOWIRE_LOAD=full`: the full counts.
fn full() -> bool {
    std::env::var("AUDIOWIRE_LOAD").is_ok_and(|v| v == "full")
}

/// `ci` normally, `full` with `AUDIOWIRE_LOAD=full`; `AUDIOWIRE_LOAD_<NAME>=N` overrides both.
fn count(name: &str, ci: u64, full_count: u64) -> u64 {
    std::env::var(format!("AUDIOWIRE_LOAD_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full() { full_count } else { ci })
}

/// The tests of this file run one at a time: each measures the machine's 2 cores under load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The playout model's target latency: the player's default.
const TARGET: Duration = Duration::from_millis(50);

/// Runs `n` players at once (a thread each, small stacks) and returns what each saw.
fn players(
    n: u64,
    play: impl Fn() -> Result<Played, String> + Send + Sync + 'static,
) -> Vec<Result<Played, String>> {
    let play = Arc::new(play);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let play = Arc::clone(&play);
            thread::Builder::new()
                .name(format!("load player {i}"))
                .stack_size(256 * 1024)
                .spawn(move || play())
                .unwrap()
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Asserts every player got the whole stream bit-exact, with no frame lost and none later than
/// `late_bound` for the playout model; prints the figures.
fn assert_all_complete(
    what: &str,
    results: &[Result<Played, String>],
    source: &Source,
    took: Duration,
    sender_pid: u32,
    players_cpu0: Duration,
    late_bound: Duration,
) {
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} failed, first: {}",
        failed.len(),
        failed[0]
    );
    let played: Vec<&Played> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let underruns: u64 = played.iter().map(|p| p.underruns).sum();
    let lost: u64 = played.iter().map(|p| p.lost).sum();
    let min_slack = played
        .iter()
        .filter_map(|p| p.min_slack)
        .min()
        .unwrap_or_default();
    let max_late = played.iter().map(|p| p.max_late).max().unwrap_or_default();
    let late_players = played.iter().filter(|p| p.underruns > 0).count();
    let first_late = played.iter().filter_map(|p| p.first_late).min();
    let last_first_late = played.iter().filter_map(|p| p.first_late).max();
    eprintln!(
        "{what}: {} players complete in {:.2} s · {underruns} underruns · {lost} frames lost · \
         smallest slack {:.1} ms · most late {:.1} ms · {late_players} players late, \
         first late frames {first_late:?} to {last_first_late:?} after their start · \
         CPU: sender {:.2} s, players {:.2} s",
        played.len(),
        took.as_secs_f64(),
        min_slack.as_secs_f64() * 1e3,
        max_late.as_secs_f64() * 1e3,
        cpu_time(&sender_pid.to_string()).as_secs_f64(),
        (cpu_time("self") - players_cpu0).as_secs_f64(),
    );
    for p in &played {
        assert_eq!(p.end, Some(source.frames()), "{what}: {p:?}");
        assert_eq!(p.frames, source.frames(), "{what}: {p:?}");
    }
    assert_eq!(lost, 0, "{what}: frames lost on loopback");
    if late_bound.is_zero() {
        assert_eq!(underruns, 0, "{what}: underruns (most late {max_late:?})");
    } else {
        assert!(max_late <= late_bound, "{what}: a frame {max_late:?} late");
    }
}

#[test]
fn many_tcp_players_at_once_all_complete_bit_exact_with_no_underrun() {
    let _one = exclusive();
    let n = count("TCP", 100, 200);
    let src = clip("speech-22k-s16-mono.wav");
    let source = Source::wav(&src);
    let sender = Sender::start(&src, &[]);
    let pid = sender.child.id();
    let addr = sender.addr.clone();
    let s2 = source.clone();
    let started = Instant::now();
    let cpu0 = cpu_time("self");
    // How late this machine wakes a sleeping thread meanwhile (a thread sleeping 1 ms at a
    // time, as the bench measures it): a VM frozen longer than the buffer explains a late frame
    // that no sender could have prevented.
    let probe = audiowire_bench::wakeup::Probe::start().unwrap();
    let results = players(n, move || {
        play_tcp(&addr, &s2, TARGET, Duration::from_secs(60))
    });
    let took = started.elapsed();
    let froze = probe.finish().map_or(Duration::ZERO, |l| {
        Duration::from_secs_f64(l.late_ms.max / 1e3)
    });
    // No underrun at all: every frame before its turn in a 50 ms buffer, unless the machine
    // itself froze for most of that buffer.
    let machine_froze = froze >= TARGET - Duration::from_millis(15);
    eprintln!("the machine's longest wake-up delay meanwhile: {froze:?}");
    assert_all_complete(
        &format!("TCP ×{n}"),
        &results,
        &source,
        took,
        pid,
        cpu0,
        if machine_froze {
            TARGET
        } else {
            Duration::ZERO
        },
    );
}

#[test]
fn many_udp_players_at_once_all_complete_bit_exact_with_none_lost() {
    let _one = exclusive();
    let n = count("UDP", 200, 1000);
    let src = clip("speech-22k-s16-mono.wav");
    let source = Source::wav(&src);
    let sender = Sender::start(&src, &["--transport", "udp"]);
    let pid = sender.child.id();
    let addr = sender.addr.clone();
    let s2 = source.clone();
    let started = Instant::now();
    let cpu0 = cpu_time("self");
    let results = players(n, move || {
        play_udp(&addr, &s2, TARGET, Duration::from_secs(60))
    });
    // With a thousand sender threads and a thousand player threads on two cores, some frames
    // come later than a fixed 50 ms buffer allows (the figures are printed, and given in
    // docs/reliability.md). None is lost, and none comes later than the real player's adaptive
    // target can rise to (`--latency-max`, 1 s): after its first late frames it would catch up.
    let took = started.elapsed();
    let bound = Duration::from_secs(1);
    assert_all_complete(
        &format!("UDP ×{n}"),
        &results,
        &source,
        took,
        pid,
        cpu0,
        bound,
    );
}

/// One connection that goes away in one of four ways: after a little audio, at once, after
/// garbage, or after its `Hello` without reading.
fn cycle(addr: &str, i: u64) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match i % 4 {
        0 => {
            s.write_all(&hello("cycle", 20, None)).unwrap();
            let mut some = [0u8; 512];
            s.read_exact(&mut some).unwrap();
        }
        1 => {}
        2 => {
            let _ = s.write_all(&u64::MAX.to_be_bytes());
        }
        _ => {
            s.write_all(&hello("cycle", 20, None)).unwrap();
        }
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// Polls (bounded) until the sender's fds and threads are back at `fds` and `threads`.
fn settle(pid: u32, fds: usize, threads: u64, timeout: Duration) -> (usize, u64) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = (fd_count(pid), thread_count(pid));
        if now == (fds, threads) || Instant::now() > deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connect_disconnect_cycles_return_fds_threads_and_memory() {
    let _one = exclusive();
    let n = count("CYCLES", 300, 1000);
    let src = clip("sweep-48k-s16-stereo.wav");
    let sender = Sender::start(&src, &["--loop"]);
    let pid = sender.child.id();
    let (fds0, threads0) = (fd_count(pid), thread_count(pid));
    // Warm-up: the allocator's per-thread arenas and glibc's cache of thread stacks fill once;
    // the baseline for memory is taken after it.
    for i in 0..40 {
        cycle(&sender.addr, i);
    }
    let back = settle(pid, fds0, threads0, Duration::from_secs(20));
    assert_eq!(back, (fds0, threads0), "after the warm-up");
    let rss0 = rss_kib(pid);
    let started = Instant::now();
    for i in 0..n {
        cycle(&sender.addr, i);
    }
    let took = started.elapsed();
    let back = settle(pid, fds0, threads0, Duration::from_secs(20));
    let rss1 = rss_kib(pid);
    eprintln!(
        "{n} cycles in {:.1} s: fds {fds0} → {}, threads {threads0} → {}, VmRSS {rss0} → {rss1} KiB",
        took.as_secs_f64(),
        back.0,
        back.1
    );
    assert_eq!(back, (fds0, threads0), "fds and threads after {n} cycles");
    assert!(
        rss1 <= rss0 + RSS_TOLERANCE_KIB,
        "VmRSS {rss0} → {rss1} KiB after {n} cycles"
    );
}

/// How much the sender's VmRSS may differ from its baseline after the cycles or during the soak.
const RSS_TOLERANCE_KIB: u64 = 2048;

/// Reads an unpaced stream as fast as it comes until `audio_bytes` of samples arrived, checking
/// every frame's order and bytes against `source` (which loops), and sampling `pid`'s VmRSS every
/// 100 ms. Returns the samples (KiB) and the time taken.
fn soak(addr: &str, source: &Source, audio_bytes: u64, pid: u32) -> (Vec<u64>, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&hello("soak", 50, None)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (mut start, mut end) = (0usize, 0usize);
    let (mut got, mut sequence, mut position) = (0u64, 0u64, 0u64);
    let total = source.frames();
    let bpf = source.bytes_per_frame as u64;
    let mut rss = vec![rss_kib(pid)];
    let mut last_sample = Instant::now();
    let started = Instant::now();
    let mut info_seen = false;
    while got < audio_bytes {
        // Parse whole frames in place; the header is a u64 length, the envelope's tag at +1.
        while end - start >= 8 {
            let len = u64::from_be_bytes(buf[start..start + 8].try_into().unwrap()) as usize;
            assert!(len <= 1 << 20, "a frame of {len} bytes");
            if end - start < 8 + len {
                break;
            }
            let p = &buf[start + 8..start + 8 + len];
            match p[1] {
                0x02 if !info_seen => info_seen = true,
                0x03 => {
                    let seq = u64::from_be_bytes(p[2..10].try_into().unwrap());
                    let pos = u64::from_be_bytes(p[10..18].try_into().unwrap());
                    assert_eq!((seq, pos), (sequence, position), "order");
                    let samples = &p[26..];
                    let at = ((pos % total) * bpf) as usize;
                    assert!(
                        source.bytes.get(at..at + samples.len()) == Some(samples),
                        "Audio #{seq} differs from the source"
                    );
                    sequence += 1;
                    position += samples.len() as u64 / bpf;
                    got += samples.len() as u64;
                }
                t => panic!("unexpected message type 0x{t:02x}"),
            }
            start += 8 + len;
        }
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        match s.read(&mut buf[end..]) {
            Ok(0) => panic!("the sender closed after {got} bytes"),
            Ok(n) => end += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read after {got} bytes: {e}"),
        }
        if last_sample.elapsed() >= Duration::from_millis(100) {
            rss.push(rss_kib(pid));
            last_sample = Instant::now();
        }
    }
    rss.push(rss_kib(pid));
    (rss, started.elapsed())
}

#[test]
fn an_unpaced_stream_of_hours_of_audio_keeps_the_senders_memory_flat() {
    let _one = exclusive();
    let hours = count("SOAK_HOURS", 1, 24);
    let src = clip("sweep-48k-s16-stereo.wav");
    let source = Source::wav(&src);
    let sender = Sender::start(&src, &["--loop", "--unpaced"]);
    let pid = sender.child.id();
    let bytes = hours * 3600 * u64::from(source.rate) * source.bytes_per_frame as u64;
    let (rss, took) = soak(&sender.addr, &source, bytes, pid);
    // The baseline: once the stream runs (its buffers and thread allocated), after 5 % of it.
    let base = rss[rss.len() / 20];
    let (min, max) = (
        *rss[rss.len() / 20..].iter().min().unwrap(),
        *rss[rss.len() / 20..].iter().max().unwrap(),
    );
    eprintln!(
        "soak: {hours} h of audio ({:.2} GB) in {:.1} s ({:.0} MB/s, {:.0}× real time); \
         sender VmRSS {} KiB at start, {base} KiB at 5 %, {min}–{max} KiB after, {} at the end \
         ({} samples)",
        bytes as f64 / 1e9,
        took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64(),
        (hours * 3600) as f64 / took.as_secs_f64(),
        rss[0],
        rss[rss.len() - 1],
        rss.len()
    );
    assert!(
        max <= base + RSS_TOLERANCE_KIB && min + RSS_TOLERANCE_KIB >= base,
        "VmRSS moved from {base} KiB to {min}–{max} KiB"
    );
}
