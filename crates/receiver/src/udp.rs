//! The player's side of a UDP stream, sans-IO: datagrams and `now` in, events and datagrams to
//! send out.
//!
//! One frame per datagram, encoded as on TCP; a datagram whose length header disagrees with its
//! size is counted and dropped. The handshake proves the player can receive at its address
//! (return routability, as QUIC does): `Hello` → the sender's `Cookie` → `Hello` carrying the
//! cookie → `StreamInfo` and audio. Until `StreamInfo` arrives the `Hello` is re-sent every
//! 250 ms. Order is not checked here: reordering, loss and duplicates are the jitter buffer's
//! business.

use std::time::Duration;

use audiowire_protocol::message::option;
use audiowire_protocol::{HEADER_LEN, Hello, Message, PROTOCOL_VERSION, Report, StreamInfo};

use crate::session::{Event, Greeting, SessionError, unkeyed_sender};
use audiowire_protocol::auth::Cipher;

/// How often an unanswered `Hello` is sent again.
pub const HELLO_RETRY: Duration = Duration::from_millis(250);

/// Handshake and datagram state of one UDP subscription.
#[derive(Debug)]
pub struct UdpClient {
    greeting: Greeting,
    cookie: Option<u64>,
    info: Option<StreamInfo>,
    last_hello: Option<Duration>,
    malformed: u64,
    /// With a key: the session's cipher, once the sender proved the key.
    cipher: Option<Cipher>,
    /// Audio that overtook `StreamInfo` on the network, released once it arrives.
    early: Vec<audiowire_protocol::Audio>,
}

/// The most audio datagrams held while `StreamInfo` is still on its way.
const EARLY_MAX: usize = 512;

impl UdpClient {
    /// A client that will greet the sender with `greeting`.
    pub fn new(greeting: Greeting) -> Self {
        Self {
            greeting,
            cookie: None,
            info: None,
            last_hello: None,
            malformed: 0,
            early: Vec::new(),
            cipher: None,
        }
    }

    /// Datagrams that were not valid frames or messages, counted and dropped.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// True once the stream's `StreamInfo` arrived.
    pub fn is_subscribed(&self) -> bool {
        self.info.is_some()
    }

    fn hello(&self) -> Vec<u8> {
        let mut options = match self.cookie {
            // The cookie is also the challenge a keyed player answers with its proof.
            Some(c) => self.greeting.answer(c),
            None => self.greeting.options(),
        };
        if let Some(c) = self.cookie {
            options.push((option::COOKIE.to_string(), format!("{c:016x}")));
        }
        let mut out = Vec::new();
        let _ = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            client: self.greeting.client.clone(),
            options,
        })
        .encode_frame(&mut out);
        out
    }

    /// The datagram to send at `now`, if any: the `Hello`, first and then every 250 ms until
    /// the stream starts.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Vec<u8>> {
        if self.info.is_some() {
            return None;
        }
        let due = self
            .last_hello
            .is_none_or(|t| now.saturating_sub(t) >= HELLO_RETRY);
        due.then(|| {
            self.last_hello = Some(now);
            self.hello()
        })
    }

    /// A framed report for the sender.
    pub fn report(report: Report) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = Message::Report(report).encode_frame(&mut out);
        out
    }

    /// A framed `Bye`.
    pub fn bye() -> Vec<u8> {
        let mut out = Vec::new();
        let _ = Message::Bye.encode_frame(&mut out);
        out
    }

    /// Takes one received datagram; appends the events it carries. Returns a datagram to send
    /// back at once, if the handshake calls for one.
    pub fn receive(
        &mut self,
        datagram: &[u8],
        now: Duration,
        events: &mut Vec<Event>,
    ) -> Option<Vec<u8>> {
        let Some(msg) = self.decode(datagram) else {
            self.malformed += 1;
            return None;
        };
        match msg {
            Message::Cookie { cookie } if self.info.is_none() => {
                self.cookie = Some(cookie);
                self.last_hello = Some(now);
                return Some(self.hello());
            }
            Message::Auth { proof } if self.info.is_none() => {
                let verified = self
                    .cookie
                    .ok_or_else(|| SessionError::Key("Auth before a cookie".into()))
                    .and_then(|c| self.greeting.verify(c, &proof));
                match verified {
                    Ok(cipher) => self.cipher = Some(cipher),
                    Err(e) => events.push(Event::KeyError(e.to_string())),
                }
            }
            Message::StreamInfo(_)
                if self.info.is_none() && self.greeting.key.is_some() && self.cipher.is_none() =>
            {
                events.push(Event::KeyError(unkeyed_sender().to_string()));
            }
            Message::StreamInfo(info) if self.info.is_none() => {
                self.info = Some(info);
                events.push(Event::Info(info));
                for a in std::mem::take(&mut self.early) {
                    self.accept_audio(info, a, events);
                }
            }
            Message::Audio(a) if self.info.is_none() => {
                // It overtook StreamInfo: hold it (bounded) until that arrives.
                if self.early.len() < EARLY_MAX {
                    self.early.push(a);
                } else {
                    self.malformed += 1;
                }
            }
            Message::Audio(a) => {
                if let Some(info) = self.info {
                    self.accept_audio(info, a, events);
                }
            }
            Message::End { position } => events.push(Event::End { position }),
            Message::Pong {
                id,
                t1_us,
                t2_us,
                t3_us,
            } => events.push(Event::Pong {
                id,
                t1_us,
                t2_us,
                t3_us,
            }),
            Message::Error { text, .. } => events.push(Event::SenderError(text)),
            _ => {}
        }
        None
    }

    fn accept_audio(
        &mut self,
        info: StreamInfo,
        mut a: audiowire_protocol::Audio,
        events: &mut Vec<Event>,
    ) {
        // Sealed audio that does not open was forged or damaged: dropped, like any bad datagram.
        if let Some(c) = &self.cipher
            && c.open(&mut a).is_err()
        {
            self.malformed += 1;
            return;
        }
        if info
            .frames_in(&a.payload)
            .is_some_and(|n| n <= u64::from(info.samples_per_frame))
        {
            events.push(Event::Audio(a));
        } else {
            self.malformed += 1;
        }
    }

    fn decode(&self, d: &[u8]) -> Option<Message> {
        if d.len() < HEADER_LEN {
            return None;
        }
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&d[..HEADER_LEN]);
        if u64::from_be_bytes(head) != (d.len() - HEADER_LEN) as u64 {
            return None;
        }
        Message::decode(&d[HEADER_LEN..]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiowire_protocol::{Audio, Codec, SampleFormat};

    fn framed(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode_frame(&mut out).unwrap();
        out
    }

    #[test]
    fn handshake_echoes_the_cookie_and_retries_until_stream_info() {
        let mut c = UdpClient::new(Greeting {
            client: "t".into(),
            preroll_ms: 50,
            resume: None,
            key: None,
        });
        let first = c.poll_transmit(Duration::ZERO).unwrap();
        assert!(c.poll_transmit(Duration::from_millis(100)).is_none());
        assert_eq!(c.poll_transmit(Duration::from_millis(250)), Some(first));
        let mut ev = Vec::new();
        let reply = c
            .receive(
                &framed(&Message::Cookie { cookie: 0xabc }),
                Duration::from_millis(260),
                &mut ev,
            )
            .unwrap();
        let Message::Hello(h) = Message::decode(&reply[8..]).unwrap() else {
            panic!()
        };
        assert_eq!(h.option(option::COOKIE), Some("0000000000000abc"));
        let info = StreamInfo {
            sample_rate: 8000,
            channels: 1,
            format: SampleFormat::S16,
            codec: Codec::Pcm,
            samples_per_frame: 80,
            total_frames: None,
            live: false,
        };
        c.receive(
            &framed(&Message::StreamInfo(info)),
            Duration::from_millis(270),
            &mut ev,
        );
        assert_eq!(ev, [Event::Info(info)]);
        assert!(c.poll_transmit(Duration::from_secs(9)).is_none());
    }

    #[test]
    fn a_datagram_whose_header_disagrees_with_its_size_is_counted_and_dropped() {
        let mut c = UdpClient::new(Greeting {
            client: "t".into(),
            preroll_ms: 50,
            resume: None,
            key: None,
        });
        let mut d = framed(&Message::End { position: 1 });
        d.push(0);
        let mut ev = Vec::new();
        assert!(c.receive(&d, Duration::ZERO, &mut ev).is_none());
        assert!(c.receive(&[1, 2, 3], Duration::ZERO, &mut ev).is_none());
        let audio = framed(&Message::Audio(Audio {
            sequence: 0,
            position: 0,
            timestamp_us: 0,
            payload: vec![0; 2],
        }));
        assert!(c.receive(&audio, Duration::ZERO, &mut ev).is_none());
        assert_eq!(c.malformed(), 2);
        assert!(ev.is_empty(), "audio that overtook StreamInfo is held");
        let info = StreamInfo {
            sample_rate: 8000,
            channels: 1,
            format: SampleFormat::S16,
            codec: Codec::Pcm,
            samples_per_frame: 80,
            total_frames: None,
            live: false,
        };
        c.receive(&framed(&Message::StreamInfo(info)), Duration::ZERO, &mut ev);
        assert!(
            matches!(ev.as_slice(), [Event::Info(_), Event::Audio(_)]),
            "{ev:?}"
        );
    }
}
