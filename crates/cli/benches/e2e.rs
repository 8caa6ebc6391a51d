//! The end-to-end latency bench under `cargo bench`: runs `audiowire bench` (this package's
//! binary, built by cargo for its benches) with the arguments after `--`, writing to
//! `target/latency/` unless `--out` is given.
//!
//! ```sh
//! cargo bench -p audiowire-cli --bench e2e             # quick: under two minutes
//! cargo bench -p audiowire-cli --bench e2e -- --full   # the whole matrix
//! ```

use std::path::Path;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    // cargo passes `--bench` to every bench binary; the rest is the user's.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audiowire"));
    cmd.arg("bench").args(&args);
    if !args.iter().any(|a| a == "--out" || a.starts_with("--out=")) {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/latency");
        cmd.arg("--out").arg(target);
    }
    match cmd.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("e2e bench: cannot run audiowire: {e}");
            ExitCode::FAILURE
        }
    }
}
