//! Helpers of `audiowire send`: the codec options and the progress line.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use audiowire_protocol::{Codec, StreamInfo};
use audiowire_sender::feed::Progress;
use audiowire_sender::{CodecConfig, OpusSettings};

/// The codecs, as the command line names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodecArg {
    /// Uncompressed, bit-exact (the default).
    Pcm,
    /// Opus at 48 kHz: a fraction of the bandwidth, FEC and PLC on UDP.
    Opus,
}

/// Parses a bitrate: `64k`, `64kbit`, `128000`, `1.5M` (bits per second).
pub fn parse_bitrate(s: &str) -> Result<u32, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("bit/s")
        .or_else(|| t.strip_suffix("bps"))
        .or_else(|| t.strip_suffix("bit"))
        .unwrap_or(&t);
    let (num, scale) = if let Some(n) = t.strip_suffix('k') {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 1e6)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (6_000.0..=510_000.0).contains(&(v * scale)) => {
            Ok((v * scale).round() as u32)
        }
        _ => Err(format!(
            "\"{s}\" is not an Opus bitrate from 6k to 510k (write 64k or 64000)"
        )),
    }
}

/// The codec configuration the options ask for.
pub fn codec_config(
    codec: CodecArg,
    bitrate: Option<u32>,
    complexity: u8,
    dtx: bool,
    no_fec: bool,
) -> CodecConfig {
    match codec {
        CodecArg::Pcm => CodecConfig::Pcm,
        CodecArg::Opus => CodecConfig::Opus(OpusSettings {
            bitrate,
            complexity,
            dtx,
            fec: !no_fec,
        }),
    }
}

/// ` as Opus at 64 kbit/s` (nothing for PCM), for the `serving ...` line.
pub fn codec_note(info: &StreamInfo, codec: &CodecConfig) -> String {
    match (info.codec, codec) {
        (Codec::Opus { .. }, CodecConfig::Opus(s)) => {
            format!(" as Opus at {} kbit/s", s.bitrate_for(info.channels) / 1000)
        }
        _ => String::new(),
    }
}

/// Rewrites a progress line on stderr twice a second (position / length, players) until
/// dropped; does nothing when stderr is not a terminal.
#[derive(Debug)]
pub struct ProgressLine {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ProgressLine {
    /// Starts the line for a stream described by `info`.
    pub fn start(progress: Arc<Progress>, info: StreamInfo) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut ticks = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if ticks % 25 == 0 {
                        let mut err = std::io::stderr().lock();
                        let _ = write!(err, "\r\x1b[Ksending {}", progress.line(&info));
                        let _ = err.flush();
                    }
                    ticks = ticks.wrapping_add(1);
                    thread::sleep(Duration::from_millis(20));
                }
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "\r\x1b[Ksent {}", progress.line(&info));
            })
        });
        Self { stop, thread }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_parse_in_bits_per_second() {
        assert_eq!(parse_bitrate("64k"), Ok(64_000));
        assert_eq!(parse_bitrate("128kbit"), Ok(128_000));
        assert_eq!(parse_bitrate("96000"), Ok(96_000));
        assert_eq!(parse_bitrate("0.5M"), Ok(500_000));
        assert!(parse_bitrate("1M").is_err());
        assert!(parse_bitrate("fast").is_err());
    }
}
