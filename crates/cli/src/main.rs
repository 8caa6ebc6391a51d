//! `audiowire`: the one binary. Parses the command line, sets up logging and Ctrl-C, and calls
//! the sender and receiver crates. Errors end as one line on stderr and a non-zero exit.

mod demo;
mod netsim;
mod tools;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use audiowire_receiver::{Output, PlayerConfig, StatsMode, Transport};
use audiowire_sender::{Server, ServerConfig, UdpServer};
use clap::{Parser, Subcommand};

/// Stream audio between machines with low, measured latency.
#[derive(Debug, Parser)]
#[command(name = "audiowire", version, about, propagate_version = true)]
struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a WAV file to every player that connects, each from the start, paced in real time.
    Send {
        /// The WAV file (PCM 8/16/24/32-bit integer or 32-bit float, any rate and channels).
        file: PathBuf,
        /// Address to listen on, HOST:PORT (0.0.0.0:PORT or [::]:PORT for every interface).
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        /// Duration of one frame in milliseconds.
        #[arg(long, default_value_t = 10.0)]
        frame_ms: f64,
        /// Start again at the end of the file, forever.
        #[arg(long = "loop")]
        looping: bool,
        /// tcp (reliable, ordered) or udp (lowest latency; players conceal what is lost).
        #[arg(long, value_enum, default_value = "tcp")]
        transport: TransportArg,
        /// UDP: the largest datagram to send, in bytes; frames are cut short enough to fit.
        #[arg(long, default_value_t = 1400, value_parser = clap::value_parser!(u64).range(64..=65_000))]
        max_datagram: u64,
        /// UDP: drop a player that sends no report for this long.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        player_timeout: Duration,
    },
    /// Connect to a sender and play the stream on a sound device, or record it to a WAV file.
    Play {
        /// The sender's address, HOST:PORT.
        addr: String,
        /// tcp or udp: what the sender serves.
        #[arg(long, value_enum, default_value = "tcp")]
        transport: TransportArg,
        /// Pin the target latency (e.g. 50, 50ms, 0.2s). Without it the target adapts to the
        /// network, starting at 50 ms, within --latency-min and --latency-max.
        #[arg(long, value_parser = parse_duration)]
        latency: Option<Duration>,
        /// The lowest adaptive target latency.
        #[arg(long, value_parser = parse_duration, default_value = "20ms")]
        latency_min: Duration,
        /// The highest adaptive target latency.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        latency_max: Duration,
        /// Show live stats on one status line (stderr).
        #[arg(long)]
        stats: bool,
        /// Print live stats as JSON lines on stdout, twice a second.
        #[arg(long, conflicts_with = "stats")]
        stats_json: bool,
        /// Output device, by id or name (see `audiowire devices`); default: the system's.
        #[arg(long)]
        device: Option<String>,
        /// Write exactly the received samples to this WAV file instead of playing them.
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --out: play on the device as well as recording.
        #[arg(long, requires = "out")]
        also_play: bool,
        /// Open the device at this sample rate and resample the stream to it.
        #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u32).range(1..=768_000))]
        device_rate: Option<u32>,
        /// Open the device with this many channels and map the stream's channels to them.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
        device_channels: Option<u16>,
    },
    /// List output devices and the configurations they support.
    Devices,
    #[command(flatten)]
    Tools(tools::ToolCommand),
    /// Relay UDP (or TCP) through a simulated network: delay, jitter, loss, reordering, rate.
    Netsim(netsim::NetsimArgs),
    /// Stream a bundled clip over loopback TCP to a player in the same process and play it.
    Demo {
        /// Where to write the audio when no sound device works.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The transports, as the command line names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    Tcp,
    Udp,
}

/// Parses `50`, `50ms`, `0.05s` into a duration.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1e-3)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * scale <= 60.0 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!(
            "\"{s}\" is not a duration between 0 and 60 s (write 50, 50ms or 0.05s)"
        )),
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .compact()
        .init();
}

/// Sets a flag on the first Ctrl-C or SIGTERM; a second one exits at once.
fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

fn run(cli: Cli) -> Result<()> {
    let shutdown = shutdown_flag()?;
    match cli.command {
        Command::Send {
            file,
            listen,
            frame_ms,
            looping,
            transport,
            max_datagram,
            player_timeout,
        } => {
            let mut config = ServerConfig::new(file);
            config.silence_timeout = player_timeout;
            config.frame_ms = frame_ms;
            config.looping = looping;
            config.max_datagram = max_datagram as usize;
            let log = |info: audiowire_protocol::StreamInfo,
                       kind: &str,
                       addr: std::net::SocketAddr| {
                tracing::info!(
                    "serving {} Hz, {} ch, {} in {:.1} ms frames over {kind} on {addr} (Ctrl-C stops)",
                    info.sample_rate,
                    info.channels,
                    info.format,
                    f64::from(info.samples_per_frame) * 1000.0 / f64::from(info.sample_rate),
                );
            };
            match transport {
                TransportArg::Tcp => {
                    let server = Server::bind(&listen, config)?;
                    log(server.stream_info(), "tcp", server.local_addr());
                    server.run(&shutdown)?;
                }
                TransportArg::Udp => {
                    let server = UdpServer::bind(&listen, config)?;
                    log(server.stream_info(), "udp", server.local_addr());
                    server.run(&shutdown)?;
                }
            }
            Ok(())
        }
        Command::Play {
            addr,
            transport,
            latency,
            latency_min,
            latency_max,
            stats,
            stats_json,
            device,
            out,
            also_play,
            device_rate,
            device_channels,
        } => {
            let mut config = PlayerConfig::new(addr);
            config.transport = match transport {
                TransportArg::Tcp => Transport::Tcp,
                TransportArg::Udp => Transport::Udp,
            };
            if let Some(l) = latency {
                config.latency = l;
                config.pinned = true;
            } else {
                config.latency = config
                    .latency
                    .clamp(latency_min, latency_max.max(latency_min));
            }
            config.latency_min = latency_min;
            config.latency_max = latency_max.max(latency_min);
            config.stats = if stats_json {
                StatsMode::Json
            } else if stats {
                StatsMode::Line
            } else {
                StatsMode::Off
            };
            config.device_rate = device_rate;
            config.device_channels = device_channels;
            config.output = if out.is_some() && !also_play {
                Output::Null
            } else {
                Output::Device(device)
            };
            config.record = out;
            let summary = audiowire_receiver::play(&config, &shutdown)?;
            println!("{summary}");
            Ok(())
        }
        Command::Devices => {
            let devices = audiowire_receiver::device::list_outputs()?;
            if devices.is_empty() {
                println!("no output devices found");
            }
            for d in devices {
                println!(
                    "{}{} ({})",
                    if d.is_default { "* " } else { "  " },
                    d.name,
                    d.id
                );
                if let Some(c) = d.default_config {
                    println!("      default: {c}");
                }
                for c in d.configs {
                    println!("      supports: {c}");
                }
            }
            Ok(())
        }
        Command::Demo { out } => demo::run(out, &shutdown),
        Command::Tools(cmd) => tools::run(cmd, &shutdown),
        Command::Netsim(args) => netsim::run(&args, &shutdown),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audiowire: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_ms_by_default() {
        assert_eq!(parse_duration("50"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("0.2s"), Ok(Duration::from_millis(200)));
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
