//! What audiowire reads from an Opus packet without decoding it (RFC 6716, section 3): how many
//! samples it holds, and whether it carries in-band FEC (LBRR) data for the packet before it.
//!
//! Pure parsing of the table-of-contents byte and the frame lengths, so the protocol checks can
//! size an Opus `Audio` payload and the player can tell, before decoding, whether a lost frame
//! can be *recovered* from the next packet rather than concealed. It never decodes audio; the
//! codec itself (libopus) lives in the sender and receiver crates.

/// The sample rate every Opus packet size is counted in here.
pub const RATE: u32 = 48_000;

/// The longest packet Opus allows: 120 ms at 48 kHz.
pub const MAX_PACKET_SAMPLES: u32 = 5760;

/// Opus frame sizes at 48 kHz (2.5, 5, 10, 20, 40 and 60 ms), the sizes an encoder can make.
pub const FRAME_SIZES: [u32; 6] = [120, 240, 480, 960, 1920, 2880];

/// The coding mode a packet's TOC byte announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SILK only (speech, up to wideband): carries LBRR (FEC) data when the encoder adds it.
    Silk,
    /// SILK and CELT together: FEC in its SILK layer.
    Hybrid,
    /// CELT only (music, low delay): no in-band FEC.
    Celt,
}

/// The mode of a packet (from its first byte), `None` for an empty packet.
pub fn mode(packet: &[u8]) -> Option<Mode> {
    let config = packet.first()? >> 3;
    Some(match config {
        0..=11 => Mode::Silk,
        12..=15 => Mode::Hybrid,
        _ => Mode::Celt,
    })
}

/// Samples per channel in one Opus frame of this packet, at 48 kHz.
pub fn frame_samples(packet: &[u8]) -> Option<u32> {
    let config = usize::from(packet.first()? >> 3);
    Some(match config {
        0..=11 => [480, 960, 1920, 2880][config % 4],
        12..=15 => [480, 960][config % 2],
        _ => [120, 240, 480, 960][config % 4],
    })
}

/// Opus frames in this packet (1 to 48), `None` when the packet is malformed.
pub fn frame_count(packet: &[u8]) -> Option<u32> {
    match packet.first()? & 3 {
        0 => Some(1),
        1 | 2 => Some(2),
        _ => {
            let n = u32::from(packet.get(1)? & 0x3f);
            (n > 0).then_some(n)
        }
    }
}

/// Samples per channel the packet decodes to, at 48 kHz; `None` when it is malformed or longer
/// than Opus allows (120 ms).
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let n = frame_samples(packet)? * frame_count(packet)?;
    (n <= MAX_PACKET_SAMPLES).then_some(n)
}

/// Reads a frame length (1 or 2 bytes, RFC 6716 section 3.2.1) at `at`: (length, bytes used).
fn frame_len(packet: &[u8], at: usize) -> Option<(usize, usize)> {
    let b = usize::from(*packet.get(at)?);
    if b < 252 {
        Some((b, 1))
    } else {
        Some((b + 4 * usize::from(*packet.get(at + 1)?), 2))
    }
}

/// The bytes of the packet's first Opus frame.
fn first_frame(packet: &[u8]) -> Option<&[u8]> {
    let toc = *packet.first()?;
    match toc & 3 {
        0 => packet.get(1..),
        1 => {
            let rest = packet.get(1..)?;
            (rest.len() % 2 == 0).then(|| &rest[..rest.len() / 2])
        }
        2 => {
            let (len, used) = frame_len(packet, 1)?;
            packet.get(1 + used..1 + used + len)
        }
        _ => {
            let flags = *packet.get(1)?;
            let count = usize::from(flags & 0x3f);
            let vbr = flags & 0x80 != 0;
            let mut at = 2;
            let mut padding = 0usize;
            if flags & 0x40 != 0 {
                // Padding length: bytes of 255 add 254 each, the last adds its value.
                loop {
                    let p = usize::from(*packet.get(at)?);
                    at += 1;
                    if p == 255 {
                        padding += 254;
                    } else {
                        padding += p;
                        break;
                    }
                }
            }
            let end = packet.len().checked_sub(padding)?;
            if count == 0 || at > end {
                return None;
            }
            if vbr {
                let (len, used) = frame_len(packet, at)?;
                // The other frames' lengths follow the first's.
                let mut data = at + used;
                for _ in 1..count.saturating_sub(1) {
                    let (_, u) = frame_len(packet, data)?;
                    data += u;
                }
                packet.get(data..(data + len).min(end))
            } else {
                let len = (end - at) / count;
                packet.get(at..at + len)
            }
        }
    }
}

/// True when the packet carries LBRR data, the in-band FEC copy of the packet *before* it that
/// a decoder can use to recover that packet if it was lost. Only SILK and hybrid packets can;
/// the logic is libopus's `opus_packet_has_lbrr`: the LBRR flag follows the VAD flag of each
/// 20 ms SILK frame in the first byte of the first Opus frame (for each channel of a stereo
/// packet).
pub fn has_lbrr(packet: &[u8]) -> bool {
    let (Some(mode), Some(size)) = (mode(packet), frame_samples(packet)) else {
        return false;
    };
    if mode == Mode::Celt {
        return false;
    }
    let silk_frames = if size > 960 { size / 960 } else { 1 };
    let stereo = packet[0] & 0x04 != 0;
    let Some(&first) = first_frame(packet).and_then(|f| f.first()) else {
        return false;
    };
    let mut lbrr = (first >> (7 - silk_frames)) & 1 == 1;
    if stereo {
        lbrr |= (first >> (6 - 2 * silk_frames)) & 1 == 1;
    }
    lbrr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_from_the_toc_byte() {
        // config 31 (CELT FB 20 ms), mono, code 0.
        assert_eq!(packet_samples(&[31 << 3, 0]), Some(960));
        // config 16 (CELT NB 2.5 ms), code 3 with 4 frames.
        assert_eq!(packet_samples(&[(16 << 3) | 3, 4]), Some(480));
        // config 3 (SILK NB 60 ms), code 1: two frames, 120 ms.
        assert_eq!(packet_samples(&[(3 << 3) | 1, 0, 0]), Some(5760));
        // Three 60 ms frames would be 180 ms: not Opus.
        assert_eq!(packet_samples(&[(3 << 3) | 3, 3]), None);
        assert_eq!(packet_samples(&[]), None);
        assert_eq!(packet_samples(&[3]), None);
        assert_eq!(mode(&[12 << 3]), Some(Mode::Hybrid));
    }

    #[test]
    fn lbrr_flag_of_a_silk_packet() {
        // SILK WB 20 ms mono, code 0: first data byte VAD=1, LBRR=1.
        assert!(has_lbrr(&[9 << 3, 0b1100_0000]));
        assert!(!has_lbrr(&[9 << 3, 0b1000_0000]));
        // 40 ms: two VAD flags, then LBRR.
        assert!(has_lbrr(&[10 << 3, 0b0010_0000]));
        // Stereo 20 ms: the side channel's flag is bit 4.
        assert!(has_lbrr(&[(9 << 3) | 4, 0b0001_0000]));
        // CELT never.
        assert!(!has_lbrr(&[31 << 3, 0xff]));
        // Code 2: first frame 1 byte long, then the second.
        assert!(has_lbrr(&[(9 << 3) | 2, 1, 0b0100_0000, 0]));
    }
}
