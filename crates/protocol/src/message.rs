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
    // 0x10-0x1F: socket tools (echo, ping, struct records, line streams).
    pub const ECHO: u8 = 0x10;
    pub const PING: u8 = 0x11;
    pub const PONG: u8 = 0x12;
    pub const STRUCT: u8 = 0x13;
    pub const LINES_HELLO: u8 = 0x14;
    pub const LINES_RESUME: u8 = 0x15;
    pub const LINE: u8 = 0x16;
    pub const LINES_ACK: u8 = 0x17;
    pub const COOKIE: u8 = 0x20;
    pub const REPORT: u8 = 0x21;
    pub const BYE: u8 = 0x22;
    pub const AUTH: u8 = 0x23;
}

/// Option keys a player may put in its `Hello`.
pub mod option {
    /// How much audio, in milliseconds, the sender should send at once before pacing in real
    /// time (decimal text). Players ask for their target latency so their buffer fills at once.
    pub const PREROLL_MS: &str = "preroll-ms";
    /// On UDP: the cookie from the sender's `Cookie` message, as 16 hex digits. A sender sends
    /// audio only to an address that echoed a valid cookie (return routability).
    pub const COOKIE: &str = "cookie";
    /// A player resuming after a dropped connection: the sequence number to continue from
    /// (decimal text).
    pub const START_SEQUENCE: &str = "start-sequence";
    /// A player resuming after a dropped connection: the sample frame to continue from (decimal
    /// text). A file is read from there; a live stream ignores it and goes on where it stands.
    pub const START_POSITION: &str = "start-position";
    /// With a pre-shared key: the player's random nonce, 32 hex digits.
    pub const NONCE: &str = "nonce";
    /// With a pre-shared key: the player's proof that it holds the key, 64 hex digits
    /// (see `auth`).
    pub const PROOF: &str = "proof";
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
    /// Opus (RFC 6716) at 48 kHz, mono or stereo: one Opus packet per `Audio` message, each
    /// exactly `samples_per_frame` long. The stream's sample format is the one the player decodes
    /// to (and records in).
    Opus {
        /// Samples (per channel, 48 kHz) the decoder drops at the very start of the stream: the
        /// encoder's look-ahead, as Ogg Opus's pre-skip, so decoded audio lines up with the
        /// source.
        pre_skip: u16,
    },
}

impl Codec {
    /// The codec's one-byte code in `StreamInfo`.
    pub fn code(self) -> u8 {
        match self {
            Codec::Pcm => 0,
            Codec::Opus { .. } => 1,
        }
    }

    /// A short name: `pcm`, `opus`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcm => "pcm",
            Codec::Opus { .. } => "opus",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
    /// A real-time source (live input, or a broadcast players join mid-stream): it has no
    /// length, and a player that starts behind it may skip to catch up. A looping file is not
    /// live: every sample of it is sent to each player. On the wire, length flag `2`.
    pub live: bool,
}

impl StreamInfo {
    /// Bytes of one sample frame (all channels) of PCM (for Opus: of the decoded PCM).
    pub fn bytes_per_frame(&self) -> usize {
        self.format.bytes() * usize::from(self.channels)
    }

    /// Sample frames an `Audio` payload of this stream holds, or `None` when it cannot be one:
    /// for PCM a whole number of sample frames, for Opus a well-formed packet (its duration
    /// read from its table-of-contents byte).
    pub fn frames_in(&self, payload: &[u8]) -> Option<u64> {
        match self.codec {
            Codec::Pcm => {
                let bpf = self.bytes_per_frame().max(1);
                (payload.len() % bpf == 0).then_some((payload.len() / bpf) as u64)
            }
            Codec::Opus { .. } => crate::opus::packet_samples(payload).map(u64::from),
        }
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
        if let Codec::Opus { pre_skip } = self.codec {
            if self.sample_rate != crate::opus::RATE {
                return Err(bad(
                    "sample rate",
                    self.sample_rate.into(),
                    "must be 48000 Hz for Opus",
                ));
            }
            if self.channels > 2 {
                return Err(bad(
                    "channel count",
                    self.channels.into(),
                    "must be 1 or 2 for Opus",
                ));
            }
            if !crate::opus::FRAME_SIZES.contains(&self.samples_per_frame) {
                return Err(bad(
                    "samples per frame",
                    self.samples_per_frame.into(),
                    "must be an Opus frame size: 120, 240, 480, 960, 1920 or 2880",
                ));
            }
            if u32::from(pre_skip) > crate::opus::MAX_PACKET_SAMPLES {
                return Err(bad(
                    "pre-skip",
                    pre_skip.into(),
                    "must be at most 5760 samples",
                ));
            }
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
    /// The peer's key is missing or wrong.
    Unauthorized,
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
            Self::Unauthorized => 5,
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
            5 => Self::Unauthorized,
            c => Self::Other(c),
        }
    }
}

/// A player's periodic report on UDP (about twice a second), like an RTCP receiver report. It
/// also keeps the subscription alive: a sender drops a player silent for 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Frames received.
    pub received: u64,
    /// Frames lost (concealed in their place).
    pub lost: u64,
    /// Frames that arrived after their turn.
    pub late: u64,
    /// Frames of concealment played (lost frames and stall fill).
    pub concealed: u64,
    /// Interarrival jitter, in µs.
    pub jitter_us: u32,
    /// The player's buffer level (the latency it adds), in µs.
    pub level_us: u32,
    /// The player's target latency, in µs.
    pub target_us: u32,
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
    /// Either way: bytes to send back unchanged. A server answers with the same `Echo`.
    Echo {
        /// Any bytes.
        payload: Vec<u8>,
    },
    /// Client → server: a clock probe. The server answers with a `Pong`.
    Ping {
        /// Chosen by the client to match the answer; the server copies it.
        id: u64,
        /// The client's wall clock when it sent the ping, µs since the Unix epoch.
        t1_us: u64,
    },
    /// Server → client: the answer to a `Ping`, with three of the four timestamps of an NTP
    /// exchange (the client notes the fourth, when the pong arrives).
    Pong {
        /// The ping's id.
        id: u64,
        /// The ping's `t1_us`, copied.
        t1_us: u64,
        /// The server's wall clock when the ping arrived, µs since the Unix epoch.
        t2_us: u64,
        /// The server's wall clock when the pong left, µs since the Unix epoch.
        t3_us: u64,
    },
    /// One record described by a Python `struct` format string (see [`crate::pystruct`]).
    Struct {
        /// The format string, such as `!I30sd`.
        format: String,
        /// The packed record: exactly `struct.calcsize(format)` bytes.
        data: Vec<u8>,
    },
    /// Line sender → line receiver, first message: which stream this connection carries.
    LinesHello {
        /// Random, chosen when the sender starts; the same across its reconnections.
        session: u64,
        /// The sequence number of the oldest line the sender still holds (it can send again
        /// every line from here on).
        first: u64,
    },
    /// Line receiver → line sender, answer to `LinesHello`: send lines from `next` on.
    LinesResume {
        /// The sequence number of the first line the receiver does not hold.
        next: u64,
    },
    /// Line sender → line receiver: one line (or a piece of a long one).
    Line {
        /// Counts `Line` messages of the session from 0.
        seq: u64,
        /// True when the line goes on in the next `Line` (no newline is written after it).
        partial: bool,
        /// The line's bytes, without its newline.
        data: Vec<u8>,
    },
    /// Line receiver → line sender: every line before `next` is stored for good.
    LinesAck {
        /// The sequence number of the first line the receiver does not hold.
        next: u64,
    },
    /// Sender → player on UDP: the stateless cookie to echo in the next `Hello`.
    Cookie {
        /// An opaque value bound to the player's address.
        cookie: u64,
    },
    /// Player → sender on UDP: reception statistics, and keep-alive.
    Report(Report),
    /// Player → sender on UDP: stop sending to me.
    Bye,
    /// Sender → player, with a pre-shared key: the sender's proof that it holds the key too,
    /// before `StreamInfo`.
    Auth {
        /// `auth::Key::sender_proof` of the challenge and the player's nonce.
        proof: [u8; 32],
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
            Message::Echo { .. } => "Echo",
            Message::Ping { .. } => "Ping",
            Message::Pong { .. } => "Pong",
            Message::Struct { .. } => "Struct",
            Message::LinesHello { .. } => "LinesHello",
            Message::LinesResume { .. } => "LinesResume",
            Message::Line { .. } => "Line",
            Message::LinesAck { .. } => "LinesAck",
            Message::Cookie { .. } => "Cookie",
            Message::Report(_) => "Report",
            Message::Bye => "Bye",
            Message::Auth { .. } => "Auth",
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
                match (s.live, s.total_frames) {
                    (true, _) => {
                        out.push(2);
                        out.extend_from_slice(&0u64.to_be_bytes());
                    }
                    (false, Some(n)) => {
                        out.push(1);
                        out.extend_from_slice(&n.to_be_bytes());
                    }
                    (false, None) => {
                        out.push(0);
                        out.extend_from_slice(&0u64.to_be_bytes());
                    }
                }
                // Codec parameters follow, for the codecs that have any.
                match s.codec {
                    Codec::Pcm => {}
                    Codec::Opus { pre_skip } => out.extend_from_slice(&pre_skip.to_be_bytes()),
                }
            }
            Message::Audio(a) => a.encode_body(out),
            Message::End { position } => {
                out.push(tag::END);
                out.extend_from_slice(&position.to_be_bytes());
            }
            Message::Cookie { cookie } => {
                out.push(tag::COOKIE);
                out.extend_from_slice(&cookie.to_be_bytes());
            }
            Message::Report(r) => {
                out.push(tag::REPORT);
                for v in [r.received, r.lost, r.late, r.concealed] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                for v in [r.jitter_us, r.level_us, r.target_us] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Message::Bye => out.push(tag::BYE),
            Message::Auth { proof } => {
                out.push(tag::AUTH);
                out.extend_from_slice(proof);
            }
            Message::Error { code, text } => {
                out.push(tag::ERROR);
                out.extend_from_slice(&code.code().to_be_bytes());
                put_str(out, "error text", text)?;
            }
            Message::Echo { payload } => {
                out.push(tag::ECHO);
                out.extend_from_slice(payload);
            }
            Message::Ping { id, t1_us } => {
                out.push(tag::PING);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&t1_us.to_be_bytes());
            }
            Message::Pong {
                id,
                t1_us,
                t2_us,
                t3_us,
            } => {
                out.push(tag::PONG);
                for v in [id, t1_us, t2_us, t3_us] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Message::Struct { format, data } => {
                out.push(tag::STRUCT);
                put_str(out, "struct format", format)?;
                out.extend_from_slice(data);
            }
            Message::LinesHello { session, first } => {
                out.push(tag::LINES_HELLO);
                out.extend_from_slice(&session.to_be_bytes());
                out.extend_from_slice(&first.to_be_bytes());
            }
            Message::LinesResume { next } => {
                out.push(tag::LINES_RESUME);
                out.extend_from_slice(&next.to_be_bytes());
            }
            Message::Line { seq, partial, data } => {
                out.push(tag::LINE);
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(u8::from(*partial));
                out.extend_from_slice(data);
            }
            Message::LinesAck { next } => {
                out.push(tag::LINES_ACK);
                out.extend_from_slice(&next.to_be_bytes());
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
                if ccode > 1 {
                    return Err(Error::InvalidValue {
                        message: "StreamInfo",
                        field: "codec",
                        value: ccode.into(),
                        reason: "known codecs: 0 (PCM), 1 (Opus)",
                    });
                }
                let samples_per_frame = r.u32("samples per frame")?;
                let known = r.u8("length flag")?;
                let total = r.u64("total length")?;
                let (total_frames, live) = match known {
                    0 => (None, false),
                    1 => (Some(total), false),
                    2 => (None, true),
                    v => {
                        return Err(Error::InvalidValue {
                            message: "StreamInfo",
                            field: "length flag",
                            value: v.into(),
                            reason: "must be 0, 1 or 2",
                        });
                    }
                };
                let codec = match ccode {
                    0 => Codec::Pcm,
                    _ => Codec::Opus {
                        pre_skip: r.u16("pre-skip")?,
                    },
                };
                let info = StreamInfo {
                    sample_rate,
                    channels,
                    format,
                    codec,
                    samples_per_frame,
                    total_frames,
                    live,
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
            tag::ECHO => Message::Echo {
                payload: std::mem::take(&mut r.bytes).to_vec(),
            },
            tag::PING => {
                r.message = "Ping";
                Message::Ping {
                    id: r.u64("id")?,
                    t1_us: r.u64("t1")?,
                }
            }
            tag::PONG => {
                r.message = "Pong";
                Message::Pong {
                    id: r.u64("id")?,
                    t1_us: r.u64("t1")?,
                    t2_us: r.u64("t2")?,
                    t3_us: r.u64("t3")?,
                }
            }
            tag::STRUCT => {
                r.message = "Struct";
                let format = r.string("format")?;
                Message::Struct {
                    format,
                    data: std::mem::take(&mut r.bytes).to_vec(),
                }
            }
            tag::LINES_HELLO => {
                r.message = "LinesHello";
                Message::LinesHello {
                    session: r.u64("session")?,
                    first: r.u64("first")?,
                }
            }
            tag::LINES_RESUME => {
                r.message = "LinesResume";
                Message::LinesResume {
                    next: r.u64("next")?,
                }
            }
            tag::LINE => {
                r.message = "Line";
                let seq = r.u64("sequence")?;
                let partial = match r.u8("flags")? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(Error::InvalidValue {
                            message: "Line",
                            field: "flags",
                            value: v.into(),
                            reason: "must be 0 (whole line) or 1 (continues)",
                        });
                    }
                };
                Message::Line {
                    seq,
                    partial,
                    data: std::mem::take(&mut r.bytes).to_vec(),
                }
            }
            tag::LINES_ACK => {
                r.message = "LinesAck";
                Message::LinesAck {
                    next: r.u64("next")?,
                }
            }
            tag::COOKIE => {
                r.message = "Cookie";
                Message::Cookie {
                    cookie: r.u64("cookie")?,
                }
            }
            tag::REPORT => {
                r.message = "Report";
                Message::Report(Report {
                    received: r.u64("received")?,
                    lost: r.u64("lost")?,
                    late: r.u64("late")?,
                    concealed: r.u64("concealed")?,
                    jitter_us: r.u32("jitter")?,
                    level_us: r.u32("level")?,
                    target_us: r.u32("target")?,
                })
            }
            tag::BYE => Message::Bye,
            tag::AUTH => {
                r.message = "Auth";
                Message::Auth {
                    proof: r.array("proof")?,
                }
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
            live: false,
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
    fn a_live_stream_info_says_so_with_length_flag_2() {
        let live = StreamInfo {
            total_frames: None,
            live: true,
            ..info()
        };
        let mut out = Vec::new();
        Message::StreamInfo(live).encode(&mut out).unwrap();
        assert_eq!(out[14], 2, "the length flag");
        assert_eq!(Message::decode(&out).unwrap(), Message::StreamInfo(live));
        out[14] = 3;
        assert!(Message::decode(&out).is_err());
    }

    #[test]
    fn opus_stream_info_layout_matches_docs_protocol_md() {
        // The annotated hex dump in docs/protocol.md is this message.
        let opus = StreamInfo {
            sample_rate: 48_000,
            channels: 2,
            format: SampleFormat::F32,
            codec: Codec::Opus { pre_skip: 312 },
            samples_per_frame: 960,
            total_frames: None,
            live: false,
        };
        let mut out = Vec::new();
        Message::StreamInfo(opus).encode_frame(&mut out).unwrap();
        let hex: Vec<String> = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "00 00 00 00 00 00 00 19 01 02 00 00 bb 80 00 02 05 01 00 00 03 c0 00 \
             00 00 00 00 00 00 00 00 01 38"
        );
        assert_eq!(
            Message::decode(&out[8..]).unwrap(),
            Message::StreamInfo(opus)
        );
        // Opus at another rate, or with 3 channels, or an odd frame size, is refused.
        for (bad, field) in [
            (
                StreamInfo {
                    sample_rate: 44_100,
                    ..opus
                },
                "sample rate",
            ),
            (
                StreamInfo {
                    channels: 3,
                    ..opus
                },
                "channel count",
            ),
            (
                StreamInfo {
                    samples_per_frame: 1000,
                    ..opus
                },
                "samples per frame",
            ),
        ] {
            let mut out = Vec::new();
            Message::StreamInfo(bad).encode(&mut out).unwrap();
            match Message::decode(&out) {
                Err(Error::InvalidValue { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidValue for {field}, got {other:?}"),
            }
        }
        // An Opus payload's size comes from its TOC byte; PCM's from its length.
        assert_eq!(opus.frames_in(&[31 << 3, 1, 2, 3]), Some(960));
        assert_eq!(info().frames_in(&[0; 8]), Some(2));
        assert_eq!(info().frames_in(&[0; 7]), None);
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
    fn tool_message_layouts_match_docs_protocol_md() {
        let frame = |m: Message| {
            let mut out = Vec::new();
            m.encode_frame(&mut out).unwrap();
            let hex: Vec<String> = out.iter().map(|b| format!("{b:02x}")).collect();
            hex.join(" ")
        };
        assert_eq!(
            frame(Message::Echo {
                payload: b"hi".to_vec()
            }),
            "00 00 00 00 00 00 00 04 01 10 68 69"
        );
        assert_eq!(
            frame(Message::Ping { id: 1, t1_us: 2 }),
            "00 00 00 00 00 00 00 12 01 11 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 02"
        );
        assert_eq!(
            frame(Message::Pong {
                id: 1,
                t1_us: 2,
                t2_us: 3,
                t3_us: 4
            }),
            "00 00 00 00 00 00 00 22 01 12 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 02 \
             00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 04"
        );
        assert_eq!(
            frame(Message::Struct {
                format: "!H".into(),
                data: vec![0x12, 0x34]
            }),
            "00 00 00 00 00 00 00 08 01 13 00 02 21 48 12 34"
        );
        assert_eq!(
            frame(Message::LinesHello {
                session: 0xab,
                first: 3
            }),
            "00 00 00 00 00 00 00 12 01 14 00 00 00 00 00 00 00 ab 00 00 00 00 00 00 00 03"
        );
        assert_eq!(
            frame(Message::LinesResume { next: 5 }),
            "00 00 00 00 00 00 00 0a 01 15 00 00 00 00 00 00 00 05"
        );
        assert_eq!(
            frame(Message::Line {
                seq: 5,
                partial: false,
                data: b"ok".to_vec()
            }),
            "00 00 00 00 00 00 00 0d 01 16 00 00 00 00 00 00 00 05 00 6f 6b"
        );
        assert_eq!(
            frame(Message::LinesAck { next: 6 }),
            "00 00 00 00 00 00 00 0a 01 17 00 00 00 00 00 00 00 06"
        );
        assert_eq!(
            Message::decode(&[1, 0x16, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
            Err(Error::InvalidValue {
                message: "Line",
                field: "flags",
                value: 2,
                reason: "must be 0 (whole line) or 1 (continues)"
            })
        );
        // Every prefix of every tool message decodes to a value or a typed error, never a panic.
        for t in 0x10..=0x17u8 {
            let mut bytes = vec![ENVELOPE_VERSION, t];
            for n in 0..40u8 {
                let _ = Message::decode(&bytes);
                bytes.push(n.wrapping_mul(37));
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
                        live: false,
                    })
                }),
            (
                1u16..=2,
                prop::sample::select(crate::opus::FRAME_SIZES.to_vec()),
                0u16..=5760,
                any::<Option<u64>>()
            )
                .prop_map(|(channels, spf, pre_skip, total)| {
                    Message::StreamInfo(StreamInfo {
                        sample_rate: 48_000,
                        channels,
                        format: SampleFormat::F32,
                        codec: Codec::Opus { pre_skip },
                        samples_per_frame: spf,
                        total_frames: total,
                        live: false,
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
            prop::collection::vec(any::<u8>(), 0..100)
                .prop_map(|payload| Message::Echo { payload }),
            (any::<u64>(), any::<u64>()).prop_map(|(id, t1_us)| Message::Ping { id, t1_us }),
            any::<[u64; 4]>().prop_map(|t| Message::Pong {
                id: t[0],
                t1_us: t[1],
                t2_us: t[2],
                t3_us: t[3]
            }),
            (text, prop::collection::vec(any::<u8>(), 0..100))
                .prop_map(|(format, data)| Message::Struct { format, data }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(session, first)| Message::LinesHello { session, first }),
            any::<u64>().prop_map(|next| Message::LinesResume { next }),
            (
                any::<u64>(),
                any::<bool>(),
                prop::collection::vec(any::<u8>(), 0..100)
            )
                .prop_map(|(seq, partial, data)| Message::Line { seq, partial, data }),
            any::<u64>().prop_map(|next| Message::LinesAck { next }),
            any::<u64>().prop_map(|cookie| Message::Cookie { cookie }),
            (any::<[u64; 4]>(), any::<[u32; 3]>()).prop_map(|(a, b)| Message::Report(Report {
                received: a[0],
                lost: a[1],
                late: a[2],
                concealed: a[3],
                jitter_us: b[0],
                level_us: b[1],
                target_us: b[2],
            })),
            Just(Message::Bye),
            any::<[u8; 32]>().prop_map(|proof| Message::Auth { proof }),
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
