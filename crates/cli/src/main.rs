//! `audiowire`: the one binary. Parses the command line, sets up logging and Ctrl-C, and calls
//! the sender and receiver crates. Errors end as one line on stderr and a non-zero exit.

mod bench;
mod demo;
mod netsim;
mod send;
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
    /// The real-time (SCHED_FIFO) priority, 1-99, for the threads that keep audio on time; 0:
    /// ordinary threads. Default: 20 for play, netsim, bench and live input (send --input); a
    /// file sender's threads (one per player) stay ordinary unless this is given. Needs an
    /// rtprio limit (or root); without one audiowire says so and runs as ordinary threads.
    #[arg(long, global = true, value_name = "PRIORITY", value_parser = clap::value_parser!(u8).range(0..=99))]
    rt_priority: Option<u8>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve an audio file (or a live input) to every player that connects, paced in real time:
    /// each from the start, or all joining one live stream (--input, --broadcast).
    Send {
        /// The audio file: WAV (bit-exact), FLAC, MP3, Ogg Vorbis, AAC/ALAC in MP4, AIFF, ...
        #[arg(required_unless_present = "input")]
        file: Option<PathBuf>,
        /// Stream live from an input device (the default one, or by id or name; see `audiowire
        /// devices`) instead of a file. Players join the stream where it stands.
        #[arg(long, value_name = "DEVICE", num_args = 0..=1, default_missing_value = "", conflicts_with = "file")]
        input: Option<String>,
        /// One live stream for every player, joined where it stands (not each from the start).
        #[arg(long)]
        broadcast: bool,
        /// With --input: the audio host, alsa (the default on Linux) or jack in a build with
        /// `--features jack`.
        #[arg(long, requires = "input")]
        host: Option<String>,
        /// pcm (bit-exact, the default) or opus (48 kHz, a fraction of the bandwidth; the
        /// default over rfcomm).
        #[arg(long, value_enum)]
        codec: Option<send::CodecArg>,
        /// Opus bitrate, e.g. 64k or 128000 (default: 64k per channel).
        #[arg(long, value_parser = send::parse_bitrate)]
        bitrate: Option<u32>,
        /// Opus encoder complexity, 0 (fastest) to 10 (best).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=10))]
        complexity: u8,
        /// Opus discontinuous transmission: almost nothing is sent during silence.
        #[arg(long)]
        dtx: bool,
        /// Opus over UDP: no in-band FEC (by default the encoder adds it for the loss players
        /// report).
        #[arg(long)]
        no_fec: bool,
        /// Resample the stream to this rate (PCM; Opus always runs at 48 kHz).
        #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u32).range(1..=768_000))]
        rate: Option<u32>,
        /// Address to listen on, HOST:PORT (0.0.0.0:PORT or [::]:PORT for every interface;
        /// default 127.0.0.1:7878). RFCOMM: ADAPTER_MAC:CHANNEL, or any:CHANNEL (default any:3).
        #[arg(long)]
        listen: Option<String>,
        /// Duration of one frame in milliseconds (default 10; Opus: 2.5, 5, 10, 20 (default), 40
        /// or 60). Live input (--input) defaults to one device period where the host has a fixed
        /// one (JACK; Opus: the largest of 2.5, 5, 10 and 20 ms within it), else 5 ms (Opus: 10).
        #[arg(long)]
        frame_ms: Option<f64>,
        /// Start again at the end of the file, forever.
        #[arg(long = "loop")]
        looping: bool,
        /// tcp (reliable, ordered), udp (lowest latency; players conceal what is lost) or
        /// rfcomm (Bluetooth, Linux; Opus by default).
        #[arg(long, value_enum, default_value = "tcp")]
        transport: LinkArg,
        /// UDP: the largest datagram to send, in bytes; frames are cut short enough to fit.
        #[arg(long, default_value_t = 1400, value_parser = clap::value_parser!(u64).range(64..=65_000))]
        max_datagram: u64,
        /// UDP: drop a player that sends no report for this long.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        player_timeout: Duration,
        /// A pre-shared key (any secret in a file): players must prove they hold it, and audio
        /// is encrypted with it. Or set AUDIOWIRE_KEY to the secret itself.
        #[arg(long, value_name = "FILE", env = "AUDIOWIRE_KEY_FILE")]
        key: Option<PathBuf>,
        /// Send as fast as each player reads, not in real time (soak and throughput tests).
        #[arg(long)]
        unpaced: bool,
    },
    /// Connect to a sender and play the stream on a sound device, or record it to a WAV file.
    Play {
        /// The sender's address, HOST:PORT (rfcomm: the sender's Bluetooth MAC:CHANNEL).
        addr: String,
        /// tcp, udp or rfcomm (Bluetooth): what the sender serves.
        #[arg(long, value_enum, default_value = "tcp")]
        transport: LinkArg,
        /// Pin the target latency (e.g. 50, 50ms, 0.2s). Without it the target adapts to the
        /// network, starting at 10 ms, within --latency-min and --latency-max.
        #[arg(long, value_parser = parse_duration)]
        latency: Option<Duration>,
        /// The lowest adaptive target latency (beyond it, the target never goes below the
        /// output's callback plus a margin).
        #[arg(long, value_parser = parse_duration, default_value = "1ms")]
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
        /// Print the summary at the end as one line of JSON (latency percentiles included).
        #[arg(long)]
        summary_json: bool,
        /// Write each frame's latency to this CSV file at the end (`t_s,latency_ms`).
        #[arg(long, value_name = "FILE")]
        latency_log: Option<PathBuf>,
        /// Audio host: alsa (the default on Linux), or jack in a build with `--features jack`.
        #[arg(long)]
        host: Option<String>,
        /// Give up at once when the connection dies mid-stream, instead of reconnecting and
        /// resuming where the stream was.
        #[arg(long)]
        no_reconnect: bool,
        /// The device period to ask for (its callback size): lower latency when smaller, more
        /// headroom on a busy machine when larger.
        #[arg(long, value_parser = parse_duration, default_value = "10ms")]
        period: Duration,
        /// The sender's pre-shared key (a file holding the secret); or set AUDIOWIRE_KEY.
        #[arg(long, value_name = "FILE", env = "AUDIOWIRE_KEY_FILE")]
        key: Option<PathBuf>,
        /// Output device, by id or name (see `audiowire devices`); default: the system's.
        #[arg(long)]
        device: Option<String>,
        /// Write exactly the received samples to this WAV file instead of playing them.
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --out: play on the device as well as recording.
        #[arg(long, requires = "out")]
        also_play: bool,
        /// A frame not there in time, with nothing buffered behind it (late or lost), is
        /// concealed in its place and dropped if it comes (`conceal`: the timing kept, the
        /// default on a device; up to 40 ms in a row, then the stream stalls), or waited for
        /// (`wait`: the latency rises, every frame that arrives is kept; the default with --out
        /// alone).
        #[arg(long, value_enum)]
        late: Option<LateArg>,
        /// Opus over UDP, when playing with an adaptive latency: for 5 s after each lost frame,
        /// keep one frame more buffered (20 ms at the sender's default frames), so that a lost
        /// frame's successor, which carries its FEC copy, is already here: more lost frames
        /// rebuilt rather than concealed, for that much more latency. Without it a lost frame
        /// is rebuilt when its successor happens to be here, and concealed otherwise. No
        /// effect with --latency, --late wait or --out alone (every frame is waited for),
        /// over TCP, or from a sender with --no-fec.
        #[arg(long)]
        fec_hold: bool,
        /// Open the device at this sample rate and resample the stream to it.
        #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u32).range(1..=768_000))]
        device_rate: Option<u32>,
        /// Open the device with this many channels and map the stream's channels to them.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
        device_channels: Option<u16>,
    },
    /// List output and input devices and the configurations they support.
    Devices {
        /// Audio host: alsa (the default on Linux), or jack in a build with `--features jack`.
        #[arg(long)]
        host: Option<String>,
    },
    /// Measure latency, glitches and CPU end to end: the real sender and player over loopback
    /// through the network simulator (or from a remote sender), with JSON, Markdown and plots.
    Bench(bench::BenchArgs),
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

/// The transports of `send` and `play`, as the command line names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LinkArg {
    Tcp,
    Udp,
    /// Bluetooth RFCOMM (Linux).
    Rfcomm,
}

/// The pre-shared key: the contents of `file` (trailing whitespace trimmed), or else the
/// AUDIOWIRE_KEY environment variable; `None` when neither is given.
fn load_key(file: Option<&std::path::Path>) -> Result<Option<audiowire_protocol::auth::Key>> {
    let secret = match file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            let end = bytes
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .map_or(0, |i| i + 1);
            bytes[..end].to_vec()
        }
        None => match std::env::var("AUDIOWIRE_KEY") {
            Ok(v) if !v.is_empty() => v.into_bytes(),
            _ => return Ok(None),
        },
    };
    let key = audiowire_protocol::auth::Key::from_secret(&secret).with_context(|| match file {
        Some(p) => format!("key file {}", p.display()),
        None => "AUDIOWIRE_KEY".to_string(),
    })?;
    Ok(Some(key))
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
    // symphonia logs what it tries while probing a file (at error level, for a file that is
    // simply not audio); our own error says what matters, so its logs show from -vv on.
    let default = if verbose >= 2 {
        default.to_string()
    } else {
        format!("{default},symphonia=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| {
            // On a terminal a log line first clears a status line being rewritten there (the
            // sender's progress, the player's --stats), which is redrawn after it.
            let mut err = std::io::stderr();
            if err.is_terminal() {
                let _ = std::io::Write::write_all(&mut err, b"\r\x1b[K");
            }
            err
        })
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .compact()
        .init();
}

/// Sets a flag on the first Ctrl-C or SIGTERM; a second one exits at once. A second signal
/// within half a second of the first is the same request (`timeout` signals the command and
/// then its whole process group, so the command gets two at once), not an impatient user.
fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    const SAME_REQUEST: std::time::Duration = std::time::Duration::from_millis(500);
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    let mut first: Option<std::time::Instant> = None;
    ctrlc::set_handler(move || {
        f.store(true, Ordering::SeqCst);
        match first {
            None => first = Some(std::time::Instant::now()),
            Some(at) if at.elapsed() >= SAME_REQUEST => std::process::exit(130),
            Some(_) => {}
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

/// `play --late`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LateArg {
    /// Conceal a late frame in its place (timing kept).
    Conceal,
    /// Wait for it (every frame kept).
    Wait,
}

/// Asks for real-time scheduling for this thread, and so for every thread it starts after this
/// (they inherit it): the pacing, receiving and clock threads of a sender, a player, the network
/// simulator and the bench. A refusal is said once and changes nothing else.
fn realtime(priority: u8) {
    audiowire_transport::realtime::set_priority(priority);
    match audiowire_transport::realtime::promote_current_thread() {
        Ok(true) => tracing::debug!("audio threads run at real-time priority {priority}"),
        Ok(false) => {}
        Err(e) => tracing::info!("{e}"),
    }
}

fn run(cli: Cli) -> Result<()> {
    let shutdown = shutdown_flag()?;
    // A file sender serves each player from its own thread, a hundred of them with a hundred
    // players: at real-time priority they would crowd out the rest of the machine, and the
    // players' buffers absorb their pacing's jitter anyway. Live input cannot wait.
    let default = match &cli.command {
        Command::Send { input: None, .. } => 0,
        Command::Send { .. }
        | Command::Play { .. }
        | Command::Demo { .. }
        | Command::Netsim(_)
        | Command::Bench(_) => audiowire_transport::realtime::DEFAULT_PRIORITY,
        Command::Devices { .. } | Command::Tools(_) => 0,
    };
    realtime(cli.rt_priority.unwrap_or(default));
    let rt_asked = cli.rt_priority;
    match cli.command {
        Command::Send {
            file,
            input,
            broadcast,
            host,
            codec,
            bitrate,
            complexity,
            dtx,
            no_fec,
            rate,
            listen,
            frame_ms,
            looping,
            transport,
            max_datagram,
            player_timeout,
            key,
            unpaced,
        } => {
            if let Some(h) = &host {
                audiowire_receiver::device::select_host(h)?;
            }
            // Bluetooth's bandwidth is small: Opus unless asked otherwise.
            let codec = codec.unwrap_or(if transport == LinkArg::Rfcomm {
                send::CodecArg::Opus
            } else {
                send::CodecArg::Pcm
            });
            let listen = listen.unwrap_or_else(|| match transport {
                LinkArg::Rfcomm => format!("any:{}", audiowire_transport::rfcomm::DEFAULT_CHANNEL),
                LinkArg::Tcp | LinkArg::Udp => "127.0.0.1:7878".into(),
            });
            let mut config = ServerConfig::new(file.unwrap_or_default());
            config.input = input.map(|name| Some(name).filter(|n| !n.is_empty()));
            config.broadcast = broadcast;
            config.codec = send::codec_config(codec, bitrate, complexity, dtx, no_fec);
            config.rate = rate;
            // Live input: frames that suit the device's callbacks, for the lowest latency (the
            // device is looked up now: players are told the frame size when they connect).
            let frame_ms = if config.input.is_some() {
                audiowire_sender::broadcast::input_frame_ms(&config, frame_ms)?
            } else {
                frame_ms.unwrap_or(match codec {
                    send::CodecArg::Pcm => 10.0,
                    send::CodecArg::Opus => 20.0,
                })
            };
            config.silence_timeout = player_timeout;
            config.key = load_key(key.as_deref())?;
            let warn_open = |addr: std::net::SocketAddr, keyed: bool| {
                if !addr.ip().is_loopback() && !keyed {
                    tracing::warn!(
                        "listening on {addr} without a key: anyone who can reach it can play the \
                         stream (use --key FILE)"
                    );
                }
            };
            let keyed = config.key.is_some();
            config.frame_ms = frame_ms;
            config.looping = looping;
            config.max_datagram = max_datagram as usize;
            config.unpaced = unpaced;
            let codec_config = config.codec;
            let live = config.input.is_some() || config.broadcast;
            let log = |info: audiowire_protocol::StreamInfo,
                       kind: &str,
                       addr: &dyn std::fmt::Display| {
                tracing::info!(
                    "serving {}{} Hz, {} ch, {}{} in {:.1} ms frames over {kind} on {addr} (Ctrl-C stops)",
                    if live { "live " } else { "" },
                    info.sample_rate,
                    info.channels,
                    info.format,
                    send::codec_note(&info, &codec_config),
                    f64::from(info.samples_per_frame) * 1000.0 / f64::from(info.sample_rate),
                );
            };
            match transport {
                LinkArg::Rfcomm => {
                    let server = Server::bind_rfcomm(&listen, config)?;
                    log(server.stream_info(), "rfcomm", &server.local_name());
                    let _line = send::ProgressLine::start(server.progress(), server.stream_info());
                    server.run(&shutdown)?;
                }
                LinkArg::Tcp => {
                    let server = Server::bind(&listen, config)?;
                    log(server.stream_info(), "tcp", &server.local_addr());
                    warn_open(server.local_addr(), keyed);
                    let _line = send::ProgressLine::start(server.progress(), server.stream_info());
                    server.run(&shutdown)?;
                }
                LinkArg::Udp => {
                    let server = UdpServer::bind(&listen, config)?;
                    log(server.stream_info(), "udp", &server.local_addr());
                    warn_open(server.local_addr(), keyed);
                    let _line = send::ProgressLine::start(server.progress(), server.stream_info());
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
            summary_json,
            latency_log,
            host,
            no_reconnect,
            period,
            late,
            fec_hold,
            key,
            device,
            out,
            also_play,
            device_rate,
            device_channels,
        } => {
            let mut config = PlayerConfig::new(addr);
            config.transport = match transport {
                LinkArg::Tcp => Transport::Tcp,
                LinkArg::Udp => Transport::Udp,
                LinkArg::Rfcomm => Transport::Rfcomm,
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
            config.reconnect = !no_reconnect;
            config.period = period;
            config.fec_hold = fec_hold;
            config.late = late.map(|l| match l {
                LateArg::Conceal => audiowire_receiver::player::LatePolicy::Conceal,
                LateArg::Wait => audiowire_receiver::player::LatePolicy::Wait,
            });
            config.key = load_key(key.as_deref())?;
            config.device_rate = device_rate;
            config.device_channels = device_channels;
            config.output = if out.is_some() && !also_play {
                Output::Null
            } else {
                Output::Device(device)
            };
            config.record = out;
            if let Some(h) = &host {
                audiowire_receiver::device::select_host(h)?;
            }
            let summary = audiowire_receiver::play(&config, &shutdown)?;
            if let Some(path) = &latency_log {
                bench::write_latency_log(path, summary.latency.trace())?;
            }
            if summary_json {
                println!("{}", summary.to_json());
            } else {
                println!("{summary}");
            }
            Ok(())
        }
        Command::Devices { host } => {
            if let Some(h) = &host {
                audiowire_receiver::device::select_host(h)?;
            }
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
            let inputs = audiowire_sender::capture::list_inputs()?;
            println!("input devices (for `send --input`):");
            if inputs.is_empty() {
                println!("  none found");
            }
            for d in inputs {
                println!(
                    "{}{} ({})",
                    if d.is_default { "* " } else { "  " },
                    d.name,
                    d.id
                );
                if let Some(c) = d.default_config {
                    println!("      default: {c}");
                }
            }
            Ok(())
        }
        Command::Demo { out } => demo::run(out, &shutdown),
        Command::Tools(cmd) => tools::run(cmd, &shutdown),
        Command::Netsim(args) => netsim::run(&args, &shutdown),
        Command::Bench(args) => {
            bench::check_play_options(args.play_options(), |argv| {
                Cli::try_parse_from(argv).map(drop)
            })?;
            bench::run(&args, rt_asked, &shutdown)
        }
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
