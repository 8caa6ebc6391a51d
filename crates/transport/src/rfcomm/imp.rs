//! The real RFCOMM sockets (bluer), driven by a runtime private to this module.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bluer::rfcomm::{self, SocketAddr, Stream, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::Addr;
use crate::Conn;
use crate::error::{Error, Result};

// Linux errno values the messages depend on.
const EAFNOSUPPORT: i32 = 97;
const EPROTONOSUPPORT: i32 = 93;
const ESOCKTNOSUPPORT: i32 = 94;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;
const EADDRINUSE: i32 = 98;
const ECONNREFUSED: i32 = 111;
const EHOSTDOWN: i32 = 112;
const EHOSTUNREACH: i32 = 113;
const ENETDOWN: i32 = 100;
const ETIMEDOUT: i32 = 110;

/// The runtime every RFCOMM socket is driven on: one worker thread, which runs the reactor, so
/// any thread may block on a socket at any time.
fn runtime() -> Result<&'static Runtime> {
    static RT: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("audiowire-bluetooth")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Io {
        what: "cannot start the Bluetooth runtime".into(),
        error: io::Error::other(e.clone()),
    })
}

fn sockaddr(a: Addr) -> SocketAddr {
    SocketAddr::new(bluer::Address::new(a.mac), a.channel)
}

/// A new RFCOMM socket, or why the machine cannot make one.
fn socket() -> Result<rfcomm::Socket> {
    rfcomm::Socket::new().map_err(|e| match e.raw_os_error() {
        Some(EAFNOSUPPORT | EPROTONOSUPPORT | ESOCKTNOSUPPORT) => Error::NoBluetooth(e),
        _ => Error::Io {
            what: "cannot open an RFCOMM socket".into(),
            error: e,
        },
    })
}

/// Local adapters the kernel knows, by name (`hci0`, ...); `None` when sysfs cannot say.
fn adapters() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/class/bluetooth").ok()?;
    Some(
        dir.filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("hci") && !name.contains(':')
            })
            .count(),
    )
}

fn check_adapters() -> Result<()> {
    // With Bluetooth in the kernel but no controller, sysfs has the class and no hciN.
    if adapters() == Some(0) {
        return Err(Error::NoAdapter {
            what: "on this machine".into(),
            error: io::Error::new(ErrorKind::NotFound, "no hciN controller"),
        });
    }
    Ok(())
}

/// Connects to `peer`, waiting at most `timeout`.
pub fn connect(peer: Addr, timeout: Duration) -> Result<RfcommConn> {
    let rt = runtime()?;
    let _guard = rt.enter();
    let sock = socket()?;
    check_adapters()?;
    let who = peer.mac_string();
    let channel = peer.channel;
    let result = rt.block_on(async {
        tokio::time::timeout(timeout, async {
            let stream = sock.connect(sockaddr(peer)).await?;
            established(&stream).await?;
            Ok::<_, io::Error>(stream)
        })
        .await
    });
    let unreachable = |why: String| Error::Unreachable {
        addr: who.clone(),
        channel,
        why,
    };
    match result {
        Ok(Ok(stream)) => Ok(RfcommConn::new(stream, rt)),
        Err(_) => Err(unreachable(format!(
            "timed out after {:.1} s",
            timeout.as_secs_f64()
        ))),
        Ok(Err(e)) => Err(match e.raw_os_error() {
            Some(ECONNREFUSED) => Error::Refused { addr: who, channel },
            Some(EHOSTDOWN | ETIMEDOUT) => unreachable(e.to_string()),
            Some(EHOSTUNREACH | ENETDOWN | ENODEV | EADDRNOTAVAIL) => Error::NoAdapter {
                what: format!("can reach {who}"),
                error: e,
            },
            _ => Error::Io {
                what: format!("connecting to {peer}"),
                error: e,
            },
        }),
    }
}

/// Waits until a connecting stream is really connected. bluer's connect can return while the
/// link is still being set up (a fresh socket is already writable), so this waits until the
/// kernel reports the connection (RFCOMM_CONNINFO answers only once connected), and returns the error (refused, host down) if the attempt fails. The
/// caller bounds it with the connect timeout.
async fn established(stream: &Stream) -> io::Result<()> {
    let mut byte = [0u8; 1];
    loop {
        let socket: &rfcomm::Socket = stream.as_ref();
        if socket.conn_info().is_ok() {
            return Ok(());
        }
        // While connecting, a peek waits; a failed attempt answers with its error.
        match tokio::time::timeout(Duration::from_millis(20), stream.peek(&mut byte)).await {
            Err(_) => {}
            Ok(Ok(0)) => return Err(io::Error::from_raw_os_error(ECONNREFUSED)),
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.raw_os_error() == Some(107) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// A listening RFCOMM socket.
pub struct Listener {
    inner: rfcomm::Listener,
    local: Addr,
    rt: &'static Runtime,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rfcomm::Listener({})", self.local)
    }
}

impl Listener {
    /// Listens on `at` (an adapter's address, or any, and a channel).
    pub fn bind(at: Addr) -> Result<Self> {
        let rt = runtime()?;
        let _guard = rt.enter();
        let sock = socket()?;
        check_adapters()?;
        sock.bind(sockaddr(at))
            .map_err(|e| match e.raw_os_error() {
                Some(EADDRNOTAVAIL | ENODEV) => Error::NoAdapter {
                    what: format!("with the address {}", at.mac_string()),
                    error: e,
                },
                Some(EADDRINUSE) => Error::InUse {
                    adapter: if at.is_any() {
                        "an adapter".into()
                    } else {
                        at.mac_string()
                    },
                    channel: at.channel,
                },
                _ => Error::Io {
                    what: format!("cannot listen on {at}"),
                    error: e,
                },
            })?;
        let inner = sock.listen(8).map_err(|e| Error::Io {
            what: format!("cannot listen on {at}"),
            error: e,
        })?;
        Ok(Self {
            inner,
            local: at,
            rt,
        })
    }

    /// Where it listens.
    pub fn local(&self) -> Addr {
        self.local
    }

    /// Waits up to `wait` for a peer; `None` when none came.
    pub fn accept(&self, wait: Duration) -> io::Result<Option<(RfcommConn, String)>> {
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(wait, self.inner.accept()).await });
        match r {
            Err(_) => Ok(None),
            Ok(Ok((stream, peer))) => Ok(Some((
                RfcommConn::new(stream, self.rt),
                format!("{}:{}", peer.addr, peer.channel),
            ))),
            Ok(Err(e)) => Err(e),
        }
    }
}

/// A connected RFCOMM stream, blocking, with timeouts. Clones share the connection: one may
/// read while another writes.
pub struct RfcommConn {
    reader: Arc<Mutex<stream::OwnedReadHalf>>,
    writer: Arc<Mutex<stream::OwnedWriteHalf>>,
    /// Timeouts in microseconds; 0 for none.
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    rt: &'static Runtime,
}

impl std::fmt::Debug for RfcommConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RfcommConn")
    }
}

fn micros(t: Option<Duration>) -> u64 {
    t.map_or(0, |t| (t.as_micros() as u64).max(1))
}

fn timeout_of(v: &AtomicU64) -> Option<Duration> {
    match v.load(Ordering::Relaxed) {
        0 => None,
        us => Some(Duration::from_micros(us)),
    }
}

fn poisoned() -> io::Error {
    io::Error::other("an RFCOMM stream's lock was poisoned")
}

impl RfcommConn {
    fn new(stream: Stream, rt: &'static Runtime) -> Self {
        let (r, w) = stream.into_split();
        Self {
            reader: Arc::new(Mutex::new(r)),
            writer: Arc::new(Mutex::new(w)),
            read_timeout: AtomicU64::new(0),
            write_timeout: AtomicU64::new(0),
            rt,
        }
    }

    /// Runs `io` on the runtime, bounded by `limit`.
    fn run<T>(
        &self,
        limit: Option<Duration>,
        io: impl std::future::Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        let _guard = self.rt.enter();
        self.rt.block_on(async {
            match limit {
                Some(t) => tokio::time::timeout(t, io)
                    .await
                    .unwrap_or_else(|_| Err(io::Error::from(ErrorKind::WouldBlock))),
                None => io.await,
            }
        })
    }
}

impl Read for RfcommConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = timeout_of(&self.read_timeout);
        let reader = Arc::clone(&self.reader);
        let mut r = reader.lock().map_err(|_| poisoned())?;
        self.run(limit, r.read(buf))
    }
}

impl Write for RfcommConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let limit = timeout_of(&self.write_timeout);
        let writer = Arc::clone(&self.writer);
        let mut w = writer.lock().map_err(|_| poisoned())?;
        self.run(limit, w.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn for RfcommConn {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.store(micros(timeout), Ordering::Relaxed);
        Ok(())
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout.store(micros(timeout), Ordering::Relaxed);
        Ok(())
    }

    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(Self {
            reader: Arc::clone(&self.reader),
            writer: Arc::clone(&self.writer),
            read_timeout: AtomicU64::new(self.read_timeout.load(Ordering::Relaxed)),
            write_timeout: AtomicU64::new(self.write_timeout.load(Ordering::Relaxed)),
            rt: self.rt,
        }))
    }

    fn shutdown_write(&self) -> io::Result<()> {
        let writer = Arc::clone(&self.writer);
        let mut w = writer.lock().map_err(|_| poisoned())?;
        self.run(Some(Duration::from_secs(2)), w.shutdown())
    }
}
