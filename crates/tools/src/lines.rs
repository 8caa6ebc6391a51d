//! `lines listen`: receive a line stream (from `tail`) and append it to a file, durably, with
//! acknowledgements that let the sender resume after a dropped connection or a restart.
//!
//! **Where the receiver keeps what it has written.** Beside the output file `OUT` lies
//! `OUT.lines-state`, a few lines of text: the stream's session, `next` (the first line not
//! written) and `length` (the size of `OUT` once line `next − 1` is written). For each batch of
//! lines the receiver appends them to `OUT`, syncs it to disk, then replaces the state file
//! atomically (write a temporary file, sync it, rename it over), and only then acknowledges
//! `next`. At start, `OUT` is cut back to `length`: bytes after it were written by a receiver that
//! died before recording them, and the sender will send those lines again because they were never
//! acknowledged. So whichever instant the receiver is killed at, a line is in `OUT` exactly once.
//! (An `OUT` shorter than `length` was changed by someone else; the receiver stops and says so.)
//!
//! One connection is served at a time; a new connection replaces the current one (a sender that
//! reconnects after a network failure may find its old connection still open here).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use audiowire_protocol::message::ErrorCode;
use audiowire_protocol::{Message, clock};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::linestream::{LineAction, LineReceiver, MAX_LINE};
use crate::net::{self, Framed, Recv, now_us};

/// The durable record kept beside the output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The stream whose lines `OUT` ends with.
    pub session: Option<u64>,
    /// The first line not written.
    pub next: u64,
    /// `OUT`'s length once line `next − 1` is written.
    pub length: u64,
}

const STATE_MAGIC: &str = "audiowire-lines-state 1";

impl State {
    /// The state file's text.
    pub fn to_text(&self) -> String {
        let session = self
            .session
            .map_or_else(|| "none".to_string(), |s| format!("{s:016x}"));
        format!(
            "{STATE_MAGIC}\nsession {session}\nnext {}\nlength {}\n",
            self.next, self.length
        )
    }

    /// Reads a state file's text; `None` if it is not one.
    pub fn parse(text: &str) -> Option<State> {
        let mut lines = text.lines();
        if lines.next()? != STATE_MAGIC {
            return None;
        }
        let mut field = |name: &str| {
            lines
                .next()?
                .strip_prefix(name)?
                .strip_prefix(' ')
                .map(str::to_string)
        };
        let session = match field("session")?.as_str() {
            "none" => None,
            s => Some(u64::from_str_radix(s, 16).ok()?),
        };
        let next = field("next")?.parse().ok()?;
        let length = field("length")?.parse().ok()?;
        Some(State {
            session,
            next,
            length,
        })
    }
}

/// The state file that goes with `out`.
pub fn state_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".lines-state");
    PathBuf::from(name)
}

/// A bound line receiver, ready to [`LinesListener::run`].
#[derive(Debug)]
pub struct LinesListener {
    listener: std::net::TcpListener,
    out_path: PathBuf,
    state_path: PathBuf,
    out: File,
    length: u64,
    receiver: LineReceiver,
    pending: Vec<u8>,
}

impl LinesListener {
    /// Opens `out` (creating it), reconciles it with its state file, and binds `addr`.
    pub fn bind(addr: &str, out: &Path) -> Result<Self> {
        let file_err = |error| Error::File {
            path: out.to_path_buf(),
            error,
        };
        let state_path = state_path(out);
        let state = match std::fs::read_to_string(&state_path) {
            Ok(text) => Some(State::parse(&text).ok_or_else(|| Error::State {
                path: state_path.clone(),
                reason: "is not an audiowire line-stream state file; move it away to start a new stream".into(),
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(Error::File {
                    path: state_path,
                    error,
                });
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(out)
            .map_err(file_err)?;
        let len = file.metadata().map_err(file_err)?.len();
        let state = match state {
            None => State {
                session: None,
                next: 0,
                length: len,
            },
            Some(s) if len < s.length => {
                return Err(Error::State {
                    path: out.to_path_buf(),
                    reason: format!(
                        "is {len} bytes, shorter than the {} bytes audiowire had written: another program changed it; move {} away to start a new stream",
                        s.length,
                        state_path.display()
                    ),
                });
            }
            Some(s) => {
                if len > s.length {
                    info!(
                        "{}: removing {} bytes written after the last acknowledged line (they will be sent again)",
                        out.display(),
                        len - s.length
                    );
                    file.set_len(s.length).map_err(file_err)?;
                    file.sync_data().map_err(file_err)?;
                }
                s
            }
        };
        file.seek(SeekFrom::Start(state.length)).map_err(file_err)?;
        let listener = net::bind_tcp(addr)?;
        Ok(Self {
            listener,
            out_path: out.to_path_buf(),
            state_path,
            out: file,
            length: state.length,
            receiver: LineReceiver::new(state.session, state.next),
            pending: Vec::new(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> String {
        net::local(&self.listener)
    }

    /// The first line not yet written.
    pub fn next(&self) -> u64 {
        self.receiver.state().1
    }

    /// Writes the pending lines and the state durably. Errors here are the receiver's own (disk
    /// full, …) and stop it.
    fn commit(&mut self) -> Result<Option<Message>> {
        if !self.receiver.dirty() {
            return Ok(None);
        }
        let out_err = |error| Error::File {
            path: self.out_path.clone(),
            error,
        };
        self.out.write_all(&self.pending).map_err(out_err)?;
        self.out.sync_data().map_err(out_err)?;
        self.length += self.pending.len() as u64;
        self.pending.clear();
        let (session, next) = self.receiver.state();
        let state = State {
            session,
            next,
            length: self.length,
        };
        let tmp = {
            let mut name = self.state_path.as_os_str().to_os_string();
            name.push(".tmp");
            PathBuf::from(name)
        };
        let state_err = |error| Error::File {
            path: self.state_path.clone(),
            error,
        };
        {
            let mut f = File::create(&tmp).map_err(state_err)?;
            f.write_all(state.to_text().as_bytes()).map_err(state_err)?;
            f.sync_data().map_err(state_err)?;
        }
        std::fs::rename(&tmp, &self.state_path).map_err(state_err)?;
        Ok(Some(self.receiver.committed()))
    }

    /// Serves senders until `shutdown` is set.
    pub fn run(&mut self, shutdown: &AtomicBool) -> Result<()> {
        let mut conn: Option<Framed> = None;
        while !shutdown.load(Ordering::Relaxed) {
            if let Some((stream, peer)) = net::try_accept(&self.listener) {
                if let Some(old) = &conn {
                    info!("{peer} connected; it replaces {}", old.peer());
                } else {
                    info!("{peer} connected");
                }
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                // A Line message: envelope, sequence, flags and up to MAX_LINE bytes.
                let max = (2 + 8 + 1 + MAX_LINE + 1024) as u64;
                conn = Some(Framed::new(stream, peer.to_string(), max));
                self.receiver.connection();
            }
            let Some(c) = &mut conn else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            let outcome = self.serve_batch(c);
            // Whatever happened, what was written is made durable and acknowledged.
            let ack = self.commit()?;
            let mut drop_reason = outcome.err();
            if let (Some(ack), None) = (ack, &drop_reason) {
                if let Err(e) = c.send(&ack) {
                    drop_reason = Some(e.to_string());
                }
            }
            if let Some(reason) = drop_reason {
                warn!(
                    "{} dropped: {reason} ({} lines written so far)",
                    c.peer(),
                    self.next()
                );
                conn = None;
            }
        }
        Ok(())
    }

    /// Reads one batch (waiting up to 50 ms for the first message) and handles it. An error
    /// means the connection must be dropped.
    fn serve_batch(&mut self, c: &mut Framed) -> std::result::Result<(), String> {
        let mut deadline = Instant::now() + Duration::from_millis(50);
        loop {
            let (msg, arrived) = match c.recv(deadline).map_err(|e| e.to_string())? {
                Recv::Message(m, t) => (m, t),
                Recv::Closed => return Err("the sender closed the connection".into()),
                Recv::Timeout => return Ok(()),
            };
            // Handle what has already arrived, then commit; do not wait for more.
            deadline = Instant::now();
            match msg {
                Message::LinesHello { session, first } => {
                    let ack = self.commit().map_err(|e| e.to_string())?;
                    drop(ack);
                    let (resume, note) = self.receiver.hello(session, first);
                    if let Some(note) = note {
                        info!("{note}");
                    }
                    // The new session (or skipped lines) must be durable before it is promised.
                    self.commit().map_err(|e| e.to_string())?;
                    if let Message::LinesResume { next } = resume {
                        info!("{} resumes at line {next}", c.peer());
                    }
                    c.send(&resume).map_err(|e| e.to_string())?;
                }
                Message::Line { seq, partial, data } => match self.receiver.line(seq, partial) {
                    Ok(LineAction::Write { partial }) => {
                        self.pending.extend_from_slice(&data);
                        if !partial {
                            self.pending.push(b'\n');
                        }
                    }
                    Ok(LineAction::Duplicate) => {}
                    Err(reason) => {
                        let _ = c.send(&Message::Error {
                            code: ErrorCode::BadMessage,
                            text: reason.clone(),
                        });
                        return Err(reason);
                    }
                },
                other => match clock::answer_probe(&other, arrived, now_us()) {
                    Some(reply) => c.send(&reply).map_err(|e| e.to_string())?,
                    None => {
                        let reason = format!("unexpected {} on a line stream", other.name());
                        let _ = c.send(&Message::Error {
                            code: ErrorCode::BadMessage,
                            text: reason.clone(),
                        });
                        return Err(reason);
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_round_trips_and_refuses_other_text() {
        let s = State {
            session: Some(0xabc),
            next: 12,
            length: 345,
        };
        assert_eq!(
            s.to_text(),
            "audiowire-lines-state 1\nsession 0000000000000abc\nnext 12\nlength 345\n"
        );
        assert_eq!(State::parse(&s.to_text()), Some(s));
        let none = State { session: None, ..s };
        assert_eq!(State::parse(&none.to_text()), Some(none));
        assert_eq!(State::parse("hello"), None);
        assert_eq!(State::parse("audiowire-lines-state 1\nsession zz\n"), None);
        assert_eq!(
            state_path(Path::new("/tmp/out.csv")),
            Path::new("/tmp/out.csv.lines-state")
        );
    }

    #[test]
    fn bytes_after_the_recorded_length_are_cut_and_a_shorter_file_is_refused() {
        let dir = tempfile::Builder::new()
            .prefix("audiowire-lines-")
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("out.csv");
        std::fs::write(&out, "a\nb\nhalf-written").unwrap_or_else(|e| panic!("{e}"));
        let state = State {
            session: Some(9),
            next: 2,
            length: 4,
        };
        std::fs::write(state_path(&out), state.to_text()).unwrap_or_else(|e| panic!("{e}"));
        let l = LinesListener::bind("127.0.0.1:0", &out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.next(), 2);
        assert_eq!(std::fs::read(&out).unwrap_or_default(), b"a\nb\n");
        drop(l);
        std::fs::write(&out, "a\n").unwrap_or_else(|e| panic!("{e}"));
        let e = LinesListener::bind("127.0.0.1:0", &out).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: is 2 bytes, shorter than the 4 bytes audiowire had written: another program changed it; move {} away to start a new stream",
                out.display(),
                state_path(&out).display()
            )
        );
    }
}
