//! Python `struct` formats: the parser and the unpacker on arbitrary input.
//!
//! Input: 1 byte of format length n, n bytes of format text (UTF-8, lossily), then record bytes.
//! Checks: no panic; a parsed format's size is within the record limit; unpacking bytes of the
//! wrong size is an error and of the right size succeeds with `value_count` values; packing those
//! values succeeds and unpacks to the same values (compared as text, so NaN equals NaN).
#![no_main]

use audiowire_protocol::pystruct::{Format, MAX_RECORD_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let text = String::from_utf8_lossy(&rest[..n]);
    let bytes = &rest[n..];
    let Ok(format) = Format::parse(&text) else {
        return;
    };
    assert!(format.size() <= MAX_RECORD_LEN);
    assert_eq!(format.as_str(), text);
    if bytes.len() != format.size() {
        assert!(
            format.unpack(bytes).is_err(),
            "{text:?} took {} bytes",
            bytes.len()
        );
    }
    let mut record = bytes.to_vec();
    record.resize(format.size(), 0);
    let values = format
        .unpack(&record)
        .expect("a record of the right size unpacks");
    assert_eq!(values.len(), format.value_count());
    let packed = format.pack(&values).expect("unpacked values pack again");
    assert_eq!(packed.len(), format.size());
    let again = format.unpack(&packed).expect("a packed record unpacks");
    assert_eq!(format!("{values:?}"), format!("{again:?}"));
    // And the value texts parse back, as `struct send` reads them from the command line.
    let _ = format.parse_values(&values.iter().map(ToString::to_string).collect::<Vec<_>>());
});
