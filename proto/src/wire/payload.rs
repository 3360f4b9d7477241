//! Payloads: the lines of DATA, NACK ranges, and the [`Payload`] of each kind.

use std::net::SocketAddr;

use super::{
    read_u16, read_u32, read_u64, EndReason, LINE_CONTINUATION, LINE_PADDING, LINE_PARTIAL,
    LINE_RECORD_HEADER_LEN, NACK_RANGE_LEN,
};

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
    pub(super) rest: &'a [u8],
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
        /// `(first line, how many lines)` ranges, 1 to [`MAX_NACK_RANGES`](super::MAX_NACK_RANGES).
        ranges: NackRanges<'a>,
    },
    /// Sender to receiver: lines `seq` (in the header) to `last` are no longer kept.
    Gone {
        /// The last line of the range.
        last: u64,
    },
    /// The address the kernel's netconsole of this sender sends from; `seq` in the
    /// header is the number of the last line sent.
    Companion {
        /// That address (IPv4 or IPv6) and port.
        source: SocketAddr,
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
    pub(super) rest: &'a [u8],
}

impl NackRanges<'_> {
    /// The ranges as raw payload bytes (for emitting).
    pub(super) fn bytes(&self) -> &[u8] {
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

impl PartialEq for Lines<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.rest == other.rest
    }
}
impl Eq for Lines<'_> {}
