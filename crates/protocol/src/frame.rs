//! Length-delimited framing: a u64 big-endian payload length, then the payload.
//!
//! [`FrameDecoder`] is a two-state machine (reading the head / reading `n` payload bytes) that takes
//! bytes in any split, one byte at a time included, and yields whole frames. The declared length is
//! checked against the maximum *before* anything is reserved, so a hostile header of 2^64−1 costs
//! nothing. [`encode_frame`] is its mirror.

use crate::error::{Error, Result};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;

/// The default maximum payload length: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u64 = 1 << 20;

/// Appends one frame (header and payload) to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the 8 header bytes; `have` of them are in `head`.
    Head { head: [u8; HEADER_LEN], have: usize },
    /// Collecting `len` payload bytes into the decoder's buffer.
    Data { len: usize },
}

/// Incremental frame decoder.
///
/// Feed bytes with [`FrameDecoder::push`] (it consumes as much as it can and says how much), then
/// take frames with [`FrameDecoder::next_frame`]. Or use [`FrameDecoder::decode`], which does both.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max: u64,
    state: State,
    buf: Vec<u8>,
    ready: bool,
    failed: Option<Error>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder that refuses payloads longer than `max_len` bytes.
    pub fn new(max_len: u64) -> Self {
        Self {
            max: max_len,
            state: State::Head {
                head: [0; HEADER_LEN],
                have: 0,
            },
            buf: Vec::new(),
            ready: false,
            failed: None,
        }
    }

    /// The maximum payload length this decoder accepts.
    pub fn max_len(&self) -> u64 {
        self.max
    }

    /// True when no partial frame is held (a clean place for the stream to end).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head { have: 0, .. }) && !self.ready
    }

    /// Takes bytes from `input` until a frame is complete or `input` is used up. Returns how many
    /// bytes were consumed; when a frame is complete, [`FrameDecoder::next_frame`] yields it.
    ///
    /// After an error the decoder stays failed: the stream cannot be resynchronised.
    pub fn push(&mut self, input: &[u8]) -> Result<usize> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut used = 0;
        while used < input.len() && !self.ready {
            match &mut self.state {
                State::Head { head, have } => {
                    let take = (HEADER_LEN - *have).min(input.len() - used);
                    head[*have..*have + take].copy_from_slice(&input[used..used + take]);
                    *have += take;
                    used += take;
                    if *have == HEADER_LEN {
                        let declared = u64::from_be_bytes(*head);
                        if declared > self.max {
                            let e = Error::FrameTooLong {
                                declared,
                                max: self.max,
                            };
                            self.failed = Some(e.clone());
                            return Err(e);
                        }
                        // Within `max`, which the caller chose to be allocatable.
                        let len = declared as usize;
                        self.buf.clear();
                        self.buf.reserve(len);
                        self.state = State::Data { len };
                        self.ready = len == 0;
                    }
                }
                State::Data { len } => {
                    let take = (*len - self.buf.len()).min(input.len() - used);
                    self.buf.extend_from_slice(&input[used..used + take]);
                    used += take;
                    self.ready = self.buf.len() == *len;
                }
            }
        }
        Ok(used)
    }

    /// The completed frame's payload, if one is complete. The slice is valid until the next
    /// call that mutates the decoder.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        if !self.ready {
            return None;
        }
        self.ready = false;
        self.state = State::Head {
            head: [0; HEADER_LEN],
            have: 0,
        };
        Some(&self.buf)
    }

    /// Feeds all of `input` and returns every frame it completes, owned.
    pub fn decode(&mut self, mut input: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut frames = Vec::new();
        loop {
            let used = self.push(input)?;
            input = &input[used..];
            match self.next_frame() {
                Some(f) => frames.push(f.to_vec()),
                None if input.is_empty() => return Ok(frames),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(p, &mut out);
        }
        out
    }

    #[test]
    fn encode_layout_is_u64_be_length_then_payload() {
        let mut out = Vec::new();
        encode_frame(b"abc", &mut out);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn read_whole_frames_in_one_push() {
        let bytes = framed(&[b"hello", b"", b"world"]);
        let frames = FrameDecoder::default().decode(&bytes).unwrap();
        assert_eq!(frames, vec![b"hello".to_vec(), vec![], b"world".to_vec()]);
    }

    #[test]
    fn read_one_byte_at_a_time() {
        let bytes = framed(&[b"one", b"two"]);
        let mut d = FrameDecoder::default();
        let mut frames = Vec::new();
        for b in &bytes {
            frames.extend(d.decode(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(frames, vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(d.is_idle());
    }

    #[test]
    fn read_incomplete_head_then_rest() {
        let bytes = framed(&[b"payload"]);
        let mut d = FrameDecoder::default();
        assert!(d.decode(&bytes[..5]).unwrap().is_empty());
        assert!(!d.is_idle());
        assert_eq!(d.decode(&bytes[5..]).unwrap(), vec![b"payload".to_vec()]);
    }

    #[test]
    fn read_max_frame_len_is_accepted_and_one_more_is_refused_before_allocating() {
        let mut d = FrameDecoder::new(4);
        assert_eq!(d.decode(&framed(&[b"abcd"])).unwrap().len(), 1);
        let cap_before = d.buf.capacity();
        let err = d.decode(&framed(&[b"abcde"])).unwrap_err();
        assert_eq!(
            err,
            Error::FrameTooLong {
                declared: 5,
                max: 4
            }
        );
        assert_eq!(
            d.buf.capacity(),
            cap_before,
            "nothing reserved for the refused frame"
        );
    }

    #[test]
    fn hostile_lengths_are_typed_errors_and_the_decoder_stays_failed() {
        for declared in [1u64 << 63, u64::MAX, DEFAULT_MAX_FRAME_LEN + 1] {
            let mut d = FrameDecoder::default();
            let err = d.push(&declared.to_be_bytes()).unwrap_err();
            assert_eq!(
                err,
                Error::FrameTooLong {
                    declared,
                    max: DEFAULT_MAX_FRAME_LEN
                }
            );
            assert_eq!(d.buf.capacity(), 0);
            assert_eq!(d.push(b"more").unwrap_err(), err);
        }
        let msg = Error::FrameTooLong {
            declared: 1 << 63,
            max: DEFAULT_MAX_FRAME_LEN,
        }
        .to_string();
        assert_eq!(
            msg,
            "a frame declares 9223372036854775808 bytes, above the limit of 1048576 bytes (is the peer an audiowire sender of the same version?)"
        );
    }

    proptest! {
        #[test]
        fn frames_survive_any_split(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in prop::collection::vec(0usize..2000, 0..20),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let bytes = framed(&refs);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                got.extend(d.decode(&bytes[start..cut]).unwrap());
                start = cut;
            }
            prop_assert_eq!(got, payloads);
            prop_assert!(d.is_idle());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096), max in 0u64..5000) {
            let mut d = FrameDecoder::new(max);
            if let Ok(frames) = d.decode(&bytes) {
                prop_assert!(frames.iter().all(|f| f.len() as u64 <= max));
            }
        }
    }
}
