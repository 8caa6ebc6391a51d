//! The RFCOMM stream code without Bluetooth hardware: the sender and player run their real
//! stream code (the sender's RFCOMM-sized frames, the player's byte-stream link and its
//! reconnection) over a Unix socketpair throttled like an RFCOMM link: about 700 kbit/s, in
//! writes of at most 127 bytes (RFCOMM's default MTU). Opus fits (the jitter buffer never runs
//! dry), and a link that dies mid-stream is re-established and resumed. The same code over the real Linux
//! Bluetooth stack runs in a VM: scripts/btvm.sh (docs/bluetooth.md).
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use audiowire_receiver::{Connector, Output, PlayerConfig};
use audiowire_sender::{CodecConfig, OpusSettings, Server, ServerConfig};
use audiowire_transport::Conn;

mod common;

/// RFCOMM-like bandwidth, bits per second.
const RATE_BPS: f64 = 700_000.0;
/// RFCOMM's default MTU: no write carries more.
const MTU: usize = 127;

/// The link's clock: when its next byte may go out. Shared by clones (one link).
#[derive(Debug, Default)]
struct Wire {
    next_free: Mutex<Option<Instant>>,
    written: AtomicUsize,
}

/// The sender's end of the socketpair, throttled like RFCOMM: small writes, paced to
/// [`RATE_BPS`] (the sleep simulates the radio's bit rate, it synchronises nothing). After
/// `die_after` bytes the link dies, as a Bluetooth link that goes out of range.
#[derive(Debug)]
struct Throttled {
    inner: UnixStream,
    wire: Arc<Wire>,
    die_after: Option<usize>,
}

impl Read for Throttled {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for Throttled {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let sent = self.wire.written.load(Ordering::Relaxed);
        if self.die_after.is_some_and(|d| sent >= d) {
            let _ = self.inner.shutdown(std::net::Shutdown::Both);
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "link lost"));
        }
        let n = buf.len().min(MTU);
        let due = {
            let mut next = self.wire.next_free.lock().expect("lock");
            let now = Instant::now();
            let start = next.map_or(now, |t| t.max(now));
            *next = Some(start + Duration::from_secs_f64(n as f64 * 8.0 / RATE_BPS));
            start
        };
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let n = self.inner.write(&buf[..n])?;
        self.wire.written.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn for Throttled {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.set_write_timeout(t)
    }
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(Throttled {
            inner: self.inner.try_clone()?,
            wire: Arc::clone(&self.wire),
            die_after: self.die_after,
        }))
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.inner.shutdown(std::net::Shutdown::Write)
    }
}

/// Streams `clip` as Opus through the throttled socketpair and records what plays; the first
/// link dies after `die_after` bytes. Returns the summary, the connections made and the bytes
/// the sender wrote.
fn stream(
    clip: &Path,
    out: &Path,
    die_after: Option<usize>,
) -> (audiowire_receiver::Summary, usize) {
    let mut config = ServerConfig::new(clip);
    config.codec = CodecConfig::Opus(OpusSettings {
        bitrate: None,
        complexity: 5,
        dtx: false,
        fec: false,
    });
    config.frame_ms = 20.0;
    let server = Arc::new(Server::rfcomm_sized(config).expect("the clip is readable"));
    let shutdown = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    let connector = {
        let (server, shutdown, connections) = (
            Arc::clone(&server),
            Arc::clone(&shutdown),
            Arc::clone(&connections),
        );
        Connector(Arc::new(move || {
            let (a, b) = UnixStream::pair()?;
            let first = connections.fetch_add(1, Ordering::Relaxed) == 0;
            let link = Throttled {
                inner: a,
                wire: Arc::default(),
                die_after: die_after.filter(|_| first),
            };
            let (server, shutdown) = (Arc::clone(&server), Arc::clone(&shutdown));
            thread::spawn(move || server.serve(Box::new(link), &shutdown));
            Ok(Box::new(b) as Box<dyn Conn>)
        }))
    };
    let mut player = PlayerConfig::new("socketpair");
    player.connector = Some(connector);
    player.output = Output::Null;
    player.record = Some(out.to_path_buf());
    player.reconnect_for = Duration::from_secs(10);
    let summary =
        audiowire_receiver::play(&player, &AtomicBool::new(false)).expect("the stream plays");
    shutdown.store(true, Ordering::Relaxed);
    (summary, connections.load(Ordering::Relaxed))
}

fn wav_frames(path: &Path) -> u32 {
    hound::WavReader::open(path).expect("a WAV").duration()
}

#[test]
fn opus_fits_rfcomm_bandwidth_and_never_runs_dry() {
    let tmp = common::tmpdir("rfcomm-pair");
    let dir = tmp.path();
    let out = dir.join("out.wav");
    // Stereo Opus, 128 kbit/s: a fifth of the link.
    let (summary, connections) = stream(&common::clip("sweep-48k-s16-stereo.wav"), &out, None);
    assert_eq!(connections, 1);
    // The link kept up: the jitter buffer never ran empty. The null clock's ring can still run
    // a period short when the test machine (the suite runs in parallel on two cores) wakes the
    // player late; that is the machine, not the link, and the benches measure it.
    assert_eq!(summary.playout.jitter.underruns, 0, "{summary}");
    // One second of audio, as 48 kHz Opus frames (the last one padded).
    let frames = wav_frames(&out);
    assert!(
        (48_000..48_000 + 2 * 960).contains(&frames),
        "{frames} frames: {summary}"
    );
}

#[test]
fn a_dropped_rfcomm_link_is_resumed() {
    let tmp = common::tmpdir("rfcomm-drop");
    let dir = tmp.path();
    let out = dir.join("out.wav");
    // 3.5 s of speech (mono Opus, 64 kbit/s); the link dies after about 1 s of it.
    let (summary, connections) =
        stream(&common::clip("speech-22k-s16-mono.wav"), &out, Some(10_000));
    assert!(connections >= 2, "the player did not reconnect");
    let frames = wav_frames(&out);
    // The whole clip, resumed where it was: no frame twice, none missing.
    let expected = (3.544 * 48_000.0) as u32;
    assert!(
        frames.abs_diff(expected) < 3 * 960,
        "{frames} frames, expected about {expected}: {summary}"
    );
}
