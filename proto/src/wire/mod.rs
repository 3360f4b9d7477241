//! Wire format v1: one ncu datagram = a 40-byte header followed by a payload.
//!
//! The layout is specified in PROTOCOL.md; this module is its only implementation.
//! [`Datagram`] is a zero-copy view over received bytes (check first with
//! [`Datagram::new_checked`], after which no accessor panics); [`Repr`] is the
//! parsed, owned-where-needed form that [`Repr::parse`] builds and [`Repr::emit`]
//! writes.
//!
//! All integers are big-endian (network byte order).

use core::fmt;

mod build;
mod payload;
mod repr;
#[cfg(test)]
mod tests;

pub use build::{
    finish_datagram, push_line_record, push_nack_ranges, seal_checksum, set_payload_len,
    write_header,
};
pub use payload::{LineRef, Lines, NackRanges, Payload};
pub use repr::Repr;

/// The first three bytes of every ncu datagram: `"NCU"`.
pub const MAGIC: [u8; 3] = *b"NCU";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = field::CRC.end;
/// The largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_DATAGRAM: usize = 65_507;
/// The smallest `--max-datagram` a sender may use (room for a HELLO with a short
/// name, and for fragments of useful size).
pub const MIN_DATAGRAM: usize = 128;
/// Bytes in front of every line record in a DATA payload (flags u8, length u16).
pub const LINE_RECORD_HEADER_LEN: usize = 3;
/// Bytes in front of a fragment's bytes (offset u32, total u32, line flags u8).
pub const FRAGMENT_HEADER_LEN: usize = 9;
/// Longest sender name carried in HELLO, HEARTBEAT and END.
pub const MAX_NAME_LEN: usize = 255;

mod field {
    use core::ops::Range;
    pub(super) const MAGIC: Range<usize> = 0..3;
    pub(super) const VERSION: usize = 3;
    pub(super) const KIND: usize = 4;
    pub(super) const FLAGS: usize = 5;
    pub(super) const PAYLOAD_LEN: Range<usize> = 6..8;
    pub(super) const SESSION: Range<usize> = 8..16;
    pub(super) const SEQ: Range<usize> = 16..24;
    pub(super) const SENT_AT: Range<usize> = 24..32;
    pub(super) const COUNTER: Range<usize> = 32..36;
    pub(super) const CRC: Range<usize> = 36..40;
}

/// Header flag: the payload is sealed (AEAD ciphertext followed by its tag).
pub const FLAG_SEALED: u8 = 0x01;
/// Header flag (DATA only): the payload is one fragment of a long line.
pub const FLAG_FRAGMENT: u8 = 0x02;
/// Header flag (sender kinds): the sender keeps recent datagrams and resends them
/// when a receiver asks with a NACK (recovery, see PROTOCOL.md).
pub const FLAG_RECOVERY: u8 = 0x04;
const KNOWN_FLAGS: u8 = FLAG_SEALED | FLAG_FRAGMENT | FLAG_RECOVERY;
/// Most ranges one NACK asks for.
pub const MAX_NACK_RANGES: usize = 64;
/// Bytes of one NACK range (first u64, count u32).
const NACK_RANGE_LEN: usize = 12;

/// Line flag: the line had no newline (flushed after idling, or at end of input).
pub const LINE_PARTIAL: u8 = 0x01;
/// Line flag: the line continues the previous one, cut at `--max-line`.
pub const LINE_CONTINUATION: u8 = 0x02;
/// Line flag: the line is one record of the kernel's log as `/dev/kmsg` hands it
/// out (`ncu-send --kmsg`), see [`crate::kmsg`].
pub const LINE_KMSG: u8 = 0x04;
const KNOWN_LINE_FLAGS: u8 = LINE_PARTIAL | LINE_CONTINUATION | LINE_KMSG;
/// Record flags of a padding record: not a line (no sequence number); its bytes are
/// zero and ignored. Only as the last record of a DATA datagram. Senders pad full
/// datagrams to exactly `--max-datagram` so that runs of them can be sent with UDP
/// segmentation offload (GSO), which needs equal sizes.
pub const LINE_PADDING: u8 = 0x80;

/// Why a datagram was rejected. Cheap to copy and compare; one variant per cause so
/// that drops can be counted by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the header, or than the header's payload length says.
    Truncated,
    /// Longer than the header's payload length says.
    TrailingBytes,
    /// Does not start with `NCU`.
    BadMagic,
    /// A version this crate does not speak.
    UnknownVersion,
    /// A kind byte this version does not define.
    UnknownKind,
    /// A flag bit this version does not define, or a flag on the wrong kind.
    BadFlags,
    /// The CRC32 does not match the bytes.
    BadChecksum,
    /// A length inside the payload points past its end, or a field is out of range.
    BadLength,
    /// A DATA datagram without any line.
    EmptyData,
    /// A fragment whose offset and length do not fit inside its total.
    FragmentOutOfRange,
    /// A name or command that is not valid UTF-8.
    BadText,
    /// An END with an unknown reason code.
    BadEndReason,
    /// The sealed flag is set; the payload needs a key (see the `seal` layer).
    Sealed,
}

impl DecodeError {
    /// A short stable name for counters and JSON (`"bad_checksum"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::TrailingBytes => "trailing_bytes",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnknownVersion => "unknown_version",
            DecodeError::UnknownKind => "unknown_kind",
            DecodeError::BadFlags => "bad_flags",
            DecodeError::BadChecksum => "bad_checksum",
            DecodeError::BadLength => "bad_length",
            DecodeError::EmptyData => "empty_data",
            DecodeError::FragmentOutOfRange => "fragment_out_of_range",
            DecodeError::BadText => "bad_text",
            DecodeError::BadEndReason => "bad_end_reason",
            DecodeError::Sealed => "sealed",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DecodeError {}

/// The kind byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A session starts.
    Hello = 1,
    /// Lines, or one fragment of a long line.
    Data = 2,
    /// The sender is idle but alive; says how many lines it has sent.
    Heartbeat = 3,
    /// The sender finished cleanly.
    End = 4,
    /// Receiver to sender: please resend these lines (recovery).
    Nack = 5,
    /// Sender to receiver: these lines are no longer kept, stop asking.
    Gone = 6,
    /// Sender to receiver: the kernel's netconsole of this machine sends from this
    /// address (`ncu-send --netconsole`): its records belong to this session.
    Companion = 7,
}

impl Kind {
    /// The kind for a byte, if this version defines it.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Hello),
            2 => Some(Kind::Data),
            3 => Some(Kind::Heartbeat),
            4 => Some(Kind::End),
            5 => Some(Kind::Nack),
            6 => Some(Kind::Gone),
            7 => Some(Kind::Companion),
            _ => None,
        }
    }
}

/// Builds a session id: the sender's start time in whole seconds since the Unix
/// epoch in the high 32 bits, 32 random bits below. From any datagram, a receiver can
/// then tell how long the session had been running (in the sender's own clock) and so
/// whether it joined a session mid-way or lost its first lines.
pub fn session_id(started_at_secs: u32, random: u32) -> u64 {
    (u64::from(started_at_secs) << 32) | u64::from(random)
}

/// The start time (whole seconds since the Unix epoch) carried in a session id.
pub fn session_started_secs(session: u64) -> u32 {
    (session >> 32) as u32
}

/// Whether `bytes` starts with ncu's magic (any version): such a datagram is ncu's
/// and is never read as text or netconsole.
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[..3] == MAGIC
}

/// A read-only view of an ncu datagram's header over a byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// Wraps a buffer without checking it; accessors may panic on short buffers.
    pub fn new_unchecked(buffer: T) -> Datagram<T> {
        Datagram { buffer }
    }

    /// Wraps received bytes after [`Datagram::check`] passed: no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Datagram<T>, DecodeError> {
        let datagram = Datagram::new_unchecked(buffer);
        datagram.check()?;
        Ok(datagram)
    }

    /// Checks magic, version, lengths, CRC, then kind and flags, in that order.
    pub fn check(&self) -> Result<(), DecodeError> {
        let bytes = self.buffer.as_ref();
        if bytes.len() < field::VERSION + 1 {
            return Err(if has_magic(bytes) || bytes.len() < 3 {
                DecodeError::Truncated
            } else {
                DecodeError::BadMagic
            });
        }
        if bytes[field::MAGIC] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[field::VERSION] != VERSION {
            return Err(DecodeError::UnknownVersion);
        }
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        let expected = HEADER_LEN + usize::from(self.payload_len());
        if bytes.len() < expected {
            return Err(DecodeError::Truncated);
        }
        if bytes.len() > expected {
            return Err(DecodeError::TrailingBytes);
        }
        if !cfg!(fuzzing) && self.checksum() != compute_checksum(bytes) {
            return Err(DecodeError::BadChecksum);
        }
        let kind = Kind::from_u8(self.kind_byte()).ok_or(DecodeError::UnknownKind)?;
        let flags = self.flags();
        if flags & !KNOWN_FLAGS != 0
            || (flags & FLAG_FRAGMENT != 0 && kind != Kind::Data)
            || (flags & FLAG_RECOVERY != 0 && kind == Kind::Nack)
        {
            return Err(DecodeError::BadFlags);
        }
        Ok(())
    }

    /// The version byte.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// The raw kind byte.
    pub fn kind_byte(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    /// The kind. Only valid after `check`.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind_byte())
    }
    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// The payload length field.
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::PAYLOAD_LEN])
    }
    /// The session id.
    pub fn session(&self) -> u64 {
        read_u64(&self.buffer.as_ref()[field::SESSION])
    }
    /// The sequence number field (its meaning depends on the kind).
    pub fn seq(&self) -> u64 {
        read_u64(&self.buffer.as_ref()[field::SEQ])
    }
    /// The sender's clock when it sent this, in microseconds since the Unix epoch.
    pub fn sent_at_us(&self) -> u64 {
        read_u64(&self.buffer.as_ref()[field::SENT_AT])
    }
    /// The datagram counter: 0 for HELLO, one more for every distinct datagram.
    pub fn counter(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::COUNTER])
    }
    /// The CRC32 field.
    pub fn checksum(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::CRC])
    }
    /// The header bytes before the CRC (the associated data when sealed).
    pub fn header_before_crc(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::CRC.start]
    }
    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(bytes.len());
        &bytes[HEADER_LEN.min(end)..end]
    }
}

/// Setters: the one place besides the getters that knows where a field is (the
/// sealing code writes the flags and length through these).
impl<T: AsRef<[u8]> + AsMut<[u8]>> Datagram<T> {
    /// Sets the flags byte.
    ///
    /// # Panics
    /// When the buffer is shorter than [`HEADER_LEN`] (the view was not checked).
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }
    /// Sets the payload length field (the payload itself is not touched).
    ///
    /// # Panics
    /// As [`Datagram::set_flags`].
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }
}

/// CRC32 (IEEE, as `crc32fast`) over every byte of the datagram except the CRC field.
pub fn compute_checksum(datagram: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&datagram[..field::CRC.start]);
    hasher.update(&datagram[field::CRC.end..]);
    hasher.finalize()
}

/// The header fields common to every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Random 64-bit id, fixed for one run of a sender.
    pub session: u64,
    /// The sequence number field (see [`Payload`] for what it means per kind).
    pub seq: u64,
    /// The sender's clock, microseconds since the Unix epoch.
    pub sent_at_us: u64,
    /// Datagram counter within the session.
    pub counter: u32,
}

/// How a sender's input ended, carried by END.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// End of standard input.
    Eof,
    /// The sender was stopped by this signal (SIGINT, SIGTERM, ...).
    Signal(i32),
    /// The wrapped command exited with this status.
    Exit(i32),
    /// The wrapped command was killed by this signal.
    CommandSignal(i32),
}

impl EndReason {
    fn code(self) -> (u8, i32) {
        match self {
            EndReason::Eof => (0, 0),
            EndReason::Signal(n) => (1, n),
            EndReason::Exit(n) => (2, n),
            EndReason::CommandSignal(n) => (3, n),
        }
    }
    fn from_code(code: u8, value: i32) -> Option<EndReason> {
        match code {
            0 if value == 0 => Some(EndReason::Eof),
            1 => Some(EndReason::Signal(value)),
            2 => Some(EndReason::Exit(value)),
            3 => Some(EndReason::CommandSignal(value)),
            _ => None,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Eof => f.write_str("end of input"),
            EndReason::Signal(n) => write!(f, "stopped by signal {n}"),
            EndReason::Exit(n) => write!(f, "command exited with status {n}"),
            EndReason::CommandSignal(n) => write!(f, "command killed by signal {n}"),
        }
    }
}

fn read_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
