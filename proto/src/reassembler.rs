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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::assembler::{ByteAssembler, PIECE_OVERHEAD};
use crate::budget::{self, Budget};
use crate::event::{
    CorruptReason, Event, Fate, GapKind, KernelMeta, SessionInfo, SessionSummary, SilentReason,
    SourceKind, LAST_TEXT_MAX,
};
use crate::netconsole::{
    self, ExtendedAssembler, ExtendedConfig, GarbageReason, KernelRecord, PlainConfig, PlainJoiner,
};
use crate::ranges::RangeSet;
use crate::recovery::TokenBucket;
use crate::seal::{self, Keys, ReplayConfig, ReplayGuard};
use crate::wire::{self, DecodeError, EndReason, Payload, Repr, LINE_CONTINUATION, LINE_PARTIAL};

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
    /// Most sessions in memory; past it the oldest idle one is retired.
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
            max_sessions: 16_384,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SessionKey {
    Ncu(u64),
    Source(SocketAddr, SourceKind),
}

/// What turns a session's datagrams into numbered lines.
#[derive(Debug)]
enum Source {
    /// ncu datagrams carry their own numbers.
    Ncu,
    /// Extended netconsole records, rebuilt from fragments.
    Kernel(Box<ExtendedAssembler>),
    /// Plain text joined across datagrams; the receiver numbers the lines.
    Text(Box<PlainJoiner>),
}

/// A line waiting for the lines before it.
#[derive(Debug)]
struct PendingLine {
    text: Vec<u8>,
    flags: u8,
    sent_at_us: Option<u64>,
    received_at_us: u64,
    arrived: Instant,
    kernel: Option<Box<KernelMeta>>,
}

impl PendingLine {
    /// What holding it costs, counted against the byte bounds: its text plus the
    /// bookkeeping (allocation, map node), so that a flood of empty lines is bounded
    /// too.
    fn held_cost(&self) -> usize {
        self.text.len() + PENDING_LINE_OVERHEAD
    }
}

/// Bytes counted for each held line besides its text.
const PENDING_LINE_OVERHEAD: usize = 64;

/// A long line being rebuilt from its fragments.
#[derive(Debug)]
struct FragmentedLine {
    /// The bytes received so far (never a buffer of the declared length).
    bytes: ByteAssembler,
    total: u32,
    flags: u8,
    arrived: Instant,
}

/// A line as the session's ordering logic takes it.
struct IncomingLine {
    seq: u64,
    text: Vec<u8>,
    flags: u8,
    sent_at_us: Option<u64>,
    kernel: Option<Box<KernelMeta>>,
    /// A later line of the same datagram follows at once: it, not this one, may
    /// become the session's quoted last line (saves copying every line twice).
    followed: bool,
}

#[derive(Debug)]
struct Session {
    info: Arc<SessionInfo>,
    /// `None` while joining: the first sequence number is not known yet.
    first_seq: Option<u64>,
    joining_until: Option<Instant>,
    joined: bool,
    /// Every line below `next` was delivered or reported lost.
    next: u64,
    /// Highest sequence number of a complete line received.
    highest: u64,
    pending: BTreeMap<u64, PendingLine>,
    fragments: BTreeMap<u64, FragmentedLine>,
    /// Bytes held in `pending` and `fragments` (see [`Reassembler::hold`]).
    held_bytes: usize,
    /// Since when `held_bytes` is above 0 (its place among the budget's holders).
    held_since: Option<Instant>,
    /// What the budget is charged for this session's own state
    /// ([`Session::state_cost`], as of the last [`Reassembler::recharge`]).
    state_bytes: usize,
    /// The sender said lines up to this exist (heartbeat, END); since when.
    known_last: u64,
    known_since: Option<Instant>,
    /// Ranges reported lost (start -> end), for telling late lines from duplicates.
    lost_ranges: RangeSet,
    /// Lines before `first_seq` of a joined session (start -> end): late if they come.
    last_rx: Instant,
    first_rx_wall: u64,
    last_rx_wall: u64,
    last_line: Option<(u64, Vec<u8>, Option<u64>)>,
    fate: Fate,
    end: Option<(u64, EndReason)>,
    end_reported: bool,
    gap_kind: GapKind,
    lines: u64,
    lost: u64,
    kernel_seq_skipped: u64,
    duplicates: u64,
    reordered: u64,
    late: u64,
    name_known: bool,
    /// The sender offers recovery (FLAG_RECOVERY seen).
    recovery: bool,
    /// When the last NACK went out.
    last_nack: Option<Instant>,
    /// Highest line any NACK asked for.
    nack_horizon: u64,
    /// The sender said lines up to this are gone from its ring.
    gone_upto: u64,
    /// Lines that filled a hole after a NACK asked for them.
    recovered: u64,
    /// Where the newest datagram came from (NACKs go there).
    last_addr: SocketAddr,
    /// The deadline this session has in the timers, if any.
    scheduled: Option<Instant>,
    source: Source,
    /// Text sessions: the number the next joined line gets.
    next_text_seq: u64,
    /// Kernel sessions: the boot clock of the newest record (for reboot detection).
    last_kernel_ts: u64,
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

/// What one session's fixed state costs the budget: the struct, its map entry,
/// its `SessionInfo`, its timer entry and its allocations' headers (measured with
/// the fleet test's RSS; see README "Memory").
const SESSION_STATE_BYTES: usize = std::mem::size_of::<Session>() + 256;
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

/// Sealed session ids remembered as already reported (then forgotten all at once).
const MAX_SEALED_REPORTED: usize = 4096;

/// Most reported-lost ranges a session remembers for recognising late lines.
const MAX_LOST_RANGES: usize = 1024;

impl Session {
    fn new(info: Arc<SessionInfo>, now: Instant, wall_us: u64) -> Session {
        let info_addr = info.addr;
        Session {
            info,
            first_seq: None,
            joining_until: None,
            joined: false,
            next: 0,
            highest: 0,
            pending: BTreeMap::new(),
            fragments: BTreeMap::new(),
            held_bytes: 0,
            held_since: None,
            state_bytes: 0,
            known_last: 0,
            known_since: None,
            lost_ranges: RangeSet::new(),
            last_rx: now,
            first_rx_wall: wall_us,
            last_rx_wall: wall_us,
            last_line: None,
            fate: Fate::Running,
            end: None,
            end_reported: false,
            gap_kind: GapKind::Lost,
            lines: 0,
            lost: 0,
            kernel_seq_skipped: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
            name_known: false,
            recovery: false,
            last_nack: None,
            nack_horizon: 0,
            gone_upto: 0,
            recovered: 0,
            last_addr: info_addr,
            scheduled: None,
            source: Source::Ncu,
            next_text_seq: 1,
            last_kernel_ts: 0,
        }
    }

    /// What this session's own state costs the budget besides the work it holds:
    /// its fixed size, its name, its quoted last line, what its netconsole or text
    /// assembler holds, and the lost ranges it remembers.
    fn state_cost(&self) -> usize {
        let source = match &self.source {
            Source::Kernel(assembler) => assembler.held_bytes(),
            Source::Text(joiner) => joiner.held_bytes(),
            Source::Ncu => 0,
        };
        SESSION_STATE_BYTES
            + self.info.name.len()
            + self.last_line.as_ref().map_or(0, |(_, t, _)| t.capacity())
            + source
            + self.lost_ranges.len() * RANGE_ENTRY_BYTES
    }

    fn summary(&self) -> SessionSummary {
        SessionSummary {
            session: self.info.clone(),
            first_seq: self.first_seq.unwrap_or(0),
            joined: self.joined,
            lines: self.lines,
            lost: self.lost,
            kernel_seq_skipped: self.kernel_seq_skipped,
            duplicates: self.duplicates,
            reordered: self.reordered,
            late: self.late,
            recovered: self.recovered,
            recovery: self.recovery,
            fate: self.fate,
            end_reason: self.end.map(|(_, reason)| reason),
            first_received_at_us: self.first_rx_wall,
            last_received_at_us: self.last_rx_wall,
            last_line: self.last_line.clone(),
        }
    }

    /// How long a hole is waited for before it is reported: longer when the sender
    /// resends on request.
    fn wait(&self, config: &Config) -> Duration {
        if self.recovery && config.nack {
            config.reorder_window.max(config.nack_window)
        } else {
            config.reorder_window
        }
    }

    /// When the next NACK is due, if this session has holes and offers recovery.
    fn nack_due(&self, config: &Config) -> Option<Instant> {
        if !self.recovery || !config.nack || self.fate != Fate::Running {
            return None;
        }
        let since = self.hole_since()?;
        let first = since + config.nack_delay;
        Some(match self.last_nack {
            Some(last) => first.max(last + config.nack_interval),
            None => first,
        })
    }

    /// The missing lines from `next` up to the highest known, as `(first, count)`
    /// ranges, oldest first (at most [`NACK_RANGES_PER_ROUND`]).
    fn missing_ranges(&self) -> Vec<(u64, u32)> {
        let horizon = [
            self.pending.last_key_value().map(|(&k, _)| k),
            self.fragments.last_key_value().map(|(&k, _)| k),
            Some(self.known_last),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        let mut ranges = Vec::new();
        let mut start = self.next;
        let mut push = |first: u64, end_exclusive: u64| {
            let mut first = first;
            while first < end_exclusive && ranges.len() < NACK_RANGES_PER_ROUND {
                let count = (end_exclusive - first).min(u64::from(u32::MAX));
                ranges.push((first, count as u32));
                first += count;
            }
        };
        for &seq in self.pending.keys() {
            if seq > start {
                push(start, seq);
            }
            start = seq + 1;
        }
        if horizon >= start {
            push(start, horizon + 1);
        }
        ranges
    }

    /// When the oldest evidence of a hole at `next` arrived, if there is a hole.
    fn hole_since(&self) -> Option<Instant> {
        self.first_seq?;
        let mut since: Option<Instant> = None;
        let mut take = |t: Instant| since = Some(since.map_or(t, |s| s.min(t)));
        if let Some((_, line)) = self.pending.first_key_value() {
            take(line.arrived);
        }
        for (_, frag) in self.fragments.range(self.next..) {
            take(frag.arrived);
        }
        if self.known_last >= self.next {
            if let Some(t) = self.known_since {
                take(t);
            }
        }
        since
    }

    /// When `timer` is due, if it is set: the one place a deadline is computed.
    fn timer(&self, timer: Timer, config: &Config) -> Option<Instant> {
        match timer {
            Timer::Source => match &self.source {
                Source::Kernel(assembler) => assembler.poll_timeout(),
                Source::Text(joiner) => joiner.poll_timeout(),
                Source::Ncu => None,
            },
            Timer::Join => self.joining_until,
            Timer::Hole => self.hole_since().map(|since| since + self.wait(config)),
            Timer::Nack => self.nack_due(config),
            // Fragments of a line already reported lost wait one more window.
            Timer::StaleFragments => self
                .fragments
                .range(..self.next)
                .map(|(_, f)| f.arrived)
                .min()
                .map(|arrived| arrived + 2 * config.reorder_window),
            Timer::EndWait => {
                let waiting = self.end.is_some() && !self.end_reported;
                waiting
                    .then_some(self.known_since)
                    .flatten()
                    .map(|t| t + self.wait(config))
            }
            Timer::Dead => (self.fate == Fate::Running && self.end.is_none())
                .then(|| self.last_rx + config.dead_after),
            Timer::Forget => self.end_reported.then(|| self.last_rx + config.dead_after),
        }
    }

    /// The earliest of the session's timers.
    fn deadline(&self, config: &Config) -> Option<Instant> {
        Timer::VALUES
            .iter()
            .filter_map(|&t| self.timer(t, config))
            .min()
    }
}

/// A session's timers: [`Session::timer`] computes each one's deadline,
/// [`Reassembler::session_timeout`] acts on each that is due, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// A netconsole or text assembler gives up what it holds (a record missing
    /// fragments, a line without newline).
    Source,
    /// A session joined mid-way starts at the lowest line seen.
    Join,
    /// The oldest hole was waited for long enough: a gap.
    Hole,
    /// A NACK is due.
    Nack,
    /// Fragments of a line already given up are dropped.
    StaleFragments,
    /// END came, but lines before it never did: given up.
    EndWait,
    /// Nothing arrived for `dead_after`: silent.
    Dead,
    /// Ended and quiet: forgotten ([`Reassembler::handle_timeout`]).
    Forget,
}

impl Timer {
    const VALUES: [Timer; 8] = [
        Timer::Source,
        Timer::Join,
        Timer::Hole,
        Timer::Nack,
        Timer::StaleFragments,
        Timer::EndWait,
        Timer::Dead,
        Timer::Forget,
    ];
}

/// Rebuilds every sender's lines in order; see the module docs.
#[derive(Debug)]
pub struct Reassembler {
    config: Config,
    sessions: HashMap<SessionKey, Session>,
    /// (source IP, name) -> the newest ncu session of that sender.
    senders: HashMap<(IpAddr, String), u64>,
    events: VecDeque<Event>,
    stats: Stats,
    finished: VecDeque<SessionSummary>,
    /// Session deadlines, earliest first. An entry is current when it equals its
    /// session's `scheduled`; others are stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, SessionKey)>>,
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
#[derive(Debug, Clone, Copy)]
pub struct SessionView<'a> {
    /// Who.
    pub info: &'a SessionInfo,
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
            sessions: HashMap::new(),
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

    /// From now on, accept only datagrams sealed with one of `keys` that
    /// authenticate and are not replays (see [`crate::seal`]); everything else
    /// (unsealed ncu datagrams, netconsole, text, forgeries, replays) is rejected as
    /// `auth`. Byte-identical copies (`--copies`) count as duplicates.
    pub fn set_keys(&mut self, keys: Keys, replay: ReplayConfig) {
        self.sealing = Some(Box::new(Sealing {
            keys,
            guard: ReplayGuard::new(replay),
            opened: Vec::new(),
        }));
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The receiver's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes held by all sessions while waiting for holes to fill.
    pub fn held_bytes(&self) -> usize {
        self.total_held_bytes
    }

    /// Bytes charged to the memory budget: held work plus per-session state (see
    /// [`crate::budget`]). Within [`Config::max_held_bytes`] after every call, but for
    /// at most [`BUDGET_SLACK`]: the state of the one session being handled, which
    /// nothing else can pay for.
    pub fn budget_used(&self) -> usize {
        self.budget.total()
    }

    /// Sessions in memory.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Hands an event back once it has been written out, so that its line buffer
    /// holds a later line instead of being freed and allocated again (a receiver
    /// taking millions of lines spends much of its time in the allocator
    /// otherwise). Optional; at most [`SPARE_TEXTS`] buffers of at most
    /// [`SPARE_TEXT_CAPACITY`] bytes each are kept.
    pub fn recycle(&mut self, event: Event) {
        if let Event::Line { mut text, .. } = event {
            if self.spare_texts.len() < SPARE_TEXTS && text.capacity() <= SPARE_TEXT_CAPACITY {
                text.clear();
                self.spare_texts.push(text);
            }
        }
    }

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

    /// When [`Reassembler::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// The next datagram this receiver wants sent (a NACK to a sender), oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Counts a datagram the caller rejected before it could be handed over (e.g.
    /// truncated by the socket), reporting it like any other rejection.
    pub fn reject(&mut self, now: Instant, from: SocketAddr, reason: CorruptReason) {
        self.stats.datagrams += 1;
        self.corrupt(now, from, reason);
    }

    /// Takes one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, wall_us: u64, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams += 1;
        self.stats.bytes += bytes.len() as u64;
        if self.sealing.is_some() {
            self.handle_with_key(now, wall_us, from, bytes);
            return;
        }
        if wire::has_magic(bytes) {
            match Repr::parse(bytes) {
                Ok(repr) => {
                    let flags = wire::Datagram::new_unchecked(bytes).flags();
                    self.handle_ncu(now, wall_us, from, flags, repr)
                }
                Err(DecodeError::Sealed) => self.handle_sealed(now, from, bytes),
                Err(e) => self.corrupt(now, from, CorruptReason::Decode(e)),
            }
            return;
        }
        self.handle_foreign(now, wall_us, from, bytes);
    }

    /// Fires every deadline that is due at `now`: gaps given up on, joins resolved,
    /// sessions gone silent.
    pub fn handle_timeout(&mut self, now: Instant, wall_us: u64) {
        // Only sessions with a deadline due are visited: the cost follows the work,
        // not the number of sessions.
        while let Some(&Reverse((due, key))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(mut session) = self.sessions.remove(&key) else {
                continue;
            };
            if session.scheduled != Some(due) {
                self.sessions.insert(key, session); // a stale entry
                continue;
            }
            session.scheduled = None;
            self.session_timeout(&mut session, now, wall_us);
            self.recharge(&mut session);
            let forget = session
                .timer(Timer::Forget, &self.config)
                .is_some_and(|due| due <= now);
            if forget && session.pending.is_empty() && session.fragments.is_empty() {
                self.finish(session);
                continue;
            }
            self.schedule(key, &mut session, now);
            self.sessions.insert(key, session);
        }
    }

    /// Makes sure `session`'s next deadline is in the timers (an earlier entry that
    /// turns out early is harmless: the session is visited and rescheduled).
    fn schedule(&mut self, key: SessionKey, session: &mut Session, now: Instant) {
        if let Some(deadline) = session.deadline(&self.config) {
            // A deadline already past is handled at the next turn.
            let deadline = deadline.max(now);
            if session.scheduled.is_none_or(|s| deadline < s) {
                session.scheduled = Some(deadline);
                self.timers.push(Reverse((deadline, key)));
            }
        }
    }

    /// Summaries of every session in memory and of those finished and kept.
    pub fn summaries(&self) -> Vec<SessionSummary> {
        let mut all: Vec<SessionSummary> = self.finished.iter().cloned().collect();
        all.extend(self.sessions.values().map(Session::summary));
        all.sort_by_key(|s| (s.first_received_at_us, s.session.id));
        all
    }

    /// Every session in memory, looked at without copying (for metrics); in no
    /// particular order.
    pub fn session_views(&self) -> impl Iterator<Item = SessionView<'_>> + '_ {
        self.sessions.values().map(|s| SessionView {
            info: &s.info,
            lines: s.lines,
            lost: s.lost,
            fate: s.fate,
            last_received_at_us: s.last_rx_wall,
        })
    }

    /// The summary of one session, in memory or finished and kept (for a report of
    /// that session alone, e.g. a hook's).
    pub fn summary_of(&self, info: &SessionInfo) -> Option<SessionSummary> {
        let key = match info.kind {
            SourceKind::Ncu => SessionKey::Ncu(info.id),
            kind => SessionKey::Source(info.addr, kind),
        };
        match self.sessions.get(&key) {
            Some(s) if s.info.id == info.id => Some(s.summary()),
            _ => self
                .finished
                .iter()
                .rev()
                .find(|s| s.session.id == info.id && s.session.addr == info.addr)
                .cloned(),
        }
    }

    /// Gives up every hole in every session now (at exit), so that the events say
    /// exactly which lines were lost. Sessions stay as they are otherwise.
    ///
    /// Sessions are visited in the order they began (first datagram, then key), so
    /// the events are the same for the same inputs and times.
    pub fn flush(&mut self, now: Instant, wall_us: u64) {
        let mut keys: Vec<(u64, SessionKey)> = self
            .sessions
            .iter()
            .map(|(k, s)| (s.first_rx_wall, *k))
            .collect();
        keys.sort_unstable();
        for (_, key) in keys {
            let Some(mut session) = self.sessions.remove(&key) else {
                continue;
            };
            self.flush_source(&mut session, now, wall_us);
            self.resolve_join(&mut session);
            self.give_up_all(&mut session);
            self.sessions.insert(key, session);
        }
    }

    // ---- ncu sessions ----

    fn handle_ncu(
        &mut self,
        now: Instant,
        wall_us: u64,
        from: SocketAddr,
        flags: u8,
        repr: Repr<'_>,
    ) {
        let key = SessionKey::Ncu(repr.header.session);
        match repr.payload {
            // NACKs go to senders; one here is misdirected (or a reflection attempt).
            Payload::Nack { .. } => {
                self.corrupt(now, from, CorruptReason::UnexpectedKind);
                return;
            }
            // Only meaningful for a session this receiver knows.
            Payload::Gone { .. } if !self.sessions.contains_key(&key) => return,
            _ => {}
        }
        let mut session = match self.sessions.remove(&key) {
            Some(s) => s,
            None => {
                let info = SessionInfo {
                    id: repr.header.session,
                    name: from.ip().to_string(),
                    addr: from,
                    kind: SourceKind::Ncu,
                };
                self.stats.sessions += 1;
                let mut s = Session::new(Arc::new(info), now, wall_us);
                self.register(&mut s);
                // HEARTBEAT and END carry the name: learn it before `start` is
                // reported (HELLO does so below, before it starts the session).
                match repr.payload {
                    Payload::Heartbeat { name } | Payload::End { name, .. } => {
                        self.learn_name(&mut s, name, now, wall_us)
                    }
                    _ => {}
                }
                let is_hello = matches!(repr.payload, Payload::Hello { .. });
                if !is_hello {
                    let started_us =
                        u64::from(wire::session_started_secs(repr.header.session)) * 1_000_000;
                    let age =
                        Duration::from_micros(repr.header.sent_at_us.saturating_sub(started_us));
                    let uptime = now.saturating_duration_since(self.started);
                    if repr.header.seq > 1 && age > uptime + JOIN_MARGIN {
                        // Running since before this receiver: wait a reorder window for
                        // the lowest line, then start there.
                        s.joining_until = Some(now + self.config.reorder_window);
                    } else {
                        self.start(&mut s, 1, false);
                    }
                }
                s
            }
        };
        self.touch(&mut session, now, wall_us, repr.header.seq);
        session.last_addr = from;
        session.recovery |= flags & wire::FLAG_RECOVERY != 0;
        let sent_at = repr.header.sent_at_us;
        match repr.payload {
            Payload::Nack { .. } => {}
            Payload::Gone { last } => {
                if last >= repr.header.seq && last > session.gone_upto {
                    session.gone_upto = last;
                    // The sender no longer has these: report them now.
                    while session.first_seq.is_some()
                        && session.next <= session.gone_upto
                        && self.give_up_first_hole_upto(&mut session, last)
                    {}
                }
            }
            Payload::Hello { name, .. } => {
                self.learn_name(&mut session, name, now, wall_us);
                // A repeated HELLO is no line: `duplicates` counts lines only.
                if session.first_seq.is_none() {
                    self.start(&mut session, repr.header.seq, false);
                }
            }
            Payload::Lines { lines, count } => {
                let mut seq = repr.header.seq;
                for (i, line) in lines.enumerate() {
                    let incoming = IncomingLine {
                        seq,
                        text: self.text_buffer(line.text),
                        flags: line.flags,
                        sent_at_us: Some(sent_at),
                        kernel: None,
                        followed: i + 1 < usize::from(count),
                    };
                    self.accept_line(&mut session, incoming, now, wall_us);
                    seq = seq.saturating_add(1);
                }
            }
            Payload::Fragment {
                offset,
                total,
                line_flags,
                bytes,
            } => {
                let seq = repr.header.seq;
                if let Some(text) = self.accept_fragment(
                    &mut session,
                    seq,
                    offset,
                    total,
                    line_flags,
                    bytes,
                    now,
                    from,
                ) {
                    let incoming = IncomingLine {
                        seq,
                        text,
                        flags: line_flags,
                        sent_at_us: Some(sent_at),
                        kernel: None,
                        followed: false,
                    };
                    self.accept_line(&mut session, incoming, now, wall_us);
                }
            }
            Payload::Heartbeat { name } => {
                self.learn_name(&mut session, name, now, wall_us);
                self.learn_known_last(&mut session, repr.header.seq, now);
            }
            Payload::End { name, reason } => {
                self.learn_name(&mut session, name, now, wall_us);
                // END is repeated while the sender lingers: no line, not a duplicate.
                if session.end.is_none() {
                    session.end = Some((repr.header.seq, reason));
                    session.known_since = Some(now);
                    session.known_last = session.known_last.max(repr.header.seq);
                }
            }
        }
        if session.first_seq.is_none() && session.pending.contains_key(&1) {
            self.start(&mut session, 1, false);
        }
        self.after_input(&mut session, now);
        self.sessions.insert(key, session);
        self.enforce_session_limit(now, key);
    }

    fn handle_with_key(&mut self, now: Instant, wall_us: u64, from: SocketAddr, bytes: &[u8]) {
        let Some(mut sealing) = self.sealing.take() else {
            return;
        };
        sealing.opened.clear();
        let verdict = match seal::open(&sealing.keys, bytes, &mut sealing.opened) {
            Err(seal::OpenError::Malformed(e)) if wire::has_magic(bytes) => {
                Err(CorruptReason::Decode(e))
            }
            Err(_) => Err(CorruptReason::Auth),
            Ok(()) => match Repr::parse(&sealing.opened) {
                Err(e) => Err(CorruptReason::Decode(e)),
                Ok(repr) => match sealing.guard.check(&repr.header, wall_us) {
                    Ok(()) => {
                        let flags = wire::Datagram::new_unchecked(&sealing.opened).flags();
                        self.handle_ncu(now, wall_us, from, flags, repr);
                        Ok(())
                    }
                    Err(replay) if replay.is_duplicate() => {
                        // A byte-identical copy (--copies) or a replay within the window:
                        // dropped before it can make a dead sender look alive.
                        // Counted as the lines it carried again (none for HELLO,
                        // heartbeats and END).
                        let lines = match repr.payload {
                            Payload::Lines { count, .. } => u64::from(count),
                            Payload::Fragment { .. } => 1,
                            _ => 0,
                        };
                        if let Some(s) =
                            self.sessions.get_mut(&SessionKey::Ncu(repr.header.session))
                        {
                            s.duplicates += lines;
                        }
                        Ok(())
                    }
                    Err(_) => Err(CorruptReason::Auth),
                },
            },
        };
        self.sealing = Some(sealing);
        if let Err(reason) = verdict {
            self.corrupt(now, from, reason);
        }
    }

    fn handle_sealed(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        // Without a key, a sealed session is reported once (rate limited like every
        // rejection), then counted quietly.
        let session_id = wire::Datagram::new_unchecked(bytes).session();
        if self.sealed_reported.len() >= MAX_SEALED_REPORTED {
            self.sealed_reported.clear();
        }
        if self.sealed_reported.insert(session_id) {
            self.corrupt(now, from, CorruptReason::SealedNoKey);
        } else {
            *self
                .stats
                .corrupt
                .entry(CorruptReason::SealedNoKey.as_str())
                .or_default() += 1;
        }
    }

    /// Records a datagram's arrival: resumes a silent session.
    fn touch(&mut self, session: &mut Session, now: Instant, wall_us: u64, seq: u64) {
        session.last_rx = now;
        session.last_rx_wall = wall_us;
        if session.fate == Fate::Silent {
            session.fate = Fate::Running;
            self.events.push_back(Event::Resumed {
                session: session.info.clone(),
                seq,
            });
        }
    }

    fn learn_name(&mut self, session: &mut Session, name: &str, now: Instant, wall_us: u64) {
        if session.name_known && session.info.name == name {
            return;
        }
        session.name_known = true;
        let info = SessionInfo {
            name: name.to_owned(),
            ..(*session.info).clone()
        };
        session.info = Arc::new(info);
        let sender = (session.info.addr.ip(), name.to_owned());
        let previous = self.senders.insert(sender, session.info.id);
        if let Some(old_id) = previous.filter(|&id| id != session.info.id) {
            if let Some(mut old) = self.sessions.remove(&SessionKey::Ncu(old_id)) {
                match old.fate {
                    Fate::Running if old.end.is_none() => {
                        self.go_silent(&mut old, SilentReason::Restarted, now, wall_us)
                    }
                    // Already reported silent: it stays so, now known to be restarted.
                    Fate::Silent => old.fate = Fate::Restarted,
                    _ => {}
                }
                self.sessions.insert(SessionKey::Ncu(old_id), old);
            }
        }
    }

    fn learn_known_last(&mut self, session: &mut Session, last: u64, now: Instant) {
        if last > session.known_last {
            session.known_last = last;
            session.known_since = Some(now);
        }
    }

    fn start(&mut self, session: &mut Session, first_seq: u64, joined: bool) {
        // ncu numbers lines from 1; the kernel numbers its records from 0.
        let first_seq = if session.info.kind == SourceKind::Ncu {
            first_seq.max(1)
        } else {
            first_seq
        };
        session.first_seq = Some(first_seq);
        session.joining_until = None;
        session.joined = joined;
        session.next = first_seq;
        if joined && first_seq > 1 {
            session.lost_ranges.insert(1, first_seq - 1);
        }
        self.events.push_back(Event::Start {
            session: session.info.clone(),
            first_seq,
            joined,
        });
        // Lines held while joining that are below the start are late; the rest flow.
        let below: Vec<u64> = session
            .pending
            .range(..first_seq)
            .map(|(&k, _)| k)
            .collect();
        for seq in below {
            if let Some(line) = session.pending.remove(&seq) {
                self.release(session, line.held_cost());
                self.deliver(session, seq, line, true);
            }
        }
        self.drain(session);
    }

    fn resolve_join(&mut self, session: &mut Session) {
        if session.first_seq.is_some() {
            return;
        }
        let lowest = [
            session.pending.first_key_value().map(|(&k, _)| k),
            session.fragments.first_key_value().map(|(&k, _)| k),
        ]
        .into_iter()
        .flatten()
        .min();
        let first = lowest.unwrap_or(session.known_last.saturating_add(1));
        self.start(session, first, first > 1);
    }

    #[allow(clippy::too_many_arguments)]
    fn accept_fragment(
        &mut self,
        session: &mut Session,
        seq: u64,
        offset: u32,
        total: u32,
        flags: u8,
        bytes: &[u8],
        now: Instant,
        from: SocketAddr,
    ) -> Option<Vec<u8>> {
        let already_done = session.first_seq.is_some()
            && (seq < session.next && !session.lost_ranges.contains(seq)
                || session.pending.contains_key(&seq));
        if already_done {
            session.duplicates += 1;
            return None;
        }
        if total as usize > self.config.max_line_bytes {
            self.corrupt(now, from, CorruptReason::LineTooLong);
            return None;
        }
        if !session.fragments.contains_key(&seq) {
            if session.fragments.len() >= self.config.max_lines_in_fragments {
                // Too many long lines in flight: drop the oldest (it will be a gap).
                if let Some((&old, _)) = session.fragments.first_key_value() {
                    self.drop_fragments(session, old);
                }
            }
            session.fragments.insert(
                seq,
                FragmentedLine {
                    bytes: ByteAssembler::new(),
                    total,
                    flags,
                    arrived: now,
                },
            );
        }
        let frag = session.fragments.get(&seq)?;
        if frag.total != total || frag.flags != flags {
            self.corrupt(
                now,
                from,
                CorruptReason::Decode(DecodeError::FragmentOutOfRange),
            );
            return None;
        }
        // Room for what this piece can cost; making it may give up this very line.
        self.make_room(session, bytes.len() + PIECE_OVERHEAD, now);
        let frag = session.fragments.get_mut(&seq)?;
        let before = frag.bytes.held_cost();
        // The decoder checked offset + len <= total.
        if frag.bytes.insert(offset, bytes) == 0 {
            session.duplicates += 1;
            return None;
        }
        let cost = frag.bytes.held_cost() - before;
        let complete = frag.bytes.received() >= frag.total;
        self.hold(session, cost, now);
        if !complete {
            return None;
        }
        let frag = session.fragments.remove(&seq)?;
        self.release(session, frag.bytes.held_cost());
        Some(frag.bytes.into_bytes())
    }

    fn drop_fragments(&mut self, session: &mut Session, seq: u64) {
        if let Some(frag) = session.fragments.remove(&seq) {
            self.release(session, frag.bytes.held_cost());
        }
    }

    // ---- the budget: every byte held on behalf of a sender is charged here ----

    /// Charges `n` more held bytes (a waiting line, a fragment) to `session`.
    fn hold(&mut self, session: &mut Session, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        let ip = session.info.addr.ip();
        if session.held_bytes == 0 {
            session.held_since = Some(now);
            self.budget.start_holding(ip, session_key(session), now);
        }
        session.held_bytes += n;
        self.total_held_bytes += n;
        self.budget.charge(ip, n);
    }

    /// Refunds `n` held bytes of `session` (delivered, given up, dropped).
    fn release(&mut self, session: &mut Session, n: usize) {
        if n == 0 {
            return;
        }
        let ip = session.info.addr.ip();
        session.held_bytes -= n;
        self.total_held_bytes -= n;
        self.budget.refund(ip, n);
        if session.held_bytes == 0 {
            if let Some(since) = session.held_since.take() {
                self.budget.stop_holding(ip, session_key(session), since);
            }
        }
    }

    /// Brings the budget's charge for `session`'s own state up to date.
    fn recharge(&mut self, session: &mut Session) {
        let cost = session.state_cost();
        if cost == session.state_bytes {
            return;
        }
        let ip = session.info.addr.ip();
        if cost > session.state_bytes {
            self.budget.charge(ip, cost - session.state_bytes);
        } else {
            self.budget.refund(ip, session.state_bytes - cost);
        }
        session.state_bytes = cost;
    }

    /// Makes room for `len` more held bytes in `session`: within its own bound by
    /// giving up its own holes, then within the budget (see [`crate::budget`]).
    fn make_room(&mut self, session: &mut Session, len: usize, now: Instant) {
        while session.held_bytes + len > self.config.max_pending_bytes && self.shed(session) {}
        self.enforce_budget(session, len, now);
    }

    /// Gives up held work, oldest first, from the source the budget names, until
    /// `extra` more bytes for `current` (the session being handled, out of the map)
    /// fit; a source holding only session state loses its oldest session.
    fn enforce_budget(&mut self, current: &mut Session, extra: usize, now: Instant) {
        let ip = current.info.addr.ip();
        let current_key = session_key(current);
        let mut counted = false;
        while let Some(victim) = self.budget.victim(ip, extra) {
            if !counted {
                self.stats.held_limit_reached += 1;
                counted = true;
            }
            if let Some(key) = self.budget.oldest_holder(victim) {
                let freed = if key == current_key {
                    self.shed(current)
                } else if let Some(mut other) = self.sessions.remove(&key) {
                    let freed = self.shed(&mut other);
                    self.schedule(key, &mut other, now);
                    self.sessions.insert(key, other);
                    freed
                } else {
                    false
                };
                if freed {
                    continue;
                }
                break;
            }
            let sessions = &self.sessions;
            let oldest = self.budget.oldest_session(victim, current_key, |k| {
                *k == current_key || sessions.contains_key(k)
            });
            match oldest {
                Some(key) => self.retire(key),
                None => break,
            }
        }
    }

    /// Gives up `session`'s oldest held work: its first hole (a gap, or a fragmented
    /// line at the hole), or fragments of lines already given up. Returns whether
    /// anything was freed.
    fn shed(&mut self, session: &mut Session) -> bool {
        let before = session.held_bytes;
        if session.first_seq.is_none() {
            self.resolve_join(session);
        }
        while session.held_bytes == before {
            let first_fragment = session.fragments.first_key_value().map(|(&k, _)| k);
            match first_fragment {
                Some(seq) if seq < session.next => self.drop_fragments(session, seq),
                _ if self.give_up_first_hole(session) => {}
                _ => {
                    // Nothing left to give up in order: what is left are fragments.
                    let all: Vec<u64> = session.fragments.keys().copied().collect();
                    for seq in all {
                        self.drop_fragments(session, seq);
                    }
                    break;
                }
            }
        }
        session.held_bytes < before
    }

    // ---- the ordering logic shared by every kind of session ----

    fn accept_line(
        &mut self,
        session: &mut Session,
        line: IncomingLine,
        now: Instant,
        wall_us: u64,
    ) {
        let seq = line.seq;
        let pending = PendingLine {
            text: line.text,
            flags: line.flags,
            sent_at_us: line.sent_at_us,
            received_at_us: wall_us,
            arrived: now,
            kernel: line.kernel,
        };
        let started = session.first_seq.is_some();
        let is_late = started && seq < session.next;
        if is_late && !session.lost_ranges.contains(seq) || session.pending.contains_key(&seq) {
            session.duplicates += 1;
            return;
        }
        if seq < session.highest {
            session.reordered += 1;
            if !is_late && seq <= session.nack_horizon {
                session.recovered += 1;
            }
        }
        if seq >= session.highest {
            session.highest = seq;
            // The quoted last line, unless a later line of the same datagram follows.
            if !line.followed {
                let text = &pending.text[..pending.text.len().min(LAST_TEXT_MAX)];
                match &mut session.last_line {
                    Some((s, t, sent)) => {
                        *s = seq;
                        t.clear();
                        t.extend_from_slice(text);
                        *sent = pending.sent_at_us;
                    }
                    None => session.last_line = Some((seq, text.to_vec(), pending.sent_at_us)),
                }
            }
        }
        if is_late {
            session.lost_ranges.remove(seq);
            self.deliver(session, seq, pending, true);
            return;
        }
        if session.first_seq.is_some() && seq == session.next {
            self.deliver(session, seq, pending, false);
            session.next += 1;
            self.drain(session);
            return;
        }
        let len = pending.held_cost();
        self.make_room(session, len, now);
        if session.first_seq.is_some() && seq <= session.next {
            // Room was made by giving up the lines before this one (or this one).
            if seq == session.next {
                self.deliver(session, seq, pending, false);
                session.next += 1;
                self.drain(session);
            } else {
                session.lost_ranges.remove(seq);
                self.deliver(session, seq, pending, true);
            }
            return;
        }
        self.hold(session, len, now);
        session.pending.insert(seq, pending);
        if session.first_seq.is_none()
            && session.pending.len() as u64 > self.config.max_pending_lines
        {
            self.resolve_join(session);
        }
        if session.first_seq.is_some() {
            // A jump far ahead gives up the lines in between at once.
            while seq.saturating_sub(session.next) > self.config.max_pending_lines
                || session.pending.len() as u64 > self.config.max_pending_lines
            {
                self.give_up_first_hole(session);
            }
        }
    }

    fn deliver(&mut self, session: &mut Session, seq: u64, line: PendingLine, late: bool) {
        session.lines += 1;
        if late {
            session.late += 1;
            if seq >= session.first_seq.unwrap_or(0) {
                session.lost = session.lost.saturating_sub(1);
            }
        }
        self.events.push_back(Event::Line {
            session: session.info.clone(),
            seq,
            partial: line.flags & LINE_PARTIAL != 0,
            continuation: line.flags & LINE_CONTINUATION != 0,
            text: line.text,
            late,
            sent_at_us: line.sent_at_us,
            received_at_us: line.received_at_us,
            kernel: line.kernel,
        });
    }

    /// Delivers every held line that is next in order.
    fn drain(&mut self, session: &mut Session) {
        while let Some(entry) = session.pending.first_entry() {
            if *entry.key() != session.next {
                break;
            }
            let line = entry.remove();
            self.release(session, line.held_cost());
            let seq = session.next;
            self.deliver(session, seq, line, false);
            session.next += 1;
        }
    }

    /// Reports the hole at `next` as lost and moves on. Returns false when there is
    /// no hole to give up.
    fn give_up_first_hole(&mut self, session: &mut Session) -> bool {
        self.give_up_first_hole_upto(session, u64::MAX)
    }

    /// [`Reassembler::give_up_first_hole`], but no further than line `limit`.
    fn give_up_first_hole_upto(&mut self, session: &mut Session, limit: u64) -> bool {
        if session.first_seq.is_none() || session.next > limit {
            return false;
        }
        let next = session.next;
        let last = if session.fragments.contains_key(&next) {
            // Kept a while longer (see `session_timeout`): late fragments may still
            // complete it, and it is then delivered late.
            next
        } else {
            let after = [
                session.pending.first_key_value().map(|(&k, _)| k),
                session.fragments.range(next..).next().map(|(&k, _)| k),
            ]
            .into_iter()
            .flatten()
            .min();
            match after {
                Some(k) => k - 1,
                None if session.known_last >= next => session.known_last,
                None => return false,
            }
        };
        let last = last.min(limit);
        let count = last - next + 1;
        if session.gap_kind == GapKind::Lost {
            session.lost += count;
            session.lost_ranges.insert(next, last);
            if session.lost_ranges.len() > MAX_LOST_RANGES {
                session.lost_ranges.pop_first();
            }
        } else {
            session.kernel_seq_skipped += count;
        }
        self.events.push_back(Event::Gap {
            session: session.info.clone(),
            first: next,
            last,
            kind: session.gap_kind,
        });
        session.next = last + 1;
        self.drain(session);
        true
    }

    fn give_up_all(&mut self, session: &mut Session) {
        while self.give_up_first_hole(session) {}
        let stale: Vec<u64> = session.fragments.keys().copied().collect();
        for seq in stale {
            self.drop_fragments(session, seq);
        }
    }

    /// After a datagram: report END when everything up to it is accounted for.
    fn after_input(&mut self, session: &mut Session, now: Instant) {
        self.maybe_end(session);
        self.recharge(session);
        self.enforce_budget(session, 0, now);
        let key = session_key(session);
        self.schedule(key, session, now);
    }

    fn maybe_end(&mut self, session: &mut Session) {
        let Some((last_seq, reason)) = session.end else {
            return;
        };
        if session.end_reported || session.first_seq.is_none() || session.next <= last_seq {
            return;
        }
        session.end_reported = true;
        session.fate = Fate::Ended;
        self.events.push_back(Event::End {
            session: session.info.clone(),
            last_seq,
            lines: last_seq,
            lost: session.lost,
            reason,
        });
    }

    fn go_silent(
        &mut self,
        session: &mut Session,
        reason: SilentReason,
        now: Instant,
        wall_us: u64,
    ) {
        self.flush_source(session, now, wall_us);
        self.resolve_join(session);
        self.give_up_all(session);
        session.fate = match reason {
            SilentReason::DeadAfter => Fate::Silent,
            SilentReason::Restarted => Fate::Restarted,
        };
        let (last_seq, last_text, last_sent_at_us) = match &session.last_line {
            Some((seq, text, sent)) => (*seq, Some(text.clone()), *sent),
            None => (0, None, None),
        };
        self.events.push_back(Event::Silent {
            session: session.info.clone(),
            last_seq,
            last_text,
            last_sent_at_us,
            last_received_at_us: session.last_rx_wall,
            reason,
        });
    }

    /// Queues NACKs for the lines `session` is missing, oldest first: as many
    /// datagrams of [`wire::MAX_NACK_RANGES`] ranges as it takes, up to
    /// [`NACK_RANGES_PER_ROUND`] ranges, each datagram within the overall rate limit.
    fn send_nack(&mut self, session: &mut Session, now: Instant, wall_us: u64) {
        session.last_nack = Some(now);
        let ranges = session.missing_ranges();
        if ranges.is_empty() {
            return;
        }
        for chunk in ranges.chunks(wire::MAX_NACK_RANGES) {
            if !self.nack_bucket.take(now, 1) {
                self.stats.nacks_suppressed += 1;
                return;
            }
            if let Some(&(first, count)) = chunk.last() {
                let end = first + u64::from(count) - 1;
                session.nack_horizon = session.nack_horizon.max(end);
            }
            let bytes = self.nack_datagram(session.info.id, chunk, wall_us);
            self.stats.nacks_sent += 1;
            self.transmits.push_back(Transmit {
                to: session.last_addr,
                bytes,
            });
        }
    }

    /// One NACK datagram for `ranges` (sealed when this receiver has keys).
    fn nack_datagram(&mut self, session: u64, ranges: &[(u64, u32)], wall_us: u64) -> Vec<u8> {
        // The counter of a NACK is random: several receivers may NACK one session
        // with one key in the same microsecond, and sealed nonces must not repeat.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let header = wire::Header {
            session,
            seq: 0,
            sent_at_us: wall_us,
            counter: self.rng as u32,
        };
        let mut bytes = Vec::with_capacity(wire::HEADER_LEN + 1 + 12 * ranges.len() + 16);
        wire::write_header(&mut bytes, wire::Kind::Nack, 0, 0, &header);
        wire::push_nack_ranges(&mut bytes, ranges);
        wire::finish_datagram(&mut bytes);
        if let Some(sealing) = &self.sealing {
            let mut sealed = Vec::with_capacity(bytes.len() + 16);
            seal::seal(&sealing.keys, &bytes, &mut sealed);
            bytes = sealed;
        }
        bytes
    }

    /// Acts on every timer of `session` that is due at `now`, in [`Timer::VALUES`]
    /// order (each looked at after the ones before it acted).
    fn session_timeout(&mut self, session: &mut Session, now: Instant, wall_us: u64) {
        for timer in Timer::VALUES {
            if session
                .timer(timer, &self.config)
                .is_none_or(|due| due > now)
            {
                continue;
            }
            match timer {
                Timer::Source => {
                    let due = match &mut session.source {
                        Source::Kernel(assembler) => assembler.handle_timeout(now) > 0,
                        Source::Text(joiner) => joiner.handle_timeout(now),
                        Source::Ncu => false,
                    };
                    if due {
                        self.take_source_output(session, now, wall_us);
                    }
                }
                Timer::Join => self.resolve_join(session),
                Timer::Hole => {
                    while session
                        .timer(Timer::Hole, &self.config)
                        .is_some_and(|due| due <= now)
                    {
                        if !self.give_up_first_hole(session) {
                            break;
                        }
                    }
                }
                Timer::Nack => self.send_nack(session, now, wall_us),
                Timer::StaleFragments => {
                    let stale: Vec<u64> = session
                        .fragments
                        .range(..session.next)
                        .filter(|(_, f)| f.arrived + 2 * self.config.reorder_window <= now)
                        .map(|(&k, _)| k)
                        .collect();
                    for seq in stale {
                        self.drop_fragments(session, seq);
                    }
                }
                Timer::EndWait => {
                    self.resolve_join(session);
                    self.give_up_all(session);
                }
                Timer::Dead => self.go_silent(session, SilentReason::DeadAfter, now, wall_us),
                // Forgetting takes the session out of the map: the caller does it.
                Timer::Forget => {}
            }
        }
        // END is reported once everything up to it is accounted for (a gap given up
        // above may be the last thing it waited for).
        self.maybe_end(session);
    }

    // ---- sessions: limits ----

    fn enforce_session_limit(&mut self, now: Instant, keep: SessionKey) {
        if self.sessions.len() <= self.config.max_sessions {
            return;
        }
        // The oldest session of the source that costs the most: a flood of sessions
        // from one source retires its own, never a quiet host's.
        let Some(ip) = self.budget.heaviest() else {
            return;
        };
        let sessions = &self.sessions;
        let victim = self
            .budget
            .oldest_session(ip, keep, |k| sessions.contains_key(k))
            .or_else(|| {
                // That source has only the session being handled: the one idle
                // longest among a few others.
                self.sessions
                    .iter()
                    .filter(|(k, _)| **k != keep)
                    .take(32)
                    .min_by_key(|(_, s)| (s.fate == Fate::Running, s.last_rx))
                    .map(|(k, _)| *k)
            });
        if let Some(key) = victim {
            self.retire(key);
        }
        let _ = now;
    }

    /// Drops session `key` from memory to make room, reporting what it held.
    fn retire(&mut self, key: SessionKey) {
        if let Some(mut session) = self.sessions.remove(&key) {
            self.resolve_join(&mut session);
            self.give_up_all(&mut session);
            self.stats.retired += 1;
            self.events.push_back(Event::Retired {
                session: session.info.clone(),
            });
            self.finish(session);
        }
    }

    /// A session in the budget from now on.
    fn register(&mut self, session: &mut Session) {
        self.budget
            .add_session(session.info.addr.ip(), session_key(session));
        self.recharge(session);
    }

    /// Forgets a session: its charges are refunded, its summary kept.
    fn finish(&mut self, mut session: Session) {
        let held = session.held_bytes;
        self.release(&mut session, held);
        let ip = session.info.addr.ip();
        self.budget.refund(ip, session.state_bytes);
        self.budget.remove_session(ip);
        if let SessionKey::Ncu(id) = session_key(&session) {
            let sender = (session.info.addr.ip(), session.info.name.clone());
            if self.senders.get(&sender) == Some(&id) {
                self.senders.remove(&sender);
            }
        }
        if self.config.max_finished_summaries > 0 {
            if self.finished.len() >= self.config.max_finished_summaries {
                self.finished.pop_front();
            }
            self.finished.push_back(session.summary());
        }
    }

    // ---- rejections ----

    fn corrupt(&mut self, now: Instant, from: SocketAddr, reason: CorruptReason) {
        *self.stats.corrupt.entry(reason.as_str()).or_default() += 1;
        if self.corrupt_bucket.take(now, 1) {
            let suppressed = std::mem::take(&mut self.corrupt_suppressed);
            self.events.push_back(Event::Corrupt {
                addr: from,
                reason,
                suppressed,
            });
        } else {
            self.corrupt_suppressed += 1;
        }
    }

    // ---- netconsole and plain text ----

    fn handle_foreign(&mut self, now: Instant, wall_us: u64, from: SocketAddr, bytes: &[u8]) {
        let kind = match netconsole::classify(bytes) {
            netconsole::Kind::Extended => SourceKind::KernelExtended,
            netconsole::Kind::Text => SourceKind::Text,
            // Plain netconsole sends the console's bytes as they are: once a source
            // has sent text, its datagrams with a few stray control or non-UTF-8 bytes
            // are still its console output (random bytes, or any NUL, are not).
            netconsole::Kind::Garbage(GarbageReason::Binary | GarbageReason::NotUtf8)
                if mostly_text(bytes)
                    && self
                        .sessions
                        .contains_key(&SessionKey::Source(from, SourceKind::Text)) =>
            {
                SourceKind::Text
            }
            netconsole::Kind::Garbage(reason) => {
                let reason = match reason {
                    GarbageReason::Empty => CorruptReason::Empty,
                    GarbageReason::Binary => CorruptReason::Binary,
                    GarbageReason::NotUtf8 => CorruptReason::NotUtf8,
                };
                self.corrupt(now, from, reason);
                return;
            }
        };
        let key = SessionKey::Source(from, kind);
        let mut session = match self.sessions.remove(&key) {
            Some(s) => s,
            None => self.new_local_session(from, kind, now, wall_us),
        };
        let next = session.next;
        self.touch(&mut session, now, wall_us, next);
        match kind {
            SourceKind::KernelExtended => {
                let pushed = match (netconsole::parse_extended(bytes), &mut session.source) {
                    (Ok(record), Source::Kernel(assembler)) => assembler.push(&record, now),
                    _ => Err(netconsole::NetconsoleError::BadHeader),
                };
                if pushed.is_err() {
                    self.corrupt(now, from, CorruptReason::Netconsole);
                }
            }
            _ => {
                if let Source::Text(joiner) = &mut session.source {
                    joiner.push(bytes, now);
                }
            }
        }
        self.take_source_output(&mut session, now, wall_us);
        self.after_input(&mut session, now);
        self.sessions.insert(key, session);
        self.enforce_session_limit(now, key);
    }

    /// Moves complete records or lines out of a netconsole or text session's
    /// assembler into its ordering logic.
    fn take_source_output(&mut self, session: &mut Session, now: Instant, wall_us: u64) {
        loop {
            let incoming = match &mut session.source {
                Source::Kernel(assembler) => match assembler.poll_record() {
                    Some(record) => kernel_line(record),
                    None => break,
                },
                Source::Text(joiner) => match joiner.poll_line() {
                    Some(line) => IncomingLine {
                        seq: session.next_text_seq,
                        text: line.text,
                        flags: if line.partial { LINE_PARTIAL } else { 0 },
                        sent_at_us: None,
                        kernel: None,
                        followed: false,
                    },
                    None => break,
                },
                Source::Ncu => break,
            };
            if let Source::Text(_) = session.source {
                session.next_text_seq += 1;
            }
            if session.first_seq.is_none() {
                // The first kernel record decides the numbering: its msgid when the
                // kernel sends one (gaps are then real losses), else its seq.
                let msgid = incoming.kernel.as_ref().is_some_and(|k| k.msgid.is_some());
                session.gap_kind = if msgid {
                    GapKind::Lost
                } else {
                    GapKind::KernelSeq
                };
                self.start(session, incoming.seq, false);
            } else if self.is_reboot(session, &incoming) {
                self.reboot(session, incoming, now, wall_us);
                continue;
            }
            if let Some(kernel) = &incoming.kernel {
                session.last_kernel_ts = session.last_kernel_ts.max(kernel.ts_usec);
            }
            self.accept_line(session, incoming, now, wall_us);
        }
    }

    /// Lets a netconsole or text session's assembler give up what it holds (a line
    /// without newline, a record missing fragments) so that it is delivered.
    fn flush_source(&mut self, session: &mut Session, now: Instant, wall_us: u64) {
        let flushed = match &mut session.source {
            Source::Kernel(assembler) => assembler.flush() > 0,
            Source::Text(joiner) => joiner.flush(),
            Source::Ncu => false,
        };
        if flushed {
            self.take_source_output(session, now, wall_us);
        }
    }

    /// A kernel record numbered far below what was seen, with an earlier boot clock:
    /// the machine rebooted.
    fn is_reboot(&self, session: &Session, incoming: &IncomingLine) -> bool {
        let Some(kernel) = &incoming.kernel else {
            return false;
        };
        incoming.seq.saturating_add(1) < session.next
            && kernel.ts_usec.saturating_add(1_000_000) < session.last_kernel_ts
    }

    /// Ends a kernel session as restarted and begins a new one with `first`.
    fn reboot(&mut self, session: &mut Session, first: IncomingLine, now: Instant, wall_us: u64) {
        self.go_silent(session, SilentReason::Restarted, now, wall_us);
        let info = session.info.clone();
        let assembler = std::mem::replace(&mut session.source, Source::Ncu);
        let mut fresh = self.new_local_session(info.addr, info.kind, now, wall_us);
        fresh.source = assembler;
        let old = std::mem::replace(session, fresh);
        self.finish(old);
        let msgid = first.kernel.as_ref().is_some_and(|k| k.msgid.is_some());
        session.gap_kind = if msgid {
            GapKind::Lost
        } else {
            GapKind::KernelSeq
        };
        self.start(session, first.seq, false);
        if let Some(kernel) = &first.kernel {
            session.last_kernel_ts = kernel.ts_usec;
        }
        self.accept_line(session, first, now, wall_us);
    }

    fn new_local_session(
        &mut self,
        from: SocketAddr,
        kind: SourceKind,
        now: Instant,
        wall_us: u64,
    ) -> Session {
        let id = self.next_local_id;
        self.next_local_id += 1;
        self.stats.sessions += 1;
        let info = SessionInfo {
            id,
            name: from.ip().to_string(),
            addr: from,
            kind,
        };
        let mut session = Session::new(Arc::new(info), now, wall_us);
        self.register(&mut session);
        session.source = match kind {
            SourceKind::KernelExtended => {
                Source::Kernel(Box::new(ExtendedAssembler::new(ExtendedConfig {
                    fragment_timeout: self.config.reorder_window * 2,
                    max_record_bytes: KERNEL_RECORD_MAX,
                    max_pending: 2,
                })))
            }
            _ => Source::Text(Box::new(PlainJoiner::new(PlainConfig {
                line_timeout: self.config.reorder_window,
                max_line_bytes: TEXT_LINE_MAX,
            }))),
        };
        session
    }
}

/// The ordering logic's view of a kernel record.
fn kernel_line(record: KernelRecord) -> IncomingLine {
    let fields = record
        .dict_pairs()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    let seq = record.msgid.unwrap_or(record.seq);
    let flags = if record.is_complete() {
        0
    } else {
        LINE_PARTIAL
    };
    IncomingLine {
        seq,
        flags,
        sent_at_us: None,
        kernel: Some(Box::new(KernelMeta {
            level: record.level,
            facility: record.facility,
            seq: record.seq,
            ts_usec: record.ts_usec,
            cont: record.cont,
            msgid: record.msgid,
            fields,
        })),
        text: record.text,
        followed: false,
    }
}

fn session_key(session: &Session) -> SessionKey {
    match session.info.kind {
        SourceKind::Ncu => SessionKey::Ncu(session.info.id),
        kind => SessionKey::Source(session.info.addr, kind),
    }
}

/// No NUL, and at most one byte in 16 a control character other than tab, CR, LF.
fn mostly_text(bytes: &[u8]) -> bool {
    let control = bytes
        .iter()
        .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f)
        .count();
    !bytes.contains(&0) && control * 16 <= bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::{Framer, Outbox};
    use crate::seal::{Keys, ReplayConfig};
    use crate::wire::Header;

    struct Harness {
        rx: Reassembler,
        base: Instant,
        now_us: u64,
    }

    impl Harness {
        fn new() -> Harness {
            let base = Instant::now();
            Harness {
                rx: Reassembler::new(Config::default(), base),
                base,
                now_us: 0,
            }
        }
        fn at(&self) -> Instant {
            self.base + Duration::from_micros(self.now_us)
        }
        fn feed(&mut self, from: &str, bytes: &[u8]) {
            let at = self.at();
            self.rx
                .handle_datagram(at, self.now_us, from.parse().unwrap(), bytes);
        }
        fn advance(&mut self, d: Duration) -> Vec<Event> {
            let end = self.now_us + d.as_micros() as u64;
            let mut events = self.events();
            while let Some(t) = self.rx.poll_timeout() {
                let us = t.duration_since(self.base).as_micros() as u64;
                if us > end {
                    break;
                }
                self.now_us = us;
                self.rx.handle_timeout(t, us);
                events.extend(self.events());
            }
            self.now_us = end;
            events
        }
        fn events(&mut self) -> Vec<Event> {
            std::iter::from_fn(|| self.rx.poll_event()).collect()
        }
    }

    fn datagrams(framer: &mut Framer, f: impl FnOnce(&mut Framer, &mut Outbox)) -> Vec<Vec<u8>> {
        let mut outbox = Outbox::default();
        f(framer, &mut outbox);
        framer.flush(&mut outbox);
        outbox.datagrams().map(<[u8]>::to_vec).collect()
    }

    fn kinds(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Start { first_seq, .. } => format!("start {first_seq}"),
                Event::Line { seq, late, .. } => {
                    format!("line {seq}{}", if *late { " late" } else { "" })
                }
                Event::Gap {
                    first, last, kind, ..
                } => format!("gap {first}-{last} {}", kind.as_str()),
                Event::Silent {
                    last_seq, reason, ..
                } => format!("silent {last_seq} {}", reason.as_str()),
                Event::Resumed { seq, .. } => format!("resumed {seq}"),
                Event::End { lost, .. } => format!("end lost={lost}"),
                Event::Corrupt { reason, .. } => format!("corrupt {reason}"),
                Event::Retired { .. } => "retired".to_owned(),
            })
            .collect()
    }

    #[test]
    fn duplicates_count_lines_received_twice_not_repeated_ends() {
        let mut h = Harness::new();
        let mut f = Framer::new(wire::session_id(0, 7), "lingers", 1400);
        for d in datagrams(&mut f, |f, o| f.hello(1, 0, "stdin", 0, o)) {
            h.feed("10.0.0.1:5", &d);
        }
        let mut second = Vec::new();
        for text in [&b"one"[..], b"two", b"three"] {
            let ds = datagrams(&mut f, |f, o| {
                f.push_line(0, text, 0, o);
            });
            if text == b"two" {
                second = ds[0].clone();
            }
            for d in ds {
                h.feed("10.0.0.1:5", &d);
            }
        }
        // The sender lingers: END, repeated; a HELLO repeated too.
        let end = datagrams(&mut f, |f, o| f.end(EndReason::Eof, 0, o));
        for _ in 0..9 {
            h.feed("10.0.0.1:5", &end[0]);
        }
        h.advance(Duration::from_secs(1));
        let summary = &h.rx.summaries()[0];
        assert_eq!((summary.lines, summary.duplicates), (3, 0));
        // A line received twice is one duplicate.
        h.feed("10.0.0.1:5", &second);
        assert_eq!(h.rx.summaries()[0].duplicates, 1);
    }

    /// The same datagrams at the same times give the same events, exit ones included
    /// (each reassembler's maps hash with a seed of their own, so any hash order that
    /// reached the events would show here).
    #[test]
    fn the_same_inputs_and_times_give_the_same_events() {
        let run = || {
            let mut h = Harness::new();
            let mut out = Vec::new();
            for i in 0..40u64 {
                let mut f =
                    Framer::new(wire::session_id(0, 100 + i as u32), &format!("s{i}"), 1400);
                let from = format!("10.0.{}.{}:5", i % 3, i);
                for d in datagrams(&mut f, |f, o| f.hello(1, 0, "stdin", 0, o)) {
                    h.feed(&from, &d);
                }
                // Line 2 only: every session has a hole at line 1 when it all stops.
                let _ = datagrams(&mut f, |f, o| {
                    f.push_line(0, b"lost", 0, o);
                });
                for d in datagrams(&mut f, |f, o| {
                    f.push_line(0, format!("line of {i}").as_bytes(), 0, o);
                }) {
                    h.feed(&from, &d);
                }
                h.feed(
                    &format!("10.9.0.{i}:6665"),
                    format!("partial text of {i}").as_bytes(),
                );
                h.now_us += 1;
            }
            out.extend(h.events());
            let at = h.at();
            h.rx.flush(at, h.now_us);
            out.extend(h.events());
            format!("{out:?}")
        };
        let first = run();
        // 40 gaps, 40 ncu lines and 40 partial text lines flushed at exit.
        assert_eq!(
            (
                first.matches("Gap {").count(),
                first.matches("Line {").count()
            ),
            (40, 80)
        );
        for _ in 0..5 {
            assert!(run() == first, "the events differ from run to run");
        }
    }

    #[test]
    fn restarted_sender_silences_the_old_session_before_the_new_start() {
        let mut h = Harness::new();
        let mut old = Framer::new(wire::session_id(0, 1), "web", 1400);
        for d in datagrams(&mut old, |f, o| {
            f.hello(1, 0, "stdin", 0, o);
            f.push_line(0, b"last words", 0, o);
        }) {
            h.feed("10.0.0.1:1000", &d);
        }
        let mut new = Framer::new(wire::session_id(0, 2), "web", 1400);
        for d in datagrams(&mut new, |f, o| f.hello(2, 0, "stdin", 0, o)) {
            h.feed("10.0.0.1:1001", &d);
        }
        assert_eq!(
            kinds(&h.events()),
            ["start 1", "line 1", "silent 1 restarted", "start 1"]
        );
        // The old one does not go silent a second time when dead_after passes.
        let later = kinds(&h.advance(Duration::from_secs(6)));
        assert_eq!(
            later,
            ["silent 0 dead_after"],
            "only the new session goes silent"
        );
    }

    #[test]
    fn a_sender_named_like_its_address_is_still_matched_on_restart() {
        let mut h = Harness::new();
        for id in [1, 2] {
            let mut f = Framer::new(wire::session_id(0, id), "10.0.0.7", 1400);
            for d in datagrams(&mut f, |f, o| f.hello(1, 0, "stdin", 0, o)) {
                h.feed("10.0.0.7:1000", &d);
            }
        }
        assert_eq!(
            kinds(&h.events()),
            ["start 1", "silent 0 restarted", "start 1"]
        );
    }

    #[test]
    fn sealed_without_a_key_is_reported_once_per_session() {
        let mut h = Harness::new();
        let mut f = Framer::new(wire::session_id(0, 9), "s", 1400);
        let mut ds = datagrams(&mut f, |f, o| {
            for _ in 0..100 {
                f.push_line(0, b"secret", 0, o);
                f.flush(o);
            }
        });
        for d in &mut ds {
            d[5] |= wire::FLAG_SEALED;
            wire::seal_checksum(d);
            h.feed("10.0.0.8:1", d);
        }
        assert_eq!(kinds(&h.events()), ["corrupt sealed_no_key"]);
        assert_eq!(h.rx.stats().corrupt["sealed_no_key"], 100);
    }

    #[test]
    fn with_a_key_only_authentic_sealed_datagrams_are_taken() {
        let key = [7u8; 32];
        let mut h = Harness::new();
        h.now_us = 1_700_000_000_000_000;
        h.rx.set_keys(Keys::from_bytes(key, &[]), ReplayConfig::default());
        let now_us = h.now_us;
        let mut f = Framer::new(wire::session_id(1_700_000_000, 5), "s", 1400);
        let plain = datagrams(&mut f, |f, o| {
            f.hello(1, now_us, "stdin", now_us, o);
            f.push_line(0, b"one", now_us, o);
            f.flush(o);
            f.push_line(0, b"two", now_us, o);
        });
        let sealed: Vec<Vec<u8>> = plain
            .iter()
            .map(|d| {
                let mut out = Vec::new();
                seal::seal(&Keys::from_bytes(key, &[]), d, &mut out);
                out
            })
            .collect();
        let wrong: Vec<u8> = {
            let mut out = Vec::new();
            seal::seal(&Keys::from_bytes([8; 32], &[]), &plain[2], &mut out);
            out
        };
        let mut flipped = sealed[2].clone();
        flipped[wire::HEADER_LEN + 1] ^= 1;
        wire::seal_checksum(&mut flipped);
        h.feed("10.0.0.9:1", &sealed[0]);
        h.feed("10.0.0.9:1", &sealed[1]);
        h.feed("10.0.0.9:1", &sealed[1]); // a copy
        h.feed("10.0.0.9:1", &plain[2]); // unsealed
        h.feed("10.0.0.9:1", &wrong); // another key
        h.feed("10.0.0.9:1", &flipped); // altered, CRC fixed up
        h.feed("10.0.0.9:1", b"6,1,2,-;forged kernel line\n");
        h.feed("10.0.0.9:1", &sealed[2]);
        assert_eq!(
            kinds(&h.events()),
            [
                "start 1",
                "line 1",
                "corrupt auth",
                "corrupt auth",
                "corrupt auth",
                "corrupt auth",
                "line 2"
            ]
        );
        assert_eq!(h.rx.summaries()[0].duplicates, 1);
    }

    #[test]
    fn a_session_first_seen_by_heartbeat_starts_with_its_name() {
        let mut h = Harness::new();
        let mut f = Framer::new(wire::session_id(0, 11), "web", 1400);
        let ds = datagrams(&mut f, |f, o| f.heartbeat(0, o));
        h.feed("10.0.0.12:1", &ds[0]);
        match h.events().first() {
            Some(Event::Start { session, .. }) => assert_eq!(session.name, "web"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resumed_after_silence_and_tail_loss_from_heartbeat() {
        let mut h = Harness::new();
        let mut f = Framer::new(wire::session_id(0, 3), "db", 1400);
        let ds = datagrams(&mut f, |f, o| {
            f.hello(1, 0, "stdin", 0, o);
            f.push_line(0, b"one", 0, o);
            f.flush(o);
            f.push_line(0, b"two", 0, o); // lost below
            f.flush(o);
            f.heartbeat(0, o);
        });
        h.feed("10.0.0.2:1", &ds[0]);
        h.feed("10.0.0.2:1", &ds[1]);
        h.feed("10.0.0.2:1", &ds[3]);
        let events = h.advance(Duration::from_secs(6));
        assert_eq!(
            kinds(&events),
            ["start 1", "line 1", "gap 2-2 lost", "silent 1 dead_after"]
        );
        h.feed("10.0.0.2:1", &ds[3]);
        assert_eq!(kinds(&h.events()), ["resumed 2"]);
        h.feed("10.0.0.2:1", &ds[2]);
        assert_eq!(kinds(&h.events()), ["line 2 late"]);
    }

    #[test]
    fn hostile_numbers_cost_nothing() {
        let mut h = Harness::new();
        let id = wire::session_id(0, 4);
        let mut f = Framer::new(id, "x", 1400);
        let hello = datagrams(&mut f, |f, o| f.hello(1, 0, "stdin", 0, o));
        h.feed("10.0.0.3:1", &hello[0]);
        // A line numbered near 2^64: the lines in between are one gap, not a loop.
        let mut payload = Vec::new();
        wire::push_line_record(&mut payload, 0, b"far");
        let header = Header {
            session: id,
            seq: u64::MAX - 1,
            sent_at_us: 0,
            counter: 5,
        };
        let mut bytes = Vec::new();
        wire::write_header(&mut bytes, wire::Kind::Data, 0, 0, &header);
        bytes.extend_from_slice(&payload);
        wire::finish_datagram(&mut bytes);
        h.feed("10.0.0.3:1", &bytes);
        let events = h.events();
        assert_eq!(
            kinds(&events),
            [
                "start 1",
                &format!("gap 1-{} lost", u64::MAX - 2),
                &format!("line {}", u64::MAX - 1)
            ]
        );
        // A fragment claiming a 4 GiB line is refused without allocating it.
        let header = Header {
            session: id,
            seq: 3,
            sent_at_us: 0,
            counter: 6,
        };
        let mut bytes = Vec::new();
        wire::write_header(
            &mut bytes,
            wire::Kind::Data,
            wire::FLAG_FRAGMENT,
            0,
            &header,
        );
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        bytes.push(0);
        bytes.extend_from_slice(b"abc");
        wire::finish_datagram(&mut bytes);
        h.feed("10.0.0.3:1", &bytes);
        assert_eq!(kinds(&h.events()), ["corrupt line_too_long"]);
        assert_eq!(h.rx.held_bytes(), 0);
    }

    #[test]
    fn many_session_ids_are_bounded() {
        let base = Instant::now();
        let config = Config {
            max_sessions: 100,
            ..Config::default()
        };
        let mut rx = Reassembler::new(config, base);
        for i in 0..10_000u32 {
            let mut f = Framer::new(wire::session_id(0, i), "flood", 1400);
            let mut o = Outbox::default();
            f.push_line(0, b"x", 0, &mut o);
            f.flush(&mut o);
            let from: SocketAddr = "10.9.9.9:9".parse().unwrap();
            rx.handle_datagram(base, 0, from, o.datagrams().next().unwrap());
            while rx.poll_event().is_some() {}
        }
        assert!(rx.session_count() <= 100);
        assert_eq!(rx.stats().retired, 10_000 - 100);
    }

    #[test]
    fn garbage_is_counted_and_rate_limited() {
        let mut h = Harness::new();
        for i in 0..1000u32 {
            let mut bytes = vec![0u8, 1, 2, 3];
            bytes.extend_from_slice(&i.to_be_bytes());
            h.feed("10.0.0.4:1", &bytes);
        }
        h.feed("10.0.0.4:1", b"");
        h.feed("10.0.0.4:1", &[0xff, 0xfe, b'a']);
        let events = h.events();
        assert_eq!(h.rx.stats().corrupt_total(), 1002);
        assert!(
            events.len() <= 20,
            "a flood of garbage does not flood the events"
        );
        assert!(events.iter().all(|e| matches!(e, Event::Corrupt { .. })));
    }

    #[test]
    fn text_lines_join_across_datagrams() {
        let mut h = Harness::new();
        h.feed("10.0.0.5:514", b"hello wo");
        h.feed("10.0.0.5:514", b"rld\nsecond\nthi");
        let events = h.advance(Duration::from_secs(6));
        let lines: Vec<(u64, Vec<u8>, bool)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Line {
                    seq, text, partial, ..
                } => Some((*seq, text.clone(), *partial)),
                _ => None,
            })
            .collect();
        assert_eq!(
            lines,
            [
                (1, b"hello world".to_vec(), false),
                (2, b"second".to_vec(), false),
                (3, b"thi".to_vec(), true)
            ]
        );
        assert!(matches!(
            events.last(),
            Some(Event::Silent { last_seq: 3, .. })
        ));
    }

    fn fixture(name: &str) -> Vec<Vec<u8>> {
        let path = format!(
            "{}/tests/fixtures/netconsole/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let hex = l.split_whitespace().last().unwrap();
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn plain_console_bytes_from_a_known_text_source_are_kept() {
        let mut h = Harness::new();
        h.feed("10.0.2.15:6665", b"[    1.0] booting\n");
        h.feed(
            "10.0.2.15:6665",
            b"[    1.100000] ncu-escape: tab\there bell \x07 esc \x1b[0m latin1 \xe9 end\n",
        );
        h.feed("10.0.2.16:6665", b"\x07\x1b first datagram of a source\n");
        let events = h.advance(Duration::from_secs(6));
        let lines = events
            .iter()
            .filter(|e| matches!(e, Event::Line { .. }))
            .count();
        assert_eq!(lines, 2, "{:?}", kinds(&events));
        assert_eq!(h.rx.stats().corrupt_total(), 1);
    }

    #[test]
    fn kernel_reboot_starts_a_new_session() {
        let mut h = Harness::new();
        for d in fixture("extended-reboot.hex") {
            h.feed("10.0.2.15:6665", &d);
        }
        let events = h.advance(Duration::from_secs(6));
        let k = kinds(&events);
        let starts: Vec<&String> = k.iter().filter(|e| e.starts_with("start")).collect();
        assert_eq!(starts, ["start 0", "start 0"]);
        assert!(k.iter().any(|e| e.ends_with("restarted")), "{k:?}");
        match events.last() {
            Some(Event::Silent {
                last_text: Some(text),
                reason: SilentReason::DeadAfter,
                ..
            }) => {
                assert!(
                    text.starts_with(b"Kernel Offset:"),
                    "{}",
                    String::from_utf8_lossy(text)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kernel_extended_capture_delivers_markers_in_order_and_names_the_panic() {
        for name in ["extended.hex", "extended-ignore-loglevel.hex"] {
            let mut h = Harness::new();
            for d in fixture(name) {
                h.feed("10.0.2.15:6665", &d);
            }
            let events = h.advance(Duration::from_secs(6));
            let mut markers = Vec::new();
            let mut long_line = false;
            for e in &events {
                if let Event::Line {
                    text,
                    kernel: Some(k),
                    ..
                } = e
                {
                    assert!(k.level <= 7);
                    if let Some(pos) = text.windows(10).position(|w| w == b"ncu-marker") {
                        markers.push(text[pos..].to_vec());
                    }
                    long_line |= text.len() > 900;
                }
            }
            assert!(!markers.is_empty(), "{name}: markers");
            let mut sorted = markers.clone();
            sorted.sort();
            assert_eq!(markers, sorted, "{name}: markers in order");
            assert!(long_line, "{name}: the fragmented long record was rebuilt");
            assert!(
                matches!(events.last(), Some(Event::Silent { .. })),
                "{name}"
            );
            let corrupt = events
                .iter()
                .filter(|e| matches!(e, Event::Corrupt { .. }))
                .count();
            assert_eq!(corrupt, 0, "{name}");
        }
    }
}
