//! Python `struct` records over TCP: a listener that prints, or appends to a CSV file, or writes
//! as JSON lines, every record it receives, and a sender of one record.
//!
//! Two modes. **Raw**: fixed-size records back to back with no header, exactly what
//! `sock.sendall(struct.pack(fmt, ...))` sends; both sides must agree on the format. **Framed**:
//! each record is a `Struct` message carrying its format string and the packed bytes, framed like
//! every audiowire message; a listener given `--format` refuses records of another layout, with
//! an `Error` message.
//!
//! Values are shown as Python shows them (`3`, `0.5`, `1e-05`, `True`), with `s` strings decoded
//! as UTF-8 (invalid bytes replaced) and their NUL padding trimmed. Packing and unpacking are the
//! protocol crate's ([`audiowire_protocol::pystruct`]).

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use audiowire_protocol::message::ErrorCode;
use audiowire_protocol::pystruct::{Format, Value};
use audiowire_protocol::{Message, clock};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::net::{self, Framed, Recv, now_us};

/// Where a listener puts the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One line per record on stdout, values separated by spaces.
    Print,
    /// One CSV row per record appended to this file, flushed per record.
    Csv(PathBuf),
    /// One JSON array per record on stdout.
    Jsonl,
}

/// What a listener expects and where it writes.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The record layout: required for raw records; for framed records, the layout they must have.
    pub format: Option<Format>,
    /// Raw records instead of `Struct` messages.
    pub raw: bool,
    /// Where records go.
    pub output: Output,
    /// Stop after this many records (all connections together).
    pub count: Option<u64>,
    /// Most connections served at once.
    pub max_clients: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
}

impl ListenConfig {
    /// Defaults: print, no record limit, 64 connections, 5 minutes of silence.
    pub fn new(format: Option<Format>, raw: bool) -> Self {
        Self {
            format,
            raw,
            output: Output::Print,
            count: None,
            max_clients: 64,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Python's `repr` of a float: the shortest text that reads back the same, with an exponent
/// below 1e-4 and from 1e16 on (`0.5`, `1.0`, `1e-05`, `1e+16`, `inf`, `nan`).
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e-5".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if x < 0.0 { "-" } else { "" };
    // Python switches to an exponent when the decimal exponent is < -4 or >= 16.
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    let s = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{a}.{b}")
    };
    format!("{sign}{s}")
}

/// Text of one value for printing and CSV: strings decoded (for `s`, NUL padding trimmed).
fn text_of(code: char, v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Float(x) => py_float(*x),
        Value::Bytes(b) => {
            let b = if code == 's' {
                let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
                &b[..end]
            } else {
                &b[..]
            };
            String::from_utf8_lossy(b).into_owned()
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One record as a line of output (without the newline).
pub fn render(format: &Format, values: &[Value], output: &Output) -> String {
    let codes = format.value_fields().map(|f| f.code);
    match output {
        Output::Print => codes
            .zip(values)
            .map(|(c, v)| text_of(c, v))
            .collect::<Vec<_>>()
            .join(" "),
        Output::Csv(_) => codes
            .zip(values)
            .map(|(c, v)| csv_field(&text_of(c, v)))
            .collect::<Vec<_>>()
            .join(","),
        Output::Jsonl => {
            let items: Vec<serde_json::Value> = codes
                .zip(values)
                .map(|(c, v)| match v {
                    Value::Int(i) => i64::try_from(*i)
                        .map(serde_json::Value::from)
                        .or_else(|_| u64::try_from(*i).map(serde_json::Value::from))
                        .unwrap_or_else(|_| serde_json::Value::from(i.to_string())),
                    Value::Bool(b) => serde_json::Value::Bool(*b),
                    Value::Float(x) => serde_json::Value::from(*x),
                    Value::Bytes(_) => serde_json::Value::String(text_of(c, v)),
                })
                .collect();
            serde_json::Value::Array(items).to_string()
        }
    }
}

/// Where rendered records are written, shared by every connection.
struct Sink {
    out: Box<dyn Write + Send>,
    path: Option<PathBuf>,
}

impl Sink {
    fn open(output: &Output) -> Result<Self> {
        Ok(match output {
            Output::Csv(path) => Sink {
                out: Box::new(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|error| Error::File {
                            path: path.clone(),
                            error,
                        })?,
                ),
                path: Some(path.clone()),
            },
            _ => Sink {
                out: Box::new(std::io::stdout()),
                path: None,
            },
        })
    }

    /// Writes one line and flushes it.
    fn line(&mut self, line: &str) -> Result<()> {
        let r = self
            .out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush());
        r.map_err(|error| Error::File {
            path: self.path.clone().unwrap_or_else(|| "stdout".into()),
            error,
        })
    }
}

/// A bound struct listener, ready to [`StructListener::run`].
pub struct StructListener {
    listener: TcpListener,
    config: Arc<ListenConfig>,
    sink: Arc<Mutex<Sink>>,
}

impl std::fmt::Debug for StructListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructListener")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl StructListener {
    /// Checks the configuration, opens the output and binds `addr`.
    pub fn bind(addr: &str, config: ListenConfig) -> Result<Self> {
        if config.raw {
            match &config.format {
                None => {
                    return Err(Error::Usage(
                        "raw records need --format: nothing in the bytes says where a record ends"
                            .into(),
                    ));
                }
                Some(f) if f.size() == 0 => {
                    return Err(Error::Usage(format!(
                        "format {:?} describes a record of 0 bytes: raw records need at least one byte",
                        f.as_str()
                    )));
                }
                Some(_) => {}
            }
        }
        let sink = Sink::open(&config.output)?;
        let listener = net::bind_tcp(addr)?;
        Ok(Self {
            listener,
            config: Arc::new(config),
            sink: Arc::new(Mutex::new(sink)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> String {
        net::local(&self.listener)
    }

    /// Serves connections until `shutdown` is set or `count` records have arrived.
    pub fn run(&self, shutdown: &Arc<AtomicBool>) -> Result<u64> {
        let records = Arc::new(AtomicU64::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let mut threads: Vec<thread::JoinHandle<()>> = Vec::new();
        let stop = || shutdown.load(Ordering::Relaxed) || done.load(Ordering::Relaxed);
        while !stop() {
            let Some((stream, peer)) = net::try_accept(&self.listener) else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            threads.retain(|t| !t.is_finished());
            if active.load(Ordering::Relaxed) >= self.config.max_clients {
                warn!(
                    "refusing {peer}: {} connections already",
                    self.config.max_clients
                );
                continue;
            }
            active.fetch_add(1, Ordering::Relaxed);
            info!("{peer} connected");
            let ctx = ConnCtx {
                config: Arc::clone(&self.config),
                sink: Arc::clone(&self.sink),
                records: Arc::clone(&records),
                done: Arc::clone(&done),
                shutdown: Arc::clone(shutdown),
            };
            let conn_active = Arc::clone(&active);
            let spawned = thread::Builder::new()
                .name(format!("struct {peer}"))
                .spawn(move || {
                    let r = if ctx.config.raw {
                        ctx.serve_raw(stream, peer)
                    } else {
                        ctx.serve_framed(stream, peer)
                    };
                    match r {
                        Ok(n) => info!("{peer} done: {n} records"),
                        Err(e) => warn!("{peer} dropped: {e}"),
                    }
                    conn_active.fetch_sub(1, Ordering::Relaxed);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    active.fetch_sub(1, Ordering::Relaxed);
                    warn!("{peer} refused: cannot start a thread: {e}");
                }
            }
        }
        done.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        Ok(records.load(Ordering::Relaxed))
    }
}

/// What one connection's thread shares with the others.
struct ConnCtx {
    config: Arc<ListenConfig>,
    sink: Arc<Mutex<Sink>>,
    records: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
}

const SLICE: Duration = Duration::from_millis(100);

impl ConnCtx {
    fn stopped(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed) || self.done.load(Ordering::Relaxed)
    }

    /// Writes one record; false once the record limit is reached (this record not written).
    fn emit(&self, format: &Format, values: &[Value]) -> Result<bool> {
        let line = render(format, values, &self.config.output);
        let mut sink = self
            .sink
            .lock()
            .map_err(|_| Error::Usage("another connection's thread failed while writing".into()))?;
        let n = self.records.load(Ordering::Relaxed);
        if self.config.count.is_some_and(|c| n >= c) {
            return Ok(false);
        }
        sink.line(&line)?;
        let n = self.records.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.count.is_some_and(|c| n >= c) {
            self.done.store(true, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn serve_raw(&self, mut stream: TcpStream, peer: SocketAddr) -> Result<u64> {
        let Some(format) = &self.config.format else {
            return Ok(0);
        };
        let io = |error| Error::Io {
            peer: peer.to_string(),
            error,
        };
        stream.set_read_timeout(Some(SLICE)).map_err(io)?;
        let mut record = vec![0u8; format.size()];
        let mut have = 0;
        let mut n = 0u64;
        let mut last = Instant::now();
        while !self.stopped() {
            match stream.read(&mut record[have..]) {
                Ok(0) if have == 0 => return Ok(n),
                Ok(0) => {
                    return Err(Error::Closed {
                        peer: peer.to_string(),
                        when: format!(
                            "in the middle of a record ({have} of {} bytes): is it sending format {:?}?",
                            format.size(),
                            format.as_str()
                        ),
                    });
                }
                Ok(k) => {
                    have += k;
                    last = Instant::now();
                    if have == record.len() {
                        have = 0;
                        let values = format.unpack(&record)?;
                        if !self.emit(format, &values)? {
                            break;
                        }
                        n += 1;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if last.elapsed() > self.config.idle_timeout {
                        break;
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Ok(n)
    }

    fn serve_framed(&self, stream: TcpStream, peer: SocketAddr) -> Result<u64> {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        // A Struct message: envelope, format string and one record.
        let max = (2 + 2 + u16::MAX as usize + audiowire_protocol::pystruct::MAX_RECORD_LEN) as u64;
        let mut conn = Framed::new(stream, peer.to_string(), max);
        let mut cached: Option<Format> = None;
        let mut n = 0u64;
        let mut last = Instant::now();
        while !self.stopped() {
            let (msg, arrived) = match conn.recv(Instant::now() + SLICE)? {
                Recv::Message(m, t) => (m, t),
                Recv::Closed => return Ok(n),
                Recv::Timeout => {
                    if last.elapsed() > self.config.idle_timeout {
                        break;
                    }
                    continue;
                }
            };
            last = Instant::now();
            let Message::Struct { format, data } = msg else {
                if let Some(reply) = clock::answer_probe(&msg, arrived, now_us()) {
                    conn.send(&reply)?;
                    continue;
                }
                return Err(refuse(
                    &mut conn,
                    format!("expected a Struct message, got {}", msg.name()),
                ));
            };
            if cached.as_ref().is_none_or(|f| f.as_str() != format) {
                cached = Some(match Format::parse(&format) {
                    Ok(f) => f,
                    Err(e) => return Err(refuse(&mut conn, e.to_string())),
                });
            }
            let Some(f) = &cached else { continue };
            let mismatch = self
                .config
                .format
                .as_ref()
                .filter(|want| want.order() != f.order() || want.fields() != f.fields());
            if let Some(want) = mismatch {
                return Err(refuse(
                    &mut conn,
                    format!(
                        "this listener takes records of format {:?}, not {format:?}",
                        want.as_str()
                    ),
                ));
            }
            let values = match f.unpack(&data) {
                Ok(v) => v,
                Err(e) => return Err(refuse(&mut conn, e.to_string())),
            };
            if !self.emit(f, &values)? {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}

/// Tells the peer why its record is refused (best effort) and returns the error to log.
fn refuse(conn: &mut Framed, text: String) -> Error {
    let _ = conn.send(&Message::Error {
        code: ErrorCode::BadMessage,
        text: text.clone(),
    });
    Error::PeerBroke {
        peer: conn.peer().to_string(),
        reason: text,
    }
}

const WHAT: &str = "`audiowire struct listen`";

/// Sends one record to `addr` and waits (at most `timeout`) for the listener to close its side,
/// so that a framed listener's refusal is reported. Returns the bytes sent.
pub fn send(
    addr: &str,
    format: &Format,
    values: &[Value],
    raw: bool,
    timeout: Duration,
) -> Result<usize> {
    let record = format.pack(values)?;
    let mut bytes = Vec::new();
    if raw {
        bytes.extend_from_slice(&record);
    } else {
        Message::Struct {
            format: format.as_str().to_string(),
            data: record,
        }
        .encode_frame(&mut bytes)?;
    }
    let mut stream = net::connect(addr, timeout, WHAT)?;
    let io = |error| Error::Io {
        peer: addr.to_string(),
        error,
    };
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream.write_all(&bytes).map_err(io)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(io)?;
    // Wait for the listener to close (it has read the record), or for its Error.
    let mut conn = Framed::new(stream, addr, 64 * 1024);
    let deadline = Instant::now() + timeout;
    loop {
        match conn.recv(deadline) {
            Ok(Recv::Message(Message::Error { text, .. }, _)) => {
                return Err(Error::Refused {
                    peer: addr.to_string(),
                    text,
                });
            }
            Ok(Recv::Message(..)) => {}
            // Closed, or no word within the timeout: the record was delivered to its kernel.
            Ok(Recv::Closed | Recv::Timeout) => return Ok(bytes.len()),
            // A raw peer may answer with anything, or reset: the record is sent either way.
            Err(_) if raw => return Ok(bytes.len()),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (x, want) in [
            (0.5, "0.5"),
            (1.0, "1.0"),
            (-2.0, "-2.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456.789, "123456.789"),
            (1.5e-300, "1.5e-300"),
            (-0.0, "-0.0"),
            (f64::INFINITY, "inf"),
            (f64::NAN, "nan"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.5e20, "2.5e+20"),
        ] {
            assert_eq!(py_float(x), want, "{x:e}");
        }
    }

    #[test]
    fn records_render_for_print_csv_and_jsonl() {
        let f = Format::parse("!I30sd?").unwrap_or_else(|e| panic!("{e}"));
        let mut s = b"hello, \"world\"".to_vec();
        s.resize(30, 0);
        let v = [
            Value::Int(3),
            Value::Bytes(s),
            Value::Float(0.5),
            Value::Bool(true),
        ];
        assert_eq!(
            render(&f, &v, &Output::Print),
            "3 hello, \"world\" 0.5 True"
        );
        assert_eq!(
            render(&f, &v, &Output::Csv("x".into())),
            "3,\"hello, \"\"world\"\"\",0.5,True"
        );
        assert_eq!(
            render(&f, &v, &Output::Jsonl),
            "[3,\"hello, \\\"world\\\"\",0.5,true]"
        );
    }

    #[test]
    fn raw_listening_needs_a_format_of_at_least_one_byte() {
        let e = StructListener::bind("127.0.0.1:0", ListenConfig::new(None, true))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "raw records need --format: nothing in the bytes says where a record ends"
        );
        let zero = Format::parse("0s").ok();
        let e = StructListener::bind("127.0.0.1:0", ListenConfig::new(zero, true))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "format \"0s\" describes a record of 0 bytes: raw records need at least one byte"
        );
    }
}
