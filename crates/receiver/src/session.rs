//! The player's side of one connection, sans-IO: bytes in, [`Event`]s out.
//!
//! It owns the frame decoder and checks the order of messages: `StreamInfo` first, then `Audio`
//! with consecutive sequence numbers and positions and whole sample frames, then `End`. On TCP a
//! gap can only be a broken sender, so it is an error, not a loss.

use audiowire_protocol::message::option;
use audiowire_protocol::{Audio, FrameDecoder, Hello, Message, PROTOCOL_VERSION, StreamInfo};

/// Something the sender said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The stream's format; always the first event.
    Info(StreamInfo),
    /// A frame of audio, checked against the stream's format.
    Audio(Audio),
    /// The stream ended after `position` sample frames.
    End {
        /// Sample frames in the stream.
        position: u64,
    },
    /// The sender gave up.
    SenderError(String),
    /// The answer to one of our `Ping`s (t1 ours, t2 and t3 the sender's clock).
    Pong {
        /// The ping's id.
        id: u64,
        /// When the ping left, on our clock (µs since the Unix epoch).
        t1_us: u64,
        /// When it arrived, on the sender's clock.
        t2_us: u64,
        /// When the pong left, on the sender's clock.
        t3_us: u64,
    },
}

/// Why the session refused the sender's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Framing or message decoding failed.
    #[error(transparent)]
    Wire(#[from] audiowire_protocol::Error),
    /// A valid message at the wrong time or with wrong contents.
    #[error("{0}")]
    Order(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitInfo,
    Streaming,
    Ended,
}

/// Protocol state of one connection, from the player's side.
#[derive(Debug)]
pub struct Session {
    decoder: FrameDecoder,
    state: State,
    info: Option<StreamInfo>,
    next_sequence: u64,
    next_position: u64,
}

impl Session {
    /// A session that accepts frames up to `max_frame_len` bytes.
    pub fn new(max_frame_len: u64) -> Self {
        Self {
            decoder: FrameDecoder::new(max_frame_len),
            state: State::AwaitInfo,
            info: None,
            next_sequence: 0,
            next_position: 0,
        }
    }

    /// The framed `Hello` to send first, asking for `preroll_ms` of pre-roll.
    pub fn hello(client: &str, preroll_ms: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            client: client.to_string(),
            options: vec![(option::PREROLL_MS.to_string(), preroll_ms.to_string())],
        });
        // A short name and one option always encode.
        let _ = hello.encode_frame(&mut out);
        out
    }

    /// The stream's format, once known.
    pub fn info(&self) -> Option<StreamInfo> {
        self.info
    }

    /// True once `End` arrived.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// True when no partial frame is buffered.
    pub fn is_idle(&self) -> bool {
        self.decoder.is_idle()
    }

    /// Feeds received bytes; appends what they complete to `events`.
    pub fn receive(
        &mut self,
        mut bytes: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), SessionError> {
        while !bytes.is_empty() {
            let used = self.decoder.push(bytes)?;
            bytes = &bytes[used..];
            if let Some(frame) = self.decoder.next_frame() {
                let msg = Message::decode(frame)?;
                events.push(self.accept(msg)?);
            }
        }
        Ok(())
    }

    fn accept(&mut self, msg: Message) -> Result<Event, SessionError> {
        let order = |s: String| Err(SessionError::Order(s));
        match (self.state, msg) {
            (_, Message::Error { text, .. }) => Ok(Event::SenderError(text)),
            (
                _,
                Message::Pong {
                    id,
                    t1_us,
                    t2_us,
                    t3_us,
                },
            ) => Ok(Event::Pong {
                id,
                t1_us,
                t2_us,
                t3_us,
            }),
            (State::AwaitInfo, Message::StreamInfo(info)) => {
                info.validate()?;
                self.info = Some(info);
                self.state = State::Streaming;
                Ok(Event::Info(info))
            }
            (State::Streaming, Message::Audio(a)) => {
                let Some(info) = self.info else {
                    return order("Audio before StreamInfo".into());
                };
                let bpf = info.bytes_per_frame();
                if a.payload.len() % bpf != 0 {
                    return order(format!(
                        "Audio #{} holds {} bytes, not a whole number of {bpf}-byte sample frames",
                        a.sequence,
                        a.payload.len()
                    ));
                }
                let frames = (a.payload.len() / bpf) as u64;
                if frames > u64::from(info.samples_per_frame) {
                    return order(format!(
                        "Audio #{} holds {frames} sample frames, more than the announced {}",
                        a.sequence, info.samples_per_frame
                    ));
                }
                if a.sequence != self.next_sequence || a.position != self.next_position {
                    return order(format!(
                        "expected Audio #{} at sample {}, got #{} at sample {}",
                        self.next_sequence, self.next_position, a.sequence, a.position
                    ));
                }
                self.next_sequence += 1;
                self.next_position += frames;
                Ok(Event::Audio(a))
            }
            (State::Streaming, Message::End { position }) => {
                if position != self.next_position {
                    return order(format!(
                        "End says {position} sample frames were sent, but {} arrived",
                        self.next_position
                    ));
                }
                self.state = State::Ended;
                Ok(Event::End { position })
            }
            (state, msg) => order(format!(
                "unexpected {} message {}",
                msg.name(),
                match state {
                    State::AwaitInfo => "before StreamInfo",
                    State::Streaming => "during the stream",
                    State::Ended => "after End",
                }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiowire_protocol::{Codec, SampleFormat};

    fn info() -> StreamInfo {
        StreamInfo {
            sample_rate: 8000,
            channels: 2,
            format: SampleFormat::S16,
            codec: Codec::Pcm,
            samples_per_frame: 80,
            total_frames: Some(160),
        }
    }

    fn frames(msgs: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            m.encode_frame(&mut out).unwrap();
        }
        out
    }

    fn audio(sequence: u64, position: u64, bytes: usize) -> Message {
        Message::Audio(Audio {
            sequence,
            position,
            timestamp_us: 0,
            payload: vec![0; bytes],
        })
    }

    #[test]
    fn a_whole_stream_byte_by_byte() {
        let bytes = frames(&[
            Message::StreamInfo(info()),
            audio(0, 0, 320),
            audio(1, 80, 320),
            Message::End { position: 160 },
        ]);
        let mut s = Session::new(1 << 20);
        let mut events = Vec::new();
        for b in &bytes {
            s.receive(std::slice::from_ref(b), &mut events).unwrap();
        }
        assert_eq!(events.len(), 4);
        assert_eq!(events[0], Event::Info(info()));
        assert_eq!(events[3], Event::End { position: 160 });
        assert!(s.is_ended() && s.is_idle());
    }

    #[test]
    fn audio_before_info_is_refused() {
        let mut s = Session::new(1 << 20);
        let err = s
            .receive(&frames(&[audio(0, 0, 4)]), &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected Audio message before StreamInfo"
        );
    }

    #[test]
    fn partial_sample_frames_and_gaps_are_refused() {
        let mut s = Session::new(1 << 20);
        let mut ev = Vec::new();
        s.receive(&frames(&[Message::StreamInfo(info())]), &mut ev)
            .unwrap();
        let err = s.receive(&frames(&[audio(0, 0, 6)]), &mut ev).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Audio #0 holds 6 bytes, not a whole number of 4-byte sample frames"
        );
        let mut s = Session::new(1 << 20);
        s.receive(
            &frames(&[Message::StreamInfo(info()), audio(0, 0, 8)]),
            &mut ev,
        )
        .unwrap();
        let err = s.receive(&frames(&[audio(2, 2, 8)]), &mut ev).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected Audio #1 at sample 2, got #2 at sample 2"
        );
    }

    #[test]
    fn a_huge_length_header_is_a_typed_error() {
        let mut s = Session::new(1 << 20);
        let err = s
            .receive(&(1u64 << 63).to_be_bytes(), &mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            err,
            SessionError::Wire(audiowire_protocol::Error::FrameTooLong { .. })
        ));
    }

    #[test]
    fn sender_errors_become_events() {
        let mut s = Session::new(1 << 20);
        let mut ev = Vec::new();
        s.receive(
            &frames(&[Message::Error {
                code: audiowire_protocol::ErrorCode::SourceFailed,
                text: "disk gone".into(),
            }]),
            &mut ev,
        )
        .unwrap();
        assert_eq!(ev, [Event::SenderError("disk gone".into())]);
    }
}
