//! Messages in a versioned envelope: `[version u8][type u8][body]`, all integers big-endian.
//!
//! The envelope is the payload of one frame (see [`crate::frame`]). Decoding never panics: unknown
//! versions and types, short bodies, trailing bytes, bad UTF-8 and out-of-range values are typed
//! [`Error`]s. `docs/protocol.md` specifies every byte.

use crate::error::{Error, Result};
use crate::pcm::SampleFormat;

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// The protocol version a `Hello` announces.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes before an `Audio` message's samples: envelope (2) + sequence, position, timestamp (24).
pub const AUDIO_HEADER_LEN: usize = 2 + 24;

/// Highest sample rate a `StreamInfo` may announce, in Hz.
pub const MAX_SAMPLE_RATE: u32 = 768_000;
/// Most channels a `StreamInfo` may announce.
pub const MAX_CHANNELS: u16 = 64;
/// Most sample frames one `Audio` message may carry.
pub const MAX_SAMPLES_PER_FRAME: u32 = 65_536;

/// Type tags.
mod tag {
    pub const HELLO: u8 = 0x01;
    pub const STREAM_INFO: u8 = 0x02;
    pub const AUDIO: u8 = 0x03;
    pub const END: u8 = 0x04;
    pub const ERROR: u8 = 0x05;
}

/// Option keys a player may put in its `Hello`.
pub mod option {
    /// How much audio, in milliseconds, the sender should send at once before pacing in real
    /// time (decimal text). Players ask for their target latency so their buffer fills at once.
    pub const PREROLL_MS: &str = "preroll-ms";
}

/// A player's greeting, its first message on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the player speaks.
    pub version: u16,
    /// A free-form name for logs, such as `audiowire-play/0.1.0`.
    pub client: String,
    /// Requested options as key/value text pairs; a sender ignores keys it does not know.
    pub options: Vec<(String, String)>,
}

impl Hello {
    /// The value of option `key`, if the player sent it.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The codec of `Audio` payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// Uncompressed PCM in the stream's sample format.
    Pcm,
}

impl Codec {
    fn code(self) -> u8 {
        match self {
            Codec::Pcm => 0,
        }
    }
    fn from_code(code: u8) -> Option<Self> {
        (code == 0).then_some(Codec::Pcm)
    }
}

/// How long the stream is, in sample frames (one sample per channel).
pub type TotalLength = Option<u64>;

/// What the sender will send: the first message from a sender after a `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// Sample frames per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Sample format of PCM payloads.
    pub format: SampleFormat,
    /// Codec of `Audio` payloads.
    pub codec: Codec,
    /// Sample frames in each `Audio` message (the last may hold fewer).
    pub samples_per_frame: u32,
    /// Total length in sample frames when known (a file), `None` for a live or looping stream.
    pub total_frames: TotalLength,
}

impl StreamInfo {
    /// Bytes of one sample frame (all channels) of PCM.
    pub fn bytes_per_frame(&self) -> usize {
        self.format.bytes() * usize::from(self.channels)
    }

    /// Checks every field against the protocol's limits.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, value: u64, reason| Error::InvalidValue {
            message: "StreamInfo",
            field,
            value,
            reason,
        };
        if self.sample_rate == 0 || self.sample_rate > MAX_SAMPLE_RATE {
            return Err(bad(
                "sample rate",
                self.sample_rate.into(),
                "must be 1 to 768000 Hz",
            ));
        }
        if self.channels == 0 || self.channels > MAX_CHANNELS {
            return Err(bad(
                "channel count",
                self.channels.into(),
                "must be 1 to 64",
            ));
        }
        if self.samples_per_frame == 0 || self.samples_per_frame > MAX_SAMPLES_PER_FRAME {
            return Err(bad(
                "samples per frame",
                self.samples_per_frame.into(),
                "must be 1 to 65536",
            ));
        }
        Ok(())
    }
}

/// One frame of audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    /// Counts `Audio` messages from 0 on this connection, for loss and reordering detection.
    pub sequence: u64,
    /// Position of the first sample frame in the stream, in sample frames from its start.
    pub position: u64,
    /// When the sender's pacing clock scheduled this frame to be sent (for live input: when its
    /// first sample was captured), in µs since the Unix epoch on the sender's wall clock. The
    /// player's latency figures run from this instant to the speaker.
    pub timestamp_us: u64,
    /// The samples, interleaved, in the stream's format and codec.
    pub payload: Vec<u8>,
}

/// Why a peer gave up, in an `Error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The peer's protocol version is not supported.
    UnsupportedVersion,
    /// A message was malformed or out of order.
    BadMessage,
    /// The sender could not read its source (a truncated or unreadable file).
    SourceFailed,
    /// The sender is shutting down.
    ShuttingDown,
    /// Anything else; the code is kept.
    Other(u16),
}

impl ErrorCode {
    /// The code on the wire.
    pub fn code(self) -> u16 {
        match self {
            Self::UnsupportedVersion => 1,
            Self::BadMessage => 2,
            Self::SourceFailed => 3,
            Self::ShuttingDown => 4,
            Self::Other(c) => c,
        }
    }
    /// The code read from the wire.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => Self::UnsupportedVersion,
            2 => Self::BadMessage,
            3 => Self::SourceFailed,
            4 => Self::ShuttingDown,
            c => Self::Other(c),
        }
    }
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Player → sender: who I am and what I ask for.
    Hello(Hello),
    /// Sender → player: what the stream is.
    StreamInfo(StreamInfo),
    /// Sender → player: one frame of audio.
    Audio(Audio),
    /// Sender → player: the stream ended; `position` is its length in sample frames.
    End {
        /// Sample frames sent in all.
        position: u64,
    },
    /// Either way: the peer gives up, with a code and a human-readable reason.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// A one-line explanation for the user.
        text: String,
    },
}

impl Message {
    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::StreamInfo(_) => "StreamInfo",
            Message::Audio(_) => "Audio",
            Message::End { .. } => "End",
            Message::Error { .. } => "Error",
        }
    }

    /// Appends the envelope (not the frame header) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.push(ENVELOPE_VERSION);
        match self {
            Message::Hello(h) => {
                out.push(tag::HELLO);
                out.extend_from_slice(&h.version.to_be_bytes());
                put_str(out, "client name", &h.client)?;
                let n = u16::try_from(h.options.len()).map_err(|_| Error::TooLongToEncode {
                    field: "options",
                    len: h.options.len(),
                    max: u16::MAX.into(),
                })?;
                out.extend_from_slice(&n.to_be_bytes());
                for (k, v) in &h.options {
                    put_str(out, "option key", k)?;
                    put_str(out, "option value", v)?;
                }
            }
            Message::StreamInfo(s) => {
                out.push(tag::STREAM_INFO);
                out.extend_from_slice(&s.sample_rate.to_be_bytes());
                out.extend_from_slice(&s.channels.to_be_bytes());
                out.push(s.format.code());
                out.push(s.codec.code());
                out.extend_from_slice(&s.samples_per_frame.to_be_bytes());
                match s.total_frames {
                    Some(n) => {
                        out.push(1);
                        out.extend_from_slice(&n.to_be_bytes());
                    }
                    None => {
                        out.push(0);
                        out.extend_from_slice(&0u64.to_be_bytes());
                    }
                }
            }
            Message::Audio(a) => a.encode_body(out),
            Message::End { position } => {
                out.push(tag::END);
                out.extend_from_slice(&position.to_be_bytes());
            }
            Message::Error { code, text } => {
                out.push(tag::ERROR);
                out.extend_from_slice(&code.code().to_be_bytes());
                put_str(out, "error text", text)?;
            }
        }
        Ok(())
    }

    /// Encodes the message as a whole frame (u64 length header included), appended to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<()> {
        framed(out, |out| self.encode(out))
    }

    /// Decodes one envelope (a frame's payload).
    pub fn decode(payload: &[u8]) -> Result<Message> {
        let mut r = Reader {
            bytes: payload,
            message: "envelope",
        };
        let version = r.u8("version")?;
        if version != ENVELOPE_VERSION {
            return Err(Error::UnknownVersion(version));
        }
        let t = r.u8("type")?;
        let msg = match t {
            tag::HELLO => {
                r.message = "Hello";
                let version = r.u16("version")?;
                let client = r.string("client name")?;
                let n = r.u16("option count")?;
                let mut options = Vec::with_capacity(usize::from(n).min(r.bytes.len() / 4));
                for _ in 0..n {
                    options.push((r.string("option key")?, r.string("option value")?));
                }
                Message::Hello(Hello {
                    version,
                    client,
                    options,
                })
            }
            tag::STREAM_INFO => {
                r.message = "StreamInfo";
                let sample_rate = r.u32("sample rate")?;
                let channels = r.u16("channel count")?;
                let fcode = r.u8("sample format")?;
                let format = SampleFormat::from_code(fcode).ok_or(Error::InvalidValue {
                    message: "StreamInfo",
                    field: "sample format",
                    value: fcode.into(),
                    reason: "known formats are 1 to 5",
                })?;
                let ccode = r.u8("codec")?;
                let codec = Codec::from_code(ccode).ok_or(Error::InvalidValue {
                    message: "StreamInfo",
                    field: "codec",
                    value: ccode.into(),
                    reason: "known codecs: 0 (PCM)",
                })?;
                let samples_per_frame = r.u32("samples per frame")?;
                let known = r.u8("length flag")?;
                let total = r.u64("total length")?;
                let total_frames = match known {
                    0 => None,
                    1 => Some(total),
                    v => {
                        return Err(Error::InvalidValue {
                            message: "StreamInfo",
                            field: "length flag",
                            value: v.into(),
                            reason: "must be 0 or 1",
                        });
                    }
                };
                let info = StreamInfo {
                    sample_rate,
                    channels,
                    format,
                    codec,
                    samples_per_frame,
                    total_frames,
                };
                info.validate()?;
                Message::StreamInfo(info)
            }
            tag::AUDIO => {
                r.message = "Audio";
                let sequence = r.u64("sequence")?;
                let position = r.u64("position")?;
                let timestamp_us = r.u64("timestamp")?;
                let payload = std::mem::take(&mut r.bytes).to_vec();
                Message::Audio(Audio {
                    sequence,
                    position,
                    timestamp_us,
                    payload,
                })
            }
            tag::END => {
                r.message = "End";
                Message::End {
                    position: r.u64("position")?,
                }
            }
            tag::ERROR => {
                r.message = "Error";
                let code = ErrorCode::from_code(r.u16("code")?);
                let text = r.string("text")?;
                Message::Error { code, text }
            }
            other => return Err(Error::UnknownType(other)),
        };
        if !r.bytes.is_empty() {
            return Err(Error::TrailingBytes {
                message: msg.name(),
                extra: r.bytes.len(),
            });
        }
        Ok(msg)
    }
}

impl Audio {
    fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(tag::AUDIO);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.timestamp_us.to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Encodes this audio frame as a whole frame, as `Message::Audio(self).encode_frame(out)`
    /// does, without moving the payload.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let _ = framed(out, |out| {
            out.push(ENVELOPE_VERSION);
            self.encode_body(out);
            Ok(())
        });
    }
}

/// Writes a frame header, then whatever `body` appends, then patches the header's length.
fn framed(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; crate::frame::HEADER_LEN]);
    if let Err(e) = body(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = (out.len() - start - crate::frame::HEADER_LEN) as u64;
    out[start..start + crate::frame::HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<()> {
    let n = u16::try_from(s.len()).map_err(|_| Error::TooLongToEncode {
        field,
        len: s.len(),
        max: u16::MAX.into(),
    })?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// A cursor over a payload that turns short reads into [`Error::Truncated`].
struct Reader<'a> {
    bytes: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(Error::Truncated {
                message: self.message,
                field,
                needed: n - self.bytes.len(),
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(field, N)?);
        Ok(a)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.take(field, 1)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16> {
        self.array(field).map(u16::from_be_bytes)
    }
    fn u32(&mut self, field: &'static str) -> Result<u32> {
        self.array(field).map(u32::from_be_bytes)
    }
    fn u64(&mut self, field: &'static str) -> Result<u64> {
        self.array(field).map(u64::from_be_bytes)
    }
    fn string(&mut self, field: &'static str) -> Result<String> {
        let n = self.u16(field)?;
        let b = self.take(field, n.into())?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::InvalidUtf8 {
            message: self.message,
            field,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;
    use proptest::prelude::*;

    fn info() -> StreamInfo {
        StreamInfo {
            sample_rate: 48_000,
            channels: 2,
            format: SampleFormat::S16,
            codec: Codec::Pcm,
            samples_per_frame: 480,
            total_frames: Some(48_000),
        }
    }

    #[test]
    fn audio_frame_bytes_match_docs_protocol_md() {
        // The annotated hex dump in docs/protocol.md is this frame.
        let msg = Message::Audio(Audio {
            sequence: 7,
            position: 3360,
            timestamp_us: 1_763_712_000_070_000,
            payload: vec![0x10, 0x00, 0xf0, 0xff, 0x20, 0x00, 0xe0, 0xff],
        });
        let mut out = Vec::new();
        msg.encode_frame(&mut out).unwrap();
        let Message::Audio(a) = &msg else {
            unreachable!()
        };
        let mut direct = Vec::new();
        a.encode_frame(&mut direct);
        assert_eq!(direct, out);
        let hex: Vec<String> = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "00 00 00 00 00 00 00 22 01 03 00 00 00 00 00 00 00 07 00 00 00 00 00 00 0d 20 \
             00 06 44 16 33 40 11 70 10 00 f0 ff 20 00 e0 ff"
        );
    }

    #[test]
    fn stream_info_layout() {
        let mut out = Vec::new();
        Message::StreamInfo(info()).encode(&mut out).unwrap();
        assert_eq!(
            out,
            [
                1, 2, 0, 0, 0xbb, 0x80, 0, 2, 2, 0, 0, 0, 1, 0xe0, 1, 0, 0, 0, 0, 0, 0, 0xbb, 0x80
            ]
        );
    }

    #[test]
    fn unknown_version_and_type_are_typed_errors() {
        assert_eq!(Message::decode(&[2, 1]), Err(Error::UnknownVersion(2)));
        assert_eq!(Message::decode(&[1, 0x7f]), Err(Error::UnknownType(0x7f)));
        assert_eq!(
            Message::decode(&[]),
            Err(Error::Truncated {
                message: "envelope",
                field: "version",
                needed: 1
            })
        );
    }

    #[test]
    fn stream_info_with_zero_channels_or_hz_is_refused() {
        for (rate, ch, field) in [(0, 2, "sample rate"), (48_000, 0, "channel count")] {
            let mut out = Vec::new();
            let bad = StreamInfo {
                sample_rate: rate,
                channels: ch,
                ..info()
            };
            Message::StreamInfo(bad).encode(&mut out).unwrap();
            match Message::decode(&out) {
                Err(Error::InvalidValue { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidValue for {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut out = Vec::new();
        Message::End { position: 5 }.encode(&mut out).unwrap();
        out.push(0);
        assert_eq!(
            Message::decode(&out),
            Err(Error::TrailingBytes {
                message: "End",
                extra: 1
            })
        );
    }

    fn any_message() -> impl Strategy<Value = Message> {
        let text = "\\PC{0,40}";
        prop_oneof![
            (
                any::<u16>(),
                text,
                prop::collection::vec((text, text), 0..4)
            )
                .prop_map(|(version, client, options)| Message::Hello(Hello {
                    version,
                    client,
                    options
                })),
            (
                1u32..=MAX_SAMPLE_RATE,
                1u16..=MAX_CHANNELS,
                prop::sample::select(SampleFormat::ALL.to_vec()),
                1u32..=MAX_SAMPLES_PER_FRAME,
                any::<Option<u64>>()
            )
                .prop_map(|(sample_rate, channels, format, spf, total)| {
                    Message::StreamInfo(StreamInfo {
                        sample_rate,
                        channels,
                        format,
                        codec: Codec::Pcm,
                        samples_per_frame: spf,
                        total_frames: total,
                    })
                }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..600)
            )
                .prop_map(|(sequence, position, timestamp_us, payload)| {
                    Message::Audio(Audio {
                        sequence,
                        position,
                        timestamp_us,
                        payload,
                    })
                }),
            any::<u64>().prop_map(|position| Message::End { position }),
            (any::<u16>(), text).prop_map(|(c, text)| Message::Error {
                code: ErrorCode::from_code(c),
                text
            }),
        ]
    }

    proptest! {
        #[test]
        fn any_message_sequence_survives_framing_in_random_splits(
            msgs in prop::collection::vec(any_message(), 0..12),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let mut bytes = Vec::new();
            for m in &msgs {
                m.encode_frame(&mut bytes).unwrap();
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                for f in d.decode(&bytes[start..cut]).unwrap() {
                    got.push(Message::decode(&f).unwrap());
                }
                start = cut;
            }
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn arbitrary_envelopes_with_valid_header_never_panic(
            t in 1u8..=5, body in prop::collection::vec(any::<u8>(), 0..64)
        ) {
            let mut bytes = vec![ENVELOPE_VERSION, t];
            bytes.extend(body);
            let _ = Message::decode(&bytes);
        }
    }
}
