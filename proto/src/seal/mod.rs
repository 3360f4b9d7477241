//! Sealing (issue 7): every datagram encrypted and authenticated with a shared key.
//!
//! A sealed datagram keeps the 40-byte header in the clear, with [`FLAG_SEALED`] set,
//! and replaces the payload with its XChaCha20-Poly1305 ciphertext followed by the
//! 16-byte tag ([`SEAL_OVERHEAD`]). The header bytes before the CRC, exactly as they
//! go on the wire (sealed flag set, payload length counting the tag), are the
//! associated data, so none of them can be changed either. The CRC32 still covers the
//! whole datagram: a cheap filter before the AEAD.
//!
//! The nonce is never sent: both ends derive it from the header (see [`nonce`] and
//! SECURITY.md for why it never repeats under one key).
//!
//! * The sender seals each finished datagram with [`seal`] (building its framer with
//!   `max_datagram - SEAL_OVERHEAD` so that sealed datagrams stay within the limit).
//! * The receiver [`open`]s each datagram with ncu's magic, then parses the result
//!   with [`Repr::parse`](crate::wire::Repr::parse), then asks its [`ReplayGuard`]
//!   whether the authenticated header was seen before.
//!
//! **No IO:** key files are read and created by the binaries' shared crate
//! (`ncu-host`: `load_keys`, `generate_key_file`); this module parses their text
//! ([`Keys::parse`], [`key_file_text`]). No sockets, no clocks (the replay guard is
//! handed the receiver's time), no randomness.
//!
//! ```
//! use ncu_proto::framer::{Framer, Outbox};
//! use ncu_proto::seal::{self, Keys, ReplayConfig, ReplayGuard, SEAL_OVERHEAD};
//! use ncu_proto::wire::Repr;
//!
//! let keys = Keys::from_bytes([7; 32], &[]);
//! let now_us = 1_700_000_000_000_000;
//! let mut framer = Framer::new(0x6553_f100_1234_5678, "web", 1400 - SEAL_OVERHEAD);
//! let mut outbox = Outbox::default();
//! framer.push_line(0, b"secret line", now_us, &mut outbox);
//! framer.flush(&mut outbox);
//! let plain = outbox.datagrams().next().unwrap();
//!
//! let mut sealed = Vec::new();
//! seal::seal(&keys, plain, &mut sealed);
//! assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
//!
//! let mut opened = Vec::new();
//! seal::open(&keys, &sealed, &mut opened)?;
//! assert_eq!(opened, plain);
//! let repr = Repr::parse(&opened)?;
//! let mut guard = ReplayGuard::new(ReplayConfig::default());
//! assert!(guard.check(&repr.header, now_us).is_ok());
//! assert!(guard.check(&repr.header, now_us).unwrap_err().is_duplicate());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

mod keys;
mod replay;
#[cfg(test)]
mod tests;

pub use keys::{key_file_text, wipe, KeyError, KeyErrorKind, Keys};
pub use replay::{Replay, ReplayConfig, ReplayGuard};

use chacha20::cipher::consts::U10;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use crate::wire::{self, Datagram, DecodeError, FLAG_SEALED, HEADER_LEN};

/// Length of a key in bytes (256 bits).
pub const KEY_LEN: usize = 32;
/// Length of the AEAD nonce derived from the header (XChaCha20: 192 bits).
pub const NONCE_LEN: usize = 24;
/// Bytes sealing adds to a datagram: the Poly1305 tag.
pub const SEAL_OVERHEAD: usize = 16;
/// Key files longer than this are refused (a key file holds a few lines).
pub const MAX_KEY_FILE_LEN: u64 = 64 * 1024;
/// How far behind the highest counter seen in a session a counter is still tracked
/// (at least this many; see [`ReplayGuard`]).
pub const REPLAY_WINDOW: u32 = 4096;

/// Offsets inside the header (as in PROTOCOL.md; `wire` keeps its own private).
/// The associated data: every header byte before the CRC field.
const AD_LEN: usize = HEADER_LEN - 4;

// ---------------------------------------------------------------------------------
// Seal and open

/// The nonce of a datagram, from its header: session id (8 bytes), `sent_at_us`
/// (8), counter (4), kind (1), then three zero bytes. Both ends compute it; it is
/// never sent. SECURITY.md argues why it never repeats under one key.
///
/// # Panics
/// When `datagram` is shorter than [`HEADER_LEN`].
pub fn nonce(datagram: &[u8]) -> [u8; NONCE_LEN] {
    let view = Datagram::new_unchecked(datagram);
    let mut nonce = [0u8; NONCE_LEN];
    nonce[0..8].copy_from_slice(&view.session().to_be_bytes());
    nonce[8..16].copy_from_slice(&view.sent_at_us().to_be_bytes());
    nonce[16..20].copy_from_slice(&view.counter().to_be_bytes());
    nonce[20] = view.kind_byte();
    nonce
}

/// Appends the sealed form of `datagram` (a plain datagram as built by the framer
/// or [`Repr::emit`](crate::wire::Repr::emit)) to `out`: same header with
/// [`FLAG_SEALED`] set and the payload length grown by [`SEAL_OVERHEAD`], payload
/// encrypted with the first key, tag appended, CRC recomputed. Allocates nothing
/// beyond growing `out`. The plain datagram's CRC is neither checked (it is ours)
/// nor needed. For many datagrams, a [`Sealer`] saves the key derivation.
///
/// # Panics
/// When `datagram` is shorter than [`HEADER_LEN`], or its payload plus the tag does
/// not fit the 16-bit length field: callers seal datagrams they built.
pub fn seal(keys: &Keys, datagram: &[u8], out: &mut Vec<u8>) {
    seal_with(&keys.ciphers[0].key, &mut None, datagram, out);
}

/// Seals datagrams as [`seal`] does, remembering the last subkey derived: the
/// datagrams of one batch share their session id and `sent_at_us` (the first 16
/// nonce bytes, which alone determine XChaCha20's subkey), so HChaCha20 and the
/// key set-up run once per batch instead of once per datagram.
#[derive(Clone)]
pub struct Sealer {
    keys: Keys,
    /// The first 16 nonce bytes and the ChaCha20-Poly1305 key derived for them.
    last: Option<([u8; 16], LessSafeKey)>,
}

impl Sealer {
    /// A sealer with `keys` (the first seals).
    pub fn new(keys: Keys) -> Sealer {
        Sealer { keys, last: None }
    }

    /// The keys it seals with (the first) and that open (all).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// As [`seal`].
    ///
    /// # Panics
    /// As [`seal`].
    pub fn seal(&mut self, datagram: &[u8], out: &mut Vec<u8>) {
        seal_with(&self.keys.ciphers[0].key, &mut self.last, datagram, out);
    }
}

/// [`seal`] under `key`, taking the subkey from `last` when its nonce prefix matches
/// and leaving the one used there.
fn seal_with(
    key: &[u8; KEY_LEN],
    last: &mut Option<([u8; 16], LessSafeKey)>,
    datagram: &[u8],
    out: &mut Vec<u8>,
) {
    assert!(datagram.len() >= HEADER_LEN, "a datagram has a full header");
    let sealed_len = u16::try_from(datagram.len() - HEADER_LEN + SEAL_OVERHEAD)
        .expect("sealed payload within a datagram");
    let start = out.len();
    out.extend_from_slice(datagram);
    let sealed = &mut out[start..];
    let mut view = Datagram::new_unchecked(&mut *sealed);
    view.set_flags(view.flags() | FLAG_SEALED);
    view.set_payload_len(sealed_len);
    let nonce = nonce(sealed);
    let prefix: [u8; 16] = nonce[..16].try_into().expect("16 of 24 bytes");
    let cipher = match last {
        Some((cached, cipher)) if *cached == prefix => cipher,
        _ => &last.insert((prefix, subkey(key, &nonce))).1,
    };
    let (header, payload) = sealed.split_at_mut(HEADER_LEN);
    let tag = cipher
        .seal_in_place_separate_tag(ietf_nonce(&nonce), Aad::from(&header[..AD_LEN]), payload)
        .expect("a datagram is far below ChaCha20-Poly1305's length limit");
    out.extend_from_slice(tag.as_ref());
    wire::seal_checksum(&mut out[start..]);
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer { .. }")
    }
}

/// Opens a sealed datagram: checks it as [`Datagram::check`] does (magic, version,
/// lengths, CRC, kind, flags), requires [`FLAG_SEALED`], then tries every key in
/// order. On success appends the plain datagram to `out` (sealed flag cleared,
/// payload length shrunk, CRC recomputed) so that
/// [`Repr::parse`](crate::wire::Repr::parse) reads it; on failure `out` is left as
/// it was. Allocates nothing beyond growing `out`.
///
/// Call [`ReplayGuard::check`] with the opened header before acting on it.
pub fn open(keys: &Keys, datagram: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
    let view = Datagram::new_checked(datagram).map_err(OpenError::Malformed)?;
    if view.flags() & FLAG_SEALED == 0 {
        return Err(OpenError::Unsealed);
    }
    if usize::from(view.payload_len()) < SEAL_OVERHEAD {
        return Err(OpenError::Malformed(DecodeError::Truncated));
    }
    let ad = view.header_before_crc();
    let nonce = nonce(datagram);
    let tag_at = datagram.len() - SEAL_OVERHEAD;
    let start = out.len();
    // No byte is released unless the tag verifies: `open_in_place` fails without
    // returning plaintext (its buffer is then discarded), and `out` is restored when
    // no key authenticates the datagram.
    for cipher in &keys.ciphers {
        out.truncate(start);
        out.extend_from_slice(datagram);
        let (key, nonce) = ietf_key(&cipher.key, &nonce);
        let sealed = &mut out[start + HEADER_LEN..];
        if key.open_in_place(nonce, Aad::from(ad), sealed).is_ok() {
            out.truncate(start + tag_at);
            let plain = &mut out[start..];
            let mut view = Datagram::new_unchecked(&mut *plain);
            view.set_flags(view.flags() & !FLAG_SEALED);
            wire::finish_datagram(plain);
            return Ok(());
        }
    }
    out.truncate(start);
    Err(OpenError::Auth)
}

/// Why [`open`] refused a datagram. Cheap to copy and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenError {
    /// A well-formed ncu datagram without [`FLAG_SEALED`]: a receiver with a key
    /// accepts sealed datagrams only.
    Unsealed,
    /// No key authenticates it: forged, altered, or sealed with another key.
    Auth,
    /// Not a well-formed ncu datagram (the header check failed, or the sealed
    /// payload is shorter than the tag).
    Malformed(DecodeError),
}

impl OpenError {
    /// A short stable name for counters and JSON: `"unsealed"`, `"auth"`, or the
    /// [`DecodeError`]'s name for malformed datagrams (`"bad_checksum"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OpenError::Unsealed => "unsealed",
            OpenError::Auth => "auth",
            OpenError::Malformed(e) => e.as_str(),
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for OpenError {}

// ---------------------------------------------------------------------------------
// The AEAD: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha), byte for byte what
// RustCrypto's `chacha20poly1305::XChaCha20Poly1305` computes (a test compares the
// two): HChaCha20 (from `chacha20`) derives a subkey from the key and the first 16
// nonce bytes; ChaCha20-Poly1305 (RFC 8439) under that subkey, with nonce
// `00 00 00 00 ‖ last 8 nonce bytes`, seals. The second step is `ring`'s, whose
// assembly (BoringSSL's, chosen at run time for the CPU: SSE, AVX2, AVX-512) is
// several times faster on full datagrams than RustCrypto's portable Poly1305.

/// One key's cipher material; wiped on drop.
#[derive(Clone)]
struct Cipher {
    key: [u8; KEY_LEN],
}

impl Drop for Cipher {
    fn drop(&mut self) {
        wipe(&mut self.key);
    }
}

/// The RFC 8439 key and nonce that XChaCha20-Poly1305 reduces to for `nonce`.
fn ietf_key(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    (subkey(key, nonce), ietf_nonce(nonce))
}

/// XChaCha20's subkey for `nonce` (HChaCha20 of its first 16 bytes), as a
/// ChaCha20-Poly1305 key.
fn subkey(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN]) -> LessSafeKey {
    let mut subkey = chacha20::hchacha::<U10>(key.into(), nonce[..16].into());
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice())
        .expect("ChaCha20-Poly1305 takes a 32-byte key");
    wipe(subkey.as_mut_slice());
    LessSafeKey::new(unbound)
}

/// The RFC 8439 nonce for XChaCha20 `nonce`: four zero bytes, then its last eight.
fn ietf_nonce(nonce: &[u8; NONCE_LEN]) -> Nonce {
    let mut ietf_nonce = [0u8; 12];
    ietf_nonce[4..].copy_from_slice(&nonce[16..]);
    Nonce::assume_unique_for_key(ietf_nonce)
}
