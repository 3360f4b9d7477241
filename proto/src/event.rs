//! What the reassembler tells its caller: the events of CONTRACT.md, as Rust values.

use core::fmt;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::wire::EndReason;

/// What kind of source a session comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// An `ncu-send` session (sequence numbers, heartbeats, END).
    Ncu,
    /// The kernel's netconsole in extended format (`+` in its config).
    KernelExtended,
    /// Plain text: the kernel's plain netconsole, `nc -u`, `logger`.
    Text,
}

impl SourceKind {
    /// Stable lowercase name (`"ncu"`, `"kernel"`, `"text"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Ncu => "ncu",
            SourceKind::KernelExtended => "kernel",
            SourceKind::Text => "text",
        }
    }
}

/// Who a session is: carried by every event of the session (cloned without
/// allocating), and kept in the session itself (a fleet's kernels give no name:
/// their sessions keep none beside the address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id: the sender's random id for ncu, a receiver-made id otherwise.
    pub id: u64,
    /// The name the sender gave (HELLO/HEARTBEAT/END); `None` until it gave one,
    /// and for netconsole and text sources, which give none. See
    /// [`SessionInfo::name`].
    pub given_name: Option<Arc<str>>,
    /// Where its datagrams come from (the first datagram's address).
    pub addr: SocketAddr,
    /// What kind of source.
    pub kind: SourceKind,
}

impl SessionInfo {
    /// The session id as CONTRACT.md prints it: 16 lowercase hex digits.
    pub fn id_hex(&self) -> String {
        format!("{:016x}", self.id)
    }

    /// The sender's name as reports show it: the name it gave, else its source IP.
    pub fn name(&self) -> Cow<'_, str> {
        match &self.given_name {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(self.addr.ip().to_string()),
        }
    }
}

/// Why a session went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilentReason {
    /// Nothing arrived for `dead_after`.
    DeadAfter,
    /// A new session of the same sender began before this one ended.
    Restarted,
}

impl SilentReason {
    /// Stable name for JSON: `"dead_after"` or `"restarted"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SilentReason::DeadAfter => "dead_after",
            SilentReason::Restarted => "restarted",
        }
    }
}

/// What a gap means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// Lines that were sent and never received.
    Lost,
    /// Holes in the kernel's own record numbers: records below the console log level
    /// are numbered but never sent, so these are not necessarily losses.
    KernelSeq,
    /// Kernel records (by the kernel's own numbers) that the kernel's ring
    /// overwrote before `ncu-send --kmsg` read them: lost on the machine, not on
    /// the network.
    Overwritten,
}

impl GapKind {
    /// Stable name for JSON: `"lost"`, `"kernel_seq"` or `"overwritten"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GapKind::Lost => "lost",
            GapKind::KernelSeq => "kernel_seq",
            GapKind::Overwritten => "overwritten",
        }
    }
}

/// Kernel metadata of a netconsole line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelMeta {
    /// Syslog level 0-7.
    pub level: u8,
    /// Syslog facility.
    pub facility: u8,
    /// The kernel's record sequence number.
    pub seq: u64,
    /// Microseconds since the kernel booted.
    pub ts_usec: u64,
    /// The record continues the previous one (`c` flag).
    pub cont: bool,
    /// The kernel's count of transmitted messages (`msgid=`), when sent.
    pub msgid: Option<u64>,
    /// `KEY=VALUE` lines sent with the record (dictionary, userdata, sysdata).
    pub fields: Vec<(String, String)>,
    /// The record came through the kernel's netconsole, joined to an ncu session
    /// (`ncu-send --netconsole`): ncu-send never sent it.
    pub via_netconsole: bool,
}

/// What the kernel's netconsole delivered for a `--kmsg --netconsole` session after
/// the last record ncu-send sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetconsoleTail {
    /// The kernel number of the last record ncu-send sent, and when it sent it.
    pub last_kmsg: Option<(u64, Option<u64>)>,
    /// The first and last record only the netconsole delivered.
    pub first: u64,
    /// See `first`.
    pub last: u64,
    /// The last one's text (at most [`LAST_TEXT_MAX`] bytes).
    pub last_text: Vec<u8>,
    /// The text of the first of them that is the kernel's panic message
    /// (`Kernel panic - not syncing: ...`, at most [`LAST_TEXT_MAX`] bytes), if one is:
    /// after it come only the panic's own last words (`Rebooting in 1 seconds..`).
    pub panic: Option<Vec<u8>>,
    /// Kernel numbers missing on both paths up to `last`.
    pub missing: u64,
}

/// Why a datagram was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorruptReason {
    /// An ncu datagram that does not decode.
    Decode(crate::wire::DecodeError),
    /// Empty datagram.
    Empty,
    /// Not ncu, not netconsole, not text: binary bytes.
    Binary,
    /// Not ncu, not netconsole, not valid UTF-8.
    NotUtf8,
    /// The receiver could not take it (truncated by the socket: larger than its buffer).
    TooLarge,
    /// A sealed datagram, and this receiver has no key.
    SealedNoKey,
    /// A sealed datagram that does not authenticate, or a replay.
    Auth,
    /// A netconsole record the assembler refused (bad fragment, over the size limit).
    Netconsole,
    /// A well-formed ncu datagram of a kind receivers do not take (a NACK).
    UnexpectedKind,
    /// A line longer than the receiver's limit for one line.
    LineTooLong,
}

impl CorruptReason {
    /// Stable name for JSON and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            CorruptReason::Decode(e) => e.as_str(),
            CorruptReason::Empty => "empty",
            CorruptReason::Binary => "binary",
            CorruptReason::NotUtf8 => "not_utf8",
            CorruptReason::TooLarge => "too_large",
            CorruptReason::SealedNoKey => "sealed_no_key",
            CorruptReason::Auth => "auth",
            CorruptReason::Netconsole => "netconsole",
            CorruptReason::UnexpectedKind => "unexpected_kind",
            CorruptReason::LineTooLong => "line_too_long",
        }
    }
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// First datagram of a new session. `joined` when the receiver saw neither the
    /// HELLO nor line 1: it joined the session mid-way at `first_seq`.
    Start {
        /// The session.
        session: SessionInfo,
        /// The first sequence number this receiver accounts for.
        first_seq: u64,
        /// The receiver joined mid-way.
        joined: bool,
    },
    /// A line, in order (or `late`).
    Line {
        /// The session.
        session: SessionInfo,
        /// Its sequence number.
        seq: u64,
        /// The bytes, without newline.
        text: Vec<u8>,
        /// It had no newline.
        partial: bool,
        /// It continues the previous line (cut at the sender's `--max-line`).
        continuation: bool,
        /// It arrived after its gap was reported.
        late: bool,
        /// The sender's clock when sent (µs since the epoch), when known.
        sent_at_us: Option<u64>,
        /// This receiver's clock when its datagram arrived (µs since the epoch).
        received_at_us: u64,
        /// Kernel metadata for netconsole lines.
        kernel: Option<Box<KernelMeta>>,
    },
    /// Lines given up on: `first..=last`.
    Gap {
        /// The session.
        session: SessionInfo,
        /// First missing sequence number.
        first: u64,
        /// Last missing sequence number.
        last: u64,
        /// What the gap means.
        kind: GapKind,
    },
    /// The session went quiet, or was replaced by a new one.
    Silent {
        /// The session.
        session: SessionInfo,
        /// The highest sequence number of a line received (0: none).
        last_seq: u64,
        /// That line's bytes (at most [`LAST_TEXT_MAX`]).
        last_text: Option<Vec<u8>>,
        /// The sender's clock when that line was sent.
        last_sent_at_us: Option<u64>,
        /// When the last datagram of any kind arrived.
        last_received_at_us: u64,
        /// Why.
        reason: SilentReason,
        /// `--kmsg --netconsole` senders: what the kernel's netconsole delivered
        /// after the last record ncu-send sent (typically the panic).
        netconsole: Option<Box<NetconsoleTail>>,
    },
    /// A silent session sends again.
    Resumed {
        /// The session.
        session: SessionInfo,
        /// The sequence number of what arrived.
        seq: u64,
    },
    /// The sender finished cleanly (reported once every line up to its END is
    /// delivered or reported lost).
    End {
        /// The session.
        session: SessionInfo,
        /// The last line's sequence number, as END says.
        last_seq: u64,
        /// Lines sent, as END says.
        lines: u64,
        /// Lines never received.
        lost: u64,
        /// How the sender's input ended.
        reason: EndReason,
    },
    /// A datagram was rejected. `suppressed` counts rejections not reported as events
    /// since the previous `Corrupt` event (rate limit); all are counted in
    /// [`Stats`](crate::reassembler::Stats).
    Corrupt {
        /// Where it came from.
        addr: SocketAddr,
        /// Why it was rejected.
        reason: CorruptReason,
        /// Rejections since the previous event that were not reported one by one.
        suppressed: u64,
    },
    /// A session was dropped from memory to make room (the oldest idle one).
    Retired {
        /// The session.
        session: SessionInfo,
    },
}

/// Most overwritten ranges a session summary names.
pub const MAX_OVERWRITTEN_RANGES: usize = 64;

/// The longest `last_text` a `Silent` event quotes (the line's first bytes). Every
/// session keeps its last line this long, so this bounds that memory: at most
/// 8 KiB times the sessions in memory and the summaries kept.
pub const LAST_TEXT_MAX: usize = 8 * 1024;

/// How a session ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Still sending.
    Running,
    /// Ended cleanly with END.
    Ended,
    /// Went silent (and has not resumed).
    Silent,
    /// Replaced by a new session of the same sender.
    Restarted,
}

impl Fate {
    /// Stable name for JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Running => "running",
            Fate::Ended => "ended",
            Fate::Silent => "silent",
            Fate::Restarted => "restarted",
        }
    }
}

/// Per-session figures, for the exit summary and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// The session.
    pub session: SessionInfo,
    /// First sequence number accounted for.
    pub first_seq: u64,
    /// The receiver joined mid-way.
    pub joined: bool,
    /// Lines delivered (in order or late).
    pub lines: u64,
    /// Lines reported lost and never delivered late.
    pub lost: u64,
    /// Kernel sequence numbers skipped (not necessarily lost).
    pub kernel_seq_skipped: u64,
    /// `--kmsg` sessions: kernel records overwritten in the kernel's ring before
    /// ncu-send read them (lost on the machine).
    pub kernel_overwritten: u64,
    /// Their ranges (kernel sequence numbers), oldest first, at most
    /// [`MAX_OVERWRITTEN_RANGES`] (later ones widen the last).
    pub kernel_overwritten_ranges: Vec<(u64, u64)>,
    /// `--kmsg` sessions: kernel records left out on purpose by `--kmsg-level`.
    pub kernel_filtered: u64,
    /// Duplicate datagrams or lines absorbed.
    pub duplicates: u64,
    /// Lines that arrived after a later line.
    pub reordered: u64,
    /// Lines delivered after their gap was reported.
    pub late: u64,
    /// Lines that arrived after a NACK asked for them (recovery).
    pub recovered: u64,
    /// The sender offers recovery (resends on NACK).
    pub recovery: bool,
    /// How it ended up.
    pub fate: Fate,
    /// How the sender said it ended, when it sent END.
    pub end_reason: Option<EndReason>,
    /// Receiver clock at the first datagram, µs since the epoch.
    pub first_received_at_us: u64,
    /// Receiver clock at the last datagram, µs since the epoch.
    pub last_received_at_us: u64,
    /// The last line received (highest seq): seq, bytes (capped), sender clock.
    pub last_line: Option<(u64, Vec<u8>, Option<u64>)>,
    /// `--kmsg --netconsole`: what only the kernel's netconsole delivered.
    pub netconsole: Option<NetconsoleTail>,
}
