//! `tail`: follow a growing file as `tail -F` does and send its lines to a line receiver, with
//! acknowledgements, reconnecting and resuming after a dropped connection.
//!
//! [`Follower`] reads the file: new bytes as they are appended; when the file is truncated it
//! starts again from the top; when the path names a new file (log rotation: the old one renamed,
//! a new one created), it finishes the old file and then follows the new one from its start; when
//! the file is missing it waits for it. Which of these happened is decided by
//! [`follow_action`], from the file's identity (device and inode) and size. Memory is bounded: a
//! 64 KiB read buffer, one unfinished line of at most [`MAX_LINE`] bytes, and the sender's window
//! of unacknowledged lines (reading pauses while it is full).

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use audiowire_protocol::DEFAULT_MAX_FRAME_LEN;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::linestream::{LineSender, LineSplitter, MAX_LINE, SenderConfig};
use crate::net::{self, Framed, Recv};

/// A file's identity: a rotated log keeps its name but not its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// Without inodes, rotation is not told apart from truncation.
    #[cfg(not(unix))]
    fn of(_: &std::fs::Metadata) -> Self {
        Self { dev: 0, ino: 0 }
    }
}

/// What to do once the open file has nothing more to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowAction {
    /// Nothing new: wait.
    Wait,
    /// The path exists and nothing is open: open it.
    Open,
    /// The path names another file now: finish the old one, follow the new one from its start.
    Rotated,
    /// The open file is shorter than what was read: it was truncated, read it from the start.
    Truncated,
    /// The file is longer than what was read: read on.
    Read,
}

/// Decides from the open file (its identity and how far it was read) and what the path names
/// now (identity and size; `None` if missing). Sans-IO.
pub fn follow_action(open: Option<(FileId, u64)>, on_disk: Option<(FileId, u64)>) -> FollowAction {
    match (open, on_disk) {
        (None, None) | (Some(_), None) => FollowAction::Wait,
        (None, Some(_)) => FollowAction::Open,
        (Some((id, _)), Some((now, _))) if id != now => FollowAction::Rotated,
        (Some((_, offset)), Some((_, len))) if len < offset => FollowAction::Truncated,
        (Some((_, offset)), Some((_, len))) if len > offset => FollowAction::Read,
        (Some(_), Some(_)) => FollowAction::Wait,
    }
}

/// Follows one path; see the module doc.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<(File, FileId)>,
    offset: u64,
    splitter: LineSplitter,
    from_end: bool,
    said_missing: bool,
    buf: Vec<u8>,
}

impl Follower {
    /// Follows `path`; with `from_end`, lines already in the file when it is first opened are
    /// skipped (files that appear later, after a rotation, are read from their start).
    pub fn new(path: impl Into<PathBuf>, from_end: bool) -> Self {
        Self {
            path: path.into(),
            file: None,
            offset: 0,
            splitter: LineSplitter::new(MAX_LINE),
            from_end,
            said_missing: false,
            buf: vec![0; 64 * 1024],
        }
    }

    fn file_err(&self, error: std::io::Error) -> Error {
        Error::File {
            path: self.path.clone(),
            error,
        }
    }

    fn read_some(&mut self, max: usize, emit: &mut impl FnMut(Vec<u8>, bool)) -> Result<usize> {
        let Some((file, _)) = &mut self.file else {
            return Ok(0);
        };
        let n = loop {
            match file.read(&mut self.buf[..max.min(64 * 1024)]) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.file_err(e)),
            }
        };
        self.offset += n as u64;
        self.splitter.push(&self.buf[..n], emit);
        Ok(n)
    }

    fn open(&mut self, skip_existing: bool) -> Result<bool> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            // Gone again between the check and the open: try on the next poll.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.file_err(e)),
        };
        let meta = file.metadata().map_err(|e| self.file_err(e))?;
        self.offset = if skip_existing {
            file.seek(SeekFrom::End(0)).map_err(|e| self.file_err(e))?
        } else {
            0
        };
        self.file = Some((file, FileId::of(&meta)));
        self.said_missing = false;
        Ok(true)
    }

    /// Reads what is new, at most `max` bytes, giving each line to `emit(line, partial)`. Returns
    /// the bytes read (0: nothing new for now).
    pub fn poll(&mut self, max: usize, emit: &mut impl FnMut(Vec<u8>, bool)) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let n = self.read_some(max, emit)?;
        if n > 0 {
            return Ok(n);
        }
        let on_disk = match std::fs::metadata(&self.path) {
            Ok(m) => Some((FileId::of(&m), m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(self.file_err(e)),
        };
        let open = self.file.as_ref().map(|(_, id)| (*id, self.offset));
        match follow_action(open, on_disk) {
            FollowAction::Wait | FollowAction::Read => {
                if self.file.is_none() && !self.said_missing {
                    info!("waiting for {} to appear", self.path.display());
                    self.said_missing = true;
                }
                Ok(0)
            }
            FollowAction::Open => {
                let skip = std::mem::take(&mut self.from_end);
                if self.open(skip)? {
                    info!(
                        "following {}{}",
                        self.path.display(),
                        if skip { " from its end" } else { "" }
                    );
                }
                self.read_some(max, emit)
            }
            FollowAction::Truncated => {
                info!(
                    "{} was truncated: reading it from the start",
                    self.path.display()
                );
                self.splitter.flush(emit);
                if let Some((file, _)) = &mut self.file {
                    file.seek(SeekFrom::Start(0)).map_err(|e| Error::File {
                        path: self.path.clone(),
                        error: e,
                    })?;
                }
                self.offset = 0;
                self.read_some(max, emit)
            }
            FollowAction::Rotated => {
                // Bytes appended to the old file just before the rename come first.
                let n = self.read_some(max, emit)?;
                if n > 0 {
                    return Ok(n);
                }
                info!(
                    "{} was replaced (rotated): following the new file from its start",
                    self.path.display()
                );
                self.splitter.flush(emit);
                self.file = None;
                self.from_end = false;
                self.open(false)?;
                self.read_some(max, emit)
            }
        }
    }
}

/// How `tail` runs.
#[derive(Debug, Clone)]
pub struct TailConfig {
    /// Skip what the file holds when first opened.
    pub from_end: bool,
    /// How often to look at the file when nothing new was read.
    pub poll: Duration,
    /// The window of unacknowledged lines, and how long acknowledgements may take.
    pub window: SenderConfig,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The longest pause between connection attempts.
    pub max_retry: Duration,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            from_end: false,
            poll: Duration::from_millis(100),
            window: SenderConfig::default(),
            connect_timeout: Duration::from_secs(2),
            max_retry: Duration::from_secs(2),
        }
    }
}

/// A random session number (std's hasher keys are random per process).
fn random_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

const WHAT: &str = "`audiowire lines listen`";

/// Follows `path` and sends its lines to `addr` until `shutdown` is set. Connection failures are
/// not errors: `tail` keeps retrying (and reading, while its window has room).
pub fn run(path: &Path, addr: &str, config: &TailConfig, shutdown: &AtomicBool) -> Result<()> {
    net::split_host_port(addr)?;
    let mut follower = Follower::new(path, config.from_end);
    let mut sender = LineSender::new(random_session(), config.window);
    let mut conn: Option<Framed> = None;
    let mut next_connect = Instant::now();
    let mut retry = Duration::from_millis(50);
    let mut said_unreachable = false;
    info!("tail session {:016x}", sender.session());
    while !shutdown.load(Ordering::Relaxed) {
        let read = follower.poll(sender.room(), &mut |line, partial| {
            sender.push(line, partial);
        })?;
        let now = Instant::now();
        if conn.is_none() && now >= next_connect {
            match net::connect(addr, config.connect_timeout, WHAT) {
                Ok(stream) => {
                    let _ = stream.set_write_timeout(Some(config.window.ack_timeout));
                    let mut c = Framed::new(stream, addr, DEFAULT_MAX_FRAME_LEN);
                    let hello = sender.connected(now);
                    match c.send(&hello) {
                        Ok(()) => {
                            info!(
                                "connected to {addr}; {} lines waiting for acknowledgement",
                                sender.unacked()
                            );
                            conn = Some(c);
                            retry = Duration::from_millis(50);
                            said_unreachable = false;
                        }
                        Err(e) => {
                            sender.disconnected();
                            warn!("{e}");
                        }
                    }
                }
                Err(e) => {
                    if !said_unreachable {
                        warn!("{e}; retrying");
                        said_unreachable = true;
                    }
                    next_connect = now + retry;
                    retry = (retry * 2).min(config.max_retry);
                }
            }
        }
        let Some(c) = &mut conn else {
            let wait = next_connect
                .saturating_duration_since(Instant::now())
                .min(config.poll);
            if read == 0 {
                thread::sleep(wait.max(Duration::from_millis(1)));
            }
            continue;
        };
        match exchange(c, &mut sender, read > 0, config.poll) {
            Ok(()) => {}
            Err(reason) => {
                warn!(
                    "connection to {addr} lost: {reason}; resending from line {} when it is back",
                    sender.acked()
                );
                sender.disconnected();
                conn = None;
                next_connect = Instant::now() + retry;
            }
        }
    }
    if sender.unacked() > 0 {
        warn!(
            "stopping with {} lines not acknowledged (from line {})",
            sender.unacked(),
            sender.acked()
        );
    }
    Ok(())
}

/// One round on a live connection: send what is due, then wait for acknowledgements (briefly if
/// the file had news, up to `poll` otherwise). An error drops the connection.
fn exchange(
    c: &mut Framed,
    sender: &mut LineSender,
    busy: bool,
    poll: Duration,
) -> std::result::Result<(), String> {
    let now = Instant::now();
    let mut batch = Vec::new();
    while batch.len() < 256 {
        match sender.poll_transmit(now) {
            Some(m) => batch.push(m),
            None => break,
        }
    }
    if !batch.is_empty() {
        c.send_all(&batch).map_err(|e| e.to_string())?;
    }
    let wait = if busy || !batch.is_empty() {
        Duration::from_millis(1)
    } else {
        poll
    };
    let mut deadline = Instant::now() + wait;
    if let Some(t) = sender.poll_timeout() {
        deadline = deadline.min(t.max(Instant::now()));
    }
    loop {
        match c.recv(deadline).map_err(|e| e.to_string())? {
            Recv::Message(msg, _) => {
                sender.handle(&msg, Instant::now())?;
                // Take whatever else already arrived, without waiting.
                deadline = Instant::now();
            }
            Recv::Closed => return Err("the receiver closed the connection".into()),
            Recv::Timeout => break,
        }
    }
    if sender.timed_out(Instant::now()) {
        return Err("no acknowledgement in time".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileId = FileId { dev: 1, ino: 10 };
    const B: FileId = FileId { dev: 1, ino: 11 };

    #[test]
    fn follow_decisions() {
        use FollowAction::*;
        assert_eq!(follow_action(None, None), Wait);
        assert_eq!(follow_action(None, Some((A, 5))), Open);
        assert_eq!(follow_action(Some((A, 5)), Some((A, 5))), Wait);
        assert_eq!(follow_action(Some((A, 5)), Some((A, 9))), Read);
        assert_eq!(follow_action(Some((A, 5)), Some((A, 2))), Truncated);
        assert_eq!(follow_action(Some((A, 5)), Some((B, 0))), Rotated);
        assert_eq!(follow_action(Some((A, 5)), Some((B, 99))), Rotated);
        assert_eq!(follow_action(Some((A, 5)), None), Wait);
    }

    fn drain(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..10 {
            f.poll(1 << 20, &mut |l, _| {
                out.push(String::from_utf8_lossy(&l).into_owned())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        }
        out
    }

    #[test]
    fn the_follower_survives_truncation_and_rotation() {
        let dir = tempfile::Builder::new()
            .prefix("audiowire-follow-")
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("app.log");
        let write = |s: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap_or_else(|e| panic!("{e}"));
            f.write_all(s.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        };
        let mut f = Follower::new(&log, true);
        assert!(drain(&mut f).is_empty(), "missing file");
        write("old\n");
        // First open with --from-end: the existing line is skipped.
        assert!(drain(&mut f).is_empty());
        write("a\nb");
        assert_eq!(drain(&mut f), ["a"]);
        write("c\n");
        assert_eq!(drain(&mut f), ["bc"]);
        // Truncation.
        std::fs::write(&log, "").unwrap_or_else(|e| panic!("{e}"));
        assert!(drain(&mut f).is_empty());
        write("d\n");
        assert_eq!(drain(&mut f), ["d"]);
        // Rotation: rename, then a new file; a line appended to the old file first is kept.
        std::fs::rename(&log, dir.path().join("app.log.1")).unwrap_or_else(|e| panic!("{e}"));
        {
            use std::io::Write;
            let mut old = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join("app.log.1"))
                .unwrap_or_else(|e| panic!("{e}"));
            old.write_all(b"e\nunfinished")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        write("f\n");
        assert_eq!(drain(&mut f), ["e", "unfinished", "f"]);
    }
}
