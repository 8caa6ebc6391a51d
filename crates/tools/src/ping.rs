//! Ping, two ways.
//!
//! - [`check_all`]: is a host up? Opens a TCP connection to each `HOST:PORT` (many targets at
//!   once, on a bounded pool of threads), with a timeout per try, retries and a delay between
//!   tries, and says for each: up (with the connect time) or down, and why: connection refused,
//!   timed out, no such host.
//! - [`ping_framed`]: round-trip time and clock offset against an audiowire server, with
//!   `Ping`/`Pong` messages: min/avg/max/mdev like ping(8), and the NTP offset of the exchange with
//!   the lowest delay ([`audiowire_protocol::clock`]).

use std::fmt;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use audiowire_protocol::clock::{Exchange, OffsetFilter, RttStats};
use audiowire_protocol::{DEFAULT_MAX_FRAME_LEN, Message};

use crate::error::{Error, Result};
use crate::net::{self, Framed, Recv, now_us};

/// How to check targets.
#[derive(Debug, Clone)]
pub struct UpCheckConfig {
    /// How long one connection attempt may take.
    pub timeout: Duration,
    /// Tries after the first one fails.
    pub retries: u32,
    /// Pause between tries.
    pub delay: Duration,
    /// Targets checked at the same time.
    pub parallel: usize,
}

impl Default for UpCheckConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            retries: 0,
            delay: Duration::from_millis(500),
            parallel: 32,
        }
    }
}

/// Why a target is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// The host answered, but nothing listens on the port.
    Refused,
    /// No answer within the timeout (a firewall dropping packets, a host that is off, a full
    /// listen queue).
    TimedOut(Duration),
    /// The name does not resolve.
    NoSuchHost,
    /// The target is not `HOST:PORT`.
    BadTarget(String),
    /// Anything else the system said (network unreachable, …).
    Other(String),
}

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Down::Refused => f.write_str("connection refused"),
            Down::TimedOut(t) => write!(f, "timed out after {} s", t.as_secs_f64()),
            Down::NoSuchHost => f.write_str("no such host"),
            Down::BadTarget(r) => f.write_str(r),
            Down::Other(r) => f.write_str(r),
        }
    }
}

/// What one target turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A connection was accepted.
    Up {
        /// The address that answered.
        addr: SocketAddr,
        /// How long the connection took to open.
        connect: Duration,
        /// Which try worked (1 for the first).
        tries: u32,
    },
    /// No try worked; the reason is the last try's.
    Down {
        /// Why.
        reason: Down,
        /// Tries made.
        tries: u32,
    },
}

/// One target's result, printed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The target as given.
    pub target: String,
    /// What it turned out to be.
    pub outcome: Outcome,
}

impl Report {
    /// True when the target is up.
    pub fn is_up(&self) -> bool {
        matches!(self.outcome, Outcome::Up { .. })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tries = |n: u32| {
            if n > 1 {
                format!(", try {n}")
            } else {
                String::new()
            }
        };
        match &self.outcome {
            Outcome::Up {
                addr,
                connect,
                tries: n,
            } => write!(
                f,
                "{} is up: connected to {addr} in {:.3} ms{}",
                self.target,
                connect.as_secs_f64() * 1e3,
                tries(*n)
            ),
            Outcome::Down { reason, tries: n } => {
                write!(f, "{} is down: {reason}", self.target)?;
                if *n > 1 {
                    write!(f, " ({n} tries)")?;
                }
                Ok(())
            }
        }
    }
}

/// Resolves `host`/`port` to addresses (the system resolver in [`check`]; tests pass their own).
pub type Resolver = dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Sync;

fn system_resolver(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// One try: resolve, then connect to each address in turn.
fn try_once(
    host: &str,
    port: u16,
    timeout: Duration,
    resolve: &Resolver,
) -> std::result::Result<(SocketAddr, Duration), Down> {
    let addrs = match resolve(host, port) {
        Ok(a) if !a.is_empty() => a,
        _ => return Err(Down::NoSuchHost),
    };
    let mut last = Down::NoSuchHost;
    for addr in addrs {
        let started = Instant::now();
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok((addr, started.elapsed())),
            Err(e) => {
                last = match e.kind() {
                    ErrorKind::ConnectionRefused => Down::Refused,
                    ErrorKind::TimedOut | ErrorKind::WouldBlock => Down::TimedOut(timeout),
                    _ => Down::Other(net::reason(&e)),
                }
            }
        }
    }
    Err(last)
}

/// Checks one target with the system resolver.
pub fn check(target: &str, config: &UpCheckConfig, shutdown: &AtomicBool) -> Report {
    check_with(target, config, shutdown, &system_resolver)
}

/// Checks one target with `resolve`.
pub fn check_with(
    target: &str,
    config: &UpCheckConfig,
    shutdown: &AtomicBool,
    resolve: &Resolver,
) -> Report {
    let report = |outcome| Report {
        target: target.to_string(),
        outcome,
    };
    let (host, port) = match net::split_host_port(target) {
        Ok(hp) => hp,
        Err(Error::BadAddress { reason, .. }) => {
            return report(Outcome::Down {
                reason: Down::BadTarget(format!("not an address: {reason}")),
                tries: 0,
            });
        }
        Err(e) => {
            return report(Outcome::Down {
                reason: Down::Other(e.to_string()),
                tries: 0,
            });
        }
    };
    let mut tries = 0;
    loop {
        tries += 1;
        match try_once(&host, port, config.timeout, resolve) {
            Ok((addr, connect)) => {
                return report(Outcome::Up {
                    addr,
                    connect,
                    tries,
                });
            }
            Err(reason) => {
                if tries > config.retries || shutdown.load(Ordering::Relaxed) {
                    return report(Outcome::Down { reason, tries });
                }
            }
        }
        thread::sleep(config.delay);
    }
}

/// Checks every target, `config.parallel` at a time. Each report goes to `on_report` as soon as
/// it is known (so slow targets do not hold back fast ones); the reports come back in the
/// targets' order.
pub fn check_all(
    targets: &[String],
    config: &UpCheckConfig,
    shutdown: &AtomicBool,
    mut on_report: impl FnMut(&Report),
) -> Vec<Report> {
    let next = Mutex::new(0usize);
    let (tx, rx) = mpsc::channel::<(usize, Report)>();
    let workers = config.parallel.clamp(1, targets.len().max(1));
    let mut results: Vec<Option<Report>> = vec![None; targets.len()];
    thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(target) = targets.get(i) else { return };
                    if tx.send((i, check(target, config, shutdown))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        for (i, report) in rx {
            on_report(&report);
            results[i] = Some(report);
        }
    });
    results.into_iter().flatten().collect()
}

/// How to ping with `Ping`/`Pong`.
#[derive(Debug, Clone)]
pub struct PingConfig {
    /// Pings to send.
    pub count: u32,
    /// Pause between pings.
    pub interval: Duration,
    /// How long to wait for each pong.
    pub timeout: Duration,
}

impl Default for PingConfig {
    fn default() -> Self {
        Self {
            count: 4,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        }
    }
}

/// One answered ping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pong {
    /// The ping's number, from 0.
    pub seq: u64,
    /// Round-trip time on this machine's monotonic clock.
    pub rtt: Duration,
    /// The four timestamps.
    pub exchange: Exchange,
}

/// What a run of pings measured.
#[derive(Debug, Clone, Default)]
pub struct PingSummary {
    /// The server's address.
    pub addr: String,
    /// Pings sent.
    pub sent: u64,
    /// Pongs received in time.
    pub received: u64,
    /// Round-trip times, in ms.
    pub rtt_ms: RttStats,
    /// The clock offset estimate (µs).
    pub offset: OffsetFilter,
}

impl fmt::Display for PingSummary {
    /// The closing lines, as ping(8) prints them, and the clock offset.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loss = if self.sent == 0 {
            0.0
        } else {
            100.0 * (self.sent - self.received) as f64 / self.sent as f64
        };
        writeln!(f, "--- {} audiowire ping statistics ---", self.addr)?;
        write!(
            f,
            "{} sent, {} received, {loss:.0}% loss",
            self.sent, self.received
        )?;
        if let (Some(min), Some(avg), Some(max), Some(mdev)) = (
            self.rtt_ms.min(),
            self.rtt_ms.avg(),
            self.rtt_ms.max(),
            self.rtt_ms.mdev(),
        ) {
            write!(
                f,
                "\nrtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms"
            )?;
        }
        if let (Some(o), Some(e)) = (self.offset.offset_us(), self.offset.error_bound_us()) {
            write!(
                f,
                "\nclock offset {:+.3} ms ± {:.3} ms (the peer's clock is ahead when positive)",
                o / 1e3,
                e / 1e3
            )?;
        }
        Ok(())
    }
}

const WHAT: &str = "an audiowire server";

/// Pings `addr` `config.count` times (fewer if `shutdown` is set), calling `on_pong` for each
/// answer and `on_lost` for each ping not answered in time. Fails if the server cannot be reached,
/// or answered none.
pub fn ping_framed(
    addr: &str,
    config: &PingConfig,
    shutdown: &AtomicBool,
    mut on_pong: impl FnMut(&Pong),
    mut on_lost: impl FnMut(u64),
) -> Result<PingSummary> {
    let stream = net::connect(addr, config.timeout, WHAT)?;
    let _ = stream.set_write_timeout(Some(config.timeout));
    let mut conn = Framed::new(stream, addr, DEFAULT_MAX_FRAME_LEN);
    let mut summary = PingSummary {
        addr: addr.to_string(),
        ..PingSummary::default()
    };
    for seq in 0..u64::from(config.count) {
        if shutdown.load(Ordering::Relaxed) {
            break;
        }
        if seq > 0 {
            thread::sleep(config.interval);
        }
        let sent_at = Instant::now();
        let t1_us = now_us();
        conn.send(&Message::Ping { id: seq, t1_us })?;
        summary.sent += 1;
        let deadline = sent_at + config.timeout;
        loop {
            match conn.recv(deadline)? {
                Recv::Message(
                    Message::Pong {
                        id,
                        t1_us: t1,
                        t2_us,
                        t3_us,
                    },
                    t4_us,
                ) if id == seq && t1 == t1_us => {
                    let pong = Pong {
                        seq,
                        rtt: sent_at.elapsed(),
                        exchange: Exchange {
                            t1_us,
                            t2_us,
                            t3_us,
                            t4_us,
                        },
                    };
                    summary.received += 1;
                    summary.rtt_ms.push(pong.rtt.as_secs_f64() * 1e3);
                    summary.offset.push(pong.exchange);
                    on_pong(&pong);
                    break;
                }
                // A late answer to an earlier ping: already counted as lost.
                Recv::Message(Message::Pong { .. }, _) => {}
                Recv::Message(Message::Error { text, .. }, _) => {
                    return Err(Error::Refused {
                        peer: addr.to_string(),
                        text,
                    });
                }
                Recv::Message(other, _) => {
                    return Err(Error::PeerBroke {
                        peer: addr.to_string(),
                        reason: format!("it answered Ping with {}", other.name()),
                    });
                }
                Recv::Closed => {
                    return Err(Error::Closed {
                        peer: addr.to_string(),
                        when: "before answering (does it speak the audiowire protocol?)".into(),
                    });
                }
                Recv::Timeout => {
                    on_lost(seq);
                    break;
                }
            }
        }
    }
    if summary.sent > 0 && summary.received == 0 {
        return Err(Error::NoReply {
            peer: addr.to_string(),
            after: config.timeout,
            what: WHAT,
        });
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> UpCheckConfig {
        UpCheckConfig {
            timeout: Duration::from_millis(200),
            retries: 2,
            delay: Duration::from_millis(1),
            parallel: 4,
        }
    }

    #[test]
    fn a_name_that_does_not_resolve_is_no_such_host_after_every_try() {
        let no = AtomicBool::new(false);
        let fail: &Resolver = &|_, _| Err(std::io::Error::other("Name or service not known"));
        let r = check_with("nosuch.example:80", &config(), &no, fail);
        assert_eq!(
            r.outcome,
            Outcome::Down {
                reason: Down::NoSuchHost,
                tries: 3
            }
        );
        assert_eq!(
            r.to_string(),
            "nosuch.example:80 is down: no such host (3 tries)"
        );
    }

    #[test]
    fn a_target_without_a_port_is_reported_not_tried() {
        let no = AtomicBool::new(false);
        let r = check("localhost", &config(), &no);
        assert_eq!(
            r.to_string(),
            "localhost is down: not an address: write HOST:PORT, for example 127.0.0.1:7000 or [::1]:7000"
        );
    }

    #[test]
    fn up_and_refused_on_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let up = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        };
        let no = AtomicBool::new(false);
        let mut seen = 0;
        let reports = check_all(&[up.clone(), closed.clone()], &config(), &no, |_| seen += 1);
        assert_eq!(seen, 2);
        assert!(reports[0].is_up(), "{}", reports[0]);
        assert!(
            reports[0]
                .to_string()
                .starts_with(&format!("{up} is up: connected to {up} in "))
        );
        assert_eq!(
            reports[1].to_string(),
            format!("{closed} is down: connection refused (3 tries)")
        );
    }

    #[test]
    fn summary_prints_like_ping8() {
        let mut s = PingSummary {
            addr: "h:1".into(),
            sent: 4,
            received: 3,
            ..PingSummary::default()
        };
        for r in [1.0, 2.0, 3.0] {
            s.rtt_ms.push(r);
        }
        s.offset.push(Exchange {
            t1_us: 0,
            t2_us: 5_500,
            t3_us: 5_500,
            t4_us: 1_000,
        });
        assert_eq!(
            s.to_string(),
            "--- h:1 audiowire ping statistics ---\n\
             4 sent, 3 received, 25% loss\n\
             rtt min/avg/max/mdev = 1.000/2.000/3.000/0.816 ms\n\
             clock offset +5.000 ms ± 0.500 ms (the peer's clock is ahead when positive)"
        );
    }
}
