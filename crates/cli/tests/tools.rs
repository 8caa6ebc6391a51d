//! The socket tools end to end: each against the real binary over loopback, and each against a
//! short Python peer that uses only `socket` and `struct` (`tests/peers/*.py`). Echo over TCP and
//! UDP with several clients at once, the TCP up-check (up, refused, timed out), Ping/Pong RTT and
//! clock offset, raw and framed struct records both ways, and the log stream across a killed and
//! restarted receiver, with no line lost or doubled.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(20);

/// Runs the binary, feeding `stdin`, killing it after `timeout`.
fn run_with_stdin(args: &[&str], stdin: &str, timeout: Duration) -> std::process::Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    wait_output(child, timeout)
}

/// Asserts a failed run whose stderr is exactly one line: `audiowire: MESSAGE`.
fn assert_error_line(res: &std::process::Output, message: &str) {
    let err = text(&res.stderr);
    assert!(!res.status.success(), "exit status {:?}", res.status);
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(lines, [format!("audiowire: {message}")], "stderr:\n{err}");
}

// ---------------------------------------------------------------------------------------------
// Echo

#[test]
fn echo_server_tcp_serves_python_clients_at_once_and_a_dead_one_stalls_nobody() {
    let (_server, addr) = start_tool(&["echo-server", "--listen", "127.0.0.1:0"]);
    let (host, port) = addr.rsplit_once(':').unwrap();
    // A client that sends and never reads: its replies pile up until its writes time out.
    let mut dead = TcpStream::connect(&addr).unwrap();
    let flood = thread::spawn(move || {
        dead.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..160 {
            if dead.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut clients: Vec<Proc> = (0..4)
        .map(|i| {
            let mut args = vec!["client", "tcp", host, port, "60"];
            if i == 0 {
                // Starts with NUL bytes: could be a frame header, decided raw after 200 ms.
                args.push("zero-first");
            }
            start_peer("echo_peer.py", &args)
        })
        .collect();
    for c in &mut clients {
        assert!(c.wait(T).success(), "{:?}", take_lines(&c.err, 0, T));
        assert_eq!(take_lines(&c.out, 1, T), ["ok 60"]);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the dead client held the others up"
    );
    flood.join().unwrap();
}

#[test]
fn echo_server_udp_serves_python_clients_at_once() {
    let (_server, addr) = start_tool(&["echo-server", "--listen", "127.0.0.1:0", "--udp"]);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut clients: Vec<Proc> = (0..3)
        .map(|_| start_peer("echo_peer.py", &["client", "udp", host, port, "40"]))
        .collect();
    for c in &mut clients {
        assert!(c.wait(T).success());
        assert_eq!(take_lines(&c.out, 1, T), ["ok 40"]);
    }
}

#[test]
fn echo_client_talks_to_a_python_server_with_text_and_until_bye() {
    let (_py, addr) = start_listening_peer("echo_peer.py", &["server", "tcp"]);
    // One connection: the chat loop ends at `bye` and does not send what follows.
    let res = run_with_stdin(&["echo", &addr], "one\ntwo words\nbye\nnever sent\n", T);
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert_eq!(text(&res.stdout), "one\ntwo words\nbye\n");

    let (_py, addr) = start_listening_peer("echo_peer.py", &["server", "tcp"]);
    let res = run(&["echo", &addr, "hello, echo"], T);
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert_eq!(text(&res.stdout), "hello, echo\n");

    let (_py, addr) = start_listening_peer("echo_peer.py", &["server", "udp"]);
    let res = run_with_stdin(&["echo", &addr, "--udp"], "over udp\nbye\n", T);
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert_eq!(text(&res.stdout), "over udp\nbye\n");
}

#[test]
fn echo_client_and_server_raw_framed_tcp_and_udp() {
    let (_tcp, tcp) = start_tool(&["echo-server", "--listen", "127.0.0.1:0"]);
    let (_udp, udp) = start_tool(&["echo-server", "--listen", "127.0.0.1:0", "--udp"]);
    for (addr, extra) in [
        (&tcp, vec![]),
        (&tcp, vec!["--framed"]),
        (&udp, vec!["--udp"]),
        (&udp, vec!["--udp", "--framed"]),
    ] {
        let mut args = vec!["echo", addr.as_str(), "ünïcode & spaces"];
        args.extend(extra.iter().copied());
        let res = run(&args, T);
        assert!(res.status.success(), "{args:?}: {}", text(&res.stderr));
        assert_eq!(text(&res.stdout), "ünïcode & spaces\n", "{args:?}");
    }
}

#[test]
fn echo_to_nothing_is_one_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let res = run(&["echo", &addr, "hi"], T);
    assert_error_line(
        &res,
        &format!("cannot connect to {addr}: connection refused (is an echo server running there?)"),
    );
}

// ---------------------------------------------------------------------------------------------
// Ping

/// A port that answers nothing: a listener whose backlog of 0 is filled by one connection that
/// is never accepted, so further connection requests are dropped and time out. Loopback only.
fn full_backlog() -> (socket2::Socket, Vec<TcpStream>, String) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(c) => fillers.push(c),
            Err(_) => break, // full
        }
    }
    (s, fillers, addr.to_string())
}

#[test]
fn ping_says_up_refused_and_timed_out() {
    let (_py, up) = start_listening_peer("ping_peer.py", &["listen"]);
    // Bound but not listening: the kernel answers a connection request with a reset.
    let bound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    bound
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let refused = bound.local_addr().unwrap().as_socket().unwrap().to_string();
    let (_full, _fillers, silent) = full_backlog();
    let started = Instant::now();
    let res = run(
        &[
            "ping",
            &up,
            &refused,
            &silent,
            "--timeout",
            "0.3",
            "--retries",
            "1",
            "--delay",
            "0.1",
        ],
        T,
    );
    let out = text(&res.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{up} is up: connected to {up} in "))),
        "{out}"
    );
    assert!(
        lines.contains(&format!("{refused} is down: connection refused (2 tries)").as_str()),
        "{out}"
    );
    assert!(
        lines.contains(&format!("{silent} is down: timed out after 0.3 s (2 tries)").as_str()),
        "{out}"
    );
    assert_error_line(&res, "2 of 3 targets down");
    // Concurrent: three targets, the slowest takes 2 × 0.3 s + 0.1 s.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn ping_all_up_exits_zero_and_a_bad_target_is_named() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("[::1]:0").ok();
    let mut targets = vec![a.local_addr().unwrap().to_string()];
    if let Some(b) = &b {
        targets.push(b.local_addr().unwrap().to_string());
    }
    let mut args = vec!["ping"];
    args.extend(targets.iter().map(String::as_str));
    let res = run(&args, T);
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert_eq!(text(&res.stdout).lines().count(), targets.len());
    assert!(text(&res.stdout).lines().all(|l| l.contains(" is up: ")));

    let res = run(&["ping", "localhost"], T);
    assert_eq!(
        text(&res.stdout),
        "localhost is down: not an address: write HOST:PORT, for example 127.0.0.1:7000 or [::1]:7000\n"
    );
    assert_error_line(&res, "1 of 1 targets down");
}

/// Parses `rtt min/avg/max/mdev = a/b/c/d ms` and `clock offset +x ms` from ping's output.
fn ping_stats(out: &str) -> ([f64; 4], f64) {
    let rtt = out
        .lines()
        .find_map(|l| l.strip_prefix("rtt min/avg/max/mdev = "))
        .unwrap_or_else(|| panic!("no rtt line in {out}"));
    let v: Vec<f64> = rtt
        .trim_end_matches(" ms")
        .split('/')
        .map(|x| x.parse().unwrap())
        .collect();
    let offset: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("clock offset "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no offset line in {out}"))
        .parse()
        .unwrap();
    ([v[0], v[1], v[2], v[3]], offset)
}

#[test]
fn framed_ping_to_the_echo_server_measures_rtt_and_a_near_zero_offset() {
    let (_server, addr) = start_tool(&["echo-server", "--listen", "127.0.0.1:0"]);
    let res = run(
        &["ping", "--framed", &addr, "-c", "5", "--interval", "10ms"],
        T,
    );
    let out = text(&res.stdout);
    assert!(res.status.success(), "{}{out}", text(&res.stderr));
    for seq in 0..5 {
        assert!(
            out.contains(&format!("pong from {addr}: seq={seq} rtt=")),
            "{out}"
        );
    }
    assert!(out.contains("5 sent, 5 received, 0% loss"), "{out}");
    let ([min, avg, max, mdev], offset) = ping_stats(&out);
    assert!(
        0.0 < min && min <= avg && avg <= max && mdev >= 0.0,
        "{out}"
    );
    assert!(max < 1000.0, "{out}");
    // One machine, one clock: the offset is within the exchange's own error.
    assert!(offset.abs() < 50.0, "{out}");
}

#[test]
fn framed_ping_finds_a_python_peers_clock_five_seconds_ahead() {
    let (_py, addr) = start_listening_peer("ping_peer.py", &["pong-server", "5000000"]);
    let res = run(
        &["ping", "--framed", &addr, "-c", "4", "--interval", "10ms"],
        T,
    );
    let out = text(&res.stdout);
    assert!(res.status.success(), "{}{out}", text(&res.stderr));
    assert!(out.contains("4 sent, 4 received, 0% loss"), "{out}");
    let (_, offset) = ping_stats(&out);
    assert!((offset - 5000.0).abs() < 50.0, "offset {offset} ms: {out}");
}

#[test]
fn a_python_client_pings_the_echo_server() {
    let (_server, addr) = start_tool(&["echo-server", "--listen", "127.0.0.1:0"]);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut py = start_peer("ping_peer.py", &["ping", host, port, "5"]);
    assert!(py.wait(T).success());
    let line = take_lines(&py.out, 1, T).remove(0);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let offsets: Vec<f64> = v["offset_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_f64().unwrap())
        .collect();
    let delays: Vec<i64> = v["rtt_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_i64().unwrap())
        .collect();
    assert_eq!(offsets.len(), 5);
    assert!(delays.iter().all(|&d| d >= 0), "{line}");
    // Python's time.time() and the server's clock are the same clock: the exchange with the
    // lowest delay (NTP's pick) puts the offset near zero.
    let best = (0..5).min_by_key(|&i| delays[i]).unwrap();
    assert!(offsets[best].abs() < 20_000.0, "{line}");
    assert!(offsets.iter().all(|o| o.abs() < 1e6), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Struct records

#[test]
fn raw_records_from_python_are_printed() {
    let (mut listener, addr) = start_tool(&[
        "struct",
        "listen",
        "--listen",
        "127.0.0.1:0",
        "--raw",
        "--format",
        "!I30sd",
        "--count",
        "2",
    ]);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut py = start_peer(
        "struct_peer.py",
        &[
            "send",
            host,
            port,
            "raw",
            "!I30sd",
            r#"[[3, "hello", 0.5], [4294967295, "thirty bytes, exactly.........", -1e-05]]"#,
        ],
    );
    assert!(py.wait(T).success());
    assert_eq!(
        take_lines(&listener.out, 2, T),
        [
            "3 hello 0.5",
            "4294967295 thirty bytes, exactly......... -1e-05"
        ]
    );
    assert!(listener.wait(T).success(), "--count 2 ends the listener");
}

#[test]
fn framed_aligned_records_from_python_go_to_csv_flushed_per_record() {
    let tmp = tmpdir("struct-csv");
    let dir = tmp.path();
    let csv = dir.join("records.csv");
    std::fs::write(&csv, "existing row\n").unwrap();
    // '@' is native: a char, then an int aligned to 4, a double aligned to 8 (16 bytes).
    let (_listener, addr) = start_tool(&[
        "struct",
        "listen",
        "--listen",
        "127.0.0.1:0",
        "--format",
        "@cid",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut py = start_peer(
        "struct_peer.py",
        &[
            "send",
            host,
            port,
            "framed",
            "@cid",
            r#"[["a", -7, 2.25], [",", 1, 1e+16]]"#,
        ],
    );
    assert!(py.wait(T).success());
    // Flushed per record: the rows are in the file while the listener still runs.
    wait_until("2 rows in the CSV", T, || {
        std::fs::read_to_string(&csv).is_ok_and(|s| s.lines().count() == 3)
    });
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "existing row\na,-7,2.25\n\",\",1,1e+16\n"
    );
}

#[test]
fn struct_send_reaches_a_python_receiver_raw_and_framed() {
    for (mode, format, values, want) in [
        (
            "raw",
            "!I30sd",
            vec!["3", "hello", "0.5"],
            r#"{"format": "!I30sd", "values": [3, "hello", 0.5]}"#,
        ),
        (
            "framed",
            "!I30sd",
            vec!["3", "hello", "0.5"],
            r#"{"format": "!I30sd", "values": [3, "hello", 0.5]}"#,
        ),
        (
            "raw",
            "@?hq",
            vec!["true", "-2", "-9000000000"],
            r#"{"format": "@?hq", "values": [true, -2, -9000000000]}"#,
        ),
        (
            "framed",
            "<e5p",
            vec!["0.333", "pasc"],
            r#"{"format": "<e5p", "values": [0.3330078125, "pasc"]}"#,
        ),
    ] {
        let (mut py, addr) = start_listening_peer("struct_peer.py", &["recv", mode, format, "1"]);
        let mut args = vec!["struct", "send", addr.as_str(), "--format", format];
        args.extend(values.iter().copied());
        if mode == "raw" {
            args.push("--raw");
        }
        let res = run(&args, T);
        assert!(res.status.success(), "{args:?}: {}", text(&res.stderr));
        assert_eq!(take_lines(&py.out, 1, T), [want], "{args:?}");
        assert!(py.wait(T).success());
    }
}

#[test]
fn struct_send_to_struct_listen_as_json_lines() {
    let (listener, addr) = start_tool(&["struct", "listen", "--listen", "127.0.0.1:0", "--jsonl"]);
    for values in [["1", "true", "-0.0"], ["-5", "0", "inf"]] {
        let mut args = vec!["struct", "send", addr.as_str(), "--format", ">q?f"];
        args.extend(values);
        let res = run(&args, T);
        assert!(res.status.success(), "{}", text(&res.stderr));
    }
    assert_eq!(
        take_lines(&listener.out, 2, T),
        ["[1,true,-0.0]", "[-5,false,null]"]
    );
}

#[test]
fn a_listener_refuses_records_of_another_format_and_the_sender_says_so() {
    let (_listener, addr) = start_tool(&[
        "struct",
        "listen",
        "--listen",
        "127.0.0.1:0",
        "--format",
        "!I30sd",
    ]);
    let res = run(
        &["struct", "send", &addr, "--format", "<I30sd", "3", "x", "1"],
        T,
    );
    assert_error_line(
        &res,
        &format!(
            "{addr} refused: this listener takes records of format \"!I30sd\", not \"<I30sd\""
        ),
    );
}

#[test]
fn bad_format_strings_and_values_are_one_exact_line() {
    // Nothing listens: each error is found before connecting.
    let addr = "127.0.0.1:9";
    for (format, values, message) in [
        (
            "!I30z",
            vec!["1"],
            "bad struct format \"!I30z\" at position 4: 'z' is not a struct type character (use one of x c b B ? h H i I l L q Q n N e f d s p P)",
        ),
        (
            "<n",
            vec!["1"],
            "bad struct format \"<n\" at position 1: 'n' exists only in native mode (start the format with '@' or with no byte order)",
        ),
        (
            "!I30sd",
            vec!["three", "hello", "0.5"],
            "struct value 1 (\"three\") for 'I' at position 1 of format \"!I30sd\": not an integer",
        ),
        (
            "!I30sd",
            vec!["-1", "hello", "0.5"],
            "struct value 1 (-1) for 'I' at position 1 of format \"!I30sd\": -1 is out of range for 'I' (0 to 4294967295)",
        ),
        (
            "!I5sd",
            vec!["1", "too long", "0.5"],
            "struct value 2 (\"too long\") for 's' at position 2 of format \"!I5sd\": 8 bytes of UTF-8 do not fit, '5s' holds at most 5",
        ),
        (
            "!I30sd",
            vec!["1", "hello"],
            "struct format \"!I30sd\" takes 3 values, got 2",
        ),
        (
            "<e",
            vec!["1e6"],
            "struct value 1 (1000000.0) for 'e' at position 1 of format \"<e\": 1000000.0 is too large for 'e' (a 16-bit float, at most ±65504)",
        ),
    ] {
        let mut args = vec!["struct", "send", addr, "--format", format];
        args.extend(values.iter().copied());
        assert_error_line(&run(&args, T), message);
    }
    let res = run(&["struct", "listen", "--listen", "127.0.0.1:0", "--raw"], T);
    assert_error_line(
        &res,
        "raw records need --format: nothing in the bytes says where a record ends",
    );
    let res = run(
        &[
            "struct",
            "listen",
            "--listen",
            "127.0.0.1:0",
            "--format",
            "3",
        ],
        T,
    );
    assert_error_line(
        &res,
        "bad struct format \"3\" at position 0: the repeat count 3 has no type character after it",
    );
}

// ---------------------------------------------------------------------------------------------
// The log stream

fn appender(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

#[test]
fn the_log_stream_survives_a_killed_receiver_with_no_line_lost_or_doubled() {
    const N: usize = 3000;
    let tmp = tmpdir("log-reconnect");
    let dir = tmp.path();
    let log = dir.join("app.log");
    let out = dir.join("out.csv");
    std::fs::write(&log, "").unwrap();
    let (mut receiver, addr) = start_tool(&[
        "lines",
        "listen",
        "--listen",
        "127.0.0.1:0",
        "--append",
        out.to_str().unwrap(),
    ]);
    let mut tail = Command::new(bin());
    tail.args(["tail", log.to_str().unwrap(), "--to", &addr])
        .stdin(Stdio::null());
    let tail = Proc::spawn(tail);
    // A writer appends lines steadily, like a program logging, while the receiver is killed.
    let writer = {
        let log = log.clone();
        thread::spawn(move || {
            let mut f = appender(&log);
            for i in 0..N {
                writeln!(f, "{i},event number {i},{}", "x".repeat(i % 50)).unwrap();
                if i % 20 == 19 {
                    thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    wait_until("300 lines received", T, || count_lines(&out) >= 300);
    receiver.child.kill().unwrap(); // SIGKILL, mid-stream
    receiver.child.wait().unwrap();
    let at_kill = count_lines(&out);
    assert!(at_kill < N, "the kill came too late to test anything");
    // Restarted on the same port; the tail reconnects by itself.
    let (_receiver, addr2) = start_tool(&[
        "lines",
        "listen",
        "--listen",
        &addr,
        "--append",
        out.to_str().unwrap(),
    ]);
    assert_eq!(addr2, addr);
    writer.join().unwrap();
    wait_until("every line received", Duration::from_secs(60), || {
        count_lines(&out) >= N
    });
    let want: String = (0..N)
        .map(|i| format!("{i},event number {i},{}\n", "x".repeat(i % 50)))
        .collect();
    let got = std::fs::read_to_string(&out).unwrap();
    if got != want {
        let got_lines: Vec<&str> = got.lines().collect();
        let first_bad = got_lines
            .iter()
            .zip(want.lines())
            .position(|(a, b)| *a != b);
        panic!(
            "{} lines received for {N} sent (killed at {at_kill}); first difference at line {first_bad:?}",
            got_lines.len()
        );
    }
    wait_line(&tail.err, "connection to", T);
}

#[test]
fn tail_follows_truncation_and_rotation_into_lines_listen() {
    let tmp = tmpdir("log-rotate");
    let dir = tmp.path();
    let log = dir.join("app.log");
    let out = dir.join("out.txt");
    std::fs::write(&log, "before start\n").unwrap();
    let (_receiver, addr) = start_tool(&[
        "lines",
        "listen",
        "--listen",
        "127.0.0.1:0",
        "--append",
        out.to_str().unwrap(),
    ]);
    let mut tail = Command::new(bin());
    tail.args(["tail", log.to_str().unwrap(), "--to", &addr, "--from-end"])
        .stdin(Stdio::null());
    let tail = Proc::spawn(tail);
    wait_line(&tail.err, "from its end", T);
    writeln!(appender(&log), "one").unwrap();
    wait_until("line one", T, || count_lines(&out) == 1);
    // Truncated in place, then written again.
    std::fs::write(&log, "").unwrap();
    wait_line(&tail.err, "was truncated", T);
    writeln!(appender(&log), "two").unwrap();
    wait_until("line two", T, || count_lines(&out) == 2);
    // Rotated: renamed away (with a last line), a new file in its place.
    std::fs::rename(&log, dir.join("app.log.1")).unwrap();
    writeln!(appender(&dir.join("app.log.1")), "three").unwrap();
    writeln!(appender(&log), "four").unwrap();
    wait_until("line four", T, || count_lines(&out) == 4);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "one\ntwo\nthree\nfour\n"
    );
}

#[test]
fn tail_resumes_where_a_python_receiver_says() {
    let tmp = tmpdir("log-python-rx");
    let dir = tmp.path();
    let log = dir.join("app.log");
    std::fs::write(&log, "l0\nl1\nl2\nl3\n").unwrap();
    // The receiver says it already holds lines 0 and 1.
    let (mut py, addr) = start_listening_peer("lines_peer.py", &["receive", "2", "3"]);
    let mut tail = Command::new(bin());
    tail.args(["tail", log.to_str().unwrap(), "--to", &addr])
        .stdin(Stdio::null());
    let _tail = Proc::spawn(tail);
    let hello = wait_line(&py.out, "hello ", T);
    assert!(hello.ends_with(" 0"), "{hello}");
    writeln!(appender(&log), "l4").unwrap();
    assert_eq!(
        take_lines(&py.out, 3, T),
        ["line 2 l2", "line 3 l3", "line 4 l4"]
    );
    assert!(py.wait(T).success());
}

#[test]
fn lines_listen_resumes_a_python_sender_and_skips_what_it_already_wrote() {
    let tmp = tmpdir("log-python-tx");
    let dir = tmp.path();
    let out = dir.join("out.csv");
    let (_receiver, addr) = start_tool(&[
        "lines",
        "listen",
        "--listen",
        "127.0.0.1:0",
        "--append",
        out.to_str().unwrap(),
    ]);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut py = start_peer("lines_peer.py", &["send", host, port]);
    assert!(py.wait(T).success(), "{:?}", take_lines(&py.err, 0, T));
    let lines = take_lines(&py.out, 2, T);
    let resume: u64 = lines[0].strip_prefix("resume ").unwrap().parse().unwrap();
    assert!((5..=8).contains(&resume), "{lines:?}");
    assert_eq!(lines[1], "acked 10");
    let want: String = (0..10).map(|i| format!("py-{i}\n")).collect();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
    let state = std::fs::read_to_string(dir.join("out.csv.lines-state")).unwrap();
    assert_eq!(
        state,
        format!(
            "audiowire-lines-state 1\nsession 0000000000005eed\nnext 10\nlength {}\n",
            want.len()
        )
    );
}

#[test]
fn lines_listen_refuses_an_output_file_someone_shortened() {
    let tmp = tmpdir("log-shortened");
    let dir = tmp.path();
    let out = dir.join("out.csv");
    std::fs::write(&out, "a\n").unwrap();
    std::fs::write(
        dir.join("out.csv.lines-state"),
        "audiowire-lines-state 1\nsession 0000000000000001\nnext 5\nlength 10\n",
    )
    .unwrap();
    let res = run(
        &[
            "lines",
            "listen",
            "--listen",
            "127.0.0.1:0",
            "--append",
            out.to_str().unwrap(),
        ],
        T,
    );
    assert_error_line(
        &res,
        &format!(
            "{}: is 2 bytes, shorter than the 10 bytes audiowire had written: another program changed it; move {} away to start a new stream",
            out.display(),
            dir.join("out.csv.lines-state").display()
        ),
    );
}
