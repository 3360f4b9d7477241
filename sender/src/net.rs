//! Sending datagrams: one non-blocking UDP socket per destination, connected when the
//! route allows (so that ICMP port unreachable shows up as a counted
//! `ECONNREFUSED`), written with `sendmmsg(2)` in batches. No error stops it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::cli::Dest;

/// How long a send waits for room in a full send buffer before it drops the datagram
/// and marks the destination stalled.
pub(crate) const FULL_BUFFER_WAIT: Duration = Duration::from_millis(200);
/// The most messages handed to one `sendmmsg` call (the kernel's `UIO_MAXIOV`).
const BATCH: usize = 1024;
/// Send buffer asked for: room for bursts of a few hundred datagrams.
const SEND_BUFFER: usize = 4 << 20;

/// Kinds of send errors, counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// `ECONNREFUSED`: nothing listens at the destination (ICMP port unreachable).
    Refused,
    /// `ENETUNREACH` / `EHOSTUNREACH` / `EHOSTDOWN`: no route.
    Unreachable,
    /// `ENETDOWN`: the interface is down.
    NetDown,
    /// `ENOBUFS` / `ENOMEM`: the kernel dropped the datagram.
    NoBuffers,
    /// `EAGAIN`: the send buffer stayed full; the datagram was dropped.
    Full,
    /// Anything else.
    Other,
}

impl ErrorKind {
    const ALL: [ErrorKind; 6] = [
        ErrorKind::Refused,
        ErrorKind::Unreachable,
        ErrorKind::NetDown,
        ErrorKind::NoBuffers,
        ErrorKind::Full,
        ErrorKind::Other,
    ];

    fn of(err: &io::Error) -> ErrorKind {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => ErrorKind::Refused,
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EHOSTDOWN) => {
                ErrorKind::Unreachable
            }
            Some(libc::ENETDOWN) => ErrorKind::NetDown,
            Some(libc::ENOBUFS | libc::ENOMEM) => ErrorKind::NoBuffers,
            Some(libc::EAGAIN) => ErrorKind::Full,
            _ => ErrorKind::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::NetDown => "net_down",
            ErrorKind::NoBuffers => "no_buffers",
            ErrorKind::Full => "buffer_full",
            ErrorKind::Other => "other",
        }
    }
}

/// Counters for `--verbose`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Datagrams handed to the kernel, all destinations and copies together.
    pub(crate) sent: u64,
    /// Datagrams given up on (one per destination and copy).
    pub(crate) dropped: u64,
    /// Errors reported by the kernel, by kind (a datagram may see one and then go out).
    errors: [u64; ErrorKind::ALL.len()],
}

impl Stats {
    fn count(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    /// `kind=count` for every kind seen, or `none`.
    pub(crate) fn errors_summary(&self) -> String {
        let parts: Vec<String> = ErrorKind::ALL
            .iter()
            .filter(|k| self.errors[**k as usize] > 0)
            .map(|k| format!("{}={}", k.as_str(), self.errors[*k as usize]))
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

struct Target {
    socket: Socket,
    addr: SockAddr,
    /// Connected: `sendmmsg` without an address, refusals reported.
    connected: bool,
    /// The last datagram was dropped on a full buffer: do not wait for this one again
    /// until it takes a datagram.
    stalled: bool,
}

/// All destinations.
pub(crate) struct Sender {
    targets: Vec<Target>,
    copies: u32,
    stats: Stats,
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
}

impl Sender {
    /// Opens one socket per destination. Fails only when a socket cannot be created at
    /// all; a destination without a route is used unconnected (errors are counted).
    pub(crate) fn open(dests: &[Dest], copies: u32) -> io::Result<Sender> {
        let mut targets = Vec::with_capacity(dests.len());
        for dest in dests {
            let socket = Socket::new(
                Domain::for_address(dest.addr),
                Type::DGRAM.cloexec(),
                Some(Protocol::UDP),
            )?;
            socket.set_nonblocking(true)?;
            // Best effort: the default is enough, bigger absorbs bursts.
            let _ = socket.set_send_buffer_size(SEND_BUFFER);
            let addr = SockAddr::from(dest.addr);
            let connected = socket.connect(&addr).is_ok();
            targets.push(Target {
                socket,
                addr,
                connected,
                stalled: false,
            });
        }
        Ok(Sender {
            targets,
            copies,
            stats: Stats::default(),
            msgs: Vec::new(),
            iovs: Vec::new(),
        })
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The sockets' descriptors, for polling for errors (`POLLERR`).
    pub(crate) fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.targets.iter().map(|t| t.socket.as_raw_fd())
    }

    /// Collects a pending socket error (from ICMP) of socket `index`, so that it
    /// does not fail the next send; counts it.
    pub(crate) fn take_error(&mut self, index: usize) {
        if let Some(target) = self.targets.get(index) {
            if let Ok(Some(err)) = target.socket.take_error() {
                self.stats.count(ErrorKind::of(&err));
            }
        }
    }

    /// Sends every datagram to every destination, `copies` times each. Never fails:
    /// errors are counted, and a datagram that cannot go is dropped.
    pub(crate) fn send<'a>(&mut self, datagrams: impl ExactSizeIterator<Item = &'a [u8]>) {
        if datagrams.len() == 0 {
            return;
        }
        self.iovs.clear();
        self.iovs.extend(datagrams.map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        }));
        for t in 0..self.targets.len() {
            for _ in 0..self.copies {
                self.send_to(t);
            }
        }
    }

    fn send_to(&mut self, t: usize) {
        let target = &mut self.targets[t];
        // SAFETY (for the zeroed msghdr): mmsghdr is plain old data; all-zero is a valid
        // "no address, no control data" header.
        let zero: libc::mmsghdr = unsafe { std::mem::zeroed() };
        self.msgs.clear();
        self.msgs.resize(self.iovs.len().min(BATCH), zero);
        let mut next = 0;
        let mut retried = usize::MAX;
        let mut waited = Duration::ZERO;
        while next < self.iovs.len() {
            let count = (self.iovs.len() - next).min(BATCH);
            for (msg, iov) in self.msgs.iter_mut().zip(&mut self.iovs[next..next + count]) {
                msg.msg_hdr.msg_iov = iov;
                msg.msg_hdr.msg_iovlen = 1;
                if !target.connected {
                    msg.msg_hdr.msg_name = target.addr.as_ptr() as *mut libc::c_void;
                    msg.msg_hdr.msg_namelen = target.addr.len();
                }
            }
            // SAFETY: `msgs[..count]` point at `iovs[next..next + count]`, which point at
            // the caller's datagrams; all outlive the call, and the kernel only reads them.
            let rc = unsafe {
                if count == 1 {
                    // One datagram (the usual case for a line at a time): sendmsg skips
                    // sendmmsg's per-call bookkeeping.
                    let sent = libc::sendmsg(
                        target.socket.as_raw_fd(),
                        &self.msgs[0].msg_hdr,
                        libc::MSG_NOSIGNAL,
                    );
                    if sent >= 0 {
                        1
                    } else {
                        -1
                    }
                } else {
                    libc::sendmmsg(
                        target.socket.as_raw_fd(),
                        self.msgs.as_mut_ptr(),
                        count as libc::c_uint,
                        libc::MSG_NOSIGNAL,
                    )
                }
            };
            if rc > 0 {
                next += rc as usize;
                self.stats.sent += rc as u64;
                target.stalled = false;
                continue;
            }
            let err = io::Error::last_os_error();
            let kind = ErrorKind::of(&err);
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if !target.stalled && waited < FULL_BUFFER_WAIT => {
                    let start = Instant::now();
                    wait_writable(target.socket.as_raw_fd(), FULL_BUFFER_WAIT - waited);
                    waited += start.elapsed();
                    continue;
                }
                Some(libc::EAGAIN) => target.stalled = true,
                _ => {}
            }
            self.stats.count(kind);
            // An error may belong to an earlier datagram (ICMP, or an error sendmmsg
            // kept for the next call): this one was then not tried. Try it once more.
            if kind != ErrorKind::Full && retried != next {
                retried = next;
                continue;
            }
            self.stats.dropped += 1;
            next += 1;
        }
    }
}

/// Waits until `fd` can be written to, or `timeout` passed.
fn wait_writable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}
