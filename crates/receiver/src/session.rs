//! The player's side of one connection, sans-IO: bytes in, [`Event`]s out.
//!
//! It owns the frame decoder and checks the order of messages: `StreamInfo` first, then `Audio`
//! with consecutive sequence numbers and positions and whole sample frames, then `End`. On TCP a
//! gap can only be a broken sender, so it is an error, not a loss.

use audiowire_protocol::auth::{Cipher, Key, to_hex};
use audiowire_protocol::message::option;
use audiowire_protocol::{
    Audio, Codec, FrameDecoder, Hello, Message, PROTOCOL_VERSION, StreamInfo,
};

/// What a player says in its `Hello`.
#[derive(Debug, Clone, Default)]
pub struct Greeting {
    /// A name for the sender's logs.
    pub client: String,
    /// The pre-roll to ask for, in ms (the player's target latency).
    pub preroll_ms: u64,
    /// After a dropped connection: continue from this (sequence, sample frame).
    pub resume: Option<(u64, u64)>,
    /// A pre-shared key, and this connection's random nonce (fresh for every connection).
    pub key: Option<(Key, [u8; 16])>,
}

impl Greeting {
    /// The `Hello` options that say it (with a key: the nonce, not yet a proof).
    pub fn options(&self) -> Vec<(String, String)> {
        let mut o = vec![(option::PREROLL_MS.to_string(), self.preroll_ms.to_string())];
        if let Some((seq, pos)) = self.resume {
            o.push((option::START_SEQUENCE.to_string(), seq.to_string()));
            o.push((option::START_POSITION.to_string(), pos.to_string()));
        }
        if let Some((_, nonce)) = &self.key {
            o.push((option::NONCE.to_string(), to_hex(nonce)));
        }
        o
    }

    /// The options answering the sender's `challenge`: with a key, the proof that we hold it.
    pub fn answer(&self, challenge: u64) -> Vec<(String, String)> {
        let mut o = self.options();
        if let Some((key, nonce)) = &self.key {
            o.push((
                option::PROOF.to_string(),
                to_hex(&key.player_proof(challenge, nonce)),
            ));
        }
        o
    }

    /// Checks the sender's `Auth` for `challenge`; the session's cipher when it holds.
    pub fn verify(&self, challenge: u64, proof: &[u8; 32]) -> Result<Cipher, SessionError> {
        let Some((key, nonce)) = &self.key else {
            return Err(SessionError::Key(
                "the sender uses a key but this player has none: give it the same --key".into(),
            ));
        };
        if !key.verify_sender(challenge, nonce, proof) {
            return Err(SessionError::Key(
                "the sender's key differs from this player's (check both --key files)".into(),
            ));
        }
        Ok(key.cipher(challenge, nonce))
    }
}

/// The error for a `StreamInfo` that came without the sender proving the key we expect.
pub fn unkeyed_sender() -> SessionError {
    SessionError::Key(
        "the sender does not use a key: start it with the same --key as this player".into(),
    )
}

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
    /// A handshake step handled inside the session (not passed on).
    Handshake,
    /// The key exchange failed (UDP; on TCP it is a [`SessionError::Key`]).
    KeyError(String),
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
    /// The key exchange failed, or a frame did not authenticate.
    #[error("{0}")]
    Key(String),
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
    greeting: Greeting,
    challenge: Option<u64>,
    cipher: Option<Cipher>,
    outgoing: Vec<u8>,
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
            greeting: Greeting::default(),
            challenge: None,
            cipher: None,
            outgoing: Vec::new(),
        }
    }

    /// A session that answers the sender's challenge as `greeting` says (with a key: proves
    /// it, checks the sender's proof, and opens sealed audio).
    pub fn with_greeting(mut self, greeting: Greeting) -> Self {
        self.greeting = greeting;
        self
    }

    /// Bytes to send to the sender (the answer to its challenge), taken once.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outgoing)
    }

    /// A session that resumes a stream: the sender was asked (in the `Hello`) to continue
    /// from `sequence` at sample frame `position`.
    pub fn resuming(max_frame_len: u64, sequence: u64, position: u64) -> Self {
        Self {
            next_sequence: sequence,
            next_position: position,
            ..Self::new(max_frame_len)
        }
    }

    /// The framed `Hello` of `greeting`.
    pub fn hello(greeting: &Greeting) -> Vec<u8> {
        let mut out = Vec::new();
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            client: greeting.client.clone(),
            options: greeting.options(),
        });
        // A short name and a few options always encode.
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
                if let Some(event) = self.accept(msg)? {
                    events.push(event);
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self, msg: Message) -> Result<Option<Event>, SessionError> {
        self.accept_one(msg).map(|e| match e {
            Event::Handshake => None,
            e => Some(e),
        })
    }

    fn accept_one(&mut self, msg: Message) -> Result<Event, SessionError> {
        let order = |s: String| Err(SessionError::Order(s));
        match (self.state, msg) {
            (State::AwaitInfo, Message::Cookie { cookie }) if self.challenge.is_none() => {
                // The sender's challenge: answer with a Hello that proves our key.
                self.challenge = Some(cookie);
                let hello = Message::Hello(Hello {
                    version: PROTOCOL_VERSION,
                    client: self.greeting.client.clone(),
                    options: self.greeting.answer(cookie),
                });
                let _ = hello.encode_frame(&mut self.outgoing);
                Ok(Event::Handshake)
            }
            (State::AwaitInfo, Message::Auth { proof }) => {
                let Some(challenge) = self.challenge else {
                    return order("Auth before a challenge".into());
                };
                self.cipher = Some(self.greeting.verify(challenge, &proof)?);
                Ok(Event::Handshake)
            }
            (State::AwaitInfo, Message::StreamInfo(_))
                if self.greeting.key.is_some() && self.cipher.is_none() =>
            {
                Err(unkeyed_sender())
            }
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
            (State::Streaming, Message::Audio(mut a)) => {
                if let Some(c) = &self.cipher {
                    c.open(&mut a)
                        .map_err(|e| SessionError::Key(e.to_string()))?;
                }
                let Some(info) = self.info else {
                    return order("Audio before StreamInfo".into());
                };
                let Some(frames) = info.frames_in(&a.payload) else {
                    let bpf = info.bytes_per_frame();
                    return order(match info.codec {
                        Codec::Pcm => format!(
                            "Audio #{} holds {} bytes, not a whole number of {bpf}-byte sample frames",
                            a.sequence,
                            a.payload.len()
                        ),
                        codec => format!(
                            "Audio #{} is not a valid {codec} packet ({} bytes)",
                            a.sequence,
                            a.payload.len()
                        ),
                    });
                };
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
            live: false,
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
