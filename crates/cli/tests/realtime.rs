//! `--rt-priority`: the sender's and player's threads run under SCHED_FIFO at the priority
//! asked for where the system allows it (root with CAP_SYS_NICE, or an rtprio limit), and as
//! ordinary threads with `--rt-priority 0`. Read back from the kernel, per thread.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Sender, bin, clip, tmpdir, wait_until};

/// A thread's name, scheduling policy (0 SCHED_OTHER, 1 SCHED_FIFO) and real-time priority.
type Thread = (String, u32, u32);

/// Every thread of `pid`.
fn threads(pid: u32) -> Vec<Thread> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let name = stat[stat.find('(').unwrap() + 1..stat.rfind(')').unwrap()].to_string();
        // After ") ": field 3 (state) is index 0; rt_priority is field 40, policy 41.
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        out.push((name, f[41 - 3].parse().unwrap(), f[40 - 3].parse().unwrap()));
    }
    out
}

/// Whether this process may ask for SCHED_FIFO at `priority`: CAP_SYS_NICE, or an rtprio
/// limit that high (children inherit both).
fn may_be_realtime(priority: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let rtprio = limits
        .lines()
        .find(|l| l.starts_with("Max realtime priority"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    cap_eff & (1 << 23) != 0 || rtprio >= priority
}

fn play_briefly(addr: &str, out: &Path, rt: &[&str]) -> std::process::Child {
    Command::new(bin())
        .args(["play", addr, "--transport", "udp"])
        .args(rt)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts a looping sender and a player at `rt`, waits until both have their streaming threads,
/// and returns each one's threads.
fn threads_of_a_stream(rt: &[&str], name: &str) -> (Vec<Thread>, Vec<Thread>) {
    let tmp = tmpdir(name);
    let dir = tmp.path();
    let mut args = vec!["--loop", "--transport", "udp"];
    args.extend(rt);
    let sender = Sender::start(&clip("clicks-48k-s16-mono.wav"), &args);
    let mut player = play_briefly(&sender.addr, &dir.join("out.wav"), rt);
    // The sender starts a thread per player; the player its null output's clock.
    wait_until("the streaming threads", Duration::from_secs(10), || {
        threads(sender.child.id())
            .iter()
            .any(|t| t.0.starts_with("udp player"))
            && threads(player.id()).iter().any(|t| t.0 == "null output")
    });
    let got = (threads(sender.child.id()), threads(player.id()));
    let _ = player.kill();
    let _ = player.wait();
    got
}

#[test]
fn the_streaming_threads_run_fifo_at_the_priority_asked_for() {
    let (sender, player) = threads_of_a_stream(&["--rt-priority", "33"], "rt33");
    let expected = if may_be_realtime(33) { (1, 33) } else { (0, 0) };
    for (name, policy, prio) in sender.iter().chain(&player) {
        // The Ctrl-C handler's thread starts before the promotion and stays ordinary.
        if name == "ctrl-c" {
            continue;
        }
        assert_eq!(
            (*policy, *prio),
            expected,
            "thread {name:?}: {sender:?} {player:?}"
        );
    }
    assert!(sender.iter().any(|t| t.0.starts_with("udp player")));
    assert!(player.iter().any(|t| t.0 == "null output"));
}

#[test]
fn rt_priority_0_leaves_every_thread_ordinary() {
    let (sender, player) = threads_of_a_stream(&["--rt-priority", "0"], "rt0");
    for (name, policy, prio) in sender.iter().chain(&player) {
        assert_eq!((*policy, *prio), (0, 0), "thread {name:?}");
    }
}

#[test]
fn by_default_the_player_is_real_time_and_a_file_senders_threads_are_not() {
    let (sender, player) = threads_of_a_stream(&[], "rtdefault");
    let expected = if may_be_realtime(20) { (1, 20) } else { (0, 0) };
    for (name, policy, prio) in &player {
        if name != "ctrl-c" {
            assert_eq!(
                (*policy, *prio),
                expected,
                "player thread {name:?}: {player:?}"
            );
        }
    }
    for (name, policy, prio) in &sender {
        assert_eq!((*policy, *prio), (0, 0), "sender thread {name:?}");
    }
}
