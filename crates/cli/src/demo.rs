//! `audiowire demo`: the whole path on one machine. A sender serves a clip bundled into the
//! binary on loopback TCP; a player in the same process plays it on the default device, or, where
//! no sound device works, records it to a WAV file and says so in one line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use anyhow::{Context, Result};
use audiowire_receiver::{Output, PlayerConfig};
use audiowire_sender::{Server, ServerConfig};

/// The bundled clip: speech from `test-audio/` (see its README).
const CLIP: &[u8] = include_bytes!("../../../test-audio/speech-22k-s16-mono.wav");

pub fn run(out: Option<PathBuf>, shutdown: &Arc<AtomicBool>) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("audiowire-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let clip = dir.join("speech.wav");
    let result = stream(&dir, &clip, out, shutdown);
    // The clip is scratch; the folder goes too unless the recording was written there (the
    // user was told its path), which keeps it from being empty.
    let _ = std::fs::remove_file(&clip);
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Writes the clip to `clip`, serves it and plays it (or records it, by default into `dir`).
fn stream(dir: &Path, clip: &Path, out: Option<PathBuf>, shutdown: &Arc<AtomicBool>) -> Result<()> {
    std::fs::write(clip, CLIP).with_context(|| format!("cannot write {}", clip.display()))?;

    let server = Server::bind("127.0.0.1:0", ServerConfig::new(clip))?;
    let addr = server.local_addr().to_string();
    let stop_server = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&stop_server);
    let sender = thread::Builder::new()
        .name("demo sender".into())
        .spawn(move || server.run(&stop))
        .context("cannot start the demo sender")?;
    tracing::info!("demo: streaming a bundled speech clip over TCP via {addr}");

    let mut config = PlayerConfig::new(addr);
    let result = match audiowire_receiver::play(&config, shutdown) {
        Err(audiowire_receiver::Error::Device(why)) => {
            let path = out.unwrap_or_else(|| dir.join("demo-received.wav"));
            println!(
                "no sound device works here ({why}); writing the received audio to {} instead",
                path.display()
            );
            config.output = Output::Null;
            config.record = Some(path);
            audiowire_receiver::play(&config, shutdown)
        }
        other => other,
    };
    stop_server.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let summary = result?;
    println!("{summary}");
    Ok(())
}
