//! Sample-rate conversion at the sender (rubato's sinc resampler): a file or an input device at
//! one rate, the stream at another (`--rate`, or Opus's 48 kHz).
//!
//! The resampler's delay is trimmed, so output sample `n` lines up with input time
//! `n * in_rate / out_rate`, and [`Resampler::flush`] ends the output at exactly
//! `ceil(frames_in * out_rate / in_rate)` frames: a file keeps its duration.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler as _, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::error::{Error, Result};

/// Input frames per resampler call.
const CHUNK: usize = 512;

/// A fixed-ratio resampler for interleaved f32 audio.
pub struct Resampler {
    inner: Async<f32>,
    channels: usize,
    in_rate: u32,
    out_rate: u32,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    trim: usize,
    frames_in: u64,
    produced: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("in_rate", &self.in_rate)
            .field("out_rate", &self.out_rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Codec(format!("resampling failed: {e}"))
}

impl Resampler {
    /// From `in_rate` to `out_rate`, `channels` interleaved.
    pub fn new(in_rate: u32, out_rate: u32, channels: u16) -> Result<Self> {
        let params = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
            .oversampling_factor(128)
            .interpolation(SincInterpolationType::Cubic);
        let ratio = f64::from(out_rate) / f64::from(in_rate.max(1));
        let channels = usize::from(channels.max(1));
        let inner = Async::<f32>::new_sinc(ratio, 1.0, &params, CHUNK, channels, FixedAsync::Input)
            .map_err(err)?;
        let trim = inner.output_delay();
        let scratch = vec![0.0; inner.output_frames_max() * channels];
        Ok(Self {
            inner,
            channels,
            in_rate,
            out_rate,
            pending: Vec::new(),
            scratch,
            trim,
            frames_in: 0,
            produced: 0,
        })
    }

    /// Output frames for `frames` input frames.
    pub fn out_frames(&self, frames: u64) -> u64 {
        (u128::from(frames) * u128::from(self.out_rate)).div_ceil(u128::from(self.in_rate.max(1)))
            as u64
    }

    /// Forgets everything: the next input is a fresh start.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.trim = self.inner.output_delay();
        self.pending.clear();
        self.frames_in = 0;
        self.produced = 0;
    }

    /// Resamples `input` and appends what is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<()> {
        self.frames_in += (input.len() / self.channels) as u64;
        self.pending.extend_from_slice(input);
        self.run(out, false)
    }

    /// Appends the rest at the end of the input, up to the exact expected length.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<()> {
        self.run(out, true)
    }

    fn run(&mut self, out: &mut Vec<f32>, flush: bool) -> Result<()> {
        let ch = self.channels;
        let expected = self.out_frames(self.frames_in);
        // Bounded: each pass consumes a chunk; a flush stops at the expected length.
        for _ in 0..1_000_000 {
            let need = self.inner.input_frames_next();
            if self.pending.len() / ch < need {
                if !flush || self.produced >= expected {
                    break;
                }
                self.pending.resize(need * ch, 0.0);
            }
            let input = InterleavedSlice::new(&self.pending[..need * ch], ch, need).map_err(err)?;
            let frames_max = self.scratch.len() / ch;
            let mut output =
                InterleavedSlice::new_mut(&mut self.scratch, ch, frames_max).map_err(err)?;
            let (used, made) = self
                .inner
                .process_into_buffer(&input, &mut output, None)
                .map_err(err)?;
            self.pending.drain(..used * ch);
            let skip = self.trim.min(made);
            self.trim -= skip;
            let mut keep = made - skip;
            if flush {
                keep = keep.min(expected.saturating_sub(self.produced) as usize);
            }
            self.produced += keep as u64;
            out.extend_from_slice(&self.scratch[skip * ch..(skip + keep) * ch]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_duration_and_the_tone() {
        let input: Vec<f32> = (0..22_050)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 22_050.0).sin())
            .collect();
        let mut r = Resampler::new(22_050, 48_000, 1).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(441) {
            r.process(piece, &mut out).unwrap();
        }
        r.flush(&mut out).unwrap();
        assert_eq!(out.len(), 48_000);
        // Aligned: at t = 0.5 s within a sample's movement of the ideal sine.
        let t = 24_000;
        let want = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * t as f64 / 48_000.0).sin();
        assert!(
            (f64::from(out[t]) - want).abs() < 0.03,
            "{} vs {want}",
            out[t]
        );
    }
}
