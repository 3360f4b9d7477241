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
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use chacha20::cipher::consts::U10;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use crate::wire::{self, Datagram, DecodeError, Header, FLAG_SEALED, HEADER_LEN};

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
// Keys

/// The keys read from a key file: the first seals, every one (the first included)
/// is tried to open. Key material is wiped from memory when `Keys` is dropped.
#[derive(Clone)]
pub struct Keys {
    /// `ciphers[0]` seals; all are tried to open, in order.
    ciphers: Vec<Cipher>,
}

impl Keys {
    /// Keys from raw bytes: `seal` seals and opens, `also_open` (older keys during a
    /// rotation) only open.
    pub fn from_bytes(seal: [u8; KEY_LEN], also_open: &[[u8; KEY_LEN]]) -> Keys {
        let ciphers = core::iter::once(&seal)
            .chain(also_open)
            .map(|&key| Cipher { key })
            .collect();
        Keys { ciphers }
    }

    /// Parses the text of a key file (see SECURITY.md): one key per line as 64 hex
    /// digits, blank lines and lines starting with `#` ignored, surrounding spaces
    /// ignored. The first key seals; all keys open. No IO.
    pub fn parse(text: &str) -> Result<Keys, KeyError> {
        let mut keys: Vec<[u8; KEY_LEN]> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = parse_hex_key(line).ok_or(KeyError {
                path: None,
                kind: KeyErrorKind::BadLine { line: i + 1 },
            })?;
            keys.push(key);
        }
        let Some((first, rest)) = keys.split_first() else {
            return Err(KeyError {
                path: None,
                kind: KeyErrorKind::NoKey,
            });
        };
        let parsed = Keys::from_bytes(*first, rest);
        keys.iter_mut().for_each(|k| wipe(k));
        Ok(parsed)
    }

    /// How many keys there are (the first seals).
    pub fn len(&self) -> usize {
        self.ciphers.len()
    }

    /// Never true: a `Keys` holds at least the sealing key.
    pub fn is_empty(&self) -> bool {
        self.ciphers.is_empty()
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("count", &self.ciphers.len())
            .finish_non_exhaustive()
    }
}

/// Best effort: overwrites key material before its buffer is freed (the ciphers
/// wipe their own copy on drop, see `Cipher`).
pub fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// The text of a new key file holding `key` (what [`Keys::parse`] reads back).
pub fn key_file_text(key: &[u8; KEY_LEN]) -> String {
    let mut text = String::with_capacity(200);
    text.push_str("# ncu key file: the first key seals, every key opens. Keep it mode 0600.\n");
    for b in key {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    text
}

fn parse_hex_key(line: &str) -> Option<[u8; KEY_LEN]> {
    let bytes = line.as_bytes();
    if bytes.len() != KEY_LEN * 2 {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        key[i] = (hi * 16 + lo) as u8;
    }
    Some(key)
}

/// A key file could not be used. Its `Display` is one line for the user, naming the
/// file and, where there is one, the fix.
#[derive(Debug)]
pub struct KeyError {
    path: Option<PathBuf>,
    kind: KeyErrorKind,
}

/// What went wrong with a key file.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyErrorKind {
    /// Reading or creating the file failed (missing, exists already, permissions...).
    Io(io::Error),
    /// Group or others may read or write the file; `mode` is its permission bits.
    TooOpen {
        /// The file's permission bits.
        mode: u32,
    },
    /// A line that is neither a key (64 hex digits), a `#` comment, nor blank.
    BadLine {
        /// 1-based line number (the line itself is not repeated: it may be a key).
        line: usize,
    },
    /// No key in the file.
    NoKey,
    /// The file is larger than [`MAX_KEY_FILE_LEN`].
    TooLarge,
    /// The OS gave no randomness for a new key.
    Random(io::Error),
}

impl KeyError {
    /// An error about the key file at `path` (`None`: key text of no file).
    pub fn new(path: Option<PathBuf>, kind: KeyErrorKind) -> KeyError {
        KeyError { path, kind }
    }
    /// What went wrong.
    pub fn kind(&self) -> &KeyErrorKind {
        &self.kind
    }
    /// What went wrong, taken out (to put it under another path).
    pub fn into_kind(self) -> KeyErrorKind {
        self.kind
    }
    /// The key file, when the error is about one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self
            .path
            .as_deref()
            .unwrap_or(Path::new("(key text)"))
            .display();
        match &self.kind {
            KeyErrorKind::Io(e) => write!(f, "key file {path}: {e}"),
            KeyErrorKind::TooOpen { mode } => write!(
                f,
                "key file {path} is accessible by others (mode {mode:04o}); \
                 it must be readable by its owner only: chmod 600 {path}"
            ),
            KeyErrorKind::BadLine { line } => write!(
                f,
                "key file {path}, line {line}: expected a key (64 hex digits), \
                 a # comment or a blank line"
            ),
            KeyErrorKind::NoKey => write!(f, "key file {path} holds no key"),
            KeyErrorKind::TooLarge => write!(
                f,
                "key file {path} is larger than {MAX_KEY_FILE_LEN} bytes: not a key file"
            ),
            KeyErrorKind::Random(e) => {
                write!(f, "key file {path}: no randomness for a new key: {e}")
            }
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            KeyErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

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

// ---------------------------------------------------------------------------------
// Replay protection

/// Settings of a [`ReplayGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Largest accepted difference between a datagram's `sent_at_us` and the
    /// receiver's clock, either way (default 5 minutes). `u64::MAX` turns the time
    /// check off (then only the per-session windows protect, see [`ReplayGuard`]).
    pub max_skew_us: u64,
    /// Most sessions tracked at once (default 1024, about 600 bytes each); beyond
    /// that the least recently heard one is forgotten.
    pub max_sessions: usize,
}

impl Default for ReplayConfig {
    fn default() -> ReplayConfig {
        ReplayConfig {
            max_skew_us: 5 * 60 * 1_000_000,
            max_sessions: 1024,
        }
    }
}

/// Why [`ReplayGuard::check`] refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Replay {
    /// This (session, counter) was accepted before: a `--copies` copy, a network
    /// duplicate, or a replay of a recent datagram. Count it as a duplicate.
    Duplicate,
    /// The counter is more than the window behind the newest one of its session:
    /// cannot tell new from replayed, so refused.
    BehindWindow,
    /// `sent_at_us` is more than `max_skew_us` before the receiver's clock.
    TooOld,
    /// `sent_at_us` is more than `max_skew_us` after the receiver's clock.
    TooNew,
}

impl Replay {
    /// A short stable name for counters and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Replay::Duplicate => "duplicate",
            Replay::BehindWindow => "replay_window",
            Replay::TooOld => "too_old",
            Replay::TooNew => "too_new",
        }
    }
    /// A duplicate of a datagram accepted earlier (as opposed to a refusal).
    pub fn is_duplicate(self) -> bool {
        self == Replay::Duplicate
    }
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Replay {}

/// Words of the per-session bitmap: one more than `REPLAY_WINDOW / 64`, so that every
/// counter less than `REPLAY_WINDOW` behind the newest is tracked whatever the
/// alignment.
const WINDOW_WORDS: usize = REPLAY_WINDOW as usize / 64 + 1;

/// Receiver-side replay protection, sans-IO: consulted with the header of every
/// datagram that [`open`] authenticated (never with unauthenticated ones, which
/// could move the windows), and the receiver's clock.
///
/// A datagram is accepted once, when all hold:
/// * `|sent_at_us - now_us| <= max_skew_us` ([`Replay::TooOld`], [`Replay::TooNew`]);
/// * its session's counter window has not seen its counter ([`Replay::Duplicate`])
///   and it is less than [`REPLAY_WINDOW`] behind the newest counter of the
///   session ([`Replay::BehindWindow`]; farther back may still be tracked).
///
/// Refused datagrams change nothing. Sessions are kept in a table of at most
/// `max_sessions`; when it is full the least recently heard session is forgotten.
/// Forgetting is harmless when that session was last heard more than
/// `2 * max_skew_us` ago (everything it sent before is too old by now);
/// [`ReplayGuard::early_evictions`] counts the forgettings that were not. What is
/// not covered: a receiver restart forgets every window, so datagrams of the last
/// `max_skew_us` can be replayed once to the new process.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    config: ReplayConfig,
    sessions: HashMap<u64, Window>,
    early_evictions: u64,
}

#[derive(Debug, Clone)]
struct Window {
    /// Highest counter accepted.
    top: u32,
    /// Bit `c % 64` of word `(c / 64) % WINDOW_WORDS`: counter `c` was accepted.
    bits: [u64; WINDOW_WORDS],
    /// Receiver time of the last accepted datagram (for LRU eviction).
    last_heard_us: u64,
}

impl Window {
    fn new(counter: u32, now_us: u64) -> Window {
        let mut window = Window {
            top: counter,
            bits: [0; WINDOW_WORDS],
            last_heard_us: now_us,
        };
        window.set(counter);
        window
    }

    fn slot(counter: u32) -> (usize, u64) {
        let block = (counter / 64) as usize;
        (block % WINDOW_WORDS, 1 << (counter % 64))
    }

    fn set(&mut self, counter: u32) {
        let (word, bit) = Window::slot(counter);
        self.bits[word] |= bit;
    }

    fn check(&self, counter: u32) -> Result<(), Replay> {
        if counter > self.top {
            return Ok(());
        }
        if self.top / 64 - counter / 64 >= WINDOW_WORDS as u32 {
            return Err(Replay::BehindWindow);
        }
        let (word, bit) = Window::slot(counter);
        if self.bits[word] & bit != 0 {
            return Err(Replay::Duplicate);
        }
        Ok(())
    }

    /// Records an accepted counter (after [`Window::check`] passed).
    fn accept(&mut self, counter: u32, now_us: u64) {
        if counter > self.top {
            let old_block = self.top / 64;
            let new_block = counter / 64;
            // Clear the words of the blocks the window moves onto.
            let moved = (new_block - old_block).min(WINDOW_WORDS as u32);
            for block in (new_block - moved + 1)..=new_block {
                self.bits[block as usize % WINDOW_WORDS] = 0;
            }
            self.top = counter;
        }
        self.set(counter);
        self.last_heard_us = self.last_heard_us.max(now_us);
    }
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new(config: ReplayConfig) -> ReplayGuard {
        ReplayGuard {
            config,
            sessions: HashMap::new(),
            early_evictions: 0,
        }
    }

    /// Accepts (and remembers) or refuses one authenticated datagram, by its header.
    /// `now_us` is the receiver's wall clock, microseconds since the Unix epoch.
    pub fn check(&mut self, header: &Header, now_us: u64) -> Result<(), Replay> {
        let skew = self.config.max_skew_us;
        if header.sent_at_us.saturating_add(skew) < now_us {
            return Err(Replay::TooOld);
        }
        if header.sent_at_us > now_us.saturating_add(skew) {
            return Err(Replay::TooNew);
        }
        if let Some(window) = self.sessions.get_mut(&header.session) {
            window.check(header.counter)?;
            window.accept(header.counter, now_us);
            return Ok(());
        }
        if self.sessions.len() >= self.config.max_sessions.max(1) {
            self.evict_one(now_us);
        }
        self.sessions
            .insert(header.session, Window::new(header.counter, now_us));
        Ok(())
    }

    fn evict_one(&mut self, now_us: u64) {
        // O(max_sessions), only when a new session arrives at a full table.
        let oldest = self
            .sessions
            .iter()
            .min_by_key(|(_, w)| w.last_heard_us)
            .map(|(&id, w)| (id, w.last_heard_us));
        if let Some((id, last_heard_us)) = oldest {
            let safe_after =
                last_heard_us.saturating_add(self.config.max_skew_us.saturating_mul(2));
            if safe_after >= now_us {
                self.early_evictions += 1;
            }
            self.sessions.remove(&id);
        }
    }

    /// Sessions currently tracked.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions forgotten (table full) while their recent datagrams could still pass
    /// the time check: each is a window in which a replay would go unnoticed. Worth
    /// a warning; raise `max_sessions` if it grows.
    pub fn early_evictions(&self) -> u64 {
        self.early_evictions
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};
    use std::time::Instant;

    use super::*;
    use crate::framer::{Framer, Outbox};
    use crate::wire::{EndReason, Payload, Repr, LINE_PARTIAL};

    const NOW: u64 = 1_700_000_000_000_000;
    const OLD_KEY: [u8; 32] = [0x11; 32];
    const NEW_KEY: [u8; 32] = [0x22; 32];

    /// One datagram of every kind and shape: HELLO, packed lines, fragments,
    /// HEARTBEAT, END.
    fn sample_datagrams() -> Vec<Vec<u8>> {
        let mut framer = Framer::new(0x6553_f100_dead_beef, "web-01", 200);
        let mut outbox = Outbox::default();
        framer.hello(42, NOW, "stdin", NOW, &mut outbox);
        framer.push_line(
            0,
            b"GET /index.html 200 secret-token=hunter2",
            NOW,
            &mut outbox,
        );
        framer.push_line(LINE_PARTIAL, b"partial line", NOW, &mut outbox);
        framer.flush(&mut outbox);
        let long: Vec<u8> = (0..500u32).map(|i| b'a' + (i % 26) as u8).collect();
        framer.push_line(0, &long, NOW + 1, &mut outbox);
        framer.heartbeat(NOW + 2, &mut outbox);
        framer.end(EndReason::Exit(3), NOW + 3, &mut outbox);
        outbox.datagrams().map(<[u8]>::to_vec).collect()
    }

    fn sealed(keys: &Keys, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal(keys, plain, &mut out);
        out
    }

    #[test]
    fn the_associated_data_is_the_header_before_the_crc() {
        let plain = &sample_datagrams()[1];
        let view = Datagram::new_unchecked(&plain[..]);
        assert_eq!(view.header_before_crc().len(), AD_LEN);
        let mut copy = plain.clone();
        let mut view = Datagram::new_unchecked(&mut copy[..]);
        view.set_flags(0x05);
        view.set_payload_len(0x1234);
        assert_eq!((view.flags(), view.payload_len()), (0x05, 0x1234));
        assert_eq!(&copy[HEADER_LEN..], &plain[HEADER_LEN..]);
    }

    #[test]
    fn seal_open_round_trip_every_kind() {
        let keys = Keys::from_bytes(NEW_KEY, &[]);
        let samples = sample_datagrams();
        assert!(samples.len() >= 6, "HELLO, DATA, fragments, HEARTBEAT, END");
        for plain in &samples {
            let s = sealed(&keys, plain);
            assert_eq!(s.len(), plain.len() + SEAL_OVERHEAD);
            assert_eq!(s[..4], plain[..4]);
            assert_eq!(Repr::parse(&s).unwrap_err(), DecodeError::Sealed);
            let view = Datagram::new_checked(&s[..]).unwrap();
            assert_eq!(view.flags() & FLAG_SEALED, FLAG_SEALED);
            let mut out = vec![0xaa]; // appends after what is there
            open(&keys, &s, &mut out).unwrap();
            assert_eq!(&out[1..], &plain[..]);
            Repr::parse(&out[1..]).unwrap();
        }
    }

    #[test]
    fn sealed_bytes_hide_the_text() {
        let keys = Keys::from_bytes(NEW_KEY, &[]);
        for plain in sample_datagrams() {
            let s = sealed(&keys, &plain);
            for text in [
                &b"GET /index.html 200 secret-token=hunter2"[..],
                b"partial line",
                b"web-01",
                b"stdin",
                b"abcdefghijklmnop",
            ] {
                for piece in text.windows(5) {
                    assert!(
                        !s.windows(5).any(|w| w == piece),
                        "{:?} visible in sealed bytes",
                        String::from_utf8_lossy(piece)
                    );
                }
            }
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let keys = Keys::from_bytes(NEW_KEY, &[]);
        for plain in sample_datagrams() {
            let good = sealed(&keys, &plain);
            let mut out = Vec::new();
            for bit in 0..good.len() * 8 {
                let mut v = good.clone();
                v[bit / 8] ^= 1 << (bit % 8);
                assert!(open(&keys, &v, &mut out).is_err(), "bit {bit}");
                // The same flip with the CRC fixed up: the AEAD alone must catch it.
                if bit / 8 < AD_LEN || bit / 8 >= HEADER_LEN {
                    wire::seal_checksum(&mut v);
                    let err = open(&keys, &v, &mut out).unwrap_err();
                    assert_ne!(err, OpenError::Malformed(DecodeError::BadChecksum));
                }
                assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn truncation_is_rejected() {
        let keys = Keys::from_bytes(NEW_KEY, &[]);
        let good = sealed(&keys, &sample_datagrams()[1]);
        let mut out = Vec::new();
        for len in 0..good.len() {
            assert!(open(&keys, &good[..len], &mut out).is_err());
            // Consistently truncated (length and CRC fixed up): the tag catches it.
            if len >= HEADER_LEN {
                let mut v = good[..len].to_vec();
                wire::finish_datagram(&mut v);
                let err = open(&keys, &v, &mut out).unwrap_err();
                assert!(
                    matches!(
                        err,
                        OpenError::Auth | OpenError::Malformed(DecodeError::Truncated)
                    ),
                    "{len}: {err:?}"
                );
            }
        }
        assert!(out.is_empty());
    }

    #[test]
    fn wrong_key_and_unsealed_are_rejected() {
        let keys = Keys::from_bytes(NEW_KEY, &[]);
        let other = Keys::from_bytes(OLD_KEY, &[]);
        let mut out = Vec::new();
        for plain in sample_datagrams() {
            assert_eq!(
                open(&other, &sealed(&keys, &plain), &mut out),
                Err(OpenError::Auth)
            );
            assert_eq!(open(&keys, &plain, &mut out), Err(OpenError::Unsealed));
        }
        assert_eq!(
            open(&keys, b"hello, plain text", &mut out),
            Err(OpenError::Malformed(DecodeError::BadMagic))
        );
        assert_eq!(OpenError::Auth.as_str(), "auth");
        assert_eq!(OpenError::Unsealed.to_string(), "unsealed");
        assert!(out.is_empty());
    }

    #[test]
    fn key_rotation_opens_with_every_key() {
        let old_sender = Keys::from_bytes(OLD_KEY, &[]);
        let new_sender = Keys::from_bytes(NEW_KEY, &[]);
        let receiver = Keys::parse(&format!(
            "# rotation: new first\n{}\n\n  {}  \n",
            "22".repeat(32),
            "11".repeat(32).to_uppercase()
        ))
        .unwrap();
        assert_eq!(receiver.len(), 2);
        let new_only = Keys::from_bytes(NEW_KEY, &[]);
        for plain in sample_datagrams() {
            let mut out = Vec::new();
            open(&receiver, &sealed(&old_sender, &plain), &mut out).unwrap();
            assert_eq!(out, plain);
            out.clear();
            open(&receiver, &sealed(&new_sender, &plain), &mut out).unwrap();
            assert_eq!(out, plain);
            out.clear();
            assert_eq!(
                open(&new_only, &sealed(&old_sender, &plain), &mut out),
                Err(OpenError::Auth)
            );
            // The receiver seals with its first key.
            assert_eq!(sealed(&receiver, &plain), sealed(&new_sender, &plain));
        }
    }

    #[test]
    fn key_text_errors() {
        let err = |text: &str| Keys::parse(text).unwrap_err().kind;
        assert!(matches!(err(""), KeyErrorKind::NoKey));
        assert!(matches!(err("# only a comment\n\n"), KeyErrorKind::NoKey));
        assert!(matches!(
            err(&format!("# c\n{}\n", "ab".repeat(31))),
            KeyErrorKind::BadLine { line: 2 }
        ));
        assert!(matches!(
            err(&format!("{}zz\n", "ab".repeat(31))),
            KeyErrorKind::BadLine { line: 1 }
        ));
        assert!(matches!(
            err(&format!("{} # trailing\n", "ab".repeat(32))),
            KeyErrorKind::BadLine { line: 1 }
        ));
        let text = Keys::parse("nope").unwrap_err().to_string();
        assert!(text.contains("line 1") && !text.contains("nope"), "{text}");
        let keys = Keys::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(format!("{keys:?}"), "Keys { count: 1, .. }");
    }

    #[test]
    fn nonces_never_repeat_over_a_long_run() {
        // Two sessions (a restart in the same second with other random bits), each a
        // long run of packed lines, fragments and heartbeats (which repeat their seq).
        let keys = Keys::from_bytes(NEW_KEY, &[]);
        let mut nonces = HashSet::new();
        let mut total = 0usize;
        for session in [0x6553_f100_0000_0001, 0x6553_f100_0000_0002] {
            let mut framer = Framer::new(session, "web", 256);
            let mut outbox = Outbox::default();
            framer.hello(1, NOW, "stdin", NOW, &mut outbox);
            let long = [b'x'; 600];
            let mut i = 0u64;
            while total < 1_000_000 {
                // The clock does not move: the counter alone must keep nonces apart.
                let now = NOW;
                match i % 8 {
                    0..=3 => {
                        framer.push_line(0, b"a 120-byte-ish log line", now, &mut outbox);
                    }
                    4 => {
                        framer.push_line(0, &long, now, &mut outbox);
                    }
                    _ => {
                        framer.flush(&mut outbox);
                        framer.heartbeat(now, &mut outbox);
                    }
                }
                framer.flush(&mut outbox);
                for d in outbox.datagrams() {
                    let n = nonce(d);
                    if total % 997 == 1 {
                        // Sealing keeps the header fields the nonce is made of.
                        assert_eq!(nonce(&sealed(&keys, d)), n);
                    }
                    assert!(nonces.insert(n), "nonce repeated after {total} datagrams");
                    total += 1;
                }
                outbox.clear();
                i += 1;
                if total >= 500_000 && session & 1 == 1 {
                    break;
                }
            }
        }
        assert!(nonces.len() >= 1_000_000);
    }

    fn header(session: u64, counter: u32, sent_at_us: u64) -> Header {
        Header {
            session,
            seq: 1,
            sent_at_us,
            counter,
        }
    }

    #[test]
    fn replay_guard_rejects_exact_replays_and_counts_copies_as_duplicates() {
        let mut guard = ReplayGuard::new(ReplayConfig::default());
        for c in 0..10 {
            assert_eq!(guard.check(&header(1, c, NOW), NOW), Ok(()));
        }
        for c in 0..10 {
            assert_eq!(guard.check(&header(1, c, NOW), NOW), Err(Replay::Duplicate));
            // Another session's counters are its own.
            assert_eq!(guard.check(&header(2, c, NOW), NOW), Ok(()));
        }
        assert!(Replay::Duplicate.is_duplicate() && !Replay::TooOld.is_duplicate());
    }

    #[test]
    fn replay_window_slides() {
        let mut guard = ReplayGuard::new(ReplayConfig::default());
        assert_eq!(guard.check(&header(1, 5000, NOW), NOW), Ok(()));
        // Reordered within the window: accepted once.
        let inside = 5000 - (REPLAY_WINDOW - 1);
        assert_eq!(guard.check(&header(1, inside, NOW), NOW), Ok(()));
        assert_eq!(
            guard.check(&header(1, inside, NOW), NOW),
            Err(Replay::Duplicate)
        );
        assert_eq!(
            guard.check(&header(1, 100, NOW), NOW),
            Err(Replay::BehindWindow)
        );
        // A big jump forward forgets everything behind.
        assert_eq!(guard.check(&header(1, 1_000_000, NOW), NOW), Ok(()));
        assert_eq!(
            guard.check(&header(1, 5000, NOW), NOW),
            Err(Replay::BehindWindow)
        );
        assert_eq!(guard.check(&header(1, 999_999, NOW), NOW), Ok(()));
        assert_eq!(
            guard.check(&header(1, u32::MAX, NOW), NOW),
            Ok(()),
            "top of the range"
        );
        assert_eq!(
            guard.check(&header(1, u32::MAX, NOW), NOW),
            Err(Replay::Duplicate)
        );
    }

    #[test]
    fn replay_guard_checks_sent_at_against_the_clock() {
        let config = ReplayConfig::default();
        let skew = config.max_skew_us;
        let mut guard = ReplayGuard::new(config);
        assert_eq!(
            guard.check(&header(1, 0, NOW - skew - 1), NOW),
            Err(Replay::TooOld)
        );
        assert_eq!(
            guard.check(&header(1, 0, NOW + skew + 1), NOW),
            Err(Replay::TooNew)
        );
        assert_eq!(guard.sessions(), 0, "refusals change nothing");
        assert_eq!(guard.check(&header(1, 0, NOW - skew), NOW), Ok(()));
        assert_eq!(guard.check(&header(1, 1, NOW + skew), NOW), Ok(()));
        // A long-running session (started hours ago) is fine: only sent_at counts.
        let session = wire::session_id(((NOW / 1_000_000) - 86_400) as u32, 7);
        assert_eq!(guard.check(&header(session, 123_456, NOW), NOW), Ok(()));
        let off = ReplayGuard::new(ReplayConfig {
            max_skew_us: u64::MAX,
            ..ReplayConfig::default()
        })
        .check(&header(3, 0, 0), NOW);
        assert_eq!(off, Ok(()));
    }

    #[test]
    fn replay_guard_is_bounded_and_counts_early_evictions() {
        let config = ReplayConfig {
            max_skew_us: 1_000_000,
            max_sessions: 4,
        };
        let mut guard = ReplayGuard::new(config);
        for s in 0..4 {
            guard.check(&header(s, 0, NOW), NOW + s).unwrap();
        }
        // Session 0 is the least recently heard; a fifth session pushes it out early.
        guard.check(&header(9, 0, NOW), NOW + 10).unwrap();
        assert_eq!((guard.sessions(), guard.early_evictions()), (4, 1));
        assert_eq!(guard.check(&header(1, 0, NOW), NOW), Err(Replay::Duplicate));
        // Much later, evicting a long-idle session is not early.
        let later = NOW + 3_000_000;
        guard.check(&header(10, 0, later), later).unwrap();
        assert_eq!(guard.early_evictions(), 1);
    }

    #[test]
    fn replay_window_matches_a_model() {
        // Against an obviously correct set of seen counters.
        let seed = test_seed();
        let mut rng = XorShift(seed);
        for _ in 0..20 {
            let mut guard = ReplayGuard::new(ReplayConfig::default());
            let mut seen = BTreeSet::new();
            let mut top = 0u32;
            let mut base = rng.next() as u32 % 100_000;
            for _ in 0..20_000 {
                base += (rng.next() % 3) as u32;
                let back = (rng.next() % 5000) as u32;
                let c = base.saturating_sub(back);
                let got = guard.check(&header(1, c, NOW), NOW);
                let behind = !seen.is_empty() && c < top && top / 64 - c / 64 >= 65;
                let want = if behind {
                    Err(Replay::BehindWindow)
                } else if seen.contains(&c) {
                    Err(Replay::Duplicate)
                } else {
                    Ok(())
                };
                assert_eq!(got, want, "seed {seed}: counter {c}, top {top}");
                if top - c.min(top) < REPLAY_WINDOW {
                    assert_ne!(got, Err(Replay::BehindWindow), "window too small");
                }
                if got.is_ok() {
                    seen.insert(c);
                    top = top.max(c);
                }
            }
        }
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// `NCU_TEST_SEED` if set, else from the clock; printed so a failure can be rerun.
    fn test_seed() -> u64 {
        let seed = std::env::var("NCU_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        println!("seed {seed} (rerun with NCU_TEST_SEED={seed})");
        seed
    }

    #[test]
    fn mutated_sealed_datagrams_never_panic_nor_open() {
        let seed = test_seed();
        let mut rng = XorShift(seed);
        let keys = Keys::from_bytes(NEW_KEY, &[OLD_KEY]);
        let samples: Vec<Vec<u8>> = sample_datagrams()
            .iter()
            .map(|p| sealed(&keys, p))
            .collect();
        let mut out = Vec::new();
        for round in 0..20_000 {
            let mut v = samples[round % samples.len()].clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % (v.len() + 1);
                match rng.next() % 5 {
                    0 if at < v.len() => v[at] ^= 1 << (rng.next() % 8),
                    1 if at < v.len() => v[at] = rng.next() as u8,
                    2 => v.truncate(at),
                    3 => v.insert(at, rng.next() as u8),
                    _ => v.extend_from_slice(&rng.next().to_be_bytes()),
                }
            }
            if rng.next() & 1 == 1 && v.len() >= HEADER_LEN {
                wire::seal_checksum(&mut v); // let it past the CRC
            }
            let changed = !samples.contains(&v);
            let result = open(&keys, &v, &mut out);
            if changed {
                assert!(
                    result.is_err(),
                    "seed {seed}, round {round}: forged {v:02x?}"
                );
            }
            out.clear();
        }
    }

    /// What a key holder may seal: mutated plain datagrams (the fuzz target `sealed`
    /// in every run) seal, open to the same bytes, and go through parse and the
    /// replay guard without panic.
    #[test]
    fn anything_a_key_holder_seals_opens_whole_and_parses_without_panic() {
        let seed = test_seed();
        let mut rng = XorShift(seed);
        let keys = Keys::from_bytes(NEW_KEY, &[OLD_KEY]);
        let samples = sample_datagrams();
        let (mut sealed, mut opened) = (Vec::new(), Vec::new());
        let mut parsed = 0;
        for round in 0..20_000 {
            let mut plain = samples[round % samples.len()].clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = HEADER_LEN.min(plain.len())
                    + (rng.next() as usize) % (plain.len() - HEADER_LEN + 1);
                match rng.next() % 4 {
                    0 if at < plain.len() => plain[at] ^= 1 << (rng.next() % 8),
                    1 if at < plain.len() => plain[at] = rng.next() as u8,
                    2 => plain.truncate(at),
                    _ => plain.insert(at, rng.next() as u8),
                }
            }
            // The kind and flags bytes too, now and then.
            if rng.next().is_multiple_of(8) {
                plain[4 + (rng.next() % 2) as usize] = rng.next() as u8;
            }
            wire::set_payload_len(&mut plain);
            sealed.clear();
            opened.clear();
            seal(&keys, &plain, &mut sealed);
            if open(&keys, &sealed, &mut opened).is_err() {
                // Only a header open() refuses before the AEAD (kind, flags).
                continue;
            }
            assert_eq!(
                opened[HEADER_LEN..],
                plain[HEADER_LEN..],
                "seed {seed}, round {round}"
            );
            if let Ok(repr) = Repr::parse(&opened) {
                parsed += 1;
                let mut guard = ReplayGuard::new(ReplayConfig::default());
                assert!(guard.check(&repr.header, repr.header.sent_at_us).is_ok());
                assert!(guard.check(&repr.header, repr.header.sent_at_us).is_err());
            }
        }
        assert!(
            parsed > 1_000,
            "seed {seed}: only {parsed} of 20,000 parsed"
        );
    }

    /// The AEAD here is RustCrypto's `XChaCha20Poly1305`, byte for byte: same sealed
    /// bytes for every sample datagram and for every payload length from 0 to 1300
    /// (every block and padding boundary).
    #[test]
    fn aead_matches_chacha20poly1305() {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};

        let seed = test_seed();
        let mut rng = XorShift(seed);
        let mut key = [0u8; KEY_LEN];
        let check = |key: &[u8; KEY_LEN], plain: &[u8]| {
            let ours = sealed(&Keys::from_bytes(*key, &[]), plain);
            let reference = XChaCha20Poly1305::new(key.into());
            let mut want = ours[..HEADER_LEN].to_vec(); // our header, flag and length set
            let mut payload = plain[HEADER_LEN..].to_vec();
            let tag = reference
                .encrypt_in_place_detached(
                    XNonce::from_slice(&nonce(&want)),
                    &want[..AD_LEN],
                    &mut payload,
                )
                .unwrap();
            want.extend_from_slice(&payload);
            want.extend_from_slice(&tag);
            wire::seal_checksum(&mut want);
            assert_eq!(ours, want, "seed {seed}: {} payload bytes", payload.len());
        };
        for plain in sample_datagrams() {
            check(&NEW_KEY, &plain);
        }
        let mut framer = Framer::new(0x6553_f100_0000_0001, "web", 1400);
        let mut outbox = Outbox::default();
        let line: Vec<u8> = (0..1400).map(|_| rng.next() as u8).collect();
        for len in 0..1300 {
            key.iter_mut().for_each(|b| *b = rng.next() as u8);
            framer.push_line(0, &line[..len], NOW + len as u64, &mut outbox);
            framer.flush(&mut outbox);
            for plain in outbox.datagrams() {
                check(&key, plain);
            }
            outbox.clear();
        }
    }

    /// A [`Sealer`] (subkey remembered while the nonce prefix stays) fed by a framer
    /// that skips the plain CRC gives byte for byte what [`seal`] gives for the
    /// checksummed datagrams, across batches whose `sent_at_us` (and so subkey) change.
    #[test]
    fn sealer_matches_seal_across_batches() {
        let keys = Keys::from_bytes(NEW_KEY, &[]);
        let mut sealer = Sealer::new(keys.clone());
        let (mut checked, mut unchecked) = (
            Framer::new(0x6553_f100_0000_0002, "web", 300),
            Framer::new(0x6553_f100_0000_0002, "web", 300),
        );
        unchecked.set_sealed_next(true);
        let (mut a, mut b) = (Outbox::default(), Outbox::default());
        let mut batches = 0;
        for batch in 0..50u64 {
            for i in 0..=(batch % 7) {
                let line = format!("batch {batch} line {i} {}", "x".repeat((i * 40) as usize));
                checked.push_line(0, line.as_bytes(), NOW + batch, &mut a);
                unchecked.push_line(0, line.as_bytes(), NOW + batch, &mut b);
            }
            checked.flush(&mut a);
            unchecked.flush(&mut b);
            assert_eq!(a.datagrams().count(), b.datagrams().count());
            batches += usize::from(a.datagrams().count() > 1);
            for (plain, crcless) in a.datagrams().zip(b.datagrams()) {
                assert_ne!(plain, crcless, "the plain CRC was skipped");
                let mut ours = Vec::new();
                sealer.seal(crcless, &mut ours);
                assert_eq!(ours, sealed(&keys, plain), "batch {batch}");
                let mut opened = Vec::new();
                open(&keys, &ours, &mut opened).unwrap();
                assert_eq!(opened, plain, "opens to the checksummed datagram");
            }
            a.clear();
            b.clear();
        }
        assert!(batches > 10, "batches of several datagrams share a subkey");
    }

    /// Not a correctness test: prints seal+open throughput for datagrams carrying
    /// one 120-byte line, against the CRC-only decode of the plain datagram. Run
    /// with `cargo test -p ncu-proto --release seal -- --nocapture`.
    #[test]
    fn seal_throughput() {
        let n: u32 = if cfg!(debug_assertions) {
            20_000
        } else {
            1_000_000
        };
        let keys = Keys::from_bytes(NEW_KEY, &[OLD_KEY]);
        let mut framer = Framer::new(0x6553_f100_0000_0001, "web", 1400);
        let mut outbox = Outbox::default();
        framer.push_line(0, &[b'x'; 120], NOW, &mut outbox);
        framer.flush(&mut outbox);
        let plain = outbox.datagrams().next().unwrap().to_vec();
        assert_eq!(plain.len(), HEADER_LEN + 3 + 120);

        let mut decoded = 0usize;
        let t = Instant::now();
        for _ in 0..n {
            let repr = Repr::parse(std::hint::black_box(&plain)).unwrap();
            if let Payload::Lines { count, .. } = repr.payload {
                decoded += usize::from(count);
            }
        }
        let decode = t.elapsed();
        assert_eq!(decoded, n as usize);

        let mut s = Vec::with_capacity(2048);
        let t = Instant::now();
        for _ in 0..n {
            s.clear();
            seal(&keys, std::hint::black_box(&plain), &mut s);
        }
        let seal_time = t.elapsed();

        let mut o = Vec::with_capacity(2048);
        let t = Instant::now();
        for _ in 0..n {
            o.clear();
            open(&keys, std::hint::black_box(&s), &mut o).unwrap();
            Repr::parse(&o).unwrap();
        }
        let open_time = t.elapsed();

        // The worst case for a rotating receiver: the second key is the right one.
        let old_sealed = sealed(&Keys::from_bytes(OLD_KEY, &[]), &plain);
        let t = Instant::now();
        for _ in 0..n {
            o.clear();
            open(&keys, std::hint::black_box(&old_sealed), &mut o).unwrap();
        }
        let open2_time = t.elapsed();

        let rate = |d: std::time::Duration| f64::from(n) / d.as_secs_f64();
        println!(
            "seal throughput ({} build, {n} datagrams of {} bytes, one 120-byte line):\n  \
             plain decode (CRC + parse): {:>12.0} datagrams/s\n  \
             seal:                       {:>12.0} datagrams/s\n  \
             open + parse:               {:>12.0} datagrams/s\n  \
             open with the 2nd key:      {:>12.0} datagrams/s",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            plain.len(),
            rate(decode),
            rate(seal_time),
            rate(open_time),
            rate(open2_time),
        );
    }
}
