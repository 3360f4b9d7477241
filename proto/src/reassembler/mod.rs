//! The receiver's logic, without IO: datagrams in, events out.
//!
//! Call order, for every turn of the receiver's loop:
//! 1. [`Reassembler::handle_datagram`] for each datagram received, with the time it
//!    was received;
//! 2. [`Reassembler::handle_timeout`] once the time from [`Reassembler::poll_timeout`]
//!    has come;
//! 3. [`Reassembler::poll_event`] until it returns `None`, writing each event out.
//!
//! Time is an argument: a monotonic [`Instant`] for deadlines, and the wall clock in
//! microseconds since the Unix epoch for the timestamps the events carry.
//!
//! Memory is bounded whatever arrives: lines waiting for a hole to fill are bounded
//! per session (lines and bytes) and in total; a line being rebuilt from fragments is
//! bounded by [`Config::max_line_bytes`]; the number of sessions is bounded by
//! [`Config::max_sessions`] (the oldest idle one is retired, with an event).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ncu_proto::event::Event;
//! use ncu_proto::framer::{Framer, Outbox};
//! use ncu_proto::reassembler::{Config, Reassembler};
//!
//! let mut framer = Framer::new(7, "web", 1400);
//! let mut outbox = Outbox::default();
//! framer.hello(1, 0, "stdin", 0, &mut outbox);
//! framer.push_line(0, b"hello", 0, &mut outbox);
//! framer.flush(&mut outbox);
//!
//! let now = Instant::now();
//! let mut rx = Reassembler::new(Config::default(), now);
//! let from = "127.0.0.1:5000".parse()?;
//! for datagram in outbox.datagrams() {
//!     rx.handle_datagram(now, 1_000, from, datagram);
//! }
//! assert!(matches!(rx.poll_event(), Some(Event::Start { first_seq: 1, .. })));
//! match rx.poll_event() {
//!     Some(Event::Line { seq: 1, text, .. }) => assert_eq!(text, b"hello"),
//!     other => panic!("expected the line, got {other:?}"),
//! }
//! rx.handle_timeout(now + Duration::from_secs(10), 10_001_000);
//! assert!(matches!(rx.poll_event(), Some(Event::Silent { last_seq: 1, .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The code is split the way the work is: `table` (the session table: which
//! session a datagram is for, the budget across sessions, the session limit,
//! retirement of the least recently heard, the walk over due timers), and, on one
//! session borrowed in place, `session` (its state and its timers), `ncu` (ncu
//! datagrams, sealed or not, and fragments; `--kmsg` records), `foreign`
//! (netconsole, text, rejections), `order` (the ordering logic all kinds share),
//! `held` (the memory budget's side within a session), `timers` (what a due timer
//! does, and NACKs).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::assembler::{ByteAssembler, PIECE_OVERHEAD};
use crate::budget::{self, Budget};
use crate::event::{
    CorruptReason, Event, Fate, GapKind, KernelMeta, NetconsoleTail, SessionInfo, SessionSummary,
    SilentReason, SourceKind, LAST_TEXT_MAX, MAX_OVERWRITTEN_RANGES,
};
use crate::kmsg::{self, Skipped};
use crate::netconsole::{
    self, DictPairs, ExtendedAssembler, ExtendedConfig, ExtendedRecord, GarbageReason,
    KernelRecord, PlainConfig, PlainJoiner,
};
use crate::ranges::RangeSet;
use crate::recovery::TokenBucket;
use crate::seal::{self, Keys, ReplayConfig, ReplayGuard};
use crate::wire::{
    self, DecodeError, EndReason, Payload, Repr, LINE_CONTINUATION, LINE_KMSG, LINE_PARTIAL,
};

/// Limits and timings of a [`Reassembler`].
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a missing line is waited for before it is reported as a gap.
    pub reorder_window: Duration,
    /// A session that sends nothing for this long is reported silent.
    pub dead_after: Duration,
    /// Most lines one session holds while waiting for a hole to fill; also how far
    /// ahead of the next expected line a sequence number may jump before the lines
    /// in between are given up at once.
    pub max_pending_lines: u64,
    /// Most bytes one session holds while waiting (lines and fragments).
    pub max_pending_bytes: usize,
    /// The memory budget (`--max-held`): most bytes held on behalf of all senders
    /// together (lines waiting, fragments, partial text, per-session state); one
    /// source IP may use half of it. See [`crate::budget`].
    pub max_held_bytes: usize,
    /// Most sessions in memory; past it the oldest idle one is retired. Default:
    /// [`sessions_for_budget`] of the default budget.
    pub max_sessions: usize,
    /// The longest line rebuilt from fragments; a longer total is rejected.
    pub max_line_bytes: usize,
    /// Most lines being rebuilt from fragments at once, per session.
    pub max_lines_in_fragments: usize,
    /// Ended and retired sessions whose summaries are kept for the report.
    pub max_finished_summaries: usize,
    /// Most `Corrupt` events per second (the rest are counted, and reported in the
    /// next event's `suppressed`).
    pub corrupt_events_per_sec: u32,
    /// Ask senders that offer recovery (FLAG_RECOVERY) to resend missing lines.
    pub nack: bool,
    /// How long a hole waits before the first NACK (reordering usually fills it).
    pub nack_delay: Duration,
    /// Time between NACKs for a session while it has holes.
    pub nack_interval: Duration,
    /// With recovery, how long a hole is waited for (NACKs retried) before it is
    /// reported as a gap; at least `reorder_window`.
    pub nack_window: Duration,
    /// Most NACK datagrams per second over all sessions (bounds what spoofed
    /// sessions could make this receiver send).
    pub nacks_per_sec: u32,
    /// Seed for the random counters of NACKs (see PROTOCOL.md).
    pub rng_seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            reorder_window: Duration::from_millis(200),
            dead_after: Duration::from_secs(5),
            max_pending_lines: 65_536,
            max_pending_bytes: 16 << 20,
            max_held_bytes: budget::DEFAULT_MAX_HELD,
            max_sessions: sessions_for_budget(budget::DEFAULT_MAX_HELD),
            max_line_bytes: 16 << 20,
            max_lines_in_fragments: 64,
            max_finished_summaries: 10_000,
            corrupt_events_per_sec: 20,
            nack: true,
            nack_delay: Duration::from_millis(20),
            nack_interval: Duration::from_millis(40),
            nack_window: Duration::from_secs(1),
            nacks_per_sec: 2000,
            rng_seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// The receiver's own counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handled.
    pub datagrams: u64,
    /// Bytes handled.
    pub bytes: u64,
    /// Rejected datagrams by reason (stable reason names).
    pub corrupt: BTreeMap<&'static str, u64>,
    /// Sessions seen.
    pub sessions: u64,
    /// Sessions retired to make room.
    pub retired: u64,
    /// NACK datagrams sent.
    pub nacks_sent: u64,
    /// NACKs not sent because of `nacks_per_sec`.
    pub nacks_suppressed: u64,
    /// Times the memory budget (`max_held_bytes`) was full and held work was given
    /// up (or a session retired) to stay within it.
    pub held_limit_reached: u64,
}

impl Stats {
    /// All rejected datagrams.
    pub fn corrupt_total(&self) -> u64 {
        self.corrupt.values().sum()
    }
}

/// Most line buffers [`Reassembler::recycle`] keeps (a batch of 32 packed
/// datagrams carries about 500 lines).
pub const SPARE_TEXTS: usize = 1024;
/// Largest line buffer [`Reassembler::recycle`] keeps: at most
/// `SPARE_TEXTS * SPARE_TEXT_CAPACITY` = 2 MiB are held for reuse.
pub const SPARE_TEXT_CAPACITY: usize = 2048;

/// Most missing ranges one NACK round asks for (in datagrams of
/// [`wire::MAX_NACK_RANGES`]): at heavy loss a fast sender has more holes in flight
/// than one datagram can name, and the newest must not wait for the oldest.
pub const NACK_RANGES_PER_ROUND: usize = 8 * wire::MAX_NACK_RANGES;

/// How much longer than this receiver's uptime a session must have been running at
/// its first datagram for the receiver to say it joined mid-way (whole-second start
/// times, plus scheduling): below that, missing first lines are reported lost.
const JOIN_MARGIN: Duration = Duration::from_secs(2);

/// The longest extended netconsole record rebuilt from fragments (the kernel's own
/// limit for one extended console record is 8 KiB).
const KERNEL_RECORD_MAX: usize = 16 * 1024;
/// Text bytes held per source while waiting for a newline; past it they go out as
/// a partial line.
const TEXT_LINE_MAX: usize = 8 * 1024;

/// What one session's fixed state costs the budget: the struct, and beside it its
/// two index slots and its timer entry (measured by `proto/tests/session_memory.rs`:
/// 216 bytes of heap in all for an idle kernel session beside its last line, 184 of
/// them the struct).
const SESSION_STATE_BYTES: usize = std::mem::size_of::<Session>() + 32;
/// A session's name and quoted last line, as a fleet's hosts have them, for
/// sizing the session limit from the budget ([`sessions_for_budget`]).
const TYPICAL_NAME_AND_LINE: usize = 128;

/// The default session limit for a memory budget of `max_held_bytes`: as many
/// idle sessions as it holds (64 MiB: 195,083 of them, above a fleet of 65,536
/// hosts). The budget still bounds them: sessions holding more make it full first.
pub fn sessions_for_budget(max_held_bytes: usize) -> usize {
    (max_held_bytes / (SESSION_STATE_BYTES + TYPICAL_NAME_AND_LINE)).max(1)
}
/// What one remembered lost range costs (a B-tree entry of two u64s, with slack).
const RANGE_ENTRY_BYTES: usize = 48;

/// How far [`Reassembler::budget_used`] may pass [`Config::max_held_bytes`]: one
/// session's largest state (its fixed part, a quoted last line, a netconsole
/// assembler's two records, its remembered lost ranges) and one fragment piece.
pub const BUDGET_SLACK: usize = SESSION_STATE_BYTES
    + 256
    + LAST_TEXT_MAX
    + 2 * KERNEL_RECORD_MAX
    + MAX_LOST_RANGES * RANGE_ENTRY_BYTES
    + 65_536;

/// A deadline as the timers keep it: nanoseconds since the reassembler started
/// (8 bytes where an `Instant` takes 16; every session has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Tick(u64);

impl Tick {
    /// No deadline.
    const NONE: Tick = Tick(u64::MAX);

    /// `t` as a tick of a reassembler started at `started` (an instant before it
    /// is its start).
    fn of(started: Instant, t: Instant) -> Tick {
        let nanos = t.saturating_duration_since(started).as_nanos();
        Tick(
            u64::try_from(nanos)
                .unwrap_or(u64::MAX - 1)
                .min(u64::MAX - 1),
        )
    }

    /// The instant of this tick.
    fn at(self, started: Instant) -> Instant {
        started + Duration::from_nanos(self.0)
    }
}

/// A deadline in the timers: when, and the slot of the session it is for. 12
/// bytes, where a tuple of the two pads to 16 (every session has one).
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct Due {
    at: Tick,
    slot: Slot,
}

impl Due {
    fn at(self) -> Tick {
        self.at
    }

    fn slot(self) -> Slot {
        self.slot
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        (self.at(), self.slot()).cmp(&(other.at(), other.slot()))
    }
}

/// Most sessions the table is sized for at the start (see [`Reassembler::new`]).
const MAX_TABLE_RESERVED: usize = 1 << 20;

/// Sealed session ids remembered as already reported (then forgotten all at once).
const MAX_SEALED_REPORTED: usize = 4096;

/// What share of the sessions one walk of the table puts in the retirement
/// order (see [`Reassembler::least_recently_heard`]): the oldest eighth, so that a
/// walk over every session is paid for by that many retirements.
const RETIRE_ORDER_SHARE: usize = 8;

/// Most reported-lost ranges a session remembers for recognising late lines.
const MAX_LOST_RANGES: usize = 1024;

/// Rebuilds every sender's lines in order; see the module docs.
///
/// Split the way smoltcp splits its interface: the session table (routing, limits,
/// retirement) apart from `Inner`, everything the sessions share, so that one
/// session can be worked on in place (`&mut Session` from the table, `&mut Inner`
/// beside it) instead of being taken out of the table and put back per datagram.
#[derive(Debug)]
pub struct Reassembler {
    sessions: Sessions,
    /// The sessions heard least recently when the table was last walked for them,
    /// the least recent last: (when heard, slot). An entry is current while the
    /// session in its slot was last heard then; others were heard since (or are
    /// gone) and are skipped. Empty until a session is to be retired.
    retire_order: Vec<(Tick, Slot)>,
    /// Where the kernel's netconsole of an ncu session sends from (its claim) ->
    /// that session's id.
    companions: HashMap<SocketAddr, u64>,
    inner: Inner,
}

/// What every session shares: the configuration, the events and NACKs going out,
/// the counters, the memory budget and the timers.
#[derive(Debug)]
struct Inner {
    config: Config,
    /// (source IP, name) -> the newest ncu session of that sender.
    senders: HashMap<(IpAddr, String), u64>,
    events: VecDeque<Event>,
    stats: Stats,
    finished: VecDeque<SessionSummary>,
    /// Session deadlines, earliest first. An entry is current when the session in
    /// its slot has that `scheduled`; others are stale and skipped.
    timers: BinaryHeap<Reverse<Due>>,
    next_local_id: u64,
    total_held_bytes: usize,
    /// Everything held on behalf of senders, per source and in total.
    budget: Budget<SessionKey>,
    /// `corrupt_events_per_sec`.
    corrupt_bucket: TokenBucket,
    corrupt_suppressed: u64,
    started: Instant,
    /// Sealed sessions already reported to a receiver without a key.
    sealed_reported: HashSet<u64>,
    /// With a key: only sealed datagrams that authenticate are taken.
    sealing: Option<Box<Sealing>>,
    /// Line buffers handed back with [`Reassembler::recycle`], for the next lines.
    spare_texts: Vec<Vec<u8>>,
    transmits: VecDeque<Transmit>,
    /// `nacks_per_sec`.
    nack_bucket: TokenBucket,
    rng: u64,
}

/// One session in memory as [`Reassembler::session_views`] shows it.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// Who.
    pub info: SessionInfo,
    /// Lines delivered.
    pub lines: u64,
    /// Lines reported lost (and not delivered late).
    pub lost: u64,
    /// How it is doing.
    pub fate: Fate,
    /// Receiver clock at its last datagram, µs since the epoch.
    pub last_received_at_us: u64,
}

/// A datagram the receiver wants sent: a NACK to a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to (the address the session's datagrams come from).
    pub to: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
}

/// A receiver's keys, its replay guard and a buffer for opened datagrams.
#[derive(Debug)]
struct Sealing {
    keys: Keys,
    guard: ReplayGuard,
    opened: Vec<u8>,
}

impl Reassembler {
    /// A reassembler with these limits, started at `now` (the receiver's start: a
    /// session already running for longer than the receiver was joined mid-way).
    pub fn new(config: Config, now: Instant) -> Reassembler {
        Reassembler {
            // Sized for the session limit up front: growing it rehashes every
            // session at once, a stall of milliseconds past 50,000 sessions in which
            // a small socket buffer overflows (a fleet of 65,536 hosts at 50,000
            // records/s into 208 KiB lost some 250 records that way). Its slots
            // become resident only as sessions fill them.
            sessions: Sessions::with_capacity(config.max_sessions.min(MAX_TABLE_RESERVED)),
            retire_order: Vec::new(),
            companions: HashMap::new(),
            inner: Inner::new(config, now),
        }
    }
}

impl Inner {
    fn new(config: Config, now: Instant) -> Inner {
        Inner {
            started: now,
            sealed_reported: HashSet::new(),
            sealing: None,
            spare_texts: Vec::new(),
            transmits: VecDeque::new(),
            nack_bucket: TokenBucket::new(
                u64::from(config.nacks_per_sec),
                u64::from(config.nacks_per_sec),
            ),
            rng: config.rng_seed | 1,
            corrupt_bucket: TokenBucket::new(
                u64::from(config.corrupt_events_per_sec),
                u64::from(config.corrupt_events_per_sec),
            ),
            budget: Budget::new(config.max_held_bytes),
            config,
            senders: HashMap::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            finished: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_local_id: 1,
            total_held_bytes: 0,
            corrupt_suppressed: 0,
        }
    }
}

impl Reassembler {
    /// From now on, accept only datagrams sealed with one of `keys` that
    /// authenticate and are not replays (see [`crate::seal`]); everything else
    /// (unsealed ncu datagrams, netconsole, text, forgeries, replays) is rejected as
    /// `auth`. Byte-identical copies (`--copies`) count as duplicates.
    pub fn set_keys(&mut self, keys: Keys, replay: ReplayConfig) {
        self.inner.sealing = Some(Box::new(Sealing {
            keys,
            guard: ReplayGuard::new(replay),
            opened: Vec::new(),
        }));
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The receiver's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Bytes held by all sessions while waiting for holes to fill.
    pub fn held_bytes(&self) -> usize {
        self.inner.total_held_bytes
    }

    /// Bytes charged to the memory budget: held work plus per-session state (see
    /// [`crate::budget`]). Within [`Config::max_held_bytes`] after every call, but for
    /// at most [`BUDGET_SLACK`]: the state of the one session being handled, which
    /// nothing else can pay for.
    pub fn budget_used(&self) -> usize {
        self.inner.budget.total()
    }

    /// Sessions in memory.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.inner.events.pop_front()
    }

    /// Hands an event back once it has been written out, so that its line buffer
    /// holds a later line instead of being freed and allocated again (a receiver
    /// taking millions of lines spends much of its time in the allocator
    /// otherwise). Optional; at most [`SPARE_TEXTS`] buffers of at most
    /// [`SPARE_TEXT_CAPACITY`] bytes each are kept.
    pub fn recycle(&mut self, event: Event) {
        if let Event::Line { mut text, .. } = event {
            let spare = &mut self.inner.spare_texts;
            if spare.len() < SPARE_TEXTS && text.capacity() <= SPARE_TEXT_CAPACITY {
                text.clear();
                spare.push(text);
            }
        }
    }
}

impl Inner {
    /// A line buffer holding `bytes`: a recycled one when there is one.
    fn text_buffer(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self.spare_texts.pop() {
            Some(mut text) => {
                text.extend_from_slice(bytes);
                text
            }
            None => bytes.to_vec(),
        }
    }
}

impl Reassembler {
    /// When [`Reassembler::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let started = self.inner.started;
        self.inner
            .timers
            .peek()
            .map(|Reverse(due)| due.at().at(started))
    }

    /// The next datagram this receiver wants sent (a NACK to a sender), oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.inner.transmits.pop_front()
    }

    /// Counts a datagram the caller rejected before it could be handed over (e.g.
    /// truncated by the socket), reporting it like any other rejection.
    pub fn reject(&mut self, now: Instant, from: SocketAddr, reason: CorruptReason) {
        self.inner.stats.datagrams += 1;
        self.inner.corrupt(now, from, reason);
    }

    /// Summaries of every session in memory and of those finished and kept.
    pub fn summaries(&self) -> Vec<SessionSummary> {
        let mut all: Vec<SessionSummary> = self.inner.finished.iter().cloned().collect();
        all.extend(self.sessions.iter().map(|s| s.summary()));
        all.sort_by_key(|s| (s.first_received_at_us, s.session.id));
        all
    }

    /// Every session in memory, as metrics show them; in no
    /// particular order.
    pub fn session_views(&self) -> impl Iterator<Item = SessionView> + '_ {
        self.sessions.iter().map(|s| SessionView {
            info: s.who.info(),
            lines: s.lines,
            lost: s.extra().lost,
            fate: s.fate,
            last_received_at_us: s.last_rx_wall,
        })
    }

    /// The summary of one session, in memory or finished and kept (for a report of
    /// that session alone, e.g. a hook's).
    pub fn summary_of(&self, info: &SessionInfo) -> Option<SessionSummary> {
        let key = match info.kind {
            SourceKind::Ncu => SessionKey::ncu(info.id),
            kind => SessionKey::source(info.addr, kind),
        };
        match self.sessions.get(&key) {
            Some(s) if s.who.id == info.id => Some(s.summary()),
            _ => self
                .inner
                .finished
                .iter()
                .rev()
                .find(|s| s.session.id == info.id && s.session.addr == info.addr)
                .cloned(),
        }
    }
}

mod companion;
mod foreign;
mod held;
mod ncu;
mod order;
mod session;
mod slots;
mod table;
#[cfg(test)]
mod tests;
mod timers;

use session::{
    Assembler, Companion, FragmentedLine, IncomingLine, PendingLine, Session, SessionKey, Timer,
    Who,
};
use slots::{Sessions, Slot};
