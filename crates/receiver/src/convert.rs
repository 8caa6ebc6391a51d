//! Converting a stream for a device that cannot take it as it is: channel mapping, then
//! resampling with rubato's asynchronous sinc resampler. Runs on the feeding thread, never in the
//! audio callback.
//!
//! Channel mapping: mono goes to every output channel; N to 1 averages; otherwise each output
//! channel takes the input channel of the same index, extra outputs are silent and extra inputs
//! are folded onto `index % outputs` (averaged).
//!
//! Drift control at equal rates (`adjustable`): while the ratio is exactly 1 the samples pass
//! through bit-exactly and the resampler does not run at all (a copy of each frame into a short
//! history is all it costs). The history holds the last channel-mapped frames the resampler
//! needs (127 with our parameters, 64-frame chunks), measured from the resampler itself when the
//! converter is made (`Handover::measure`: the reach of its impulse response, its delay, and how
//! its output falls on chunks), rounded up to whole chunks.
//!
//! When the ratio first leaves 1, the resampler is reset and primed with that history, then
//! with the next input frames, still at ratio 1, until its output reaches the last frame passed
//! through; that output is dropped. Rubato's sinc at ratio 1 delays by 1/128 of a frame less
//! than 63 frames, so the first priming chunk runs at a ratio a hair off 1 that makes up the
//! 1/128.
//! Only then does the new ratio take effect (ramped by rubato over one chunk), and the output
//! continues with the very next frame: no gap, no repeated or skipped frame, no step (against
//! the ideal output, a 997 Hz tone at 0.5 is off by at most 1.2e-6, the resampler's own gain
//! error; see the hand-over test). From then on the resampler is used for the rest of the
//! stream. Priming costs one or two chunks of resampling, once.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Adjustable, Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::error::{Error, Result};

/// Input frames per resampler call: 1.3 ms at 48 kHz. A partial chunk waits for the next
/// frame, so when the controller first leaves ratio 1 the output holds back the resampler's
/// delay plus up to a chunk: small, so a player running a few milliseconds of buffer does not
/// run dry at the hand-over (256 held back up to 6.7 ms and made a JACK-lab stream stall).
const CHUNK: usize = 64;

/// How far the ratio can be steered from the nominal one, either way (a factor).
const MAX_RELATIVE: f64 = 1.1;

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
    /// Resampler output frames still to drop: its delay (and, after a hand-over, the output of
    /// the primed history), so output lines up with input.
    trim: usize,
    /// Output frames the input so far stands for, at the ratio in force as each piece came in.
    expected: f64,
    /// Frames written to the output.
    emitted: u64,
    /// For an adjustable converter at equal rates: how to hand over from the bypass.
    handover: Option<Handover>,
    /// True while the ratio is exactly 1 at equal rates: input passes through bit-exactly and
    /// only the last `handover.history` frames are kept, in `history`.
    bypass: bool,
    /// The most recent channel-mapped input while bypassing (always `handover.history` frames:
    /// silence before the stream starts, as a fresh resampler sees it).
    history: Vec<f32>,
    /// Resampler chunks still to run at ratio 1 after a hand-over, before `relative` applies.
    priming: usize,
}

/// How to hand over from the bypass to the resampler, measured from the resampler itself at
/// ratio 1 (see [`Handover::measure`]).
///
/// After a reset, the resampler is fed `history` frames that end with the last frame passed
/// through, then new input, in `chunks` whole chunks: the first at `nudge` (steps a hair off
/// 1 frame, absorbing the fraction of a frame by which rubato's sinc is off centre), the others
/// at ratio 1. Their `trim` output frames are dropped: the last of them is for the last
/// frame passed through, and the new ratio takes effect from the next one on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Handover {
    /// Frames of history kept while bypassing, ending with the last frame passed through.
    history: usize,
    /// Output frames made while priming, all dropped.
    trim: usize,
    /// Chunks (history, then new input) run before the new ratio takes effect.
    chunks: usize,
    /// Relative ratio of the first of them (1 when rubato's delay is a whole number of frames).
    nudge: f64,
}

impl std::fmt::Debug for Converter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converter")
            .field("in_channels", &self.in_channels)
            .field("out_channels", &self.out_channels)
            .field("ratio", &self.ratio)
            .field("relative", &self.relative)
            .field("bypass", &self.bypass)
            .finish_non_exhaustive()
    }
}

impl Converter {
    /// A converter from `in_rate`/`in_channels` to `out_rate`/`out_channels`. With `adjustable`
    /// it can resample, so [`Converter::set_ratio`] can steer it (drift control); at equal rates
    /// it passes samples through untouched (without resampling) until the ratio first leaves 1.
    /// Without `adjustable`, equal rates always pass through untouched.
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
        let ch = usize::from(out_channels);
        let (resampler, trim, scratch, handover) = if in_rate == out_rate && !adjustable {
            (None, 0, Vec::new(), None)
        } else {
            let r = new_resampler(ratio, ch)?;
            let scratch = vec![0.0; r.output_frames_max() * ch];
            if in_rate == out_rate {
                // Bypassing: the resampler waits, reset, for the ratio to leave 1.
                (Some(r), 0, scratch, Some(Handover::measure()?))
            } else {
                let trim = r.output_delay();
                (Some(r), trim, scratch, None)
            }
        };
        let history = handover.map_or_else(Vec::new, |h| vec![0.0; h.history * ch]);
        Ok(Self {
            in_channels: in_channels.into(),
            out_channels: ch,
            ratio,
            relative: 1.0,
            resampler,
            pending: Vec::new(),
            scratch,
            trim,
            expected: 0.0,
            emitted: 0,
            handover,
            bypass: handover.is_some(),
            history,
            priming: 0,
        })
    }

    /// Sets the ratio relative to the nominal one (1.0 ± 0.5 % for drift control; at most
    /// ×/÷ 1.1). Ignored by a converter made without `adjustable` and equal rates.
    ///
    /// The first ratio other than 1 ends the bypass for good: the output continues, from the
    /// next frame on, from the resampler (see the module docs).
    pub fn set_ratio(&mut self, relative: f64) -> Result<()> {
        if (relative - self.relative).abs() < 1e-9 {
            return Ok(());
        }
        let Some(r) = self.resampler.as_mut() else {
            return Ok(());
        };
        if !(1.0 / MAX_RELATIVE..=MAX_RELATIVE).contains(&relative) {
            return Err(Error::Convert(format!(
                "relative ratio {relative} outside 1/{MAX_RELATIVE} to {MAX_RELATIVE}"
            )));
        }
        if self.bypass {
            if let Some(h) = self.handover {
                // Prime a fresh resampler with the history; `run` applies the ratio once its
                // output has caught up with the bypass.
                h.start(r)?;
                self.pending.clear();
                self.pending.append(&mut self.history);
                self.trim = h.trim;
                self.priming = h.chunks;
            }
            self.bypass = false;
        } else if self.priming == 0 {
            r.set_resample_ratio_relative(relative, true)
                .map_err(|e| Error::Convert(e.to_string()))?;
        }
        self.relative = relative;
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
        let frames = input.len() / self.in_channels;
        if self.resampler.is_none() || self.bypass {
            let start = out.len();
            map_channels(input, self.in_channels, self.out_channels, out);
            self.emitted += frames as u64;
            self.expected += frames as f64;
            if self.bypass {
                keep_tail(&mut self.history, &out[start..]);
            }
            return Ok(());
        }
        self.expected += frames as f64 * self.ratio * self.relative;
        map_channels(
            input,
            self.in_channels,
            self.out_channels,
            &mut self.pending,
        );
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
        let expected_total = self.expected.round() as u64;
        let Some(r) = self.resampler.as_mut() else {
            return Ok(());
        };
        // Bounded: each pass consumes a chunk of input, and flushing stops once the expected
        // output length is reached (at most a few chunks of delay).
        for _ in 0..1_000_000 {
            let need = r.input_frames_next();
            let have = self.pending.len() / ch;
            if have < need {
                if !flush || self.emitted >= expected_total {
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
            if self.priming > 0 {
                self.priming -= 1;
                if let Some(h) = self.handover {
                    h.primed(r, self.priming, self.relative)?;
                }
            }
            let skip = self.trim.min(made);
            self.trim -= skip;
            let mut keep = made - skip;
            if flush {
                keep = keep.min(expected_total.saturating_sub(self.emitted) as usize);
            }
            out.extend_from_slice(&self.scratch[skip * ch..(skip + keep) * ch]);
            self.emitted += keep as u64;
        }
        Ok(())
    }
}

/// Replaces the oldest frames of `history` (kept at its length) with `new`.
fn keep_tail(history: &mut Vec<f32>, new: &[f32]) {
    let len = history.len();
    if new.len() >= len {
        history.clear();
        history.extend_from_slice(&new[new.len() - len..]);
    } else {
        history.drain(..new.len());
        history.extend_from_slice(new);
    }
}

fn sinc_params() -> SincInterpolationParameters {
    SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
        .oversampling_factor(128)
        .interpolation(SincInterpolationType::Cubic)
}

fn new_resampler(ratio: f64, channels: usize) -> Result<Async<f32>> {
    Async::<f32>::new_sinc(
        ratio,
        MAX_RELATIVE,
        &sinc_params(),
        CHUNK,
        channels,
        FixedAsync::Input,
    )
    .map_err(|e| Error::Convert(e.to_string()))
}

impl Handover {
    /// Measures the resampler at ratio 1 with an impulse, then runs the hand-over once on a
    /// ramp (input frame `i` is `i`) to see which input frame the first output after the
    /// priming stands for: that is where the history must end.
    ///
    /// From the impulse response: `delay`, where it peaks; `past`, how many input frames
    /// before an output frame's time reach it (to the last non-zero sample); the centroid,
    /// whose distance from the peak (`lag`) is the fraction of a frame by which rubato's true
    /// delay differs from `delay` (-1/128 with our parameters), which the `nudge` makes up.
    /// And `short`: the first chunk after a reset makes that many frames fewer than it takes
    /// (2). The history must reach `past` frames back, and the priming needs about `delay +
    /// short` frames of new input (one more with a nudge), in whole chunks.
    fn measure() -> Result<Self> {
        let err = |e: &dyn std::fmt::Display| Error::Convert(e.to_string());
        let mut r = new_resampler(1.0, 1)?;
        let short = CHUNK.saturating_sub(r.output_frames_next());
        let mut input = vec![0.0f32; CHUNK];
        input[0] = 1.0;
        let mut response = Vec::new();
        // Bounded: the response lasts the sinc length, a fraction of a chunk past the delay.
        for i in 0..64 {
            let made = feed(&mut r, &input, &mut response)?;
            input[0] = 0.0;
            if i > 0 && response[response.len() - made..].iter().all(|&x| x == 0.0) {
                break;
            }
        }
        let delay = response
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map_or(0, |(i, _)| i);
        let last = response.iter().rposition(|&x| x != 0.0).unwrap_or(delay);
        let gain: f64 = response.iter().map(|&x| f64::from(x)).sum();
        let moment: f64 = (response.iter().enumerate())
            .map(|(i, &x)| i as f64 * f64::from(x))
            .sum();
        let lag = moment / gain - delay as f64;
        if !gain.is_finite() || gain.abs() < 0.5 || lag.abs() >= 0.5 {
            return Err(Error::Convert(format!(
                "resampler at ratio 1: gain {gain}, delay {delay} + {lag}"
            )));
        }
        let past = last - delay;
        // The first chunk after a reset makes `n` frames; steps of `1 + lag / n` frames make
        // up the lag by its end (`n` itself can change with the step). With no lag, no nudge.
        let mut nudge = 1.0;
        if lag.abs() >= 1e-6 {
            r.reset();
            let mut n = r.output_frames_next();
            for _ in 0..4 {
                nudge = 1.0 / (1.0 + lag / n as f64);
                r.set_resample_ratio_relative(nudge, false)
                    .map_err(|e| err(&e))?;
                if r.output_frames_next() == n {
                    break;
                }
                n = r.output_frames_next();
            }
        }
        let min_chunks = if nudge == 1.0 { 1 } else { 2 };
        let at_least = (past + delay + short + 1).div_ceil(CHUNK).max(min_chunks);
        // Bounded: more chunks only lengthen the history.
        for chunks in at_least..at_least + 4 {
            let mut h = Self {
                history: 0,
                trim: 0,
                chunks,
                nudge,
            };
            // The ramp, offset to stay small (and exact in `f32`) around the frame we look for.
            let centre = (chunks * CHUNK - delay - short) as f32;
            let ramp: Vec<f32> = (0..(chunks + 1) * CHUNK)
                .map(|i| i as f32 - centre)
                .collect();
            h.start(&mut r)?;
            let mut out = Vec::new();
            for (done, piece) in ramp.chunks_exact(CHUNK).enumerate().take(chunks) {
                feed(&mut r, piece, &mut out)?;
                h.primed(&mut r, chunks - done - 1, 1.0)?;
            }
            h.trim = out.len();
            feed(&mut r, &ramp[chunks * CHUNK..], &mut out)?;
            let first = out
                .get(h.trim)
                .ok_or_else(|| err(&"no output after priming"))?;
            let at = f64::from(centre) + f64::from(*first) / gain;
            h.history = at.round() as usize;
            if (at - at.round()).abs() > 1e-3 {
                return Err(Error::Convert(format!(
                    "resampler hand-over lands at frame {at} after the reset"
                )));
            }
            if h.history >= past {
                return Ok(h);
            }
        }
        Err(err(
            &"resampler hand-over needs more history than it can get",
        ))
    }

    /// Readies `r` (reset) for the first priming chunk.
    fn start(&self, r: &mut Async<f32>) -> Result<()> {
        r.reset();
        if self.nudge != 1.0 {
            r.set_resample_ratio_relative(self.nudge, false)
                .map_err(|e| Error::Convert(e.to_string()))?;
        }
        Ok(())
    }

    /// After a priming chunk, with `left` still to run: back to ratio 1 after the nudge, and
    /// after the last one on to `relative`, for the frame after the last passed through.
    fn primed(&self, r: &mut Async<f32>, left: usize, relative: f64) -> Result<()> {
        let ratio = if left == 0 {
            relative
        } else if left + 1 == self.chunks {
            1.0
        } else {
            return Ok(());
        };
        r.set_resample_ratio_relative(ratio, left == 0)
            .map_err(|e| Error::Convert(e.to_string()))
    }
}

/// Runs a one-channel resampler on one whole chunk of `input`, appending its output to `out`;
/// returns the number of frames it made.
fn feed(r: &mut Async<f32>, input: &[f32], out: &mut Vec<f32>) -> Result<usize> {
    let err = |e: &dyn std::fmt::Display| Error::Convert(e.to_string());
    let start = out.len();
    out.resize(start + r.output_frames_max(), 0.0);
    let inp = InterleavedSlice::new(input, 1, input.len()).map_err(|e| err(&e))?;
    let frames = out.len() - start;
    let mut outp = InterleavedSlice::new_mut(&mut out[start..], 1, frames).map_err(|e| err(&e))?;
    let (_, made) = r
        .process_into_buffer(&inp, &mut outp, None)
        .map_err(|e| err(&e))?;
    out.truncate(start + made);
    Ok(made)
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

    /// A 997 Hz tone at 0.5 that fades in and out over 20 ms (so that the resampler, which sees
    /// silence before and after the stream, has nothing abrupt to ring on), at time `t` in
    /// frames of `len` at 48 kHz.
    fn faded_tone(t: f64, len: usize) -> f64 {
        let fade = 960.0;
        let edge = t.min(len as f64 - t).clamp(0.0, fade) / fade;
        let gain = 0.5 - 0.5 * (std::f64::consts::PI * edge).cos();
        gain * 0.5 * (2.0 * std::f64::consts::PI * 997.0 * t / 48_000.0).sin()
    }

    /// Feeds `input` (mono, 48 kHz) in `piece`-frame pieces to an adjustable converter to
    /// `channels`, leaving ratio 1 for `ratio` after `switch` frames (then asking for `again`,
    /// if any, one frame later, before the resampler has caught up), and flushes. Returns the
    /// first output channel and the output length before the flush.
    fn hand_over(
        input: &[f32],
        channels: u16,
        piece: usize,
        switch: usize,
        ratio: f64,
        again: Option<f64>,
    ) -> (Vec<f32>, usize) {
        let mut c = Converter::new(48_000, 1, 48_000, channels, true).unwrap();
        let mut out = Vec::new();
        let mut fed = 0;
        while fed < input.len() {
            if fed == switch {
                assert!(c.is_identity() || channels != 1);
                c.set_ratio(ratio).unwrap();
                assert!(!c.is_identity());
            }
            if let Some(again) = again.filter(|_| fed == switch + 1) {
                c.set_ratio(again).unwrap();
            }
            let mut n = piece.min(input.len() - fed);
            if fed < switch {
                n = n.min(switch - fed);
            } else if again.is_some() && fed == switch {
                n = 1;
            }
            c.process(&input[fed..fed + n], &mut out).unwrap();
            fed += n;
        }
        let before_flush = out.len() / usize::from(channels);
        c.flush(&mut out).unwrap();
        let first = out.iter().step_by(channels.into()).copied().collect();
        (first, before_flush)
    }

    /// Where output frame `n` should sample the input, when the ratio leaves 1 after frame
    /// `switch`: at frame `switch` the step (input frames per output frame) starts ramping from
    /// 1 to `1 / ratio`, as rubato ramps it over the output of its next chunk (the frames that
    /// fit 256 at the mean step), incrementing it before each step.
    fn ideal_time(n: usize, switch: usize, ratio: f64) -> f64 {
        if n < switch {
            return n as f64;
        }
        let step = 1.0 / ratio;
        let frames = ((CHUNK as f64 - 0.5 * (step - 1.0)) / (0.5 * (1.0 + step))).floor();
        let inc = (step - 1.0) / frames;
        let j = (n - switch) as f64;
        let steps = j + 1.0;
        // The sum of min(k, frames) for k in 1..=j+1.
        let ramp = if steps <= frames {
            steps * (steps + 1.0) / 2.0
        } else {
            frames * (frames + 1.0) / 2.0 + (steps - frames) * frames
        };
        switch as f64 + j + inc * ramp
    }

    #[test]
    fn the_hand_over_from_bypass_is_seamless_wherever_it_happens() {
        let len = 48_000;
        let input: Vec<f32> = (0..len).map(|i| faded_tone(i as f64, len) as f32).collect();
        let h = Handover::measure().unwrap();
        // (switch after frame, piece size, ratio, a second ratio during the priming, channels)
        let cases: &[(usize, usize, f64, Option<f64>, u16)] = &[
            (0, 480, 1.000_001, None, 1),             // before any input
            (1, 480, 1.000_001, None, 1),             // one frame of history
            (10, 7, 1.000_001, None, 1),              // less history than the resampler needs
            (h.history - 1, 480, 1.000_001, None, 1), // just short of a full history
            (h.history, 480, 1.000_001, None, 1),
            (1234, 333, 1.000_001, None, 1), // mid-chunk, uneven pieces
            (4800, 480, 1.000_001, None, 1), // on a piece boundary
            (4801, 1, 1.000_001, None, 1),   // frame by frame
            (24_017, 256, 1.000_001, None, 1),
            (24_000, 480, 1.001, None, 1), // real drift corrections, both ways
            (24_000, 480, 0.995, None, 1),
            (3000, 480, 1.001, Some(0.999), 1), // changed before the resampler caught up
            (1234, 333, 1.000_001, None, 2),    // mono to stereo: the history is mapped
            (24_000, 480, 1.005, None, 2),
            (47_990, 480, 1.001, None, 1), // the stream ends before the resampler caught up
        ];
        let mut worst = 0.0f64;
        for &(switch, piece, ratio, again, channels) in cases {
            let (out, before_flush) = hand_over(&input, channels, piece, switch, ratio, again);
            let ratio = again.unwrap_or(ratio);
            let case = format!("switch after {switch}, pieces of {piece}, ratio {ratio}");
            assert_eq!(out[..switch], input[..switch], "{case}: bit-exact before");
            // Only the resampler's delay (and a partial chunk) is held back until the flush,
            // which brings the output to the input's length at the new ratio.
            let expect = switch as f64 + (len - switch) as f64 * ratio;
            let held = expect - before_flush as f64;
            assert!(
                held <= 63.0 + 2.0 + CHUNK as f64,
                "{case}: {held} frames held back"
            );
            assert!(
                (out.len() as f64 - expect).abs() <= 1.0,
                "{case}: {}",
                out.len()
            );
            let mut max_err = 0.0f64;
            for (n, &x) in out.iter().enumerate() {
                let t = ideal_time(n, switch, ratio);
                max_err = max_err.max((f64::from(x) - faded_tone(t, len)).abs());
            }
            // A frame missing or repeated would be off by up to 0.065 (a 997 Hz sine at 0.5
            // moves that much per frame).
            assert!(max_err < 1e-5, "{case}: error {max_err:.2e}");
            worst = worst.max(max_err);
        }
        println!("worst error against the ideal output: {worst:.2e}");
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
