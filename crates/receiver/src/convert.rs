//! Converting a stream for a device that cannot take it as it is: channel mapping, then
//! resampling with rubato's asynchronous sinc resampler. Runs on the feeding thread, never in the
//! audio callback.
//!
//! Channel mapping: mono goes to every output channel; N to 1 averages; otherwise each output
//! channel takes the input channel of the same index, extra outputs are silent and extra inputs
//! are folded onto `index % outputs` (averaged).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Adjustable, Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::error::{Error, Result};

/// Input frames per resampler call: about 5 ms at 48 kHz.
const CHUNK: usize = 256;

/// Maps channels and resamples, chunk by chunk.
pub struct Converter {
    in_channels: usize,
    out_channels: usize,
    ratio: f64,
    relative: f64,
    resampler: Option<Async<f32>>,
    /// Channel-mapped input waiting for a whole resampler chunk.
    pending: Vec<f32>,
    /// Resampler output scratch.
    scratch: Vec<f32>,
    /// Output frames still to drop: the resampler's delay, so output lines up with input.
    trim: usize,
    frames_in: u64,
    /// Frames written to the output.
    emitted: u64,
    /// Frames the resampler produced (after the trim). While bypassing, its output is computed
    /// but not used; when the ratio first leaves 1, output continues with resampled frame
    /// number `emitted`, which lines up with the input the bypass had reached.
    produced: u64,
    /// True while the ratio is exactly 1 at equal rates: input passes through bit-exactly.
    bypass: bool,
}

impl std::fmt::Debug for Converter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converter")
            .field("in_channels", &self.in_channels)
            .field("out_channels", &self.out_channels)
            .field("ratio", &self.ratio)
            .finish_non_exhaustive()
    }
}

impl Converter {
    /// A converter from `in_rate`/`in_channels` to `out_rate`/`out_channels`. With `adjustable`
    /// it always resamples, so [`Converter::set_ratio`] can steer it (drift control); otherwise
    /// equal rates pass through untouched.
    pub fn new(
        in_rate: u32,
        in_channels: u16,
        out_rate: u32,
        out_channels: u16,
        adjustable: bool,
    ) -> Result<Self> {
        if in_rate == 0 || out_rate == 0 || in_channels == 0 || out_channels == 0 {
            return Err(Error::Convert(format!(
                "{in_channels} channels at {in_rate} Hz to {out_channels} channels at {out_rate} Hz"
            )));
        }
        let ratio = f64::from(out_rate) / f64::from(in_rate);
        let (resampler, trim, scratch) = if in_rate == out_rate && !adjustable {
            (None, 0, Vec::new())
        } else {
            let params = sinc_params();
            let r = Async::<f32>::new_sinc(
                ratio,
                1.1,
                &params,
                CHUNK,
                usize::from(out_channels),
                FixedAsync::Input,
            )
            .map_err(|e| Error::Convert(e.to_string()))?;
            // At equal rates the output must line up with the input to the sample, so the
            // bypass can hand over to the resampler seamlessly: measure the delay.
            let trim = if in_rate == out_rate {
                measured_delay()?
            } else {
                r.output_delay()
            };
            let scratch = vec![0.0; r.output_frames_max() * usize::from(out_channels)];
            (Some(r), trim, scratch)
        };
        Ok(Self {
            in_channels: in_channels.into(),
            out_channels: out_channels.into(),
            ratio,
            relative: 1.0,
            resampler,
            pending: Vec::new(),
            scratch,
            trim,
            frames_in: 0,
            emitted: 0,
            produced: 0,
            bypass: adjustable && in_rate == out_rate,
        })
    }

    /// Sets the ratio relative to the nominal one (1.0 ± 0.5 % for drift control). Ignored by a
    /// converter made without `adjustable` and equal rates.
    pub fn set_ratio(&mut self, relative: f64) -> Result<()> {
        if (relative - self.relative).abs() < 1e-9 {
            return Ok(());
        }
        if let Some(r) = self.resampler.as_mut() {
            r.set_resample_ratio_relative(relative, true)
                .map_err(|e| Error::Convert(e.to_string()))?;
            self.relative = relative;
            // From here on the resampler's output is used (for the rest of the stream).
            self.bypass = false;
        }
        Ok(())
    }

    /// True when the stream's rate or channel count is changed on the way to the output.
    pub fn changes_format(&self) -> bool {
        self.in_channels != self.out_channels || (self.ratio - 1.0).abs() > 1e-12
    }

    /// True when the converter passes samples through unchanged.
    pub fn is_identity(&self) -> bool {
        (self.resampler.is_none() || self.bypass) && self.in_channels == self.out_channels
    }

    /// Converts interleaved `input` and appends what is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let frames = (input.len() / self.in_channels) as u64;
        self.frames_in += frames;
        if self.resampler.is_none() {
            map_channels(input, self.in_channels, self.out_channels, out);
            self.emitted += frames;
            return Ok(());
        }
        let start = self.pending.len();
        map_channels(
            input,
            self.in_channels,
            self.out_channels,
            &mut self.pending,
        );
        if self.bypass {
            out.extend_from_slice(&self.pending[start..]);
            self.emitted += frames;
        }
        self.run(out, false)
    }

    /// Flushes what is held back (the resampler's delay) at the end of the stream.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<()> {
        if self.resampler.is_none() || self.bypass {
            return Ok(());
        }
        self.run(out, true)
    }

    fn run(&mut self, out: &mut Vec<f32>, flush: bool) -> Result<()> {
        let ch = self.out_channels;
        let expected_total = (self.frames_in as f64 * self.ratio * self.relative).round() as u64;
        let Some(r) = self.resampler.as_mut() else {
            return Ok(());
        };
        // Bounded: each pass consumes a chunk of input, and flushing stops once the expected
        // output length is reached (at most a few chunks of delay).
        for _ in 0..1_000_000 {
            let need = r.input_frames_next();
            let have = self.pending.len() / ch;
            if have < need {
                if !flush || self.produced >= expected_total {
                    break;
                }
                self.pending.resize(need * ch, 0.0);
            }
            let input = InterleavedSlice::new(&self.pending[..need * ch], ch, need)
                .map_err(|e| Error::Convert(e.to_string()))?;
            let frames_max = self.scratch.len() / ch;
            let mut output = InterleavedSlice::new_mut(&mut self.scratch, ch, frames_max)
                .map_err(|e| Error::Convert(e.to_string()))?;
            let (used, made) = r
                .process_into_buffer(&input, &mut output, None)
                .map_err(|e| Error::Convert(e.to_string()))?;
            self.pending.drain(..used * ch);
            let skip = self.trim.min(made);
            self.trim -= skip;
            let mut keep = made - skip;
            if flush {
                keep = keep.min(expected_total.saturating_sub(self.produced) as usize);
            }
            // Frames the output already has (passed through before the switch) are dropped.
            let first = self.produced;
            self.produced += keep as u64;
            if !self.bypass && self.produced > self.emitted {
                let from = (self.emitted.max(first) - first) as usize;
                out.extend_from_slice(&self.scratch[(skip + from) * ch..(skip + keep) * ch]);
                self.emitted = self.produced;
            }
        }
        Ok(())
    }
}

fn sinc_params() -> SincInterpolationParameters {
    SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
        .oversampling_factor(128)
        .interpolation(SincInterpolationType::Cubic)
}

/// The true delay of the sinc resampler at ratio 1, in frames: where an impulse comes out.
/// (The reported `output_delay` can be off by a frame; a seamless hand-over needs it exact.)
fn measured_delay() -> Result<usize> {
    let err = |e: &dyn std::fmt::Display| Error::Convert(e.to_string());
    let mut r = Async::<f32>::new_sinc(1.0, 1.1, &sinc_params(), CHUNK, 1, FixedAsync::Input)
        .map_err(|e| err(&e))?;
    let mut input = vec![0.0f32; CHUNK];
    input[0] = 1.0;
    let mut scratch = vec![0.0f32; r.output_frames_max()];
    let mut response = Vec::new();
    for _ in 0..4 {
        let inp = InterleavedSlice::new(&input[..], 1, CHUNK).map_err(|e| err(&e))?;
        let frames = scratch.len();
        let mut outp =
            InterleavedSlice::new_mut(&mut scratch[..], 1, frames).map_err(|e| err(&e))?;
        let (_, made) = r
            .process_into_buffer(&inp, &mut outp, None)
            .map_err(|e| err(&e))?;
        response.extend_from_slice(&scratch[..made]);
        input[0] = 0.0;
    }
    Ok(response
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .map_or(0, |(i, _)| i))
}

/// Appends `input` (interleaved, `from` channels) mapped to `to` channels.
pub fn map_channels(input: &[f32], from: usize, to: usize, out: &mut Vec<f32>) {
    if from == to {
        out.extend_from_slice(input);
        return;
    }
    out.reserve(input.len() / from * to);
    for frame in input.chunks_exact(from) {
        if from == 1 {
            out.extend(std::iter::repeat_n(frame[0], to));
        } else if to == 1 {
            out.push(frame.iter().sum::<f32>() / from as f32);
        } else if from < to {
            out.extend_from_slice(frame);
            out.extend(std::iter::repeat_n(0.0, to - from));
        } else {
            for o in 0..to {
                let (sum, n) = frame
                    .iter()
                    .skip(o)
                    .step_by(to)
                    .fold((0.0, 0), |(s, n), &x| (s + x, n + 1));
                out.push(sum / n as f32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, frames: usize) -> Vec<f32> {
        (0..frames)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    /// SNR of `got` against a sine of `freq` at `rate`, fitted for phase and amplitude, over the
    /// middle of the signal (away from the edges).
    fn snr_db(got: &[f32], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
        let mid = &got[got.len() / 4..got.len() * 3 / 4];
        let off = got.len() / 4;
        let (mut s, mut c) = (0.0, 0.0);
        for (i, &x) in mid.iter().enumerate() {
            let t = (i + off) as f64 * w;
            s += f64::from(x) * t.sin();
            c += f64::from(x) * t.cos();
        }
        let n = mid.len() as f64;
        let (a, b) = (2.0 * s / n, 2.0 * c / n);
        let (mut sig, mut err) = (0.0, 0.0);
        for (i, &x) in mid.iter().enumerate() {
            let t = (i + off) as f64 * w;
            let fit = a * t.sin() + b * t.cos();
            sig += fit * fit;
            err += (f64::from(x) - fit).powi(2);
        }
        10.0 * (sig / err).log10()
    }

    #[test]
    fn identity_passes_samples_bit_exactly() {
        let mut c = Converter::new(48_000, 2, 48_000, 2, false).unwrap();
        assert!(c.is_identity());
        let input = sine(48_000, 1000.0, 960);
        let mut out = Vec::new();
        c.process(&input, &mut out).unwrap();
        c.flush(&mut out).unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn resampling_44k1_to_48k_keeps_length_and_a_clean_sine() {
        let input = sine(44_100, 997.0, 44_100);
        let mut c = Converter::new(44_100, 1, 48_000, 1, false).unwrap();
        let mut out = Vec::new();
        // Feed in uneven 441-frame pieces, as frames arrive.
        for piece in input.chunks(441) {
            c.process(piece, &mut out).unwrap();
        }
        c.flush(&mut out).unwrap();
        assert_eq!(out.len(), 48_000);
        let snr = snr_db(&out, 48_000, 997.0);
        assert!(snr > 80.0, "SNR {snr:.1} dB");
        // Aligned: the delay is trimmed, so at t = 0.5 s the output is within one sample of the
        // input's phase (rubato reports its delay in whole frames). One sample of a 997 Hz sine
        // at 0.5 amplitude moves it by at most 0.065.
        let t = 24_000;
        let expect = 0.5 * (2.0 * std::f64::consts::PI * 997.0 * t as f64 / 48_000.0).sin();
        assert!(
            (f64::from(out[t]) - expect).abs() < 0.065,
            "{} vs {expect}",
            out[t]
        );
    }

    #[test]
    fn an_adjustable_converter_at_ratio_one_is_transparent_and_follows_a_ratio() {
        let input = sine(48_000, 997.0, 48_000);
        let mut c = Converter::new(48_000, 1, 48_000, 1, true).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(480) {
            c.process(piece, &mut out).unwrap();
        }
        c.flush(&mut out).unwrap();
        assert_eq!(
            out, input,
            "at ratio exactly 1 the samples pass through bit-exactly"
        );
        // Leaving ratio 1 mid-stream switches to the resampler without a step or a gap.
        let mut c = Converter::new(48_000, 1, 48_000, 1, true).unwrap();
        let mut out = Vec::new();
        for (i, piece) in input.chunks(480).enumerate() {
            if i == 50 {
                c.set_ratio(1.001).unwrap();
            }
            c.process(piece, &mut out).unwrap();
        }
        assert_eq!(out[..24_000], input[..24_000]);
        let max_step = out
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max);
        // A 997 Hz sine at 0.5 moves at most 0.066 per sample.
        assert!(max_step < 0.07, "largest step {max_step}");
        let snr = snr_db(&out[24_000..], 48_000, 997.0 / 1.001);
        assert!(snr > 60.0, "SNR after the switch: {snr:.1} dB");
        // 0.5 % faster playback of the same input: 0.5 % more output samples.
        let mut c = Converter::new(48_000, 1, 48_000, 1, true).unwrap();
        c.set_ratio(1.005).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(480) {
            c.process(piece, &mut out).unwrap();
        }
        c.flush(&mut out).unwrap();
        assert_eq!(out.len(), 48_240);
    }

    #[test]
    fn mono_to_stereo_and_stereo_to_mono_and_8_to_2() {
        let mut out = Vec::new();
        map_channels(&[0.1, 0.2], 1, 2, &mut out);
        assert_eq!(out, [0.1, 0.1, 0.2, 0.2]);
        out.clear();
        map_channels(&[0.2, 0.4], 2, 1, &mut out);
        assert!((out[0] - 0.3).abs() < 1e-6);
        out.clear();
        map_channels(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 8, 2, &mut out);
        assert_eq!(out, [4.0, 5.0]);
        out.clear();
        map_channels(&[1.0, 2.0], 2, 4, &mut out);
        assert_eq!(out, [1.0, 2.0, 0.0, 0.0]);
    }
}
