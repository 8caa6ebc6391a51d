//! The real `audiowire netsim` binary relaying UDP and TCP on 127.0.0.1 to echo peers written
//! here: the bound port read from its log, traffic checked against the seeded model, and its
//! counters printed on Ctrl-C. Every wait is bounded.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use audiowire_netsim::{Config, Fate, Impairment, Loss, RelayConfig};
use common::{bin, signal, text, wait_output};

const MS: Duration = Duration::from_millis(1);

/// A running `audiowire netsim`, killed on drop unless already waited for.
struct Netsim {
    child: Option<Child>,
    addr: SocketAddr,
    start_line: String,
}

impl Netsim {
    /// Starts `audiowire netsim --listen 127.0.0.1:0 --forward FORWARD EXTRA...` and waits (at
    /// most 10 s) for the `relaying PROTO ADDR -> ...` line that names the bound address.
    #[allow(
        clippy::zombie_processes,
        reason = "the child moves into Netsim, whose Drop kills and waits for it"
    )]
    fn start(forward: SocketAddr, extra: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .args(["netsim", "--listen", "127.0.0.1:0", "--forward"])
            .arg(forward.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start audiowire netsim");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("netsim did not report its address within 10 s");
            if let Some(rest) = line.split("relaying ").nth(1) {
                let addr = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
                return Self {
                    child: Some(child),
                    addr,
                    start_line: line,
                };
            }
        }
    }

    /// Ctrl-C, then the exit status and what it printed on stdout (at most 10 s).
    fn interrupt(mut self) -> (bool, String) {
        let child = self.child.take().unwrap();
        signal(&child, "-INT");
        let out = wait_output(child, Duration::from_secs(10));
        (out.status.success(), text(&out.stdout))
    }
}

impl Drop for Netsim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A UDP peer on 127.0.0.1 that sends every datagram back; stops on drop.
struct UdpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl UdpEcho {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(10 * MS)).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Self { addr, stop }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The number before `label` in the part of `line` after `section`.
fn count(line: &str, section: &str, label: &str) -> u64 {
    let part = line
        .split(section)
        .nth(1)
        .unwrap_or_else(|| panic!("no {section:?} in {line:?}"));
    let before = part
        .split(label)
        .next()
        .unwrap_or_else(|| panic!("no {label:?} in {part:?}"));
    before
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no count before {label:?} in {part:?}"))
}

#[test]
fn netsim_relays_udp_with_the_delay_and_the_seeded_losses() {
    let echo = UdpEcho::start();
    let netsim = Netsim::start(
        echo.addr,
        &["--delay", "15ms", "--loss", "20%", "--seed", "5"],
    );
    assert!(
        netsim.start_line.contains("relaying udp 127.0.0.1:")
            && netsim
                .start_line
                .contains("delay 15 ms, loss 20 % (random) each way")
            && netsim.start_line.contains("seed 5"),
        "{}",
        netsim.start_line
    );
    // What the seeded model says will come back: the binary derives both directions the way
    // RelayConfig::symmetric does.
    let n = 200u32;
    let relay = RelayConfig::symmetric(Config {
        delay: 15 * MS,
        loss: Loss::Random(0.2),
        seed: 5,
        ..Config::default()
    });
    let survivors = |config: &Config, packets: u32| {
        let mut m = Impairment::new(config.clone()).unwrap();
        (0..packets)
            .filter(|&i| m.submit(MS * i, 100) != Fate::Lost)
            .count() as u32
    };
    let expected = survivors(&relay.downstream, survivors(&relay.upstream, n));

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(netsim.addr).unwrap();
    socket.set_read_timeout(Some(5 * MS)).unwrap();
    let mut sent = Vec::new();
    let mut rtts = Vec::new();
    let mut buf = [0u8; 256];
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    while rtts.len() < expected as usize {
        assert!(
            Instant::now() < deadline,
            "{} of {expected} echoes",
            rtts.len()
        );
        if sent.len() < n as usize && Instant::now() >= start + MS * sent.len() as u32 {
            let id = sent.len() as u32;
            let mut d = id.to_be_bytes().to_vec();
            d.resize(100, 0xa5);
            // Stamped before it leaves: a relay woken on time (real-time threads) answers
            // within microseconds of 30 ms, closer than a stamp taken after `send` returns.
            sent.push(Instant::now());
            socket.send(&d).unwrap();
            continue;
        }
        if let Ok(len) = socket.recv(&mut buf) {
            assert_eq!(len, 100);
            let id = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            rtts.push(sent[id].elapsed());
        }
    }
    let (ok, stdout) = netsim.interrupt();
    assert!(ok, "netsim did not exit cleanly: {stdout}");
    // Nothing more than the model said came back.
    assert!(
        socket.recv(&mut buf).is_err(),
        "an extra datagram came back"
    );
    assert!(
        rtts.iter().all(|&r| r >= 30 * MS),
        "a round trip under 2 × 15 ms"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("netsim udp:"))
        .unwrap_or_else(|| panic!("no counters in {stdout:?}"));
    assert_eq!(count(line, "upstream:", " in"), u64::from(n), "{line}");
    let lost = count(line, "upstream:", " lost") + count(line, "downstream:", " lost");
    assert_eq!(u64::from(n) - lost, u64::from(expected), "{line}");
    assert_eq!(
        count(line, "downstream:", " delivered"),
        u64::from(expected),
        "{line}"
    );
    // The relay timed every datagram it sent against its instant.
    let timing = stdout
        .lines()
        .find(|l| l.starts_with("netsim timing:"))
        .unwrap_or_else(|| panic!("no timing in {stdout:?}"));
    assert_eq!(
        count(timing, "downstream ", " sent"),
        u64::from(expected),
        "{timing}"
    );
}

#[test]
fn netsim_relays_tcp_intact() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let echo = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
        let _ = s.shutdown(Shutdown::Write);
    });
    let netsim = Netsim::start(target, &["--tcp", "--profile", "lan", "--delay", "10ms"]);
    assert!(
        netsim.start_line.contains("relaying tcp 127.0.0.1:")
            && netsim.start_line.contains("profile lan"),
        "{}",
        netsim.start_line
    );
    let mut stream = TcpStream::connect(netsim.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let start = Instant::now();
    stream.write_all(&data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    assert!(
        back == data,
        "{} of {} bytes back, or changed",
        back.len(),
        data.len()
    );
    assert!(start.elapsed() >= 20 * MS);
    echo.join().unwrap();
    let (ok, stdout) = netsim.interrupt();
    assert!(ok);
    assert!(
        stdout.contains("netsim tcp: 1 connections") && stdout.contains("50000 bytes upstream"),
        "{stdout}"
    );
}

#[test]
fn netsim_refuses_impossible_options_in_one_line() {
    let out = common::run(
        &[
            "netsim",
            "--listen",
            "127.0.0.1:0",
            "--forward",
            "127.0.0.1:9",
            "--loss",
            "60%",
            "--burst",
            "1",
        ],
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("audiowire: invalid loss: 60 %"), "{err}");
}
