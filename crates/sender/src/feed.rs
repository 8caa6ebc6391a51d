//! What the sender sends: the stream's description ([`describe`]) and its frames, from a file
//! ([`FileFrames`]) or from the live broadcast ([`crate::broadcast`]), one `Audio` payload at a
//! time, in the stream's codec.
//!
//! A file at the stream's rate in PCM goes out as read (the bit-exact path). Otherwise samples go
//! through the resampler (to `--rate`, or to Opus's 48 kHz) and the encoder: PCM in the source's
//! format, or Opus, whose encoder takes the in-band FEC setting and a packet-loss hint that the
//! UDP server keeps current from the players' reports. An Opus stream is whole frames of exactly
//! `samples_per_frame`; at the end of a file the encoder's look-ahead (`pre_skip`) is flushed
//! with silence, so the player, which drops the first `pre_skip` samples, gets all of it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use audiowire_protocol::{Codec, SampleFormat, StreamInfo};
use tracing::warn;

use crate::error::{Error, Result};
use crate::input::{self, Source};
use crate::resample::Resampler;
use crate::server::{ServerConfig, samples_per_frame};

/// The codec `send` encodes with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CodecConfig {
    /// Uncompressed PCM at the source's resolution (the default).
    #[default]
    Pcm,
    /// Opus at 48 kHz.
    Opus(OpusSettings),
}

/// Opus encoder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpusSettings {
    /// Target bitrate in bits per second (6 000 to 510 000); `None`: 64 kbit/s per channel.
    pub bitrate: Option<u32>,
    /// Encoder complexity, 0 (fastest) to 10 (best).
    pub complexity: u8,
    /// Discontinuous transmission: near-empty frames during silence.
    pub dtx: bool,
    /// In-band forward error correction on UDP, driven by the loss the players report.
    pub fec: bool,
}

impl Default for OpusSettings {
    fn default() -> Self {
        Self {
            bitrate: None,
            complexity: 10,
            dtx: false,
            fec: true,
        }
    }
}

impl OpusSettings {
    /// The bitrate for `channels` channels.
    pub fn bitrate_for(&self, channels: u16) -> u32 {
        self.bitrate.unwrap_or(64_000 * u32::from(channels))
    }
}

/// What the progress line shows: players streaming now, and the furthest position reached.
#[derive(Debug, Default)]
pub struct Progress {
    /// Players being served now.
    pub players: AtomicU64,
    /// The furthest position any player (or the broadcast) reached, in stream sample frames.
    pub position: AtomicU64,
}

impl Progress {
    /// `12.3 s / 60.0 s · 2 players` for a stream described by `info`.
    pub fn line(&self, info: &StreamInfo) -> String {
        let rate = f64::from(info.sample_rate.max(1));
        let at = self.position.load(Ordering::Relaxed) as f64 / rate;
        let players = self.players.load(Ordering::Relaxed);
        let of = info
            .total_frames
            .map_or_else(String::new, |t| format!(" / {:.1} s", t as f64 / rate));
        format!(
            "{at:.1} s{of} · {players} player{}",
            if players == 1 { "" } else { "s" }
        )
    }
}

/// How one player's frames are made: Opus FEC and its loss hint (UDP), the payload limit, and
/// the progress to report to.
#[derive(Debug, Clone)]
pub struct PlayerFeed {
    /// Opus in-band FEC (UDP only).
    pub fec: bool,
    /// The expected loss in percent the FEC is set for.
    pub loss_hint: Arc<AtomicU32>,
    /// The largest payload (UDP datagrams).
    pub max_payload: Option<usize>,
    /// Where progress is counted.
    pub progress: Arc<Progress>,
}

impl PlayerFeed {
    /// For TCP: no FEC, no limit.
    pub fn tcp(progress: Arc<Progress>) -> Self {
        Self {
            fec: false,
            loss_hint: Arc::default(),
            max_payload: None,
            progress,
        }
    }
}

/// Largest Opus packet the encoder may write when nothing smaller is asked for (libopus's
/// recommendation).
const MAX_OPUS_PACKET: usize = 4000;

/// Frame durations Opus accepts, in ms.
const OPUS_FRAME_MS: [f64; 6] = [2.5, 5.0, 10.0, 20.0, 40.0, 60.0];

fn opus_err(what: &str, e: opus::Error) -> Error {
    Error::Codec(format!("the Opus encoder refused {what}: {e}"))
}

/// The stream a source of `rate` Hz and `channels` channels makes under `config`: its
/// `StreamInfo` (without the length), and the rate samples are resampled to. `max_payload`
/// bounds an `Audio` payload (UDP datagrams); `format` is the source's wire format.
pub(crate) fn plan(
    config: &ServerConfig,
    rate: u32,
    channels: u16,
    format: SampleFormat,
    max_payload: Option<usize>,
    what: &str,
) -> Result<StreamInfo> {
    match config.codec {
        CodecConfig::Pcm => {
            let rate = config.rate.unwrap_or(rate);
            let mut info = StreamInfo {
                sample_rate: rate,
                channels,
                format,
                codec: Codec::Pcm,
                samples_per_frame: 1,
                total_frames: None,
                live: false,
            };
            info.samples_per_frame =
                samples_per_frame(config.frame_ms, info.sample_rate, info.bytes_per_frame())?;
            if let Some(max) = max_payload {
                let fit = max / info.bytes_per_frame();
                if fit == 0 {
                    return Err(Error::FrameSize {
                        frame_ms: config.frame_ms,
                        reason: format!(
                            "too large: one sample frame ({} bytes) does not fit a {max}-byte datagram payload",
                            info.bytes_per_frame()
                        ),
                    });
                }
                info.samples_per_frame = info.samples_per_frame.min(fit as u32);
            }
            Ok(info)
        }
        CodecConfig::Opus(opus) => {
            if channels > 2 {
                return Err(Error::Codec(format!(
                    "Opus carries mono or stereo, and {what} has {channels} channels; send it as PCM (--codec pcm)"
                )));
            }
            if let Some(r) = config.rate.filter(|&r| r != audiowire_protocol::opus::RATE) {
                return Err(Error::Codec(format!(
                    "Opus runs at 48000 Hz, not --rate {r}; leave --rate out (the sender resamples to 48 kHz) or send PCM"
                )));
            }
            if !OPUS_FRAME_MS.contains(&config.frame_ms) {
                return Err(Error::Codec(format!(
                    "Opus frames last 2.5, 5, 10, 20, 40 or 60 ms, not {} ms; choose one with --frame-ms",
                    config.frame_ms
                )));
            }
            let bitrate = opus.bitrate_for(channels);
            if !(6_000..=510_000).contains(&bitrate) {
                return Err(Error::Codec(format!(
                    "an Opus bitrate of {bitrate} bit/s is out of range; choose --bitrate between 6k and 510k"
                )));
            }
            if opus.complexity > 10 {
                return Err(Error::Codec(format!(
                    "Opus complexity goes from 0 to 10, not {}",
                    opus.complexity
                )));
            }
            let spf = (config.frame_ms * 48.0).round() as u32;
            if let Some(max) = max_payload {
                let typical = f64::from(bitrate) * config.frame_ms / 8000.0;
                if typical > max as f64 {
                    warn!(
                        "{} kbit/s in {} ms frames makes ~{typical:.0}-byte packets, more than a {max}-byte datagram payload: Opus will lower the bitrate to fit (choose a shorter --frame-ms or a larger --max-datagram)",
                        bitrate / 1000,
                        config.frame_ms
                    );
                }
            }
            let probe = new_opus(channels, &opus, false, spf)?;
            let pre_skip = u16::try_from(probe.lookahead).unwrap_or(0);
            Ok(StreamInfo {
                sample_rate: audiowire_protocol::opus::RATE,
                channels,
                format: SampleFormat::F32,
                codec: Codec::Opus { pre_skip },
                samples_per_frame: spf,
                total_frames: None,
                live: false,
            })
        }
    }
}

/// Opens the file and describes the stream it makes, for frames of at most `max_payload` bytes
/// (`None`: no limit but the protocol's).
pub(crate) fn describe(config: &ServerConfig, max_payload: Option<usize>) -> Result<StreamInfo> {
    let source = input::open(&config.path)?;
    let what = config.path.display().to_string();
    let mut info = plan(
        config,
        source.sample_rate(),
        source.channels(),
        source.format(),
        max_payload,
        &what,
    )?;
    let pass = one_pass(&info, source.sample_rate(), source.total_frames());
    info.total_frames = if config.looping || config.broadcast {
        None
    } else {
        pass.map(|n| match info.codec {
            Codec::Opus { pre_skip } => {
                let spf = u64::from(info.samples_per_frame);
                (n + u64::from(pre_skip)).div_ceil(spf) * spf
            }
            _ => n,
        })
    };
    info.validate().map_err(|e| Error::Unsupported {
        path: config.path.clone(),
        reason: e.to_string(),
    })?;
    Ok(info)
}

/// Frames of the stream one pass of a source of `total` frames at `rate` makes (before Opus's
/// flush).
fn one_pass(info: &StreamInfo, rate: u32, total: Option<u64>) -> Option<u64> {
    total.map(|n| {
        if rate == info.sample_rate {
            n
        } else {
            (u128::from(n) * u128::from(info.sample_rate)).div_ceil(u128::from(rate)) as u64
        }
    })
}

/// Sample frames in one frame of `config.frame_ms` for the stream `info` describes: at least
/// `info.samples_per_frame`, and more when PCM frames were made shorter to fit a datagram.
fn pacing_group(config: &ServerConfig, info: &StreamInfo) -> u32 {
    let asked = if info.codec == Codec::Pcm {
        samples_per_frame(config.frame_ms, info.sample_rate, info.bytes_per_frame()).ok()
    } else {
        None
    };
    asked
        .unwrap_or(info.samples_per_frame)
        .max(info.samples_per_frame)
}

/// An Opus encoder and what it was set to.
struct OpusEncoder {
    enc: opus::Encoder,
    fec: bool,
    applied_loss: u32,
    lookahead: i32,
}

/// The Opus application. The restricted low-delay mode (CELT only: 2.5 ms of look-ahead instead
/// of 6.5 ms) wherever the encoder would be CELT-only anyway:
/// - frames under 10 ms (SILK, and with it in-band FEC, needs 10 ms);
/// - without in-band FEC (TCP, RFCOMM, `--no-fec`) at 48 kbit/s per channel or more, where
///   libopus's audio mode codes music and speech alike as CELT (measured on the test clips).
///
/// With FEC the audio mode's hybrid frames carry the redundant copy, so it stays.
fn opus_application(
    samples_per_frame: u32,
    fec: bool,
    bitrate_per_channel: u32,
) -> opus::Application {
    if samples_per_frame < 480 || (!fec && bitrate_per_channel >= 48_000) {
        opus::Application::LowDelay
    } else {
        opus::Application::Audio
    }
}

fn new_opus(
    channels: u16,
    s: &OpusSettings,
    fec: bool,
    samples_per_frame: u32,
) -> Result<OpusEncoder> {
    let ch = if channels == 1 {
        opus::Channels::Mono
    } else {
        opus::Channels::Stereo
    };
    let mut enc = opus::Encoder::new(
        audiowire_protocol::opus::RATE,
        ch,
        opus_application(
            samples_per_frame,
            fec,
            s.bitrate_for(channels) / u32::from(channels.max(1)),
        ),
    )
    .map_err(|e| opus_err("to start", e))?;
    enc.set_bitrate(opus::Bitrate::Bits(s.bitrate_for(channels) as i32))
        .map_err(|e| opus_err("the bitrate", e))?;
    enc.set_complexity(i32::from(s.complexity))
        .map_err(|e| opus_err("the complexity", e))?;
    enc.set_dtx(s.dtx).map_err(|e| opus_err("DTX", e))?;
    enc.set_inband_fec(fec).map_err(|e| opus_err("FEC", e))?;
    enc.set_packet_loss_perc(0)
        .map_err(|e| opus_err("the loss hint", e))?;
    let lookahead = enc
        .get_lookahead()
        .map_err(|e| opus_err("its look-ahead", e))?;
    Ok(OpusEncoder {
        enc,
        fec,
        applied_loss: 0,
        lookahead,
    })
}

/// Turns stream-rate float samples into `Audio` payloads.
pub(crate) enum Encoder {
    /// PCM in this format.
    Pcm(SampleFormat),
    /// Opus.
    Opus(Box<OpusEncoderState>),
}

/// An Opus encoder with its loss hint and packet limit.
pub(crate) struct OpusEncoderState {
    opus: OpusEncoder,
    loss_hint: Arc<AtomicU32>,
    max_packet: usize,
    packet: Vec<u8>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encoder::Pcm(fmt) => write!(f, "Encoder::Pcm({fmt})"),
            Encoder::Opus(s) => write!(
                f,
                "Encoder::Opus(fec {}, loss hint {} %)",
                s.opus.fec, s.opus.applied_loss
            ),
        }
    }
}

impl Encoder {
    /// The encoder for `info`'s codec. `fec` turns Opus's in-band FEC on (UDP); `loss_hint` is
    /// the expected packet loss in percent, read before every frame; `max_payload` bounds a
    /// packet.
    pub(crate) fn new(
        info: &StreamInfo,
        settings: &CodecConfig,
        fec: bool,
        loss_hint: Arc<AtomicU32>,
        max_payload: Option<usize>,
    ) -> Result<Self> {
        match (info.codec, settings) {
            (Codec::Opus { .. }, CodecConfig::Opus(s)) => {
                let opus = new_opus(info.channels, s, fec && s.fec, info.samples_per_frame)?;
                let max_packet = max_payload.unwrap_or(MAX_OPUS_PACKET).min(MAX_OPUS_PACKET);
                Ok(Encoder::Opus(Box::new(OpusEncoderState {
                    opus,
                    loss_hint,
                    max_packet,
                    packet: vec![0; max_packet],
                })))
            }
            _ => Ok(Encoder::Pcm(info.format)),
        }
    }

    /// Encodes one frame of interleaved floats (Opus: exactly one frame's worth) into `out`.
    pub(crate) fn encode(&mut self, floats: &[f32], out: &mut Vec<u8>) -> Result<()> {
        match self {
            Encoder::Pcm(format) => {
                format.encode_floats(floats, out);
                Ok(())
            }
            Encoder::Opus(s) => {
                if s.opus.fec {
                    let hint = s.loss_hint.load(Ordering::Relaxed).min(100);
                    if hint != s.opus.applied_loss {
                        s.opus
                            .enc
                            .set_packet_loss_perc(hint as i32)
                            .map_err(|e| opus_err("the loss hint", e))?;
                        s.opus.applied_loss = hint;
                    }
                }
                let max = s.max_packet;
                let n = s
                    .opus
                    .enc
                    .encode_float(floats, &mut s.packet[..max])
                    .map_err(|e| opus_err("a frame", e))?;
                out.extend_from_slice(&s.packet[..n]);
                Ok(())
            }
        }
    }

    /// Forgets the encoder's history (after a jump in the input).
    pub(crate) fn reset(&mut self) {
        if let Encoder::Opus(s) = self {
            let _ = s.opus.enc.reset_state();
        }
    }
}

/// Whole frames of a stream, from floats at the stream's rate: keeps the leftover between
/// calls and, for Opus, pads the end with the look-ahead flush and silence.
#[derive(Debug)]
pub(crate) struct Framer {
    info: StreamInfo,
    encoder: Encoder,
    pending: Vec<f32>,
}

impl Framer {
    pub(crate) fn new(info: StreamInfo, encoder: Encoder) -> Self {
        Self {
            info,
            encoder,
            pending: Vec::new(),
        }
    }

    fn samples_per_payload(&self) -> usize {
        self.info.samples_per_frame as usize * usize::from(self.info.channels)
    }

    /// Queues stream-rate samples.
    pub(crate) fn push(&mut self, floats: &[f32]) {
        self.pending.extend_from_slice(floats);
    }

    /// True when a whole frame is queued.
    pub(crate) fn ready(&self) -> bool {
        self.pending.len() >= self.samples_per_payload()
    }

    /// Samples queued, in sample frames.
    pub(crate) fn queued_frames(&self) -> usize {
        self.pending.len() / usize::from(self.info.channels).max(1)
    }

    /// The end of the input: Opus gets its look-ahead flushed and its last frame filled with
    /// silence; PCM's last frame may be short.
    pub(crate) fn finish(&mut self) {
        if let Codec::Opus { pre_skip } = self.info.codec {
            let ch = usize::from(self.info.channels);
            let n = self.pending.len() + usize::from(pre_skip) * ch;
            let whole = n.div_ceil(self.samples_per_payload()) * self.samples_per_payload();
            self.pending.resize(whole, 0.0);
        }
    }

    /// Encodes the next frame into `out` (a whole one, or at the end PCM's short last one).
    /// Returns its sample frames; 0 when nothing is queued.
    pub(crate) fn next(&mut self, out: &mut Vec<u8>) -> Result<u32> {
        let n = self.samples_per_payload().min(self.pending.len());
        if n == 0 {
            return Ok(0);
        }
        self.encoder.encode(&self.pending[..n], out)?;
        self.pending.drain(..n);
        Ok((n / usize::from(self.info.channels)) as u32)
    }

    /// Drops what is queued and the encoder's history.
    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.encoder.reset();
    }
}

/// A file's frames in the stream's codec, at the stream's rate: for one player (from the start,
/// or resuming), or for the broadcast.
#[derive(Debug)]
pub struct FileFrames {
    info: StreamInfo,
    source: Box<dyn Source>,
    looping: bool,
    /// PCM at the source's own rate: bytes straight from the file.
    direct: bool,
    resampler: Option<Resampler>,
    framer: Framer,
    raw: Vec<u8>,
    floats: Vec<f32>,
    resampled: Vec<f32>,
    finished: bool,
    /// Stream frames handed out (from the start of the stream).
    position: u64,
    progress: Arc<Progress>,
    /// Sample frames in one frame of the length asked for (`--frame-ms`): more than a frame
    /// holds when frames were cut to fit a datagram.
    pacing_group: u32,
}

impl Drop for FileFrames {
    fn drop(&mut self) {
        self.progress.players.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FileFrames {
    /// Opens `config.path` for a stream described by `info`, made as `feed` says.
    pub fn open(config: &ServerConfig, info: StreamInfo, feed: &PlayerFeed) -> Result<Self> {
        Self::from_source(input::open(&config.path)?, config, info, feed)
    }

    fn from_source(
        source: Box<dyn Source>,
        config: &ServerConfig,
        info: StreamInfo,
        feed: &PlayerFeed,
    ) -> Result<Self> {
        let direct = info.codec == Codec::Pcm && source.sample_rate() == info.sample_rate;
        let resampler = if source.sample_rate() == info.sample_rate {
            None
        } else {
            Some(Resampler::new(
                source.sample_rate(),
                info.sample_rate,
                info.channels,
            )?)
        };
        let encoder = Encoder::new(
            &info,
            &config.codec,
            feed.fec,
            Arc::clone(&feed.loss_hint),
            feed.max_payload,
        )?;
        feed.progress.players.fetch_add(1, Ordering::Relaxed);
        let pacing_group = pacing_group(config, &info);
        Ok(Self {
            info,
            source,
            looping: config.looping,
            direct,
            resampler,
            framer: Framer::new(info, encoder),
            raw: Vec::new(),
            floats: Vec::new(),
            resampled: Vec::new(),
            finished: false,
            position: 0,
            progress: Arc::clone(&feed.progress),
            pacing_group,
        })
    }

    /// The frames to pace together ([`crate::Pacer::grouped`]): sample frames in one frame of
    /// the length asked for, which is more than a frame holds when PCM frames were cut to fit
    /// a datagram; otherwise one frame's.
    pub fn pacing_group(&self) -> u32 {
        self.pacing_group
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.source.path()
    }

    /// Stream frames one pass of the file makes (0 when the file does not say).
    pub fn total_frames(&self) -> u64 {
        one_pass(
            &self.info,
            self.source.sample_rate(),
            self.source.total_frames(),
        )
        .unwrap_or(0)
    }

    /// Moves to stream frame `frame` (a resuming player): the file from the matching sample,
    /// the resampler and encoder afresh.
    pub fn seek(&mut self, frame: u64) -> Result<()> {
        let rate = u128::from(self.source.sample_rate());
        let src = (u128::from(frame) * rate / u128::from(self.info.sample_rate)) as u64;
        self.source.seek(src)?;
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
        self.framer.reset();
        // A player resuming at the very end (it had every frame and lost only the End) gets
        // nothing more but the End: not even the encoder's flush, which it already played.
        self.finished = !self.looping && self.source.total_frames().is_some_and(|t| src >= t);
        self.position = frame;
        Ok(())
    }

    /// Goes back to the start of the file.
    pub fn rewind(&mut self) -> Result<()> {
        self.seek(0)
    }

    /// Appends the next frame's payload to `out`; returns its sample frames, 0 at the end (a
    /// looping stream goes on seamlessly).
    pub fn read_frame(&mut self, out: &mut Vec<u8>) -> Result<u32> {
        let n = self.read_frame_inner(out)?;
        self.position += u64::from(n);
        self.progress
            .position
            .fetch_max(self.position, Ordering::Relaxed);
        Ok(n)
    }

    fn read_frame_inner(&mut self, out: &mut Vec<u8>) -> Result<u32> {
        if self.direct {
            let n = self.source.read_frames(self.info.samples_per_frame, out)?;
            if n == 0 && self.looping && self.source.total_frames() != Some(0) {
                self.source.rewind()?;
                return self.source.read_frames(self.info.samples_per_frame, out);
            }
            return Ok(n);
        }
        let chunk = self.info.samples_per_frame.max(1024);
        // Bounded: each pass reads a chunk of the file, or ends it.
        for _ in 0..1_000_000 {
            if self.framer.ready() || self.finished {
                break;
            }
            self.raw.clear();
            let n = self.source.read_frames(chunk, &mut self.raw)?;
            if n == 0 {
                if self.looping && self.source.total_frames() != Some(0) {
                    // Seamless: the resampler and encoder go on into the next pass.
                    self.source.rewind()?;
                    continue;
                }
                if let Some(r) = self.resampler.as_mut() {
                    self.resampled.clear();
                    r.flush(&mut self.resampled)?;
                    self.framer.push(&self.resampled);
                }
                self.framer.finish();
                self.finished = true;
                break;
            }
            self.floats.clear();
            self.source
                .format()
                .decode_floats(&self.raw, &mut self.floats);
            match self.resampler.as_mut() {
                Some(r) => {
                    self.resampled.clear();
                    r.process(&self.floats, &mut self.resampled)?;
                    self.framer.push(&self.resampled);
                }
                None => self.framer.push(&self.floats),
            }
        }
        self.framer.next(out)
    }
}

/// One player's frames: its own pass of the file, or its view of the live broadcast.
#[derive(Debug)]
pub enum Frames {
    /// The file from the start (or where a resuming player left off), paced for this player.
    File(Box<FileFrames>),
    /// The live stream, joined where it stands.
    Live(crate::broadcast::Subscription),
}

impl Frames {
    /// The frames for one player of a stream described by `info`: its view of `hub` (from
    /// `preroll` back, numbered from `resume`) when there is a broadcast, else the file opened
    /// afresh, made as `feed` says.
    pub fn open(
        config: &ServerConfig,
        info: StreamInfo,
        hub: Option<&Arc<crate::broadcast::Hub>>,
        preroll: std::time::Duration,
        resume: crate::server::Resume,
        feed: &PlayerFeed,
    ) -> Result<Self> {
        match hub {
            Some(hub) => Ok(Frames::Live(hub.subscribe(preroll, resume))),
            None => Ok(Frames::File(Box::new(FileFrames::open(
                config, info, feed,
            )?))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tempfile::TempDir;

    /// Frames under 10 ms take the restricted low-delay mode: 2.5 ms of look-ahead (the
    /// pre-skip a player drops) instead of 6.5 ms; 10 ms and longer keep SILK (and FEC).
    #[test]
    fn short_opus_frames_have_the_short_look_ahead() {
        let s = OpusSettings::default();
        for (spf, lookahead) in [(120, 120), (240, 120), (480, 312), (960, 312)] {
            assert_eq!(
                new_opus(2, &s, true, spf).unwrap().lookahead,
                lookahead,
                "{spf}"
            );
        }
    }

    #[test]
    fn without_fec_at_a_celt_bitrate_every_frame_has_the_short_look_ahead() {
        // The default 64 kbit/s per channel without FEC (TCP): low delay at every size.
        let s = OpusSettings::default();
        for spf in [120, 240, 480, 960, 1920] {
            assert_eq!(new_opus(2, &s, false, spf).unwrap().lookahead, 120, "{spf}");
        }
        // A speech bitrate keeps the audio mode (SILK's better there) and its look-ahead.
        let low = OpusSettings {
            bitrate: Some(32_000),
            ..OpusSettings::default()
        };
        assert_eq!(new_opus(2, &low, false, 960).unwrap().lookahead, 312);
    }

    /// A WAV named `name` in a fresh folder, removed when the returned guard drops.
    fn temp_wav(name: &str, rate: u32, channels: u16, frames: usize) -> (TempDir, PathBuf) {
        let (dir, path) = crate::testwav::scratch("audiowire-feed-", name);
        let samples = (0..frames * usize::from(channels))
            .map(|i| ((i as f32 * 0.05).sin() * 10_000.0) as i16);
        crate::testwav::write_s16(&path, rate, channels, samples);
        (dir, path)
    }

    fn frames_of(config: &ServerConfig) -> (StreamInfo, Vec<u32>) {
        let info = describe(config, None).unwrap();
        let mut f = FileFrames::open(config, info, &PlayerFeed::tcp(Arc::default())).unwrap();
        let mut sizes = Vec::new();
        let mut out = Vec::new();
        for _ in 0..10_000 {
            out.clear();
            let n = f.read_frame(&mut out).unwrap();
            if n == 0 {
                break;
            }
            assert_eq!(info.frames_in(&out), Some(u64::from(n)));
            sizes.push(n);
        }
        (info, sizes)
    }

    #[test]
    fn opus_frames_are_whole_and_cover_the_file_and_its_look_ahead() {
        let (_dir, path) = temp_wav("a.wav", 22_050, 1, 22_050);
        let mut config = ServerConfig::new(&path);
        config.codec = CodecConfig::Opus(OpusSettings::default());
        config.frame_ms = 20.0;
        let (info, sizes) = frames_of(&config);
        let Codec::Opus { pre_skip } = info.codec else {
            panic!("{info:?}")
        };
        assert_eq!(info.sample_rate, 48_000);
        assert!(sizes.iter().all(|&n| n == 960), "{sizes:?}");
        let total: u64 = sizes.iter().map(|&n| u64::from(n)).sum();
        assert_eq!(Some(total), info.total_frames);
        assert_eq!(total, (48_000 + u64::from(pre_skip)).div_ceil(960) * 960);
    }

    #[test]
    fn pcm_resampled_to_a_rate_keeps_the_duration() {
        let (_dir, path) = temp_wav("b.wav", 44_100, 2, 44_100);
        let mut config = ServerConfig::new(&path);
        config.rate = Some(48_000);
        let (info, sizes) = frames_of(&config);
        assert_eq!(info.sample_rate, 48_000);
        assert_eq!(info.format, SampleFormat::S16);
        let total: u64 = sizes.iter().map(|&n| u64::from(n)).sum();
        assert_eq!(total, 48_000);
        assert_eq!(info.total_frames, Some(48_000));
    }

    #[test]
    fn resuming_an_opus_stream_at_its_end_sends_nothing_more() {
        let (_dir, path) = temp_wav("resume-end.wav", 22_050, 1, 22_050);
        let mut config = ServerConfig::new(&path);
        config.codec = CodecConfig::Opus(OpusSettings::default());
        config.frame_ms = 20.0;
        let (info, sizes) = frames_of(&config);
        let end: u64 = sizes.iter().map(|&n| u64::from(n)).sum();
        let mut f = FileFrames::open(&config, info, &PlayerFeed::tcp(Arc::default())).unwrap();
        let mut out = Vec::new();
        // The player had every frame (the flush included) and lost only the End.
        f.seek(end).unwrap();
        assert_eq!(f.read_frame(&mut out).unwrap(), 0, "no frame after the end");
        // Resuming mid-stream, the rest comes, the flush with it.
        f.seek(end / 2).unwrap();
        let mut rest = 0u64;
        for _ in 0..1000 {
            out.clear();
            match f.read_frame(&mut out).unwrap() {
                0 => break,
                n => rest += u64::from(n),
            }
        }
        assert!(rest + 960 >= end / 2, "{rest} of {end}");
    }

    #[test]
    fn opus_refuses_what_it_cannot_carry() {
        let (_dir, path) = temp_wav("c.wav", 48_000, 3, 480);
        let mut config = ServerConfig::new(&path);
        config.codec = CodecConfig::Opus(OpusSettings::default());
        let err = describe(&config, None).unwrap_err().to_string();
        assert!(err.contains("mono or stereo"), "{err}");
        let (_dir, path) = temp_wav("d.wav", 48_000, 2, 480);
        let mut config = ServerConfig::new(&path);
        config.codec = CodecConfig::Opus(OpusSettings::default());
        config.frame_ms = 7.0;
        let err = describe(&config, None).unwrap_err().to_string();
        assert!(err.contains("2.5, 5, 10, 20, 40 or 60 ms"), "{err}");
    }
}
