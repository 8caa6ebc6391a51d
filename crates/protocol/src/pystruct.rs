//! Records described by Python `struct` format strings: parse, pack and unpack, byte for byte as
//! CPython's `struct` module does on 64-bit Linux.
//!
//! A [`Format`] is parsed once from text such as `"!I30sd"`: an optional byte order (`@` native
//! with native sizes and alignment, `=` native order with standard sizes, `<` little-endian, `>`
//! and `!` big-endian), then items, each an optional repeat count and a type character
//! (`x c b B ? h H i I l L q Q n N e f d s p P`; `n N P` only in native mode). Whitespace between
//! items is ignored. [`Format::pack`] turns [`Value`]s into bytes and [`Format::unpack`] turns bytes
//! back into values with Python's rules (strings padded or cut, `p` Pascal strings, `?` from any
//! truth value, `e` IEEE half floats rounded half to even). [`Format::parse_values`] reads values
//! from command-line text, strictly: a string longer than its field is an error here, where
//! Python would cut it silently.
//!
//! Sans-IO and panic-free on any input: errors name the position in the format string and the
//! reason. The tests in `crates/protocol/tests/pystruct_vectors.rs` compare every result with
//! vectors CPython produced (`crates/protocol/tests/data/make_struct_vectors.py`).

use std::fmt;

use crate::error::{Error, Result};

/// The largest record a format may describe, in bytes. It keeps a framed `Struct` message well
/// under the frame limit and bounds the buffer a raw listener needs.
pub const MAX_RECORD_LEN: usize = 65_536;

/// The type characters, for error messages.
const CODES: &str = "x c b B ? h H i I l L q Q n N e f d s p P";

/// The byte order and size rules of a format, from its first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// `@` (or no prefix): the machine's byte order, native sizes and alignment.
    Native,
    /// `=`: the machine's byte order, standard sizes, no alignment.
    NativeStandard,
    /// `<`: little-endian, standard sizes, no alignment.
    Little,
    /// `>` or `!` (network order): big-endian, standard sizes, no alignment.
    Big,
}

impl ByteOrder {
    fn from_char(c: char) -> Option<Self> {
        match c {
            '@' => Some(Self::Native),
            '=' => Some(Self::NativeStandard),
            '<' => Some(Self::Little),
            '>' | '!' => Some(Self::Big),
            _ => None,
        }
    }

    fn little_endian(self) -> bool {
        match self {
            Self::Native | Self::NativeStandard => cfg!(target_endian = "little"),
            Self::Little => true,
            Self::Big => false,
        }
    }
}

/// One typed value of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer (`b B h H i I l L q Q n N P`); packing also takes it for `? e f d`.
    Int(i128),
    /// A truth value (`?`); packing also takes it as 0 or 1 for integers and floats.
    Bool(bool),
    /// A float (`e f d`).
    Float(f64),
    /// Bytes (`c` one byte, `s` and `p` strings).
    Bytes(Vec<u8>),
}

impl Value {
    /// Python's truth value of the value, as `?` packs it.
    fn truthy(&self) -> bool {
        match self {
            Value::Int(v) => *v != 0,
            Value::Bool(b) => *b,
            Value::Float(f) => *f != 0.0,
            Value::Bytes(b) => !b.is_empty(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a bool",
            Value::Float(_) => "a float",
            Value::Bytes(_) => "bytes",
        }
    }
}

impl fmt::Display for Value {
    /// A short rendering for error messages: numbers as written, bytes as Python shows them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bytes(b) => {
                f.write_str("b'")?;
                for &c in b.iter().take(32) {
                    match c {
                        b'\'' | b'\\' => write!(f, "\\{}", char::from(c))?,
                        0x20..=0x7e => write!(f, "{}", char::from(c))?,
                        _ => write!(f, "\\x{c:02x}")?,
                    }
                }
                f.write_str(if b.len() > 32 { "...'" } else { "'" })
            }
        }
    }
}

/// One item of a format: a type character with its repeat count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The type character.
    pub code: char,
    /// The repeat count (for `s` and `p` the string's size in bytes).
    pub count: usize,
    /// Where the item starts in the record, in bytes (after alignment).
    pub offset: usize,
    /// Where the item starts in the format string, as a character index from 0 (its count's
    /// first digit, or its type character).
    pub position: usize,
}

impl Field {
    /// How many values the item takes: none for `x`, one for `s` and `p`, else its count.
    pub fn values(&self) -> usize {
        match self.code {
            'x' => 0,
            's' | 'p' => 1,
            _ => self.count,
        }
    }
}

/// Size and alignment of a type character under `order`, or `None` where it does not exist.
fn size_align(code: char, order: ByteOrder) -> Option<(usize, usize)> {
    let native = order == ByteOrder::Native;
    let size = match code {
        'x' | 'c' | 'b' | 'B' | '?' | 's' | 'p' => 1,
        'h' | 'H' | 'e' => 2,
        'i' | 'I' | 'f' => 4,
        'l' | 'L' => {
            if native {
                8
            } else {
                4
            }
        }
        'q' | 'Q' | 'd' => 8,
        'n' | 'N' | 'P' if native => 8,
        _ => return None,
    };
    let align = if native && !matches!(code, 's' | 'p' | 'x') {
        size
    } else {
        1
    };
    Some((size, align))
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    text: String,
    order: ByteOrder,
    fields: Vec<Field>,
    size: usize,
    values: usize,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Inclusive range of an integer type character, as `(low, high)`.
fn int_range(code: char, size: usize) -> Option<(i128, i128)> {
    let bits = 8 * size as u32;
    match code {
        'b' | 'h' | 'i' | 'l' | 'q' | 'n' => {
            Some((-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1))
        }
        'B' | 'H' | 'I' | 'L' | 'Q' | 'N' => Some((0, (1i128 << bits) - 1)),
        // A pointer takes any value a signed or an unsigned pointer-sized integer can hold.
        'P' => Some((-(1i128 << (bits - 1)), (1i128 << bits) - 1)),
        _ => None,
    }
}

impl Format {
    /// Parses a format string as Python's `struct.calcsize` does, refusing what it refuses, and
    /// records larger than [`MAX_RECORD_LEN`].
    pub fn parse(text: &str) -> Result<Format> {
        let bad = |position: usize, reason: String| Error::StructFormat {
            format: text.to_string(),
            position,
            reason,
        };
        let chars: Vec<char> = text.chars().collect();
        let (order, mut i) = match chars.first().and_then(|&c| ByteOrder::from_char(c)) {
            Some(order) => (order, 1),
            None => (ByteOrder::Native, 0),
        };
        let mut fields = Vec::new();
        let mut size = 0usize;
        let mut values = 0usize;
        while i < chars.len() {
            let c = chars[i];
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let position = i;
            let mut count = 1usize;
            if c.is_ascii_digit() {
                let mut n = 0usize;
                while let Some(d) = chars.get(i).and_then(|c| c.to_digit(10)) {
                    n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(d as usize))
                        .filter(|&n| n <= MAX_RECORD_LEN)
                        .ok_or_else(|| {
                            bad(
                                position,
                                format!(
                                    "the repeat count is too large (a record holds at most {MAX_RECORD_LEN} bytes)"
                                ),
                            )
                        })?;
                    i += 1;
                }
                count = n;
                match chars.get(i) {
                    None => {
                        return Err(bad(
                            position,
                            format!("the repeat count {n} has no type character after it"),
                        ));
                    }
                    Some(w) if w.is_ascii_whitespace() => {
                        return Err(bad(
                            i,
                            format!(
                                "the repeat count {n} must be followed directly by a type character, not a space"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            let code = chars[i];
            let Some((item_size, align)) = size_align(code, order) else {
                let reason = if ByteOrder::from_char(code).is_some() {
                    format!("the byte order '{code}' must be the first character")
                } else if matches!(code, 'n' | 'N' | 'P') {
                    format!(
                        "'{code}' exists only in native mode (start the format with '@' or with no byte order)"
                    )
                } else {
                    format!("{code:?} is not a struct type character (use one of {CODES})")
                };
                return Err(bad(i, reason));
            };
            let offset = size.next_multiple_of(align);
            size = count
                .checked_mul(item_size)
                .and_then(|n| n.checked_add(offset))
                .filter(|&n| n <= MAX_RECORD_LEN)
                .ok_or_else(|| {
                    bad(
                        position,
                        format!(
                            "the record would be longer than {MAX_RECORD_LEN} bytes, the most audiowire handles"
                        ),
                    )
                })?;
            let field = Field {
                code,
                count,
                offset,
                position,
            };
            values += field.values();
            fields.push(field);
            i += 1;
        }
        Ok(Format {
            text: text.to_string(),
            order,
            fields,
            size,
            values,
        })
    }

    /// The format string as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The byte order and size rules.
    pub fn order(&self) -> ByteOrder {
        self.order
    }

    /// The items, in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Bytes in one record: Python's `struct.calcsize`.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How many values one record holds.
    pub fn value_count(&self) -> usize {
        self.values
    }

    /// The item each value belongs to, in value order.
    pub fn value_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields
            .iter()
            .flat_map(|f| std::iter::repeat_n(f, f.values()))
    }

    fn item_size(&self, code: char) -> usize {
        size_align(code, self.order).map_or(1, |(s, _)| s)
    }

    fn value_error(&self, index: usize, field: &Field, value: String, reason: String) -> Error {
        Error::StructValue {
            format: self.text.clone(),
            index: index + 1,
            value,
            code: field.code,
            position: field.position,
            reason,
        }
    }

    fn check_count(&self, got: usize) -> Result<()> {
        if got == self.values {
            Ok(())
        } else {
            Err(Error::StructValueCount {
                format: self.text.clone(),
                expected: self.values,
                got,
            })
        }
    }

    /// Packs one record, as `struct.pack(format, *values)` does.
    pub fn pack(&self, values: &[Value]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size);
        self.pack_into(values, &mut out)?;
        Ok(out)
    }

    /// Appends one packed record to `out`; on error `out` is left as it was.
    pub fn pack_into(&self, values: &[Value], out: &mut Vec<u8>) -> Result<()> {
        self.check_count(values.len())?;
        let start = out.len();
        out.resize(start + self.size, 0);
        let record = &mut out[start..];
        if let Err(e) = self.pack_fields(values, record) {
            out.truncate(start);
            return Err(e);
        }
        Ok(())
    }

    fn pack_fields(&self, values: &[Value], record: &mut [u8]) -> Result<()> {
        let little = self.order.little_endian();
        let mut vi = 0;
        for field in &self.fields {
            let size = self.item_size(field.code);
            match field.code {
                'x' => {}
                's' | 'p' => {
                    let v = &values[vi];
                    let Value::Bytes(b) = v else {
                        return Err(self.value_error(
                            vi,
                            field,
                            v.to_string(),
                            format!("expected bytes, got {}", v.kind()),
                        ));
                    };
                    let dst = &mut record[field.offset..field.offset + field.count];
                    if field.code == 's' {
                        let n = b.len().min(dst.len());
                        dst[..n].copy_from_slice(&b[..n]);
                    } else if let Some((len, rest)) = dst.split_first_mut() {
                        // As CPython: copy what fits, but the length byte saturates at 255.
                        let n = b.len().min(rest.len());
                        rest[..n].copy_from_slice(&b[..n]);
                        *len = n.min(255) as u8;
                    }
                    vi += 1;
                }
                code => {
                    for k in 0..field.count {
                        let v = &values[vi];
                        let at = field.offset + k * size;
                        let dst = &mut record[at..at + size];
                        self.pack_one(code, size, little, v, dst)
                            .map_err(|reason| self.value_error(vi, field, v.to_string(), reason))?;
                        vi += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Packs one scalar into `dst`; the error is the reason, for the caller to wrap.
    fn pack_one(
        &self,
        code: char,
        size: usize,
        little: bool,
        v: &Value,
        dst: &mut [u8],
    ) -> std::result::Result<(), String> {
        let put = |dst: &mut [u8], bytes: &[u8]| {
            // `bytes` is little-endian; take the low `size` bytes.
            for (k, b) in bytes.iter().take(dst.len()).enumerate() {
                let j = if little { k } else { dst.len() - 1 - k };
                dst[j] = *b;
            }
        };
        match code {
            'c' => match v {
                Value::Bytes(b) if b.len() == 1 => dst[0] = b[0],
                _ => return Err(format!("expected exactly one byte, got {}", describe(v))),
            },
            '?' => dst[0] = u8::from(v.truthy()),
            'e' | 'f' | 'd' => {
                let x = match v {
                    Value::Float(x) => *x,
                    Value::Int(i) => *i as f64,
                    Value::Bool(b) => f64::from(u8::from(*b)),
                    Value::Bytes(_) => return Err(format!("expected a number, got {}", v.kind())),
                };
                match code {
                    'd' => put(dst, &x.to_le_bytes()),
                    'f' => {
                        let y = x as f32;
                        if y.is_infinite() && x.is_finite() {
                            return Err(format!(
                                "{x:?} is too large for '{code}' (a 32-bit float, at most ±3.4028235e38)"
                            ));
                        }
                        put(dst, &y.to_le_bytes());
                    }
                    _ => {
                        let h = f64_to_f16(x).ok_or_else(|| {
                            format!("{x:?} is too large for 'e' (a 16-bit float, at most ±65504)")
                        })?;
                        put(dst, &h.to_le_bytes());
                    }
                }
            }
            _ => {
                let i = match v {
                    Value::Int(i) => *i,
                    Value::Bool(b) => i128::from(*b),
                    _ => return Err(format!("expected an integer, got {}", v.kind())),
                };
                let (lo, hi) = int_range(code, size).unwrap_or((0, 0));
                if i < lo || i > hi {
                    return Err(format!("{i} is out of range for '{code}' ({lo} to {hi})"));
                }
                put(dst, &i.to_le_bytes());
            }
        }
        Ok(())
    }

    /// Unpacks one record, as `struct.unpack(format, data)` does. `data` must be exactly
    /// [`Format::size`] bytes.
    pub fn unpack(&self, data: &[u8]) -> Result<Vec<Value>> {
        if data.len() != self.size {
            return Err(Error::StructRecordSize {
                format: self.text.clone(),
                expected: self.size,
                got: data.len(),
            });
        }
        let little = self.order.little_endian();
        let mut out = Vec::with_capacity(self.values);
        for field in &self.fields {
            let size = self.item_size(field.code);
            let bytes = &data[field.offset..field.offset + field.count * size];
            match field.code {
                'x' => {}
                's' => out.push(Value::Bytes(bytes.to_vec())),
                'p' => out.push(Value::Bytes(match bytes.split_first() {
                    Some((&n, rest)) => rest[..usize::from(n).min(rest.len())].to_vec(),
                    None => Vec::new(),
                })),
                code => {
                    for raw in bytes.chunks_exact(size) {
                        let mut le = [0u8; 16];
                        for (k, b) in raw.iter().enumerate() {
                            le[if little { k } else { size - 1 - k }] = *b;
                        }
                        let unsigned = u128::from_le_bytes(le);
                        out.push(match code {
                            'c' => Value::Bytes(vec![raw[0]]),
                            '?' => Value::Bool(raw[0] != 0),
                            'e' => Value::Float(f16_to_f64(unsigned as u16)),
                            'f' => Value::Float(f64::from(f32::from_bits(unsigned as u32))),
                            'd' => Value::Float(f64::from_bits(unsigned as u64)),
                            'b' | 'h' | 'i' | 'l' | 'q' | 'n' => {
                                // Sign-extend from `size` bytes.
                                let shift = 128 - 8 * size as u32;
                                Value::Int(((unsigned << shift) as i128) >> shift)
                            }
                            _ => Value::Int(unsigned as i128),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads one record's values from text, one per value (as typed on a command line):
    /// integers in decimal, floats as Rust and Python write them (`0.5`, `1e-3`, `inf`, `nan`),
    /// `?` as `true`/`false`/`1`/`0`, `c` as one byte of UTF-8, `s` and `p` as UTF-8 text that must
    /// fit the field.
    pub fn parse_values<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Value>> {
        self.check_count(texts.len())?;
        let mut out = Vec::with_capacity(texts.len());
        for (vi, (field, text)) in self.value_fields().zip(texts).enumerate() {
            let text = text.as_ref();
            let fail = |reason: String| self.value_error(vi, field, format!("{text:?}"), reason);
            let value = match field.code {
                's' | 'p' => {
                    let room = if field.code == 's' {
                        field.count
                    } else {
                        field.count.saturating_sub(1).min(255)
                    };
                    if text.len() > room {
                        return Err(fail(format!(
                            "{} bytes of UTF-8 do not fit, '{}{}' holds at most {room}",
                            text.len(),
                            field.count,
                            field.code
                        )));
                    }
                    Value::Bytes(text.as_bytes().to_vec())
                }
                'c' => {
                    if text.len() != 1 {
                        return Err(fail(format!(
                            "expected exactly one byte, got {} bytes of UTF-8",
                            text.len()
                        )));
                    }
                    Value::Bytes(text.as_bytes().to_vec())
                }
                '?' => match text.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Value::Bool(true),
                    "false" | "0" | "no" => Value::Bool(false),
                    _ => return Err(fail("not a bool (write true, false, 1 or 0)".into())),
                },
                'e' | 'f' | 'd' => match text.trim().parse::<f64>() {
                    Ok(x) => Value::Float(x),
                    Err(_) => return Err(fail("not a number".into())),
                },
                _ => match text.trim().parse::<i128>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => return Err(fail("not an integer".into())),
                },
            };
            out.push(value);
        }
        // Range and size checks are pack's: run it so every value error surfaces here.
        self.pack(&out)?;
        Ok(out)
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Bytes(b) => format!("{} bytes", b.len()),
        other => other.kind().to_string(),
    }
}

/// `m >> shift`, rounded to nearest, ties to even.
fn shr_round_even(m: u64, shift: u32) -> u64 {
    if shift == 0 {
        return m;
    }
    if shift > 64 {
        return 0; // m < 2^53: far below half of one unit
    }
    let m = u128::from(m);
    let q = m >> shift;
    let rem = m & ((1u128 << shift) - 1);
    let half = 1u128 << (shift - 1);
    let up = rem > half || (rem == half && q & 1 == 1);
    (q + u128::from(up)) as u64
}

/// An IEEE 754 binary16 from a double, rounded to nearest, ties to even, as CPython packs `e`.
/// `None` when a finite value is too large (it would round to 65520 or more).
pub fn f64_to_f16(x: f64) -> Option<u16> {
    let sign: u16 = if x.is_sign_negative() { 0x8000 } else { 0 };
    if x.is_nan() {
        return Some(sign | 0x7e00);
    }
    if x.is_infinite() {
        return Some(sign | 0x7c00);
    }
    if x == 0.0 {
        return Some(sign);
    }
    // |x| = m × 2^e exactly.
    let bits = x.abs().to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (m, e) = if biased == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), biased - 1075)
    };
    let log2 = 63 - m.leading_zeros() as i32 + e;
    // The half's unit in the last place: 2^-24 for subnormals, 2^(log2 - 10) for normals.
    let mut qe = if log2 < -14 { -24 } else { log2 - 10 };
    let shift = qe - e;
    let mut q = if shift <= 0 {
        m << (-shift) as u32
    } else {
        shr_round_even(m, shift as u32)
    };
    if q == 1 << 11 {
        // Rounding carried into the next binade.
        q = 1 << 10;
        qe += 1;
    }
    if q < 1 << 10 {
        // Subnormal (q == 1024 at qe == -24 is the smallest normal and encodes correctly below).
        return Some(sign | q as u16);
    }
    let biased_half = qe + 10 + 15;
    if biased_half >= 31 {
        return None;
    }
    Some(sign | ((biased_half as u16) << 10) | (q as u16 - (1 << 10)))
}

/// A double from an IEEE 754 binary16. NaNs come back as the quiet NaN of their sign, as CPython
/// unpacks them.
pub fn f16_to_f64(h: u16) -> f64 {
    let negative = h & 0x8000 != 0;
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    let magnitude = match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::from_bits(0x7ff8_0000_0000_0000),
        _ => (1024.0 + frac) * 2f64.powi(exp - 25),
    };
    if negative { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(format: &str) -> String {
        Format::parse(format).unwrap_err().to_string()
    }

    #[test]
    fn calcsize_matches_python_for_common_formats() {
        for (f, size) in [
            ("!I30sd", 42),
            ("@bhiq", 16),
            ("@cid", 16),
            ("@llh0l", 24),
            ("<hHiIlLqQ", 36),
            ("=l", 4),
            ("@l", 8),
            ("", 0),
            ("3x", 3),
            ("@?xP", 16),
            ("i i", 8),
        ] {
            assert_eq!(Format::parse(f).unwrap().size(), size, "{f}");
        }
    }

    #[test]
    fn pack_network_order_record() {
        let f = Format::parse("!I30sd").unwrap();
        let v = [
            Value::Int(3),
            Value::Bytes(b"hello".to_vec()),
            Value::Float(0.5),
        ];
        let bytes = f.pack(&v).unwrap();
        let mut want = vec![0, 0, 0, 3];
        want.extend_from_slice(b"hello");
        want.extend_from_slice(&[0; 25]);
        want.extend_from_slice(&0.5f64.to_be_bytes());
        assert_eq!(bytes, want);
        let back = f.unpack(&bytes).unwrap();
        let mut padded = b"hello".to_vec();
        padded.resize(30, 0);
        assert_eq!(
            back,
            [Value::Int(3), Value::Bytes(padded), Value::Float(0.5)]
        );
    }

    #[test]
    fn bad_formats_name_the_position_and_reason() {
        assert_eq!(
            err("!I30z"),
            "bad struct format \"!I30z\" at position 4: 'z' is not a struct type character (use one of x c b B ? h H i I l L q Q n N e f d s p P)"
        );
        assert_eq!(
            err("!I30"),
            "bad struct format \"!I30\" at position 2: the repeat count 30 has no type character after it"
        );
        assert_eq!(
            err("<i<"),
            "bad struct format \"<i<\" at position 2: the byte order '<' must be the first character"
        );
        assert_eq!(
            err("<n"),
            "bad struct format \"<n\" at position 1: 'n' exists only in native mode (start the format with '@' or with no byte order)"
        );
        assert_eq!(
            err("2 i"),
            "bad struct format \"2 i\" at position 1: the repeat count 2 must be followed directly by a type character, not a space"
        );
        assert_eq!(
            err("99999999999i"),
            "bad struct format \"99999999999i\" at position 0: the repeat count is too large (a record holds at most 65536 bytes)"
        );
        assert_eq!(
            err("!40000i"),
            "bad struct format \"!40000i\" at position 1: the record would be longer than 65536 bytes, the most audiowire handles"
        );
    }

    #[test]
    fn bad_values_name_the_value_the_item_and_the_reason() {
        let f = Format::parse("!I30sd").unwrap();
        let e = |vals: &[&str]| f.parse_values(vals).unwrap_err().to_string();
        assert_eq!(
            e(&["x", "hello", "0.5"]),
            "struct value 1 (\"x\") for 'I' at position 1 of format \"!I30sd\": not an integer"
        );
        assert_eq!(
            e(&["-1", "hello", "0.5"]),
            "struct value 1 (-1) for 'I' at position 1 of format \"!I30sd\": -1 is out of range for 'I' (0 to 4294967295)"
        );
        assert_eq!(
            e(&["3", &"a".repeat(31), "0.5"]),
            format!(
                "struct value 2 ({:?}) for 's' at position 2 of format \"!I30sd\": 31 bytes of UTF-8 do not fit, '30s' holds at most 30",
                "a".repeat(31)
            )
        );
        assert_eq!(
            e(&["3", "hello", "half"]),
            "struct value 3 (\"half\") for 'd' at position 5 of format \"!I30sd\": not a number"
        );
        assert_eq!(
            e(&["3", "hello"]),
            "struct format \"!I30sd\" takes 3 values, got 2"
        );
        let h = Format::parse("<e").unwrap();
        assert_eq!(
            h.parse_values(&["70000"]).unwrap_err().to_string(),
            "struct value 1 (70000.0) for 'e' at position 1 of format \"<e\": 70000.0 is too large for 'e' (a 16-bit float, at most ±65504)"
        );
    }

    #[test]
    fn unpack_of_the_wrong_length_is_an_error() {
        let f = Format::parse("!I30sd").unwrap();
        assert_eq!(
            f.unpack(&[0; 41]).unwrap_err().to_string(),
            "a record of struct format \"!I30sd\" is 42 bytes, got 41"
        );
    }

    #[test]
    fn half_floats_round_half_to_even_and_overflow_like_python() {
        assert_eq!(f64_to_f16(1.0), Some(0x3c00));
        assert_eq!(f64_to_f16(65504.0), Some(0x7bff));
        assert_eq!(f64_to_f16(65519.99), Some(0x7bff));
        assert_eq!(f64_to_f16(65520.0), None);
        assert_eq!(f64_to_f16(2f64.powi(-24)), Some(1));
        assert_eq!(f64_to_f16(2f64.powi(-25)), Some(0)); // a tie, to even
        assert_eq!(f64_to_f16(3.0 * 2f64.powi(-25)), Some(2)); // a tie, to even
        assert_eq!(f64_to_f16(2049.0), Some(0x6800)); // a tie, to even (2048)
        assert_eq!(f64_to_f16(2051.0), Some(0x6802)); // a tie, to even (2052)
        assert_eq!(f64_to_f16(-0.0), Some(0x8000));
        assert_eq!(f64_to_f16(f64::NAN), Some(0x7e00));
        assert_eq!(f16_to_f64(0x7bff), 65504.0);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert!(f16_to_f64(0x7e01).is_nan());
        for h in 0..=u16::MAX {
            let x = f16_to_f64(h);
            if !x.is_nan() {
                assert_eq!(f64_to_f16(x), Some(h), "{h:#06x}");
            }
        }
    }

    #[test]
    fn p_strings_and_zero_sized_items_never_panic() {
        let f = Format::parse("0p0s3p").unwrap();
        assert_eq!(f.size(), 3);
        let v = [
            Value::Bytes(b"abc".to_vec()),
            Value::Bytes(b"abc".to_vec()),
            Value::Bytes(b"abc".to_vec()),
        ];
        assert_eq!(f.pack(&v).unwrap(), [2, b'a', b'b']);
        assert_eq!(
            f.unpack(&[9, b'a', b'b']).unwrap(),
            [
                Value::Bytes(vec![]),
                Value::Bytes(vec![]),
                Value::Bytes(b"ab".to_vec())
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_formats_and_bytes_never_panic(
            format in "[@=<>! 0-9xcbB?hHiIlLqQnNefdspPz]{0,12}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            if let Ok(f) = Format::parse(&format) {
                let mut data = bytes.clone();
                data.resize(f.size(), 0);
                let values = f.unpack(&data).unwrap();
                proptest::prop_assert_eq!(values.len(), f.value_count());
                let repacked = f.pack(&values).unwrap();
                proptest::prop_assert_eq!(f.unpack(&repacked).unwrap().len(), values.len());
            }
        }

        #[test]
        fn unpack_takes_arbitrary_bytes_of_any_length(
            format in "[@=<>!]?([0-9]{0,2}[xcbB?hHiIlLqQnNefdspP ]){0,8}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160),
        ) {
            // Any length: the wrong size is an error, never a panic; the right size unpacks, and
            // packing the values gives a record that unpacks to the same values (as text, so
            // NaN equals NaN).
            if let Ok(f) = Format::parse(&format) {
                match f.unpack(&bytes) {
                    Ok(values) => {
                        proptest::prop_assert_eq!(bytes.len(), f.size());
                        let again = f.unpack(&f.pack(&values).unwrap()).unwrap();
                        proptest::prop_assert_eq!(format!("{values:?}"), format!("{again:?}"));
                    }
                    Err(_) => proptest::prop_assert_ne!(bytes.len(), f.size()),
                }
            }
        }

        #[test]
        fn any_unicode_format_parses_or_names_a_position(format in "\\PC{0,16}") {
            if let Err(e) = Format::parse(&format) {
                let Error::StructFormat { position, .. } = e else {
                    return Err(proptest::test_runner::TestCaseError::fail(format!("{e:?}")));
                };
                proptest::prop_assert!(position <= format.chars().count());
            }
        }
    }
}
