//! Command line: clap's [`Args`] (only what the user typed), then a checked
//! [`Config`] (resolved address, durations) built before any socket opens.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ncu_proto::units::{parse_duration, parse_size};

const AFTER_HELP: &str = "\
Examples:
  ncu-recv 6666                           print every sender's lines (IPv6 and IPv4)
  ncu-recv --json 6666 | jq               one JSON object per line and per event
  ncu-recv --once --report crash.md 6666  wait for one crash, leave a report for the ticket
  ncu-recv --output-dir /var/log/ncu 6666 also append each session to its own file
  ncu-recv --prefix 127.0.0.1:6666        several senders on one terminal, named
  ncu-send host:6666                      on the sending machine

Output:
  Each line comes out byte for byte as it was sent, followed by a newline. Every
  event is its own line starting with '### ncu:', at the point in the stream where
  it happened:
    start     a new session (first datagram of a sender run); 'joined mid-way' when
              this receiver started after the sender and never saw its first lines
    gap       lines given up on after --reorder-window: they were sent and never
              arrived (kernel netconsole: record numbers skipped, which may be
              records below the console loglevel rather than losses); for a sender
              offering recovery, only once recovery failed (see Recovery below)
    late      a line that arrived after its gap was reported (printed after it)
    silent    nothing (no line, no heartbeat, no END) for --dead-after: the sender
              died, hung or lost its network; names the last line received.
              'restarted': a new session of the same sender began first
    resumed   a silent session sends again
    end       the sender finished cleanly (END): lines sent, lines lost, why
    corrupt   a datagram was rejected (bad checksum, truncated, garbage, ...);
              rate limited, the rest are counted ('N more not shown')
    retired   a session was dropped from memory to make room for new ones
    output    standard output failed (a full disk) and this many events were
              dropped here ('output_dropped' in JSON)
    summary   on exit: per session lines, lost, duplicates, reordered, late,
              recovered, whether the sender offers recovery, fate; the receiver's
              own counters (corrupt by reason, kernel drops, NACKs)
  With --json the same events are JSON objects ('event': start, line, gap, silent,
  resumed, end, corrupt, retired, output_dropped, summary); lines that are not
  valid UTF-8 carry 'bytes' (base64) instead of 'text'.

Recovery (NACK):
  A sender that offers recovery (ncu-send with a resend buffer; its datagrams say
  so) is asked to resend missing lines: about 20ms after a hole appears ncu-recv
  sends it a NACK naming the missing lines, and asks again every 40ms. Such a hole
  is reported as a gap only when recovery failed (after 1s, or --reorder-window
  if longer) or at once when the sender answers that the lines have left its
  buffer (GONE). Recovered lines come out in order, once; the summary counts them
  per session ('recovered'). NACKs go only to senders that offer recovery, only to
  the address the session's datagrams come from, and at most 2000 per second in
  all; with --key-file they are sealed. Senders without recovery get no NACK and
  their holes wait --reorder-window. On a one-way network (the receiver cannot
  reach the sender, or must not send), use --no-nack.

Signals:
  SIGINT/SIGTERM: give up every hole (reported as gaps), print the summary, write
  the --report, exit 0. SIGUSR1: rewrite the --report now and go on. SIGHUP:
  reopen every --output-dir file by name (log rotation), rewrite the --report, go
  on; it never ends ncu-recv.
  A closed standard output (ncu-recv 6666 | head) ends it quietly with status 0.
  A failing one (a full disk) does not stop it: up to 4 MiB of output waits, whole
  events only, and is written when it can be (tried every second); past that
  events are dropped, counted, and marked where they were; exit status 1 then.

Service: started by systemd with a socket (ncu-recv.socket, LISTEN_FDS) it takes
  that socket and ignores [ADDR:]PORT; with NOTIFY_SOCKET it says READY=1 once
  listening, a STATUS= line, WATCHDOG=1 (when WatchdogSec= is set), STOPPING=1.

Exit status: 0 on a clean stop; 1 on a runtime failure (e.g. the port is taken);
2 on a usage error.";

/// What the user typed, checked only for form.
#[derive(Debug, Parser)]
#[command(
    name = "ncu-recv",
    version,
    about = "Receive ncu-send's numbered log lines over UDP (and kernel netconsole, and \
             plain nc -u) from any number of senders; name every lost line.",
    after_help = AFTER_HELP
)]
pub(crate) struct Args {
    /// Where to listen: PORT (IPv6 and IPv4 on every interface), ADDR:PORT or
    /// [IPV6]:PORT. Port 0 picks a free port (printed on stderr).
    #[arg(value_name = "[ADDR:]PORT", required_unless_present = "generate")]
    listen: Option<String>,

    /// Write the man page or a shell's completions to standard output and exit
    /// (scripts/gen-assets.sh).
    #[arg(long, value_name = "KIND", value_enum, hide = true)]
    generate: Option<ncu_docgen::Kind>,

    /// One JSON object per line and per event instead of text.
    #[arg(long)]
    json: bool,

    /// Text output: put the sender's name before each line ("web: ...").
    #[arg(long)]
    prefix: bool,

    /// Text output on a terminal: show log lines byte for byte. Without it, control
    /// bytes other than tab (escape sequences, carriage returns) and bytes that are not
    /// UTF-8 are shown escaped (\x1b) when standard output is a terminal, so that a
    /// log line cannot drive the terminal. Files and pipes always get the bytes.
    #[arg(long)]
    raw: bool,

    /// How long a missing line is waited for before it is reported as a gap
    /// (e.g. 100ms, 1s).
    #[arg(long, value_name = "DUR", default_value = "200ms")]
    reorder_window: String,

    /// A session that sends nothing for this long (no line, heartbeat or END) is
    /// reported silent.
    #[arg(long, value_name = "DUR", default_value = "5s")]
    dead_after: String,

    /// Write a Markdown gap report to PATH ('-': stderr) on exit, and whenever
    /// SIGUSR1 or SIGHUP arrives.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,

    /// Also append each session's lines to its own file,
    /// DIR/<sender>/<start>-<session>.log (one folder per machine); never truncates.
    /// SIGHUP reopens every file by name (for logrotate).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,

    /// Also write every line and event in the Journal Export Format to PATH (a file
    /// or a FIFO), or to standard output with '-' (instead of text or JSON): pipe it
    /// into `systemd-journal-remote -o FILE.journal -`. Each entry has the sender's
    /// name as _HOSTNAME, PRIORITY (the kernel's level for kernel records, else 6),
    /// NCU_SESSION, NCU_SEQ, NCU_KERNEL_SEQ and the time it was sent; gap, silent and
    /// end are entries with fixed MESSAGE_IDs (README "Integrations").
    #[arg(long, value_name = "PATH|-")]
    journal_export: Option<PathBuf>,

    /// Run CMD (through sh -c) when a session goes silent: its sender died, or its
    /// network did. The facts are in NCU_EVENT, NCU_SENDER, NCU_SESSION, NCU_ADDR,
    /// NCU_SOURCE, NCU_LAST_SEQ, NCU_LAST_TEXT, NCU_LAST_SENT_AT,
    /// NCU_LAST_RECEIVED_AT, NCU_REASON, NCU_LINES, NCU_LOST, and NCU_REPORT names a
    /// Markdown report of that session (removed when CMD ends). Runs beside the
    /// receive loop, never blocking it; its exit status and stderr tail are logged.
    #[arg(long, value_name = "CMD")]
    on_silent: Option<String>,

    /// Run CMD (as --on-silent) when a session ends cleanly with lines lost
    /// (NCU_EVENT=end, NCU_LINES_SENT as END says).
    #[arg(long, value_name = "CMD")]
    on_end: Option<String>,

    /// A hook still running after DUR is killed (its whole process group).
    #[arg(long, value_name = "DUR", default_value = "60s")]
    hook_timeout: String,

    /// Most hooks running at once; more wait (up to 256), never the receive loop.
    #[arg(long, value_name = "N", default_value_t = 4)]
    hook_max: usize,

    /// Serve the Prometheus text format at http://ADDR:PORT/metrics: receiver
    /// counters (datagrams, bytes, rejected by reason, kernel drops, NACKs, output
    /// drops) and, per sender, up, lines, lost lines and seconds since last heard. A
    /// port that is taken is one line on stderr; receiving goes on.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,

    /// Also write the same text to PATH every 5 s, atomically (node_exporter's
    /// textfile collector: a .prom file in its folder).
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,

    /// Most senders with series of their own (silent ones first, then those that lost
    /// most, then the most recently heard); the rest are in the totals.
    #[arg(long, value_name = "N", default_value_t = 500)]
    metrics_max_senders: usize,

    /// How often --output-dir files are flushed to disk (fdatasync) at least, so a
    /// receiver that loses power keeps what it printed; 0 = after every write. They
    /// are always flushed when their session goes silent or ends.
    #[arg(long, value_name = "DUR", default_value = "1s")]
    sync_every: String,

    /// Exit (status 0) after the first session of any kind ends, by END or by
    /// going silent.
    #[arg(long)]
    once: bool,

    /// Accept only datagrams sealed with a key from PATH (made by
    /// `ncu-send --gen-key PATH`, mode 0600; one key per line, all are tried, so
    /// a new key can be added before the senders switch). Everything else, and
    /// replays, is rejected as corrupt (reason auth).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// The memory budget: most bytes held on behalf of all senders together (lines
    /// waiting for a hole, fragments of long lines, partial text, per-session state).
    /// One source address may use half. When it is full, the oldest incomplete work
    /// of the source holding the most is given up (reported as a gap), so a flood
    /// from one source cannot evict a quiet host's last lines; summary and report
    /// say how often that happened.
    #[arg(long, value_name = "BYTES", default_value = "64MiB")]
    max_held: String,

    /// Most sessions kept in memory; default: as many idle sessions as --max-held
    /// holds (195,083 with 64 MiB). Past it, the oldest session of the source with
    /// the most is retired (a `retired` event; its holes reported first), or, when
    /// every source has one, the session heard least recently.
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,

    /// The socket's receive buffer to ask for (what the kernel queues while
    /// ncu-recv is busy). Root gets it whatever net.core.rmem_max says; others get
    /// at most that cap, and ncu-recv says so (stderr, report, STATUS=). A socket
    /// unit's ReceiveBuffer= does the same for the socket it passes.
    // Only a backlog uses it. A local ncu-send with GSO pushes a packed log at about
    // 650 MB/s while ncu-recv writes lines out at a few hundred MB/s: with 8 MiB, a
    // 1,000,000-line (80 MB) burst lost about half its lines to kernel drops in half
    // the runs; with 64 MiB none in 8 runs, the queue peaking at 51 MiB
    // (`bench/receiver.sh`).
    #[arg(long, value_name = "BYTES", default_value = "64MiB")]
    receive_buffer: String,

    /// Never send NACKs (ask no sender to resend): for one-way networks. Holes of
    /// every session then wait only --reorder-window.
    #[arg(long)]
    no_nack: bool,

    /// Bytes per receive buffer slot; a larger datagram is reported corrupt
    /// (too_large). For tests.
    #[arg(long, value_name = "BYTES", default_value_t = 65_536, hide = true)]
    slot_bytes: usize,
}

/// The checked configuration the receiver runs with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where to bind.
    pub(crate) listen: SocketAddr,
    /// The user gave no address: dual-stack `[::]`, falling back to `0.0.0.0`.
    pub(crate) any_address: bool,
    pub(crate) json: bool,
    pub(crate) prefix: bool,
    pub(crate) raw: bool,
    /// `--max-held`, bytes.
    pub(crate) max_held: usize,
    /// `--max-sessions`.
    pub(crate) max_sessions: usize,
    /// `--receive-buffer`, bytes.
    pub(crate) receive_buffer: usize,
    /// `--sync-every`.
    pub(crate) sync_every: Duration,
    /// `--journal-export`.
    pub(crate) journal_export: Option<PathBuf>,
    /// `--metrics`, `--metrics-file`, `--metrics-max-senders`.
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) metrics_file: Option<PathBuf>,
    pub(crate) metrics_max_senders: usize,
    /// `--on-silent`, `--on-end`, `--hook-timeout`, `--hook-max`.
    pub(crate) on_silent: Option<String>,
    pub(crate) on_end: Option<String>,
    pub(crate) hook_timeout: Duration,
    pub(crate) hook_max: usize,
    pub(crate) reorder_window: Duration,
    pub(crate) dead_after: Duration,
    pub(crate) report: Option<PathBuf>,
    pub(crate) output_dir: Option<PathBuf>,
    pub(crate) once: bool,
    pub(crate) slot_bytes: usize,
    /// `--key-file`: only authentic sealed datagrams are taken.
    pub(crate) keys: Option<ncu_proto::seal::Keys>,
    /// NACK senders that offer recovery (not `--no-nack`).
    pub(crate) nack: bool,
}

/// A usage error: printed on one line, exit status 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Args {
    /// `--generate KIND`, when given: nothing else is done.
    pub(crate) fn generate(&self) -> Option<ncu_docgen::Kind> {
        self.generate
    }

    /// Checks what the user typed and resolves the address.
    pub(crate) fn into_config(self) -> Result<Config, UsageError> {
        // Required by clap unless --generate, which never gets here.
        let text = self.listen.clone().unwrap_or_default();
        let (listen, any_address) =
            parse_listen(&text).map_err(|e| UsageError(format!("listen address {text:?}: {e}")))?;
        let reorder_window = parse_duration(&self.reorder_window)
            .map_err(|e| UsageError(format!("--reorder-window {:?}: {e}", self.reorder_window)))?;
        let dead_after = parse_duration(&self.dead_after)
            .map_err(|e| UsageError(format!("--dead-after {:?}: {e}", self.dead_after)))?;
        if dead_after.is_zero() {
            return Err(UsageError("--dead-after must be more than 0".to_owned()));
        }
        if self.json && self.journal_export.as_deref() == Some(std::path::Path::new("-")) {
            return Err(UsageError(
                "--journal-export - takes standard output: drop --json, or give a PATH".to_owned(),
            ));
        }
        let hook_timeout = parse_duration(&self.hook_timeout)
            .map_err(|e| UsageError(format!("--hook-timeout {:?}: {e}", self.hook_timeout)))?;
        if self.hook_max == 0 {
            return Err(UsageError("--hook-max must be at least 1".to_owned()));
        }
        let sync_every = parse_duration(&self.sync_every)
            .map_err(|e| UsageError(format!("--sync-every {:?}: {e}", self.sync_every)))?;
        let max_held = parse_size(&self.max_held)
            .map_err(|e| UsageError(format!("--max-held {:?}: {e}", self.max_held)))?;
        if max_held < 1 << 20 {
            return Err(UsageError(format!(
                "--max-held {:?}: must be at least 1MiB",
                self.max_held
            )));
        }
        let receive_buffer = parse_size(&self.receive_buffer)
            .map_err(|e| UsageError(format!("--receive-buffer {:?}: {e}", self.receive_buffer)))?;
        if !(4096..=1 << 30).contains(&receive_buffer) {
            return Err(UsageError(format!(
                "--receive-buffer {:?}: must be 4KiB..1GiB",
                self.receive_buffer
            )));
        }
        let max_sessions = self
            .max_sessions
            .unwrap_or_else(|| ncu_proto::reassembler::sessions_for_budget(max_held));
        if max_sessions == 0 {
            return Err(UsageError("--max-sessions 0: must be at least 1".into()));
        }
        if !(512..=65_536).contains(&self.slot_bytes) {
            return Err(UsageError("--slot-bytes must be 512..=65536".to_owned()));
        }
        let keys = match &self.key_file {
            Some(path) => Some(ncu_host::load_keys(path).map_err(|e| UsageError(e.to_string()))?),
            None => None,
        };
        Ok(Config {
            keys,
            listen,
            any_address,
            json: self.json,
            prefix: self.prefix,
            raw: self.raw,
            max_held,
            max_sessions,
            receive_buffer,
            sync_every,
            journal_export: self.journal_export,
            metrics: self.metrics,
            metrics_file: self.metrics_file,
            metrics_max_senders: self.metrics_max_senders,
            on_silent: self.on_silent,
            on_end: self.on_end,
            hook_timeout,
            hook_max: self.hook_max,
            reorder_window,
            dead_after,
            report: self.report,
            output_dir: self.output_dir,
            once: self.once,
            slot_bytes: self.slot_bytes,
            nack: !self.no_nack,
        })
    }
}

/// Parses `PORT`, `ADDR:PORT`, `[IPV6]:PORT` or `HOST:PORT` (resolved once).
fn parse_listen(text: &str) -> Result<(SocketAddr, bool), String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok((SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), true));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr, false));
    }
    if !text.contains(':') {
        return Err("expected PORT, ADDR:PORT or [IPV6]:PORT".to_owned());
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("does not resolve: {e}"))?;
    addrs
        .next()
        .map(|a| (a, false))
        .ok_or_else(|| "does not resolve to any address".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let (a, any) = parse_listen("6666").unwrap();
        assert_eq!(a, "[::]:6666".parse().unwrap());
        assert!(any);
        let (a, any) = parse_listen("127.0.0.1:7").unwrap();
        assert_eq!(a, "127.0.0.1:7".parse().unwrap());
        assert!(!any);
        assert_eq!(
            parse_listen("[::1]:9").unwrap().0,
            "[::1]:9".parse().unwrap()
        );
        assert!(parse_listen("nope").is_err());
        assert!(parse_listen("70000").is_err());
    }
}
