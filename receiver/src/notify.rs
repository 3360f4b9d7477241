//! The service manager's notification protocol (sd_notify(3)), in its few lines: one
//! datagram of `KEY=VALUE` lines to the `AF_UNIX` socket named by `NOTIFY_SOCKET`
//! (a path, or `@name` for the abstract namespace). `READY=1` once the port is
//! bound, `STATUS=` one live line, `WATCHDOG=1` every half `WATCHDOG_USEC` from the
//! receive loop, `STOPPING=1` at exit. Without `NOTIFY_SOCKET` it does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Where notifications go, and the watchdog's period.
pub(crate) struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    /// How often to send `WATCHDOG=1` (half what the manager waits), if asked.
    watchdog: Option<Duration>,
    next_watchdog: Option<Instant>,
    /// The last `STATUS=` sent (sent again only when it changes).
    status: String,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` and `WATCHDOG_USEC` (for this process: `WATCHDOG_PID`
    /// unset or ours); `None` when not run under a manager that listens. The
    /// variables are removed so that no child inherits them.
    pub(crate) fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        for var in ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"] {
            std::env::remove_var(var);
        }
        let path = path.to_str()?.to_owned();
        let to = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
            None => SocketAddr::from_pathname(&path).ok()?,
        };
        let ours = watchdog_pid.is_none_or(|p| p.parse() == Ok(std::process::id()));
        let watchdog = watchdog_usec
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(|u| Duration::from_micros(u / 2));
        let socket = UnixDatagram::unbound().ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(Notifier {
            socket,
            to,
            watchdog,
            next_watchdog: None,
            status: String::new(),
        })
    }

    /// Sends one notification; a manager that is gone or busy is not waited for.
    pub(crate) fn send(&self, message: &str) {
        let _ = self.socket.send_to_addr(message.as_bytes(), &self.to);
    }

    /// Sends `STATUS=status` if it changed.
    pub(crate) fn status(&mut self, status: String) {
        if status != self.status {
            self.send(&format!("STATUS={status}"));
            self.status = status;
        }
    }

    /// Sends `WATCHDOG=1` when due (call from the receive loop: a stuck loop then
    /// stops sending it).
    pub(crate) fn watchdog(&mut self, now: Instant) {
        let Some(period) = self.watchdog else {
            return;
        };
        if self.next_watchdog.is_none_or(|t| t <= now) {
            self.send("WATCHDOG=1");
            self.next_watchdog = Some(now + period);
        }
    }

    /// When the loop must wake up next for the watchdog.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        self.next_watchdog
    }
}

/// What `STATUS=` says, kept from the events: sessions gone silent (newest last) and
/// lines lost.
#[derive(Default)]
pub(crate) struct Health {
    /// Silent sessions: id -> (name, since µs); at most [`MAX_SILENT`].
    silent: std::collections::BTreeMap<u64, (String, u64)>,
    lost: u64,
    /// Something changed since the status line was last taken.
    pub(crate) changed: bool,
    /// The receive buffer was capped ([`crate::net::rcvbuf_capped`]): said last.
    pub(crate) capped: Option<String>,
}

/// Silent sessions `STATUS=` keeps track of (the rest are counted as one more).
const MAX_SILENT: usize = 65_536;

impl Health {
    /// Notes what `STATUS=` needs from an event.
    pub(crate) fn note(&mut self, event: &ncu_proto::event::Event) {
        use ncu_proto::event::{Event, GapKind};
        self.changed |= !matches!(
            event,
            Event::Line { late: false, .. } | Event::Corrupt { .. }
        );
        match event {
            Event::Silent {
                session,
                last_received_at_us,
                ..
            } if self.silent.len() < MAX_SILENT => {
                let name = crate::escape::field(session.name().as_bytes()).into_owned();
                self.silent.insert(session.id, (name, *last_received_at_us));
            }
            Event::Resumed { session, .. }
            | Event::End { session, .. }
            | Event::Retired { session } => {
                self.silent.remove(&session.id);
            }
            Event::Gap {
                first,
                last,
                kind: GapKind::Lost,
                ..
            } => self.lost += last - first + 1,
            Event::Line { late: true, .. } => self.lost = self.lost.saturating_sub(1),
            _ => {}
        }
    }

    /// The one status line: `12 sessions, 1 silent: db-7 since 03:12:44; 3 lines lost`.
    pub(crate) fn line(&mut self, sessions: usize) -> String {
        self.changed = false;
        let mut s = format!("{sessions} sessions");
        if let Some((name, since)) = self.silent.values().max_by_key(|(_, since)| *since) {
            let at = chrono::DateTime::from_timestamp_micros(i64::try_from(*since).unwrap_or(0))
                .map_or_else(String::new, |t| t.format("%H:%M:%S").to_string());
            s.push_str(&format!(
                ", {} silent: {name} since {at}",
                self.silent.len()
            ));
            if self.silent.len() > 1 {
                s.push_str(&format!(" (and {} more)", self.silent.len() - 1));
            }
        } else {
            s.push_str(", none silent");
        }
        s.push_str(&format!("; {} lines lost", self.lost));
        if let Some(capped) = &self.capped {
            s.push_str("; ");
            s.push_str(capped);
        }
        s
    }
}
