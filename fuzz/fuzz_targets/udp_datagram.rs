//! The UDP sender's datagram decoder (`audiowire_sender::udp::decode_datagram`) on arbitrary
//! datagrams.
//!
//! Checks: no panic; a datagram is accepted only when its length header matches its size and its
//! envelope is a valid message, the same message the envelope decodes to on its own.
#![no_main]

use audiowire_protocol::{HEADER_LEN, Message};
use audiowire_sender::udp::decode_datagram;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_datagram(data) else {
        return;
    };
    assert!(data.len() >= HEADER_LEN);
    let declared = u64::from_be_bytes(data[..HEADER_LEN].try_into().unwrap());
    assert_eq!(declared, (data.len() - HEADER_LEN) as u64);
    assert_eq!(Message::decode(&data[HEADER_LEN..]), Ok(msg));
});
