//! Command line: clap's [`Args`] (only what the user typed), then a checked
//! [`Config`] (resolved addresses, durations, sizes) built before any socket opens.

use std::ffi::OsString;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ncu_proto::seal::{Keys, SEAL_OVERHEAD};
use ncu_proto::sender::ROLLOVER_AT;
use ncu_proto::units::{parse_duration, parse_size};
use ncu_proto::wire::{MAX_DATAGRAM, MIN_DATAGRAM};

/// The smallest `--max-datagram` with `--key-file`: a plain datagram of
/// [`MIN_DATAGRAM`] bytes plus the seal's tag.
pub(crate) const MIN_SEALED_DATAGRAM: usize = MIN_DATAGRAM + SEAL_OVERHEAD;

const AFTER_HELP: &str = "\
Examples:
  ncu-send --kmsg 10.0.0.2:6666                ship the kernel log from /dev/kmsg, every
                                               record numbered by the kernel (as root)
  strace -o '|ncu-send host:6666' prog         ship a trace line by line
  ncu-send host:6666 -- make                   run make, ship its stdout and stderr,
                                               exit with its status
  ncu-send --copies 2 a:6666 [fd00::2]:6666    two receivers, every datagram twice
  ncu-recv 6666                                on the receiving machine

The kernel log (--kmsg):
  Records are read from /dev/kmsg one per read and sent as they come, with their
  level, facility, sequence number, timestamp and KEY=VALUE lines; the receiver
  shows them as dmesg does. When the kernel's ring (about 128 KiB) overwrote records
  before ncu-send read them, reading goes on from the oldest record left and the
  receiver is told exactly which were overwritten (lost on this machine, not the
  network). `dmesg -w |` skips such overruns silently and `cat /dev/kmsg |` stops at
  the first one. --kmsg-level N leaves out records above level N (counted, not
  lost). --kmsg-state FILE lets a restarted ncu-send resume after the last record it
  sent in this boot: nothing twice, no hole.
  Early in boot: give DEST as an IP literal (no resolver yet); a name that does not
  resolve yet is retried every second while records wait in the resend ring, and
  the random generator is never waited for (only --key-file needs it).
  ncu-send --kmsg --kmsg-state /run/ncu-send/kmsg.state 10.0.0.2:6666
  --netconsole also sets up the kernel's own netconsole (configfs) to the first DEST,
  so that the oops and the panic, printed after user space stopped, still leave:
  ncu-send --kmsg --netconsole 10.0.0.2:6666

Sealing (encryption and authentication with a shared key, see SECURITY.md):
  ncu-send --gen-key /etc/ncu.key              write a new key file (mode 0600)
  scp -p /etc/ncu.key receiver:/etc/ncu.key    the same file on the receiver
  ncu-send --key-file /etc/ncu.key host:6666   every datagram sealed
  ncu-recv --key-file /etc/ncu.key 6666        on the receiving machine
  A key file that group or others may read is refused (chmod 600 it). Sealed
  datagrams stay within --max-datagram (which must then be at least 144). A sealing
  ncu-send starts a new session (new id, HELLO, lines numbered from 1 again) every
  2^31 datagrams, so that no nonce is ever reused.

Delivery:
  Every line is handed to the kernel as soon as its newline is read; lines read
  together share a datagram (up to --max-datagram) unless --no-pack. Nothing is
  kept in memory beyond the line being assembled.
  Network errors (no route, refused, interface down, no buffer space) are counted
  (see -v) and never stop ncu-send. When the kernel's send buffer is full it waits
  up to 200ms for room (bulk input then runs at the path's speed); a destination
  that stays full is marked stalled and its datagrams are dropped (counted) without
  waiting until it takes one again, so a dead path never blocks the input.

Recovery (--resend-buffer, on by default):
  ncu-send keeps its most recent DATA datagrams (4MiB by default) and marks every
  datagram as offering recovery. A receiver that misses lines asks for them (NACK)
  on the path back; ncu-send resends those datagrams byte for byte, to the
  destination whose socket the NACK arrived on only (never to the NACK's source
  address), and answers lines it no longer holds with GONE. New lines always go
  first. Resends are limited by a token bucket of --resend-rate bytes per second
  (burst: one second's worth; at most 1024 datagrams per NACK; at most one GONE
  per NACK and 50 GONEs per second). With --key-file, NACKs that do not
  authenticate are dropped. After END, ncu-send lingers: it answers NACKs and
  repeats END every 50ms until no NACK came for 500ms, at most 3s (SIGINT/SIGTERM
  end the linger at once; so does SIGHUP). --resend-buffer 0 turns all of it off.

Signals:
  SIGINT/SIGTERM/SIGHUP: what was read is sent (a pending partial line too), then
  END naming the signal, and ncu-send exits with 128+signal (SIGHUP, a closed
  terminal, is a clean end, not a death). With -- COMMAND, the first one is
  passed on to COMMAND and ncu-send keeps shipping its output until it ends (END
  then says how it ended; the exit status is COMMAND's); a second one stops
  ncu-send at once.

Exit status: 0 at end of input; COMMAND's status with -- (128+N when signal N
killed it; 127 when it cannot be run); 128+N when stopped by signal N; 1 on a
runtime failure (with --kmsg: /dev/kmsg missing or not readable); 2 on a usage
error (a DEST that does not parse or resolve (with --kmsg a name may resolve
later), a key file that cannot be read or is readable by others, --kmsg with --
COMMAND).";

/// What the user typed, checked only for form.
#[derive(Debug, Parser)]
#[command(
    name = "ncu-send",
    version,
    about = "Ship every line of standard input (or of a command's output) over UDP \
             the moment it is written, numbered, so that a receiver can tell what was lost.",
    after_help = AFTER_HELP
)]
pub(crate) struct Args {
    /// Where to send: HOST:PORT, IPV4:PORT or [IPV6]:PORT (host names are resolved
    /// once at start-up; with --kmsg one that does not resolve yet is retried every
    /// second). Every DEST gets every datagram.
    #[arg(value_name = "DEST", required_unless_present_any = ["gen_key", "generate"])]
    dests: Vec<String>,

    /// Write a new key file at PATH (mode 0600, never overwriting) and exit. Copy it
    /// to the receiver and give both ends --key-file PATH.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["dests", "command", "key_file"])]
    gen_key: Option<PathBuf>,

    /// Write the man page or a shell's completions to standard output and exit
    /// (scripts/gen-assets.sh).
    #[arg(long, value_name = "KIND", value_enum, hide = true)]
    generate: Option<ncu_docgen::Kind>,

    /// Seal (encrypt and authenticate) every datagram with the first key in PATH, a
    /// file made by --gen-key and readable by its owner only.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// Testing aid: with --key-file, start a new session after this many datagrams
    /// (at most 2^31, the default).
    #[arg(long, value_name = "N", hide = true)]
    rollover_after: Option<u64>,

    /// Testing and benchmarking aid: never use UDP segmentation offload (GSO), as on
    /// a kernel without it.
    #[arg(long, hide = true)]
    no_gso: bool,

    /// Run COMMAND and ship its stdout and stderr instead of reading standard input.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,

    /// Ship the kernel's log from /dev/kmsg instead of standard input: one record
    /// per read, with its level, facility, sequence number, timestamp and KEY=VALUE
    /// lines; records the kernel's ring overwrote before they were read are named
    /// to the receiver (read goes on after an overrun). Needs root (or
    /// kernel.dmesg_restrict=0).
    #[arg(long, conflicts_with_all = ["command", "tee"])]
    kmsg: bool,

    /// With --kmsg: where to start. all: the oldest record still in the ring (a
    /// boot's first records, when started early); now: records written from now on;
    /// SEQ: from that kernel sequence number.
    #[arg(
        long,
        value_name = "all|now|SEQ",
        default_value = "all",
        requires = "kmsg"
    )]
    kmsg_from: String,

    /// With --kmsg: send records of this level and more urgent only (0 emerg ... 7
    /// debug); the others are counted at the receiver as left out, not as lost.
    #[arg(long, value_name = "N", requires = "kmsg", value_parser = clap::value_parser!(u8).range(0..=7))]
    kmsg_level: Option<u8>,

    /// With --kmsg: keep the boot id and the last record handed to the network in
    /// FILE, and resume after it when started again in the same boot (a service
    /// restart or an upgrade): nothing sent twice, no hole. Overrides --kmsg-from
    /// when it applies.
    #[arg(long, value_name = "FILE", requires = "kmsg")]
    kmsg_state: Option<PathBuf>,

    /// With --kmsg: also set up the kernel's own netconsole (extended format) towards
    /// the first DEST, through configfs, so that what the kernel prints after user
    /// space stopped (the oops, the panic) still leaves the machine. Interface,
    /// source address and next-hop MAC come from the routing and neighbour tables;
    /// removed when ncu-send ends cleanly, kept when it is killed. IPv4; root.
    #[arg(long, requires = "kmsg")]
    netconsole: bool,

    /// Testing aid: read this instead of /dev/kmsg.
    #[arg(long, value_name = "PATH", hide = true, default_value = "/dev/kmsg")]
    kmsg_device: PathBuf,

    /// Send bytes without a newline as a partial line after they sat idle this long
    /// (e.g. 100ms, 1s, 0).
    #[arg(long, value_name = "DUR", default_value = "100ms")]
    flush_after: String,

    /// While idle, send a heartbeat this often (0 turns heartbeats off).
    #[arg(long, value_name = "DUR", default_value = "1s")]
    heartbeat: String,

    /// Name of this sender at the receiver [default: the host name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Largest UDP payload sent, ncu's headers included.
    #[arg(long, value_name = "BYTES", default_value_t = 1400)]
    max_datagram: usize,

    /// Send every datagram N times (the receiver keeps one).
    #[arg(long, value_name = "N", default_value_t = 1)]
    copies: u32,

    /// Longest line sent as one line; the rest follows as a continuation line
    /// (e.g. 65536, 64KiB, 1MiB).
    #[arg(long, value_name = "BYTES", default_value = "1MiB")]
    max_line: String,

    /// Send exactly one line per datagram.
    #[arg(long)]
    no_pack: bool,

    /// Keep the most recent datagrams sent, up to this many bytes, and resend them
    /// when a receiver asks (NACK); 0 turns recovery off (e.g. 4MiB, 64KiB, 0).
    #[arg(long, value_name = "BYTES", default_value = "4MiB")]
    resend_buffer: String,

    /// Resend at most this many bytes per second (token bucket, burst one second's
    /// worth, at most 1024 datagrams per NACK).
    #[arg(long, value_name = "BYTES", default_value = "2MiB")]
    resend_rate: String,

    /// Also copy the input unchanged to standard output (with -- COMMAND: its stdout
    /// to standard output, its stderr to standard error).
    #[arg(long)]
    tee: bool,

    /// Lock ncu-send's memory (mlockall) so that it is not paged out while the
    /// machine thrashes before an out-of-memory crash.
    #[arg(long)]
    mlock: bool,

    /// Make the OOM killer spare ncu-send (oom_score_adj -1000, or the lowest
    /// permitted). COMMAND keeps its own score.
    #[arg(long)]
    oom_protect: bool,

    /// On exit, print what was sent and the send errors by kind to standard error.
    #[arg(short, long)]
    verbose: bool,
}

/// One destination: what the user typed and the address it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dest {
    /// As typed, for messages.
    pub(crate) text: String,
    /// The first address it resolved to; `None` (with `--kmsg` only) while its
    /// name does not resolve yet: retried in the background.
    pub(crate) addr: Option<SocketAddr>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) dests: Vec<Dest>,
    /// The command to run (program first), or `None` to read standard input.
    pub(crate) command: Option<Vec<OsString>>,
    pub(crate) flush_after: Duration,
    /// `None`: no heartbeats.
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) name: String,
    pub(crate) max_datagram: usize,
    pub(crate) copies: u32,
    pub(crate) max_line: usize,
    pub(crate) pack: bool,
    /// Bytes of recent DATA datagrams kept for resending (0: recovery off).
    pub(crate) resend_buffer: usize,
    /// Resend rate limit, bytes per second.
    pub(crate) resend_rate: u64,
    pub(crate) tee: bool,
    pub(crate) mlock: bool,
    pub(crate) oom_protect: bool,
    pub(crate) verbose: bool,
    /// `Some`: seal every datagram (the framer builds `max_datagram - SEAL_OVERHEAD`).
    pub(crate) keys: Option<Keys>,
    /// With keys: datagrams per session before a new one starts (at most
    /// [`ROLLOVER_AT`]).
    pub(crate) rollover_after: u64,
    /// Use UDP GSO where the kernel offers it (not `--no-gso`).
    pub(crate) gso: bool,
    /// `--kmsg`: read the kernel's log.
    pub(crate) kmsg: Option<Kmsg>,
    /// `--netconsole`: the kernel's netconsole beside it.
    pub(crate) netconsole: bool,
}

/// `--kmsg` and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kmsg {
    pub(crate) from: ncu_proto::kmsg::From,
    pub(crate) level: Option<u8>,
    pub(crate) state: Option<PathBuf>,
    pub(crate) device: PathBuf,
}

/// A usage error: one line for standard error, exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// `--gen-key PATH`, when given: nothing else is done.
    pub(crate) fn gen_key(&self) -> Option<&Path> {
        self.gen_key.as_deref()
    }

    /// Checks every value and resolves every DEST (the only syscalls: name lookups).
    pub(crate) fn into_config(self) -> Result<Config, UsageError> {
        let flush_after = parse_duration(&self.flush_after)
            .map_err(|e| UsageError(format!("--flush-after {:?}: {e}", self.flush_after)))?;
        let heartbeat = parse_duration(&self.heartbeat)
            .map_err(|e| UsageError(format!("--heartbeat {:?}: {e}", self.heartbeat)))?;
        let max_line = parse_size(&self.max_line)
            .map_err(|e| UsageError(format!("--max-line {:?}: {e}", self.max_line)))?;
        if max_line == 0 || max_line > u32::MAX as usize {
            return Err(UsageError(format!(
                "--max-line {:?}: must be between 1 and 4 GiB - 1",
                self.max_line
            )));
        }
        if !(MIN_DATAGRAM..=MAX_DATAGRAM).contains(&self.max_datagram) {
            return Err(UsageError(format!(
                "--max-datagram {}: must be between {MIN_DATAGRAM} and {MAX_DATAGRAM}",
                self.max_datagram
            )));
        }
        if self.copies == 0 {
            return Err(UsageError("--copies 0: must be at least 1".into()));
        }
        let resend_buffer = parse_size(&self.resend_buffer)
            .map_err(|e| UsageError(format!("--resend-buffer {:?}: {e}", self.resend_buffer)))?;
        let resend_rate = parse_size(&self.resend_rate)
            .map_err(|e| UsageError(format!("--resend-rate {:?}: {e}", self.resend_rate)))?;
        if resend_rate == 0 {
            return Err(UsageError(format!(
                "--resend-rate {:?}: must be at least 1 (turn recovery off with \
                 --resend-buffer 0)",
                self.resend_rate
            )));
        }
        let keys = match &self.key_file {
            None => None,
            Some(path) => {
                // Read before any socket opens; the message names the file (and the
                // chmod for one others may read).
                let keys = ncu_host::load_keys(path).map_err(|e| UsageError(e.to_string()))?;
                if self.max_datagram < MIN_SEALED_DATAGRAM {
                    return Err(UsageError(format!(
                        "--max-datagram {}: must be at least {MIN_SEALED_DATAGRAM} with \
                         --key-file (a sealed datagram carries a {SEAL_OVERHEAD}-byte tag)",
                        self.max_datagram
                    )));
                }
                Some(keys)
            }
        };
        let rollover_after = match self.rollover_after {
            None => ROLLOVER_AT,
            Some(n) if (3..=ROLLOVER_AT).contains(&n) => n,
            Some(n) => {
                return Err(UsageError(format!(
                    "--rollover-after {n}: must be between 3 and {ROLLOVER_AT}"
                )))
            }
        };
        let kmsg = match self.kmsg {
            false => None,
            true => Some(Kmsg {
                from: match self.kmsg_from.as_str() {
                    "all" => ncu_proto::kmsg::From::All,
                    "now" => ncu_proto::kmsg::From::Now,
                    seq => ncu_proto::kmsg::From::Seq(seq.parse().map_err(|_| {
                        UsageError(format!(
                            "--kmsg-from {seq:?}: expected all, now or a kernel sequence number"
                        ))
                    })?),
                },
                level: self.kmsg_level,
                state: self.kmsg_state,
                device: self.kmsg_device,
            }),
        };
        // The kernel log may start before a resolver can answer: a name that does
        // not resolve yet is retried in the background (a bad form still is not).
        let dests = self
            .dests
            .iter()
            .map(|text| match resolve(text) {
                Err(Unresolved(_)) if kmsg.is_some() => Ok(Dest {
                    text: text.clone(),
                    addr: None,
                }),
                other => other.map_err(UsageError::from),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name = match self.name {
            Some(name) if name.is_empty() => {
                return Err(UsageError("--name: must not be empty".into()))
            }
            Some(name) => name,
            None => default_name(),
        };
        Ok(Config {
            dests,
            command: (!self.command.is_empty()).then_some(self.command),
            flush_after,
            heartbeat: (!heartbeat.is_zero()).then_some(heartbeat),
            name,
            max_datagram: self.max_datagram,
            copies: self.copies,
            max_line,
            pack: !self.no_pack,
            resend_buffer,
            resend_rate: resend_rate as u64,
            tee: self.tee,
            mlock: self.mlock,
            oom_protect: self.oom_protect,
            verbose: self.verbose,
            keys,
            rollover_after,
            gso: !self.no_gso,
            kmsg,
            netconsole: self.netconsole,
        })
    }
}

/// Why a DEST is not usable: its form (a usage error), or a name that does not
/// resolve (now).
#[derive(Debug)]
pub(crate) enum ResolveError {
    Form(UsageError),
    Unresolved(UsageError),
}
use ResolveError::{Form, Unresolved};

impl From<ResolveError> for UsageError {
    fn from(e: ResolveError) -> UsageError {
        match e {
            Form(u) | Unresolved(u) => u,
        }
    }
}

/// Resolves `HOST:PORT`, `IPV4:PORT` or `[IPV6]:PORT` to its first address.
pub(crate) fn resolve(text: &str) -> Result<Dest, ResolveError> {
    let bad = |why: &str| Form(UsageError(format!("DEST {text:?}: {why}")));
    let unresolved = |why: &str| Unresolved(UsageError(format!("DEST {text:?}: {why}")));
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT, IPV4:PORT or [IPV6]:PORT"))?;
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(bad("expected HOST:PORT, IPV4:PORT or [IPV6]:PORT"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(bad("the port must be a number from 1 to 65535")),
        Ok(_) => {}
    }
    let addr = text
        .to_socket_addrs()
        .map_err(|e| unresolved(&format!("does not resolve: {e}")))?
        .next()
        .ok_or_else(|| unresolved("resolves to no address"))?;
    Ok(Dest {
        text: text.to_owned(),
        addr: Some(addr),
    })
}

/// The default `--name`: the host name, unless it is not set yet (`(none)`, as in
/// an initramfs, or `localhost`): then `/etc/hostname`, the kernel command line's
/// `ncu.name=`, the machine id, in that order.
fn default_name() -> String {
    let set = |name: &str| !matches!(name, "" | "(none)" | "localhost" | "unknown");
    let name = host_name();
    if set(&name) {
        return name;
    }
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let etc = read("/etc/hostname");
    let etc = etc.trim();
    if set(etc) {
        return etc.to_owned();
    }
    let cmdline = read("/proc/cmdline");
    if let Some(n) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ncu.name="))
    {
        if !n.is_empty() {
            return n.to_owned();
        }
    }
    let id = read("/etc/machine-id");
    match id.trim() {
        "" => name,
        id => id.to_owned(),
    }
}

/// The host name (`gethostname`), or `"unknown"`.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname NUL-terminates
    // when the name fits, and we look for the NUL within the buffer only.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match rc {
        0 if len > 0 => String::from_utf8_lossy(&buf[..len]).into_owned(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dests() {
        assert_eq!(
            resolve("127.0.0.1:6666").unwrap().addr,
            Some("127.0.0.1:6666".parse().unwrap())
        );
        assert_eq!(
            resolve("[::1]:6666").unwrap().addr,
            Some("[::1]:6666".parse().unwrap())
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:x",
            ":6666",
            "::1:6666",
            "host.invalid:6666",
        ] {
            let err = UsageError::from(resolve(bad).unwrap_err());
            assert!(err.0.contains(bad), "{err} names {bad}");
        }
    }
}
