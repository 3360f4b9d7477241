//! Plain netconsole (and `nc -u`) text joined into lines.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::lines::LineAssembler;
use crate::wire::LINE_PARTIAL;

use super::*;

/// Limits for a [`PlainJoiner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainConfig {
    /// Most bytes held waiting for a newline; past it they come out as a partial line.
    pub max_line_bytes: usize,
    /// Time after the first held byte at which held bytes come out as a partial line.
    pub line_timeout: Duration,
}

impl Default for PlainConfig {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            line_timeout: DEFAULT_LINE_TIMEOUT,
        }
    }
}

/// A line produced by a [`PlainJoiner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainLine {
    /// The line's bytes without its `\n` (a `\r` before it is kept).
    pub text: Vec<u8>,
    /// True when no newline ended it (size bound or timeout); more may follow.
    pub partial: bool,
}

/// Sans-IO per-source joining of plain console datagrams into lines.
///
/// Lines are split on `\n`; bytes after the last newline wait for the next
/// datagram, bounded by [`PlainConfig::max_line_bytes`] and
/// [`PlainConfig::line_timeout`], past which they come out flagged partial. Lines
/// queue until taken with [`PlainJoiner::poll_line`]; drain after every call.
#[derive(Debug)]
pub struct PlainJoiner {
    config: PlainConfig,
    /// The one line splitter ([`LineAssembler`]) holds what waits for a newline.
    lines: LineAssembler,
    deadline: Option<Instant>,
    ready: VecDeque<PlainLine>,
}

impl PlainJoiner {
    /// Creates an empty joiner.
    pub fn new(config: PlainConfig) -> Self {
        Self {
            lines: LineAssembler::new(config.max_line_bytes),
            config,
            deadline: None,
            ready: VecDeque::new(),
        }
    }

    /// Appends one datagram received at `now`.
    pub fn push(&mut self, datagram: &[u8], now: Instant) {
        let ready = &mut self.ready;
        let mut emitted = false;
        self.lines.feed(datagram, |flags, text| {
            emitted = true;
            ready.push_back(PlainLine {
                text: text.to_vec(),
                partial: flags & LINE_PARTIAL != 0,
            });
        });
        if !self.lines.has_pending() {
            self.deadline = None;
        } else if emitted || self.deadline.is_none() {
            // The bytes held now began after the last line that came out.
            self.deadline = now.checked_add(self.config.line_timeout);
        }
    }

    /// Takes the next line, if any.
    pub fn poll_line(&mut self) -> Option<PlainLine> {
        self.ready.pop_front()
    }

    /// Takes every queued line.
    pub fn drain(&mut self) -> impl Iterator<Item = PlainLine> + '_ {
        self.ready.drain(..)
    }

    /// When [`PlainJoiner::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Emits held bytes as a partial line if their timeout passed at `now`.
    ///
    /// Returns whether a line was emitted.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| d <= now) {
            return self.flush();
        }
        false
    }

    /// Emits held bytes as a partial line now; returns whether there were any.
    pub fn flush(&mut self) -> bool {
        self.deadline = None;
        let ready = &mut self.ready;
        let mut emitted = false;
        self.lines.flush_partial(|_, text| {
            emitted = true;
            ready.push_back(PlainLine {
                text: text.to_vec(),
                partial: true,
            });
        });
        emitted
    }

    /// Bytes currently held waiting for a newline.
    pub fn held_bytes(&self) -> usize {
        self.lines.pending_len()
    }
}

impl Default for PlainJoiner {
    fn default() -> Self {
        Self::new(PlainConfig::default())
    }
}
