//! `pystruct` against CPython: every vector in `data/struct_vectors.json` was produced by
//! Python's own `struct` module (`data/make_struct_vectors.py`). Packing gives the same bytes,
//! unpacking the same values (floats compared bit for bit), and what Python refuses is refused.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use audiowire_protocol::pystruct::{Format, Value};
use serde_json::Value as Json;

fn vectors() -> Json {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/struct_vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A typed value from the JSON: `["int", "123"]`, `["float", "<bits>"]`, `["bytes", "<hex>"]`,
/// `["bool", true]`.
fn value(v: &Json) -> Value {
    let kind = v[0].as_str().unwrap();
    match kind {
        "int" => Value::Int(v[1].as_str().unwrap().parse().unwrap()),
        "float" => Value::Float(f64::from_bits(
            u64::from_str_radix(v[1].as_str().unwrap(), 16).unwrap(),
        )),
        "bytes" => Value::Bytes(hex(v[1].as_str().unwrap())),
        "bool" => Value::Bool(v[1].as_bool().unwrap()),
        other => panic!("unknown value kind {other}"),
    }
}

fn values(v: &Json) -> Vec<Value> {
    v.as_array().unwrap().iter().map(value).collect()
}

/// Values compared exactly: floats by their bits, so NaN and −0.0 count.
fn same(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            _ => x == y,
        })
}

#[test]
fn pack_gives_the_bytes_python_gives() {
    let v = vectors();
    let cases = v["pack"].as_array().unwrap();
    assert!(cases.len() > 300);
    for case in cases {
        let text = case["format"].as_str().unwrap();
        let f = Format::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(
            f.size() as u64,
            case["size"].as_u64().unwrap(),
            "calcsize({text:?})"
        );
        let packed = f
            .pack(&values(&case["values"]))
            .unwrap_or_else(|e| panic!("pack {case}: {e}"));
        assert_eq!(packed, hex(case["packed"].as_str().unwrap()), "pack {case}");
        let back = f.unpack(&packed).unwrap();
        assert!(
            same(&back, &values(&case["unpacked"])),
            "unpack {case}: {back:?}"
        );
    }
}

#[test]
fn unpack_gives_the_values_python_gives() {
    let v = vectors();
    for case in v["unpack"].as_array().unwrap() {
        let f = Format::parse(case["format"].as_str().unwrap()).unwrap();
        let data = hex(case["bytes"].as_str().unwrap());
        let got = f.unpack(&data).unwrap();
        assert!(
            same(&got, &values(&case["values"])),
            "unpack {case}: {got:?}"
        );
    }
}

#[test]
fn formats_python_refuses_are_refused() {
    let v = vectors();
    let bad = v["bad_formats"].as_array().unwrap();
    assert!(bad.len() >= 15);
    for case in bad {
        let text = case["format"].as_str().unwrap();
        let err = Format::parse(text).expect_err(text);
        assert!(err.to_string().starts_with("bad struct format"), "{err}");
    }
}

#[test]
fn values_python_refuses_are_refused() {
    let v = vectors();
    for case in v["pack_errors"].as_array().unwrap() {
        let f = Format::parse(case["format"].as_str().unwrap()).unwrap();
        let vals = values(&case["values"]);
        assert!(
            f.pack(&vals).is_err(),
            "{case} packed, but Python said {}",
            case["python_error"]
        );
    }
}
