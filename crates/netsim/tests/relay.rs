//! The relays over loopback: a UDP and a TCP echo peer written here, traffic through a relay,
//! and the outcome checked against the delay configured and the model's own counters. Every
//! wait polls with a deadline.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use audiowire_netsim::{
    Config, Fate, Impairment, Loss, RateLimit, RelayConfig, TcpRelay, UdpRelay,
};

const MS: Duration = Duration::from_millis(1);

/// A UDP peer on 127.0.0.1 that sends every datagram back where it came from.
struct UdpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(10 * MS)).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client socket on 127.0.0.1 that talks to `relay`.
fn client(relay: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(relay).unwrap();
    socket.set_read_timeout(Some(10 * MS)).unwrap();
    socket
}

/// Datagram `id` of `len` bytes: the id, then a pattern.
fn datagram(id: u32, len: usize) -> Vec<u8> {
    let mut d = id.to_be_bytes().to_vec();
    d.extend((4..len).map(|i| (i as u32 ^ id) as u8));
    d
}

/// Sends `n` datagrams, one every `spacing`, and collects the echoes until `done` says every
/// expected one is in, or `timeout`: id → round-trip time.
fn ping(
    socket: &UdpSocket,
    n: u32,
    spacing: Duration,
    timeout: Duration,
    mut done: impl FnMut(usize) -> bool,
) -> HashMap<u32, Duration> {
    let mut sent = HashMap::new();
    let mut got = HashMap::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut next_id = 0;
    loop {
        let now = Instant::now();
        if next_id < n && now >= start + spacing * next_id {
            socket.send(&datagram(next_id, 200)).unwrap();
            sent.insert(next_id, now);
            next_id += 1;
            continue;
        }
        if next_id == n && done(got.len()) {
            return got;
        }
        assert!(
            now < start + timeout,
            "timed out: {} of {n} back",
            got.len()
        );
        if let Ok(len) = socket.recv(&mut buf) {
            let id = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            assert_eq!(&buf[..len], &datagram(id, 200)[..], "datagram {id} intact");
            let rtt = sent[&id].elapsed();
            assert!(
                got.insert(id, rtt).is_none(),
                "datagram {id} came back twice"
            );
        }
    }
}

/// Polls (every 5 ms, at most `timeout`) until `f` holds.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(5 * MS);
    }
}

#[test]
fn udp_relay_delays_both_ways_and_loses_nothing_without_loss() {
    let echo = UdpEcho::start();
    let config = Config {
        delay: 20 * MS,
        jitter: 5 * MS,
        seed: 1,
        ..Config::default()
    };
    let relay = UdpRelay::start(
        "127.0.0.1:0",
        &echo.addr.to_string(),
        RelayConfig::symmetric(config),
    )
    .unwrap();
    let socket = client(relay.local_addr());
    let got = ping(&socket, 100, 2 * MS, Duration::from_secs(10), |n| n == 100);
    // Each way adds at least 20 − 5 ms: the round trip at least 30 ms, whatever the load.
    let min = got.values().min().unwrap();
    let max = got.values().max().unwrap();
    assert!(*min >= 30 * MS, "fastest round trip {min:?}");
    assert!(*max < Duration::from_secs(2), "slowest round trip {max:?}");
    // Every delivery was timed against its instant; what a busy machine made late is listed.
    let (up, down) = relay.lateness();
    for l in [&up, &down] {
        assert_eq!(l.sent, 100, "{l}");
        assert_eq!(l.when.len() as u64, l.late, "{l}");
        assert!(l.worst < *max, "{l}, slowest round trip {max:?}");
    }
    let stats = relay.stop();
    for s in [stats.upstream, stats.downstream] {
        assert_eq!(
            (s.submitted, s.passed, s.delivered, s.lost),
            (100, 100, 100, 0)
        );
    }
    assert_eq!((stats.clients_total, stats.send_errors), (1, 0));
    eprintln!("round trip through 20 ms ± 5 ms each way: {min:?} to {max:?}");
}

#[test]
fn udp_relay_with_total_loss_delivers_nothing() {
    let echo = UdpEcho::start();
    let config = Config {
        loss: Loss::Random(1.0),
        ..Config::default()
    };
    let relay = UdpRelay::start(
        "127.0.0.1:0",
        &echo.addr.to_string(),
        RelayConfig::symmetric(config),
    )
    .unwrap();
    let socket = client(relay.local_addr());
    for id in 0..50 {
        socket.send(&datagram(id, 100)).unwrap();
    }
    wait_until("the relay to see all 50", Duration::from_secs(5), || {
        relay.stats().upstream.submitted == 50
    });
    // All were lost on entry, so nothing is in flight and nothing can come back.
    let stats = relay.stats();
    assert_eq!((stats.upstream.lost, relay.in_flight()), (50, 0));
    let mut buf = [0u8; 256];
    socket.set_read_timeout(Some(100 * MS)).unwrap();
    assert!(socket.recv(&mut buf).is_err(), "a datagram came through");
    assert_eq!(relay.stop().downstream.submitted, 0);
}

#[test]
fn udp_relay_loses_exactly_what_the_seeded_model_says() {
    let echo = UdpEcho::start();
    let config = Config {
        delay: 2 * MS,
        loss: Loss::Random(0.2),
        seed: 2024,
        ..Config::default()
    };
    let relay_config = RelayConfig::symmetric(config);
    let relay =
        UdpRelay::start("127.0.0.1:0", &echo.addr.to_string(), relay_config.clone()).unwrap();
    let socket = client(relay.local_addr());
    let n = 400;
    let got = ping(&socket, n, MS, Duration::from_secs(20), |received| {
        // Done when everything sent has been accounted for in both directions, and every
        // datagram the relay delivered has been read (the last may still be in our socket).
        let s = relay.stats();
        s.upstream.submitted == u64::from(n)
            && s.upstream.delivered == s.upstream.passed
            && s.downstream.submitted == s.upstream.passed
            && s.downstream.delivered == s.downstream.passed
            && received as u64 == s.downstream.delivered
    });
    let stats = relay.stop();
    let (up, down) = (stats.upstream, stats.downstream);
    assert_eq!(got.len() as u64, down.delivered);
    assert_eq!(got.len() as u64, u64::from(n) - up.lost - down.lost);
    // The relay applies the model exactly: the same seed, fed the same packets in virtual
    // time, loses the same number each way.
    let lost_by_model = |config: &Config, packets: u64| {
        let mut m = Impairment::new(config.clone()).unwrap();
        (0..packets)
            .filter(|&i| m.submit(MS * i as u32, 200) == Fate::Lost)
            .count() as u64
    };
    assert_eq!(up.lost, lost_by_model(&relay_config.upstream, u64::from(n)));
    assert_eq!(
        down.lost,
        lost_by_model(&relay_config.downstream, up.passed)
    );
    let share = up.lost as f64 / f64::from(n);
    assert!((0.12..0.28).contains(&share), "upstream loss {share}");
    eprintln!(
        "20 % each way: {} of {n} lost upstream, {} of {} downstream, {} back",
        up.lost,
        down.lost,
        up.passed,
        got.len()
    );
}

#[test]
fn udp_relay_keeps_many_clients_apart() {
    let echo = UdpEcho::start();
    let relay = UdpRelay::start(
        "127.0.0.1:0",
        &echo.addr.to_string(),
        RelayConfig::symmetric(Config {
            delay: 3 * MS,
            ..Config::default()
        }),
    )
    .unwrap();
    let clients: Vec<UdpSocket> = (0..8).map(|_| client(relay.local_addr())).collect();
    for (c, socket) in clients.iter().enumerate() {
        for k in 0..10 {
            socket.send(&datagram(c as u32 * 1000 + k, 64)).unwrap();
        }
    }
    for (c, socket) in clients.iter().enumerate() {
        let mut ids = Vec::new();
        let mut buf = [0u8; 256];
        let deadline = Instant::now() + Duration::from_secs(5);
        while ids.len() < 10 {
            assert!(Instant::now() < deadline, "client {c} got {ids:?}");
            if let Ok(n) = socket.recv(&mut buf) {
                let id = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                assert_eq!(&buf[..n], &datagram(id, 64)[..]);
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let expected: Vec<u32> = (0..10).map(|k| c as u32 * 1000 + k).collect();
        assert_eq!(ids, expected, "client {c} got only its own datagrams");
    }
    let stats = relay.stop();
    assert_eq!((stats.clients_total, stats.refused), (8, 0));
}

#[test]
fn udp_relay_refuses_clients_beyond_its_limit() {
    let echo = UdpEcho::start();
    let mut config = RelayConfig::symmetric(Config::default());
    config.max_clients = 2;
    let relay = UdpRelay::start("127.0.0.1:0", &echo.addr.to_string(), config).unwrap();
    let clients: Vec<UdpSocket> = (0..3).map(|_| client(relay.local_addr())).collect();
    for socket in &clients {
        socket.send(b"hello").unwrap();
    }
    wait_until("three datagrams seen", Duration::from_secs(5), || {
        let s = relay.stats();
        s.upstream.submitted + s.refused == 3
    });
    let stats = relay.stop();
    assert_eq!((stats.clients_total, stats.refused), (2, 1));
}

#[test]
fn udp_relay_refuses_bad_configs_and_addresses_in_one_line() {
    let bad = RelayConfig::symmetric(Config {
        duplicate: 1.5,
        ..Config::default()
    });
    let e = UdpRelay::start("127.0.0.1:0", "127.0.0.1:9", bad).unwrap_err();
    assert!(e.to_string().starts_with("invalid duplicate share"), "{e}");
    let good = RelayConfig::symmetric(Config::default());
    let e = UdpRelay::start("127.0.0.1:0", "nonsense", good.clone()).unwrap_err();
    assert!(e.to_string().starts_with("cannot resolve nonsense"), "{e}");
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = UdpRelay::start(&addr, "127.0.0.1:9", good).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot listen on {addr}")),
        "{e}"
    );
}

/// A TCP peer on 127.0.0.1 that echoes each connection until its end, then closes.
fn tcp_echo() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => stream.write_all(&buf[..n]).unwrap(),
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
    });
    (addr, t)
}

#[test]
fn tcp_relay_delivers_bytes_intact_in_order_and_delayed() {
    let (echo, echo_thread) = tcp_echo();
    let config = Config {
        delay: 25 * MS,
        jitter: 10 * MS,
        // Loss, reordering and duplication never apply to a stream.
        loss: Loss::Random(0.5),
        reorder: 0.5,
        duplicate: 0.5,
        rate: Some(RateLimit::new(16_000_000)),
        seed: 3,
        ..Config::default()
    };
    let relay = TcpRelay::start(
        "127.0.0.1:0",
        &echo.to_string(),
        RelayConfig::symmetric(config),
    )
    .unwrap();
    let mut stream = TcpStream::connect(relay.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let mut writer = stream.try_clone().unwrap();
    let to_send = data.clone();
    let w = thread::spawn(move || {
        // In pieces, so the relay sees many chunks, each with its own jitter.
        for piece in to_send.chunks(1000) {
            writer.write_all(piece).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut first = None;
    let mut back = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        first.get_or_insert_with(|| start.elapsed());
        back.extend_from_slice(&buf[..n]);
    }
    let elapsed = start.elapsed();
    w.join().unwrap();
    echo_thread.join().unwrap();
    assert!(
        back == data,
        "{} bytes back of {}, or out of order",
        back.len(),
        data.len()
    );
    let first = first.unwrap();
    // At least 25 − 10 ms each way; 400 kB at 16 Mbit/s take 200 ms on the wire each way.
    assert!(first >= 30 * MS, "first byte back after {first:?}");
    assert!(elapsed >= 200 * MS, "all back after {elapsed:?}");
    wait_until("the connection to close", Duration::from_secs(5), || {
        relay.stats().active == 0
    });
    let (up, down) = relay.lateness();
    assert!(up.sent > 0 && down.sent > 0, "{up}; {down}");
    let stats = relay.stop();
    assert_eq!(stats.bytes_up, data.len() as u64);
    assert_eq!(stats.bytes_down, data.len() as u64);
    assert_eq!((stats.connections_total, stats.connect_failures), (1, 0));
    eprintln!("tcp: first byte back after {first:?}, all 400 kB after {elapsed:?}");
}

#[test]
fn tcp_relay_closes_a_client_whose_target_is_gone() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = TcpRelay::start(
        "127.0.0.1:0",
        &closed.to_string(),
        RelayConfig::symmetric(Config::default()),
    )
    .unwrap();
    let mut stream = TcpStream::connect(relay.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    // The relay closes the connection: end of stream or reset, not a hang.
    assert!(matches!(stream.read(&mut buf), Ok(0) | Err(_)));
    wait_until("the failure to be counted", Duration::from_secs(5), || {
        relay.stats().connect_failures == 1
    });
    let started = Instant::now();
    let stats = relay.stop();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!((stats.connections_total, stats.active), (0, 0));
}
