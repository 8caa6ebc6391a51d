//! A whole bench run, as `audiowire bench` and `cargo bench` start it: the cells (or the remote
//! measurement), then the JSON, the Markdown and the plots in the output folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use audiowire_netsim::Profile;

use crate::error::{Result, io};
use crate::matrix::{Mode, Setting, Transport};
use crate::plot;
use crate::report::{Machine, Report};
use crate::run::{self, Runner};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `audiowire` binary to run as sender and player.
    pub exe: PathBuf,
    /// Quick or full.
    pub mode: Mode,
    /// Seconds of audio per cell instead of the mode's.
    pub seconds: Option<f64>,
    /// Only the cells whose label contains this (e.g. `udp`, `wifi`, `-10ms-`).
    pub only: Option<String>,
    /// Where the results go.
    pub out: PathBuf,
    /// Measure a remote `audiowire send` at this address instead of the local matrix.
    pub remote: Option<String>,
    /// With `remote`: the transports to try (the remote serves each on the same port).
    pub transports: Vec<Transport>,
    /// With `remote`: options for the player beyond the bench's own (none of
    /// [`run::remote_play_args`]' options).
    pub play_args: Vec<String>,
    /// The real-time priority given to the sender and player (`--rt-priority`); `None`: each
    /// runs at its own default.
    pub rt_priority: Option<u8>,
    /// The real-time priority of this process's threads, the wake-up probe's (0: none).
    pub probe_priority: u8,
    /// Whether this process's threads were granted it.
    pub rt_granted: bool,
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The results.
    pub report: Report,
    /// The JSON file.
    pub json: PathBuf,
    /// The Markdown file.
    pub markdown: PathBuf,
    /// The plots.
    pub plots: Vec<PathBuf>,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The line logged after a run (a local cell or a remote sender): its latency and what the
/// player counted (`[underruns, after 2 s, lost, by FEC, concealed]`) and `cpu`, or why it
/// failed.
fn outcome_line(
    error: Option<&str>,
    latency: Option<crate::stats::Distribution>,
    [underruns, after_2s, lost, recovered, concealed]: [u64; 5],
    cpu: &str,
) -> String {
    match (error, latency) {
        (Some(e), _) => format!("  failed: {e}"),
        (None, Some(l)) => format!(
            "  latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {underruns} underruns ({after_2s} after 2 s), {lost} lost ({recovered} by FEC), {concealed} concealed; CPU {cpu}",
            l.p50, l.p99, l.max
        ),
        (None, None) => "  no latency measured".into(),
    }
}

/// Runs the bench and writes its results; `log` gets a line per cell, and `stop()` (Ctrl-C)
/// is checked between cells: the results so far are still written.
pub fn run(
    options: &Options,
    log: &mut dyn FnMut(&str),
    stop: &dyn Fn() -> bool,
) -> Result<Written> {
    let started = Instant::now();
    let mut machine = Machine::now();
    std::fs::create_dir_all(&options.out)
        .map_err(io(format!("creating {}", options.out.display())))?;
    let work = std::env::temp_dir().join(format!("audiowire-bench-{}", std::process::id()));
    let mut runner = Runner::new(&options.exe, &work)?;
    runner.rt_priority = options.rt_priority;
    machine.rt_priority = options.probe_priority;
    machine.rt_granted = options.rt_granted;
    // Started from this thread, the probe runs at its priority (real-time where granted).
    let probe = crate::wakeup::Probe::start().map_err(io("starting the wake-up probe"))?;
    let mut cells = Vec::new();
    let mut remote = Vec::new();
    let mode = if options.remote.is_some() {
        "remote"
    } else {
        options.mode.name()
    };
    if let Some(addr) = &options.remote {
        let seconds = options.seconds.unwrap_or(options.mode.default_seconds());
        for &t in &options.transports {
            if stop() {
                break;
            }
            log(&format!(
                "playing from {addr} over {} for {seconds} s{}",
                t.name(),
                if options.play_args.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", options.play_args.join(" "))
                }
            ));
            let r = run::run_remote(&runner, addr, t, seconds, &options.play_args);
            log(&outcome_line(
                r.error.as_deref(),
                r.latency,
                [
                    r.underruns,
                    r.underruns_after_2s,
                    r.lost,
                    r.recovered,
                    r.concealed,
                ],
                &format!("play {:.4}", r.cpu_player.unwrap_or(f64::NAN)),
            ));
            remote.push(r);
        }
    } else {
        let all = options.mode.cells(options.seconds);
        let todo: Vec<_> = all
            .into_iter()
            .filter(|c| {
                options
                    .only
                    .as_ref()
                    .is_none_or(|o| c.label().contains(o.as_str()))
            })
            .collect();
        for (i, cell) in todo.iter().enumerate() {
            if stop() {
                log("stopped");
                break;
            }
            log(&format!("[{}/{}] {cell}", i + 1, todo.len()));
            let mark = probe.mark();
            let mut r = runner.run_cell(cell);
            r.wakeups = probe.since(mark);
            log(&outcome_line(
                r.error.as_deref(),
                r.latency,
                [
                    r.underruns,
                    r.underruns_after_2s,
                    r.lost,
                    r.recovered,
                    r.concealed,
                ],
                &format!(
                    "send {:.4}, play {:.4}",
                    r.cpu_sender.unwrap_or(f64::NAN),
                    r.cpu_player.unwrap_or(f64::NAN)
                ),
            ));
            cells.push(r);
        }
    }
    machine.finish();
    machine.wakeups = probe.finish();
    let report = Report {
        mode: mode.into(),
        machine,
        wall_s: started.elapsed().as_secs_f64(),
        cells,
        remote,
    };
    let base = format!("latency-{mode}");
    let mut plots = Vec::new();
    let mut links = Vec::new();
    let mut draw = |title: &str,
                    suffix: &str,
                    traces: Vec<(String, &[(f64, f64)])>,
                    cdf: bool|
     -> Result<()> {
        if traces.iter().all(|t| t.1.is_empty()) {
            return Ok(());
        }
        let path = options.out.join(format!("{base}-{suffix}.svg"));
        if cdf {
            plot::latency_distribution(&path, title, &traces)?;
        } else {
            plot::latency_over_time(&path, title, &traces)?;
        }
        links.push((title.to_string(), file_name(&path)));
        plots.push(path);
        Ok(())
    };
    if report.remote.is_empty() {
        let main: Vec<(String, &[(f64, f64)])> = report
            .cells
            .iter()
            .filter(|r| r.cell.frame_ms == 10.0 && r.cell.setting == Setting::Default)
            .map(|r| {
                (
                    format!(
                        "{} {} {}",
                        r.cell.transport.name(),
                        r.cell.codec.name(),
                        r.cell.network.name()
                    ),
                    r.trace.as_slice(),
                )
            })
            .collect();
        draw(
            "Latency over time, 10 ms frames, default settings",
            "time",
            main.clone(),
            false,
        )?;
        draw(
            "Latency distribution, 10 ms frames, default settings",
            "cdf",
            main,
            true,
        )?;
        let clean: Vec<(String, &[(f64, f64)])> = report
            .cells
            .iter()
            .filter(|r| r.cell.transport == Transport::Udp && r.cell.network == Profile::Clean)
            .map(|r| {
                (
                    format!(
                        "{} {} ms, {}",
                        r.cell.codec.name(),
                        r.cell.frame_ms,
                        r.cell.setting.name()
                    ),
                    r.trace.as_slice(),
                )
            })
            .collect();
        draw(
            "Latency distribution, UDP on clean loopback, by frame and setting",
            "clean-cdf",
            clean,
            true,
        )?;
    } else {
        let traces: Vec<(String, &[(f64, f64)])> = report
            .remote
            .iter()
            .map(|r| (r.transport.name().to_string(), r.trace.as_slice()))
            .collect();
        draw(
            "Latency over time, remote sender",
            "time",
            traces.clone(),
            false,
        )?;
        draw("Latency distribution, remote sender", "cdf", traces, true)?;
    }
    let json = options.out.join(format!("{base}.json"));
    let text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
    std::fs::write(&json, text + "\n").map_err(io(format!("writing {}", json.display())))?;
    let markdown = options.out.join(format!("{base}.md"));
    std::fs::write(&markdown, report.markdown(&links))
        .map_err(io(format!("writing {}", markdown.display())))?;
    if report.cells.iter().all(|c| c.error.is_none())
        && report.remote.iter().all(|r| r.error.is_none())
    {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        log(&format!(
            "logs of the failed runs are in {}",
            work.display()
        ));
    }
    Ok(Written {
        report,
        json,
        markdown,
        plots,
    })
}
