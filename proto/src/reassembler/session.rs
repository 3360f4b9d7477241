//! One session's state: what it costs, its summary, and its timers (each
//! deadline computed in one place, [`Session::timer`]).

use super::*;

/// Which session a datagram is for: an ncu session by its id, any other by its
/// source address and kind. 24 bytes (a `SocketAddr` alone is 32); worked out
/// from the session when needed ([`Session::key`]), kept only by the budget for
/// the sessions it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct SessionKey {
    /// The ncu session id (its first 8 bytes), or the source's IPv6 address (an
    /// IPv4 one mapped).
    bytes: [u8; 16],
    /// The IPv6 scope (a link-local address is one per interface).
    scope: u32,
    port: u16,
    /// 0 for ncu, else 1 + the source kind.
    kind: u8,
}

impl SessionKey {
    /// The key of ncu session `id`.
    pub(super) fn ncu(id: u64) -> SessionKey {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&id.to_be_bytes());
        SessionKey {
            bytes,
            scope: 0,
            port: 0,
            kind: 0,
        }
    }

    /// The key of the `kind` session from `addr`.
    pub(super) fn source(addr: SocketAddr, kind: SourceKind) -> SessionKey {
        let (ip, scope, _) = endpoint(addr);
        SessionKey::of_endpoint(ip, scope, addr.port(), kind)
    }

    /// The key of the `kind` session from an address as [`endpoint`] gives it.
    fn of_endpoint(ip: [u8; 16], scope: u32, port: u16, kind: SourceKind) -> SessionKey {
        SessionKey {
            bytes: ip,
            scope,
            port,
            kind: 1 + kind as u8,
        }
    }

    /// The ncu session id, for an ncu session's key.
    pub(super) fn ncu_id(&self) -> Option<u64> {
        (self.kind == 0).then(|| {
            let mut id = [0; 8];
            id.copy_from_slice(&self.bytes[..8]);
            u64::from_be_bytes(id)
        })
    }
}

/// Who a session is, as the session keeps it: 40 bytes where a [`SessionInfo`]
/// takes 64 (the address without its IPv6 flow label, which nothing reads; a name,
/// which a fleet's kernels do not give, behind one pointer). Events carry
/// [`Who::info`].
#[derive(Debug)]
pub(super) struct Who {
    pub(super) id: u64,
    /// The name the sender gave, if it gave one.
    name: Option<Box<Arc<str>>>,
    /// The first datagram's source address: IPv6, or IPv4 mapped.
    ip: [u8; 16],
    scope: u32,
    port: u16,
    /// Whether that address was an IPv4 one (a mapped IPv6 address stays one:
    /// NACKs go back to it through the same socket).
    v4: bool,
    pub(super) kind: SourceKind,
}

/// An address as keys and [`Who`] keep it: the IPv6 address (an IPv4 one
/// mapped), the scope (a link-local address is one per interface), and whether it
/// was IPv4.
fn endpoint(addr: SocketAddr) -> ([u8; 16], u32, bool) {
    match addr {
        SocketAddr::V4(a) => (a.ip().to_ipv6_mapped().octets(), 0, true),
        SocketAddr::V6(a) => (a.ip().octets(), a.scope_id(), false),
    }
}

impl Who {
    pub(super) fn new(id: u64, addr: SocketAddr, kind: SourceKind) -> Who {
        let (ip, scope, v4) = endpoint(addr);
        Who {
            id,
            name: None,
            ip,
            scope,
            port: addr.port(),
            v4,
            kind,
        }
    }

    /// The first datagram's source address.
    pub(super) fn addr(&self) -> SocketAddr {
        let v6 = std::net::Ipv6Addr::from(self.ip);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.v4 => SocketAddr::new(IpAddr::V4(v4), self.port),
            _ => SocketAddr::V6(std::net::SocketAddrV6::new(v6, self.port, 0, self.scope)),
        }
    }

    pub(super) fn ip(&self) -> IpAddr {
        self.addr().ip()
    }

    /// The name the sender gave, if it gave one.
    pub(super) fn name(&self) -> Option<&Arc<str>> {
        self.name.as_deref()
    }

    pub(super) fn set_name(&mut self, name: &str) {
        self.name = Some(Box::new(Arc::from(name)));
    }

    /// As events carry it.
    pub(super) fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id,
            given_name: self.name().cloned(),
            addr: self.addr(),
            kind: self.kind,
        }
    }

    /// Its key in the table.
    pub(super) fn key(&self) -> SessionKey {
        match self.kind {
            SourceKind::Ncu => SessionKey::ncu(self.id),
            kind => SessionKey::of_endpoint(self.ip, self.scope, self.port, kind),
        }
    }
}

/// What turns a netconsole or text session's datagrams into lines, while it
/// needs one: a text session always (text is joined across datagrams, and the
/// receiver numbers the lines), a kernel session only while fragments are being
/// rebuilt (a record in one piece needs none, and a fleet's idle hosts hold
/// none). ncu datagrams carry their own numbers and need none.
#[derive(Debug)]
pub(super) enum Assembler {
    Kernel(ExtendedAssembler),
    Text(PlainJoiner),
}

impl Assembler {
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Assembler::Kernel(a) => a.poll_timeout(),
            Assembler::Text(j) => j.poll_timeout(),
        }
    }

    /// Gives up what is due; whether anything came out.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> bool {
        match self {
            Assembler::Kernel(a) => a.handle_timeout(now) > 0,
            Assembler::Text(j) => j.handle_timeout(now),
        }
    }

    /// Gives up everything held; whether anything came out.
    pub(super) fn flush(&mut self) -> bool {
        match self {
            Assembler::Kernel(a) => a.flush() > 0,
            Assembler::Text(j) => j.flush(),
        }
    }

    pub(super) fn held_bytes(&self) -> usize {
        match self {
            Assembler::Kernel(a) => a.held_bytes(),
            Assembler::Text(j) => j.held_bytes(),
        }
    }
}

/// A line waiting for the lines before it.
#[derive(Debug)]
pub(super) struct PendingLine {
    pub(super) text: Vec<u8>,
    pub(super) flags: u8,
    pub(super) sent_at_us: Option<u64>,
    pub(super) received_at_us: u64,
    pub(super) arrived: Instant,
    pub(super) kernel: Option<Box<KernelMeta>>,
    /// A `--kmsg` record: what was skipped right before it.
    pub(super) skipped: Option<Box<Skipped>>,
}

impl PendingLine {
    /// What holding it costs, counted against the byte bounds: its text plus the
    /// bookkeeping (allocation, map node), so that a flood of empty lines is bounded
    /// too.
    pub(super) fn held_cost(&self) -> usize {
        self.text.len() + PENDING_LINE_OVERHEAD
    }
}

/// Bytes counted for each held line besides its text.
pub(super) const PENDING_LINE_OVERHEAD: usize = 64;

/// A long line being rebuilt from its fragments.
#[derive(Debug)]
pub(super) struct FragmentedLine {
    /// The bytes received so far (never a buffer of the declared length).
    pub(super) bytes: ByteAssembler,
    pub(super) total: u32,
    pub(super) flags: u8,
    pub(super) arrived: Instant,
}

/// A line as the session's ordering logic takes it.
pub(super) struct IncomingLine {
    pub(super) seq: u64,
    pub(super) text: Vec<u8>,
    pub(super) flags: u8,
    pub(super) sent_at_us: Option<u64>,
    pub(super) kernel: Option<Box<KernelMeta>>,
    /// A `--kmsg` record: what was skipped right before it.
    pub(super) skipped: Option<Box<Skipped>>,
    /// A later line of the same datagram follows at once: it, not this one, may
    /// become the session's quoted last line (saves copying every line twice).
    pub(super) followed: bool,
}

/// One session's state. What a steady session uses on every line is here; the
/// rest ([`Extra`]) is boxed on first use and given back once it holds nothing
/// again, so that an idle host of a fleet costs little.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) who: Who,
    /// The first sequence number accounted for, once `started` (see
    /// [`Session::first_seq`]).
    start_seq: u64,
    /// Whether the first sequence number is known (not while joining).
    started: bool,
    /// Every line below `next` was delivered or reported lost.
    pub(super) next: u64,
    /// Highest sequence number of a complete line received.
    pub(super) highest: u64,
    /// What the budget is charged for this session's own state
    /// ([`Session::state_cost`], as of the last [`Reassembler::recharge`]).
    pub(super) state_bytes: u32,
    /// When its last datagram arrived.
    pub(super) last_rx: Tick,
    pub(super) first_rx_wall: u64,
    pub(super) last_rx_wall: u64,
    /// The quoted last line: its number and text (see [`Session::last_line`]).
    last_line: Option<(u64, Vec<u8>)>,
    /// When its sender sent it, if `last_sent_known` (ncu lines tell; kernel
    /// records and text do not). Apart from `last_line`, so that the flag packs
    /// with the other small fields where an `Option` took 8 more bytes.
    last_sent_at_us: u64,
    last_sent_known: bool,
    pub(super) lines: u64,
    /// The deadline this session has in the timers, if any.
    pub(super) scheduled: Tick,
    /// Its place in the table (see [`Sessions`](super::slots::Sessions)).
    pub(super) slot: Slot,
    /// The first session of its source address in the table (the one the
    /// address had before any other): not listed in the budget, its state charged
    /// to the total only, and never the one its own source gives up.
    pub(super) first: bool,
    /// See [`Assembler`].
    pub(super) assembler: Option<Box<Assembler>>,
    /// Kernel sessions: the boot clock of the newest record (for reboot detection).
    pub(super) last_kernel_ts: u64,
    pub(super) fate: Fate,
    pub(super) gap_kind: GapKind,
    pub(super) joined: bool,
    pub(super) end_reported: bool,
    pub(super) extra: Option<Box<Extra>>,
}

/// The part of a session's state that a session delivering in order, without
/// recovery, `--kmsg` or a companion, does not use: held work, what the sender
/// said of its last line and end, recovery, the kernel's numbers of `--kmsg`, the
/// joined netconsole, the rarer counters. See [`Session::extra`].
#[derive(Debug)]
pub(super) struct Extra {
    pub(super) joining_until: Option<Instant>,
    pub(super) pending: BTreeMap<u64, PendingLine>,
    pub(super) fragments: BTreeMap<u64, FragmentedLine>,
    /// Bytes held in `pending` and `fragments` (see [`Reassembler::hold`]).
    pub(super) held_bytes: usize,
    /// Since when `held_bytes` is above 0 (its place among the budget's holders).
    pub(super) held_since: Option<Instant>,
    /// The sender said lines up to this exist (heartbeat, END); since when.
    pub(super) known_last: u64,
    pub(super) known_since: Option<Instant>,
    /// Lines reported lost (and not delivered late since). Here, beside the
    /// ranges: a session that lost lines keeps this box for them anyway.
    pub(super) lost: u64,
    /// Ranges reported lost (start -> end), for telling late lines from duplicates.
    pub(super) lost_ranges: RangeSet,
    pub(super) end: Option<(u64, EndReason)>,
    pub(super) kernel_seq_skipped: u64,
    pub(super) kernel_overwritten: u64,
    pub(super) kernel_overwritten_ranges: Vec<(u64, u64)>,
    pub(super) kernel_filtered: u64,
    pub(super) duplicates: u64,
    pub(super) reordered: u64,
    pub(super) late: u64,
    /// The sender offers recovery (FLAG_RECOVERY seen).
    pub(super) recovery: bool,
    /// When the last NACK went out.
    pub(super) last_nack: Option<Instant>,
    /// Highest line any NACK asked for.
    pub(super) nack_horizon: u64,
    /// The sender said lines up to this are gone from its ring.
    pub(super) gone_upto: u64,
    /// Lines that filled a hole after a NACK asked for them.
    pub(super) recovered: u64,
    /// Where the newest ncu datagram came from (NACKs go there), when known.
    pub(super) last_addr: Option<SocketAddr>,
    /// `--kmsg` sessions: the kernel number after the last record delivered (by
    /// either path).
    pub(super) kernel_next: Option<u64>,
    /// The last record ncu-send itself delivered: kernel number, sender clock.
    pub(super) last_kmsg: Option<(u64, Option<u64>)>,
    /// `--netconsole`: the address the kernel's netconsole sends from, as claimed.
    pub(super) companion_addr: Option<SocketAddr>,
    /// Its records: fragments being rebuilt, and records held (by kernel number)
    /// while ncu-send may still deliver them itself.
    pub(super) companion: Option<Box<Companion>>,
}

impl Extra {
    /// Nothing in use: what a session without its box reads.
    const EMPTY: Extra = Extra {
        joining_until: None,
        pending: BTreeMap::new(),
        fragments: BTreeMap::new(),
        held_bytes: 0,
        held_since: None,
        known_last: 0,
        known_since: None,
        lost: 0,
        lost_ranges: RangeSet::new(),
        end: None,
        kernel_seq_skipped: 0,
        kernel_overwritten: 0,
        kernel_overwritten_ranges: Vec::new(),
        kernel_filtered: 0,
        duplicates: 0,
        reordered: 0,
        late: 0,
        recovery: false,
        last_nack: None,
        nack_horizon: 0,
        gone_upto: 0,
        recovered: 0,
        last_addr: None,
        kernel_next: None,
        last_kmsg: None,
        companion_addr: None,
        companion: None,
    };

    /// Whether it holds nothing [`Extra::EMPTY`] does not.
    fn is_empty(&self) -> bool {
        // Every field named (no `..`): a new one does not compile until it is
        // looked at here, so that a box holding it is never given back.
        let Extra {
            joining_until,
            pending,
            fragments,
            held_bytes,
            held_since,
            known_last,
            known_since,
            lost,
            lost_ranges,
            end,
            kernel_seq_skipped,
            kernel_overwritten,
            kernel_overwritten_ranges,
            kernel_filtered,
            duplicates,
            reordered,
            late,
            recovery,
            last_nack,
            nack_horizon,
            gone_upto,
            recovered,
            last_addr,
            kernel_next,
            last_kmsg,
            companion_addr,
            companion,
        } = self;
        joining_until.is_none()
            && pending.is_empty()
            && fragments.is_empty()
            && *held_bytes == 0
            && held_since.is_none()
            && *known_last == 0
            && known_since.is_none()
            && *lost == 0
            && lost_ranges.is_empty()
            && end.is_none()
            && *kernel_seq_skipped == 0
            && *kernel_overwritten == 0
            && kernel_overwritten_ranges.is_empty()
            && *kernel_filtered == 0
            && *duplicates == 0
            && *reordered == 0
            && *late == 0
            && !*recovery
            && last_nack.is_none()
            && *nack_horizon == 0
            && *gone_upto == 0
            && *recovered == 0
            && last_addr.is_none()
            && kernel_next.is_none()
            && last_kmsg.is_none()
            && companion_addr.is_none()
            && companion.is_none()
    }
}

/// What a session without its [`Extra`] reads.
static NO_EXTRA: Extra = Extra::EMPTY;

/// The kernel's netconsole joined to an ncu session.
#[derive(Debug)]
pub(super) struct Companion {
    pub(super) assembler: ExtendedAssembler,
    pub(super) held: BTreeMap<u64, PendingLine>,
    /// Records that came both ways (shown once).
    pub(super) both: u64,
    /// Records only the netconsole delivered, and kernel numbers missing on both.
    pub(super) tail: Option<NetconsoleTail>,
    /// When the last record arrived that the netconsole delivered after the session
    /// went silent, while no `silent` has told it yet: the kernel went on alone
    /// (a soft lockup or a hung task panics seconds or minutes after user space
    /// stopped). Once the netconsole is quiet for `dead_after` too, `silent` comes
    /// again, with the whole story.
    pub(super) untold: Option<Instant>,
}

impl Session {
    pub(super) fn new(who: Who, now: Tick, wall_us: u64) -> Session {
        Session {
            who,
            start_seq: 0,
            started: false,
            next: 0,
            highest: 0,
            state_bytes: 0,
            last_rx: now,
            first_rx_wall: wall_us,
            last_rx_wall: wall_us,
            last_line: None,
            last_sent_at_us: 0,
            last_sent_known: false,
            lines: 0,
            scheduled: Tick::NONE,
            slot: 0,
            first: false,
            assembler: None,
            last_kernel_ts: 0,
            fate: Fate::Running,
            gap_kind: GapKind::Lost,
            joined: false,
            end_reported: false,
            extra: None,
        }
    }

    /// The first sequence number accounted for; `None` while joining (not known
    /// yet).
    pub(super) fn first_seq(&self) -> Option<u64> {
        self.started.then_some(self.start_seq)
    }

    /// The first sequence number is known: `seq`.
    pub(super) fn set_first_seq(&mut self, seq: u64) {
        self.start_seq = seq;
        self.started = true;
    }

    /// Its key in the table.
    pub(super) fn key(&self) -> SessionKey {
        self.who.key()
    }

    /// The quoted last line: number, text (at most [`LAST_TEXT_MAX`] bytes), and
    /// when its sender sent it, if it said.
    pub(super) fn last_line(&self) -> Option<(u64, &[u8], Option<u64>)> {
        let (seq, text) = self.last_line.as_ref()?;
        let sent = self.last_sent_known.then_some(self.last_sent_at_us);
        Some((*seq, text, sent))
    }

    /// Quotes line `seq` as the last line (its first [`LAST_TEXT_MAX`] bytes),
    /// in the buffer the previous one used.
    pub(super) fn set_last_line(&mut self, seq: u64, text: &[u8], sent_at_us: Option<u64>) {
        let text = &text[..text.len().min(LAST_TEXT_MAX)];
        match &mut self.last_line {
            Some((s, t)) => {
                *s = seq;
                t.clear();
                t.extend_from_slice(text);
            }
            None => self.last_line = Some((seq, text.to_vec())),
        }
        self.last_sent_at_us = sent_at_us.unwrap_or(0);
        self.last_sent_known = sent_at_us.is_some();
    }

    /// The part of the state most sessions do not use (read as empty when not in
    /// use).
    pub(super) fn extra(&self) -> &Extra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// The same, to change: boxed on first use.
    pub(super) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(|| Box::new(Extra::EMPTY))
    }

    /// Gives the [`Extra`] box back when it holds nothing any more (after a
    /// datagram or a timer).
    pub(super) fn compact(&mut self) {
        if let Some(Assembler::Kernel(a)) = self.assembler.as_deref() {
            if a.is_idle() {
                self.assembler = None;
            }
        }
        if self.extra.as_deref().is_some_and(Extra::is_empty) {
            self.extra = None;
        }
    }

    /// What this session's own state costs the budget besides the work it holds:
    /// its fixed size, its name, its quoted last line, what its netconsole or text
    /// assembler holds, and the lost ranges it remembers.
    pub(super) fn state_cost(&self) -> usize {
        let source = self.assembler.as_ref().map_or(0, |a| a.held_bytes());
        SESSION_STATE_BYTES
            + self.who.name().map_or(0, |n| n.len())
            + self.last_line.as_ref().map_or(0, |(_, t)| t.capacity())
            + source
            + self.extra().lost_ranges.len() * RANGE_ENTRY_BYTES
    }

    pub(super) fn summary(&self) -> SessionSummary {
        SessionSummary {
            session: self.who.info(),
            first_seq: self.first_seq().unwrap_or(0),
            joined: self.joined,
            lines: self.lines,
            lost: self.extra().lost,
            kernel_seq_skipped: self.extra().kernel_seq_skipped,
            kernel_overwritten: self.extra().kernel_overwritten,
            kernel_overwritten_ranges: self.extra().kernel_overwritten_ranges.clone(),
            kernel_filtered: self.extra().kernel_filtered,
            duplicates: self.extra().duplicates,
            reordered: self.extra().reordered,
            late: self.extra().late,
            recovered: self.extra().recovered,
            recovery: self.extra().recovery,
            fate: self.fate,
            end_reason: self.extra().end.map(|(_, reason)| reason),
            first_received_at_us: self.first_rx_wall,
            last_received_at_us: self.last_rx_wall,
            last_line: self
                .last_line()
                .map(|(seq, text, sent)| (seq, text.to_vec(), sent)),
            netconsole: self.extra().companion.as_ref().and_then(|c| c.tail.clone()),
        }
    }

    /// How long a hole is waited for before it is reported: longer when the sender
    /// resends on request.
    pub(super) fn wait(&self, config: &Config) -> Duration {
        if self.extra().recovery && config.nack {
            config.reorder_window.max(config.nack_window)
        } else {
            config.reorder_window
        }
    }

    /// When the next NACK is due, if this session has holes and offers recovery.
    pub(super) fn nack_due(&self, config: &Config) -> Option<Instant> {
        if !self.extra().recovery || !config.nack || self.fate != Fate::Running {
            return None;
        }
        let since = self.hole_since()?;
        let first = since + config.nack_delay;
        Some(match self.extra().last_nack {
            Some(last) => first.max(last + config.nack_interval),
            None => first,
        })
    }

    /// The missing lines from `next` up to the highest known, as `(first, count)`
    /// ranges, oldest first (at most [`NACK_RANGES_PER_ROUND`]).
    pub(super) fn missing_ranges(&self) -> Vec<(u64, u32)> {
        let horizon = [
            self.extra().pending.last_key_value().map(|(&k, _)| k),
            self.extra().fragments.last_key_value().map(|(&k, _)| k),
            Some(self.extra().known_last),
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
        for &seq in self.extra().pending.keys() {
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
    pub(super) fn hole_since(&self) -> Option<Instant> {
        self.first_seq()?;
        let mut since: Option<Instant> = None;
        let mut take = |t: Instant| since = Some(since.map_or(t, |s| s.min(t)));
        if let Some((_, line)) = self.extra().pending.first_key_value() {
            take(line.arrived);
        }
        for (_, frag) in self.extra().fragments.range(self.next..) {
            take(frag.arrived);
        }
        if self.extra().known_last >= self.next {
            if let Some(t) = self.extra().known_since {
                take(t);
            }
        }
        since
    }

    /// When `timer` is due, if it is set: the one place a deadline is computed
    /// (`started`: when the reassembler started, which its ticks count from).
    pub(super) fn timer(&self, timer: Timer, config: &Config, started: Instant) -> Option<Instant> {
        match timer {
            Timer::Source => self.assembler.as_ref().and_then(|a| a.poll_timeout()),
            Timer::Join => self.extra().joining_until,
            Timer::Hole => self.hole_since().map(|since| since + self.wait(config)),
            Timer::Nack => self.nack_due(config),
            // Fragments of a line already reported lost wait one more window.
            Timer::StaleFragments => self
                .extra()
                .fragments
                .range(..self.next)
                .map(|(_, f)| f.arrived)
                .min()
                .map(|arrived| arrived + 2 * config.reorder_window),
            Timer::EndWait => {
                let waiting = self.extra().end.is_some() && !self.end_reported;
                waiting
                    .then_some(self.extra().known_since)
                    .flatten()
                    .map(|t| t + self.wait(config))
            }
            Timer::Dead => match self.fate {
                Fate::Running if self.extra().end.is_none() => {
                    Some(self.last_rx.at(started) + config.dead_after)
                }
                Fate::Silent => self
                    .extra()
                    .companion
                    .as_ref()
                    .and_then(|c| c.untold)
                    .map(|t| t + config.dead_after),
                _ => None,
            },
            Timer::Forget => self
                .end_reported
                .then(|| self.last_rx.at(started) + config.dead_after),
        }
    }

    /// The earliest of the session's timers.
    pub(super) fn deadline(&self, config: &Config, started: Instant) -> Option<Instant> {
        Timer::VALUES
            .iter()
            .filter_map(|&t| self.timer(t, config, started))
            .min()
    }
}

/// A session's timers: [`Session::timer`] computes each one's deadline,
/// [`Reassembler::session_timeout`] acts on each that is due, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
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
    pub(super) const VALUES: [Timer; 8] = [
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
