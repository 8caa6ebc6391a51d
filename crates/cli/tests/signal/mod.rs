//! Signal helpers for tests that compare a recording with its source when the path is not
//! bit-exact (lossy codecs, resampling, a live capture): read any WAV as floats, resample with a
//! windowed sinc, find where the source starts in the recording (cross-correlation, with a
//! fractional refinement), and measure the SNR after a best-fit gain.
#![allow(dead_code)]

use std::path::Path;

/// A WAV file as interleaved floats (full scale ±1), with its rate and channel count.
pub struct Wav {
    pub rate: u32,
    pub channels: usize,
    pub samples: Vec<f64>,
}

impl Wav {
    /// Sample frames.
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels.max(1)
    }

    /// Channel `c` alone.
    pub fn channel(&self, c: usize) -> Vec<f64> {
        self.samples
            .iter()
            .skip(c)
            .step_by(self.channels)
            .copied()
            .collect()
    }

    /// The average of the channels.
    pub fn mono(&self) -> Vec<f64> {
        self.samples
            .chunks_exact(self.channels)
            .map(|f| f.iter().sum::<f64>() / self.channels as f64)
            .collect()
    }
}

/// Reads any PCM WAV (integer or float) as floats.
pub fn read_wav(path: &Path) -> Wav {
    let mut r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let spec = r.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .map(|s| f64::from(s.unwrap_or(0.0)))
            .collect(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / f64::from(1u32 << (spec.bits_per_sample - 1));
            r.samples::<i32>()
                .map(|s| f64::from(s.unwrap_or(0)) * scale)
                .collect()
        }
    };
    Wav {
        rate: spec.sample_rate,
        channels: usize::from(spec.channels),
        samples,
    }
}

/// Band-limited resampling of one channel from `from` Hz to `to` Hz (windowed sinc, 64 taps each
/// side, Blackman window, cutoff at 0.9 of the lower Nyquist); output sample n is taken at input
/// time (n + shift) * from / to.
pub fn resample(x: &[f64], from: u32, to: u32, shift: f64) -> Vec<f64> {
    if from == to && shift == 0.0 {
        return x.to_vec();
    }
    const HALF: i64 = 64;
    let step = f64::from(from) / f64::from(to);
    let cutoff = 0.9 * (1.0f64).min(1.0 / step);
    let n_out = (x.len() as f64 / step).round() as usize;
    (0..n_out)
        .map(|n| {
            let t = (n as f64 + shift) * step;
            let centre = t.floor() as i64;
            let mut acc = 0.0;
            for k in (centre - HALF + 1)..=(centre + HALF) {
                let Some(s) = usize::try_from(k).ok().and_then(|k| x.get(k)) else {
                    continue;
                };
                let d = t - k as f64;
                let arg = std::f64::consts::PI * cutoff * d;
                let sinc = if arg.abs() < 1e-12 {
                    1.0
                } else {
                    arg.sin() / arg
                };
                let w = 0.42
                    + 0.5 * (std::f64::consts::PI * d / HALF as f64).cos()
                    + 0.08 * (2.0 * std::f64::consts::PI * d / HALF as f64).cos();
                acc += cutoff * sinc * w * s;
            }
            acc
        })
        .collect()
}

/// Normalised cross-correlation of `r[lag..]` with `s` (over their overlap).
pub fn ncc(r: &[f64], s: &[f64], lag: i64) -> f64 {
    let (mut rs, mut rr, mut ss) = (0.0, 0.0, 0.0);
    for (i, b) in s.iter().enumerate() {
        let Some(a) = usize::try_from(lag + i as i64).ok().and_then(|j| r.get(j)) else {
            continue;
        };
        rs += a * b;
        rr += a * a;
        ss += b * b;
    }
    if rr == 0.0 || ss == 0.0 {
        0.0
    } else {
        rs / (rr * ss).sqrt()
    }
}

/// Where `reference` starts in `rec`, searched over lags `lo..=hi`: (lag, correlation, fraction
/// of a sample from a parabola through the peak's neighbours).
pub fn align(rec: &[f64], reference: &[f64], lo: i64, hi: i64) -> (i64, f64, f64) {
    // Coarse on a 4x decimated signal when the range is wide, then exact around the peak.
    let (lo2, hi2) = if hi - lo > 64 {
        const D: usize = 4;
        let dec = |x: &[f64]| -> Vec<f64> { x.chunks_exact(D).map(|c| c.iter().sum()).collect() };
        let (rd, sd) = (dec(rec), dec(reference));
        let coarse = (lo / D as i64..=hi / D as i64)
            .map(|l| (l, ncc(&rd, &sd, l)))
            .fold((0, f64::MIN), |b, c| if c.1 > b.1 { c } else { b })
            .0;
        (
            (coarse * D as i64 - 2 * D as i64).max(lo),
            (coarse * D as i64 + 2 * D as i64).min(hi),
        )
    } else {
        (lo, hi)
    };
    let (lag, peak) = (lo2..=hi2)
        .map(|l| (l, ncc(rec, reference, l)))
        .fold((0, f64::MIN), |b, c| if c.1 > b.1 { c } else { b });
    let (a, c) = (ncc(rec, reference, lag - 1), ncc(rec, reference, lag + 1));
    let denom = a - 2.0 * peak + c;
    let frac = if denom < 0.0 {
        (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    (lag, peak, frac)
}

/// SNR in dB of `rec[lag..]` against `reference` after the best-fit gain, and that gain.
pub fn snr_db(rec: &[f64], reference: &[f64], lag: i64) -> (f64, f64) {
    let pairs: Vec<(f64, f64)> = reference
        .iter()
        .enumerate()
        .filter_map(|(i, &s)| {
            usize::try_from(lag + i as i64)
                .ok()
                .and_then(|j| rec.get(j))
                .map(|&r| (r, s))
        })
        .collect();
    let rs: f64 = pairs.iter().map(|(r, s)| r * s).sum();
    let ss: f64 = pairs.iter().map(|(_, s)| s * s).sum();
    let g = rs / ss.max(1e-30);
    let noise: f64 = pairs.iter().map(|(r, s)| (r - g * s).powi(2)).sum();
    (10.0 * (g * g * ss / noise.max(1e-30)).log10(), g)
}

/// SNR per channel of `rec` against `src` (brought to the recording's rate, aligned to a
/// fraction of a sample within `max_lag` frames). Returns (lag, correlation peak, SNRs).
pub fn compare(rec: &Wav, src: &Wav, max_lag: i64) -> (i64, f64, Vec<f64>) {
    assert_eq!(rec.channels, src.channels, "channel counts differ");
    let first = resample(&src.mono(), src.rate, rec.rate, 0.0);
    let (lag, peak, frac) = align(&rec.mono(), &first, -max_lag, max_lag);
    let snrs = (0..src.channels)
        .map(|c| {
            // rec[lag + frac + n] ~ src(n): rec[lag + n] ~ src(n - frac).
            let reference = resample(&src.channel(c), src.rate, rec.rate, -frac);
            snr_db(&rec.channel(c), &reference, lag).0
        })
        .collect();
    (lag, peak, snrs)
}
