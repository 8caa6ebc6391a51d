//! The socket tools' subcommands: `echo-server`, `echo`, `ping`, `struct listen|send`, `tail` and
//! `lines listen`. Each parses its arguments and calls `audiowire-tools`; errors end as one line.
//!
//! `--transport rfcomm` (echo, ping --framed, struct) runs the same tool code over Bluetooth
//! RFCOMM through a small relay ([`rfcomm_serve`], [`rfcomm_dial`]): the tool talks TCP on
//! loopback, and the relay copies those bytes to and from the RFCOMM connection.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use audiowire_protocol::pystruct::Format;
use audiowire_tools::echo::{EchoClient, EchoConfig, EchoMode, EchoServer};
use audiowire_tools::lines::LinesListener;
use audiowire_tools::ping::{self, PingConfig, UpCheckConfig};
use audiowire_tools::structs::{self, ListenConfig, Output, StructListener};
use audiowire_tools::tail::{self, TailConfig};
use audiowire_transport::{Conn, rfcomm};
use clap::Subcommand;

/// What carries a tool's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ToolTransport {
    /// TCP (or UDP with --udp).
    #[default]
    Tcp,
    /// Bluetooth RFCOMM (Linux): listen on ADAPTER_MAC:CHANNEL, any:CHANNEL or CHANNEL; connect
    /// to MAC:CHANNEL.
    Rfcomm,
}

/// The listen address: the one given, or the transport's default.
fn listen_or(listen: Option<String>, transport: ToolTransport, tcp_default: &str) -> String {
    listen.unwrap_or_else(|| match transport {
        ToolTransport::Tcp => tcp_default.into(),
        ToolTransport::Rfcomm => format!("any:{}", rfcomm::DEFAULT_CHANNEL),
    })
}

/// The tools, flattened into the binary's subcommands.
#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// Send back every byte received, to many clients at once (TCP, or UDP with --udp).
    ///
    /// Plain clients get their bytes back exactly. Audiowire clients (`echo --framed`,
    /// `ping --framed`) are recognised from their first bytes and get framed Echo and Pong answers.
    EchoServer {
        /// Address to listen on, HOST:PORT (port 0 picks a free one; default 127.0.0.1:7007), or
        /// with --transport rfcomm ADAPTER_MAC:CHANNEL, any:CHANNEL or CHANNEL (default any:3).
        #[arg(long)]
        listen: Option<String>,
        /// Echo UDP datagrams instead of TCP streams.
        #[arg(long)]
        udp: bool,
        /// TCP, or Bluetooth RFCOMM (Linux).
        #[arg(long, value_enum, default_value_t)]
        transport: ToolTransport,
        /// Most TCP clients served at once; more are refused.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
        max_clients: u16,
    },
    /// Send TEXT, or each line typed until `bye`, to an echo server and print each reply.
    Echo {
        /// The echo server, HOST:PORT (with --transport rfcomm, MAC:CHANNEL).
        addr: String,
        /// Send this once and exit (default: read lines from stdin).
        text: Option<String>,
        /// Use UDP datagrams.
        #[arg(long)]
        udp: bool,
        /// Send framed Echo messages (to any audiowire server) instead of raw bytes.
        #[arg(long)]
        framed: bool,
        /// How long to wait for each reply (2, 2s or 500ms; a bare number is seconds).
        #[arg(long, value_parser = parse_secs, default_value = "5")]
        timeout: Duration,
        /// TCP (or UDP with --udp), or Bluetooth RFCOMM (Linux).
        #[arg(long, value_enum, default_value_t)]
        transport: ToolTransport,
    },
    /// Check whether hosts are up (TCP connect), or measure RTT and clock offset (--framed).
    ///
    /// Without --framed: opens a TCP connection to each HOST:PORT, many at once, and prints one
    /// line per target (up, or down with the reason); exits non-zero if any is down. With
    /// --framed: Ping/Pong messages to an audiowire server, RTT like ping(8) and the clock offset.
    Ping {
        /// Targets, HOST:PORT each (with --transport rfcomm, MAC:CHANNEL).
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
        /// How long one try (or, with --framed, one reply) may take (2, 2s or 500ms).
        #[arg(long, value_parser = parse_secs, default_value = "2")]
        timeout: Duration,
        /// Tries after the first one fails.
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// Pause between tries.
        #[arg(long, value_parser = parse_secs, default_value = "0.5")]
        delay: Duration,
        /// Ping/Pong messages to an audiowire server (echo server, sender, …): RTT like ping(8)
        /// and the clock offset, as NTP computes it.
        #[arg(long)]
        framed: bool,
        /// With --framed: pings to send.
        #[arg(short = 'c', long, default_value_t = 4, requires = "framed")]
        count: u32,
        /// With --framed: pause between pings.
        #[arg(long, value_parser = parse_secs, default_value = "1", requires = "framed")]
        interval: Duration,
        /// TCP, or Bluetooth RFCOMM (Linux; with --framed only: the up-check is TCP only).
        #[arg(long, value_enum, default_value_t)]
        transport: ToolTransport,
    },
    /// Records described by a Python struct format string, raw or framed.
    #[command(subcommand)]
    Struct(StructCommand),
    /// Follow a growing file like `tail -F` and send each new line to `audiowire lines listen`.
    ///
    /// Survives truncation and rotation, uses bounded memory, and after a dropped connection
    /// resumes from the last line the receiver acknowledged: nothing lost or written twice.
    Tail {
        /// The file to follow (it may not exist yet).
        file: PathBuf,
        /// The line receiver, HOST:PORT.
        #[arg(long)]
        to: String,
        /// Skip what the file holds now; send only lines appended from now on.
        #[arg(long)]
        from_end: bool,
    },
    /// Receive line streams from `audiowire tail`.
    #[command(subcommand)]
    Lines(LinesCommand),
}

/// `struct listen` and `struct send`.
#[derive(Debug, Subcommand)]
pub enum StructCommand {
    /// Receive records and print each one, or append it to a CSV file, or print JSON lines.
    ///
    /// Strings are decoded as UTF-8 and their NUL padding trimmed; numbers print as Python
    /// prints them.
    Listen {
        /// Address to listen on, HOST:PORT (port 0 picks a free one; default 127.0.0.1:7010), or
        /// with --transport rfcomm ADAPTER_MAC:CHANNEL, any:CHANNEL or CHANNEL (default any:3).
        #[arg(long)]
        listen: Option<String>,
        /// TCP, or Bluetooth RFCOMM (Linux).
        #[arg(long, value_enum, default_value_t)]
        transport: ToolTransport,
        /// The record's Python struct format, e.g. '!I30sd'. Required with --raw; for framed
        /// records, the format they must have.
        #[arg(long)]
        format: Option<String>,
        /// Raw records back to back with no header (what `sock.sendall(struct.pack(...))` sends).
        #[arg(long)]
        raw: bool,
        /// Append each record as a CSV row to this file, flushed per record.
        #[arg(long, value_name = "FILE", conflicts_with = "jsonl")]
        csv: Option<PathBuf>,
        /// Print each record as a JSON array, one per line.
        #[arg(long)]
        jsonl: bool,
        /// Exit after this many records.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Send one record.
    Send {
        /// The listener, HOST:PORT (with --transport rfcomm, MAC:CHANNEL).
        addr: String,
        /// The record's Python struct format, e.g. '!I30sd'.
        #[arg(long)]
        format: String,
        /// One value per item: integers, floats, true/false, text for c, s and p. Negative numbers
        /// are fine; put `--` before the values if one starts with `-` but is not a number.
        #[arg(allow_negative_numbers = true, value_name = "VALUE")]
        values: Vec<String>,
        /// Send the packed bytes alone, with no frame.
        #[arg(long)]
        raw: bool,
        /// How long to wait for the connection and the listener's answer.
        #[arg(long, value_parser = parse_secs, default_value = "5")]
        timeout: Duration,
        /// TCP, or Bluetooth RFCOMM (Linux; a framed listener's refusal is not reported back
        /// over RFCOMM, whose close is not a half-close).
        #[arg(long, value_enum, default_value_t)]
        transport: ToolTransport,
    },
}

/// `lines listen`.
#[derive(Debug, Subcommand)]
pub enum LinesCommand {
    /// Append every line received to a file, acknowledging each batch once it is on disk.
    ///
    /// Progress is kept in FILE.lines-state, so a sender resumes exactly where it left off, even
    /// after this receiver was killed and restarted.
    Listen {
        /// Address to listen on, HOST:PORT (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7011")]
        listen: String,
        /// The file to append to (created if missing).
        #[arg(long, value_name = "FILE")]
        append: PathBuf,
    },
}

/// Parses `2`, `2s`, `500ms` into a duration; a bare number is seconds.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= 3600.0 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!(
            "\"{s}\" is not a duration between 0 and 3600 s (write 2, 2s or 500ms)"
        )),
    }
}

/// Runs one tool.
pub fn run(cmd: ToolCommand, shutdown: &Arc<AtomicBool>) -> Result<()> {
    match cmd {
        ToolCommand::EchoServer {
            listen,
            udp,
            max_clients,
            transport,
        } => {
            let config = EchoConfig {
                max_clients: usize::from(max_clients),
                ..EchoConfig::default()
            };
            let listen = listen_or(listen, transport, "127.0.0.1:7007");
            if transport == ToolTransport::Rfcomm {
                if udp {
                    bail!("echo-server --udp is TCP's; leave it out with --transport rfcomm");
                }
                let server = EchoServer::bind("127.0.0.1:0", false, config)?;
                return rfcomm_serve(
                    &listen,
                    "echo server",
                    &server.local_addr(),
                    shutdown,
                    || server.run(shutdown).map(|_| ()),
                );
            }
            let server = EchoServer::bind(&listen, udp, config)?;
            tracing::info!(
                "echo server ({}) listening on {} (Ctrl-C stops)",
                if udp { "udp" } else { "tcp" },
                server.local_addr()
            );
            server.run(shutdown)?;
            Ok(())
        }
        ToolCommand::Echo {
            addr,
            text,
            udp,
            framed,
            timeout,
            transport,
        } => {
            if transport == ToolTransport::Rfcomm {
                if udp {
                    bail!("echo --udp is TCP's; leave it out with --transport rfcomm");
                }
                let local = rfcomm_dial(&addr, timeout, shutdown)?;
                return named(
                    echo(&local, text, EchoMode { udp, framed }, timeout),
                    &local,
                    &addr,
                );
            }
            echo(&addr, text, EchoMode { udp, framed }, timeout)
        }
        ToolCommand::Ping {
            targets,
            timeout,
            retries,
            delay,
            framed,
            count,
            interval,
            transport,
        } => {
            if framed {
                let [target] = targets.as_slice() else {
                    bail!("ping --framed takes one target, not {}", targets.len());
                };
                if transport == ToolTransport::Rfcomm {
                    let local = rfcomm_dial(target, timeout, shutdown)?;
                    let r = ping_framed(target, &local, count, interval, timeout, shutdown);
                    return named(r, &local, target);
                }
                return ping_framed(target, target, count, interval, timeout, shutdown);
            }
            if transport == ToolTransport::Rfcomm {
                bail!(
                    "ping's up-check is TCP only; over RFCOMM use `ping --framed --transport rfcomm MAC:CHANNEL`"
                );
            }
            let config = UpCheckConfig {
                timeout,
                retries,
                delay,
                ..UpCheckConfig::default()
            };
            let reports = ping::check_all(&targets, &config, shutdown, |r| println!("{r}"));
            let down = reports.iter().filter(|r| !r.is_up()).count();
            if down > 0 {
                return Err(audiowire_tools::Error::TargetsDown {
                    down,
                    total: reports.len(),
                }
                .into());
            }
            Ok(())
        }
        ToolCommand::Struct(StructCommand::Listen {
            listen,
            transport,
            format,
            raw,
            csv,
            jsonl,
            count,
        }) => {
            let format = format.as_deref().map(Format::parse).transpose()?;
            let mut config = ListenConfig::new(format, raw);
            config.output = match (csv, jsonl) {
                (Some(path), _) => Output::Csv(path),
                (None, true) => Output::Jsonl,
                (None, false) => Output::Print,
            };
            config.count = count;
            let listen = listen_or(listen, transport, "127.0.0.1:7010");
            if transport == ToolTransport::Rfcomm {
                let listener = StructListener::bind("127.0.0.1:0", config)?;
                let what = if raw {
                    "struct listener (raw)"
                } else {
                    "struct listener (framed)"
                };
                return rfcomm_serve(&listen, what, &listener.local_addr(), shutdown, || {
                    listener.run(shutdown).map(|_| ())
                });
            }
            let listener = StructListener::bind(&listen, config)?;
            tracing::info!(
                "struct listener ({}) listening on {} (Ctrl-C stops)",
                if raw { "raw" } else { "framed" },
                listener.local_addr()
            );
            listener.run(shutdown)?;
            Ok(())
        }
        ToolCommand::Struct(StructCommand::Send {
            addr,
            format,
            values,
            raw,
            timeout,
            transport,
        }) => {
            let format = Format::parse(&format)?;
            let values = format.parse_values(&values)?;
            let sent = if transport == ToolTransport::Rfcomm {
                let local = rfcomm_dial(&addr, timeout, shutdown)?;
                named(
                    structs::send(&local, &format, &values, raw, timeout).map_err(Into::into),
                    &local,
                    &addr,
                )?
            } else {
                structs::send(&addr, &format, &values, raw, timeout)?
            };
            tracing::info!("sent one record ({sent} bytes) to {addr}");
            Ok(())
        }
        ToolCommand::Tail { file, to, from_end } => {
            let config = TailConfig {
                from_end,
                ..TailConfig::default()
            };
            tail::run(&file, &to, &config, shutdown)?;
            Ok(())
        }
        ToolCommand::Lines(LinesCommand::Listen { listen, append }) => {
            let mut listener = LinesListener::bind(&listen, &append)?;
            tracing::info!(
                "line receiver listening on {}, appending to {} from line {} (Ctrl-C stops)",
                listener.local_addr(),
                append.display(),
                listener.next()
            );
            listener.run(shutdown)?;
            Ok(())
        }
    }
}

fn echo(addr: &str, text: Option<String>, mode: EchoMode, timeout: Duration) -> Result<()> {
    let mut client = EchoClient::connect(addr, mode, timeout)?;
    let mut stdout = std::io::stdout();
    if let Some(text) = text {
        let reply = client.echo(text.as_bytes())?;
        writeln!(stdout, "{}", String::from_utf8_lossy(&reply))?;
        return Ok(());
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("connected to {addr}: type lines to send, `bye` or Ctrl-D to end");
    }
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut payload = line.clone().into_bytes();
        payload.push(b'\n');
        let reply = client.echo(&payload)?;
        let reply = String::from_utf8_lossy(&reply);
        writeln!(stdout, "{}", reply.strip_suffix('\n').unwrap_or(&reply))?;
        stdout.flush()?;
        if line.trim() == "bye" {
            break;
        }
    }
    Ok(())
}

fn ping_framed(
    addr: &str,
    connect_to: &str,
    count: u32,
    interval: Duration,
    timeout: Duration,
    shutdown: &AtomicBool,
) -> Result<()> {
    let config = PingConfig {
        count,
        interval,
        timeout,
    };
    println!("PING {addr}: audiowire Ping/Pong");
    let mut summary = ping::ping_framed(
        connect_to,
        &config,
        shutdown,
        |p| {
            println!(
                "pong from {addr}: seq={} rtt={:.3} ms offset={:+.3} ms",
                p.seq,
                p.rtt.as_secs_f64() * 1e3,
                p.exchange.offset_us() / 1e3
            );
        },
        |seq| println!("no pong for seq={seq} within {} s", timeout.as_secs_f64()),
    )?;
    summary.addr = addr.to_string();
    println!("{summary}");
    Ok(())
}

/// A tool's result with its loopback relay address (`local`) named as the peer the user gave.
fn named<T>(r: Result<T>, local: &str, peer: &str) -> Result<T> {
    r.map_err(|e| anyhow!(format!("{e:#}").replace(local, peer)))
}

/// How long a relay's reads wait between checks of its flags.
const RELAY_SLICE: Duration = Duration::from_millis(100);
/// How long one direction of a relay may stay idle once the other has ended.
const RELAY_LINGER: Duration = Duration::from_secs(5);

/// Copies bytes from `from` to `to` until `from` ends, a write fails, `stop` is set, or
/// `shutdown`; then closes `to`'s writing half and sets `stop` if the other side is done too.
fn pump(mut from: Box<dyn Conn>, mut to: Box<dyn Conn>, ended: &AtomicBool, shutdown: &AtomicBool) {
    let _ = from.set_read_timeout(Some(RELAY_SLICE));
    let _ = to.set_write_timeout(Some(Duration::from_secs(10)));
    let mut buf = vec![0u8; 4096];
    let mut idle_since = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        if ended.load(Ordering::Relaxed) && idle_since.elapsed() > RELAY_LINGER {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                idle_since = Instant::now();
            }
            Err(e) if audiowire_transport::is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown_write();
    ended.store(true, Ordering::Relaxed);
}

/// Relays bytes both ways between `a` and `b` until both directions have ended (bounded: once
/// one ends, the other ends after [`RELAY_LINGER`] of silence).
fn relay(a: Box<dyn Conn>, b: Box<dyn Conn>, shutdown: &AtomicBool) -> std::io::Result<()> {
    let (a2, b2) = (a.try_clone_conn()?, b.try_clone_conn()?);
    let ended = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| pump(a, b2, &ended, shutdown));
        pump(b, a2, &ended, shutdown);
    });
    Ok(())
}

/// Serves a tool over RFCOMM: listens on `listen` and relays each connection to the tool's own
/// TCP listener at `inner` (loopback), which `run` serves until it ends or `shutdown`.
fn rfcomm_serve(
    listen: &str,
    what: &str,
    inner: &str,
    shutdown: &Arc<AtomicBool>,
    run: impl FnOnce() -> audiowire_tools::Result<()> + Send,
) -> Result<()> {
    let listener = rfcomm::Listener::bind(rfcomm::Addr::parse_listen(listen)?)?;
    tracing::info!(
        "{what} (rfcomm) listening on {} (Ctrl-C stops)",
        listener.local()
    );
    std::thread::scope(|s| {
        let server = s.spawn(run);
        let mut failed = None;
        while !shutdown.load(Ordering::Relaxed) && !server.is_finished() {
            let (conn, peer) = match listener.accept(RELAY_SLICE) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    failed = Some(anyhow!("Bluetooth: accepting on {listen}: {e}"));
                    break;
                }
            };
            tracing::info!("rfcomm client {peer} connected");
            let tcp = match TcpStream::connect(inner) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("rfcomm client {peer} dropped: the {what} at {inner}: {e}");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            s.spawn(move || {
                if let Err(e) = relay(Box::new(conn), Box::new(tcp), shutdown) {
                    tracing::warn!("rfcomm client {peer}: {e}");
                }
            });
        }
        if failed.is_some() {
            shutdown.store(true, Ordering::Relaxed);
        }
        let served = server
            .join()
            .map_err(|_| anyhow!("the {what} stopped on a panic"))?;
        // Relays still running end by themselves (bounded); the scope waits for them.
        match failed {
            Some(e) => Err(e),
            None => served.map_err(Into::into),
        }
    })
}

/// Connects to the RFCOMM `peer` (`MAC:CHANNEL`) and relays it to a loopback TCP listener;
/// returns that listener's address for the tool to connect to (within `timeout`).
fn rfcomm_dial(peer: &str, timeout: Duration, shutdown: &Arc<AtomicBool>) -> Result<String> {
    let conn = rfcomm::connect(rfcomm::Addr::parse_peer(peer)?, timeout)?;
    let local = TcpListener::bind("127.0.0.1:0")?;
    local.set_nonblocking(true)?;
    let addr = local.local_addr()?.to_string();
    let shutdown = Arc::clone(shutdown);
    std::thread::Builder::new()
        .name("rfcomm relay".into())
        .spawn(move || {
            let deadline = Instant::now() + timeout.max(Duration::from_secs(1));
            while Instant::now() < deadline && !shutdown.load(Ordering::Relaxed) {
                match local.accept() {
                    Ok((tcp, _)) => {
                        let _ = tcp.set_nonblocking(false);
                        let _ = tcp.set_nodelay(true);
                        if let Err(e) = relay(Box::new(conn), Box::new(tcp), &shutdown) {
                            tracing::warn!("rfcomm relay: {e}");
                        }
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_by_default() {
        assert_eq!(parse_secs("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_secs("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_secs("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }

    #[test]
    fn the_rfcomm_relay_copies_both_ways_and_ends_on_close() {
        use std::os::unix::net::UnixStream;
        let (mut a, a_relay) = UnixStream::pair().expect("pair");
        let (b_relay, mut b) = UnixStream::pair().expect("pair");
        let shutdown = AtomicBool::new(false);
        std::thread::scope(|s| {
            let r = s.spawn(|| relay(Box::new(a_relay), Box::new(b_relay), &shutdown));
            let mut got = [0u8; 5];
            a.write_all(b"hello").expect("write");
            b.read_exact(&mut got).expect("read");
            assert_eq!(&got, b"hello");
            b.write_all(b"back!").expect("write");
            a.read_exact(&mut got).expect("read");
            assert_eq!(&got, b"back!");
            drop(a);
            let mut rest = Vec::new();
            b.read_to_end(&mut rest).expect("end of file");
            assert!(rest.is_empty());
            drop(b);
            assert!(r.join().expect("no panic").is_ok());
        });
    }
}
