//! The sending end as a state machine without IO, in the shape of quinn's
//! `Connection`: input goes in through `handle_*`, output comes out through
//! `poll_*`, and time is an argument.
//!
//! It owns everything `ncu-send` decides: cutting input into lines
//! ([`LineAssembler`]), numbering and framing them ([`Framer`]), sealing, the
//! resend ring and the answers to NACKs with their rate limits, heartbeats,
//! rollover to a new session before a sealing nonce could repeat, and END with its
//! linger. The binary reads its inputs and sockets, and sends what
//! [`Sender::poll_transmit`] hands it.
//!
//! The call order, once per turn of the caller's loop:
//! 1. [`Sender::handle_input`] with every read (it takes the wall clock the bytes
//!    were read at; the lines are framed at once), then [`Sender::poll_transmit`]
//!    until `None` and send each batch: every line leaves before the next read;
//! 2. read the monotonic clock once, then [`Sender::handle_timeout`] with it (it
//!    dates what was read and sent this turn, and does what is due: a partial line
//!    idle for `flush_after`, a heartbeat, END's repeats), then transmit again;
//! 3. every datagram from a destination's socket to [`Sender::handle_datagram`]
//!    (NACKs), then transmit again;
//! 4. [`Sender::poll_event`] until `None`; wait until [`Sender::poll_timeout`].
//!
//! [`Sender::close`] sends END; with recovery the sender then lingers (answers
//! NACKs, repeats END) until [`Sender::is_closed`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ncu_proto::sender::{Config, Sender, To};
//! use ncu_proto::wire::{EndReason, Payload, Repr};
//!
//! let now = Instant::now();
//! let config = Config { resend_buffer: 0, ..Config::new("web") };
//! let mut sender = Sender::new(config, 0x6560_0000_0000_0001, now, 1_700_000_000_000_000);
//! sender.handle_input(0, b"first line\nsecond", 1_700_000_000_000_100);
//! sender.close(EndReason::Eof, now, 1_700_000_000_000_200);
//! let mut kinds = Vec::new();
//! while let Some(transmit) = sender.poll_transmit() {
//!     assert_eq!(transmit.to, To::All);
//!     for datagram in transmit.datagrams() {
//!         kinds.push(Repr::parse(datagram)?.kind());
//!     }
//! }
//! // HELLO, the line, the partial line "second" at the end of input, END.
//! assert_eq!(kinds.len(), 4);
//! assert!(sender.is_closed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod answer;
mod batch;
mod ids;
mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::framer::{Framer, Outbox};
use crate::lines::LineAssembler;
use crate::recovery::{RecoveryStats, ResendRing};
use crate::seal::{Keys, Sealer, SEAL_OVERHEAD};
use crate::wire::{EndReason, FRAGMENT_HEADER_LEN, HEADER_LEN};

use answer::Recovering;
use batch::{Batch, Queue};
use ids::SessionIds;
pub use timers::Timer;

/// After END with recovery: END is repeated this often (about ten copies in the
/// quiet time: at 50% loss all of them are lost about once in a thousand ends, and
/// a lost END with lost last lines hides the tail)...
pub const END_REPEAT: Duration = Duration::from_millis(50);
/// ...until no NACK came for this long...
pub const LINGER_QUIET: Duration = Duration::from_millis(500);
/// ...and at most this long in all.
pub const LINGER_MAX: Duration = Duration::from_secs(3);
/// GONE datagrams (one per NACK at most) are limited to this many per second, on
/// top of the resend rate: a flood of NACKs for old lines stays small.
pub const GONE_PER_SEC: u64 = 50;
/// How often the netconsole's address is told again, busy or not.
pub const COMPANION_EVERY: Duration = Duration::from_secs(1);
/// Copies of the first COMPANION (each with its own counter): lost on the way,
/// the next is a second away, and a short life may not have a second.
const COMPANION_COPIES: usize = 3;

/// Input streams: standard input, or a command's standard output and error.
pub const MAX_STREAMS: usize = 2;
/// Sealed sessions roll over before their datagram counter reaches this (the
/// counter is a 32-bit nonce part, and the receiver's replay window must never see
/// it wrap).
pub const ROLLOVER_AT: u64 = 1 << 31;

/// What a [`Sender`] is told once, at the start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The sender name (HELLO, HEARTBEAT, END).
    pub name: String,
    /// What is being sent (`stdin`, or the command line), in HELLO.
    pub source: String,
    /// The sending process, in HELLO.
    pub pid: u32,
    /// Largest datagram as sent (sealed ones included), clamped as
    /// [`Framer::new`] clamps.
    pub max_datagram: usize,
    /// Longest line sent whole; longer ones are cut (`--max-line`).
    pub max_line: usize,
    /// Pack the lines of one read into as few datagrams as fit (`--pack`); else
    /// one datagram per line.
    pub pack: bool,
    /// Pad datagrams followed by another to the full size (worth it with GSO).
    pub pad_full: bool,
    /// A HEARTBEAT when nothing was sent for this long.
    pub heartbeat: Option<Duration>,
    /// A partial line waiting this long without its newline is sent as it is.
    pub flush_after: Duration,
    /// Bytes of sent datagrams kept to answer NACKs (0: no recovery).
    pub resend_buffer: usize,
    /// Most bytes per second resent.
    pub resend_rate: u64,
    /// Seal every datagram (`--key-file`).
    pub keys: Option<Keys>,
    /// Sealed sessions roll over before their counter reaches this.
    pub rollover_after: u64,
    /// 32 bytes from the OS random generator: the random half of the session ids
    /// rollovers take comes from a keystream keyed with them (only sealing rolls
    /// over).
    pub id_seed: [u8; 32],
    /// Input streams (1 or [`MAX_STREAMS`]).
    pub streams: usize,
}

impl Config {
    /// `ncu-send`'s defaults, for sender `name` reading standard input.
    pub fn new(name: &str) -> Config {
        Config {
            name: name.to_owned(),
            source: "stdin".to_owned(),
            pid: 0,
            max_datagram: 1400,
            max_line: 1 << 20,
            pack: true,
            pad_full: false,
            heartbeat: Some(Duration::from_secs(1)),
            flush_after: Duration::from_millis(100),
            resend_buffer: 4 << 20,
            resend_rate: 2 << 20,
            keys: None,
            rollover_after: ROLLOVER_AT,
            id_seed: [0; 32],
            streams: 1,
        }
    }
}

/// Where a batch of datagrams goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// Every destination (lines, HELLO, HEARTBEAT, END).
    All,
    /// Destination `n` only (resends and GONE answering a NACK from it).
    One(usize),
}

/// Datagrams to send, back to back in one buffer the sender owns.
#[derive(Debug)]
pub struct Transmit<'a> {
    /// Where they go.
    pub to: To,
    bytes: &'a [u8],
    ends: &'a [usize],
}

impl<'a> Transmit<'a> {
    /// The datagrams, in order.
    pub fn datagrams(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + Clone + 'a {
        let (bytes, ends) = (self.bytes, self.ends);
        (0..ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &bytes[start..ends[i]]
        })
    }
}

/// What the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A sealed session rolled over to a new session.
    RolledOver {
        /// The session that ended (without END).
        from: u64,
        /// The new session.
        to: u64,
    },
}

/// Counters, across rollovers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lines numbered, all sessions.
    pub lines: u64,
    /// Sessions started (1 plus rollovers).
    pub sessions: u64,
    /// What recovery did.
    pub recovery: RecoveryStats,
    /// Datagrams to the sender dropped: not authentic, not parsed, not a NACK, or
    /// for another session.
    pub bad: u64,
    /// GONE datagrams sent, and refused by their limit.
    pub gone_sent: u64,
    /// GONE datagrams refused by [`GONE_PER_SEC`].
    pub gone_limited: u64,
}

/// One input stream's line being assembled.
#[derive(Debug)]
struct Stream {
    lines: LineAssembler,
    open: bool,
    /// When bytes last arrived.
    last_input: Instant,
    /// Bytes arrived since the last [`Sender::handle_timeout`] (which dates them).
    arrived: bool,
}

#[derive(Debug)]
enum State {
    Open,
    /// END sent; NACKs still answered.
    Lingering {
        since: Instant,
        last_nack: Instant,
        last_end: Instant,
        /// END as it went on the wire.
        end: Vec<u8>,
    },
    Closed,
}

/// Sealing's state: the sealer, how many datagrams this session sealed, and where
/// the next session's id comes from.
#[derive(Debug)]
struct Sealing {
    sealer: Sealer,
    counted: u64,
    limit: u64,
    ids: SessionIds,
}

/// The sending end of one `ncu-send` run (a session, and those it rolls over to).
#[derive(Debug)]
pub struct Sender {
    config: Config,
    framer: Framer,
    outbox: Outbox,
    streams: Vec<Stream>,
    state: State,
    /// When a datagram last went out (heartbeats are due `heartbeat` after it).
    last_sent: Instant,
    /// Lines went out since `last_sent` was set (dated by the next timeout call).
    shipped: bool,
    seal: Option<Sealing>,
    recovery: Option<Recovering>,
    queue: Queue,
    events: VecDeque<Event>,
    stats: Stats,
    /// Where the kernel's netconsole of this machine sends from, once set up:
    /// told to the receiver after every HELLO and HEARTBEAT.
    companion: Option<SocketAddr>,
    /// When it is told again.
    companion_due: Option<Instant>,
}

impl Sender {
    /// A sender for session `session` started at `now` (`wall_us`: the wall clock in
    /// microseconds since the Unix epoch); its HELLO is the first transmit.
    pub fn new(config: Config, session: u64, now: Instant, wall_us: u64) -> Sender {
        // Sealed datagrams grow by the tag: the framer leaves room for it.
        let overhead = if config.keys.is_some() {
            SEAL_OVERHEAD
        } else {
            0
        };
        let framer = Framer::new(session, &config.name, config.max_datagram - overhead);
        let streams = (0..config.streams.clamp(1, MAX_STREAMS))
            .map(|_| Stream {
                lines: LineAssembler::new(config.max_line),
                open: true,
                last_input: now,
                arrived: false,
            })
            .collect();
        let mut sender = Sender {
            framer,
            outbox: Outbox::default(),
            streams,
            state: State::Open,
            last_sent: now,
            shipped: false,
            seal: config.keys.clone().map(|keys| Sealing {
                sealer: Sealer::new(keys),
                counted: 0,
                limit: config.rollover_after,
                ids: SessionIds::new(&config.id_seed),
            }),
            recovery: (config.resend_buffer > 0)
                .then(|| Recovering::new(config.resend_buffer, config.resend_rate)),
            queue: Queue::default(),
            events: VecDeque::new(),
            stats: Stats {
                sessions: 1,
                ..Stats::default()
            },
            companion: None,
            companion_due: None,
            config,
        };
        sender.start_session(wall_us, wall_us);
        sender
    }

    /// The current session id.
    pub fn session(&self) -> u64 {
        self.framer.session()
    }
    /// Lines numbered in the current session.
    pub fn lines_sent(&self) -> u64 {
        self.framer.lines_sent()
    }
    /// The largest datagram sent, as sent (sealed ones with their tag).
    pub fn max_datagram(&self) -> usize {
        self.framer.max_datagram() + self.seal.as_ref().map_or(0, |_| SEAL_OVERHEAD)
    }
    /// Whether NACKs are answered (datagrams from the destinations are wanted).
    pub fn wants_datagrams(&self) -> bool {
        self.recovery.is_some() && !matches!(self.state, State::Closed)
    }
    /// Whether END went out and lingering (if any) is over: nothing more to do.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
    /// Whether stream `stream` is still open.
    pub fn is_open(&self, stream: usize) -> bool {
        self.streams.get(stream).is_some_and(|s| s.open)
    }
    /// The resend ring, when recovering.
    pub fn ring(&self) -> Option<&ResendRing> {
        self.recovery.as_ref().map(Recovering::ring)
    }
    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.lines += self.framer.lines_sent();
        if let Some(r) = &self.recovery {
            stats.recovery = r.stats();
        }
        stats
    }

    /// The kernel's netconsole of this machine sends from `source` (`None`: no
    /// longer): told to the receiver now (in a few copies), after every HELLO and
    /// HEARTBEAT and every [`COMPANION_EVERY`], so that it joins those records to
    /// this session.
    pub fn set_companion(&mut self, source: Option<SocketAddr>, now: Instant, wall_us: u64) {
        self.queue.commit(&mut self.recovery, self.framer.session());
        self.companion = source;
        self.companion_due = Some(now + COMPANION_EVERY);
        for _ in 0..COMPANION_COPIES {
            self.announce_companion(wall_us);
        }
        self.ship(wall_us);
    }

    /// Queues the COMPANION datagram, when there is a companion.
    pub(super) fn announce_companion(&mut self, wall_us: u64) {
        if let (Some(source), State::Open) = (self.companion, &self.state) {
            self.framer.companion(source, wall_us, &mut self.outbox);
        }
    }

    /// Destination `dest` can be reached from now on (a name that resolved after
    /// the start, when the HELLO went nowhere): it gets a HEARTBEAT at once (the
    /// sender's name, and the last line number, so that it asks for what it
    /// missed) and the companion claim, not only at the next period. Lines framed
    /// and not yet sent go to every destination first.
    pub fn handle_destination(&mut self, dest: usize, wall_us: u64) {
        if !matches!(self.state, State::Open) {
            return;
        }
        self.ship(wall_us);
        self.framer.heartbeat(wall_us, &mut self.outbox);
        self.announce_companion(wall_us);
        self.send_outbox(To::One(dest));
    }

    /// Stops padding datagrams to the full size (GSO did not work after all).
    pub fn set_pad_full(&mut self, pad: bool) {
        self.config.pad_full = pad;
        self.framer.set_pad_full(pad);
    }

    /// Bytes read from input stream `stream` at wall time `wall_us`: every line
    /// completed is framed, and goes out with the next [`Sender::poll_transmit`].
    pub fn handle_input(&mut self, stream: usize, bytes: &[u8], wall_us: u64) {
        self.queue.commit(&mut self.recovery, self.framer.session());
        if !matches!(self.state, State::Open) || bytes.is_empty() {
            return;
        }
        let Some(mut s) = self.take_stream(stream) else {
            return;
        };
        s.arrived = true;
        s.lines
            .feed(bytes, |flags, text| self.push(flags, text, wall_us));
        self.streams[stream] = s;
        self.ship(wall_us);
    }

    /// Lines that are complete as they are (kernel records from `/dev/kmsg`,
    /// flagged `flags`, e.g. [`LINE_KMSG`](crate::wire::LINE_KMSG)), read at wall
    /// time `wall_us`: framed at once, packed together when packing, and out with
    /// the next [`Sender::poll_transmit`].
    pub fn handle_records<'a>(
        &mut self,
        flags: u8,
        records: impl IntoIterator<Item = &'a [u8]>,
        wall_us: u64,
    ) {
        self.queue.commit(&mut self.recovery, self.framer.session());
        if !matches!(self.state, State::Open) {
            return;
        }
        for record in records {
            self.push(flags, record, wall_us);
        }
        self.ship(wall_us);
    }

    /// End of input stream `stream`: a trailing partial line goes out.
    pub fn handle_input_end(&mut self, stream: usize, wall_us: u64) {
        self.queue.commit(&mut self.recovery, self.framer.session());
        if !matches!(self.state, State::Open) {
            return;
        }
        if let Some(mut s) = self.take_stream(stream) {
            s.lines
                .flush_partial(|flags, text| self.push(flags, text, wall_us));
            s.open = false;
            self.streams[stream] = s;
            self.ship(wall_us);
        }
    }

    /// Ends the session: what was read goes out (partial lines included), then END.
    /// With recovery the sender lingers: it answers NACKs and repeats END until
    /// quiet for [`LINGER_QUIET`] (at most [`LINGER_MAX`]); then [`Sender::is_closed`].
    pub fn close(&mut self, reason: EndReason, now: Instant, wall_us: u64) {
        self.queue.commit(&mut self.recovery, self.framer.session());
        if !matches!(self.state, State::Open) {
            return;
        }
        for n in 0..self.streams.len() {
            if let Some(mut s) = self.take_stream(n) {
                s.lines
                    .flush_partial(|flags, text| self.push(flags, text, wall_us));
                s.open = false;
                self.streams[n] = s;
            }
        }
        self.framer.flush(&mut self.outbox);
        self.framer.end(reason, wall_us, &mut self.outbox);
        // Not `ship`: no new session after END.
        self.send_outbox(To::All);
        self.shipped = true;
        self.state = match (&self.recovery, self.queue.last_datagram()) {
            (Some(_), Some(end)) => State::Lingering {
                since: now,
                last_nack: now,
                last_end: now,
                end: end.to_vec(),
            },
            _ => State::Closed,
        };
    }

    /// The next batch of datagrams to send, oldest first. Send it before calling any
    /// other method: the next call keeps it for resending.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        self.queue.commit(&mut self.recovery, self.framer.session());
        let batch: &Batch = self.queue.next()?;
        Some(Transmit {
            to: batch.to,
            bytes: &batch.bytes,
            ends: &batch.ends,
        })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Takes stream `n` out of the table while its assembler calls back into the
    /// sender (`push` needs `&mut self`); the caller puts it back.
    fn take_stream(&mut self, n: usize) -> Option<Stream> {
        let s = self.streams.get_mut(n)?;
        let placeholder = Stream {
            lines: LineAssembler::new(1),
            open: false,
            last_input: s.last_input,
            arrived: false,
        };
        Some(std::mem::replace(s, placeholder))
    }

    /// Numbers and frames one line (or piece of one).
    fn push(&mut self, flags: u8, text: &[u8], wall_us: u64) {
        if let Some(s) = &self.seal {
            // Counters this line may use: the DATA datagram being built (or a new
            // one), or its fragments. Beyond the limit: a new session first (unless
            // this session has nothing but its HELLO, so that a huge line still goes).
            let chunk = (self.framer.max_datagram() - HEADER_LEN - FRAGMENT_HEADER_LEN) as u64;
            let pending = s.counted + self.outbox.len() as u64 + 1;
            let needs = text.len() as u64 / chunk + 2;
            if pending + needs > s.limit && s.counted + self.outbox.len() as u64 > 1 {
                self.roll_over(wall_us);
            }
        }
        self.framer
            .push_line(flags, text, wall_us, &mut self.outbox);
        if !self.config.pack {
            self.framer.flush(&mut self.outbox);
        }
    }

    /// Queues everything framed so far, and rolls over when the next HEARTBEAT or
    /// END would not fit the sealed session's counter.
    fn ship(&mut self, wall_us: u64) {
        self.framer.flush(&mut self.outbox);
        if self.outbox.is_empty() {
            return;
        }
        self.send_outbox(To::All);
        self.shipped = true;
        if self.seal.as_ref().is_some_and(|s| s.counted + 2 > s.limit) {
            self.roll_over(wall_us);
        }
    }

    /// Moves the finished datagrams of the outbox into a batch for `to`, sealed when
    /// sealing, indexed for the resend ring when recovering.
    fn send_outbox(&mut self, to: To) {
        let lines_sent = self.framer.lines_sent();
        let keep = self.recovery.is_some().then_some(self.framer.session());
        match &mut self.seal {
            None => self
                .queue
                .push_outbox(to, &mut self.outbox, keep, lines_sent),
            Some(s) => {
                let sealed =
                    self.queue
                        .push_sealed(to, &mut self.outbox, &mut s.sealer, keep, lines_sent);
                s.counted += sealed as u64;
            }
        }
    }

    /// Sealing only: sends what was framed, then starts a new session (a new id,
    /// HELLO, lines numbered from 1, counter from 0) so that the datagram counter
    /// never reaches the limit: no nonce is reused under the key, and the
    /// receiver's replay window never sees a counter wrap. The old session gets no
    /// END (no END reason fits): the receiver sees the new session start from the
    /// same sender.
    fn roll_over(&mut self, wall_us: u64) {
        self.framer.flush(&mut self.outbox);
        self.send_outbox(To::All);
        let Some(s) = self.seal.as_mut() else { return };
        let id = s.ids.next(wall_us);
        s.counted = 0;
        let from = self.framer.session();
        self.stats.lines += self.framer.lines_sent();
        self.stats.sessions += 1;
        self.framer = Framer::new(id, self.framer.name(), self.framer.max_datagram());
        if let Some(r) = &mut self.recovery {
            // The old session's NACKs are dropped from now on (another session id).
            r.reset();
        }
        self.start_session(wall_us, wall_us);
        self.events.push_back(Event::RolledOver { from, to: id });
    }

    /// Sets up the framer of a new session and queues its HELLO.
    fn start_session(&mut self, started_at_us: u64, wall_us: u64) {
        self.framer.set_pad_full(self.config.pad_full);
        self.framer.set_recovery(self.recovery.is_some());
        self.framer.set_sealed_next(self.seal.is_some());
        // First, before any line: announces the session and gets the neighbour
        // resolved.
        self.framer.hello(
            self.config.pid,
            started_at_us,
            &self.config.source,
            wall_us,
            &mut self.outbox,
        );
        self.announce_companion(wall_us);
        self.send_outbox(To::All);
        self.shipped = true;
    }
}
