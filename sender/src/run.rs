//! The one-thread loop: `poll(2)` on the inputs, the signal pipe and the sockets,
//! with a timeout for the next flush or heartbeat; every complete line read is framed
//! and handed to the kernel before the next read.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ncu_proto::framer::{Framer, Outbox};
use ncu_proto::recovery::{Recovery, RecoveryStats, Slot, TokenBucket};
use ncu_proto::seal::{self, Sealer, SEAL_OVERHEAD};
use ncu_proto::wire::{
    self, Datagram, EndReason, Kind, Payload, Repr, FRAGMENT_HEADER_LEN, HEADER_LEN,
};

use crate::cli::Config;
use crate::harden;
use crate::net::{Received, Sender};
use crate::signals::Signals;
use ncu_proto::lines::LineAssembler;

/// Bytes asked for per `read(2)`: more than a full pipe (64 KiB unless its writer
/// grew it); from a file, four GSO messages' worth, sent with one `sendmmsg`, so
/// bulk input takes a quarter of the system calls 64 KiB reads took.
const READ_SIZE: usize = 256 * 1024;
/// Without a pidfd, how often to look whether COMMAND exited after closing its output.
const CHILD_POLL: Duration = Duration::from_millis(20);
/// Most datagrams read from one socket per loop turn (NACKs): new lines go first.
const NACKS_PER_TURN: usize = 64;
/// After END with recovery: END is repeated this often (about ten copies in the
/// quiet time: at 50% loss all of them are lost about once in a thousand ends, and
/// a lost END with lost last lines hides the tail)...
const END_REPEAT: Duration = Duration::from_millis(50);
/// ...until no NACK came for this long...
const LINGER_QUIET: Duration = Duration::from_millis(500);
/// ...and at most this long in all.
const LINGER_MAX: Duration = Duration::from_secs(3);
/// GONE datagrams (one per NACK at most) are limited to this many per second, on
/// top of the resend rate: a flood of NACKs for old lines stays small.
const GONE_PER_SEC: u64 = 50;

/// A failure before the loop starts (exit status 1).
#[derive(Debug)]
pub(crate) struct RunError(pub(crate) String);

/// Runs a session to its end; returns the exit status.
pub(crate) fn run(config: Config) -> Result<u8, RunError> {
    let started = Instant::now();
    let started_us = wall_us();
    let sealing = config.keys.is_some();
    let first_id = session_id(started_us, sealing)?;
    let mut signals =
        Signals::install().map_err(|e| RunError(format!("cannot catch signals: {e}")))?;
    if config.mlock {
        harden::lock_memory();
    }
    let source = match &config.command {
        Some(argv) => command_line(argv),
        None => "stdin".to_owned(),
    };
    // Sealed datagrams grow by the tag: the framer leaves room for it.
    let overhead = if sealing { SEAL_OVERHEAD } else { 0 };
    let mut framer = Framer::new(first_id, &config.name, config.max_datagram - overhead);
    // Full datagrams as sent: runs of them leave as one GSO message each.
    let full = framer.max_datagram() + overhead;
    let sender = Sender::open(&config.dests, config.copies, full, config.gso)
        .map_err(|e| RunError(format!("cannot open a UDP socket: {e}")))?;
    // Padding datagrams that were closed for lack of room to the full size makes
    // runs of them equal, as GSO needs; useless without GSO. A lone line never waits
    // nor grows: only a datagram followed by another one is ever padded.
    framer.set_pad_full(sender.gso());
    framer.set_recovery(config.resend_buffer > 0);
    framer.set_sealed_next(sealing);
    let mut session = Session {
        framer,
        outbox: Outbox::default(),
        sender,
        pack: config.pack,
        last_sent: started,
        shipped: false,
        recovery: (config.resend_buffer > 0)
            .then(|| Recovering::new(config.resend_buffer, config.resend_rate)),
        seal: config.keys.clone().map(|keys| Sealing {
            sealer: Sealer::new(keys),
            sealed: Vec::new(),
            ends: Vec::new(),
            counted: 0,
            limit: config.rollover_after,
            source: source.clone(),
        }),
    };
    // First, before any line: announces the session and gets the neighbour resolved.
    session.framer.hello(
        std::process::id(),
        started_us,
        &source,
        wall_us(),
        &mut session.outbox,
    );
    session.ship();
    session.stamp(started);

    let (mut inputs, mut child) = match &config.command {
        None => (vec![Input::new(0, None, &config, 1)], None),
        Some(argv) => match spawn(argv) {
            Ok((child, out, err)) => {
                let inputs = vec![
                    Input::new(out.as_raw_fd(), Some(out), &config, 1),
                    Input::new(err.as_raw_fd(), Some(err), &config, 2),
                ];
                (inputs, Some(Wrapped::new(child)))
            }
            Err(e) => {
                eprintln!("ncu-send: cannot run {source:?}: {e}");
                let status = if e.kind() == io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                return Ok(session.end(
                    EndReason::Exit(status),
                    &config,
                    status as u8,
                    &mut signals,
                ));
            }
        },
    };
    if config.oom_protect {
        harden::protect_from_oom_killer();
    }

    let mut buf = vec![0u8; READ_SIZE];
    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let mut stop: Option<i32> = None;
    // The clocks are read once per turn, after poll returns: each read costs a few
    // microseconds in a VM whose caches went cold while it slept.
    let mut now = Instant::now();
    while stop.is_none() {
        let inputs_open = inputs.iter().any(|i| i.fd.is_some());
        let child_done = match &child {
            Some(c) => c.status.is_some(),
            None => true,
        };
        if !inputs_open && child_done {
            break;
        }
        let mut deadline = config.heartbeat.map(|hb| session.last_sent + hb);
        for input in inputs.iter().filter(|i| i.lines.has_pending()) {
            deadline = earliest(deadline, Some(input.last_input + config.flush_after));
        }
        // Every input closed: only COMMAND's exit is awaited.
        let wait_child = child.as_ref().filter(|_| !inputs_open);
        if wait_child.is_some_and(|c| c.pidfd.is_none()) {
            deadline = earliest(deadline, Some(now + CHILD_POLL));
        }

        pollfds.clear();
        pollfds.push(ncu_host::pollfd(signals.fd(), libc::POLLIN));
        for input in &inputs {
            pollfds.push(ncu_host::pollfd(input.fd.unwrap_or(-1), libc::POLLIN));
        }
        let pidfd = wait_child.and_then(|c| c.pidfd.as_ref().map(|fd| fd.as_raw_fd()));
        pollfds.push(ncu_host::pollfd(pidfd.unwrap_or(-1), libc::POLLIN));
        let sockets_at = pollfds.len();
        // With recovery, NACKs arrive on the sockets.
        let socket_events = if session.recovery.is_some() {
            libc::POLLIN
        } else {
            0
        };
        pollfds.extend(
            session
                .sender
                .fds()
                .map(|fd| ncu_host::pollfd(fd, socket_events)),
        );
        let timeout = deadline.map(|d| d.saturating_duration_since(now));
        poll(&mut pollfds, timeout);

        // The lines read now carry the wall clock; the monotonic clock for the timers
        // is read after they went out, so that a line's way from its newline to the
        // kernel passes one clock read, not two.
        let now_us = wall_us();
        if pollfds[0].revents != 0 {
            let (count, sig) = signals.take();
            match child.as_mut() {
                Some(c) if count > 0 && !c.forwarded && c.status.is_none() => {
                    c.forward(sig);
                    if count > 1 {
                        stop = Some(sig);
                    }
                }
                _ if count > 0 => stop = Some(sig),
                _ => {}
            }
        }
        // Inputs: standard input, or COMMAND's standard output and error.
        let mut arrived = [false; 2];
        for (i, input) in inputs.iter_mut().enumerate() {
            if pollfds[1 + i].revents != 0 {
                arrived[i] = input.read(&mut buf, &mut session, now_us);
            }
        }
        now = Instant::now();
        session.stamp(now);
        for (input, arrived) in inputs.iter_mut().zip(arrived) {
            if arrived {
                input.last_input = now;
            }
            if input.lines.has_pending() && now >= input.last_input + config.flush_after {
                input.lines.flush_partial(|f, t| session.push(f, t, now_us));
                session.ship();
            }
        }
        if let Some(c) = child.as_mut() {
            if !inputs.iter().any(|i| i.fd.is_some()) {
                c.check_exit();
            }
        }
        for (i, pfd) in pollfds[sockets_at..].iter().enumerate() {
            if pfd.revents & libc::POLLERR != 0 {
                session.sender.take_error(i);
            }
            // After the input: new lines always go first.
            if pfd.revents & libc::POLLIN != 0 {
                session.answer_nacks(i, now);
            }
        }
        if let Some(hb) = config.heartbeat {
            if now >= session.last_sent + hb {
                session.framer.heartbeat(now_us, &mut session.outbox);
                session.ship();
            }
        }
        session.stamp(now);
    }

    // What was read goes out, a partial line included, then END.
    let now_us = wall_us();
    for input in &mut inputs {
        input.lines.flush_partial(|f, t| session.push(f, t, now_us));
    }
    let (reason, status) = match (stop, child.and_then(|c| c.status)) {
        (Some(sig), _) => (EndReason::Signal(sig), 128 + sig),
        (None, Some(status)) => match (status.code(), status.signal()) {
            (Some(code), _) => (EndReason::Exit(code), code),
            (None, Some(sig)) => (EndReason::CommandSignal(sig), 128 + sig),
            (None, None) => (EndReason::Exit(1), 1),
        },
        (None, None) => (EndReason::Eof, 0),
    };
    Ok(session.end(reason, &config, status.clamp(0, 255) as u8, &mut signals))
}

/// The framer, its outbox and the sockets.
struct Session {
    framer: Framer,
    outbox: Outbox,
    sender: Sender,
    pack: bool,
    /// When a datagram last went out (heartbeats are due `--heartbeat` after it).
    last_sent: Instant,
    /// Sent since `last_sent` was set ([`Session::stamp`] sets it after the clock
    /// read that follows the sending).
    shipped: bool,
    /// With `--key-file`.
    seal: Option<Sealing>,
    /// With `--resend-buffer` above 0 (the default).
    recovery: Option<Recovering>,
}

/// Recovery's state in the sender: the ring and rate limit (`ncu_proto::recovery`),
/// reusable buffers, and counters.
struct Recovering {
    recovery: Recovery,
    ring_bytes: usize,
    rate: u64,
    /// Datagrams to resend for one NACK.
    resend: Outbox,
    /// An empty send buffer recycled from the ring, for the next batch.
    spare: Vec<u8>,
    /// The index of one batch's datagrams (reused).
    slots: Vec<Slot>,
    /// Line ranges one NACK asked for that the ring no longer holds.
    gone: Vec<(u64, u64)>,
    /// GONE ranges to answer after reading this turn's NACKs.
    gone_out: Vec<(u64, u64)>,
    gone_bucket: TokenBucket,
    /// One received datagram (the largest UDP payload).
    buf: Vec<u8>,
    /// A sealed NACK, opened.
    opened: Vec<u8>,
    /// Counters of earlier sessions (rollover) and of what the sender itself drops.
    past: RecoveryStats,
    /// Datagrams dropped: do not authenticate, do not parse, not a NACK, another
    /// session.
    bad: u64,
    /// Datagrams from another address than the destination (unconnected sockets).
    foreign: u64,
    /// GONE datagrams sent, and refused by their limit.
    gone_sent: u64,
    gone_limited: u64,
}

impl Recovering {
    fn new(ring_bytes: usize, rate: u64) -> Recovering {
        Recovering {
            recovery: Recovery::new(ring_bytes, rate),
            ring_bytes,
            rate,
            resend: Outbox::default(),
            spare: Vec::new(),
            slots: Vec::new(),
            gone: Vec::new(),
            gone_out: Vec::new(),
            gone_bucket: TokenBucket::new(GONE_PER_SEC, GONE_PER_SEC),
            buf: vec![0; 1 << 16],
            opened: Vec::new(),
            past: RecoveryStats::default(),
            bad: 0,
            foreign: 0,
            gone_sent: 0,
            gone_limited: 0,
        }
    }

    /// Hands a sent buffer (and its datagrams' index) to the ring, and takes back a
    /// buffer for the next batch: one the ring let go of, or, while the ring is still
    /// filling, a new one as large as this one (so the next batch does not grow a
    /// buffer from nothing, copying as it doubles).
    fn keep(&mut self, bytes: Vec<u8>, slots: Vec<Slot>) {
        let capacity = bytes.capacity();
        (self.spare, self.slots) = self.recovery.record_chunk(bytes, slots);
        if self.spare.capacity() == 0 {
            self.spare = Vec::with_capacity(capacity);
        }
    }

    /// A new session: its lines are numbered afresh, so the ring starts empty.
    fn reset(&mut self) {
        let s = self.recovery.stats();
        self.past.nacks += s.nacks;
        self.past.resent += s.resent;
        self.past.resent_bytes += s.resent_bytes;
        self.past.limited += s.limited;
        self.past.gone += s.gone;
        self.recovery = Recovery::new(self.ring_bytes, self.rate);
    }

    fn stats(&self) -> RecoveryStats {
        let s = self.recovery.stats();
        RecoveryStats {
            nacks: self.past.nacks + s.nacks,
            resent: self.past.resent + s.resent,
            resent_bytes: self.past.resent_bytes + s.resent_bytes,
            limited: self.past.limited + s.limited,
            gone: self.past.gone + s.gone,
        }
    }
}

/// Indexes the DATA datagrams of one sent batch (`bytes`, each ending at `ends`) for
/// the resend ring: where each lies and the lines it carries. Lines are numbered in
/// order, so a datagram carries the lines from its own `seq` up to the next DATA
/// datagram's `seq` minus one (fragments: their line only), and the last one up to
/// `lines_sent`: two header fields per datagram, no parsing. HELLO, HEARTBEAT, END
/// and GONE are not kept.
fn index(slots: &mut Vec<Slot>, bytes: &[u8], ends: &[usize], lines_sent: u64) {
    let mut pending: Option<(usize, usize, u64)> = None;
    let mut start = 0;
    for &end in ends {
        let view = Datagram::new_unchecked(&bytes[start..end]);
        if view.kind_byte() == Kind::Data as u8 {
            let seq = view.seq();
            if let Some((s, e, first)) = pending {
                let last = seq.saturating_sub(1).max(first);
                slots.push(Slot {
                    start: s,
                    end: e,
                    first,
                    last,
                });
            }
            pending = Some((start, end, seq));
        }
        start = end;
    }
    if let Some((s, e, first)) = pending {
        let last = lines_sent.max(first);
        slots.push(Slot {
            start: s,
            end: e,
            first,
            last,
        });
    }
}

/// What sealing needs besides the framer: the sealer, a reusable buffer holding one
/// outbox's sealed datagrams back to back, and the datagram count that triggers a
/// new session.
struct Sealing {
    sealer: Sealer,
    /// The sealed datagrams of one outbox, back to back (reused: no allocation per
    /// datagram, and the batch still goes out in one `sendmmsg`).
    sealed: Vec<u8>,
    /// Where each sealed datagram ends in `sealed`.
    ends: Vec<usize>,
    /// Datagrams of the current session sent so far (the framer's next counter).
    counted: u64,
    /// The counter must stay below this: a new session starts before.
    limit: u64,
    /// HELLO's source, for the HELLO of every new session.
    source: String,
}

impl Session {
    /// Numbers and frames one line (or piece of one).
    fn push(&mut self, flags: u8, text: &[u8], now_us: u64) {
        if let Some(s) = &self.seal {
            // Counters this line may use: the DATA datagram being built (or a new
            // one), or its fragments. Beyond the limit: a new session first (unless
            // this session has nothing but its HELLO, so that a huge line still goes).
            let chunk = (self.framer.max_datagram() - HEADER_LEN - FRAGMENT_HEADER_LEN) as u64;
            let pending = s.counted + self.outbox.len() as u64 + 1;
            let needs = text.len() as u64 / chunk + 2;
            if pending + needs > s.limit && s.counted + self.outbox.len() as u64 > 1 {
                self.new_session(now_us);
            }
        }
        self.framer.push_line(flags, text, now_us, &mut self.outbox);
        if !self.pack {
            self.framer.flush(&mut self.outbox);
        }
    }

    /// `last_sent` = `now` if anything went out since it was last set.
    fn stamp(&mut self, now: Instant) {
        if std::mem::take(&mut self.shipped) {
            self.last_sent = now;
        }
    }

    /// Hands everything framed so far to the kernel (sealed with `--key-file`) and
    /// notes that it did (`shipped`), without reading the clock.
    fn ship(&mut self) {
        self.framer.flush(&mut self.outbox);
        if self.outbox.is_empty() {
            return;
        }
        self.send_outbox();
        self.shipped = true;
        // Room for the next heartbeat or END; else a new session now.
        if self.seal.as_ref().is_some_and(|s| s.counted + 2 > s.limit) {
            self.new_session(wall_us());
        }
    }

    /// Sends the finished datagrams in the outbox, sealed when sealing, and empties it.
    fn send_outbox(&mut self) {
        self.send_outbox_to(None);
    }

    /// As [`Session::send_outbox`], to destination `only` alone when given. Every
    /// DATA datagram is kept in the resend ring as sent.
    fn send_outbox_to(&mut self, only: Option<usize>) {
        let lines_sent = self.framer.lines_sent();
        match &mut self.seal {
            None => {
                match only {
                    None => self.sender.send(self.outbox.datagrams()),
                    Some(t) => self.sender.send_one(t, self.outbox.datagrams()),
                }
                if let Some(r) = &mut self.recovery {
                    // The outbox's buffer goes to the ring as a whole (no copy); the
                    // outbox goes on with an empty buffer recycled from the ring.
                    let mut slots = std::mem::take(&mut r.slots);
                    index(
                        &mut slots,
                        self.outbox.bytes(),
                        self.outbox.ends(),
                        lines_sent,
                    );
                    let bytes = self.outbox.take_buffer(std::mem::take(&mut r.spare));
                    r.keep(bytes, slots);
                }
            }
            Some(s) => {
                s.sealed.clear();
                s.ends.clear();
                for d in self.outbox.datagrams() {
                    s.sealer.seal(d, &mut s.sealed);
                    s.ends.push(s.sealed.len());
                }
                let (sealed, ends) = (&s.sealed, &s.ends);
                let each = (0..ends.len()).map(|i| {
                    let start = if i == 0 { 0 } else { ends[i - 1] };
                    &sealed[start..ends[i]]
                });
                match only {
                    None => self.sender.send(each.clone()),
                    Some(t) => self.sender.send_one(t, each.clone()),
                }
                s.counted += ends.len() as u64;
                if let Some(r) = &mut self.recovery {
                    // The sealed buffer goes to the ring as a whole (no copy).
                    let mut slots = std::mem::take(&mut r.slots);
                    index(&mut slots, &s.sealed, &s.ends, lines_sent);
                    let bytes = std::mem::replace(&mut s.sealed, std::mem::take(&mut r.spare));
                    r.keep(bytes, slots);
                }
            }
        }
        self.outbox.clear();
        // GSO turned out not to work on any path: stop padding.
        if !self.sender.gso() {
            self.framer.set_pad_full(false);
        }
    }

    /// Sealing only: sends what was framed, then starts a new session (new random
    /// id, HELLO, lines numbered from 1, counter from 0) so that the datagram counter
    /// never reaches the limit (2^31): no nonce is reused under the key, and the
    /// receiver's replay window never sees a counter wrap. The old session gets no END
    /// (no END reason fits): the receiver sees the new session start from the same
    /// sender.
    fn new_session(&mut self, now_us: u64) {
        self.framer.flush(&mut self.outbox);
        self.send_outbox();
        let Some(s) = self.seal.as_mut() else { return };
        let id = match session_id(now_us, true) {
            Ok(id) => id,
            Err(RunError(msg)) => {
                // Sealing under a weak id is not an option, and the old session may
                // not go on: stop.
                eprintln!("ncu-send: {msg}");
                std::process::exit(1);
            }
        };
        s.counted = 0;
        self.framer = Framer::new(id, self.framer.name(), self.framer.max_datagram());
        self.framer.set_pad_full(self.sender.gso());
        self.framer.set_sealed_next(true);
        if let Some(r) = &mut self.recovery {
            // The old session's NACKs are dropped from now on (another session id).
            r.reset();
            self.framer.set_recovery(true);
        }
        self.framer.hello(
            std::process::id(),
            now_us,
            &s.source,
            now_us,
            &mut self.outbox,
        );
        self.send_outbox();
        self.last_sent = Instant::now();
    }

    /// Sends END, lingers with recovery (see [`Session::linger`]), prints the
    /// counters with `--verbose`, returns `status`.
    fn end(&mut self, reason: EndReason, config: &Config, status: u8, signals: &mut Signals) -> u8 {
        let now_us = wall_us();
        self.framer.flush(&mut self.outbox);
        self.framer.end(reason, now_us, &mut self.outbox);
        // END as it goes on the wire (sealing is deterministic: same bytes), for
        // repeating it while lingering.
        let end = self.recovery.as_ref().and_then(|_| {
            let plain = self.outbox.datagrams().last()?;
            Some(match &mut self.seal {
                Some(s) => {
                    let mut sealed = Vec::new();
                    s.sealer.seal(plain, &mut sealed);
                    sealed
                }
                None => plain.to_vec(),
            })
        });
        // Not `ship`: no new session after END.
        self.send_outbox();
        self.last_sent = Instant::now();
        if let Some(end) = end {
            self.linger(&end, signals);
        }
        if config.verbose {
            let stats = self.sender.stats();
            eprintln!(
                "ncu-send: session {:016x}: {} lines, {} datagrams sent to {} destination(s), \
                 {} dropped; send errors: {}; {reason}",
                self.framer.session(),
                self.framer.lines_sent(),
                stats.sent,
                config.dests.len(),
                stats.dropped,
                stats.errors_summary(),
            );
            if let Some(r) = &self.recovery {
                let s = r.stats();
                let ring = r.recovery.ring();
                eprintln!(
                    "ncu-send: recovery: {} NACKs answered, {} dropped (bad or another \
                     session), {} from elsewhere; {} datagrams resent ({} bytes), {} \
                     refused by the rate limit; {} ranges gone ({} GONE sent, {} limited); \
                     ring {} bytes in {} datagrams",
                    s.nacks,
                    r.bad,
                    r.foreign,
                    s.resent,
                    s.resent_bytes,
                    s.limited,
                    s.gone,
                    r.gone_sent,
                    r.gone_limited,
                    ring.held_bytes(),
                    ring.len(),
                );
            }
        }
        status
    }

    /// After END with recovery: answers NACKs and repeats END every
    /// [`END_REPEAT`] until no NACK came for [`LINGER_QUIET`], at most
    /// [`LINGER_MAX`], so that a lost END or lost last lines can still be asked
    /// for. SIGINT/SIGTERM end it at once.
    fn linger(&mut self, end: &[u8], signals: &mut Signals) {
        let start = Instant::now();
        let mut last_nack = start;
        let mut last_end = start;
        let mut pollfds = Vec::new();
        loop {
            let now = Instant::now();
            let stop = (last_nack + LINGER_QUIET).min(start + LINGER_MAX);
            if now >= stop {
                return;
            }
            if now >= last_end + END_REPEAT {
                self.sender.send(std::iter::once(end));
                last_end = now;
            }
            let deadline = stop.min(last_end + END_REPEAT);
            pollfds.clear();
            pollfds.push(ncu_host::pollfd(signals.fd(), libc::POLLIN));
            pollfds.extend(
                self.sender
                    .fds()
                    .map(|fd| ncu_host::pollfd(fd, libc::POLLIN)),
            );
            poll(&mut pollfds, Some(deadline.saturating_duration_since(now)));
            if pollfds[0].revents != 0 && signals.take().0 > 0 {
                return;
            }
            let now = Instant::now();
            for (i, pfd) in pollfds[1..].iter().enumerate() {
                if pfd.revents & libc::POLLERR != 0 {
                    self.sender.take_error(i);
                }
                if pfd.revents & libc::POLLIN != 0 && self.answer_nacks(i, now) > 0 {
                    last_nack = now;
                }
            }
        }
    }

    /// Reads up to [`NACKS_PER_TURN`] datagrams waiting on the socket of destination
    /// `index` and answers the NACKs among them: resends and GONE go to that
    /// destination only (never to where a datagram came from, which for a connected
    /// socket is the destination anyway). Returns how many NACKs were answered.
    fn answer_nacks(&mut self, index: usize, now: Instant) -> usize {
        let Session {
            framer,
            sender,
            seal: sealing,
            recovery,
            ..
        } = self;
        let Some(r) = recovery.as_mut() else {
            return 0;
        };
        let mut answered = 0;
        r.gone_out.clear();
        for _ in 0..NACKS_PER_TURN {
            let n = match sender.recv(index, &mut r.buf) {
                Received::Datagram(n) => n,
                Received::Foreign => {
                    r.foreign += 1;
                    continue;
                }
                Received::Nothing | Received::Error => break,
            };
            let plain: &[u8] = match sealing {
                Some(s) => {
                    r.opened.clear();
                    if seal::open(s.sealer.keys(), &r.buf[..n], &mut r.opened).is_err() {
                        r.bad += 1;
                        continue;
                    }
                    &r.opened
                }
                None => &r.buf[..n],
            };
            let ranges = match Repr::parse(plain) {
                Ok(Repr {
                    header,
                    payload: Payload::Nack { ranges },
                }) if header.session == framer.session() => ranges,
                _ => {
                    r.bad += 1;
                    continue;
                }
            };
            r.resend.clear();
            r.gone.clear();
            r.recovery
                .handle_nack(ranges, now, &mut r.resend, &mut r.gone);
            // Each datagram at most once per NACK (handle_nack sees to it).
            sender.send_one(index, r.resend.datagrams());
            answered += 1;
            // One GONE covers every range asked for below the ring's oldest line.
            let first = r.gone.iter().map(|g| g.0).min();
            let last = r.gone.iter().map(|g| g.1).max();
            if let (Some(first), Some(last)) = (first, last) {
                if r.gone_bucket.take(now, 1) {
                    r.gone_out.push((first, last));
                } else {
                    r.gone_limited += 1;
                }
            }
        }
        if r.gone_out.is_empty() {
            return answered;
        }
        // GONE datagrams are framed (counter, seal) like any other.
        let gone_out = std::mem::take(&mut r.gone_out);
        r.gone_sent += gone_out.len() as u64;
        self.framer.flush(&mut self.outbox);
        self.send_outbox();
        let now_us = wall_us();
        for &(first, last) in &gone_out {
            self.framer.gone(first, last, now_us, &mut self.outbox);
        }
        self.send_outbox_to(Some(index));
        if let Some(r) = &mut self.recovery {
            r.gone_out = gone_out;
        }
        if self.seal.as_ref().is_some_and(|s| s.counted + 2 > s.limit) {
            self.new_session(now_us);
        }
        answered
    }
}

/// One input stream: standard input, or COMMAND's stdout or stderr.
struct Input {
    /// `None` once closed.
    fd: Option<RawFd>,
    /// Keeps COMMAND's pipe open (standard input is not ours to close).
    owned: Option<OwnedFd>,
    lines: LineAssembler,
    /// When bytes last arrived.
    last_input: Instant,
    /// Where `--tee` copies to (1 or 2), until that fails.
    tee: Option<RawFd>,
}

impl Input {
    fn new(fd: RawFd, owned: Option<OwnedFd>, config: &Config, tee_fd: RawFd) -> Input {
        Input {
            fd: Some(fd),
            owned,
            lines: LineAssembler::new(config.max_line),
            last_input: Instant::now(),
            tee: config.tee.then_some(tee_fd),
        }
    }

    /// Reads once; sends every line completed, then copies the bytes for `--tee`.
    /// True when bytes arrived (the caller sets `last_input`, after the clock read).
    fn read(&mut self, buf: &mut [u8], session: &mut Session, now_us: u64) -> bool {
        let Some(fd) = self.fd else { return false };
        match read_fd(fd, buf) {
            Ok(0) => self.close(session, now_us),
            Ok(n) => {
                self.lines
                    .feed(&buf[..n], |flags, text| session.push(flags, text, now_us));
                session.ship();
                if let Some(tee) = self.tee {
                    if write_all(tee, &buf[..n]).is_err() {
                        // A closed standard output stops the copy, never the sending.
                        self.tee = None;
                    }
                }
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.close(session, now_us),
        }
        false
    }

    /// End of this input: a trailing partial line goes out.
    fn close(&mut self, session: &mut Session, now_us: u64) {
        self.lines.flush_partial(|f, t| session.push(f, t, now_us));
        self.fd = None;
        self.owned = None;
    }
}

/// COMMAND, once started.
struct Wrapped {
    child: Child,
    /// Readable when COMMAND exits (Linux 5.3+); polled every [`CHILD_POLL`] without.
    pidfd: Option<OwnedFd>,
    status: Option<ExitStatus>,
    forwarded: bool,
}

impl Wrapped {
    fn new(child: Child) -> Wrapped {
        // SAFETY: pidfd_open takes a pid and flags; a non-negative result is a new fd
        // that nothing else owns.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        Wrapped {
            child,
            pidfd,
            status: None,
            forwarded: false,
        }
    }

    fn forward(&mut self, sig: i32) {
        self.forwarded = true;
        // SAFETY: kill takes a pid and a signal; the child is not yet reaped, so the pid
        // is still its own.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    fn check_exit(&mut self) {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
    }
}

/// Starts COMMAND with its stdout and stderr on two pipes (so lines from each stay
/// whole); its standard input is ours.
fn spawn(argv: &[OsString]) -> io::Result<(Child, OwnedFd, OwnedFd)> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = OwnedFd::from(child.stdout.take().expect("stdout was piped"));
    let err = OwnedFd::from(child.stderr.take().expect("stderr was piped"));
    Ok((child, out, err))
}

fn command_line(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The session id: start time in whole seconds above 32 random bits
/// ([`wire::session_id`]), so that a receiver can tell how long a session it joins
/// mid-way has been running. `sealing`: the random bits keep nonces apart across
/// sessions (SECURITY.md), so they must come from the OS generator; without it,
/// an error rather than a weaker fallback.
fn session_id(started_us: u64, sealing: bool) -> Result<u64, RunError> {
    let random = match ncu_host::random_u64() {
        Ok(r) => r as u32,
        Err(e) if sealing => {
            return Err(RunError(format!(
                "no randomness from the OS for a session id ({e}): refusing to seal \
                 with a guessable one"
            )))
        }
        // No entropy source: the microseconds and the pid still tell runs apart.
        Err(_) => (started_us as u32) ^ std::process::id().rotate_left(16),
    };
    Ok(wire::session_id((started_us / 1_000_000) as u32, random))
}

/// The wall clock in microseconds since the Unix epoch (0 before 1970).
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `poll(2)` for the loop; an error is like a wake-up with nothing ready (the loop
/// goes on; the reads and sends after it say what is wrong).
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) {
    let _ = ncu_host::poll(fds, timeout);
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let rc = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Writes all of `bytes` to `fd` (waiting for room if the descriptor is non-blocking).
fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of `bytes.len()` bytes.
        let rc = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if rc >= 0 {
            bytes = &bytes[rc as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => poll(&mut [ncu_host::pollfd(fd, libc::POLLOUT)], None),
            _ => return Err(err),
        }
    }
    Ok(())
}
