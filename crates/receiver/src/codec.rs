//! The codec layer of the player, sans-IO: turns `Audio` payloads into PCM in the stream's sample
//! format, and makes up for a missing frame, the way its codec does best.
//!
//! - [`PcmDecoder`]: payloads pass through untouched (bit-exact); a missing frame is concealed by
//!   a raised-cosine cross-fade from the previous frame played backwards (which starts where the
//!   previous frame ended) to the next frame played backwards (which ends where the next frame
//!   starts), or to silence when there is no next frame. No click, ever.
//! - [`OpusDecoder`]: libopus decodes each packet; a missing frame is *recovered* from the next
//!   packet's in-band FEC (LBRR) data when that packet is already here and carries it, and
//!   otherwise concealed by the codec's own packet-loss concealment (PLC). The first `pre_skip`
//!   decoded samples (the encoder's look-ahead) are dropped, so the output lines up with the
//!   source. Output is the stream's sample format (the sender announces f32).
//!
//! The jitter buffer calls a [`Decoder`] in stream order, exactly once per sequence number (and
//! once per frame of stall fill), which is what a stateful codec such as Opus needs.

use audiowire_protocol::{Codec, StreamInfo};

use crate::error::{Error, Result};

/// What a [`Decoder`] made for a missing frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Concealment {
    /// PCM in the stream's sample format.
    pub payload: Vec<u8>,
    /// True when the frame was rebuilt from redundant data (Opus in-band FEC) rather than
    /// guessed.
    pub recovered: bool,
}

/// Turns payloads into PCM, and conceals or recovers missing frames.
pub trait Decoder: std::fmt::Debug + Send {
    /// Decodes one received payload (whose frame is next in the stream) into PCM bytes in the
    /// stream's sample format. A payload the codec cannot decode is concealed instead.
    fn decode(&mut self, payload: Vec<u8>) -> Vec<u8>;

    /// `frames` sample frames in place of a missing frame. `next` is the payload of the frame
    /// that follows it, when that is already here and adjacent.
    fn conceal(&mut self, frames: usize, next: Option<&[u8]>) -> Concealment;

    /// `frames` sample frames to play while the buffer is empty (a stall): the stream does not
    /// move on, so the codec's state must not either; the next frame decoded is the next one
    /// of the stream.
    fn fill(&mut self, frames: usize) -> Vec<u8>;

    /// Whether a lost frame can be rebuilt from the frame after it (Opus's in-band FEC, when
    /// the stream carries it), so that, with [`crate::jitter::TargetPolicy::fec_hold`], having
    /// that frame buffered when the loss is found is worth a frame of latency.
    fn recovers_from_next(&self) -> bool {
        false
    }
}

/// The decoder for a stream's codec.
pub fn decoder_for(info: &StreamInfo) -> Result<Box<dyn Decoder>> {
    match info.codec {
        Codec::Opus { .. } => Ok(Box::new(OpusDecoder::new(info)?)),
        _ => Ok(Box::new(PcmDecoder::new(info))),
    }
}

/// PCM: received payloads pass through; losses are cross-faded.
#[derive(Debug)]
pub struct PcmDecoder {
    info: StreamInfo,
    /// The last frame handed out, as floats, for concealment.
    last: Vec<f32>,
    scratch: Vec<f32>,
}

impl PcmDecoder {
    /// A decoder for a PCM stream described by `info`.
    pub fn new(info: &StreamInfo) -> Self {
        Self {
            info: *info,
            last: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl Decoder for PcmDecoder {
    fn decode(&mut self, payload: Vec<u8>) -> Vec<u8> {
        self.last.clear();
        self.info.format.decode_floats(&payload, &mut self.last);
        payload
    }

    /// From the last frame played backwards to `next` played backwards (or to silence), with a
    /// raised-cosine cross-fade. Afterwards the last frame is the concealment itself faded out, so
    /// repeated concealment decays to silence.
    fn conceal(&mut self, frames: usize, next: Option<&[u8]>) -> Concealment {
        let ch = usize::from(self.info.channels);
        let n = frames * ch;
        self.scratch.clear();
        if let Some(bytes) = next {
            self.info.format.decode_floats(bytes, &mut self.scratch);
        }
        let last_frames = self.last.len() / ch;
        let next_frames = self.scratch.len() / ch;
        let mut out = vec![0.0f32; n];
        for i in 0..frames {
            // Fade weight of the "next" side: 0 at the start, 1 at the end.
            let w = if frames > 1 {
                0.5 - 0.5 * (std::f32::consts::PI * i as f32 / (frames - 1) as f32).cos()
            } else {
                1.0
            };
            for c in 0..ch {
                let prev = if last_frames > 0 {
                    // Backwards from the last frame's end; mirror again past its start.
                    let k = mirror(i, last_frames);
                    self.last[(last_frames - 1 - k) * ch + c]
                } else {
                    0.0
                };
                let nxt = if next_frames > 0 {
                    // Ends (at i = frames - 1) on the next frame's first sample.
                    let k = mirror(frames - 1 - i, next_frames);
                    self.scratch[k * ch + c]
                } else {
                    0.0
                };
                out[i * ch + c] = (1.0 - w) * prev + w * nxt;
            }
        }
        // What follows continues from here: after a cross-fade into the next frame, that frame
        // replaces this anyway; after a fade to silence, what follows is silence.
        self.last.clear();
        if next_frames > 0 {
            self.last.extend_from_slice(&out);
        } else {
            self.last.resize(n, 0.0);
        }
        let mut payload = Vec::with_capacity(n * self.info.format.bytes());
        self.info.format.encode_floats(&out, &mut payload);
        Concealment {
            payload,
            recovered: false,
        }
    }

    fn fill(&mut self, frames: usize) -> Vec<u8> {
        self.conceal(frames, None).payload
    }
}

/// Index `i` of a signal of `len` samples read back and forth (0, 1, …, len−1, len−1, …, 0, 0, …).
pub(crate) fn mirror(i: usize, len: usize) -> usize {
    let period = 2 * len;
    let r = i % period;
    if r < len { r } else { period - 1 - r }
}

/// Opus through libopus: decode, FEC recovery, PLC, pre-skip.
pub struct OpusDecoder {
    info: StreamInfo,
    decoder: opus::Decoder,
    /// Stall fill from the decoded output, leaving the Opus decoder's state alone.
    filler: PcmDecoder,
    channels: usize,
    /// Decoded samples still to drop at the start (the encoder's look-ahead).
    skip: usize,
    floats: Vec<f32>,
    /// Packets decoded since the last that carried FEC (LBRR) data, saturating.
    since_fec: u32,
}

/// Packets without FEC data after which a stream is taken to carry none (a TCP stream never
/// does; a UDP stream's encoder may leave it out of a packet or two, in silence say).
const FEC_GONE_AFTER: u32 = 100;

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("channels", &self.channels)
            .field("skip", &self.skip)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A decoder for the Opus stream `info` describes (48 kHz, 1 or 2 channels).
    pub fn new(info: &StreamInfo) -> Result<Self> {
        let Codec::Opus { pre_skip } = info.codec else {
            return Err(Error::Codec(format!("not an Opus stream: {}", info.codec)));
        };
        let channels = match info.channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => {
                return Err(Error::Codec(format!(
                    "Opus carries 1 or 2 channels, the stream announces {n}"
                )));
            }
        };
        let decoder = opus::Decoder::new(info.sample_rate, channels)
            .map_err(|e| Error::Codec(format!("cannot start the Opus decoder: {e}")))?;
        let decoded = StreamInfo {
            codec: Codec::Pcm,
            ..*info
        };
        Ok(Self {
            info: *info,
            decoder,
            filler: PcmDecoder::new(&decoded),
            channels: usize::from(info.channels),
            skip: usize::from(pre_skip),
            floats: Vec::new(),
            since_fec: FEC_GONE_AFTER,
        })
    }

    /// Decodes `packet` (empty: PLC; `fec`: the LBRR data of the packet after a lost one) into
    /// exactly `frames` sample frames (silence where the codec gives fewer), then drops what is
    /// left of the pre-skip and encodes the rest in the stream's format.
    fn run(&mut self, packet: &[u8], frames: usize, fec: bool) -> Vec<u8> {
        // Opus decodes in multiples of 2.5 ms: round up, then cut to `frames`.
        let quantum = 120;
        let size = frames.div_ceil(quantum).max(1) * quantum;
        self.floats.clear();
        self.floats.resize(size * self.channels, 0.0);
        if let Err(e) = self.decoder.decode_float(packet, &mut self.floats, fec) {
            tracing::debug!("Opus could not decode a packet ({e}); concealing it");
            // Conceal instead: the decoder state moves on as if it was lost. Whatever it does
            // not fill stays silent.
            self.floats.fill(0.0);
            let _ = self.decoder.decode_float(&[], &mut self.floats, false);
        }
        self.floats.truncate(frames * self.channels);
        let skip = (self.skip * self.channels).min(self.floats.len());
        self.skip -= skip / self.channels;
        let mut out = Vec::with_capacity((self.floats.len() - skip) * self.info.format.bytes());
        self.info
            .format
            .encode_floats(&self.floats[skip..], &mut out);
        if !out.is_empty() {
            self.filler.last.clear();
            self.filler.last.extend_from_slice(&self.floats[skip..]);
        }
        out
    }
}

impl Decoder for OpusDecoder {
    fn recovers_from_next(&self) -> bool {
        self.since_fec < FEC_GONE_AFTER
    }

    fn decode(&mut self, payload: Vec<u8>) -> Vec<u8> {
        self.since_fec = if audiowire_protocol::opus::has_lbrr(&payload) {
            0
        } else {
            self.since_fec.saturating_add(1)
        };
        let frames = audiowire_protocol::opus::packet_samples(&payload)
            .map_or(self.info.samples_per_frame as usize, |n| n as usize);
        self.run(&payload, frames, false)
    }

    fn conceal(&mut self, frames: usize, next: Option<&[u8]>) -> Concealment {
        match next {
            Some(next) if audiowire_protocol::opus::has_lbrr(next) => Concealment {
                payload: self.run(next, frames, true),
                recovered: true,
            },
            _ => Concealment {
                payload: self.run(&[], frames, false),
                recovered: false,
            },
        }
    }

    /// The last decoded audio played backwards and faded out, as PCM's stall fill.
    fn fill(&mut self, frames: usize) -> Vec<u8> {
        self.filler.fill(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiowire_protocol::SampleFormat;

    fn opus_info(channels: u16, spf: u32, pre_skip: u16) -> StreamInfo {
        StreamInfo {
            sample_rate: 48_000,
            channels,
            format: SampleFormat::F32,
            codec: Codec::Opus { pre_skip },
            samples_per_frame: spf,
            total_frames: None,
            live: false,
        }
    }

    /// `n` frames of a 440 Hz sine, encoded by libopus as speech at 32 kbit/s with in-band FEC
    /// for 20 % loss.
    fn packets(n: usize, fec: bool) -> (Vec<Vec<u8>>, u16) {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
        enc.set_inband_fec(fec).unwrap();
        enc.set_packet_loss_perc(20).unwrap();
        let pre_skip = enc.get_lookahead().unwrap() as u16;
        let mut out = Vec::new();
        for k in 0..n {
            let pcm: Vec<f32> = (0..960)
                .map(|i| {
                    let t = (k * 960 + i) as f32 / 48_000.0;
                    0.5 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                })
                .collect();
            out.push(enc.encode_vec_float(&pcm, 4000).unwrap());
        }
        (out, pre_skip)
    }

    fn floats(bytes: &[u8]) -> Vec<f32> {
        let mut v = Vec::new();
        SampleFormat::F32.decode_floats(bytes, &mut v);
        v
    }

    #[test]
    fn opus_drops_the_pre_skip_once_and_decodes_whole_frames() {
        let (p, pre_skip) = packets(3, false);
        assert!(pre_skip > 0);
        let mut d = OpusDecoder::new(&opus_info(1, 960, pre_skip)).unwrap();
        let a = floats(&d.decode(p[0].clone()));
        let b = floats(&d.decode(p[1].clone()));
        assert_eq!(a.len(), 960 - usize::from(pre_skip));
        assert_eq!(b.len(), 960);
    }

    #[test]
    fn a_lost_opus_frame_is_recovered_from_the_next_packets_fec() {
        let (p, _) = packets(20, true);
        assert!(
            p[5..].iter().all(|x| audiowire_protocol::opus::has_lbrr(x)),
            "speech at 32 kbit/s with FEC for 20 % loss carries LBRR"
        );
        let mut d = OpusDecoder::new(&opus_info(1, 960, 0)).unwrap();
        let mut reference = OpusDecoder::new(&opus_info(1, 960, 0)).unwrap();
        let mut err_fec = 0.0f64;
        let mut err_plc = 0.0f64;
        let mut plc = OpusDecoder::new(&opus_info(1, 960, 0)).unwrap();
        for (k, packet) in p.iter().enumerate() {
            let want = floats(&reference.decode(packet.clone()));
            if k == 10 {
                let c = d.conceal(960, Some(&p[11]));
                assert!(c.recovered);
                let got = floats(&c.payload);
                assert_eq!(got.len(), 960);
                err_fec = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| f64::from(a - b).powi(2))
                    .sum();
                let c = plc.conceal(960, None);
                assert!(!c.recovered);
                err_plc = floats(&c.payload)
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| f64::from(a - b).powi(2))
                    .sum();
            } else {
                let _ = d.decode(packet.clone());
                let _ = plc.decode(packet.clone());
            }
        }
        // The FEC copy is a coarser encoding of the same audio: much closer than a guess.
        assert!(err_fec < err_plc, "FEC {err_fec} vs PLC {err_plc}");
    }

    #[test]
    fn without_fec_data_a_loss_is_concealed_by_plc() {
        let (p, _) = packets(4, false);
        assert!(!audiowire_protocol::opus::has_lbrr(&p[2]));
        let mut d = OpusDecoder::new(&opus_info(1, 960, 0)).unwrap();
        let _ = d.decode(p[0].clone());
        let c = d.conceal(960, Some(&p[2]));
        assert!(!c.recovered);
        assert_eq!(floats(&c.payload).len(), 960);
        // Concealment without a next packet: PLC again, the right length.
        assert_eq!(floats(&d.conceal(960, None).payload).len(), 960);
    }

    #[test]
    fn a_frame_is_worth_waiting_for_only_while_the_stream_carries_fec() {
        let (with, _) = packets(10, true);
        let (without, _) = packets(10 + FEC_GONE_AFTER as usize, false);
        let mut d = OpusDecoder::new(&opus_info(1, 960, 0)).unwrap();
        // Nothing decoded yet, or a stream without FEC (a TCP one): nothing to wait for.
        assert!(!d.recovers_from_next());
        for p in &without[..10] {
            let _ = d.decode(p.clone());
        }
        assert!(!d.recovers_from_next());
        for p in &with {
            let _ = d.decode(p.clone());
        }
        assert!(d.recovers_from_next());
        // A few packets without it (silence, say) do not change that; a long run does.
        for (k, p) in without[10..].iter().enumerate() {
            assert!(d.recovers_from_next(), "after {k} packets without FEC");
            let _ = d.decode(p.clone());
        }
        assert!(!d.recovers_from_next());
    }

    #[test]
    fn stall_fill_leaves_the_opus_decoder_where_it_was() {
        let (p, _) = packets(4, false);
        let mut a = OpusDecoder::new(&opus_info(1, 960, 0)).unwrap();
        let mut b = OpusDecoder::new(&opus_info(1, 960, 0)).unwrap();
        let _ = a.decode(p[0].clone());
        let _ = b.decode(p[0].clone());
        let fill = floats(&a.fill(960));
        assert_eq!(fill.len(), 960);
        assert!(
            fill.iter().any(|&x| x != 0.0),
            "it continues from the last audio"
        );
        // After the stall, the next packet decodes exactly as without it.
        assert_eq!(a.decode(p[1].clone()), b.decode(p[1].clone()));
    }

    #[test]
    fn the_toc_parser_agrees_with_libopus() {
        let (p, _) = packets(3, true);
        let d = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        for packet in &p {
            assert_eq!(
                audiowire_protocol::opus::packet_samples(packet),
                Some(d.get_nb_samples(packet).unwrap() as u32)
            );
        }
    }
}
