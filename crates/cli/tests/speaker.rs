//! End to end through a real cpal output stream, with no sound card: `audiowire send` serves a
//! clip, `audiowire play` plays it on ALSA's default device, which `scripts/fake-speaker.sh`
//! routes to a private PulseAudio null sink (a real-time clocked "speaker"), and `parec` records
//! that sink's monitor. The recording is aligned to the source by cross-correlation and compared
//! sample by sample (SNR after a best-fit gain), and checked for dropouts.
//!
//! Each test has its own speaker directory (so its own daemon and socket) and its own sender
//! port (chosen by the OS), so the tests run in parallel. The speaker's environment is given to
//! the child processes only; this process's environment is left alone.
//!
//! Needs pulseaudio, pulseaudio-utils, libasound2-plugins and alsa-utils; `scripts/test.sh`
//! installs them. Without them the tests fail (they do not skip).
//!
//! What the path does (measured on the 2-core Debian dev machine, 10+ runs): cpal opens ALSA's
//! `default` (the pulse plugin) at the stream's own rate as f32, and PulseAudio mixes into the
//! 48 kHz s16 null sink. The 48 kHz s16 sweep comes back bit-exact (every sample equal, gain 1).
//! The 44.1 kHz chords are played with `--device-rate 48000`, so the player's own rubato
//! converter does the resampling: 87.6 / 87.3 dB SNR against this test's own resampling of the
//! source, the same every run. Latency: 100 ms target, the device adds 13-20 ms.
//!
//! ALSA's pulse plugin reports a burst of I/O errors in the first few ms of a stream (its
//! `snd_pcm_delay` returns EIO until PulseAudio has sent timing info: alsa-plugins compares
//! `pa_stream_get_latency`'s negative error code with the positive PA_ERR_NODATA), while
//! playing perfectly. The player therefore counts only xruns as device trouble in its summary;
//! other backend errors go to the debug log. A real gap would show up in the recording, which is
//! checked for dropouts and SNR.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The speaker tests run one at a time: they are real-time, and one test's analysis (pure CPU)
/// must not starve another's playback on a 2-core machine.
static REAL_TIME: Mutex<()> = Mutex::new(());

/// Takes the real-time lock (a test that panicked while holding it does not poison the rest).
fn real_time() -> std::sync::MutexGuard<'static, ()> {
    REAL_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The speaker's (and the recording's) rate.
const REC_RATE: u32 = 48_000;
/// Bytes per second of the recording (2 ch, s16).
const REC_BYTES_PER_SEC: u64 = REC_RATE as u64 * 4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    root().join("scripts/fake-speaker.sh")
}

/// Fails (never skips) when PulseAudio is missing, saying how to get it.
fn require_pulseaudio() {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("pulseaudio").is_file()));
    assert!(
        found,
        "pulseaudio is not installed, and this test plays through a PulseAudio fake speaker. \
         Run the tests with the README's test command, `bash scripts/test.sh`, which installs \
         it (apt-get install pulseaudio pulseaudio-utils libasound2-plugins alsa-utils)."
    );
}

/// Polls `done` every 5 ms until it is true; panics with `what` after `timeout`.
fn poll_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// A fresh directory for one test, removed with all in it when the test passes; a failed test
/// keeps it (pa.log, the recording) and says where. Declare it before the [`Speaker`], so the
/// daemon is stopped before its directory goes.
struct TestDir(Option<tempfile::TempDir>);

impl TestDir {
    fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), |d| d.path())
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Some(d) = self.0.take()
            && thread::panicking()
        {
            eprintln!("kept {} for a look", d.keep().display());
        }
    }
}

fn test_dir(name: &str) -> TestDir {
    TestDir(Some(
        tempfile::Builder::new()
            .prefix(&format!("aw-speaker-{name}-"))
            .tempdir()
            .expect("create the test directory"),
    ))
}

/// The fake speaker of one test, driven through the script; stopped on drop (also on failure).
struct Speaker {
    dir: PathBuf,
    env: Vec<(String, String)>,
    running: bool,
}

fn run_script(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run bash scripts/fake-speaker.sh")
}

impl Speaker {
    fn start(dir: PathBuf) -> Self {
        let out = run_script(&["start".as_ref(), dir.as_os_str()]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "fake-speaker.sh start failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // Lines like `export NAME='VALUE'`.
        let env: Vec<(String, String)> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let speaker = Self {
            dir,
            env,
            running: true,
        };
        for name in [
            "ALSA_CONFIG_PATH",
            "PULSE_SERVER",
            "PULSE_CLIENTCONFIG",
            "XDG_RUNTIME_DIR",
            "XDG_CONFIG_HOME",
        ] {
            assert!(
                speaker.env.iter().any(|(k, _)| k == name),
                "fake-speaker.sh start printed no {name}: {stdout}"
            );
        }
        speaker
    }

    /// Starts recording the speaker and waits until audio (silence, at first) is flowing into
    /// the file, so the monitor is attached before anything is played.
    fn record(&self, wav: &Path) {
        let out = run_script(&["record".as_ref(), self.dir.as_os_str(), wav.as_os_str()]);
        assert!(
            out.status.success(),
            "fake-speaker.sh record failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // The header is well under 4 KiB; 4 KiB + 50 ms of audio means samples arrive.
        let enough = 4096 + REC_BYTES_PER_SEC / 20;
        poll_until(Duration::from_secs(5), "the recording to start", || {
            file_len(wav) > enough
        });
    }

    fn stop(&mut self) -> std::process::Output {
        self.running = false;
        run_script(&["stop".as_ref(), self.dir.as_os_str()])
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop();
        }
    }
}

/// A child process killed (and reaped) on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn audiowire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_audiowire"))
}

/// Starts `audiowire send CLIP --listen 127.0.0.1:0` and learns the port from its log line
/// `serving ... on 127.0.0.1:PORT (Ctrl-C stops)`.
fn start_sender(clip: &Path) -> (KillOnDrop, String) {
    let mut child = audiowire()
        .arg("send")
        .arg(clip)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start audiowire send");
    let stderr = child.stderr.take().expect("sender stderr");
    let child = KillOnDrop(child);
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let log2 = Arc::clone(&log);
    // Reads stderr to the end (so the pipe never fills) and hands each line over.
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut l) = log2.lock() {
                l.push_str(&line);
                l.push('\n');
            }
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let addr = line
                    .split(" serving ")
                    .nth(1)
                    .and_then(|rest| rest.rsplit_once(" on "))
                    .and_then(|(_, a)| a.split_once(" (Ctrl-C stops)"))
                    .map(|(a, _)| a.trim().to_string());
                if let Some(addr) = addr {
                    return (child, addr);
                }
            }
            Err(e) => panic!(
                "the sender did not log its address ({e}); its stderr:\n{}",
                log.lock().map(|l| l.clone()).unwrap_or_default()
            ),
        }
    }
}

struct PlayRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `audiowire play ADDR --latency 100ms` with the speaker's environment, bounded in time.
fn play(addr: &str, speaker: &Speaker, extra: &[&str]) -> PlayRun {
    let started = Instant::now();
    let mut child = audiowire()
        // 25 ms device periods: this checks the path's correctness, and must not depend on a
        // 2-core CI machine scheduling the audio thread every 10 ms while other tests run.
        .args(["play", addr, "--latency", "100ms", "--period", "25ms"])
        .args(extra)
        .envs(speaker.env.iter().map(|(k, v)| (k, v)))
        .env_remove("PULSE_SINK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start audiowire play");
    let reader = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("player stdout")));
    let err = reader(Box::new(child.stderr.take().expect("player stderr")));
    let mut child = KillOnDrop(child);
    let deadline = started + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait for the player") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            panic!(
                "audiowire play did not finish in 20 s; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    PlayRun {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed,
    }
}

/// A stereo WAV as floats in [-1, 1], with its rate.
fn read_stereo(path: &Path) -> (u32, Vec<[f64; 2]>) {
    let mut r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(spec.channels, 2, "{}: expected stereo", path.display());
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    let scale = 1.0 / f64::from(1u32 << (spec.bits_per_sample - 1));
    let samples: Vec<f64> = r
        .samples::<i32>()
        .map(|s| f64::from(s.expect("a sample")) * scale)
        .collect();
    let frames = samples.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
    (spec.sample_rate, frames)
}

fn mono(x: &[[f64; 2]]) -> Vec<f64> {
    x.iter().map(|f| 0.5 * (f[0] + f[1])).collect()
}

/// Band-limited resampling of `x` from `from` Hz to `to` Hz (windowed sinc, 64 taps each side,
/// Blackman window, cutoff at 0.9 of the lower Nyquist), output sample n taken at input time
/// (n + shift) * from / to, `shift` in output samples. Used to bring a source to the speaker's
/// rate for a sample-by-sample comparison, with a sub-sample shift to match the recording.
fn resample(x: &[[f64; 2]], from: u32, to: u32, shift: f64) -> Vec<[f64; 2]> {
    const HALF: i64 = 64;
    let step = f64::from(from) / f64::from(to);
    let cutoff = 0.9 * (1.0f64).min(1.0 / step); // relative to the input's Nyquist
    let n_out = (x.len() as f64 / step).round() as usize;
    (0..n_out)
        .map(|n| {
            let t = (n as f64 + shift) * step;
            let centre = t.floor() as i64;
            let mut acc = [0.0; 2];
            for k in (centre - HALF + 1)..=(centre + HALF) {
                let Some(s) = usize::try_from(k).ok().and_then(|k| x.get(k)) else {
                    continue;
                };
                let d = t - k as f64;
                let arg = std::f64::consts::PI * cutoff * d;
                let sinc = if arg.abs() < 1e-12 {
                    1.0
                } else {
                    arg.sin() / arg
                };
                let w = 0.42
                    + 0.5 * (std::f64::consts::PI * d / HALF as f64).cos()
                    + 0.08 * (2.0 * std::f64::consts::PI * d / HALF as f64).cos();
                let h = cutoff * sinc * w;
                acc[0] += h * s[0];
                acc[1] += h * s[1];
            }
            acc
        })
        .collect()
}

/// Normalised cross-correlation of `r[lag..lag + s.len()]` with `s`.
fn ncc(r: &[f64], s: &[f64], lag: usize) -> f64 {
    let w = &r[lag..lag + s.len()];
    let (mut rs, mut rr, mut ss) = (0.0, 0.0, 0.0);
    for (a, b) in w.iter().zip(s) {
        rs += a * b;
        rr += a * a;
        ss += b * b;
    }
    if rr == 0.0 || ss == 0.0 {
        0.0
    } else {
        rs / (rr * ss).sqrt()
    }
}

/// Where `reference` starts in `rec`: brute force on an 8x decimated signal (box average) over
/// every lag that keeps the reference inside the recording, then refined at full rate around
/// the coarse peak. Returns the lag, its normalised correlation and the fractional peak
/// position by a parabola through the neighbouring lags (in samples, -0.5..0.5).
fn align(rec: &[f64], reference: &[f64]) -> (usize, f64, f64) {
    const D: usize = 8;
    assert!(
        rec.len() > reference.len(),
        "the recording ({} frames) is shorter than the source ({} frames)",
        rec.len(),
        reference.len()
    );
    let dec = |x: &[f64]| -> Vec<f64> { x.chunks_exact(D).map(|c| c.iter().sum()).collect() };
    let (rd, sd) = (dec(rec), dec(reference));
    let coarse = (0..=rd.len() - sd.len())
        .map(|l| (l, ncc(&rd, &sd, l)))
        .fold((0, f64::MIN), |b, c| if c.1 > b.1 { c } else { b })
        .0;
    let max_lag = rec.len() - reference.len();
    let lo = (coarse * D).saturating_sub(2 * D);
    let hi = (coarse * D + 2 * D).min(max_lag);
    let (lag, peak) = (lo..=hi)
        .map(|l| (l, ncc(rec, reference, l)))
        .fold((0, f64::MIN), |b, c| if c.1 > b.1 { c } else { b });
    let frac = if lag > 0 && lag < max_lag {
        let (a, c) = (ncc(rec, reference, lag - 1), ncc(rec, reference, lag + 1));
        let denom = a - 2.0 * peak + c;
        if denom < 0.0 {
            (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    } else {
        0.0
    };
    (lag, peak, frac)
}

#[derive(Debug)]
struct Comparison {
    /// Best-fit gain per channel (recording = gain * source + noise).
    gain: [f64; 2],
    /// Per channel, dB.
    snr_db: [f64; 2],
    /// Largest |recording - gain * source|, in 16-bit LSB.
    max_err_lsb: f64,
    /// Longest run of near-silence in the recording where the source is clearly audible, in
    /// frames.
    longest_dropout: usize,
}

/// Compares `rec[lag..lag + reference.len()]` with `reference`, channel by channel.
fn compare(rec: &[[f64; 2]], reference: &[[f64; 2]], lag: usize) -> Comparison {
    let w = &rec[lag..lag + reference.len()];
    let mut gain = [0.0; 2];
    let mut snr_db = [0.0; 2];
    let mut max_err_lsb: f64 = 0.0;
    for ch in 0..2 {
        let (mut rs, mut ss) = (0.0, 0.0);
        for (r, s) in w.iter().zip(reference) {
            rs += r[ch] * s[ch];
            ss += s[ch] * s[ch];
        }
        let g = rs / ss;
        let mut noise = 0.0;
        for (r, s) in w.iter().zip(reference) {
            let e = r[ch] - g * s[ch];
            noise += e * e;
            max_err_lsb = max_err_lsb.max(e.abs() * 32768.0);
        }
        gain[ch] = g;
        snr_db[ch] = 10.0 * (g * g * ss / noise.max(1e-30)).log10();
    }
    // A frame is "dropped" when the recording is below -40 dBFS on both channels while the
    // source peaks above -20 dBFS within 0.5 ms of it (so zero crossings and fades, where the
    // source itself is quiet, do not count).
    const NEAR: usize = 24;
    let peak = |x: &[[f64; 2]]| {
        x.iter()
            .map(|f| f[0].abs().max(f[1].abs()))
            .fold(0.0, f64::max)
    };
    let mut longest = 0;
    let mut run = 0;
    for i in 0..w.len() {
        let around = &reference[i.saturating_sub(NEAR)..(i + NEAR + 1).min(reference.len())];
        if peak(&w[i..=i]) < 0.01 && peak(around) > 0.1 {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    Comparison {
        gain,
        snr_db,
        max_err_lsb,
        longest_dropout: longest,
    }
}

/// What one run measured.
struct Measured {
    summary: String,
    lag: usize,
    peak: f64,
    cmp: Comparison,
}

/// Plays `clip` through the fake speaker and compares the recording with the clip (brought to
/// the speaker's rate when it has another).
fn play_and_compare(name: &str, clip: &str, extra: &[&str]) -> Measured {
    let _one_at_a_time = real_time();
    require_pulseaudio();
    let t0 = Instant::now();
    let dir = test_dir(name);
    let rec_path = dir.path().join("rec.wav");
    let mut speaker = Speaker::start(dir.path().join("speaker"));
    let t_speaker = t0.elapsed();
    let clip_path = root().join(clip);
    let (sender, addr) = start_sender(&clip_path);
    let t_sender = t0.elapsed();
    speaker.record(&rec_path);
    let t_rec = t0.elapsed();

    let run = play(&addr, &speaker, extra);
    drop(sender);
    let summary = run.stdout.trim().to_string();
    assert!(
        run.status.success(),
        "audiowire play failed ({}); stdout: {summary}\nstderr:\n{}",
        run.status,
        run.stderr
    );
    eprintln!("[{name}] {summary}");

    // Let the tail through the monitor: 300 ms more of recording after the player is done.
    let at_exit = file_len(&rec_path);
    poll_until(Duration::from_secs(5), "the recording to go on", || {
        file_len(&rec_path) > at_exit + REC_BYTES_PER_SEC * 3 / 10
    });
    let stop = speaker.stop();
    assert!(
        stop.status.success(),
        "fake-speaker.sh stop failed: {}",
        String::from_utf8_lossy(&stop.stderr).trim()
    );
    let t_played = t0.elapsed();

    assert!(
        summary.starts_with("played ") && summary.contains(" · 0 underruns"),
        "expected a clean play with 0 underruns: {summary}\nstderr:\n{}",
        run.stderr
    );
    assert!(
        summary.contains(" to \"") && !summary.contains("no device"),
        "expected a real device (the pulse-backed ALSA default): {summary}"
    );

    let (src_rate, src) = read_stereo(&clip_path);
    let (rec_rate, rec) = read_stereo(&rec_path);
    assert_eq!(rec_rate, REC_RATE);
    let rec_mono = mono(&rec);
    // Both clips are stereo with distinct content per channel in the chords (right = left an
    // octave up), so the per-channel SNR also catches a channel swap.
    let (lag, frac, peak, cmp) = if src_rate == REC_RATE {
        let (lag, peak, frac) = align(&rec_mono, &mono(&src));
        (lag, frac, peak, compare(&rec, &src, lag))
    } else {
        // Resample the source to 48 kHz (windowed sinc, below), align, then resample again with
        // the sub-sample offset the correlation peak shows, so the comparison is
        // sample-accurate in spite of PulseAudio's own resampler (it differs from ours by
        // about -77 dB; a half-sample misalignment alone would limit it to ~23 dB at 1 kHz).
        let first = resample(&src, src_rate, REC_RATE, 0.0);
        let (lag, _, frac) = align(&rec_mono, &mono(&first));
        // rec[lag + frac + n] ~ src48(n), so rec[lag + n] ~ src48(n - frac).
        let shifted = resample(&src, src_rate, REC_RATE, -frac);
        let peak = ncc(&rec_mono, &mono(&shifted), lag);
        (lag, frac, peak, compare(&rec, &shifted, lag))
    };
    let t_done = t0.elapsed();
    eprintln!(
        "[{name}] {} recording {:.2} s, source at frame {lag} {frac:+.3}, correlation peak \
         {peak:.6}, SNR {:.1} / {:.1} dB (L/R), gain {:.4} / {:.4}, max error {:.2} LSB, \
         longest dropout {} frames",
        if cmp.max_err_lsb == 0.0 {
            "bit-exact;"
        } else {
            "not bit-exact;"
        },
        rec.len() as f64 / f64::from(REC_RATE),
        cmp.snr_db[0],
        cmp.snr_db[1],
        cmp.gain[0],
        cmp.gain[1],
        cmp.max_err_lsb,
        cmp.longest_dropout
    );
    eprintln!(
        "[{name}] timings: speaker up {:.0} ms, sender up {:.0} ms, recorder up {:.0} ms, \
         play {:.0} ms, stopped {:.0} ms, analysed {:.0} ms",
        t_speaker.as_secs_f64() * 1e3,
        t_sender.as_secs_f64() * 1e3,
        t_rec.as_secs_f64() * 1e3,
        run.elapsed.as_secs_f64() * 1e3,
        t_played.as_secs_f64() * 1e3,
        t_done.as_secs_f64() * 1e3,
    );
    Measured {
        summary,
        lag,
        peak,
        cmp,
    }
}

/// Checks shared by both clips.
fn assert_clean(m: &Measured, min_snr_db: f64) {
    assert!(m.lag > 0, "the recording must start before the audio");
    assert!(m.peak > 0.9, "no clear correlation peak: {}", m.peak);
    for ch in 0..2 {
        assert!(
            m.cmp.snr_db[ch] > min_snr_db,
            "channel {ch}: SNR {:.1} dB, expected > {min_snr_db} dB",
            m.cmp.snr_db[ch]
        );
        // PulseAudio plays new streams at 100 % volume: the level must come through unchanged.
        let gain_db = 20.0 * m.cmp.gain[ch].abs().log10();
        assert!(
            gain_db.abs() < 0.5,
            "channel {ch}: gain {gain_db:.2} dB, expected 0"
        );
    }
    // Measured: 4-5 frames (zero crossings next to louder samples); 96 frames = 2 ms.
    assert!(
        m.cmp.longest_dropout <= 96,
        "a dropout of {} frames (> 2 ms) where the source is audible",
        m.cmp.longest_dropout
    );
}

#[test]
fn sweep_plays_through_the_fake_speaker_unchanged() {
    let m = play_and_compare("sweep", "test-audio/sweep-48k-s16-stereo.wav", &[]);
    assert!(
        m.summary.contains("(48000 Hz 2 ch") && !m.summary.contains("converted"),
        "the device should be opened at the stream's own 48 kHz, 2 ch: {}",
        m.summary
    );
    // Measured: bit-exact (SNR unbounded, printed as ~338 dB); s16 requantization alone would
    // still give ~90 dB, so 60 dB leaves room for a harmless change in PulseAudio's format.
    // Without norewinds=1 on the null sink the recording gets repeated/missing chunks: 45-48 dB
    // (and 30-35 dB for the chords) in 3 tries, caught here though the correlation peak stays
    // above 0.9998.
    assert_clean(&m, 60.0);
}

#[test]
fn chords_at_44k_24bit_are_resampled_by_the_player_for_a_48k_device() {
    // --device-rate 48000 makes the player open the device at 48 kHz and convert with rubato
    // itself (as it must for a device that refuses 44.1 kHz); PulseAudio then passes 48 kHz
    // through to the 48 kHz sink untouched. The recording is compared with the source
    // resampled to 48 kHz by this test's own windowed sinc.
    let m = play_and_compare(
        "chords",
        "test-audio/chords-44k-s24-stereo.wav",
        &["--device-rate", "48000"],
    );
    assert!(
        m.summary.contains("(48000 Hz 2 ch f32, converted)"),
        "the player should open the device at 48 kHz and convert: {}",
        m.summary
    );
    // Measured: 87.6 / 87.3 dB (L/R), max error 0.71 LSB; PulseAudio resampling the same clip
    // itself gave 79.3 / 76.9 dB.
    assert_clean(&m, 55.0);
}

/// The analysis itself, without PulseAudio: a known delay of 1000.3 frames (at 48 kHz) and a
/// gain of 0.8 must be found, and the comparison must then be near perfect.
#[test]
fn analysis_finds_a_known_fractional_delay() {
    let _one_at_a_time = real_time();
    let (rate, src) = read_stereo(&root().join("test-audio/chords-44k-s24-stereo.wav"));
    let delayed = resample(&src, rate, REC_RATE, -0.3);
    let mut rec = vec![[0.0; 2]; 1000];
    rec.extend(delayed.iter().map(|f| [0.8 * f[0], 0.8 * f[1]]));
    rec.extend(vec![[0.0; 2]; 1000]);
    let reference = resample(&src, rate, REC_RATE, 0.0);
    let (lag, peak, frac) = align(&mono(&rec), &mono(&reference));
    assert!(
        (lag as f64 + frac - 1000.3).abs() < 0.02,
        "found {lag} {frac:+.3}"
    );
    assert!(peak > 0.999, "peak {peak}");
    let cmp = compare(&rec, &resample(&src, rate, REC_RATE, -frac), lag);
    assert!(cmp.snr_db.iter().all(|&s| s > 60.0), "{cmp:?}");
    assert!(cmp.gain.iter().all(|&g| (g - 0.8).abs() < 1e-3), "{cmp:?}");
    // Zero crossings: a few quiet frames next to louder ones, far from a 2 ms dropout.
    assert!(cmp.longest_dropout < 10, "{cmp:?}");
}

/// A stereo WAV of any sample format (the live recording is f32) as floats, with its rate.
fn read_stereo_any(path: &Path) -> (u32, Vec<[f64; 2]>) {
    let mut r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(spec.channels, 2, "{}: expected stereo", path.display());
    let samples: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .map(|s| f64::from(s.expect("a sample")))
            .collect(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / f64::from(1u32 << (spec.bits_per_sample - 1));
            r.samples::<i32>()
                .map(|s| f64::from(s.expect("a sample")) * scale)
                .collect()
        }
    };
    let frames = samples.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
    (spec.sample_rate, frames)
}

/// What a live run measured: the player's summary, and the recording against the sweep.
struct Live {
    summary: String,
    peak: f64,
    cmp: Comparison,
}

/// Live input end to end: `audiowire send --input EXTRA...` captures the fake speaker's monitor
/// (the default ALSA capture device, through the pulse plugin, is the null sink's monitor), a
/// player (`play ADDR PLAY_EXTRA... --out`) records the stream, and `paplay` plays the sweep into
/// the speaker. The recording is searched for the sweep by cross-correlation and compared
/// sample by sample.
fn live_run(name: &str, extra: &[&str], play_extra: &[&str]) -> Live {
    let _one_at_a_time = real_time();
    require_pulseaudio();
    let dir = test_dir(name);
    let speaker = Speaker::start(dir.path().join("speaker"));
    let clip_path = root().join("test-audio/sweep-48k-s16-stereo.wav");
    let rec_path = dir.path().join("live.wav");

    // The sender captures in the speaker's environment.
    let mut child = audiowire()
        .args(["send", "--input", "--listen", "127.0.0.1:0"])
        .args(extra)
        .envs(speaker.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start audiowire send --input");
    let stderr = child.stderr.take().expect("sender stderr");
    let sender = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("the live sender did not log its address ({e}):\n{log}"));
        log.push_str(&line);
        log.push('\n');
        if let Some(a) = line
            .split(" on ")
            .nth(1)
            .filter(|_| line.contains("serving live"))
            .and_then(|r| r.split_whitespace().next())
        {
            break a.to_string();
        }
    };

    // The player records the live stream (no device needed for --out).
    let player = audiowire()
        .arg("play")
        .arg(&addr)
        .args(play_extra)
        .arg("--out")
        .arg(&rec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start audiowire play");
    let mut player = KillOnDrop(player);
    // Audio is flowing (silence, so far) once the recorder wrote its first half second.
    poll_until(
        Duration::from_secs(10),
        "the live recording to start",
        || file_len(&rec_path) > 4096 + REC_BYTES_PER_SEC / 4,
    );

    // Play the sweep into the speaker, then let 0.5 s more through.
    let status = Command::new("paplay")
        .arg(&clip_path)
        .envs(speaker.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .status()
        .expect("run paplay");
    assert!(status.success(), "paplay failed: {status}");
    let at = file_len(&rec_path);
    // f32 stereo: 8 bytes a frame; the header is rewritten every 0.5 s.
    poll_until(Duration::from_secs(10), "the recording to go on", || {
        file_len(&rec_path) >= at + 48_000 * 8 / 2
    });
    // Ctrl-C on the sender ends the stream cleanly: the player finalizes its recording.
    let ok = Command::new("kill")
        .args(["-INT", &sender.0.id().to_string()])
        .status()
        .expect("kill -INT")
        .success();
    assert!(ok);
    poll_until(Duration::from_secs(10), "the player to finish", || {
        player.0.try_wait().ok().flatten().is_some()
    });
    let mut summary = String::new();
    if let Some(out) = player.0.stdout.as_mut() {
        let _ = out.read_to_string(&mut summary);
    }
    let status = player.0.wait().expect("the player's status");
    assert!(status.success(), "the player failed: {summary}");
    drop(sender);
    eprintln!("[{name}] {}", summary.trim());

    let (_, src) = read_stereo(&clip_path);
    let (rate, rec) = read_stereo_any(&rec_path);
    assert_eq!(rate, 48_000);
    let (lag, peak, frac) = align(&mono(&rec), &mono(&src));
    let cmp = compare(&rec, &src, lag);
    eprintln!(
        "[{name}] recording {:.2} s, the sweep at {:.3} s ({frac:+.2} frames), correlation peak \
         {peak:.6}, SNR {:.1} / {:.1} dB, gain {:.4} / {:.4}, longest dropout {} frames",
        rec.len() as f64 / 48_000.0,
        lag as f64 / 48_000.0,
        cmp.snr_db[0],
        cmp.snr_db[1],
        cmp.gain[0],
        cmp.gain[1],
        cmp.longest_dropout
    );
    Live { summary, peak, cmp }
}

/// Checks shared by the live runs: the sweep is in the recording (one clear correlation peak),
/// at its level, above `min_snr_db`, without a gap.
fn assert_live(m: &Live, min_snr_db: f64) {
    assert!(m.peak > 0.99, "no clear correlation peak: {}", m.peak);
    for ch in 0..2 {
        let gain_db = 20.0 * m.cmp.gain[ch].abs().log10();
        assert!(gain_db.abs() < 0.5, "channel {ch}: gain {gain_db:.2} dB");
        assert!(
            m.cmp.snr_db[ch] > min_snr_db,
            "channel {ch}: SNR {:.1} dB, expected > {min_snr_db} dB",
            m.cmp.snr_db[ch]
        );
    }
    assert!(
        m.cmp.longest_dropout <= 96,
        "a dropout of {} frames where the sweep is audible",
        m.cmp.longest_dropout
    );
}

#[test]
fn live_input_from_the_speakers_monitor_reaches_the_player() {
    let m = live_run("live", &["--rate", "48000"], &[]);
    assert!(
        m.summary.contains("48000 Hz 2 ch f32)"),
        "the capture runs at 48 kHz, stereo, in the device's f32: {}",
        m.summary
    );
    // Measured: bit-exact (SNR unbounded, printed as ~338 dB, gain 1): the 48 kHz s16 sink,
    // its monitor and the f32 capture at 48 kHz change nothing. 60 dB as for the sweep above.
    assert_live(&m, 60.0);
}

#[test]
fn live_input_as_opus_over_udp_reaches_the_player() {
    let m = live_run(
        "live-opus",
        &["--codec", "opus", "--bitrate", "128k", "--transport", "udp"],
        &["--transport", "udp"],
    );
    assert!(
        m.summary.contains("48000 Hz 2 ch f32 from opus)"),
        "{}",
        m.summary
    );
    // Measured: 24.6 / 24.6 dB, as the same sweep from the file at 128 kbit/s (tests/opus.rs).
    assert_live(&m, 20.0);
}
