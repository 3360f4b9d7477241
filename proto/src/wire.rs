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
const KNOWN_LINE_FLAGS: u8 = LINE_PARTIAL | LINE_CONTINUATION;
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

/// One line inside a DATA datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef<'a> {
    /// `LINE_*` flags.
    pub flags: u8,
    /// The line's bytes, without its newline.
    pub text: &'a [u8],
}

impl LineRef<'_> {
    /// The line had no newline.
    pub fn is_partial(&self) -> bool {
        self.flags & LINE_PARTIAL != 0
    }
    /// The line continues the previous one (cut at `--max-line`).
    pub fn is_continuation(&self) -> bool {
        self.flags & LINE_CONTINUATION != 0
    }
}

/// Iterator over the line records of a checked DATA payload.
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = LineRef<'a>;
    fn next(&mut self) -> Option<LineRef<'a>> {
        if self.rest.len() < LINE_RECORD_HEADER_LEN {
            return None;
        }
        let flags = self.rest[0];
        if flags == LINE_PADDING {
            return None;
        }
        let len = usize::from(read_u16(&self.rest[1..3]));
        let end = (LINE_RECORD_HEADER_LEN + len).min(self.rest.len());
        let text = &self.rest[LINE_RECORD_HEADER_LEN..end];
        self.rest = &self.rest[end..];
        Some(LineRef { flags, text })
    }
}

/// The parsed payload of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Session start. `seq` in the header is the first line's sequence number.
    Hello {
        /// The sender's name (`--name`, default the host name).
        name: &'a str,
        /// The sender's process id.
        pid: u32,
        /// When the sender started, microseconds since the Unix epoch.
        started_at_us: u64,
        /// What it reads: `"stdin"` or the command line.
        source: &'a str,
    },
    /// Whole lines: `seq` in the header is the first line's number; `count` lines.
    Lines {
        /// How many line records (at least one).
        count: u16,
        /// The records, in order.
        lines: Lines<'a>,
    },
    /// One fragment of one long line; `seq` in the header is that line's number.
    Fragment {
        /// Byte offset of this fragment in the line.
        offset: u32,
        /// The line's total length in bytes (without newline).
        total: u32,
        /// `LINE_*` flags of the whole line.
        line_flags: u8,
        /// This fragment's bytes.
        bytes: &'a [u8],
    },
    /// Idle but alive; `seq` in the header is the number of the last line sent (0: none).
    Heartbeat {
        /// The sender's name.
        name: &'a str,
    },
    /// Receiver to sender: resend these lines. `session` in the header is the
    /// sender's session; `seq` is 0; `counter` is random (see PROTOCOL.md).
    Nack {
        /// `(first line, how many lines)` ranges, 1 to [`MAX_NACK_RANGES`].
        ranges: NackRanges<'a>,
    },
    /// Sender to receiver: lines `seq` (in the header) to `last` are no longer kept.
    Gone {
        /// The last line of the range.
        last: u64,
    },
    /// Clean end; `seq` in the header is the number of the last line sent.
    End {
        /// The sender's name.
        name: &'a str,
        /// How the input ended.
        reason: EndReason,
    },
}

/// Iterator over the `(first, count)` ranges of a checked NACK payload.
#[derive(Debug, Clone)]
pub struct NackRanges<'a> {
    rest: &'a [u8],
}

impl NackRanges<'_> {
    /// The ranges as raw payload bytes (for emitting).
    fn bytes(&self) -> &[u8] {
        self.rest
    }
}

impl Iterator for NackRanges<'_> {
    type Item = (u64, u32);
    fn next(&mut self) -> Option<(u64, u32)> {
        if self.rest.len() < NACK_RANGE_LEN {
            return None;
        }
        let item = (read_u64(&self.rest[..8]), read_u32(&self.rest[8..12]));
        self.rest = &self.rest[NACK_RANGE_LEN..];
        Some(item)
    }
}

impl PartialEq for NackRanges<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.rest == other.rest
    }
}
impl Eq for NackRanges<'_> {}

/// Appends a NACK payload for `ranges` (at most [`MAX_NACK_RANGES`] are taken) and
/// returns how many ranges it holds.
pub fn push_nack_ranges(out: &mut Vec<u8>, ranges: &[(u64, u32)]) -> usize {
    let ranges = &ranges[..ranges.len().min(MAX_NACK_RANGES)];
    out.push(ranges.len() as u8);
    for (first, count) in ranges {
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
    }
    ranges.len()
}

impl PartialEq for Lines<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.rest == other.rest
    }
}
impl Eq for Lines<'_> {}

/// A parsed datagram: header plus payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr<'a> {
    /// Header fields.
    pub header: Header,
    /// The kind-specific part.
    pub payload: Payload<'a>,
}

impl<'a> Repr<'a> {
    /// Parses received bytes: checks the header and CRC, then the payload. Fails with
    /// [`DecodeError::Sealed`] when the payload is sealed (open it first).
    pub fn parse(bytes: &'a [u8]) -> Result<Repr<'a>, DecodeError> {
        let datagram = Datagram::new_checked(bytes)?;
        if datagram.flags() & FLAG_SEALED != 0 {
            return Err(DecodeError::Sealed);
        }
        let header = Header {
            session: datagram.session(),
            seq: datagram.seq(),
            sent_at_us: datagram.sent_at_us(),
            counter: datagram.counter(),
        };
        let kind = datagram.kind().ok_or(DecodeError::UnknownKind)?;
        let fragment = datagram.flags() & FLAG_FRAGMENT != 0;
        let payload = parse_payload(kind, fragment, &bytes[HEADER_LEN..])?;
        Ok(Repr { header, payload })
    }

    /// The kind of this datagram.
    pub fn kind(&self) -> Kind {
        match self.payload {
            Payload::Hello { .. } => Kind::Hello,
            Payload::Lines { .. } | Payload::Fragment { .. } => Kind::Data,
            Payload::Heartbeat { .. } => Kind::Heartbeat,
            Payload::End { .. } => Kind::End,
            Payload::Nack { .. } => Kind::Nack,
            Payload::Gone { .. } => Kind::Gone,
        }
    }

    /// The length of the payload [`Repr::emit`] writes.
    pub fn payload_len(&self) -> usize {
        match &self.payload {
            Payload::Hello { name, source, .. } => 4 + 8 + 1 + name.len() + 2 + source.len(),
            Payload::Lines { lines, .. } => lines.rest.len(),
            Payload::Fragment { bytes, .. } => FRAGMENT_HEADER_LEN + bytes.len(),
            Payload::Heartbeat { name } => 1 + name.len(),
            Payload::End { name, .. } => 1 + name.len() + 1 + 4,
            Payload::Nack { ranges } => 1 + ranges.bytes().len(),
            Payload::Gone { .. } => 8,
        }
    }

    /// Appends this datagram's bytes to `out` (CRC included).
    ///
    /// # Panics
    /// When the payload is longer than 65535 bytes or a name is longer than
    /// [`MAX_NAME_LEN`]: callers build payloads within those limits.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let payload_len =
            u16::try_from(self.payload_len()).expect("caller keeps payloads within a datagram");
        let flags = match self.payload {
            Payload::Fragment { .. } => FLAG_FRAGMENT,
            _ => 0,
        };
        write_header(out, self.kind(), flags, payload_len, &self.header);
        match &self.payload {
            Payload::Hello {
                name,
                pid,
                started_at_us,
                source,
            } => {
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(&started_at_us.to_be_bytes());
                push_name(out, name);
                let source_len = u16::try_from(source.len()).expect("source fits the payload");
                out.extend_from_slice(&source_len.to_be_bytes());
                out.extend_from_slice(source.as_bytes());
            }
            Payload::Lines { lines, .. } => out.extend_from_slice(lines.rest),
            Payload::Fragment {
                offset,
                total,
                line_flags,
                bytes,
            } => {
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.push(*line_flags);
                out.extend_from_slice(bytes);
            }
            Payload::Heartbeat { name } => push_name(out, name),
            Payload::End { name, reason } => {
                push_name(out, name);
                let (code, value) = reason.code();
                out.push(code);
                out.extend_from_slice(&value.to_be_bytes());
            }
            Payload::Nack { ranges } => {
                out.push((ranges.bytes().len() / NACK_RANGE_LEN) as u8);
                out.extend_from_slice(ranges.bytes());
            }
            Payload::Gone { last } => out.extend_from_slice(&last.to_be_bytes()),
        }
        seal_checksum(&mut out[start..]);
    }
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    let len = u8::try_from(name.len()).expect("names are at most MAX_NAME_LEN bytes");
    out.push(len);
    out.extend_from_slice(name.as_bytes());
}

/// Writes a header with a zero CRC; [`seal_checksum`] fills it in once the payload
/// follows.
pub fn write_header(out: &mut Vec<u8>, kind: Kind, flags: u8, payload_len: u16, header: &Header) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.push(flags);
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(&header.session.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&header.sent_at_us.to_be_bytes());
    out.extend_from_slice(&header.counter.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Fills in the CRC field of a complete datagram (header and payload).
///
/// # Panics
/// When `datagram` is shorter than [`HEADER_LEN`].
pub fn seal_checksum(datagram: &mut [u8]) {
    let crc = compute_checksum(datagram);
    datagram[field::CRC].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites the payload length field of a complete datagram after its payload was
/// appended, then its CRC. For builders that append lines one by one.
///
/// # Panics
/// When `datagram` is shorter than [`HEADER_LEN`] or longer than 65535 + header.
pub fn finish_datagram(datagram: &mut [u8]) {
    set_payload_len(datagram);
    seal_checksum(datagram);
}

/// Rewrites the payload length field of a complete datagram, leaving its CRC as it
/// is: for datagrams sealed next (sealing writes the CRC).
///
/// # Panics
/// As [`finish_datagram`].
pub fn set_payload_len(datagram: &mut [u8]) {
    let len = u16::try_from(datagram.len() - HEADER_LEN).expect("payload within a datagram");
    Datagram::new_unchecked(datagram).set_payload_len(len);
}

/// Appends one line record (flags, length, bytes) to a DATA payload being built.
///
/// # Panics
/// When `text` is longer than 65535 bytes.
pub fn push_line_record(out: &mut Vec<u8>, flags: u8, text: &[u8]) {
    let len = u16::try_from(text.len()).expect("a whole line record fits in u16");
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text);
}

fn parse_payload(kind: Kind, fragment: bool, p: &[u8]) -> Result<Payload<'_>, DecodeError> {
    let mut r = Reader { rest: p };
    let payload = match kind {
        Kind::Hello => {
            let pid = r.u32()?;
            let started_at_us = r.u64()?;
            let name_len = usize::from(r.u8()?);
            let name = r.text(name_len)?;
            let source_len = usize::from(r.u16()?);
            let source = r.text(source_len)?;
            Payload::Hello {
                name,
                pid,
                started_at_us,
                source,
            }
        }
        Kind::Data if fragment => {
            let offset = r.u32()?;
            let total = r.u32()?;
            let line_flags = r.u8()?;
            if line_flags & !KNOWN_LINE_FLAGS != 0 {
                return Err(DecodeError::BadFlags);
            }
            let bytes = r.take(r.rest.len())?;
            let end = u64::from(offset) + bytes.len() as u64;
            if bytes.is_empty() || end > u64::from(total) {
                return Err(DecodeError::FragmentOutOfRange);
            }
            Payload::Fragment {
                offset,
                total,
                line_flags,
                bytes,
            }
        }
        Kind::Data => {
            let mut count: u16 = 0;
            let mut rest = p;
            while !rest.is_empty() {
                if rest.len() < LINE_RECORD_HEADER_LEN {
                    return Err(DecodeError::BadLength);
                }
                let padding = rest[0] == LINE_PADDING;
                if rest[0] & !KNOWN_LINE_FLAGS != 0 && !padding {
                    return Err(DecodeError::BadFlags);
                }
                let len = usize::from(read_u16(&rest[1..3]));
                if rest.len() < LINE_RECORD_HEADER_LEN + len {
                    return Err(DecodeError::BadLength);
                }
                let bytes = &rest[LINE_RECORD_HEADER_LEN..LINE_RECORD_HEADER_LEN + len];
                rest = &rest[LINE_RECORD_HEADER_LEN + len..];
                if padding {
                    // Last record, zero bytes: one canonical form.
                    if !rest.is_empty() || bytes.iter().any(|&b| b != 0) {
                        return Err(DecodeError::BadLength);
                    }
                    break;
                }
                count = count.checked_add(1).ok_or(DecodeError::BadLength)?;
            }
            if count == 0 {
                return Err(DecodeError::EmptyData);
            }
            return Ok(Payload::Lines {
                count,
                lines: Lines { rest: p },
            });
        }
        Kind::Heartbeat => {
            let name_len = usize::from(r.u8()?);
            Payload::Heartbeat {
                name: r.text(name_len)?,
            }
        }
        Kind::End => {
            let name_len = usize::from(r.u8()?);
            let name = r.text(name_len)?;
            let code = r.u8()?;
            let value = r.u32()? as i32;
            let reason = EndReason::from_code(code, value).ok_or(DecodeError::BadEndReason)?;
            Payload::End { name, reason }
        }
        Kind::Nack => {
            let n = usize::from(r.u8()?);
            if n == 0 || n > MAX_NACK_RANGES {
                return Err(DecodeError::BadLength);
            }
            let bytes = r.take(n * NACK_RANGE_LEN)?;
            for (first, count) in (NackRanges { rest: bytes }) {
                if first == 0 || count == 0 || first.checked_add(u64::from(count)).is_none() {
                    return Err(DecodeError::BadLength);
                }
            }
            Payload::Nack {
                ranges: NackRanges { rest: bytes },
            }
        }
        Kind::Gone => Payload::Gone { last: r.u64()? },
    };
    if !r.rest.is_empty() {
        return Err(DecodeError::BadLength);
    }
    Ok(payload)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::BadLength);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(read_u16(self.take(2)?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(read_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(read_u64(self.take(8)?))
    }
    fn text(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::BadText)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn header() -> Header {
        Header {
            session: 0x0123_4567_89ab_cdef,
            seq: 1,
            sent_at_us: 1_700_000_000_000_000,
            counter: 1,
        }
    }

    // The vectors below are the ones printed in PROTOCOL.md.
    const DATA_TWO_LINES: &str = concat!(
        "4e435501",
        "0200",
        "000b",
        "0123456789abcdef",
        "0000000000000001",
        "00060a24181e4000",
        "00000001",
        "8a34caff",
        "00000268690100036f6b21"
    );

    #[test]
    fn data_vector_two_lines() {
        let mut payload = Vec::new();
        push_line_record(&mut payload, 0, b"hi");
        push_line_record(&mut payload, LINE_PARTIAL, b"ok!");
        let repr = Repr {
            header: header(),
            payload: Payload::Lines {
                count: 2,
                lines: Lines { rest: &payload },
            },
        };
        let mut out = Vec::new();
        repr.emit(&mut out);
        assert_eq!(hex(&out), DATA_TWO_LINES);
        let parsed = Repr::parse(&out).unwrap();
        assert_eq!(parsed, repr);
        let Payload::Lines { count, lines } = parsed.payload else {
            panic!("not lines")
        };
        assert_eq!(count, 2);
        let lines: Vec<_> = lines.collect();
        assert_eq!(lines[0].text, b"hi");
        assert!(!lines[0].is_partial());
        assert_eq!(lines[1].text, b"ok!");
        assert!(lines[1].is_partial());
    }

    const HELLO: &str = concat!(
        "4e435501",
        "0100",
        "0017",
        "0123456789abcdef",
        "0000000000000001",
        "00060a24181e4000",
        "00000000",
        "f230aa2b",
        "0000053900060a24181e4000037765620005737464696e"
    );
    const FRAGMENT: &str = concat!(
        "4e435501",
        "0202",
        "000c",
        "0123456789abcdef",
        "0000000000000007",
        "00060a24181e4000",
        "00000009",
        "0edca12c",
        "000000040000000a00616263"
    );
    const HEARTBEAT: &str = concat!(
        "4e435501",
        "0300",
        "0004",
        "0123456789abcdef",
        "000000000000002a",
        "00060a24181e4000",
        "0000000b",
        "8c1c663e",
        "03776562"
    );
    const END: &str = concat!(
        "4e435501",
        "0400",
        "0009",
        "0123456789abcdef",
        "000000000000002a",
        "00060a24181e4000",
        "0000000c",
        "d1cdce4e",
        "037765620200000003"
    );

    fn roundtrip(repr: &Repr<'_>, expected_hex: &str) {
        let mut out = Vec::new();
        repr.emit(&mut out);
        assert_eq!(hex(&out), expected_hex, "emit of {repr:?}");
        assert_eq!(&Repr::parse(&out).unwrap(), repr);
    }

    #[test]
    fn vectors_of_every_kind() {
        let h = header();
        roundtrip(
            &Repr {
                header: Header { counter: 0, ..h },
                payload: Payload::Hello {
                    name: "web",
                    pid: 1337,
                    started_at_us: 1_700_000_000_000_000,
                    source: "stdin",
                },
            },
            HELLO,
        );
        roundtrip(
            &Repr {
                header: Header {
                    seq: 7,
                    counter: 9,
                    ..h
                },
                payload: Payload::Fragment {
                    offset: 4,
                    total: 10,
                    line_flags: 0,
                    bytes: b"abc",
                },
            },
            FRAGMENT,
        );
        roundtrip(
            &Repr {
                header: Header {
                    seq: 42,
                    counter: 11,
                    ..h
                },
                payload: Payload::Heartbeat { name: "web" },
            },
            HEARTBEAT,
        );
        roundtrip(
            &Repr {
                header: Header {
                    seq: 42,
                    counter: 12,
                    ..h
                },
                payload: Payload::End {
                    name: "web",
                    reason: EndReason::Exit(3),
                },
            },
            END,
        );
    }

    fn vector_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn each_malformation_has_its_error() {
        let good = vector_bytes(DATA_TWO_LINES);
        assert!(Repr::parse(&good).is_ok());
        assert_eq!(Repr::parse(&[]).unwrap_err(), DecodeError::Truncated);
        assert_eq!(
            Repr::parse(&good[..20]).unwrap_err(),
            DecodeError::Truncated
        );
        assert_eq!(
            Repr::parse(&good[..good.len() - 1]).unwrap_err(),
            DecodeError::Truncated
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Repr::parse(&long).unwrap_err(), DecodeError::TrailingBytes);
        assert_eq!(
            Repr::parse(b"hello world, not ncu at all").unwrap_err(),
            DecodeError::BadMagic
        );
        let mut v = good.clone();
        v[3] = 2;
        assert_eq!(Repr::parse(&v).unwrap_err(), DecodeError::UnknownVersion);
        let mut v = good.clone();
        v[HEADER_LEN + 4] ^= 0x01;
        assert_eq!(Repr::parse(&v).unwrap_err(), DecodeError::BadChecksum);

        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            finish_datagram(&mut v);
            Repr::parse(&v).unwrap_err()
        };
        assert_eq!(with(&|v| v[4] = 9), DecodeError::UnknownKind);
        assert_eq!(with(&|v| v[5] = 0x80), DecodeError::BadFlags);
        assert_eq!(with(&|v| v[5] = FLAG_SEALED), DecodeError::Sealed);
        assert_eq!(with(&|v| v[HEADER_LEN + 2] = 200), DecodeError::BadLength);
        assert_eq!(with(&|v| v[HEADER_LEN] = 0x40), DecodeError::BadFlags);
        assert_eq!(with(&|v| v.truncate(HEADER_LEN)), DecodeError::EmptyData);
        let frag = vector_bytes(FRAGMENT);
        let mut v = frag.clone();
        v[HEADER_LEN + 3] = 8; // offset 8 + 3 bytes > total 10
        finish_datagram(&mut v);
        assert_eq!(
            Repr::parse(&v).unwrap_err(),
            DecodeError::FragmentOutOfRange
        );
        let mut v = vector_bytes(HEARTBEAT);
        v[HEADER_LEN + 1] = 0xff; // name not UTF-8
        finish_datagram(&mut v);
        assert_eq!(Repr::parse(&v).unwrap_err(), DecodeError::BadText);
        let mut v = vector_bytes(END);
        v[HEADER_LEN + 4] = 9;
        finish_datagram(&mut v);
        assert_eq!(Repr::parse(&v).unwrap_err(), DecodeError::BadEndReason);
    }

    #[test]
    fn padding_is_last_zero_and_not_a_line() {
        let build = |records: &[(u8, &[u8])]| {
            let mut v = Vec::new();
            write_header(&mut v, Kind::Data, 0, 0, &header());
            for (flags, text) in records {
                push_line_record(&mut v, *flags, text);
            }
            finish_datagram(&mut v);
            v
        };
        let ok = build(&[(0, b"a"), (LINE_PADDING, &[0, 0, 0])]);
        let Payload::Lines { count, lines } = Repr::parse(&ok).unwrap().payload else {
            panic!()
        };
        assert_eq!((count, lines.count()), (1, 1));
        assert_eq!(
            Repr::parse(&build(&[(LINE_PADDING, &[0])])).unwrap_err(),
            DecodeError::EmptyData
        );
        assert_eq!(
            Repr::parse(&build(&[(LINE_PADDING, &[]), (0, b"a")])).unwrap_err(),
            DecodeError::BadLength
        );
        assert_eq!(
            Repr::parse(&build(&[(0, b"a"), (LINE_PADDING, &[1])])).unwrap_err(),
            DecodeError::BadLength
        );
        assert_eq!(
            Repr::parse(&build(&[(0, b"a"), (LINE_PADDING | 1, &[])])).unwrap_err(),
            DecodeError::BadFlags
        );
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        for vector in [DATA_TWO_LINES, HELLO, FRAGMENT, HEARTBEAT, END] {
            let good = vector_bytes(vector);
            for bit in 0..good.len() * 8 {
                let mut v = good.clone();
                v[bit / 8] ^= 1 << (bit % 8);
                assert!(Repr::parse(&v).is_err(), "bit {bit} of {vector}");
            }
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        for vector in [DATA_TWO_LINES, HELLO, FRAGMENT, HEARTBEAT, END] {
            let good = vector_bytes(vector);
            for len in 0..good.len() {
                assert!(Repr::parse(&good[..len]).is_err());
            }
        }
    }
}
