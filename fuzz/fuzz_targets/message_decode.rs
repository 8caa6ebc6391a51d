//! The message decoder on arbitrary envelopes.
//!
//! Checks: no panic; a message that decodes encodes again, and that encoding decodes to the same
//! message (the decoder and the encoder agree on every field).
#![no_main]

use audiowire_protocol::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let mut again = Vec::new();
    msg.encode(&mut again)
        .expect("a decoded message encodes: its strings fit");
    assert_eq!(Message::decode(&again).as_ref(), Ok(&msg));
    // And as a whole frame, which is the envelope behind its length.
    let mut framed = Vec::new();
    msg.encode_frame(&mut framed).expect("encodes as a frame");
    assert_eq!(framed[8..], again[..]);
    assert_eq!(
        u64::from_be_bytes(framed[..8].try_into().unwrap()),
        again.len() as u64
    );
});
