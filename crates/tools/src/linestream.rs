//! The acknowledged, resumable line stream, sans-IO: bytes and `now` in, messages and decisions
//! out. `tail` ([`crate::tail`]) and `lines listen` ([`crate::lines`]) own the file and the socket.
//!
//! **The exchange.** The sender numbers lines from 0 (`seq`) and keeps every line it has not seen
//! acknowledged, in a window bounded in lines and bytes (so its memory is bounded however long it
//! runs: when the window is full it stops reading the file until acknowledgements come). On each
//! connection it says `LinesHello { session, first }` (`first`: the oldest line it still holds);
//! the receiver answers `LinesResume { next }`, the first line it does not hold, and the sender
//! sends from there. The receiver writes lines, makes them durable together with its own record
//! of `next` (see [`crate::lines`]), and only then sends `LinesAck { next }`; the sender forgets
//! the lines below `next`. After a dropped connection, or a restart of the receiver, the same
//! handshake resumes exactly where the durable record says: no line is lost and none is written
//! twice.
//!
//! Lines longer than [`MAX_LINE`] bytes travel as several `Line` messages, each but the last
//! marked `partial` (the receiver writes no newline after those).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use audiowire_protocol::Message;

/// The longest piece of a line one `Line` message carries; longer lines are split.
pub const MAX_LINE: usize = 64 * 1024;

/// Splits a byte stream into lines, holding at most `max` bytes of an unfinished line.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    partial: Vec<u8>,
    max: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineSplitter {
    /// A splitter that cuts lines longer than `max` bytes (at least 1) into pieces.
    pub fn new(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            max: max.max(1),
        }
    }

    /// Feeds bytes; calls `emit(line, partial)` for each whole line (without its `\n`) and for
    /// each full `max`-byte piece of a longer one (`partial` true).
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(Vec<u8>, bool)) {
        while !bytes.is_empty() {
            let room = self.max - self.partial.len();
            let newline = bytes.iter().take(room).position(|&b| b == b'\n');
            match newline {
                Some(i) => {
                    self.partial.extend_from_slice(&bytes[..i]);
                    emit(std::mem::take(&mut self.partial), false);
                    bytes = &bytes[i + 1..];
                }
                None => {
                    let take = room.min(bytes.len());
                    self.partial.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.partial.len() == self.max {
                        emit(std::mem::take(&mut self.partial), true);
                    }
                }
            }
        }
    }

    /// Emits an unfinished last line as a whole line (the file was truncated or rotated).
    pub fn flush(&mut self, emit: &mut impl FnMut(Vec<u8>, bool)) {
        if !self.partial.is_empty() {
            emit(std::mem::take(&mut self.partial), false);
        }
    }

    /// Bytes of an unfinished line held.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

/// Limits of a [`LineSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// Most lines held unacknowledged.
    pub window_lines: usize,
    /// Most bytes held unacknowledged.
    pub window_bytes: usize,
    /// A connection with lines in flight and no acknowledgement for this long is dead.
    pub ack_timeout: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            window_lines: 4096,
            window_bytes: 1 << 20,
            ack_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No connection.
    Down,
    /// `LinesHello` sent, waiting for `LinesResume`.
    Handshake { since: Instant },
    /// Streaming: the next line to send, and since when an acknowledgement is awaited.
    Up { next_send: u64, progress: Instant },
}

/// The sending side: numbering, the window of unacknowledged lines, resumption.
#[derive(Debug, Clone)]
pub struct LineSender {
    session: u64,
    config: SenderConfig,
    /// Sequence number of `unacked[0]`.
    first: u64,
    unacked: VecDeque<(bool, Vec<u8>)>,
    bytes: usize,
    link: Link,
}

impl LineSender {
    /// A sender for `session` (random, the same across reconnections), with nothing sent.
    pub fn new(session: u64, config: SenderConfig) -> Self {
        Self {
            session,
            config,
            first: 0,
            unacked: VecDeque::new(),
            bytes: 0,
            link: Link::Down,
        }
    }

    /// The session number.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// How many more bytes may be read from the file without overflowing the window: each line
    /// takes at least one byte (its newline), so reading this many adds at most this many lines.
    pub fn room(&self) -> usize {
        let lines = self.config.window_lines.saturating_sub(self.unacked.len());
        let bytes = self.config.window_bytes.saturating_sub(self.bytes);
        lines.min(bytes)
    }

    /// Takes one line (or a `partial` piece) into the window; returns its sequence number.
    pub fn push(&mut self, data: Vec<u8>, partial: bool) -> u64 {
        let seq = self.next_seq();
        self.bytes += data.len();
        self.unacked.push_back((partial, data));
        seq
    }

    /// The sequence number the next pushed line gets.
    pub fn next_seq(&self) -> u64 {
        self.first + self.unacked.len() as u64
    }

    /// Every line below this one is acknowledged.
    pub fn acked(&self) -> u64 {
        self.first
    }

    /// Lines held, not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// True between [`LineSender::connected`] and [`LineSender::disconnected`].
    pub fn is_connected(&self) -> bool {
        self.link != Link::Down
    }

    /// A connection is open: the message to send first.
    pub fn connected(&mut self, now: Instant) -> Message {
        self.link = Link::Handshake { since: now };
        Message::LinesHello {
            session: self.session,
            first: self.first,
        }
    }

    /// The connection is gone; lines not acknowledged will be offered again on the next one.
    pub fn disconnected(&mut self) {
        self.link = Link::Down;
    }

    fn forget_below(&mut self, next: u64) {
        while self.first < next {
            match self.unacked.pop_front() {
                Some((_, d)) => self.bytes -= d.len(),
                None => break,
            }
            self.first += 1;
        }
    }

    /// Handles a message from the receiver. An error means the connection must be dropped (the
    /// text says why); the lines stay held for the next one.
    pub fn handle(&mut self, msg: &Message, now: Instant) -> Result<(), String> {
        match (msg, self.link) {
            (Message::LinesResume { next }, Link::Handshake { .. }) => {
                let next = *next;
                if next < self.first || next > self.next_seq() {
                    return Err(format!(
                        "the receiver asks to resume at line {next}, but this sender holds lines {} to {} (is its state from another stream?)",
                        self.first,
                        self.next_seq()
                    ));
                }
                self.forget_below(next);
                self.link = Link::Up {
                    next_send: next,
                    progress: now,
                };
                Ok(())
            }
            (Message::LinesAck { next }, Link::Up { next_send, .. }) => {
                let next = *next;
                if next > next_send {
                    return Err(format!(
                        "the receiver acknowledges line {} that was never sent",
                        next - 1
                    ));
                }
                if next > self.first {
                    self.forget_below(next);
                    self.link = Link::Up {
                        next_send,
                        progress: now,
                    };
                }
                Ok(())
            }
            // An acknowledgement that crossed a reconnection: still true, and harmless.
            (Message::LinesAck { next }, Link::Handshake { .. }) => {
                if *next > self.next_seq() {
                    return Err(format!(
                        "the receiver acknowledges line {} that was never sent",
                        next - 1
                    ));
                }
                self.forget_below(*next);
                Ok(())
            }
            (Message::Error { text, .. }, _) => Err(format!("the receiver gave up: {text}")),
            (m, _) => Err(format!("unexpected {} from the receiver", m.name())),
        }
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Message> {
        let Link::Up {
            next_send,
            progress,
        } = self.link
        else {
            return None;
        };
        let index = usize::try_from(next_send.checked_sub(self.first)?).ok()?;
        let (partial, data) = self.unacked.get(index)?;
        let msg = Message::Line {
            seq: next_send,
            partial: *partial,
            data: data.clone(),
        };
        // Nothing was in flight: the acknowledgement clock starts now.
        let progress = if next_send == self.first {
            now
        } else {
            progress
        };
        self.link = Link::Up {
            next_send: next_send + 1,
            progress,
        };
        Some(msg)
    }

    /// When the connection should be declared dead if nothing comes, if it can be.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.link {
            Link::Down => None,
            Link::Handshake { since } => Some(since + self.config.ack_timeout),
            Link::Up {
                next_send,
                progress,
            } => (next_send > self.first).then_some(progress + self.config.ack_timeout),
        }
    }

    /// True when the receiver has been silent too long with lines in flight (or the handshake
    /// got no answer): drop the connection and reconnect.
    pub fn timed_out(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|t| now >= t)
    }
}

/// What the receiver does with a `Line`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineAction {
    /// Append the data, then a newline unless `partial`.
    Write {
        /// No newline after it.
        partial: bool,
    },
    /// Already written (a line resent after a lost acknowledgement): skip it.
    Duplicate,
}

/// The receiving side: which session it holds and the next line it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineReceiver {
    session: Option<u64>,
    next: u64,
    committed: (Option<u64>, u64),
    greeted: bool,
}

impl LineReceiver {
    /// A receiver whose durable record says it holds `session`'s lines below `next`.
    pub fn new(session: Option<u64>, next: u64) -> Self {
        Self {
            session,
            next,
            committed: (session, next),
            greeted: false,
        }
    }

    /// A new connection starts: it must say `LinesHello` first.
    pub fn connection(&mut self) {
        self.greeted = false;
    }

    /// Answers a `LinesHello`: the `LinesResume` to send (after committing, see
    /// [`LineReceiver::dirty`]), and a warning for the log when lines were lost or a new stream
    /// starts.
    pub fn hello(&mut self, session: u64, first: u64) -> (Message, Option<String>) {
        self.greeted = true;
        let note = if self.session != Some(session) {
            let note = match self.session {
                Some(old) => format!(
                    "a new stream (session {session:016x}) replaces session {old:016x}; its lines are appended from line {first}"
                ),
                None => format!("a new stream (session {session:016x}) from line {first}"),
            };
            self.session = Some(session);
            self.next = first;
            Some(note)
        } else if self.next < first {
            let note = format!(
                "lines {} to {} of session {session:016x} are gone: the sender no longer holds them",
                self.next,
                first - 1
            );
            self.next = first;
            Some(note)
        } else {
            None
        };
        (Message::LinesResume { next: self.next }, note)
    }

    /// Decides what to do with a `Line`. An error means the connection must be dropped.
    pub fn line(&mut self, seq: u64, partial: bool) -> Result<LineAction, String> {
        if !self.greeted {
            return Err("a Line came before LinesHello".into());
        }
        if seq < self.next {
            return Ok(LineAction::Duplicate);
        }
        if seq > self.next {
            return Err(format!(
                "line {seq} came, but line {} was expected: lines are missing",
                self.next
            ));
        }
        self.next += 1;
        Ok(LineAction::Write { partial })
    }

    /// True when there is something to make durable (lines written, or a new session).
    pub fn dirty(&self) -> bool {
        self.committed != (self.session, self.next)
    }

    /// What the durable record must hold: the session and the next line expected.
    pub fn state(&self) -> (Option<u64>, u64) {
        (self.session, self.next)
    }

    /// The record is durable: the acknowledgement to send.
    pub fn committed(&mut self) -> Message {
        self.committed = (self.session, self.next);
        Message::LinesAck { next: self.next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut emit = |l: Vec<u8>, p| out.push((String::from_utf8_lossy(&l).into_owned(), p));
        for c in chunks {
            s.push(c, &mut emit);
        }
        s.flush(&mut emit);
        out
    }

    #[test]
    fn lines_split_across_chunks_and_long_lines_are_cut() {
        assert_eq!(
            split(100, &[b"ab", b"c\nde\n\nf"]),
            vec![
                ("abc".into(), false),
                ("de".into(), false),
                (String::new(), false),
                ("f".into(), false)
            ]
        );
        assert_eq!(
            split(3, &[b"abcdefg\nxyz\n"]),
            vec![
                ("abc".into(), true),
                ("def".into(), true),
                ("g".into(), false),
                ("xyz".into(), true),
                (String::new(), false),
            ]
        );
    }

    fn line(seq: u64, text: &str) -> Message {
        Message::Line {
            seq,
            partial: false,
            data: text.as_bytes().to_vec(),
        }
    }

    /// Moves every message the sender has to the receiver, as a perfect network would, and
    /// returns what the receiver wrote.
    fn pump(tx: &mut LineSender, rx: &mut LineReceiver, now: Instant) -> Vec<String> {
        let mut written = Vec::new();
        while let Some(m) = tx.poll_transmit(now) {
            let Message::Line { seq, data, .. } = m else {
                panic!("{m:?}")
            };
            if rx.line(seq, false) == Ok(LineAction::Write { partial: false }) {
                written.push(String::from_utf8_lossy(&data).into_owned());
            }
        }
        written
    }

    #[test]
    fn a_dropped_connection_resumes_at_the_durable_line_without_loss_or_duplicates() {
        let t0 = Instant::now();
        let mut tx = LineSender::new(7, SenderConfig::default());
        let mut rx = LineReceiver::new(None, 0);
        for i in 0..5 {
            tx.push(format!("l{i}").into_bytes(), false);
        }
        let hello = tx.connected(t0);
        let Message::LinesHello { session, first } = hello else {
            panic!()
        };
        rx.connection();
        let (resume, note) = rx.hello(session, first);
        assert!(note.is_some_and(|n| n.contains("a new stream")));
        assert_eq!(resume, Message::LinesResume { next: 0 });
        tx.handle(&resume, t0).unwrap();
        let mut out = pump(&mut tx, &mut rx, t0);
        assert_eq!(out.len(), 5);
        // Lines 0..5 are durable and acknowledged, but the ack is lost with the connection.
        assert!(rx.dirty());
        let _lost_ack = rx.committed();
        tx.disconnected();
        for i in 5..8 {
            tx.push(format!("l{i}").into_bytes(), false);
        }
        assert_eq!(tx.unacked(), 8);
        // Reconnect: the receiver says 5, the sender forgets 0..5 and sends 5..8 only.
        let hello = tx.connected(t0);
        assert_eq!(
            hello,
            Message::LinesHello {
                session: 7,
                first: 0
            }
        );
        rx.connection();
        let (resume, note) = rx.hello(7, 0);
        assert_eq!(note, None);
        assert_eq!(resume, Message::LinesResume { next: 5 });
        tx.handle(&resume, t0).unwrap();
        assert_eq!(tx.acked(), 5);
        out.extend(pump(&mut tx, &mut rx, t0));
        let ack = rx.committed();
        tx.handle(&ack, t0).unwrap();
        assert_eq!(tx.unacked(), 0);
        let want: Vec<String> = (0..8).map(|i| format!("l{i}")).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn resent_lines_below_next_are_skipped_and_gaps_are_errors() {
        let mut rx = LineReceiver::new(Some(1), 10);
        assert!(rx.line(10, false).is_err(), "before hello");
        rx.connection();
        let _ = rx.hello(1, 3);
        assert_eq!(rx.line(9, false), Ok(LineAction::Duplicate));
        assert_eq!(rx.line(10, true), Ok(LineAction::Write { partial: true }));
        assert_eq!(
            rx.line(12, false),
            Err("line 12 came, but line 11 was expected: lines are missing".into())
        );
    }

    #[test]
    fn the_window_bounds_memory_and_acks_free_it() {
        let t0 = Instant::now();
        let config = SenderConfig {
            window_lines: 3,
            window_bytes: 100,
            ack_timeout: Duration::from_secs(1),
        };
        let mut tx = LineSender::new(1, config);
        assert_eq!(tx.room(), 3);
        for _ in 0..3 {
            tx.push(b"x".to_vec(), false);
        }
        assert_eq!(tx.room(), 0);
        let _ = tx.connected(t0);
        tx.handle(&Message::LinesResume { next: 0 }, t0).unwrap();
        while tx.poll_transmit(t0).is_some() {}
        assert!(!tx.timed_out(t0 + Duration::from_millis(999)));
        assert!(tx.timed_out(t0 + Duration::from_secs(1)), "no ack for 1 s");
        tx.handle(&Message::LinesAck { next: 2 }, t0).unwrap();
        assert_eq!(tx.room(), 2);
        assert_eq!(
            tx.handle(&Message::LinesAck { next: 9 }, t0),
            Err("the receiver acknowledges line 8 that was never sent".into())
        );
    }

    #[test]
    fn a_resume_outside_what_the_sender_holds_is_refused() {
        let t0 = Instant::now();
        let mut tx = LineSender::new(1, SenderConfig::default());
        tx.push(b"a".to_vec(), false);
        let _ = tx.connected(t0);
        assert!(tx.handle(&Message::LinesResume { next: 2 }, t0).is_err());
        assert!(tx.handle(&line(0, "x"), t0).is_err());
    }

    /// A receiver with its durable record, as `lines listen` keeps it: lines written but not
    /// committed are lost when it crashes (they are cut off the file at restart).
    struct Durable {
        rx: LineReceiver,
        pending: Vec<String>,
        file: Vec<String>,
    }

    impl Durable {
        fn commit(&mut self) -> Option<Message> {
            if !self.rx.dirty() {
                return None;
            }
            self.file.append(&mut self.pending);
            Some(self.rx.committed())
        }
        fn crash_and_restart(&mut self) {
            self.pending.clear();
            let (session, next) = self.rx.committed;
            self.rx = LineReceiver::new(session, next);
        }
    }

    /// The network and the failures of the property test below.
    #[derive(Debug, Default)]
    struct Net {
        to_rx: VecDeque<Message>,
        to_tx: VecDeque<Message>,
    }

    /// One step of a run: 0 read a line, 1 send one, 2 deliver one to the receiver, 3 commit,
    /// 4 deliver one to the sender, 5 drop the connection, 6 drop it and crash the receiver,
    /// 7 connect.
    fn step(
        op: u8,
        lines: &[String],
        read: &mut usize,
        tx: &mut LineSender,
        rx: &mut Durable,
        net: &mut Net,
        now: Instant,
    ) {
        match op {
            0 => {
                if *read < lines.len() && tx.room() > 0 {
                    tx.push(lines[*read].clone().into_bytes(), false);
                    *read += 1;
                }
            }
            1 => {
                if let Some(m) = tx.poll_transmit(now) {
                    net.to_rx.push_back(m);
                }
            }
            2 => match net.to_rx.pop_front() {
                Some(Message::LinesHello { session, first }) => {
                    let _ = rx.commit();
                    let (resume, _) = rx.rx.hello(session, first);
                    let _ = rx.commit();
                    net.to_tx.push_back(resume);
                }
                Some(Message::Line { seq, partial, data }) => match rx.rx.line(seq, partial) {
                    Ok(LineAction::Write { .. }) => {
                        rx.pending.push(String::from_utf8_lossy(&data).into_owned())
                    }
                    Ok(LineAction::Duplicate) => {}
                    Err(e) => panic!("receiver: {e}"),
                },
                Some(m) => panic!("unexpected {m:?}"),
                None => {}
            },
            3 => {
                // Committed whether or not a connection is there to carry the ack.
                let ack = rx.commit();
                if let (Some(ack), true) = (ack, tx.is_connected()) {
                    net.to_tx.push_back(ack);
                }
            }
            4 => {
                if let Some(m) = net.to_tx.pop_front() {
                    tx.handle(&m, now).unwrap_or_else(|e| panic!("sender: {e}"));
                }
            }
            5 | 6 => {
                *net = Net::default();
                tx.disconnected();
                if op == 6 {
                    rx.crash_and_restart();
                }
            }
            _ => {
                if !tx.is_connected() {
                    net.to_rx.push_back(tx.connected(now));
                    rx.rx.connection();
                }
            }
        }
    }

    /// Runs `ops`, then a network that works until everything is acknowledged; returns what the
    /// receiver's file holds.
    fn simulate(n: usize, window: usize, ops: &[u8]) -> Vec<String> {
        let now = Instant::now();
        let lines: Vec<String> = (0..n).map(|i| format!("line {i}")).collect();
        let config = SenderConfig {
            window_lines: window,
            window_bytes: 1 << 20,
            ack_timeout: Duration::from_secs(1),
        };
        let mut tx = LineSender::new(42, config);
        let mut rx = Durable {
            rx: LineReceiver::new(None, 0),
            pending: Vec::new(),
            file: Vec::new(),
        };
        let mut net = Net::default();
        let mut read = 0;
        for &op in ops {
            step(op, &lines, &mut read, &mut tx, &mut rx, &mut net, now);
        }
        for _ in 0..10_000 {
            let idle = net.to_rx.is_empty() && net.to_tx.is_empty();
            if read == n && tx.unacked() == 0 && idle {
                break;
            }
            for op in [7, 0, 1, 2, 3, 4] {
                step(op, &lines, &mut read, &mut tx, &mut rx, &mut net, now);
            }
        }
        rx.file
    }

    proptest::proptest! {
        /// Any interleaving of reading, sending, delivering, committing, dropped connections and
        /// receiver crashes ends with every line in the receiver's file exactly once, in order.
        #[test]
        fn no_line_is_lost_or_doubled_whatever_fails_when(
            n in 1usize..60,
            window in 1usize..8,
            ops in proptest::collection::vec(0u8..8, 0..400),
        ) {
            let want: Vec<String> = (0..n).map(|i| format!("line {i}")).collect();
            proptest::prop_assert_eq!(simulate(n, window, &ops), want);
        }
    }

    #[test]
    fn a_receiver_behind_the_senders_window_skips_ahead_and_says_so() {
        let mut rx = LineReceiver::new(Some(4), 2);
        rx.connection();
        let (resume, note) = rx.hello(4, 6);
        assert_eq!(resume, Message::LinesResume { next: 6 });
        assert_eq!(
            note.as_deref(),
            Some(
                "lines 2 to 5 of session 0000000000000004 are gone: the sender no longer holds them"
            )
        );
        assert!(rx.dirty());
    }
}
