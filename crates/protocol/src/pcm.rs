//! PCM sample formats on the wire and conversions to and from them.
//!
//! Samples are interleaved and little-endian, exactly as in a WAV file's data chunk, at full
//! resolution: 24-bit audio travels as 3-byte samples and is never truncated to 16 bits. 8-bit
//! audio is unsigned (offset 128), as WAV stores it; in memory it is the signed value, as `hound`
//! reads it.

/// A PCM sample format on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// 8-bit unsigned integer (128 is zero).
    U8,
    /// 16-bit signed integer, little-endian.
    S16,
    /// 24-bit signed integer packed in 3 bytes, little-endian.
    S24,
    /// 32-bit signed integer, little-endian.
    S32,
    /// 32-bit IEEE float, little-endian, full scale ±1.0.
    F32,
}

impl SampleFormat {
    /// Every format, in code order.
    pub const ALL: [SampleFormat; 5] = [Self::U8, Self::S16, Self::S24, Self::S32, Self::F32];

    /// The format's one-byte code in `StreamInfo`.
    pub fn code(self) -> u8 {
        match self {
            Self::U8 => 1,
            Self::S16 => 2,
            Self::S24 => 3,
            Self::S32 => 4,
            Self::F32 => 5,
        }
    }

    /// The format with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }

    /// Bytes one sample takes on the wire.
    pub fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::S16 => 2,
            Self::S24 => 3,
            Self::S32 | Self::F32 => 4,
        }
    }

    /// Bits of resolution.
    pub fn bits(self) -> u16 {
        self.bytes() as u16 * 8
    }

    /// True for the float format.
    pub fn is_float(self) -> bool {
        self == Self::F32
    }

    /// The integer format with this many bits (8, 16, 24 or 32).
    pub fn int_with_bits(bits: u16) -> Option<Self> {
        match bits {
            8 => Some(Self::U8),
            16 => Some(Self::S16),
            24 => Some(Self::S24),
            32 => Some(Self::S32),
            _ => None,
        }
    }

    /// A short name: `u8`, `s16`, `s24`, `s32`, `f32`.
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::S16 => "s16",
            Self::S24 => "s24",
            Self::S32 => "s32",
            Self::F32 => "f32",
        }
    }

    /// Appends integer samples (signed values, as `hound` reads them) in this format.
    /// Values outside the format's range are clamped. For `F32`, values are scaled from 32 bits.
    pub fn encode_ints(self, samples: &[i32], out: &mut Vec<u8>) {
        out.reserve(samples.len() * self.bytes());
        for &s in samples {
            match self {
                Self::U8 => out.push((s.clamp(-128, 127) + 128) as u8),
                Self::S16 => out.extend_from_slice(&(s.clamp(-32768, 32767) as i16).to_le_bytes()),
                Self::S24 => {
                    out.extend_from_slice(&s.clamp(-(1 << 23), (1 << 23) - 1).to_le_bytes()[..3])
                }
                Self::S32 => out.extend_from_slice(&s.to_le_bytes()),
                Self::F32 => out.extend_from_slice(&(s as f32 / 2_147_483_648.0).to_le_bytes()),
            }
        }
    }

    /// Appends float samples (full scale ±1.0). For integer formats they are scaled, rounded
    /// half away from zero and clamped (NaN is 0); each is written straight into `out`.
    pub fn encode_floats(self, samples: &[f32], out: &mut Vec<u8>) {
        match self {
            Self::F32 => write_each(samples, out, |s| s.to_le_bytes()),
            Self::U8 => write_each(samples, out, |s| {
                [(round_scaled(s, 1 << 7).clamp(-128, 127) + 128) as u8]
            }),
            Self::S16 => write_each(samples, out, |s| {
                (round_scaled(s, 1 << 15).clamp(-32768, 32767) as i16).to_le_bytes()
            }),
            Self::S24 => write_each(samples, out, |s| {
                let [a, b, c, _] = round_scaled(s, 1 << 23)
                    .clamp(-(1 << 23), (1 << 23) - 1)
                    .to_le_bytes();
                [a, b, c]
            }),
            Self::S32 => write_each(samples, out, |s| round_scaled(s, 1 << 31).to_le_bytes()),
        }
    }

    /// Appends the signed integer value of each sample in `bytes` (a whole number of samples;
    /// a partial sample at the end is ignored). `F32` samples are scaled to 32 bits.
    pub fn decode_ints(self, bytes: &[u8], out: &mut Vec<i32>) {
        let n = self.bytes();
        out.reserve(bytes.len() / n);
        for b in bytes.chunks_exact(n) {
            out.push(match self {
                Self::U8 => i32::from(b[0]) - 128,
                Self::S16 => i32::from(i16::from_le_bytes([b[0], b[1]])),
                Self::S24 => i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8,
                Self::S32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                Self::F32 => {
                    let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    (f64::from(f) * 2_147_483_648.0).clamp(i32::MIN as f64, i32::MAX as f64) as i32
                }
            });
        }
    }

    /// Appends each sample in `bytes` as a float, full scale ±1.0.
    pub fn decode_floats(self, bytes: &[u8], out: &mut Vec<f32>) {
        let n = self.bytes();
        out.reserve(bytes.len() / n);
        if self == Self::F32 {
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            return;
        }
        let scale = 1.0 / (1i64 << (self.bits() - 1)) as f32;
        for b in bytes.chunks_exact(n) {
            let v = match self {
                Self::U8 => i32::from(b[0]) - 128,
                Self::S16 => i32::from(i16::from_le_bytes([b[0], b[1]])),
                Self::S24 => i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8,
                _ => i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            };
            out.push(v as f32 * scale);
        }
    }
}

/// `(s * scale).round()` as an `i32`, saturating (NaN is 0), without a call to `roundf`: the
/// scaled value plus one half away from zero, truncated. In `f64` that sum is exact for every
/// `f32` that can round to a nonzero `i32` (and stays below 1 in magnitude for the others), so
/// the result is the same as `f32::round`'s, ties away from zero included.
#[inline(always)]
fn round_scaled(s: f32, scale: i64) -> i32 {
    let v = f64::from(s * scale as f32);
    (v + 0.5f64.copysign(v)) as i32
}

/// Appends `encode(s)` for each sample: the bytes go straight into `out`, sized once.
#[inline(always)]
fn write_each<const N: usize>(samples: &[f32], out: &mut Vec<u8>, encode: impl Fn(f32) -> [u8; N]) {
    let start = out.len();
    out.resize(start + samples.len() * N, 0);
    for (dst, &s) in out[start..].chunks_exact_mut(N).zip(samples) {
        dst.copy_from_slice(&encode(s));
    }
}

impl std::fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for f in SampleFormat::ALL {
            assert_eq!(SampleFormat::from_code(f.code()), Some(f));
        }
        assert_eq!(SampleFormat::from_code(0), None);
        assert_eq!(SampleFormat::from_code(6), None);
    }

    #[test]
    fn byte_layouts_match_wav() {
        let mut out = Vec::new();
        SampleFormat::U8.encode_ints(&[-128, 0, 127], &mut out);
        assert_eq!(out, [0, 128, 255]);
        out.clear();
        SampleFormat::S24.encode_ints(&[-1, 0x123456, -(1 << 23)], &mut out);
        assert_eq!(out, [0xff, 0xff, 0xff, 0x56, 0x34, 0x12, 0x00, 0x00, 0x80]);
        out.clear();
        SampleFormat::S16.encode_ints(&[0x1234], &mut out);
        assert_eq!(out, [0x34, 0x12]);
    }

    #[test]
    fn floats_of_integer_formats_are_full_scale() {
        let mut f = Vec::new();
        SampleFormat::S16.decode_floats(&[0x00, 0x80, 0x00, 0x40], &mut f);
        assert_eq!(f, [-1.0, 0.5]);
        f.clear();
        SampleFormat::U8.decode_floats(&[0, 192], &mut f);
        assert_eq!(f, [-1.0, 0.5]);
    }

    /// The encoder as it was: rounded and clamped to `i32` in `f32`, collected, then clamped
    /// to the format by `encode_ints`.
    fn encode_floats_reference(format: SampleFormat, samples: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        if format == SampleFormat::F32 {
            for s in samples {
                out.extend_from_slice(&s.to_le_bytes());
            }
            return out;
        }
        let scale = (1i64 << (format.bits() - 1)) as f32;
        let ints: Vec<i32> = samples
            .iter()
            .map(|&s| (s * scale).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32)
            .collect();
        format.encode_ints(&ints, &mut out);
        out
    }

    fn assert_encodes_as_reference(samples: &[f32]) {
        for format in SampleFormat::ALL {
            let mut out = vec![0xa5];
            format.encode_floats(samples, &mut out);
            assert_eq!(out[0], 0xa5, "{format}: appends");
            let want = encode_floats_reference(format, samples);
            for (i, (got, want)) in out[1..]
                .chunks(format.bytes())
                .zip(want.chunks(format.bytes()))
                .enumerate()
            {
                assert_eq!(
                    got,
                    want,
                    "{format}: {:e} ({:#x})",
                    samples[i],
                    samples[i].to_bits()
                );
            }
            assert_eq!(out.len() - 1, want.len(), "{format}");
        }
    }

    #[test]
    fn float_encoding_matches_the_old_formula_at_the_edges() {
        // The neighbours away from and towards zero (rust-version 1.85: no `next_up`).
        let up = |x: f32| f32::from_bits(x.to_bits() + 1);
        let down = |x: f32| {
            if x == 0.0 {
                x
            } else {
                f32::from_bits(x.to_bits() - 1)
            }
        };
        let mut edges = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            down(1.0),
            up(1.0),
            up(-1.0),
            down(-1.0),
            1.5,
            -1.5,
            2.0,
            -2.0,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x8000_0001),
            f32::EPSILON,
            1e-10,
            -1e-10,
            0.3,
            -0.7,
        ];
        // Ties and their neighbours, at every format's scale: k + 0.5 steps of the format.
        for bits in [8, 16, 24, 32] {
            let scale = (1i64 << (bits - 1)) as f32;
            for k in [
                0.0f32,
                1.0,
                2.0,
                3.0,
                100.0,
                4095.0,
                32766.0,
                8_388_606.0,
                1e9,
            ] {
                for t in [k + 0.5, -(k + 0.5), k, -k] {
                    let x = t / scale;
                    edges.extend([x, up(x), down(x)]);
                }
            }
            // Just under half a step: rounds to 0 (a naive `x + 0.5` would give 1).
            edges.extend([down(0.5) / scale, -down(0.5) / scale]);
        }
        assert_encodes_as_reference(&edges);
        // Every float in a dense sweep across and beyond full scale.
        let sweep: Vec<f32> = (-300_000..=300_000).map(|i| i as f32 * 7.1e-6).collect();
        assert_encodes_as_reference(&sweep);
    }

    proptest! {
        #[test]
        fn integer_formats_round_trip_bit_exactly(raw in prop::collection::vec(any::<i32>(), 0..64)) {
            for f in [SampleFormat::U8, SampleFormat::S16, SampleFormat::S24, SampleFormat::S32] {
                let shift = 32 - f.bits();
                let samples: Vec<i32> = raw.iter().map(|s| s >> shift).collect();
                let mut bytes = Vec::new();
                f.encode_ints(&samples, &mut bytes);
                prop_assert_eq!(bytes.len(), samples.len() * f.bytes());
                let mut back = Vec::new();
                f.decode_ints(&bytes, &mut back);
                prop_assert_eq!(back, samples);
            }
        }

        #[test]
        fn float_encoding_matches_the_old_formula_for_any_bits(raw in prop::collection::vec(any::<u32>(), 0..64)) {
            let samples: Vec<f32> = raw.iter().map(|&b| f32::from_bits(b)).collect();
            assert_encodes_as_reference(&samples);
        }

        #[test]
        fn f32_round_trips_bit_exactly(raw in prop::collection::vec(any::<u32>(), 0..64)) {
            let samples: Vec<f32> = raw.iter().map(|&b| f32::from_bits(b)).collect();
            let mut bytes = Vec::new();
            SampleFormat::F32.encode_floats(&samples, &mut bytes);
            let mut back = Vec::new();
            SampleFormat::F32.decode_floats(&bytes, &mut back);
            let a: Vec<u32> = samples.iter().map(|f| f.to_bits()).collect();
            let b: Vec<u32> = back.iter().map(|f| f.to_bits()).collect();
            prop_assert_eq!(a, b);
        }
    }
}
