//! `audiowire bench`: the end-to-end latency bench (the `audiowire-bench` crate) run with this
//! very binary as sender and player, and `play --latency-log`'s file.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use audiowire_bench::{Mode, Options, Transport};
use clap::Args;

use crate::TransportArg;

/// `audiowire bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The quick cross-section (the default): 9 runs of 8 s, under two minutes.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// The whole matrix: TCP/UDP × PCM/Opus × 2.5/5/10/20 ms frames × clean/LAN/Wi-Fi/Internet,
    /// 20 s each, and the low-latency runs (about 30 minutes).
    #[arg(long)]
    full: bool,
    /// Seconds of audio per run instead of the mode's.
    #[arg(long, value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Only the runs whose label contains this (labels look like `udp-pcm-10ms-wifi-default`).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Where to write latency-MODE.json, latency-MODE.md and the SVG plots.
    #[arg(long, default_value = "audiowire-bench")]
    out: PathBuf,
    /// Measure your own network instead: play from the `audiowire send --loop` running at
    /// HOST:PORT (the sender's clock is corrected with Ping/Pong).
    #[arg(long, value_name = "HOST:PORT")]
    remote: Option<String>,
    /// With --remote: the transport to measure; both by default (start one sender of each
    /// on the same port).
    #[arg(long, value_enum, requires = "remote")]
    transport: Option<TransportArg>,
    /// With --remote, after `--`: options for the player, as `audiowire play` takes them
    /// (e.g. `-- --latency 20ms --fec-hold`). The bench sets the player's --transport, --late,
    /// --out and its stats and logs itself.
    #[arg(last = true, requires = "remote", value_name = "PLAY_OPTIONS")]
    play: Vec<String>,
}

impl BenchArgs {
    /// The player options after `--`, to be checked with `play`'s own parser before a run.
    pub fn play_options(&self) -> &[String] {
        &self.play
    }
}

/// Checks `bench --remote`'s player options before anything starts: none the bench sets
/// itself, and the whole player command it will run parses (`parse` runs the binary's own
/// parser on `audiowire play HOST:PORT ...`, the bench's options and then these).
pub fn check_play_options(
    options: &[String],
    parse: impl FnOnce(Vec<OsString>) -> std::result::Result<(), clap::Error>,
) -> Result<()> {
    let mut argv: Vec<OsString> = vec!["audiowire".into()];
    argv.extend(audiowire_bench::run::remote_play_args(
        "HOST:PORT",
        audiowire_bench::Transport::Udp,
        Path::new("remote.wav"),
        Path::new("remote.csv"),
    ));
    let bench_sets = |name: &str| argv.iter().any(|a| a.to_str() == Some(name));
    for o in options {
        let name = o.split_once('=').map_or(o.as_str(), |(n, _)| n);
        match name {
            "--transport" | "--rt-priority" => anyhow::bail!(
                "{name} is the bench's, not the player's: give it before `--` (`audiowire bench --remote HOST:PORT {name} ...`)"
            ),
            "--stats" => anyhow::bail!(
                "`bench --remote` reads the player's --stats-json lines, which --stats (a status line) cannot go with: leave it out of the options after `--`"
            ),
            _ if name.starts_with("--") && bench_sets(name) => anyhow::bail!(
                "`bench --remote` sets the player's {name} itself: leave it out of the options after `--`"
            ),
            _ => {}
        }
    }
    argv.extend(options.iter().map(OsString::from));
    parse(argv).map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            return anyhow::anyhow!(
                "help and version are not player options: see `audiowire play --help` for those that go after `--`"
            );
        }
        // clap's message on one line, without its usage and its tips (which are about the
        // command line as a whole, not these options).
        let said = e.to_string();
        let message: Vec<&str> = said
            .lines()
            .take_while(|l| !l.starts_with("Usage:"))
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
            .collect();
        let message = message.join(" ");
        anyhow::anyhow!(
            "the player options after `--` are not ones `audiowire play` takes: {} (see `audiowire play --help`)",
            message.trim_start_matches("error: ")
        )
    })
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('s').parse::<f64>() {
        Ok(v) if (1.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "\"{s}\" is not a number of seconds between 1 and 3600"
        )),
    }
}

/// Runs the bench and prints where the results went.
/// `rt_priority`: `--rt-priority` if given, passed on to the sender and player (otherwise each
/// runs at its own default).
pub fn run(args: &BenchArgs, rt_priority: Option<u8>, shutdown: &AtomicBool) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this audiowire binary")?;
    let transports = match args.transport {
        Some(TransportArg::Tcp) => vec![Transport::Tcp],
        Some(TransportArg::Udp) => vec![Transport::Udp],
        None => vec![Transport::Tcp, Transport::Udp],
    };
    let options = Options {
        exe,
        mode: if args.full { Mode::Full } else { Mode::Quick },
        seconds: args.seconds,
        only: args.only.clone(),
        out: args.out.clone(),
        remote: args.remote.clone(),
        transports,
        play_args: args.play.clone(),
        rt_priority,
        probe_priority: audiowire_transport::realtime::priority(),
        rt_granted: audiowire_transport::realtime::granted(),
    };
    let stop = || shutdown.load(Ordering::Relaxed);
    let written = audiowire_bench::run(&options, &mut |line| eprintln!("{line}"), &stop)?;
    let mut out = std::io::stdout().lock();
    // The targets (none for a remote run: they are the local matrix's).
    for c in written.report.checks() {
        writeln!(
            out,
            "{}: {} — {}",
            c.target,
            c.measured,
            c.verdict.text().trim_matches('*')
        )?;
    }
    writeln!(out, "results: {}", written.json.display())?;
    writeln!(out, "table:   {}", written.markdown.display())?;
    for p in &written.plots {
        writeln!(out, "plot:    {}", p.display())?;
    }
    Ok(())
}

/// Writes `play --latency-log`: a header, then `t_s,latency_ms` per frame (thinned evenly
/// past 65 536 frames).
pub fn write_latency_log(path: &Path, trace: &[(f64, f64)]) -> Result<()> {
    let mut text = String::with_capacity(trace.len() * 16 + 16);
    text.push_str("t_s,latency_ms\n");
    for (t, ms) in trace {
        text.push_str(&format!("{t:.4},{ms:.3}\n"));
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
