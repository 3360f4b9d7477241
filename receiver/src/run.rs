//! The receive loop: socket in, reassembler in the middle, output out. All ordering,
//! gap and session logic is [`ncu_proto::reassembler`]'s; this is glue.

use std::fmt;
use std::io::{self, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ncu_proto::event::{CorruptReason, Event};
use ncu_proto::reassembler::{Config as RxConfig, Reassembler};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use socket2::Socket;

use crate::cli::Config;
use crate::net::{self, Batch, Listener, WANTED_RCVBUF};
use crate::outdir::OutputDir;
use crate::output::{self, Counters};
use crate::report::{self, Ledger, ReceiverInfo};

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
    let mut buf = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)) {
        Ok(()) => u64::from_le_bytes(buf),
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

/// Why the loop stopped writing to standard output.
#[derive(Debug, PartialEq, Eq)]
enum Stdout {
    Open,
    /// Closed by the reader (`| head`): a clean stop.
    Closed,
}

/// Everything the events go to.
struct Sink<'a> {
    json: bool,
    prefix: bool,
    once: bool,
    out: BufWriter<io::StdoutLock<'a>>,
    stdout: Stdout,
    /// A stdout failure other than a closed pipe.
    failed: Option<io::Error>,
    ledger: Ledger,
    outdir: Option<OutputDir>,
    buf: Vec<u8>,
    /// A session ended (for `--once`).
    ended: bool,
}

impl Sink<'_> {
    fn event(&mut self, event: &Event) {
        self.ledger.note(event);
        if let Some(dir) = &mut self.outdir {
            output_dir_event(dir, event, &mut self.buf);
        }
        if matches!(event, Event::End { .. } | Event::Silent { .. }) {
            self.ended = true;
        }
        if self.stdout != Stdout::Open {
            return;
        }
        self.buf.clear();
        if self.json {
            output::json_event(event, &mut self.buf);
        } else {
            if let Some(marker) = output::text_marker(event) {
                self.buf.extend_from_slice(marker.as_bytes());
                self.buf.push(b'\n');
            }
            if let Event::Line { session, text, .. } = event {
                output::text_line(session, text, self.prefix, &mut self.buf);
            }
        }
        let result = self.out.write_all(&self.buf);
        self.check(result);
    }

    fn check(&mut self, result: io::Result<()>) {
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::BrokenPipe {
                self.failed = Some(e);
            }
            self.stdout = Stdout::Closed;
        }
    }

    fn flush(&mut self) {
        if self.stdout == Stdout::Open {
            let result = self.out.flush();
            self.check(result);
        }
        if let Some(dir) = &mut self.outdir {
            dir.flush();
        }
    }

    fn drain(&mut self, rx: &mut Reassembler) {
        while let Some(event) = rx.poll_event() {
            self.event(&event);
            rx.recycle(event);
        }
    }
}

fn output_dir_event(dir: &mut OutputDir, event: &Event, buf: &mut Vec<u8>) {
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
    if let Event::Line { text, .. } = event {
        output::text_line(session, text, false, buf);
    }
    dir.write(session, buf);
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
    signal_hook::flag::register(SIGUSR1, Arc::clone(&usr1))?;
    signal_hook::low_level::pipe::register(SIGUSR1, wake_tx)?;
    Ok(Signals { stop, usr1, wake })
}

fn bind(config: &Config) -> Result<Listener, RunError> {
    net::bind(config.listen, config.any_address).map_err(|e| {
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
    if listener.rcvbuf < WANTED_RCVBUF {
        eprintln!(
            "ncu-recv: the kernel capped the receive buffer at {} KiB (asked for {} KiB): \
             bursts may be dropped; raise the cap with: sysctl -w net.core.rmem_max={}",
            listener.rcvbuf / 1024,
            WANTED_RCVBUF / 1024,
            WANTED_RCVBUF
        );
    }
    let sig = signals().map_err(|e| RunError(format!("cannot set up signal handlers: {e}")))?;

    let started = Instant::now();
    let started_us = wall_us();
    let rx_config = RxConfig {
        reorder_window: config.reorder_window,
        dead_after: config.dead_after,
        nack: config.nack,
        rng_seed: random_seed(),
        ..RxConfig::default()
    };
    let mut rx = Reassembler::new(rx_config, started);
    if let Some(keys) = config.keys.clone() {
        rx.set_keys(keys, ncu_proto::seal::ReplayConfig::default());
    }
    let mut batch = Batch::new(config.slot_bytes);
    let stdout = io::stdout();
    let mut sink = Sink {
        json: config.json,
        prefix: config.prefix,
        once: config.once,
        out: BufWriter::with_capacity(128 * 1024, stdout.lock()),
        stdout: Stdout::Open,
        failed: None,
        ledger: Ledger::default(),
        outdir: config.output_dir.as_deref().map(OutputDir::new),
        buf: Vec::with_capacity(4096),
        ended: false,
    };
    let local = listener.local.to_string();
    let mut nacks = Nacks::default();
    let counters = |sink: &Sink<'_>, nacks: &Nacks| Counters {
        kernel_drops: net::proc_drops(fd),
        output_errors: sink.outdir.as_ref().map_or(0, |d| d.errors),
        rcvbuf: listener.rcvbuf,
        nack: config.nack,
        nacks_sent: nacks.sent,
        nacks_dropped: nacks.dropped,
        nack_send_errors: nacks.errors,
    };
    let write_report = |rx: &Reassembler, sink: &Sink<'_>, nacks: &Nacks| {
        let Some(path) = &config.report else {
            return;
        };
        let info = ReceiverInfo {
            local: &local,
            started_us,
            now_us: wall_us(),
            reorder_window: config.reorder_window,
            dead_after: config.dead_after,
        };
        let text = report::render(
            &info,
            &sink.ledger,
            &rx.summaries(),
            rx.stats(),
            &counters(sink, nacks),
        );
        if let Err(e) = report::write(path, &text) {
            eprintln!(
                "ncu-recv: cannot write the report to {}: {e}",
                path.display()
            );
        }
    };

    let mut recv_errors_reported = false;
    loop {
        if sig.stop.load(Ordering::Relaxed) {
            break;
        }
        if sig.usr1.swap(false, Ordering::Relaxed) {
            sink.flush();
            write_report(&rx, &sink, &nacks);
        }
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e) => {
                // Nothing a peer sends should stop the receiver: say it once, go on.
                if !recv_errors_reported {
                    eprintln!("ncu-recv: receive error (going on): {e}");
                    recv_errors_reported = true;
                }
                0
            }
        };
        // One clock reading per batch.
        let now = Instant::now();
        let wall = wall_us();
        for (meta, bytes) in batch.iter() {
            if meta.truncated {
                rx.reject(now, meta.from, CorruptReason::TooLarge);
            } else {
                rx.handle_datagram(now, wall, meta.from, bytes);
            }
        }
        if rx.poll_timeout().is_some_and(|t| t <= now) {
            rx.handle_timeout(now, wall);
        }
        nacks.send_all(&mut rx, &listener.socket, listener.local);
        sink.drain(&mut rx);
        if sink.stdout == Stdout::Closed || (sink.once && sink.ended) {
            break;
        }
        if n == 0 {
            sink.flush();
            if sink.stdout == Stdout::Closed {
                break;
            }
            let timeout = rx.poll_timeout().map(|t| t.saturating_duration_since(now));
            net::wait(fd, sig.wake.as_raw_fd(), timeout)
                .map_err(|e| RunError(format!("poll failed: {e}")))?;
            let mut drain = [0u8; 64];
            while matches!((&sig.wake).read(&mut drain), Ok(n) if n > 0) {}
        }
    }

    // Exit: give up every hole, say what is left, summarize, report.
    rx.flush();
    sink.drain(&mut rx);
    if sink.stdout == Stdout::Open {
        let c = counters(&sink, &nacks);
        let result = output::summary(sink.json, &rx.summaries(), rx.stats(), &c, &mut sink.out);
        sink.check(result);
    }
    sink.flush();
    write_report(&rx, &sink, &nacks);
    match sink.failed {
        Some(e) => Err(RunError(format!("cannot write to standard output: {e}"))),
        None => Ok(()),
    }
}
