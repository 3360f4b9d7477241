//! Input from the Linux kernel's own netconsole: extended records and plain text.
//!
//! The kernel's netconsole sends one of two things over UDP, with no magic and no
//! framing of its own:
//!
//! * **Extended** (`netconsole=+...`): one `/dev/kmsg`-style record per datagram,
//!   `[<release>,]<prefix>,<seq>,<ts_usec>,<flags>[,<field>...];<text>\n` followed by
//!   zero or more dictionary lines ` KEY=VALUE\n` (printk's `SUBSYSTEM=`/`DEVICE=`,
//!   then netconsole's userdata and sysdata such as `cpu=`, `taskname=`, `release=`,
//!   `msgid=`). A record that does not fit in 1000 bytes is cut into fragments that
//!   each repeat the header plus `,ncfrag=<offset>/<total>`; the payload after the
//!   `;` is then a byte range of the whole *body* (text, `\n`, dictionary lines).
//! * **Plain**: raw console text cut into datagrams of at most 1000 bytes, so a line
//!   may span datagrams and a datagram may hold several lines.
//!
//! [`classify`] tells the two apart (plus garbage), [`parse_extended`] parses one
//! extended datagram without allocating, [`ExtendedAssembler`] turns parsed records
//! into owned [`KernelRecord`]s (rebuilding fragments) and [`PlainJoiner`] turns
//! plain datagrams into lines. Both assemblers are sans-IO and hold per-source
//! state: keep one per sender address. Time is only ever what the caller passes in.
//!
//! Continuation records (flag `c`, or `+` on 3.x/4.x kernels) are passed through
//! as they come with [`KernelRecord::cont`] set and are never merged: merging would
//! mean holding back a dying machine's last words waiting for a piece that may
//! never be sent, and the kernel itself documents those hints as unreliable.

use std::fmt;
use std::time::Duration;

mod extended;
mod plain;
mod record;
#[cfg(test)]
mod tests;

pub use extended::{ExtendedAssembler, ExtendedConfig, KernelRecord};
pub use plain::{PlainConfig, PlainJoiner, PlainLine};
pub use record::{parse_extended, unescape, DictPairs, ExtendedRecord, Fragment};

/// Longest header (bytes before the `;`) [`parse_extended`] looks through.
pub const MAX_HEADER_LEN: usize = 512;
/// Longest kernel release string accepted in front of the header (`__NEW_UTS_LEN`).
pub const MAX_RELEASE_LEN: usize = 64;
/// Default bound on a reassembled record's total body size, in bytes.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024;
/// Default time after a record's first fragment at which the rest is given up.
pub const DEFAULT_FRAGMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of fragmented records a source may have in flight at once.
pub const DEFAULT_MAX_PENDING: usize = 4;
/// Default bound on the bytes of a plain line held while waiting for its newline.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
/// Default time after which a plain line's held bytes are emitted without newline.
pub const DEFAULT_LINE_TIMEOUT: Duration = Duration::from_secs(1);

/// How many completed fragmented records are remembered to drop late duplicates.
const RECENT_KEYS: usize = 16;

/// Why a datagram is not an extended record, or a fragment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetconsoleError {
    /// No `;` ends a header within the first [`MAX_HEADER_LEN`] bytes.
    NoHeader,
    /// The header is not `[release,]prefix,seq,ts_usec,flags[,field...]`.
    BadHeader,
    /// A numeric header field is out of range.
    BadNumber,
    /// The flags field is not `-`, `c` or `+`.
    BadFlags,
    /// The `ncfrag=<offset>/<total>` field is malformed or repeated.
    BadFragment,
    /// A fragment's bytes do not fit in the total it announces.
    FragmentOutOfRange,
    /// A fragmented record announces more bytes than the configured bound.
    RecordTooLarge,
    /// An unfragmented record's text is not ended by `\n`.
    MissingNewline,
    /// An unfragmented record's text holds a byte the kernel would have escaped.
    BadText,
    /// What follows the text line is not a ` KEY=VALUE` dictionary line.
    BadDict,
}

impl fmt::Display for NetconsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::NoHeader => "no `;`-terminated header",
            Self::BadHeader => "malformed extended header",
            Self::BadNumber => "header number out of range",
            Self::BadFlags => "unknown record flags",
            Self::BadFragment => "malformed ncfrag field",
            Self::FragmentOutOfRange => "fragment outside its record",
            Self::RecordTooLarge => "fragmented record too large",
            Self::MissingNewline => "record text not ended by newline",
            Self::BadText => "unescaped byte in record text",
            Self::BadDict => "malformed dictionary line",
        };
        f.write_str(s)
    }
}

impl std::error::Error for NetconsoleError {}

/// What a datagram without ncu's magic looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An extended netconsole record or fragment ([`parse_extended`] accepts it).
    Extended,
    /// Text: plain netconsole output or something like `nc -u`.
    Text,
    /// Neither; dropped.
    Garbage(GarbageReason),
}

/// Why a datagram was classified as [`Kind::Garbage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GarbageReason {
    /// The datagram has no bytes.
    Empty,
    /// It holds control bytes other than tab, CR and LF.
    Binary,
    /// It is not UTF-8.
    NotUtf8,
}

impl GarbageReason {
    /// Short stable name: `empty`, `binary` or `not_utf8`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Binary => "binary",
            Self::NotUtf8 => "not_utf8",
        }
    }
}

impl fmt::Display for GarbageReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a datagram that does not start with ncu's magic.
///
/// Extended if [`parse_extended`] accepts it; otherwise Text if it is non-empty
/// UTF-8 without control characters other than tab, CR and LF; otherwise Garbage.
/// Plain netconsole cuts its output every 1000 bytes regardless of characters, so
/// up to three UTF-8 continuation bytes at the start and an incomplete sequence at
/// the end are tolerated.
pub fn classify(datagram: &[u8]) -> Kind {
    if datagram.is_empty() {
        return Kind::Garbage(GarbageReason::Empty);
    }
    if parse_extended(datagram).is_ok() {
        return Kind::Extended;
    }
    if datagram
        .iter()
        .any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f)
    {
        return Kind::Garbage(GarbageReason::Binary);
    }
    let lead = datagram
        .iter()
        .take(3)
        .take_while(|&&b| b & 0xc0 == 0x80)
        .count();
    let body = &datagram[lead..];
    let valid = match std::str::from_utf8(body) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return Kind::Garbage(GarbageReason::NotUtf8),
    };
    if valid.is_empty() {
        return Kind::Garbage(GarbageReason::NotUtf8);
    }
    if valid
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
    {
        return Kind::Garbage(GarbageReason::Binary);
    }
    Kind::Text
}
