//! The socket tools' subcommands: `echo-server`, `echo`, `ping`, `struct listen|send`, `tail` and
//! `lines listen`. Each parses its arguments and calls `audiowire-tools`; errors end as one line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Result, bail};
use audiowire_protocol::pystruct::Format;
use audiowire_tools::echo::{EchoClient, EchoConfig, EchoMode, EchoServer};
use audiowire_tools::lines::LinesListener;
use audiowire_tools::ping::{self, PingConfig, UpCheckConfig};
use audiowire_tools::structs::{self, ListenConfig, Output, StructListener};
use audiowire_tools::tail::{self, TailConfig};
use clap::Subcommand;

/// The tools, flattened into the binary's subcommands.
#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// Send back every byte received, to many clients at once (TCP, or UDP with --udp).
    ///
    /// Plain clients get their bytes back exactly. Audiowire clients (`echo --framed`,
    /// `ping --framed`) are recognised from their first bytes and get framed Echo and Pong answers.
    EchoServer {
        /// Address to listen on, HOST:PORT (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7007")]
        listen: String,
        /// Echo UDP datagrams instead of TCP streams.
        #[arg(long)]
        udp: bool,
        /// Most TCP clients served at once; more are refused.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
        max_clients: u16,
    },
    /// Send TEXT, or each line typed until `bye`, to an echo server and print each reply.
    Echo {
        /// The echo server, HOST:PORT.
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
    },
    /// Check whether hosts are up (TCP connect), or measure RTT and clock offset (--framed).
    ///
    /// Without --framed: opens a TCP connection to each HOST:PORT, many at once, and prints one
    /// line per target (up, or down with the reason); exits non-zero if any is down. With
    /// --framed: Ping/Pong messages to an audiowire server, RTT like ping(8) and the clock offset.
    Ping {
        /// Targets, HOST:PORT each.
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
        /// Address to listen on, HOST:PORT (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7010")]
        listen: String,
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
        /// The listener, HOST:PORT.
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
        } => {
            let config = EchoConfig {
                max_clients: usize::from(max_clients),
                ..EchoConfig::default()
            };
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
        } => echo(&addr, text, EchoMode { udp, framed }, timeout),
        ToolCommand::Ping {
            targets,
            timeout,
            retries,
            delay,
            framed,
            count,
            interval,
        } => {
            if framed {
                let [target] = targets.as_slice() else {
                    bail!("ping --framed takes one target, not {}", targets.len());
                };
                return ping_framed(target, count, interval, timeout, shutdown);
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
        }) => {
            let format = Format::parse(&format)?;
            let values = format.parse_values(&values)?;
            let sent = structs::send(&addr, &format, &values, raw, timeout)?;
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
    let summary = ping::ping_framed(
        addr,
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
    println!("{summary}");
    Ok(())
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
}
