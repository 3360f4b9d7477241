//! The receive loop: socket in, reassembler in the middle, output out. All ordering,
//! gap and session logic is [`ncu_proto::reassembler`]'s; this is glue.

use std::fmt;
use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ncu_proto::event::{CorruptReason, Event};
use ncu_proto::reassembler::{Config as RxConfig, Reassembler};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use socket2::Socket;

use crate::cli::Config;
use crate::escape;
use crate::hook;
use crate::intake::Intake;
use crate::journal;
use crate::json;
use crate::metrics::Metrics;
use crate::net::{self, Listener};
use crate::notify::{Health, Notifier};
use crate::outdir::OutputDir;
use crate::output::{self, Counters, LineBytes};
use crate::report::{self, Ledger, ReceiverInfo};
use crate::stdout::EventOutput;

/// A runtime failure: printed on one line, exit status 1.
#[derive(Debug)]
pub(crate) struct RunError(pub(crate) String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A seed for the reassembler's random NACK counters: 8 bytes from the kernel's
/// random source, else (no /dev/urandom) the clock and the process id.
fn random_seed() -> u64 {
    match ncu_host::random_u64() {
        Ok(r) => r,
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}

/// NACKs handed to the socket, and what became of them.
#[derive(Debug, Default)]
struct Nacks {
    sent: u64,
    /// The send buffer was full.
    dropped: u64,
    errors: u64,
    error_reported: bool,
}

impl Nacks {
    /// Sends every datagram the reassembler wants sent (NACKs), from the listening
    /// socket, without blocking; failures are counted, never fatal.
    fn send_all(&mut self, rx: &mut Reassembler, socket: &Socket, local: SocketAddr) {
        while let Some(t) = rx.poll_transmit() {
            match net::send_to(socket, local, t.to, &t.bytes) {
                Ok(net::Sent::Sent) => self.sent += 1,
                Ok(net::Sent::Full) => self.dropped += 1,
                Err(e) => {
                    self.errors += 1;
                    if !self.error_reported {
                        eprintln!("ncu-recv: cannot send a NACK to {} (going on): {e}", t.to);
                        self.error_reported = true;
                    }
                }
            }
        }
    }
}

/// How often `STATUS=` is brought up to date (when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// While standard output fails (a full disk), how often writing it is tried again.
const OUTPUT_RETRY: Duration = Duration::from_secs(1);

/// Everything the events go to.
/// What standard output carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Lines and `### ncu:` markers.
    Text,
    /// `--json`.
    Json,
    /// `--journal-export -`: the Journal Export Format.
    Journal,
}

/// `--journal-export PATH`: the export stream written to a file or a FIFO.
struct JournalFile {
    out: EventOutput<File>,
    path: std::path::PathBuf,
    /// Said on stderr that its reader went away.
    warned: bool,
}

struct Sink {
    format: Format,
    journal: Option<JournalFile>,
    /// A journal entry being built, and what builds it.
    entry: Vec<u8>,
    journal_writer: journal::Journal,
    /// Said that a journal export on standard output lost its reader.
    stdout_warned: bool,
    /// `--on-silent` / `--on-end` are given: their events are kept in `triggers`
    /// until the loop hands them to the hooks.
    hook_silent: bool,
    hook_end: bool,
    triggers: Vec<Event>,
    prefix: bool,
    /// How line bytes go to standard output in text mode.
    line_bytes: LineBytes,
    once: bool,
    /// Standard output, in whole events.
    out: EventOutput<File>,
    /// When writing a failing standard output was last tried.
    out_tried: Instant,
    ledger: Ledger,
    outdir: Option<OutputDir>,
    buf: Vec<u8>,
    /// The marker of events that standard output dropped, before the next event.
    marker: Vec<u8>,
    /// A session ended (for `--once`).
    ended: bool,
}

impl Sink {
    fn event(&mut self, event: &Event, now: Instant, wall: u64) {
        self.ledger.note(event);
        if let Some(dir) = &mut self.outdir {
            output_dir_event(dir, event, &mut self.buf, now, wall);
        }
        if matches!(event, Event::End { .. } | Event::Silent { .. }) {
            self.ended = true;
        }
        match event {
            Event::Silent { .. } if self.hook_silent => self.triggers.push(event.clone()),
            Event::End { lost, .. } if self.hook_end && *lost > 0 => {
                self.triggers.push(event.clone())
            }
            _ => {}
        }
        if let Some(j) = &mut self.journal {
            self.entry.clear();
            self.journal_writer.entry(event, wall, &mut self.entry);
            if !self.entry.is_empty() && !j.out.is_closed() {
                j.out.push(&[], &self.entry);
                if j.out.is_closed() && !j.warned {
                    j.warned = true;
                    eprintln!(
                        "ncu-recv: --journal-export {}: its reader went away; the journal \
                         export stops here, receiving goes on",
                        j.path.display()
                    );
                }
            }
        }
        if self.out.is_closed() {
            return;
        }
        self.buf.clear();
        match self.format {
            Format::Json => json::event(event, &mut self.buf),
            Format::Journal => self.journal_writer.entry(event, wall, &mut self.buf),
            Format::Text => {
                if let Some(marker) = output::text_marker(event) {
                    self.buf.extend_from_slice(marker.as_bytes());
                    self.buf.push(b'\n');
                }
                if let Event::Line {
                    session,
                    text,
                    kernel,
                    ..
                } = event
                {
                    let kernel = kernel.as_deref();
                    let (prefix, bytes) = (self.prefix, self.line_bytes);
                    output::text_line(session, text, kernel, prefix, bytes, &mut self.buf);
                }
            }
        }
        if !self.buf.is_empty() {
            self.push_buf();
        }
    }

    /// Hands the event in `buf` to standard output, after a marker if events were
    /// dropped before it.
    fn push_buf(&mut self) {
        self.marker.clear();
        let hole = self.out.hole();
        if hole > 0 && self.format != Format::Journal {
            let json = self.format == Format::Json;
            output::output_dropped(json, hole, self.out.hole_error(), &mut self.marker);
        }
        self.out.push(&self.marker, &self.buf);
    }

    /// Standard output was closed by its reader, and that ends ncu-recv (`| head`).
    /// A journal export on standard output whose reader went away only stops the
    /// export: receiving goes on (the files, the report and the hooks still serve).
    fn stdout_gone(&mut self) -> bool {
        if !self.out.is_closed() {
            return false;
        }
        if self.format != Format::Journal {
            return true;
        }
        if !self.stdout_warned {
            self.stdout_warned = true;
            eprintln!(
                "ncu-recv: --journal-export -: its reader went away; the journal export \
                 stops here, receiving goes on"
            );
        }
        false
    }

    fn flush(&mut self) {
        self.out.flush();
        if let Some(j) = &mut self.journal {
            j.out.flush();
        }
        self.out_tried = Instant::now();
        if let Some(dir) = &mut self.outdir {
            dir.flush();
        }
    }

    fn drain(&mut self, rx: &mut Reassembler, now: Instant, wall: u64, health: &mut Health) {
        while let Some(event) = rx.poll_event() {
            health.note(&event);
            self.event(&event, now, wall);
            rx.recycle(event);
        }
    }
}

fn output_dir_event(
    dir: &mut OutputDir,
    event: &Event,
    buf: &mut Vec<u8>,
    now: Instant,
    wall: u64,
) {
    // Start markers stay on stdout: a file is one session already, and its name is
    // only known once a HELLO or heartbeat arrived.
    let session = match event {
        Event::Line { session, .. }
        | Event::Gap { session, .. }
        | Event::Silent { session, .. }
        | Event::Resumed { session, .. }
        | Event::End { session, .. }
        | Event::Retired { session } => session,
        Event::Corrupt { .. } | Event::Start { .. } => return,
    };
    buf.clear();
    if let Some(marker) = output::text_marker(event) {
        buf.extend_from_slice(marker.as_bytes());
        buf.push(b'\n');
    }
    if let Event::Line { text, kernel, .. } = event {
        output::text_line(session, text, kernel.as_deref(), false, LineBytes::Raw, buf);
    }
    dir.write(session, buf, now, wall);
    if matches!(
        event,
        Event::End { .. } | Event::Silent { .. } | Event::Retired { .. }
    ) {
        dir.close(session.id);
    }
}

struct Signals {
    stop: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    wake: UnixStream,
}

fn signals() -> io::Result<Signals> {
    let stop = Arc::new(AtomicBool::new(false));
    let usr1 = Arc::new(AtomicBool::new(false));
    let (wake, wake_tx) = UnixStream::pair()?;
    wake.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    for sig in [SIGINT, SIGTERM] {
        // A second SIGINT/SIGTERM while stopping exits at once (status 1).
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
        signal_hook::low_level::pipe::register(sig, wake_tx.try_clone()?)?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGUSR1, Arc::clone(&usr1))?;
    signal_hook::low_level::pipe::register(SIGUSR1, wake_tx.try_clone()?)?;
    signal_hook::flag::register(SIGHUP, Arc::clone(&hup))?;
    signal_hook::low_level::pipe::register(SIGHUP, wake_tx)?;
    Ok(Signals {
        stop,
        usr1,
        hup,
        wake,
    })
}

/// Opens `--journal-export PATH` for appending (a file, or a FIFO a reader holds).
fn open_journal(path: &std::path::Path) -> Result<JournalFile, RunError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| RunError(format!("--journal-export {}: {e}", path.display())))?;
    Ok(JournalFile {
        out: EventOutput::new(file),
        path: path.to_owned(),
        warned: false,
    })
}

fn bind(config: &Config) -> Result<Listener, RunError> {
    match net::inherited(config.receive_buffer) {
        Ok(Some(listener)) => return Ok(listener),
        Ok(None) => {}
        Err(e) => return Err(RunError(format!("socket activation: {e}"))),
    }
    net::bind(config.listen, config.any_address, config.receive_buffer).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            RunError(format!(
                "cannot listen on {}: port {} is already in use (another ncu-recv?); \
                 pick another port",
                config.listen,
                config.listen.port()
            ))
        } else {
            RunError(format!("cannot listen on {}: {e}", config.listen))
        }
    })
}

/// One datagram into the reassembler.
fn take(
    rx: &mut Reassembler,
    now: Instant,
    wall: u64,
    from: SocketAddr,
    bytes: &[u8],
    truncated: bool,
) {
    if truncated {
        rx.reject(now, from, CorruptReason::TooLarge);
    } else {
        rx.handle_datagram(now, wall, from, bytes);
    }
}

/// Runs until SIGINT/SIGTERM, `--once`, or a closed standard output.
pub(crate) fn run(config: Config) -> Result<(), RunError> {
    let listener = bind(&config)?;
    let fd = listener.socket.as_raw_fd();
    let family = if listener.dual_stack {
        "IPv6 and IPv4"
    } else if listener.local.is_ipv6() {
        "IPv6"
    } else {
        "IPv4"
    };
    eprintln!("ncu-recv: listening on {} (udp, {family})", listener.local);
    let capped = net::rcvbuf_capped(listener.rcvbuf, config.receive_buffer);
    if let Some(capped) = &capped {
        eprintln!("ncu-recv: {capped}");
    }
    let sig = signals().map_err(|e| RunError(format!("cannot set up signal handlers: {e}")))?;
    let mut notifier = Notifier::from_env();
    let mut health = Health::default();
    health.capped = capped.clone();
    let mut next_status = Instant::now();
    if let Some(n) = &mut notifier {
        n.send(&format!(
            "READY=1\nSTATUS=listening on {} ({family}), no sessions yet",
            listener.local
        ));
        n.watchdog(Instant::now());
    }

    let started = Instant::now();
    let started_us = wall_us();
    let rx_config = RxConfig {
        reorder_window: config.reorder_window,
        dead_after: config.dead_after,
        nack: config.nack,
        max_held_bytes: config.max_held,
        max_sessions: config.max_sessions,
        rng_seed: random_seed(),
        ..RxConfig::default()
    };
    let mut rx = Reassembler::new(rx_config, started);
    if let Some(keys) = config.keys.clone() {
        rx.set_keys(keys, ncu_proto::seal::ReplayConfig::default());
    }
    let mut intake = Intake::start(fd, config.slot_bytes)
        .map_err(|e| RunError(format!("cannot start the receiving thread: {e}")))?;
    // Written through a descriptor of its own, so that every write's outcome is known.
    let stdout = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| RunError(format!("cannot use standard output: {e}")))?;
    let mut sink = Sink {
        format: match (&config.journal_export, config.json) {
            (Some(p), _) if p.as_os_str() == "-" => Format::Journal,
            (_, true) => Format::Json,
            _ => Format::Text,
        },
        journal: match &config.journal_export {
            Some(p) if p.as_os_str() != "-" => Some(open_journal(p)?),
            _ => None,
        },
        entry: Vec::new(),
        journal_writer: journal::Journal::default(),
        stdout_warned: false,
        hook_silent: config.on_silent.is_some(),
        hook_end: config.on_end.is_some(),
        triggers: Vec::new(),
        prefix: config.prefix,
        line_bytes: if !config.raw && io::stdout().is_terminal() {
            LineBytes::Terminal
        } else {
            LineBytes::Raw
        },
        once: config.once,
        out: EventOutput::new(File::from(stdout)),
        out_tried: started,
        ledger: Ledger::default(),
        outdir: config
            .output_dir
            .as_deref()
            .map(|d| OutputDir::new(d, config.sync_every)),
        buf: Vec::with_capacity(4096),
        marker: Vec::new(),
        ended: false,
    };
    let local = listener.local.to_string();
    let mut nacks = Nacks::default();
    let ring = intake.counts();
    let counters = |sink: &Sink, nacks: &Nacks| Counters {
        kernel_drops: net::proc_drops(fd),
        ring_full: ring.full.load(std::sync::atomic::Ordering::Relaxed),
        ring_taken: ring.taken.load(std::sync::atomic::Ordering::Relaxed),
        output_errors: sink.outdir.as_ref().map_or(0, |d| d.errors),
        stdout_dropped: sink.out.dropped(),
        rcvbuf: listener.rcvbuf,
        rcvbuf_wanted: config.receive_buffer,
        nack: config.nack,
        nacks_sent: nacks.sent,
        nacks_dropped: nacks.dropped,
        nack_send_errors: nacks.errors,
        max_held: config.max_held,
    };
    let session_report = |rx: &Reassembler, sink: &Sink, nacks: &Nacks, sessions: &[_]| {
        let info = ReceiverInfo {
            local: &local,
            started_us,
            now_us: wall_us(),
            reorder_window: config.reorder_window,
            dead_after: config.dead_after,
        };
        report::render(
            &info,
            &sink.ledger,
            sessions,
            rx.stats(),
            &counters(sink, nacks),
        )
    };
    let hooks = match (&config.on_silent, &config.on_end) {
        (None, None) => None,
        _ => Some(
            hook::Hooks::start(config.hook_max, config.hook_timeout)
                .map_err(|e| RunError(format!("cannot start the hooks: {e}")))?,
        ),
    };
    let mut metrics = (config.metrics.is_some() || config.metrics_file.is_some()).then(|| {
        Metrics::start(
            config.metrics,
            config.metrics_file.clone(),
            config.metrics_max_senders,
        )
    });
    let write_report = |rx: &Reassembler, sink: &Sink, nacks: &Nacks| {
        let Some(path) = &config.report else {
            return;
        };
        let text = session_report(rx, sink, nacks, &rx.summaries());
        if let Err(e) = report::write(path, &text) {
            eprintln!(
                "ncu-recv: cannot write the report to {}: {e}",
                path.display()
            );
        }
    };

    loop {
        if sig.stop.load(Ordering::Relaxed) {
            break;
        }
        if sig.usr1.swap(false, Ordering::Relaxed) {
            sink.flush();
            write_report(&rx, &sink, &nacks);
        }
        if sig.hup.swap(false, Ordering::Relaxed) {
            // Log rotation: every --output-dir file opens again by name, and the
            // report is written anew.
            sink.flush();
            if let Some(dir) = &mut sink.outdir {
                dir.reopen();
            }
            write_report(&rx, &sink, &nacks);
        }
        // One clock reading per batch.
        let now = Instant::now();
        let wall = wall_us();
        let n = intake.take(true, |from, bytes, truncated| {
            take(&mut rx, now, wall, from, bytes, truncated)
        });
        if rx.poll_timeout().is_some_and(|t| t <= now) {
            rx.handle_timeout(now, wall);
        }
        nacks.send_all(&mut rx, &listener.socket, listener.local);
        sink.drain(&mut rx, now, wall, &mut health);
        if let Some(hooks) = &hooks {
            for event in std::mem::take(&mut sink.triggers) {
                let (command, label) = match &event {
                    Event::Silent { session, .. } => (&config.on_silent, ("silent", session)),
                    Event::End { session, .. } => (&config.on_end, ("end", session)),
                    _ => continue,
                };
                let Some(command) = command else { continue };
                let summary = rx.summary_of(label.1);
                let report = session_report(&rx, &sink, &nacks, summary.as_slice());
                hooks.submit(hook::Job {
                    command: command.clone(),
                    env: hook::env_of(&event, summary.as_ref()),
                    report,
                    label: format!(
                        "--on-{} hook for sender={} session={}",
                        label.0,
                        escape::field(label.1.name().as_bytes()),
                        label.1.id_hex()
                    ),
                });
            }
        }
        if let Some(dir) = &mut sink.outdir {
            dir.sync_due(now);
        }
        if let Some(m) = &mut metrics {
            if now >= m.next_wakeup() {
                m.update(&rx, &counters(&sink, &nacks), now, wall, false);
            }
        }
        if let Some(n) = &mut notifier {
            n.watchdog(now);
            if health.changed && now >= next_status {
                n.status(health.line(rx.session_count()));
                next_status = now + STATUS_EVERY;
            }
        }
        if sink.stdout_gone() || (sink.once && sink.ended) {
            break;
        }
        if n > 0 && sink.out.is_failing() && now >= sink.out_tried + OUTPUT_RETRY {
            sink.flush();
        }
        if n == 0 {
            sink.flush();
            if sink.stdout_gone() {
                break;
            }
            let next_sync = sink.outdir.as_ref().and_then(OutputDir::next_sync);
            let next_notify = notifier.as_ref().and_then(|n| {
                let status = health.changed.then_some(next_status);
                [n.next_wakeup(), status].into_iter().flatten().min()
            });
            let next_metrics = metrics.as_ref().map(Metrics::next_wakeup);
            let mut timeout = [rx.poll_timeout(), next_sync, next_notify, next_metrics]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(now));
            if sink.out.is_failing() {
                timeout = Some(timeout.map_or(OUTPUT_RETRY, |t| t.min(OUTPUT_RETRY)));
            }
            intake
                .wait(sig.wake.as_raw_fd(), timeout)
                .map_err(|e| RunError(format!("poll failed: {e}")))?;
            let mut drain = [0u8; 64];
            while matches!((&sig.wake).read(&mut drain), Ok(n) if n > 0) {}
        }
    }

    // Exit: give up every hole, say what is left, summarize, report.
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    // What the thread already took off the socket is received: it is reassembled
    // and accounted like the rest before the exit flush.
    loop {
        let (now, wall) = (Instant::now(), wall_us());
        let n = intake.take(false, |from, bytes, truncated| {
            take(&mut rx, now, wall, from, bytes, truncated)
        });
        if n == 0 {
            break;
        }
    }
    rx.flush(Instant::now(), wall_us());
    sink.drain(&mut rx, Instant::now(), wall_us(), &mut health);
    if !sink.out.is_closed() {
        let c = counters(&sink, &nacks);
        sink.buf.clear();
        // Into memory: cannot fail.
        let json = sink.format == Format::Json;
        // The journal stream gets no summary: its counters are in the report.
        if sink.format != Format::Journal
            && output::summary(json, &rx.summaries(), rx.stats(), &c, &mut sink.buf).is_ok()
        {
            sink.push_buf();
        }
    }
    sink.flush();
    write_report(&rx, &sink, &nacks);
    match sink.out.loss() {
        Some(loss) => Err(RunError(loss)),
        None => Ok(()),
    }
}
