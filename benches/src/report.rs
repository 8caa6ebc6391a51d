//! Results as JSON and Markdown, and the issue's targets checked against them.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::matrix::{Codec, Mode, Setting, Transport};
use crate::run::{CellResult, RemoteResult};
use crate::stats::{Distribution, median};

/// The issue's targets for the end-to-end bench (the JACK lab's are checked by the lab).
pub mod targets {
    /// Clean loopback, PCM over UDP, 1 ms frames: added latency p99, ms.
    pub const LOOPBACK_P99_MS: f64 = 3.0;
    /// ... with no underrun over this many seconds.
    pub const LOOPBACK_SECONDS: f64 = 60.0;
    /// Wi-Fi: latency within this of the network's own p99 delay, ms.
    pub const WIFI_MARGIN_MS: f64 = 10.0;
    /// Wi-Fi: no underrun after this many seconds.
    pub const WIFI_SETTLE_S: f64 = 2.0;
    /// CPU per side per second of audio, PCM, cores.
    pub const CPU_PCM: f64 = 0.006;
    /// CPU per side per second of audio, Opus 10 ms frames, cores.
    pub const CPU_OPUS: f64 = 0.02;
}

/// Where and when a run happened.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Cores online.
    pub cores: usize,
    /// `/proc/loadavg` at the start.
    pub load_start: String,
    /// `/proc/loadavg` at the end.
    pub load_end: String,
    /// `uname -sr`-like kernel line from `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// Seconds since the Unix epoch at the start.
    pub started_unix: u64,
    /// The real-time priority of the bench's own threads, the wake-up probe's (0: none).
    pub rt_priority: u8,
    /// Whether the system granted it to the bench's own threads.
    pub rt_granted: bool,
    /// How late the machine woke a sleeping thread over the whole run ([`crate::wakeup`]).
    pub wakeups: Option<crate::wakeup::Lateness>,
}

impl Machine {
    /// Reads what it can now (`load_end` is filled by [`Machine::finish`]).
    pub fn now() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        };
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            load_start: read("/proc/loadavg"),
            load_end: String::new(),
            kernel: read("/proc/sys/kernel/osrelease"),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            rt_priority: 0,
            rt_granted: false,
            wakeups: None,
        }
    }

    /// What the wake-up probe saw, in words, for the report.
    pub fn wakeup_line(&self) -> Option<String> {
        let w = self.wakeups.as_ref()?;
        let priority = match (self.rt_priority, self.rt_granted) {
            (0, _) => "ordinary scheduling (--rt-priority 0)".to_string(),
            (p, true) => format!("real-time priority {p}, as the player's threads"),
            (p, false) => {
                format!("real-time priority {p} asked for and refused: ordinary scheduling")
            }
        };
        Some(format!(
            "Timer wake-ups during the run (a thread of the bench sleeping to deadlines 1 ms apart, {priority}): {}.",
            w.line()
        ))
    }

    /// What a thread's wake-up costs on this machine (the wake-up probe's own CPU time per
    /// wake-up over the run), and so what 100 wake-ups a second cost, beside the CPU targets:
    /// a stream wakes at least once per frame on each side, a player once more per output
    /// period.
    pub fn wakeup_cost_line(&self) -> Option<String> {
        let w = self.wakeups.as_ref()?;
        Some(format!(
            "this machine: {:.1} µs of CPU per thread wake-up (the wake-up probe's), so 100 wake-ups a second cost {:.4} cores",
            w.cpu_us_per_wakeup?,
            w.cores_for(100.0)?
        ))
    }

    /// Notes the load at the end.
    pub fn finish(&mut self) {
        self.load_end = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
    }
}

fn wake_json(w: Option<&crate::wakeup::Lateness>) -> Value {
    match w {
        None => Value::Null,
        Some(w) => json!({
            "count": w.count,
            "late_ms": lat_json(Some(w.late_ms)),
            "late_2ms_or_more": w.over_2ms,
            "late_5ms_or_more": w.over_5ms,
            "cpu_us_per_wakeup": w.cpu_us_per_wakeup,
        }),
    }
}

/// `YYYY-MM-DD HH:MM` UTC of a Unix time (Howard Hinnant's civil-from-days).
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60
    )
}

/// Whether a target is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Met, with the figure.
    Met,
    /// Missed, with the figure.
    Missed,
    /// The figures pass, but the run was shorter than the target asks.
    PassedShort,
    /// Nothing measured it in this run.
    NotMeasured,
}

impl Verdict {
    /// As the tables say it.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::PassedShort => "passed, but shorter than asked",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One target, checked.
#[derive(Debug, Clone)]
pub struct Check {
    /// The target, in the issue's words.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Quick or full (or `remote`).
    pub mode: String,
    /// Where it ran.
    pub machine: Machine,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
    /// Local cells.
    pub cells: Vec<CellResult>,
    /// Remote measurements.
    pub remote: Vec<RemoteResult>,
}

fn f(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn lat_json(d: Option<Distribution>) -> Value {
    d.map_or(Value::Null, |d| {
        json!({"count": d.count, "min": d.min, "p50": d.p50, "p95": d.p95, "p99": d.p99, "max": d.max})
    })
}

impl Report {
    /// The cells that ran to the end.
    fn ok(&self) -> impl Iterator<Item = &CellResult> {
        self.cells.iter().filter(|c| c.error.is_none())
    }

    /// Everything but the traces, as JSON.
    pub fn to_json(&self) -> Value {
        let cells: Vec<Value> = self
            .cells
            .iter()
            .map(|r| {
                json!({
                    "label": r.cell.label(),
                    "transport": r.cell.transport.name(),
                    "codec": r.cell.codec.name(),
                    "frame_ms": r.cell.frame_ms,
                    "network": r.cell.network.name(),
                    "setting": r.cell.setting.name(),
                    "seconds_asked": r.cell.seconds,
                    "error": r.error,
                    "audio_s": r.audio_s,
                    "latency_ms": lat_json(r.latency),
                    "underruns": r.underruns,
                    "ring_underruns": r.ring_underruns,
                    "underruns_after_2s": r.underruns_after_2s,
                    "received": r.received,
                    "lost": r.lost,
                    "recovered": r.recovered,
                    "late": r.late,
                    "concealed": r.concealed,
                    "target_end_ms": r.target_end_ms,
                    "cpu_per_audio_s": {"sender": r.cpu_sender, "player": r.cpu_player},
                    "network_p99_ms": r.network_p99_ms,
                    "network_lost": r.network_lost,
                    "wakeups": wake_json(r.wakeups.as_ref()),
                    "player_woke_late": r.player_woke_late.map(|(n, worst)| {
                        json!({"late_2ms_or_more": n, "worst_ms": worst})
                    }),
                    "relay_late": r.relay_late.map(|(n, worst)| {
                        json!({"late_2ms_or_more": n, "worst_ms": worst})
                    }),
                    "underruns_after_2s_held_up": r.held_up_after_2s,
                })
            })
            .collect();
        let remote: Vec<Value> = self
            .remote
            .iter()
            .map(|r| {
                // A failed run counted nothing: its counts are null, not 0.
                let count = |n: u64| r.error.is_none().then_some(n);
                json!({
                    "transport": r.transport.name(),
                    "play_args": r.play_args,
                    "error": r.error,
                    "latency_ms": lat_json(r.latency),
                    "underruns": count(r.underruns),
                    "underruns_after_2s": count(r.underruns_after_2s),
                    "lost": count(r.lost),
                    "recovered": count(r.recovered),
                    "concealed": count(r.concealed),
                    "cpu_per_audio_s": {"player": r.cpu_player},
                    "summary": r.summary,
                })
            })
            .collect();
        let checks: Vec<Value> = self
            .checks()
            .iter()
            .map(|c| json!({"target": c.target, "measured": c.measured, "verdict": format!("{:?}", c.verdict)}))
            .collect();
        json!({
            "mode": self.mode,
            "started": utc(self.machine.started_unix),
            "machine": {
                "cores": self.machine.cores,
                "kernel": self.machine.kernel,
                "loadavg_start": self.machine.load_start,
                "loadavg_end": self.machine.load_end,
                "rt_priority": self.machine.rt_priority,
                "rt_granted": self.machine.rt_granted,
                "wakeups": wake_json(self.machine.wakeups.as_ref()),
            },
            "wall_s": self.wall_s,
            "relay_seed": crate::run::SEED,
            "clip": format!("{} Hz, {} ch, s16, 440 Hz tone", crate::run::CLIP_RATE, crate::run::CLIP_CHANNELS),
            "cells": cells,
            "remote": remote,
            "targets": checks,
        })
    }

    /// The results table, one row per cell.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| transport | codec | frame | network | player | audio | p50 ms | p95 ms | p99 ms | max ms | underruns (after 2 s) | lost (FEC) / concealed | CPU send | CPU play |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.cells {
            let c = &r.cell;
            let l = r.latency;
            if let Some(e) = &r.error {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} ms | {} | {} | failed: {} |||||||||",
                    c.transport.name(),
                    c.codec.name(),
                    c.frame_ms,
                    c.network.name(),
                    c.setting.name(),
                    e.replace('|', "/")
                );
                continue;
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} ms | {} | {} | {:.1} s | {} | {} | {} | {} | {} ({}) | {} ({}) / {} | {} | {} |",
                c.transport.name(),
                c.codec.name(),
                c.frame_ms,
                c.network.name(),
                c.setting.name(),
                r.audio_s,
                f(l.map(|d| d.p50), 1),
                f(l.map(|d| d.p95), 1),
                f(l.map(|d| d.p99), 1),
                f(l.map(|d| d.max), 1),
                r.underruns,
                r.underruns_after_2s,
                r.lost,
                r.recovered,
                r.concealed,
                f(r.cpu_sender, 4),
                f(r.cpu_player, 4),
            );
        }
        for r in &self.remote {
            let player = if r.play_args.is_empty() {
                "default".to_string()
            } else {
                let words: Vec<String> = r.play_args.iter().map(|a| shell_word(a)).collect();
                format!(
                    "`{}`",
                    words.join(" ").replace('`', "'").replace('|', "\\|")
                )
            };
            if let Some(e) = &r.error {
                let _ = writeln!(
                    s,
                    "| {} | remote | | your network | {player} | failed: {} |||||||||",
                    r.transport.name(),
                    e.replace('|', "/")
                );
                continue;
            }
            let l = r.latency;
            let _ = writeln!(
                s,
                "| {} | remote | | your network | {player} | {} | {} | {} | {} | {} | {} ({}) | {} ({}) / {} | – | {} |",
                r.transport.name(),
                r.summary
                    .as_ref()
                    .and_then(|v| v.get("seconds"))
                    .and_then(Value::as_f64)
                    .map_or("–".into(), |v| format!("{v:.1} s")),
                f(l.map(|d| d.p50), 1),
                f(l.map(|d| d.p95), 1),
                f(l.map(|d| d.p99), 1),
                f(l.map(|d| d.max), 1),
                r.underruns,
                r.underruns_after_2s,
                r.lost,
                r.recovered,
                r.concealed,
                f(r.cpu_player, 4),
            );
        }
        s
    }

    /// The issue's end-to-end targets, checked against this run.
    pub fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        // The targets are the local matrix's: a remote run (or one stopped before its first
        // cell) measured none of them.
        if self.cells.is_empty() {
            return out;
        }
        // Clean loopback, UDP, 1 ms frames, lowest setting.
        let loopback = self.ok().find(|r| {
            r.cell.transport == Transport::Udp
                && r.cell.frame_ms == 1.0
                && r.cell.network == audiowire_netsim::Profile::Clean
        });
        out.push(match loopback {
            None => Check {
                target: "clean loopback, PCM/UDP, 1 ms frames: added latency p99 ≤ 3 ms, no underrun over 60 s".into(),
                measured: "–".into(),
                verdict: Verdict::NotMeasured,
            },
            Some(r) => {
                let p99 = r.latency.map(|d| d.p99);
                let pass = p99.is_some_and(|p| p <= targets::LOOPBACK_P99_MS) && r.underruns == 0;
                Check {
                    target: "clean loopback, PCM/UDP, 1 ms frames: added latency p99 ≤ 3 ms, no underrun over 60 s".into(),
                    measured: format!(
                        "p99 {} ms (p50 {} ms), {} underruns over {:.0} s ({}){}",
                        f(p99, 1),
                        f(r.latency.map(|d| d.p50), 1),
                        r.underruns,
                        r.audio_s,
                        r.cell.setting.name(),
                        r.wakeups.map_or(String::new(), |w| format!(
                            "; meanwhile the machine woke a sleeping thread 2 ms or more late {} times, 5 ms or more {} times (max {:.1} ms)",
                            w.over_2ms, w.over_5ms, w.late_ms.max
                        ))
                    ),
                    verdict: match (pass, r.audio_s >= targets::LOOPBACK_SECONDS - 0.5) {
                        (false, _) => Verdict::Missed,
                        (true, true) => Verdict::Met,
                        (true, false) => Verdict::PassedShort,
                    },
                }
            }
        });
        // Wi-Fi at default settings.
        let wifi: Vec<&CellResult> = self
            .ok()
            .filter(|r| {
                r.cell.network == audiowire_netsim::Profile::Wifi
                    && r.cell.setting == Setting::Default
            })
            .collect();
        let target = "Wi-Fi (5 ± 10 ms, 1 % loss): no underrun after 2 s; median latency within 10 ms of the network's p99 delay (14.8 ms)".to_string();
        if wifi.is_empty() {
            out.push(Check {
                target,
                measured: "–".into(),
                verdict: Verdict::NotMeasured,
            });
        } else {
            let mut measured = Vec::new();
            let mut pass = true;
            for r in &wifi {
                let p50 = r.latency.map(|d| d.p50);
                let over = p50.map(|p| p - r.network_p99_ms);
                pass &=
                    r.underruns_after_2s == 0 && over.is_some_and(|o| o <= targets::WIFI_MARGIN_MS);
                measured.push(format!(
                    "{} {} {} ms: p50 {} ms ({} ms over), {} underruns after 2 s{}",
                    r.cell.transport.name(),
                    r.cell.codec.name(),
                    r.cell.frame_ms,
                    f(p50, 1),
                    f(over, 1),
                    r.underruns_after_2s,
                    if r.underruns_after_2s > 0 {
                        format!(" ({} in a second the machine held up)", r.held_up_after_2s)
                    } else {
                        String::new()
                    }
                ));
            }
            out.push(Check {
                target,
                measured: measured.join("; "),
                verdict: if pass { Verdict::Met } else { Verdict::Missed },
            });
        }
        out.push(self.cpu_check(
            "CPU per side per second of audio, PCM ≤ 0.006 cores",
            targets::CPU_PCM,
            |r| r.cell.codec == Codec::Pcm,
        ));
        out.push(self.cpu_check(
            "CPU per side per second of audio, Opus 10 ms ≤ 0.02 cores",
            targets::CPU_OPUS,
            |r| r.cell.codec == Codec::Opus && r.cell.frame_ms == 10.0,
        ));
        out
    }

    /// Every cell `which` picks must cost at most `limit` cores per side.
    fn cpu_check(&self, target: &str, limit: f64, which: impl Fn(&CellResult) -> bool) -> Check {
        let cells: Vec<&CellResult> = self.ok().filter(|r| which(r)).collect();
        let senders: Vec<f64> = cells.iter().filter_map(|r| r.cpu_sender).collect();
        let players: Vec<f64> = cells.iter().filter_map(|r| r.cpu_player).collect();
        let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
        let (ms, mp) = (max(&senders), max(&players));
        let (Some(ms), Some(mp)) = (ms, mp) else {
            return Check {
                target: target.into(),
                measured: "no such cell in this run".into(),
                verdict: Verdict::NotMeasured,
            };
        };
        // What the machine's wake-ups cost is said beside the figures; the verdict is on the
        // figures alone.
        let cost = self
            .machine
            .wakeup_cost_line()
            .map_or(String::new(), |l| format!("; {l}"));
        Check {
            target: target.into(),
            measured: format!(
                "sender median {} max {ms:.4}; player median {} max {mp:.4} (cores, over {} cells){cost}",
                f(median(&senders), 4),
                f(median(&players), 4),
                cells.len()
            ),
            verdict: if ms <= limit && mp <= limit {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        }
    }

    /// The Markdown report: conditions, table, targets, plots.
    pub fn markdown(&self, plots: &[(String, String)]) -> String {
        let mut s = String::new();
        let m = &self.machine;
        if self.cells.is_empty() {
            let _ = writeln!(
                s,
                "`audiowire bench --remote`, {}: {} cores, load average {} at the start and {} at the end. Latency runs from the remote sender's schedule (its clock corrected by Ping/Pong) to the instant the first sample leaves the local player's output ring (recording to a WAV file, no device); CPU is the local player's.\n",
                utc(m.started_unix),
                m.cores,
                m.load_start,
                m.load_end,
            );
        } else {
            let _ = writeln!(
                s,
                "`audiowire bench` ({}), {}: {} cores, Linux {}, load average {} at the start and {} at the end; {:.0} s in all. Relays seeded with {}; clip {} Hz {} ch s16; the player records to a WAV file (no device), so latency runs from the sender's schedule to the instant the first sample leaves the player's output ring.\n",
                self.mode,
                utc(m.started_unix),
                m.cores,
                m.kernel,
                m.load_start,
                m.load_end,
                self.wall_s,
                crate::run::SEED,
                crate::run::CLIP_RATE,
                crate::run::CLIP_CHANNELS,
            );
        }
        if let Some(line) = m.wakeup_line() {
            let _ = writeln!(s, "{line}\n");
        }
        s.push_str(&self.table());
        if !self.cells.is_empty() {
            s.push_str("\n| target | measured | verdict |\n|---|---|---|\n");
            for c in self.checks() {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    c.target,
                    c.measured,
                    c.verdict.text()
                );
            }
        }
        if !plots.is_empty() {
            s.push('\n');
            for (title, file) in plots {
                let _ = writeln!(s, "![{title}]({file})");
            }
        }
        s
    }

    /// The mode as a [`Mode`], if it is one.
    pub fn bench_mode(&self) -> Option<Mode> {
        match self.mode.as_str() {
            "quick" => Some(Mode::Quick),
            "full" => Some(Mode::Full),
            _ => None,
        }
    }
}

/// An argument as a shell would need it written: as it is when plain, else in single quotes.
fn shell_word(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/=+@%".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use crate::matrix::Cell;
    use audiowire_netsim::Profile;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400 + 3600 + 120), "2000-02-29 01:02 UTC");
        assert_eq!(utc(1_796_083_200), "2026-12-01 00:00 UTC");
    }

    fn result(
        transport: Transport,
        frame_ms: f64,
        network: Profile,
        p50: f64,
        p99: f64,
        under2: u64,
    ) -> CellResult {
        CellResult {
            cell: Cell {
                transport,
                codec: Codec::Pcm,
                frame_ms,
                network,
                setting: Setting::Default,
                seconds: 10.0,
            },
            error: None,
            audio_s: 10.0,
            latency: Some(Distribution {
                count: 1000,
                min: 1.0,
                p50,
                p95: p99,
                p99,
                max: p99 + 1.0,
            }),
            underruns: under2,
            ring_underruns: 0,
            underruns_after_2s: under2,
            received: 1000,
            lost: 0,
            recovered: 0,
            late: 0,
            concealed: 0,
            target_end_ms: Some(20.0),
            cpu_sender: Some(0.004),
            cpu_player: Some(0.01),
            network_p99_ms: crate::stats::network_delay_quantile_ms(&network.config(), 0.99),
            wakeups: None,
            player_woke_late: None,
            relay_late: Some((0, 0.4)),
            held_up_after_2s: under2.min(1),
            network_lost: 0,
            trace: vec![(0.0, p50)],
        }
    }

    #[test]
    fn targets_are_judged_on_the_figures() {
        let report = Report {
            mode: "quick".into(),
            machine: Machine::now(),
            wall_s: 1.0,
            cells: vec![
                result(Transport::Udp, 1.0, Profile::Clean, 2.0, 2.9, 0),
                result(Transport::Udp, 10.0, Profile::Wifi, 24.0, 30.0, 0),
                result(Transport::Tcp, 10.0, Profile::Wifi, 25.0, 30.0, 1),
            ],
            remote: Vec::new(),
        };
        let checks = report.checks();
        // Passes, but 10 s is not the 60 s asked.
        assert_eq!(checks[0].verdict, Verdict::PassedShort);
        // TCP had an underrun after 2 s and is 10.2 ms over.
        assert_eq!(checks[1].verdict, Verdict::Missed, "{}", checks[1].measured);
        assert!(
            checks[1]
                .measured
                .contains("udp pcm 10 ms: p50 24.0 ms (9.2 ms over), 0 underruns after 2 s;")
        );
        // An underrun says whether it came in a second the machine held up; the verdict stays.
        assert!(
            checks[1]
                .measured
                .ends_with("1 underruns after 2 s (1 in a second the machine held up)"),
            "{}",
            checks[1].measured
        );
        // The players' 0.01 is over 0.006.
        assert_eq!(checks[2].verdict, Verdict::Missed);
        assert_eq!(checks[3].verdict, Verdict::NotMeasured);
        let md = report.markdown(&[("t".into(), "t.svg".into())]);
        assert!(md.contains("| udp | pcm | 10 ms | wifi | default | 10.0 s | 24.0 | 30.0 | 30.0 | 31.0 | 0 (0) | 0 (0) / 0 | 0.0040 | 0.0100 |"), "{md}");
        assert!(md.contains("![t](t.svg)"));
        let j = report.to_json();
        assert_eq!(j["cells"][1]["latency_ms"]["p50"], 24.0);
        assert_eq!(j["targets"][2]["verdict"], "Missed");
        assert_eq!(j["cells"][2]["underruns_after_2s_held_up"], 1);
        assert_eq!(j["cells"][2]["relay_late"]["worst_ms"], 0.4);
        // No probe, no word on what a wake-up costs.
        assert!(!checks[2].measured.contains("this machine"));
    }

    #[test]
    fn the_cpu_targets_say_what_a_wake_up_costs_and_are_judged_on_the_figures() {
        let mut machine = Machine::now();
        // 1000 wake-ups that cost 40 ms of the probe's CPU: 40 µs each.
        machine.wakeups = crate::wakeup::Lateness::of(&[120; 1000], Some(40_000_000));
        let mut cheap = result(Transport::Udp, 10.0, Profile::Clean, 20.0, 25.0, 0);
        cheap.cpu_player = Some(0.005);
        let dear = result(Transport::Tcp, 10.0, Profile::Clean, 20.0, 25.0, 0);
        let report = |cells| Report {
            mode: "quick".into(),
            machine: machine.clone(),
            wall_s: 1.0,
            cells,
            remote: Vec::new(),
        };
        let note = "; this machine: 40.0 µs of CPU per thread wake-up (the wake-up probe's), so 100 wake-ups a second cost 0.0040 cores";
        let met = report(vec![cheap.clone()]).checks();
        assert_eq!(met[2].verdict, Verdict::Met);
        assert!(met[2].measured.ends_with(note), "{}", met[2].measured);
        // The player's 0.01 is over 0.006 whatever a wake-up costs.
        let missed = report(vec![cheap, dear]).checks();
        assert_eq!(missed[2].verdict, Verdict::Missed);
        assert!(missed[2].measured.ends_with(note), "{}", missed[2].measured);
        // No Opus cell: not measured, and nothing said.
        assert_eq!(missed[3].verdict, Verdict::NotMeasured);
        assert!(!missed[3].measured.contains("this machine"));
        let r = report(Vec::new());
        let md = r.markdown(&[]);
        assert!(md.contains("; 40.0 µs of CPU per wake-up."), "{md}");
        assert_eq!(r.to_json()["machine"]["wakeups"]["cpu_us_per_wakeup"], 40.0);
    }

    #[test]
    fn a_remote_run_is_a_row_with_the_players_options_or_why_it_failed() {
        let ok = RemoteResult {
            transport: Transport::Udp,
            play_args: vec![
                "--latency".into(),
                "40ms".into(),
                "--device".into(),
                "USB Audio | 2".into(),
            ],
            summary: Some(serde_json::json!({"seconds": 3.04})),
            latency: Some(Distribution {
                count: 300,
                min: 39.0,
                p50: 40.3,
                p95: 40.6,
                p99: 41.2,
                max: 44.0,
            }),
            underruns: 3,
            underruns_after_2s: 1,
            lost: 4,
            recovered: 2,
            concealed: 5,
            cpu_player: Some(0.0123),
            trace: Vec::new(),
            error: None,
        };
        let failed = RemoteResult {
            transport: Transport::Tcp,
            play_args: Vec::new(),
            summary: None,
            latency: None,
            error: Some("the player gave no summary: connection refused | retrying".into()),
            ..ok.clone()
        };
        let report = Report {
            mode: "remote".into(),
            machine: Machine::now(),
            wall_s: 7.0,
            cells: Vec::new(),
            remote: vec![ok, failed],
        };
        let table = report.table();
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                r"| udp | remote | | your network | `--latency 40ms --device 'USB Audio \| 2'` | 3.0 s | 40.3 | 40.6 | 41.2 | 44.0 | 3 (1) | 4 (2) / 5 | – | 0.0123 |",
                "| tcp | remote | | your network | default | failed: the player gave no summary: connection refused / retrying |||||||||",
            ]
        );
        // Every row has the header's 14 columns (an escaped `\|` is none).
        let cols = |r: &str| r.matches('|').count() - r.matches(r"\|").count();
        assert!(table.lines().all(|r| cols(r) == 15), "{table}");
        let j = report.to_json();
        assert_eq!(j["remote"][0]["play_args"][1], "40ms");
        assert_eq!(j["remote"][0]["recovered"], 2);
        assert_eq!(
            j["remote"][1]["error"],
            "the player gave no summary: connection refused | retrying"
        );
        assert!(j["remote"][1]["lost"].is_null());
        // No local cell, no local targets.
        assert!(report.checks().is_empty());
        assert_eq!(j["targets"], serde_json::json!([]));
    }
}
