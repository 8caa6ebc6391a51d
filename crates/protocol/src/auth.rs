//! Pre-shared keys, sans-IO: a player proves it holds the key (challenge–response), the sender
//! proves it back, and audio payloads are sealed with an AEAD under a key fresh for each
//! session.
//!
//! - The long-term key is `BLAKE3-derive-key("audiowire 2026 pre-shared key v1", secret)`, so any
//!   secret (a key file, a passphrase) gives 32 uniform bytes.
//! - The challenge is the sender's `Cookie` (on UDP the same one that proves return
//!   routability); the player adds a random 16-byte nonce. Proofs are keyed BLAKE3 MACs of a
//!   label, the challenge and the nonce, compared in constant time.
//! - The session key is derived from the long-term key, the challenge and the nonce: a new one
//!   for every (re)connection, so a sequence number never repeats under one key.
//! - `Audio` payloads are sealed with ChaCha20-Poly1305: nonce = 4 zero bytes ‖ sequence
//!   (big-endian), associated data = sequence ‖ position ‖ timestamp, tag appended (16 bytes).
//!   A replayed datagram decrypts but carries a sequence number already played, which the jitter
//!   buffer drops: replay protection on UDP comes from the authenticated sequence number.

use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Nonce};

use crate::error::{Error, Result};
use crate::message::Audio;

/// Bytes the AEAD tag adds to each sealed payload.
pub const TAG_LEN: usize = 16;

/// A pre-shared key.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    /// The key for `secret` (the bytes of a key file, or a passphrase), which must not be empty.
    pub fn from_secret(secret: &[u8]) -> Result<Self> {
        if secret.is_empty() {
            return Err(Error::EmptyKey);
        }
        Ok(Self(blake3::derive_key(
            "audiowire 2026 pre-shared key v1",
            secret,
        )))
    }

    fn mac(&self, label: &[u8], challenge: u64, nonce: &[u8; 16]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(label);
        h.update(&challenge.to_be_bytes());
        h.update(nonce);
        h.finalize()
    }

    /// What a player sends to prove it holds the key.
    pub fn player_proof(&self, challenge: u64, nonce: &[u8; 16]) -> [u8; 32] {
        *self.mac(b"player", challenge, nonce).as_bytes()
    }

    /// What a sender sends to prove it holds the key.
    pub fn sender_proof(&self, challenge: u64, nonce: &[u8; 16]) -> [u8; 32] {
        *self.mac(b"sender", challenge, nonce).as_bytes()
    }

    /// Checks a player's proof, in constant time.
    pub fn verify_player(&self, challenge: u64, nonce: &[u8; 16], proof: &[u8; 32]) -> bool {
        self.mac(b"player", challenge, nonce) == blake3::Hash::from_bytes(*proof)
    }

    /// Checks a sender's proof, in constant time.
    pub fn verify_sender(&self, challenge: u64, nonce: &[u8; 16], proof: &[u8; 32]) -> bool {
        self.mac(b"sender", challenge, nonce) == blake3::Hash::from_bytes(*proof)
    }

    /// The cipher of the session that `challenge` and `nonce` opened.
    pub fn cipher(&self, challenge: u64, nonce: &[u8; 16]) -> Cipher {
        let mut material = Vec::with_capacity(56);
        material.extend_from_slice(&self.0);
        material.extend_from_slice(&challenge.to_be_bytes());
        material.extend_from_slice(nonce);
        let key = blake3::derive_key("audiowire 2026 session key v1", &material);
        Cipher(ChaCha20Poly1305::new(&key.into()))
    }
}

/// Seals and opens `Audio` payloads of one session.
#[derive(Clone)]
pub struct Cipher(ChaCha20Poly1305);

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(…)")
    }
}

fn nonce(sequence: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&sequence.to_be_bytes());
    n.into()
}

fn aad(a: &Audio) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&a.sequence.to_be_bytes());
    out[8..16].copy_from_slice(&a.position.to_be_bytes());
    out[16..].copy_from_slice(&a.timestamp_us.to_be_bytes());
    out
}

impl Cipher {
    /// Encrypts the payload in place and appends the tag.
    pub fn seal(&self, audio: &mut Audio) {
        let aad = aad(audio);
        // A Vec grows as needed and the payload is far below ChaCha20's limit: cannot fail.
        let _ = self
            .0
            .encrypt_in_place(&nonce(audio.sequence), &aad, &mut audio.payload);
    }

    /// Checks the tag and decrypts the payload in place. A frame that fails was forged, damaged
    /// or sealed with another key: drop it.
    pub fn open(&self, audio: &mut Audio) -> Result<()> {
        let aad = aad(audio);
        self.0
            .decrypt_in_place(&nonce(audio.sequence), &aad, &mut audio.payload)
            .map_err(|_| Error::Unauthentic {
                sequence: audio.sequence,
            })
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `N` bytes written in `hex`, if it is exactly that.
pub fn from_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(seq: u64) -> Audio {
        Audio {
            sequence: seq,
            position: seq * 480,
            timestamp_us: 1_000 + seq,
            payload: (0..64u8).collect(),
        }
    }

    #[test]
    fn proofs_need_the_same_key_challenge_and_nonce() {
        let k = Key::from_secret(b"correct horse battery staple").unwrap();
        let other = Key::from_secret(b"correct horse battery stapler").unwrap();
        let n = [7u8; 16];
        let p = k.player_proof(42, &n);
        assert!(k.verify_player(42, &n, &p));
        assert!(!other.verify_player(42, &n, &p));
        assert!(!k.verify_player(43, &n, &p));
        assert!(
            !k.verify_sender(42, &n, &p),
            "a player proof is no sender proof"
        );
        assert!(k.verify_sender(42, &n, &k.sender_proof(42, &n)));
        assert_eq!(Key::from_secret(b"").unwrap_err(), Error::EmptyKey);
    }

    #[test]
    fn sealed_audio_opens_only_with_the_same_session_and_unchanged() {
        let k = Key::from_secret(b"secret").unwrap();
        let c = k.cipher(1, &[0; 16]);
        let mut a = audio(5);
        c.seal(&mut a);
        assert_eq!(a.payload.len(), 64 + TAG_LEN);
        assert_ne!(a.payload[..64], audio(5).payload[..]);
        let mut b = a.clone();
        c.open(&mut b).unwrap();
        assert_eq!(b, audio(5));
        // Another session (a new nonce) cannot open it.
        let mut d = a.clone();
        assert!(k.cipher(1, &[1; 16]).open(&mut d).is_err());
        // Tampering with the payload or the header is caught.
        let mut e = a.clone();
        e.payload[3] ^= 1;
        assert!(c.open(&mut e).is_err());
        let mut f = a.clone();
        f.position += 1;
        assert_eq!(c.open(&mut f), Err(Error::Unauthentic { sequence: 5 }));
    }

    #[test]
    fn hex_round_trips() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&b), "0001abff");
        assert_eq!(from_hex::<4>("0001abff"), Some(b));
        assert_eq!(from_hex::<4>("0001abf"), None);
        assert_eq!(from_hex::<2>("zz00"), None);
    }
}
