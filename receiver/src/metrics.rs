//! `--metrics ADDR:PORT` (GET `/metrics`, the Prometheus text format) and
//! `--metrics-file PATH` (the same text, written atomically every few seconds, for
//! node_exporter's textfile collector).
//!
//! The receive loop renders the text at most once per [`RENDER_EVERY`] into a
//! shared snapshot; a server thread answers scrapes from that snapshot and a writer
//! thread writes the file, so neither a slow scraper nor a slow disk touches the
//! loop. Per-sender series are bounded (`--metrics-max-senders`, default 500):
//! silent senders first (the ones an alert is for), then those that lost most, then
//! the most recently heard; the rest are counted in `ncu_metrics_senders_omitted`
//! and in the totals.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ncu_proto::event::Fate;
use ncu_proto::reassembler::{Reassembler, SessionView};

use crate::escape;
use crate::output::Counters;

/// How often the loop renders the text.
pub(crate) const RENDER_EVERY: Duration = Duration::from_secs(1);
/// How often `--metrics-file` is written.
const FILE_EVERY: Duration = Duration::from_secs(5);
/// A scraper gets this long to send its request and take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

type Snapshot = Arc<Mutex<Arc<String>>>;

/// The shared snapshot and its consumers.
pub(crate) struct Metrics {
    snapshot: Snapshot,
    max_senders: usize,
    next_render: Instant,
}

impl Metrics {
    /// Starts the server on `listen` and the file writer for `file`. A port that is
    /// taken or a folder that is missing is one line on stderr; receiving goes on
    /// (without that consumer).
    pub(crate) fn start(
        listen: Option<SocketAddr>,
        file: Option<PathBuf>,
        max_senders: usize,
    ) -> Metrics {
        let snapshot: Snapshot = Arc::new(Mutex::new(Arc::new(String::new())));
        if let Some(addr) = listen {
            match TcpListener::bind(addr) {
                Ok(listener) => {
                    let shared = snapshot.clone();
                    let local = listener.local_addr().map_or(addr, |a| a);
                    eprintln!("ncu-recv: metrics on http://{local}/metrics");
                    let spawned = std::thread::Builder::new()
                        .name("metrics".to_owned())
                        .spawn(move || serve(&listener, &shared));
                    if let Err(e) = spawned {
                        eprintln!("ncu-recv: --metrics {addr}: cannot start: {e}");
                    }
                }
                Err(e) => eprintln!(
                    "ncu-recv: --metrics {addr}: cannot listen ({e}); no metrics served, \
                     receiving goes on"
                ),
            }
        }
        if let Some(path) = file {
            let shared = snapshot.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-file".to_owned())
                .spawn(move || write_file_every(&path, &shared));
            if let Err(e) = spawned {
                eprintln!("ncu-recv: --metrics-file: cannot start: {e}");
            }
        }
        Metrics {
            snapshot,
            max_senders,
            next_render: Instant::now(),
        }
    }

    /// Renders the text when [`RENDER_EVERY`] has passed (or `force`).
    pub(crate) fn update(
        &mut self,
        rx: &Reassembler,
        counters: &Counters,
        now: Instant,
        wall_us: u64,
        force: bool,
    ) {
        if !force && now < self.next_render {
            return;
        }
        self.next_render = now + RENDER_EVERY;
        let text = Arc::new(render(rx, counters, wall_us, self.max_senders));
        if let Ok(mut s) = self.snapshot.lock() {
            *s = text;
        }
    }

    /// When the loop should render next.
    pub(crate) fn next_wakeup(&self) -> Instant {
        self.next_render
    }
}

fn current(snapshot: &Snapshot) -> Arc<String> {
    snapshot.lock().map(|s| s.clone()).unwrap_or_default()
}

fn serve(listener: &TcpListener, snapshot: &Snapshot) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = answer(stream, snapshot);
    }
}

/// Answers one HTTP/1.x request: `GET /metrics` (or `/`), 404 otherwise.
fn answer(mut stream: TcpStream, snapshot: &Snapshot) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let ok = matches!(method, Some(b"GET") | Some(b"HEAD"))
        && matches!(path, Some(b"/metrics") | Some(b"/"));
    if !ok {
        let body = "only GET /metrics is served here\n";
        return write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let text = current(snapshot);
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    )?;
    if method != Some(b"HEAD") {
        stream.write_all(text.as_bytes())?;
    }
    stream.flush()
}

fn write_file_every(path: &Path, snapshot: &Snapshot) {
    let mut warned = false;
    let mut last: Option<Instant> = None;
    loop {
        // The first text as soon as there is one, then every FILE_EVERY.
        std::thread::sleep(Duration::from_millis(250));
        if last.is_some_and(|t| t.elapsed() < FILE_EVERY) {
            continue;
        }
        let text = current(snapshot);
        if text.is_empty() {
            continue;
        }
        last = Some(Instant::now());
        let tmp = path.with_extension("prom.tmp");
        let written =
            std::fs::write(&tmp, text.as_bytes()).and_then(|()| std::fs::rename(&tmp, path));
        match written {
            Ok(()) => warned = false,
            Err(e) if !warned => {
                warned = true;
                eprintln!(
                    "ncu-recv: --metrics-file {}: cannot write ({e}); trying again every {}s",
                    path.display(),
                    FILE_EVERY.as_secs()
                );
            }
            Err(_) => {}
        }
    }
}

/// A Prometheus label value: network text escaped by the one rule, then `\` and `"`
/// as the text format wants.
fn label(bytes: &[u8]) -> String {
    escape::field(bytes)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn fate_name(f: Fate) -> &'static str {
    f.as_str()
}

/// The whole text: receiver counters, sessions by state, and the chosen senders.
pub(crate) fn render(
    rx: &Reassembler,
    counters: &Counters,
    wall_us: u64,
    max_senders: usize,
) -> String {
    let stats = rx.stats();
    let mut out = String::with_capacity(4096);
    let counter = |out: &mut String, name: &str, help: &str, value: u64| {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    };
    counter(
        &mut out,
        "ncu_datagrams_received_total",
        "Datagrams received.",
        stats.datagrams,
    );
    counter(
        &mut out,
        "ncu_bytes_received_total",
        "Bytes received.",
        stats.bytes,
    );
    family(
        &mut out,
        "ncu_datagrams_rejected_total",
        "counter",
        "Datagrams rejected (corrupt, unauthenticated, ...), by reason.",
    );
    let _ = writeln!(
        out,
        "ncu_datagrams_rejected_total{{reason=\"any\"}} {}",
        stats.corrupt_total()
    );
    for (reason, n) in &stats.corrupt {
        let _ = writeln!(
            out,
            "ncu_datagrams_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    counter(
        &mut out,
        "ncu_receive_ring_datagrams_total",
        "Datagrams ncu-recv's receiving thread took off the socket while the main loop was busy.",
        counters.ring_taken,
    );
    counter(
        &mut out,
        "ncu_receive_ring_full_total",
        "Times ncu-recv's own receive ring was full and its receiving thread waited.",
        counters.ring_full,
    );
    if let Some(drops) = counters.kernel_drops {
        counter(
            &mut out,
            "ncu_kernel_drops_total",
            "Datagrams the kernel dropped before ncu-recv read them (receive buffer full).",
            drops,
        );
    }
    counter(
        &mut out,
        "ncu_nacks_sent_total",
        "NACK datagrams sent.",
        counters.nacks_sent,
    );
    counter(
        &mut out,
        "ncu_nacks_suppressed_total",
        "NACKs not sent because of the rate limit.",
        stats.nacks_suppressed,
    );
    counter(
        &mut out,
        "ncu_output_dropped_events_total",
        "Events standard output could not take (a full disk).",
        counters.stdout_dropped,
    );
    counter(
        &mut out,
        "ncu_output_dir_errors_total",
        "Writes under --output-dir that failed.",
        counters.output_errors,
    );
    counter(
        &mut out,
        "ncu_sessions_seen_total",
        "Sessions seen.",
        stats.sessions,
    );
    counter(
        &mut out,
        "ncu_sessions_retired_total",
        "Sessions dropped from memory to make room.",
        stats.retired,
    );
    counter(
        &mut out,
        "ncu_held_limit_reached_total",
        "Times the memory budget (--max-held) was full.",
        stats.held_limit_reached,
    );
    family(
        &mut out,
        "ncu_held_bytes",
        "gauge",
        "Bytes held for senders (lines waiting for a hole, fragments).",
    );
    let _ = writeln!(out, "ncu_held_bytes {}", rx.held_bytes());
    family(
        &mut out,
        "ncu_receive_buffer_bytes",
        "gauge",
        "The socket's receive buffer, as the kernel counts it.",
    );
    let _ = writeln!(out, "ncu_receive_buffer_bytes {}", counters.rcvbuf);

    let mut views: Vec<SessionView> = rx.session_views().collect();
    let mut by_state = [0u64; 4];
    let (mut lines, mut lost) = (0u64, 0u64);
    for v in &views {
        by_state[v.fate as usize] += 1;
        lines += v.lines;
        lost += v.lost;
    }
    family(
        &mut out,
        "ncu_sessions",
        "gauge",
        "Sessions in memory, by state.",
    );
    for f in [Fate::Running, Fate::Silent, Fate::Ended, Fate::Restarted] {
        let _ = writeln!(
            out,
            "ncu_sessions{{state=\"{}\"}} {}",
            fate_name(f),
            by_state[f as usize]
        );
    }
    family(
        &mut out,
        "ncu_lines",
        "gauge",
        "Lines received by the sessions in memory.",
    );
    let _ = writeln!(out, "ncu_lines {lines}");
    family(
        &mut out,
        "ncu_lost_lines",
        "gauge",
        "Lines lost by the sessions in memory.",
    );
    let _ = writeln!(out, "ncu_lost_lines {lost}");

    // Which senders get series of their own: silent first, then the ones that lost
    // most, then the most recently heard; ties by session id (stable from scrape to
    // scrape).
    let rank = |v: &SessionView| {
        (
            v.fate != Fate::Silent,
            std::cmp::Reverse(v.lost),
            std::cmp::Reverse(v.last_received_at_us),
            v.info.id,
        )
    };
    let omitted = views.len().saturating_sub(max_senders);
    if views.len() > max_senders {
        views.select_nth_unstable_by_key(max_senders, rank);
        views.truncate(max_senders);
    }
    views.sort_unstable_by_key(rank);
    family(
        &mut out,
        "ncu_metrics_senders_omitted",
        "gauge",
        "Sessions in memory without series of their own (past --metrics-max-senders).",
    );
    let _ = writeln!(out, "ncu_metrics_senders_omitted {omitted}");
    let labels: Vec<String> = views
        .iter()
        .map(|v| {
            format!(
                "sender=\"{}\",session=\"{}\",source=\"{}\"",
                label(v.info.name().as_bytes()),
                v.info.id_hex(),
                v.info.kind.as_str()
            )
        })
        .collect();
    family(
        &mut out,
        "ncu_sender_up",
        "gauge",
        "1 while the sender is heard from, 0 once silent, ended or restarted.",
    );
    for (v, l) in views.iter().zip(&labels) {
        let up = u8::from(v.fate == Fate::Running);
        let _ = writeln!(out, "ncu_sender_up{{{l}}} {up}");
    }
    family(
        &mut out,
        "ncu_sender_lines_total",
        "counter",
        "Lines received from the sender.",
    );
    for (v, l) in views.iter().zip(&labels) {
        let _ = writeln!(out, "ncu_sender_lines_total{{{l}}} {}", v.lines);
    }
    family(
        &mut out,
        "ncu_sender_lost_lines_total",
        "counter",
        "Lines of the sender never received.",
    );
    for (v, l) in views.iter().zip(&labels) {
        let _ = writeln!(out, "ncu_sender_lost_lines_total{{{l}}} {}", v.lost);
    }
    family(
        &mut out,
        "ncu_sender_last_heard_seconds",
        "gauge",
        "Seconds since the sender's last datagram.",
    );
    for (v, l) in views.iter().zip(&labels) {
        let secs = wall_us.saturating_sub(v.last_received_at_us) as f64 / 1e6;
        let _ = writeln!(out, "ncu_sender_last_heard_seconds{{{l}}} {secs:.3}");
    }
    out
}
