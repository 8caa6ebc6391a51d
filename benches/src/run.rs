//! Running cells: the real `audiowire send` and `audiowire play` as child processes, the
//! network simulator's relay between them (in this process, so its CPU is nobody's), and what
//! the player reports (`--stats-json`, `--summary-json`, `--latency-log`) read back.
//!
//! Every wait is bounded: a sender that does not report its address in 10 s, or a player
//! still running 30 s after its audio should have ended, is killed and the cell recorded as
//! failed.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use audiowire_netsim::{Lateness, Profile, RelayConfig, TcpRelay, UdpRelay};
use serde_json::Value;

use crate::error::{Error, Result, io};
use crate::matrix::{Cell, Transport};
use crate::procstat::{self, ProcStat};
use crate::stats::{Distribution, network_delay_quantile_ms};

/// The seed of every relay, so runs repeat.
pub const SEED: u64 = 7;
/// Sample rate of the bench clip.
pub const CLIP_RATE: u32 = 48_000;
/// Channels of the bench clip.
pub const CLIP_CHANNELS: u16 = 2;

/// What one cell measured.
#[derive(Debug, Clone)]
pub struct CellResult {
    /// The cell.
    pub cell: Cell,
    /// Why it failed, if it did (the figures below are then partial or empty).
    pub error: Option<String>,
    /// Seconds of audio the player handed to its output.
    pub audio_s: f64,
    /// Per-frame latency, sender's schedule to the output, in ms (the player's histogram).
    pub latency: Option<Distribution>,
    /// Underruns over the whole stream.
    pub underruns: u64,
    /// Of `underruns`, those where the output ring ran short while the jitter buffer had the
    /// audio (the player's feeding thread late); the rest are the buffer running empty.
    pub ring_underruns: u64,
    /// Underruns after the first 2 s of audio.
    pub underruns_after_2s: u64,
    /// Frames received.
    pub received: u64,
    /// Frames lost (concealed and skipped).
    pub lost: u64,
    /// Of `lost`, those rebuilt from the next frame's FEC data (Opus over UDP) instead of
    /// concealed.
    pub recovered: u64,
    /// Frames that came after their turn.
    pub late: u64,
    /// Frames of concealment played (lost frames and stall fill).
    pub concealed: u64,
    /// The player's target latency at the end, ms.
    pub target_end_ms: Option<f64>,
    /// CPU seconds per second of audio: the sender, over the player's connection.
    pub cpu_sender: Option<f64>,
    /// CPU seconds per second of audio: the player, start to exit.
    pub cpu_player: Option<f64>,
    /// The network's own one-way delay, p99, ms (from the profile).
    pub network_p99_ms: f64,
    /// Packets (UDP) the relay dropped on the way to the player.
    pub network_lost: u64,
    /// Latency over time: (s since the player started, ms).
    pub trace: Vec<(f64, f64)>,
    /// How late the machine woke a sleeping thread during the cell ([`crate::wakeup`]).
    pub wakeups: Option<crate::wakeup::Lateness>,
    /// The player's own wake-ups 2 ms or more past their deadline, and the worst, in ms
    /// (its summary's `woke_late`, `woke_late_worst_ms`).
    pub player_woke_late: Option<(u64, f64)>,
    /// The relay's own deliveries to the player 2 ms or more past their instants (the machine
    /// holding up its thread, on top of the profile), and the worst, in ms.
    pub relay_late: Option<(u64, f64)>,
    /// Of `underruns_after_2s`, those that came in a stats interval in which the machine held
    /// up the relay or the player by 2 ms or more ([`underruns_held_up`]).
    pub held_up_after_2s: u64,
}

impl CellResult {
    fn failed(cell: &Cell, error: String) -> Self {
        Self {
            network_p99_ms: network_delay_quantile_ms(&cell.network.config(), 0.99),
            cell: cell.clone(),
            error: Some(error),
            audio_s: 0.0,
            latency: None,
            underruns: 0,
            ring_underruns: 0,
            underruns_after_2s: 0,
            received: 0,
            lost: 0,
            recovered: 0,
            late: 0,
            concealed: 0,
            target_end_ms: None,
            cpu_sender: None,
            cpu_player: None,
            network_lost: 0,
            trace: Vec::new(),
            wakeups: None,
            player_woke_late: None,
            relay_late: None,
            held_up_after_2s: 0,
        }
    }
}

/// Runs cells with one `audiowire` binary, in one work folder.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The `audiowire` binary.
    pub exe: PathBuf,
    /// Where clips, recordings and logs go.
    pub work: PathBuf,
    /// The real-time priority given to the sender and player (`--rt-priority`); `None`: each
    /// runs at its own default.
    pub rt_priority: Option<u8>,
}

/// A bench clip: a quiet 440 Hz tone, 48 kHz stereo s16, `seconds` long.
pub fn write_clip(path: &Path, seconds: f64) -> Result<()> {
    let spec = hound::WavSpec {
        channels: CLIP_CHANNELS,
        sample_rate: CLIP_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let err = |e: hound::Error| Error::Run(format!("writing {}: {e}", path.display()));
    let mut w = hound::WavWriter::create(path, spec).map_err(err)?;
    let n = (seconds * f64::from(CLIP_RATE)).round() as u64;
    for i in 0..n {
        let t = i as f64 / f64::from(CLIP_RATE);
        let s = (0.1 * (2.0 * std::f64::consts::PI * 440.0 * t).sin() * 32767.0) as i16;
        for _ in 0..CLIP_CHANNELS {
            w.write_sample(s).map_err(err)?;
        }
    }
    w.finalize().map_err(err)
}

/// A child killed and reaped on drop.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's output lines, each with the instant it was read.
type Lines = mpsc::Receiver<(Instant, String)>;

/// Lines of a child's pipe, on a thread, each with the instant it was read.
fn lines_of(pipe: impl Read + Send + 'static) -> Lines {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// The address in a sender's "serving ... on ADDR (Ctrl-C stops)" line.
pub fn serving_addr(line: &str) -> Option<String> {
    if !line.contains("serving") {
        return None;
    }
    let rest = line.rsplit(" on ").next()?;
    rest.split_whitespace().next().map(str::to_string)
}

/// One `--stats-json` line of the player (or its summary, as the last).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsLine {
    /// Seconds of audio played.
    pub t: f64,
    /// Underruns so far.
    pub underruns: u64,
    /// The player's wake-ups 2 ms or more late so far.
    pub woke_late: u64,
    /// When the bench read it, if it was timed.
    pub read_at: Option<Instant>,
}

impl StatsLine {
    fn of(v: &Value, read_at: Option<Instant>) -> Option<Self> {
        Some(Self {
            t: v.get("t").or_else(|| v.get("seconds"))?.as_f64()?,
            underruns: v.get("underruns")?.as_u64()?,
            woke_late: v.get("woke_late").and_then(Value::as_u64).unwrap_or(0),
            read_at,
        })
    }
}

/// What the player printed on stdout: its stats lines and its summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlayerOutput {
    /// Each `--stats-json` line, then the summary's figures as a last one.
    pub stats: Vec<StatsLine>,
    /// The `--summary-json` object.
    pub summary: Option<Value>,
}

/// Reads the player's stdout lines.
pub fn parse_player_output<'a>(lines: impl IntoIterator<Item = &'a str>) -> PlayerOutput {
    parse_timed_output(lines.into_iter().map(|l| (None, l)))
}

/// Reads the player's stdout lines, each with the instant it was read if known.
pub fn parse_timed_output<'a>(
    lines: impl IntoIterator<Item = (Option<Instant>, &'a str)>,
) -> PlayerOutput {
    let mut out = PlayerOutput::default();
    for (at, line) in lines {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        if let Some(s) = v.get("summary") {
            out.summary = Some(s.clone());
            out.stats.extend(StatsLine::of(s, at));
        } else {
            out.stats.extend(StatsLine::of(&v, at));
        }
    }
    out
}

/// Underruns after `after` seconds of audio: the final count less the last count reported at
/// or before `after` (0 if none was).
pub fn underruns_after(stats: &[StatsLine], total: u64, after: f64) -> u64 {
    let before = stats
        .iter()
        .take_while(|l| l.t <= after)
        .last()
        .map_or(0, |l| l.underruns);
    total.saturating_sub(before)
}

/// How far before a stats interval a late relay delivery can still starve the player in it:
/// more than the latency the Wi-Fi cells play at.
pub const HELD_UP_SLACK: Duration = Duration::from_millis(200);

/// Of the underruns after `after` seconds of audio, those in a stats interval (the player's
/// lines come every 500 ms) in which the machine held things up: the player woke 2 ms or more
/// late (its `woke_late` count rose), or the relay sent something to it 2 ms or more late
/// (`relay_late`, the instants those deliveries were due) from [`HELD_UP_SLACK`] before the
/// interval to its end. An underrun in such an interval may still have had another cause; one
/// outside them had no delay of the machine's that the bench saw.
pub fn underruns_held_up(stats: &[StatsLine], after: f64, relay_late: &[Instant]) -> u64 {
    let mut held = 0;
    let mut prev = StatsLine {
        t: 0.0,
        underruns: 0,
        woke_late: 0,
        read_at: None,
    };
    for cur in stats {
        if cur.t > after && cur.underruns > prev.underruns {
            let from = prev
                .read_at
                .map(|a| a.checked_sub(HELD_UP_SLACK).unwrap_or(a));
            let relay = relay_late
                .iter()
                .any(|&d| from.is_none_or(|f| d >= f) && cur.read_at.is_none_or(|c| d <= c));
            if relay || cur.woke_late > prev.woke_late {
                held += cur.underruns - prev.underruns;
            }
        }
        prev = *cur;
    }
    held
}

/// Reads a `--latency-log` file: `t_s,latency_ms` lines after a header.
pub fn parse_trace(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(',')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect()
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The latency distribution in a summary object.
pub fn summary_latency(s: &Value) -> Option<Distribution> {
    let l = s.get("latency_ms")?;
    let f = |k: &str| l.get(k).and_then(Value::as_f64);
    Some(Distribution {
        count: l.get("count").and_then(Value::as_u64)? as usize,
        min: f("min")?,
        p50: f("p50")?,
        p95: f("p95")?,
        p99: f("p99")?,
        max: f("max")?,
    })
}

enum Relay {
    Udp(UdpRelay),
    Tcp(TcpRelay),
}

impl Relay {
    fn start(transport: Transport, network: Profile, forward: &str) -> Result<Self> {
        let config = RelayConfig::symmetric(network.config().with_seed(SEED));
        let err = |e: audiowire_netsim::Error| Error::Run(format!("network simulator: {e}"));
        Ok(match transport {
            Transport::Udp => {
                Relay::Udp(UdpRelay::start("127.0.0.1:0", forward, config).map_err(err)?)
            }
            Transport::Tcp => {
                Relay::Tcp(TcpRelay::start("127.0.0.1:0", forward, config).map_err(err)?)
            }
        })
    }

    fn addr(&self) -> String {
        match self {
            Relay::Udp(r) => r.local_addr().to_string(),
            Relay::Tcp(r) => r.local_addr().to_string(),
        }
    }

    /// Stops it; datagrams lost on the way to the player, and how late the relay itself sent
    /// what went to the player.
    fn stop(self) -> (u64, Lateness) {
        match self {
            Relay::Udp(r) => {
                let (_, down) = r.lateness();
                (r.stop().downstream.lost, down)
            }
            Relay::Tcp(r) => {
                let (_, down) = r.lateness();
                r.stop();
                (0, down)
            }
        }
    }
}

/// Where a finished player left its CPU total, read before it is reaped.
fn wait_reading(
    proc: &mut Proc,
    deadline: Instant,
    mut each: impl FnMut(),
) -> Result<Option<ProcStat>> {
    let pid = proc.child.id();
    let mut last = None;
    loop {
        each();
        match procstat::read(pid) {
            Some(s) if s.exited() => {
                last = Some(s);
                break;
            }
            Some(s) => last = Some(s),
            None => break,
        }
        if proc
            .child
            .try_wait()
            .map_err(io("waiting for the player"))?
            .is_some()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Run(
                "the player did not finish in time (killed)".into(),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = proc.child.wait();
    Ok(last)
}

impl Runner {
    /// A runner of `exe` working in `work` (created).
    pub fn new(exe: impl Into<PathBuf>, work: impl Into<PathBuf>) -> Result<Self> {
        let work = work.into();
        std::fs::create_dir_all(&work).map_err(io(format!("creating {}", work.display())))?;
        Ok(Self {
            exe: exe.into(),
            work,
            rt_priority: None,
        })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.stdin(Stdio::null());
        if let Some(p) = self.rt_priority {
            c.args(["--rt-priority", &p.to_string()]);
        }
        c
    }

    /// Starts `audiowire send` on a fresh clip and waits (10 s at most) for its address.
    fn start_sender(&self, cell: &Cell) -> Result<(Proc, String, Lines)> {
        let clip = self.work.join(format!("clip-{}s.wav", cell.seconds));
        if !clip.exists() {
            write_clip(&clip, cell.seconds)?;
        }
        let mut child = self
            .command()
            .arg("send")
            .arg(&clip)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--transport",
                cell.transport.name(),
            ])
            .args(["--frame-ms", &cell.frame_ms.to_string()])
            .args(["--codec", cell.codec.name()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("starting {} send", self.exe.display())))?;
        let stderr = child.stderr.take();
        let proc = Proc { child };
        let lines = lines_of(stderr.ok_or_else(|| Error::Run("no sender stderr".into()))?);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok((_, line)) => {
                    if let Some(addr) = serving_addr(&line) {
                        return Ok((proc, addr, lines));
                    }
                    said.push(line);
                }
                Err(_) => {
                    return Err(Error::Run(format!(
                        "the sender did not report its address: {}",
                        said.join(" / ")
                    )));
                }
            }
        }
    }

    /// Runs one cell: sender, relay, player; returns what it measured (a failure is a result
    /// with `error` set).
    pub fn run_cell(&self, cell: &Cell) -> CellResult {
        match self.try_cell(cell) {
            Ok(r) => r,
            Err(e) => CellResult::failed(cell, e.to_string()),
        }
    }

    fn try_cell(&self, cell: &Cell) -> Result<CellResult> {
        let (mut sender, addr, _sender_lines) = self.start_sender(cell)?;
        let relay = Relay::start(cell.transport, cell.network, &addr)?;
        let label = cell.label();
        let trace_path = self.work.join(format!("{label}.csv"));
        let wav = self.work.join(format!("{label}.wav"));
        let stderr_path = self.work.join(format!("{label}.player.log"));
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(io(format!("creating {}", stderr_path.display())))?;
        let sender_pid = sender.child.id();
        let sender_start = procstat::read(sender_pid);
        let mut child = self
            .command()
            .args(["play", &relay.addr(), "--transport", cell.transport.name()])
            // The null output stands in for a speaker: late frames are handled as when
            // playing (concealed in place), not as when only recording (waited for).
            .args(["--late", "conceal"])
            .args(cell.setting.args())
            .arg("--out")
            .arg(&wav)
            .args(["--stats-json", "--summary-json", "--latency-log"])
            .arg(&trace_path)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(io(format!("starting {} play", self.exe.display())))?;
        let stdout = child.stdout.take();
        let mut player = Proc { child };
        let lines = lines_of(stdout.ok_or_else(|| Error::Run("no player stdout".into()))?);
        let deadline = Instant::now() + Duration::from_secs_f64(cell.seconds * 1.5 + 30.0);
        let mut sender_end = sender_start;
        let player_stat = wait_reading(&mut player, deadline, || {
            if let Some(s) = procstat::read(sender_pid) {
                sender_end = Some(s);
            }
        })?;
        let (network_lost, relay_late) = relay.stop();
        let _ = sender.child.kill();
        let _ = sender.child.wait();
        // Everything it printed; the reader thread ends with the pipe (bounded wait per line).
        let printed: Vec<(Instant, String)> =
            std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(2)).ok()).collect();
        let out = parse_timed_output(printed.iter().map(|(at, l)| (Some(*at), l.as_str())));
        let Some(s) = out.summary else {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let last = log.lines().last().unwrap_or("no output").to_string();
            return Err(Error::Run(format!("the player gave no summary: {last}")));
        };
        let audio_s = s.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
        let per_audio = |cpu: f64| (audio_s > 0.0).then(|| cpu / audio_s);
        let underruns = u(&s, "underruns");
        let trace = std::fs::read_to_string(&trace_path)
            .map(|t| parse_trace(&t))
            .unwrap_or_default();
        let _ = std::fs::remove_file(&wav);
        Ok(CellResult {
            cell: cell.clone(),
            error: None,
            audio_s,
            latency: summary_latency(&s),
            underruns,
            ring_underruns: u(&s, "ring_underruns"),
            underruns_after_2s: underruns_after(&out.stats, underruns, 2.0),
            held_up_after_2s: underruns_held_up(
                &out.stats,
                2.0,
                &relay_late.when.iter().map(|w| w.0).collect::<Vec<_>>(),
            ),
            relay_late: Some((relay_late.late, relay_late.worst.as_secs_f64() * 1e3)),
            received: u(&s, "received"),
            lost: u(&s, "lost"),
            recovered: u(&s, "recovered"),
            late: u(&s, "late"),
            concealed: u(&s, "concealed"),
            target_end_ms: s.get("target_ms").and_then(Value::as_f64),
            cpu_sender: match (sender_start, sender_end) {
                (Some(a), Some(b)) => per_audio(b.seconds() - a.seconds()),
                _ => None,
            },
            cpu_player: player_stat.and_then(|p| per_audio(p.seconds())),
            network_p99_ms: network_delay_quantile_ms(&cell.network.config(), 0.99),
            network_lost,
            trace,
            wakeups: None,
            player_woke_late: s.get("woke_late").and_then(Value::as_u64).map(|n| {
                (
                    n,
                    s.get("woke_late_worst_ms")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0),
                )
            }),
        })
    }
}

/// What a measurement of a remote sender found.
#[derive(Debug, Clone)]
pub struct RemoteResult {
    /// `tcp` or `udp`.
    pub transport: Transport,
    /// The options given to the player beyond the bench's own (`bench --remote ... -- OPTIONS`).
    pub play_args: Vec<String>,
    /// The summary the player printed, if any.
    pub summary: Option<Value>,
    /// Latency percentiles from it.
    pub latency: Option<Distribution>,
    /// Underruns over the whole stream.
    pub underruns: u64,
    /// Of `underruns`, those after the first 2 s of audio.
    pub underruns_after_2s: u64,
    /// Frames lost (concealed, rebuilt or skipped).
    pub lost: u64,
    /// Of `lost`, those rebuilt from the next frame's FEC data.
    pub recovered: u64,
    /// Frames of concealment played.
    pub concealed: u64,
    /// CPU seconds per second of audio of the local player.
    pub cpu_player: Option<f64>,
    /// Latency over time.
    pub trace: Vec<(f64, f64)>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The remote run's player command after the binary: `play ADDR` and the bench's own options,
/// recording to `wav` and logging latency to `trace`; the user's options go after these and
/// may not repeat any of the bench's (each is the bench's way of measuring or would clash
/// with it).
pub fn remote_play_args(
    addr: &str,
    transport: Transport,
    wav: &Path,
    trace: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "play",
        addr,
        "--transport",
        transport.name(),
        "--late",
        "conceal",
        "--out",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(wav.into());
    args.extend(["--stats-json", "--summary-json", "--latency-log"].map(OsString::from));
    args.push(trace.into());
    args
}

/// Plays from a remote `audiowire send` at `addr` for `seconds` (then stops the player as
/// Ctrl-C would) and reports what the player measured. The player corrects the sender's clock
/// with Ping/Pong, so the latency is end to end across the two machines. `play_args` go to the
/// player after the bench's own options (none of [`remote_play_args`]' options).
pub fn run_remote(
    runner: &Runner,
    addr: &str,
    transport: Transport,
    seconds: f64,
    play_args: &[String],
) -> RemoteResult {
    let fail = |e: String| RemoteResult {
        transport,
        play_args: play_args.to_vec(),
        summary: None,
        latency: None,
        underruns: 0,
        underruns_after_2s: 0,
        lost: 0,
        recovered: 0,
        concealed: 0,
        cpu_player: None,
        trace: Vec::new(),
        error: Some(e),
    };
    let trace_path = runner.work.join(format!("remote-{}.csv", transport.name()));
    let wav = runner.work.join(format!("remote-{}.wav", transport.name()));
    let spawned = runner
        .command()
        .args(remote_play_args(addr, transport, &wav, &trace_path))
        .args(play_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return fail(format!("starting {}: {e}", runner.exe.display())),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return fail("no player pipes".into());
    };
    let mut player = Proc { child };
    let lines = lines_of(stdout);
    let errs = lines_of(stderr);
    let stop_at = Instant::now() + Duration::from_secs_f64(seconds);
    let deadline = stop_at + Duration::from_secs(15);
    let mut signalled = false;
    let pid = player.child.id().to_string();
    let reading = wait_reading(&mut player, deadline, || {
        if !signalled && Instant::now() >= stop_at {
            signalled = true;
            let _ = Command::new("kill").args(["-INT", &pid]).status();
        }
    });
    let printed: Vec<(Instant, String)> =
        std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(2)).ok()).collect();
    let out = parse_timed_output(printed.iter().map(|(at, l)| (Some(*at), l.as_str())));
    let stat = match reading {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let Some(s) = out.summary else {
        let said: Vec<String> = errs.try_iter().map(|(_, l)| l).collect();
        return fail(format!("the player gave no summary: {}", said.join(" / ")));
    };
    let audio_s = s.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
    let underruns = u(&s, "underruns");
    RemoteResult {
        transport,
        play_args: play_args.to_vec(),
        latency: summary_latency(&s),
        underruns,
        underruns_after_2s: underruns_after(&out.stats, underruns, 2.0),
        lost: u(&s, "lost"),
        recovered: u(&s, "recovered"),
        concealed: u(&s, "concealed"),
        cpu_player: stat
            .filter(|_| audio_s > 0.0)
            .map(|p| p.seconds() / audio_s),
        trace: std::fs::read_to_string(&trace_path)
            .map(|t| parse_trace(&t))
            .unwrap_or_default(),
        summary: Some(s),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn the_sender_line_names_the_address() {
        let line = "INFO serving 48000 Hz, 2 ch, s16 in 10.0 ms frames over udp on 127.0.0.1:40211 (Ctrl-C stops)";
        assert_eq!(serving_addr(line).as_deref(), Some("127.0.0.1:40211"));
        assert_eq!(serving_addr("player 127.0.0.1:5 connected"), None);
    }

    #[test]
    fn player_output_splits_stats_and_summary() {
        let text = [
            r#"{"t":0.500,"received":50,"underruns":0,"buffer_ms":1.0}"#,
            "not json",
            r#"{"t":2.000,"received":200,"underruns":1}"#,
            r#"{"t":2.500,"received":250,"underruns":3}"#,
            r#"{"summary":{"seconds":3.0,"underruns":4,"latency_ms":{"count":300,"min":1.0,"p50":2.0,"p95":3.0,"p99":4.0,"max":5.0}}}"#,
        ];
        let out = parse_player_output(text);
        let got: Vec<(f64, u64)> = out.stats.iter().map(|l| (l.t, l.underruns)).collect();
        // The summary's figures come last.
        assert_eq!(got, [(0.5, 0), (2.0, 1), (2.5, 3), (3.0, 4)]);
        let s = out.summary.unwrap();
        assert_eq!(u(&s, "underruns"), 4);
        let l = summary_latency(&s).unwrap();
        assert_eq!((l.count, l.p50, l.p99, l.max), (300, 2.0, 4.0, 5.0));
        assert_eq!(underruns_after(&out.stats, 4, 2.0), 3);
        assert_eq!(underruns_after(&out.stats, 4, 0.1), 4);
        assert_eq!(underruns_after(&[], 0, 2.0), 0);
    }

    #[test]
    fn underruns_are_set_beside_the_seconds_the_machine_held_up() {
        let t0 = Instant::now();
        let sec = |n: u64| t0 + Duration::from_secs(n);
        let line = |t: f64, underruns, woke_late, at| StatsLine {
            t,
            underruns,
            woke_late,
            read_at: Some(at),
        };
        let stats = [
            line(1.0, 1, 0, sec(1)),
            line(2.0, 2, 0, sec(2)),
            // 1 underrun, the player woke late.
            line(3.0, 3, 1, sec(3)),
            // 2 underruns, nothing late.
            line(4.0, 5, 1, sec(4)),
            line(5.0, 5, 1, sec(5)),
            // 1 underrun, the relay was late just before the interval.
            line(6.0, 6, 1, sec(6)),
            // 3 underruns, the relay was late inside it.
            line(7.0, 9, 1, sec(7)),
        ];
        let relay = [
            sec(5) - Duration::from_millis(100),
            sec(6) + Duration::from_millis(500),
            // Before 2 s: its interval is not counted.
            sec(1) + Duration::from_millis(500),
        ];
        assert_eq!(underruns_after(&stats, 9, 2.0), 7);
        assert_eq!(underruns_held_up(&stats, 2.0, &relay), 1 + 1 + 3);
        assert_eq!(underruns_held_up(&stats, 2.0, &[]), 1);
        // Late by more than the slack before an interval: not that interval's.
        assert_eq!(
            underruns_held_up(&stats, 2.0, &[sec(5) - Duration::from_millis(300)]),
            1
        );
        assert_eq!(underruns_held_up(&[], 2.0, &relay), 0);
    }

    #[test]
    fn traces_parse_and_skip_the_header() {
        let t = parse_trace("t_s,latency_ms\n0.010,21.5\n0.020, 22.0\nbad\n");
        assert_eq!(t, [(0.01, 21.5), (0.02, 22.0)]);
    }

    #[test]
    fn clips_have_the_asked_length() {
        let dir = tempfile::Builder::new()
            .prefix("audiowire-bench-clip-")
            .tempdir()
            .unwrap();
        let p = dir.path().join("c.wav");
        write_clip(&p, 0.25).unwrap();
        let r = hound::WavReader::open(&p).unwrap();
        assert_eq!(r.duration(), 12_000);
        assert_eq!(r.spec().channels, 2);
    }
}
