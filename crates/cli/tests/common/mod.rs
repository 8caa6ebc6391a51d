//! Helpers for tests that run the real `audiowire` binary: a sender child that reports its port,
//! temporary folders, WAV comparison. Every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_audiowire")
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn clip(name: &str) -> PathBuf {
    repo().join("test-audio").join(name)
}

/// A fresh, empty folder for one test, removed with all in it when the guard drops (also when
/// the test fails): keep it in a variable for as long as the folder is used.
pub fn tmpdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("audiowire-test-{name}-"))
        .tempdir()
        .unwrap()
}

/// A running `audiowire send`, killed on drop. Its stderr lines arrive on `lines`.
pub struct Sender {
    pub child: Child,
    pub addr: String,
    pub lines: mpsc::Receiver<String>,
}

impl Sender {
    /// Starts `audiowire send FILE --listen 127.0.0.1:0 EXTRA...` and waits (at most 10 s) for
    /// the line that names the bound address.
    #[allow(
        clippy::zombie_processes,
        reason = "the child moves into Sender, whose Drop kills and waits for it"
    )]
    pub fn start(file: &Path, extra: &[&str]) -> Sender {
        Self::start_on(file, "127.0.0.1:0", extra)
    }

    /// Starts `audiowire send FILE --listen LISTEN EXTRA...` (see [`Sender::start`]).
    #[allow(
        clippy::zombie_processes,
        reason = "the child moves into Sender, whose Drop kills and waits for it"
    )]
    pub fn start_on(file: &Path, listen: &str, extra: &[&str]) -> Sender {
        let mut child = Command::new(bin())
            .arg("send")
            .arg(file)
            .args(["--listen", listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start audiowire send");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the sender did not report its address within 10 s");
            if let Some(rest) = line
                .split(" on ")
                .nth(1)
                .filter(|_| line.contains("serving"))
            {
                let addr = rest.split_whitespace().next().unwrap().to_string();
                return Sender {
                    child,
                    addr,
                    lines: rx,
                };
            }
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no sender line containing {needle:?} within {timeout:?}"),
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args`, killing it if it takes longer than `timeout`.
pub fn run(args: &[&str], timeout: Duration) -> Output {
    let child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start audiowire");
    wait_output(child, timeout)
}

/// Waits for a child's output, killing it after `timeout`.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("audiowire did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The count before `word` in a player's summary (e.g. 7 in "7 lost"), 0 where it has none.
/// Only a number counts: the summary says "woke the player 2 ms or more late 3×" before its
/// "N late" when the machine held the player up.
pub fn count_before(text: &str, word: &str) -> u64 {
    let words: Vec<&str> = text.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    words
        .windows(2)
        .find_map(|w| (w[1] == word).then(|| w[0].parse().ok()).flatten())
        .unwrap_or(0)
}

/// Sends a signal to a child with kill(1).
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

/// A WAV file's spec and its samples as raw bit patterns (integers as i32, floats as bits), so
/// equality means bit-identical.
pub fn wav_samples(path: &Path) -> (hound::WavSpec, Vec<i64>) {
    let mut r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("{} is not a readable WAV: {e}", path.display()));
    let spec = r.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Int => r.samples::<i32>().map(|s| i64::from(s.unwrap())).collect(),
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .map(|s| i64::from(s.unwrap().to_bits()))
            .collect(),
    };
    (spec, samples)
}

/// Polls (every 10 ms, at most `timeout`) until `f` holds.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A child process whose stdout and stderr lines arrive on channels; killed on drop.
pub struct Proc {
    pub child: Child,
    pub out: mpsc::Receiver<String>,
    pub err: mpsc::Receiver<String>,
}

fn line_channel(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line containing `needle` on `rx`; the lines before it are returned too.
pub fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line containing {needle:?} within {timeout:?}; saw {seen:#?}"),
        }
    }
}

/// Takes exactly `n` lines from `rx`, waiting at most `timeout` in all.
pub fn take_lines(rx: &mpsc::Receiver<String>, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!(
                "{} of {n} lines within {timeout:?}: {lines:#?}",
                lines.len()
            ),
        }
    }
    lines
}

impl Proc {
    /// Starts `cmd` with piped stdout and stderr (stdin from `/dev/null` unless set).
    #[allow(
        clippy::zombie_processes,
        reason = "the child moves into Proc, whose Drop kills and waits for it"
    )]
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let out = line_channel(child.stdout.take().unwrap());
        let err = line_channel(child.stderr.take().unwrap());
        Proc { child, out, err }
    }

    /// Waits for the child to exit (at most `timeout`) and returns its status.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `args` and waits (at most 10 s) for its "listening on ADDR" line;
/// returns the process and ADDR.
pub fn start_tool(args: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    let p = Proc::spawn(cmd);
    let line = wait_line(&p.err, "listening on ", Duration::from_secs(10));
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split([' ', ',']).next())
        .unwrap()
        .to_string();
    (p, addr)
}

/// The path of a Python peer script in `tests/peers`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// Starts `python3 tests/peers/SCRIPT ARGS...`.
pub fn start_peer(script: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg(peer_script(script)).args(args).stdin(Stdio::null());
    Proc::spawn(cmd)
}

/// Starts a listening Python peer and returns it with its `127.0.0.1:PORT` (from its first line).
pub fn start_listening_peer(script: &str, args: &[&str]) -> (Proc, String) {
    let p = start_peer(script, args);
    let line = wait_line(&p.out, "PORT ", Duration::from_secs(10));
    let port = line.trim_start_matches("PORT ").trim().to_string();
    (p, format!("127.0.0.1:{port}"))
}

/// Asserts a player's summary reports the sender's clock (measured with Ping/Pong during the
/// stream) within 2 ms of ours, as it must be on one machine.
pub fn assert_sender_clock_near_zero(summary: &str) {
    let offset: f64 = summary
        .split(" · sender clock ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sender clock in: {summary}"));
    assert!(
        offset.abs() < 2.0,
        "sender clock {offset} ms on one machine: {summary}"
    );
}
