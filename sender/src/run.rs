//! The IO loop around [`ncu_proto::sender::Sender`]: `poll(2)` on the inputs, the
//! signal pipe and the sockets, with a timeout for the sender's next deadline; every
//! read goes to the sender, and what it frames is handed to the kernel before the
//! next read. What to send, and when, is the sender's.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ncu_proto::sender::{self, Sender, To};
use ncu_proto::wire::{self, EndReason};

use crate::cli::Config;
use crate::command::{command_line, spawn, Wrapped};
use crate::harden;
use crate::kmsg::Kmsg;
use crate::net::{Received, Sockets};
use crate::netcons;
use crate::resolve::{self, Pending};
use crate::signals::Signals;

/// Bytes asked for per `read(2)`: more than a full pipe (64 KiB unless its writer
/// grew it); from a file, four GSO messages' worth, sent with one `sendmmsg`, so
/// bulk input takes a quarter of the system calls 64 KiB reads took.
const READ_SIZE: usize = 256 * 1024;
/// Without a pidfd, how often to look whether COMMAND exited after closing its output.
const CHILD_POLL: Duration = Duration::from_millis(20);
/// Most datagrams read from one socket per loop turn (NACKs): new lines go first.
const NACKS_PER_TURN: usize = 64;

/// A failure before the loop starts (exit status 1).
#[derive(Debug)]
pub(crate) struct RunError(pub(crate) String);

/// Runs a session to its end; returns the exit status.
pub(crate) fn run(config: Config) -> Result<u8, RunError> {
    let started = Instant::now();
    let started_us = wall_us();
    let sealing = config.keys.is_some();
    // Randomness first: early in boot the OS generator may make us wait, and the
    // signal pipe (our first socket) should mean we are ready to read.
    let first_id = session_id(started_us, sealing)?;
    let id_seed = id_seed(sealing)?;
    let mut signals =
        Signals::install().map_err(|e| RunError(format!("cannot catch signals: {e}")))?;
    if config.mlock {
        harden::lock_memory();
    }
    let source = match (&config.command, &config.kmsg) {
        (Some(argv), _) => command_line(argv),
        (None, Some(_)) => "/dev/kmsg".to_owned(),
        (None, None) => "stdin".to_owned(),
    };
    // Before any socket: a kernel log that cannot be read is one line and exit 1.
    let mut kmsg = match &config.kmsg {
        Some(k) => Some(Kmsg::open(&k.device, k)?),
        None => None,
    };
    let mut sender = Sender::new(
        sender::Config {
            name: config.name.clone(),
            source: source.clone(),
            pid: std::process::id(),
            max_datagram: config.max_datagram,
            max_line: config.max_line,
            pack: config.pack,
            pad_full: false,
            heartbeat: config.heartbeat,
            flush_after: config.flush_after,
            resend_buffer: config.resend_buffer,
            resend_rate: config.resend_rate,
            keys: config.keys.clone(),
            rollover_after: config.rollover_after,
            id_seed,
            streams: if config.command.is_some() { 2 } else { 1 },
        },
        first_id,
        started,
        started_us,
    );
    let sockets = Sockets::open(
        &config.dests,
        config.copies,
        sender.max_datagram(),
        config.gso,
    )
    .map_err(|e| RunError(format!("cannot open a UDP socket: {e}")))?;
    // Padding datagrams that were closed for lack of room to the full size makes
    // runs of them equal, as GSO needs; useless without GSO. A lone line never waits
    // nor grows: only a datagram followed by another one is ever padded.
    let mut io = Io {
        sockets,
        padding: false,
        verbose: config.verbose,
        foreign: 0,
        buf: vec![0; 1 << 16],
    };
    let mut pending = Pending::start(&config.dests);
    io.padding = io.sockets.gso();
    sender.set_pad_full(io.padding);
    io.transmit(&mut sender);
    // After the HELLO: it asked for the next hop's neighbour entry.
    let mut netconsole = match (config.netconsole, config.dests[0].addr) {
        (true, Some(dest)) => netcons::Target::start(dest, io.sockets.local_addr(0)),
        (true, None) => {
            eprintln!(
                "ncu-send: netconsole: {} does not resolve yet: no kernel netconsole; \
                 shipping with --kmsg goes on",
                config.dests[0].text
            );
            None
        }
        (false, _) => None,
    };
    if let Some(nc) = &netconsole {
        // The receiver joins the kernel's records from there to this session.
        sender.set_companion(Some(nc.source()), Instant::now(), wall_us());
        io.transmit(&mut sender);
    }

    let (mut inputs, mut child) = match &config.command {
        None if kmsg.is_some() => (Vec::new(), None),
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
                sender.close(EndReason::Exit(status), Instant::now(), wall_us());
                return io.finish(&mut sender, &mut signals, status as u8, &config, None);
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
    let mut now = started;
    loop {
        let inputs_open = inputs.iter().any(|i| i.fd.is_some()) || kmsg.is_some();
        let child_done = child.as_ref().is_none_or(|c| c.status.is_some());
        if stop.is_some() || (!inputs_open && child_done) {
            break;
        }
        let mut deadline = sender.poll_timeout();
        if pending.is_some() {
            // A name resolved in the background: its socket opens within a second.
            deadline = earliest(deadline, Some(now + resolve::RETRY));
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
        let kmsg_at = pollfds.len();
        let kmsg_fd = kmsg.as_ref().map_or(-1, Kmsg::fd);
        pollfds.push(ncu_host::pollfd(kmsg_fd, libc::POLLIN));
        let sockets_at = pollfds.len();
        io.push_sockets(&sender, &mut pollfds);
        poll(
            &mut pollfds,
            deadline.map(|d| d.saturating_duration_since(now)),
        );

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
        for (i, input) in inputs.iter_mut().enumerate() {
            if pollfds[1 + i].revents != 0 {
                input.read(i, &mut buf, &mut sender, now_us);
                io.transmit(&mut sender);
            }
        }
        // The kernel's log: every record waiting, sent, then noted as sent.
        if let Some(k) = kmsg.as_mut().filter(|_| pollfds[kmsg_at].revents != 0) {
            let ok = k.read(&mut sender, now_us);
            io.transmit(&mut sender);
            k.sent();
            if !ok {
                k.close();
                kmsg = None;
            }
        }
        now = Instant::now();
        sender.handle_timeout(now, now_us);
        io.transmit(&mut sender);
        if let Some(c) = child.as_mut() {
            if !inputs.iter().any(|i| i.fd.is_some()) {
                c.check_exit();
            }
        }
        // After the input: new lines always go first.
        io.answer(&mut sender, &pollfds[sockets_at..], now, now_us);
        if let Some(p) = pending.as_mut() {
            // A destination that was not there for the HELLO learns who sends now.
            let done = p.poll(&mut io.sockets, |dest| {
                sender.handle_destination(dest, now_us);
            });
            io.transmit(&mut sender);
            if done {
                pending = None;
            }
        }
        if let Some(nc) = netconsole.as_mut() {
            if nc.recheck(now, io.sockets.local_addr(0)) {
                sender.set_companion(Some(nc.source()), now, now_us);
                io.transmit(&mut sender);
            }
        }
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
    // What was read goes out, a partial line included, then END.
    sender.close(reason, Instant::now(), wall_us());
    // A clean end: the kernel's netconsole target goes too (a killed ncu-send leaves
    // it, so that the panic still gets out).
    if let Some(nc) = netconsole {
        nc.remove();
    }
    let status = status.clamp(0, 255) as u8;
    io.finish(&mut sender, &mut signals, status, &config, kmsg.as_mut())
}

/// The sockets and what the loop keeps beside them.
struct Io {
    sockets: Sockets,
    /// Full datagrams are padded (GSO works on some path).
    padding: bool,
    verbose: bool,
    /// Datagrams from another address than the destination (unconnected sockets).
    foreign: u64,
    /// One received datagram (the largest UDP payload).
    buf: Vec<u8>,
}

impl Io {
    /// Sends every batch the sender has.
    fn transmit(&mut self, sender: &mut Sender) {
        while let Some(t) = sender.poll_transmit() {
            match t.to {
                To::All => self.sockets.send(t.datagrams()),
                To::One(dest) => self.sockets.send_one(dest, t.datagrams()),
            }
        }
        // GSO turned out not to work on any path: stop padding.
        if self.padding && !self.sockets.gso() {
            self.padding = false;
            sender.set_pad_full(false);
        }
    }

    /// The sockets, to poll for errors, and for NACKs when the sender wants them.
    fn push_sockets(&self, sender: &Sender, pollfds: &mut Vec<libc::pollfd>) {
        let events = if sender.wants_datagrams() {
            libc::POLLIN
        } else {
            0
        };
        pollfds.extend(self.sockets.fds().map(|fd| ncu_host::pollfd(fd, events)));
    }

    /// Collects socket errors, and hands up to [`NACKS_PER_TURN`] datagrams waiting
    /// on each readable socket to the sender.
    fn answer(&mut self, sender: &mut Sender, pollfds: &[libc::pollfd], now: Instant, now_us: u64) {
        for (dest, pfd) in pollfds.iter().enumerate() {
            if pfd.revents & libc::POLLERR != 0 {
                self.sockets.take_error(dest);
            }
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            for _ in 0..NACKS_PER_TURN {
                match self.sockets.recv(dest, &mut self.buf) {
                    Received::Datagram(n) => {
                        sender.handle_datagram(dest, &self.buf[..n], now, now_us);
                        self.transmit(sender);
                    }
                    Received::Foreign => self.foreign += 1,
                    Received::Nothing | Received::Error => break,
                }
            }
        }
    }

    /// After END: lingers while the sender does (answering NACKs, repeating END),
    /// until it is done or a signal comes; prints the counters with `--verbose`;
    /// returns `status`.
    fn finish(
        mut self,
        sender: &mut Sender,
        signals: &mut Signals,
        status: u8,
        config: &Config,
        kmsg: Option<&mut Kmsg>,
    ) -> Result<u8, RunError> {
        self.transmit(sender);
        if let Some(k) = kmsg {
            k.close();
            if self.verbose {
                let s = k.stats();
                eprintln!(
                    "ncu-send: kernel log: {} records read, {} sent, {} left out by \
                     --kmsg-level, {} overwritten in the ring before they were read \
                     ({} overruns)",
                    s.read, s.sent, s.filtered, s.overwritten, s.overruns
                );
            }
        }
        let mut pollfds = Vec::new();
        while !sender.is_closed() {
            let now = Instant::now();
            sender.handle_timeout(now, wall_us());
            self.transmit(sender);
            let Some(deadline) = sender.poll_timeout() else {
                break;
            };
            pollfds.clear();
            pollfds.push(ncu_host::pollfd(signals.fd(), libc::POLLIN));
            self.push_sockets(sender, &mut pollfds);
            poll(&mut pollfds, Some(deadline.saturating_duration_since(now)));
            // SIGINT/SIGTERM end the linger at once.
            if pollfds[0].revents != 0 && signals.take().0 > 0 {
                break;
            }
            self.answer(sender, &pollfds[1..], Instant::now(), wall_us());
        }
        if self.verbose {
            self.report(sender, config);
        }
        Ok(status)
    }

    /// `--verbose`: what was sent, and what recovery did.
    fn report(&self, sender: &Sender, config: &Config) {
        let sent = self.sockets.stats();
        let stats = sender.stats();
        eprintln!(
            "ncu-send: session {:016x}: {} lines, {} datagrams sent to {} destination(s), \
             {} dropped; send errors: {}",
            sender.session(),
            sender.lines_sent(),
            sent.sent,
            config.dests.len(),
            sent.dropped,
            sent.errors_summary(),
        );
        if let Some(ring) = sender.ring() {
            let r = stats.recovery;
            eprintln!(
                "ncu-send: recovery: {} NACKs answered, {} dropped (bad or another \
                 session), {} from elsewhere; {} datagrams resent ({} bytes), {} \
                 refused by the rate limit; {} ranges gone ({} GONE sent, {} limited); \
                 ring {} bytes in {} datagrams",
                r.nacks,
                stats.bad,
                self.foreign,
                r.resent,
                r.resent_bytes,
                r.limited,
                r.gone,
                stats.gone_sent,
                stats.gone_limited,
                ring.held_bytes(),
                ring.len(),
            );
        }
    }
}

/// One input stream: standard input, or COMMAND's stdout or stderr.
struct Input {
    /// `None` once closed.
    fd: Option<RawFd>,
    /// Keeps COMMAND's pipe open (standard input is not ours to close).
    owned: Option<OwnedFd>,
    /// Where `--tee` copies to (1 or 2), until that fails.
    tee: Option<RawFd>,
}

impl Input {
    fn new(fd: RawFd, owned: Option<OwnedFd>, config: &Config, tee_fd: RawFd) -> Input {
        Input {
            fd: Some(fd),
            owned,
            tee: config.tee.then_some(tee_fd),
        }
    }

    /// Reads once into `buf` and hands the bytes to the sender as stream `stream`
    /// (it frames every line completed), then copies them for `--tee`.
    fn read(&mut self, stream: usize, buf: &mut [u8], sender: &mut Sender, now_us: u64) {
        let Some(fd) = self.fd else { return };
        match read_fd(fd, buf) {
            Ok(0) => self.close(stream, sender, now_us),
            Ok(n) => {
                sender.handle_input(stream, &buf[..n], now_us);
                if let Some(tee) = self.tee {
                    if write_all(tee, &buf[..n]).is_err() {
                        // A closed standard output stops the copy, never the sending.
                        self.tee = None;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.close(stream, sender, now_us),
        }
    }

    /// End of this input: a trailing partial line goes out.
    fn close(&mut self, stream: usize, sender: &mut Sender, now_us: u64) {
        sender.handle_input_end(stream, now_us);
        self.fd = None;
        self.owned = None;
    }
}

/// The session id: start time in whole seconds above 32 random bits
/// ([`wire::session_id`]), so that a receiver can tell how long a session it joins
/// mid-way has been running. `sealing`: the random bits keep nonces apart across
/// sessions (SECURITY.md), so they must come from the OS generator; without it,
/// an error rather than a weaker fallback.
fn session_id(started_us: u64, sealing: bool) -> Result<u64, RunError> {
    // Unsealed, the bits only tell runs apart: never wait for the generator (early
    // in boot it may take seconds to be ready).
    let random = if sealing {
        ncu_host::random_u64()
    } else {
        ncu_host::random_u64_now()
    };
    let random = match random {
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

/// The key of the keystream later sessions' ids come from (sealing only: only a
/// sealed session rolls over): 32 bytes from the OS generator, else an error.
fn id_seed(sealing: bool) -> Result<[u8; 32], RunError> {
    let mut seed = [0u8; 32];
    if sealing {
        for chunk in seed.chunks_mut(8) {
            let random = ncu_host::random_u64().map_err(|e| {
                RunError(format!(
                    "no randomness from the OS for session ids ({e}): refusing to seal \
                     with guessable ones"
                ))
            })?;
            chunk.copy_from_slice(&random.to_le_bytes());
        }
    }
    Ok(seed)
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
