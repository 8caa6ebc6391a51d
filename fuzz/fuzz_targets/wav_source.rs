//! The file input path: `WavSource` (hound's parser and audiowire's checks) on arbitrary bytes,
//! through `WavSource::from_bytes`, the same code `send FILE` runs on a file.
//!
//! Checks: no panic, no unbounded allocation (libFuzzer's -rss_limit_mb); a file that opens reads
//! to its end in whole sample frames, exactly `total_frames` of them, and reads the same after a
//! rewind.
#![no_main]

use audiowire_sender::WavSource;
use libfuzzer_sys::fuzz_target;

/// Every byte the source yields in frames of `per` sample frames, or None on a read error.
fn read_all(src: &mut WavSource, per: u32) -> Option<(u64, Vec<u8>)> {
    let bpf = src.format().bytes() * usize::from(src.channels());
    let mut out = Vec::new();
    let mut frames = 0u64;
    // Bounded: the data chunk is no longer than the input (checked on open).
    loop {
        let before = out.len();
        let n = src.read_frames(per, &mut out).ok()?;
        assert_eq!(out.len() - before, n as usize * bpf);
        if n == 0 {
            return Some((frames, out));
        }
        assert!(n <= per);
        frames += u64::from(n);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut src) = WavSource::from_bytes("fuzz.wav", data) else {
        return;
    };
    assert!(src.channels() > 0 && src.sample_rate() > 0);
    let total = src.total_frames();
    let Some((frames, first)) = read_all(&mut src, 7) else {
        return;
    };
    assert_eq!(frames, total);
    src.rewind().expect("rewind");
    let (_, second) = read_all(&mut src, 64).expect("a second read succeeds as the first did");
    assert_eq!(first, second);
});
