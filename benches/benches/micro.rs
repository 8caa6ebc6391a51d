//! Micro-benchmarks of the hot paths, per 10 ms frame of 48 kHz stereo unless named otherwise:
//! frame encode/decode, jitter-buffer push/pop, PCM conversion, resampling, and Opus encode and
//! decode per frame (libopus set up as the sender sets it: 64 kbit/s per channel, complexity 10,
//! in-band FEC; decoded by the player's own `OpusDecoder`).
//!
//! `cargo bench -p audiowire-bench --bench micro` (criterion; `-- --quick` for a fast pass).
#![allow(
    clippy::unwrap_used,
    reason = "bench code: a panic is the failure report"
)]

use std::hint::black_box;
use std::time::Duration;

use audiowire_protocol::{Audio, Codec, FrameDecoder, Message, SampleFormat, StreamInfo};
use audiowire_receiver::codec::{Decoder, OpusDecoder};
use audiowire_receiver::convert::Converter;
use audiowire_receiver::jitter::{JitterBuffer, Popped, TargetPolicy};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RATE: u32 = 48_000;
const CHANNELS: u16 = 2;
/// Sample frames in 10 ms.
const SPF: usize = 480;

fn info() -> StreamInfo {
    StreamInfo {
        sample_rate: RATE,
        channels: CHANNELS,
        format: SampleFormat::S16,
        codec: Codec::Pcm,
        samples_per_frame: SPF as u32,
        total_frames: None,
        live: false,
    }
}

/// A 440 Hz tone, interleaved floats.
fn tone(frames: usize) -> Vec<f32> {
    (0..frames * usize::from(CHANNELS))
        .map(|i| {
            let t = (i / usize::from(CHANNELS)) as f32 / RATE as f32;
            0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
        })
        .collect()
}

fn s16_payload() -> Vec<u8> {
    let mut out = Vec::new();
    SampleFormat::S16.encode_floats(&tone(SPF), &mut out);
    out
}

fn audio(seq: u64, payload: &[u8]) -> Audio {
    Audio {
        sequence: seq,
        position: seq * SPF as u64,
        timestamp_us: 1_700_000_000_000_000 + seq * 10_000,
        payload: payload.to_vec(),
    }
}

fn frames(c: &mut Criterion) {
    let payload = s16_payload();
    let a = audio(7, &payload);
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    let mut out = Vec::with_capacity(4096);
    g.bench_function("encode 10ms s16 stereo", |b| {
        b.iter(|| {
            out.clear();
            black_box(&a).encode_frame(&mut out);
            black_box(out.len())
        })
    });
    let mut bytes = Vec::new();
    a.encode_frame(&mut bytes);
    g.bench_function("decode 10ms s16 stereo", |b| {
        let mut dec = FrameDecoder::default();
        b.iter(|| {
            let used = dec.push(black_box(&bytes)).unwrap();
            let frame = dec.next_frame().unwrap();
            let msg = Message::decode(frame).unwrap();
            black_box((used, msg))
        })
    });
    g.finish();
}

fn jitter(c: &mut Criterion) {
    let payload = s16_payload();
    let mut g = c.benchmark_group("jitter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push+pop in order", |b| {
        let mut jb = JitterBuffer::new(info(), TargetPolicy::fixed(Duration::from_millis(20)));
        let mut seq = 0u64;
        b.iter(|| {
            jb.push(audio(seq, &payload), Duration::from_millis(10 * seq));
            seq += 1;
            black_box(jb.pop())
        })
    });
    g.bench_function("push+pop adaptive, 1 in 10 lost", |b| {
        let policy = TargetPolicy::adaptive(
            Duration::from_millis(20),
            Duration::from_millis(50),
            Duration::from_secs(1),
        );
        let mut jb = JitterBuffer::new(info(), policy);
        let mut seq = 0u64;
        b.iter(|| {
            if seq % 10 != 3 {
                jb.push(audio(seq, &payload), Duration::from_millis(10 * seq));
            }
            seq += 1;
            let p = jb.pop();
            if let Popped::Frame { payload, .. } = &p {
                black_box(payload.len());
            }
            p
        })
    });
    g.finish();
}

fn pcm(c: &mut Criterion) {
    let floats = tone(SPF);
    let mut g = c.benchmark_group("pcm");
    g.throughput(Throughput::Elements(floats.len() as u64));
    for format in [SampleFormat::S16, SampleFormat::S24, SampleFormat::F32] {
        let mut bytes = Vec::new();
        format.encode_floats(&floats, &mut bytes);
        let mut out = Vec::with_capacity(floats.len());
        g.bench_function(format!("decode {format} to f32"), |b| {
            b.iter(|| {
                out.clear();
                format.decode_floats(black_box(&bytes), &mut out);
                black_box(out.len())
            })
        });
        let mut enc = Vec::with_capacity(bytes.len());
        g.bench_function(format!("encode f32 to {format}"), |b| {
            b.iter(|| {
                enc.clear();
                format.encode_floats(black_box(&floats), &mut enc);
                black_box(enc.len())
            })
        });
    }
    g.finish();
}

fn resample(c: &mut Criterion) {
    let floats = tone(SPF);
    let mut g = c.benchmark_group("resample");
    g.throughput(Throughput::Elements(SPF as u64));
    let mut out = Vec::with_capacity(8192);
    let cases: [(&str, u32, f64); 3] = [
        ("48k ratio 1 (bypass)", 48_000, 1.0),
        ("48k drift +500 ppm", 48_000, 1.0005),
        ("48k to 44.1k", 44_100, 1.0),
    ];
    for (name, out_rate, ratio) in cases {
        let mut conv = Converter::new(RATE, CHANNELS, out_rate, CHANNELS, true).unwrap();
        conv.set_ratio(ratio).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                conv.process(black_box(&floats), &mut out).unwrap();
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn opus(c: &mut Criterion) {
    let mut g = c.benchmark_group("opus");
    g.throughput(Throughput::Elements(1));
    for ms in [2.5f64, 10.0, 20.0] {
        let frames = (f64::from(RATE) * ms / 1000.0) as usize;
        let floats = tone(frames);
        let mut enc =
            opus::Encoder::new(RATE, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        enc.set_bitrate(opus::Bitrate::Bits(128_000)).unwrap();
        enc.set_complexity(10).unwrap();
        enc.set_inband_fec(true).unwrap();
        let mut packet = vec![0u8; 4000];
        g.bench_function(format!("encode {ms} ms stereo"), |b| {
            b.iter(|| {
                let n = enc.encode_float(black_box(&floats), &mut packet).unwrap();
                black_box(n)
            })
        });
        // A run of real packets to decode in order, as the jitter buffer hands them out.
        let packets: Vec<Vec<u8>> = (0..64)
            .map(|_| {
                let n = enc.encode_float(&floats, &mut packet).unwrap();
                packet[..n].to_vec()
            })
            .collect();
        let info = StreamInfo {
            format: SampleFormat::F32,
            codec: Codec::Opus { pre_skip: 312 },
            samples_per_frame: frames as u32,
            ..info()
        };
        let mut dec = OpusDecoder::new(&info).unwrap();
        let mut k = 0;
        g.bench_function(format!("decode {ms} ms stereo"), |b| {
            b.iter(|| {
                k = (k + 1) % packets.len();
                black_box(dec.decode(packets[k].clone()))
            })
        });
        g.bench_function(format!("conceal {ms} ms stereo (PLC)"), |b| {
            b.iter(|| black_box(dec.conceal(frames, None)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = frames, jitter, pcm, resample, opus
}
criterion_main!(benches);
