//! Keys: parsed from a key file's text (reading the file is `ncu-host`'s), wiped
//! when dropped, and the errors a key file can give.

use core::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::{Cipher, KEY_LEN, MAX_KEY_FILE_LEN};

/// The keys read from a key file: the first seals, every one (the first included)
/// is tried to open. Key material is wiped from memory when `Keys` is dropped.
#[derive(Clone)]
pub struct Keys {
    /// `ciphers[0]` seals; all are tried to open, in order.
    pub(super) ciphers: Vec<Cipher>,
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
