//! Property tests of the UDP sender's datagram decoder (`udp::decode_datagram`): arbitrary bytes
//! never panic, and a datagram is taken only when its length header matches its size and its
//! envelope is a valid message. The coverage-guided counterpart is the fuzz target
//! `udp_datagram` (docs/fuzzing.md).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use audiowire_protocol::{HEADER_LEN, Message, Report};
use audiowire_sender::udp::{datagram_error, decode_datagram};
use proptest::prelude::*;

fn framed(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_frame(&mut out).unwrap();
    out
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic(d in prop::collection::vec(any::<u8>(), 0..1500)) {
        if let Some(msg) = decode_datagram(&d) {
            let declared = u64::from_be_bytes(d[..HEADER_LEN].try_into().unwrap());
            prop_assert_eq!(declared, (d.len() - HEADER_LEN) as u64);
            prop_assert_eq!(Message::decode(&d[HEADER_LEN..]).unwrap(), msg);
        } else {
            // The log says why, in words.
            let why = datagram_error(&d);
            prop_assert!(!why.is_empty() && !why.starts_with("a valid"), "{}", why);
        }
    }

    #[test]
    fn a_header_that_disagrees_with_the_size_is_refused(
        declared in any::<u64>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // A valid Report behind a length header that is anything but its true length.
        let mut d = framed(&Message::Report(Report { received: 1, ..Report::default() }));
        let true_len = (d.len() - HEADER_LEN) as u64;
        prop_assume!(declared != true_len);
        d[..HEADER_LEN].copy_from_slice(&declared.to_be_bytes());
        prop_assert!(decode_datagram(&d).is_none());
        // And a valid datagram with bytes after it is not valid either.
        let mut longer = framed(&Message::Bye);
        longer.extend(&body);
        prop_assert_eq!(decode_datagram(&longer).is_some(), body.is_empty());
    }

    #[test]
    fn truncated_datagrams_are_refused(cut in 0usize..64) {
        let d = framed(&Message::Ping { id: 7, t1_us: 9 });
        let cut = cut % d.len();
        prop_assert!(decode_datagram(&d[..cut]).is_none());
        prop_assert_eq!(decode_datagram(&d), Some(Message::Ping { id: 7, t1_us: 9 }));
    }
}
