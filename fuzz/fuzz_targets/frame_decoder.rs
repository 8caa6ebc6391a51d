//! The frame decoder on arbitrary bytes, in arbitrary splits, with an arbitrary maximum.
//!
//! Input: 2 bytes of maximum length (0 to 65535), 1 byte that seeds the split sizes, then the
//! stream. Checks: no panic; no frame longer than the maximum; feeding the stream in pieces gives
//! exactly what feeding it at once gives (the same frames, then the same error, if any); once
//! failed, the decoder stays failed. And `decode`, the convenience that collects frames, agrees
//! when no error comes.
#![no_main]

use audiowire_protocol::FrameDecoder;
use libfuzzer_sys::fuzz_target;

/// Every frame the decoder yields for `pieces` (through `push` and `next_frame`, as the servers
/// and the player use it), and the error that stopped it, if any.
fn run<'a>(max: u64, pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<Vec<u8>>, Option<String>) {
    let mut d = FrameDecoder::new(max);
    let mut frames = Vec::new();
    for mut piece in pieces {
        while !piece.is_empty() {
            match d.push(piece) {
                Ok(used) => piece = &piece[used..],
                Err(e) => {
                    // After an error the decoder stays failed, whatever comes next.
                    assert_eq!(
                        d.push(b"more").map_err(|e| e.to_string()),
                        Err(e.to_string())
                    );
                    return (frames, Some(e.to_string()));
                }
            }
            if let Some(f) = d.next_frame() {
                frames.push(f.to_vec());
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = u64::from(u16::from_be_bytes([data[0], data[1]]));
    let seed = usize::from(data[2]);
    let stream = &data[3..];
    let whole = run(max, std::iter::once(stream));
    assert!(whole.0.iter().all(|f| f.len() as u64 <= max));
    // Split sizes 1..=16 from the seed, cycling.
    let mut pieces = Vec::new();
    let mut rest = stream;
    let mut k = seed;
    while !rest.is_empty() {
        let n = (k % 16 + 1).min(rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    let split = run(max, pieces.into_iter());
    assert_eq!(whole, split);
    if whole.1.is_none() {
        let frames = FrameDecoder::new(max)
            .decode(stream)
            .expect("no error this time either");
        assert_eq!(frames, whole.0);
    }
});
