//! Sending datagrams: one non-blocking UDP socket per destination, connected when the
//! route allows (so that ICMP port unreachable shows up as a counted
//! `ECONNREFUSED`), written with `sendmmsg(2)` in batches; runs of full datagrams leave as one
//! message each with UDP segmentation offload (GSO) where the kernel offers it. No
//! error stops it.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::cli::Dest;

/// How long a send waits for room in a full send buffer before it drops the datagram
/// and marks the destination stalled.
pub(crate) const FULL_BUFFER_WAIT: Duration = Duration::from_millis(200);
/// The most messages handed to one `sendmmsg` call (the kernel's `UIO_MAXIOV`).
const BATCH: usize = 1024;
/// Most segments in one GSO message (the kernel's `UDP_MAX_SEGMENTS` before 6.x
/// raised it).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO message: a UDP datagram over IPv4 (65,535 - 20 - 8).
const GSO_MAX_BYTES: usize = 65_507;
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

/// What [`Sockets::recv`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// A datagram of this many bytes from the destination.
    Datagram(usize),
    /// Nothing (more) waiting.
    Nothing,
    /// A datagram from another address (an unconnected socket takes anyone's):
    /// dropped.
    Foreign,
    /// A socket error (an ICMP error, counted): stop reading this socket for now.
    Error,
}

struct Target {
    socket: Socket,
    addr: SockAddr,
    /// Connected: `sendmmsg` without an address, refusals reported.
    connected: bool,
    /// The last datagram was dropped on a full buffer: do not wait for this one again
    /// until it takes a datagram.
    stalled: bool,
    /// UDP GSO works on this socket: runs of full datagrams leave as one message.
    gso: bool,
}

/// One message of a send: `count` datagrams from `first` (their iovecs), as one GSO
/// message of `segment`-byte segments when `segment` is not 0, else one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Message {
    first: usize,
    count: usize,
    segment: usize,
}

/// Room for one `UDP_SEGMENT` control message (`CMSG_SPACE(2)`, 24 bytes on 64-bit
/// Linux), aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct GsoCmsg([u8; 32]);

/// All destinations.
pub(crate) struct Sockets {
    /// The destinations with an address, in the order they got one.
    targets: Vec<Target>,
    /// Destination index (as given) -> its target, `None` while its name does not
    /// resolve yet.
    slots: Vec<Option<usize>>,
    gso_wanted: bool,
    copies: u32,
    /// The size of a full datagram (as sent): only runs of these become GSO messages.
    full: usize,
    stats: Stats,
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    plan: Vec<Message>,
    cmsgs: Vec<GsoCmsg>,
}

impl Sockets {
    /// Opens one socket per destination. Fails only when a socket cannot be created at
    /// all; a destination without a route is used unconnected (errors are counted).
    /// `full`: the size of a full datagram as sent; with `gso`, runs of them leave
    /// with UDP segmentation offload where the kernel offers it.
    pub(crate) fn open(dests: &[Dest], copies: u32, full: usize, gso: bool) -> io::Result<Sockets> {
        let mut sockets = Sockets {
            targets: Vec::with_capacity(dests.len()),
            slots: vec![None; dests.len()],
            gso_wanted: gso,
            copies,
            full,
            stats: Stats::default(),
            msgs: Vec::new(),
            iovs: Vec::new(),
            plan: Vec::new(),
            cmsgs: Vec::new(),
        };
        for (index, dest) in dests.iter().enumerate() {
            if let Some(addr) = dest.addr {
                sockets.resolved(index, addr)?;
            }
        }
        Ok(sockets)
    }

    /// Destination `index` has its address now (at start, or once its name
    /// resolved): its socket opens, connected when the route allows.
    pub(crate) fn resolved(&mut self, index: usize, addr: SocketAddr) -> io::Result<()> {
        if self.slots.get(index).is_none_or(|s| s.is_some()) {
            return Ok(());
        }
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::DGRAM.cloexec(),
            Some(Protocol::UDP),
        )?;
        socket.set_nonblocking(true)?;
        // Best effort: the default is enough, bigger absorbs bursts.
        let _ = socket.set_send_buffer_size(SEND_BUFFER);
        let addr = SockAddr::from(addr);
        let connected = socket.connect(&addr).is_ok();
        let gso = self.gso_wanted && gso_supported(socket.as_raw_fd());
        self.slots[index] = Some(self.targets.len());
        self.targets.push(Target {
            socket,
            addr,
            connected,
            stalled: false,
            gso,
        });
        Ok(())
    }

    /// Whether some destination takes GSO messages (so padding full datagrams to
    /// equal sizes pays).
    pub(crate) fn gso(&self) -> bool {
        self.targets.iter().any(|t| t.gso)
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Each destination's socket descriptor (-1 while its name does not resolve),
    /// for polling for errors (`POLLERR`) and NACKs.
    pub(crate) fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.slots
            .iter()
            .map(|s| s.map_or(-1, |t| self.targets[t].socket.as_raw_fd()))
    }

    /// Collects a pending socket error (from ICMP) of socket `index`, so that it
    /// does not fail the next send; counts it.
    pub(crate) fn take_error(&mut self, index: usize) {
        if let Some(target) = self.target(index) {
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
            plan(&self.iovs, self.targets[t].gso, self.full, &mut self.plan);
            for _ in 0..self.copies {
                self.send_to(t);
            }
        }
    }

    /// Sends every datagram once to destination `index` only (resends and GONEs
    /// answering a NACK that arrived on its socket). Never fails, as [`Sockets::send`].
    pub(crate) fn send_one<'a>(
        &mut self,
        index: usize,
        datagrams: impl ExactSizeIterator<Item = &'a [u8]>,
    ) {
        let Some(index) = self.slots.get(index).copied().flatten() else {
            return;
        };
        if datagrams.len() == 0 {
            return;
        }
        self.iovs.clear();
        self.iovs.extend(datagrams.map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        }));
        plan(
            &self.iovs,
            self.targets[index].gso,
            self.full,
            &mut self.plan,
        );
        self.send_to(index);
    }

    /// Receives one datagram waiting on the socket of destination `index` into `buf`
    /// (without waiting).
    pub(crate) fn recv(&mut self, index: usize, buf: &mut [u8]) -> Received {
        let Some(target) = self.target(index) else {
            return Received::Nothing;
        };
        // SAFETY: `recv_from` only writes initialised bytes into the buffer; viewing
        // initialised `u8`s as `MaybeUninit<u8>` is sound.
        let uninit = unsafe {
            std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<MaybeUninit<u8>>(), buf.len())
        };
        loop {
            match target.socket.recv_from(uninit) {
                Ok((n, from)) => {
                    // A connected socket receives only its destination's datagrams;
                    // an unconnected one checks the address itself.
                    if !target.connected && from.as_socket() != target.addr.as_socket() {
                        return Received::Foreign;
                    }
                    return Received::Datagram(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::Nothing,
                Err(e) => {
                    self.stats.count(ErrorKind::of(&e));
                    return Received::Error;
                }
            }
        }
    }

    /// The address destination `index`'s socket sends from (once connected).
    pub(crate) fn local_addr(&self, index: usize) -> Option<SocketAddr> {
        let target = self.target(index)?;
        target.socket.local_addr().ok()?.as_socket()
    }

    /// Destination `index`'s target, once it has an address.
    fn target(&self, index: usize) -> Option<&Target> {
        self.slots
            .get(index)
            .copied()
            .flatten()
            .map(|t| &self.targets[t])
    }

    /// Sends the planned messages to target `t`.
    fn send_to(&mut self, t: usize) {
        let target = &mut self.targets[t];
        // SAFETY (for the zeroed headers): mmsghdr and cmsghdr are plain old data;
        // all-zero is a valid "no address, no control data" header.
        let zero: libc::mmsghdr = unsafe { std::mem::zeroed() };
        self.msgs.clear();
        self.msgs.resize(self.plan.len().min(BATCH), zero);
        self.cmsgs.resize(self.msgs.len(), GsoCmsg([0; 32]));
        let mut next = 0;
        let mut retried = usize::MAX;
        let mut waited = Duration::ZERO;
        while next < self.plan.len() {
            let count = (self.plan.len() - next).min(BATCH);
            for ((msg, m), cmsg) in self
                .msgs
                .iter_mut()
                .zip(&self.plan[next..next + count])
                .zip(&mut self.cmsgs)
            {
                msg.msg_hdr.msg_iov = &mut self.iovs[m.first];
                msg.msg_hdr.msg_iovlen = m.count as _;
                if !target.connected {
                    msg.msg_hdr.msg_name = target.addr.as_ptr() as *mut libc::c_void;
                    msg.msg_hdr.msg_namelen = target.addr.len();
                }
                if m.segment == 0 {
                    msg.msg_hdr.msg_control = std::ptr::null_mut();
                    msg.msg_hdr.msg_controllen = 0;
                } else {
                    set_segment(&mut msg.msg_hdr, cmsg, m.segment as u16);
                }
            }
            // SAFETY: `msgs[..count]` point at `iovs` (which point at the caller's
            // datagrams) and at `cmsgs`; all outlive the call, and the kernel only
            // reads them.
            // send(2) and sendmsg(2) return bytes: as sendmmsg, one message or -1.
            let messages = |sent: isize| if sent >= 0 { 1 } else { -1 };
            let rc = unsafe {
                let one = &self.plan[next];
                if count == 1 && one.count == 1 && one.segment == 0 && target.connected {
                    // One datagram to a connected socket (a line at a time): plain
                    // send(2), the cheapest way in.
                    let iov = &self.iovs[one.first];
                    messages(libc::send(
                        target.socket.as_raw_fd(),
                        iov.iov_base,
                        iov.iov_len,
                        libc::MSG_NOSIGNAL,
                    ))
                } else if count == 1 {
                    // One message: sendmsg skips sendmmsg's per-call bookkeeping.
                    messages(libc::sendmsg(
                        target.socket.as_raw_fd(),
                        &self.msgs[0].msg_hdr,
                        libc::MSG_NOSIGNAL,
                    ))
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
                let done = &self.plan[next..next + rc as usize];
                self.stats.sent += done.iter().map(|m| m.count as u64).sum::<u64>();
                next += rc as usize;
                target.stalled = false;
                continue;
            }
            let err = io::Error::last_os_error();
            let kind = ErrorKind::of(&err);
            let failed = self.plan[next];
            if failed.segment != 0 && gso_refused(&err) {
                // No GSO on this path after all (no checksum offload, IPsec, a
                // segment over the MTU...): never again on this socket; the rest goes
                // one datagram per message. Not a network error.
                target.gso = false;
                self.plan.truncate(next);
                self.plan
                    .extend((failed.first..self.iovs.len()).map(|first| Message {
                        first,
                        count: 1,
                        segment: 0,
                    }));
                self.msgs.resize(self.plan.len().min(BATCH), zero);
                self.cmsgs.resize(self.msgs.len(), GsoCmsg([0; 32]));
                continue;
            }
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
            self.stats.dropped += failed.count as u64;
            next += 1;
        }
    }
}

/// Splits `iovs` into messages: with `gso`, every run of at least two datagrams of
/// `full` bytes (at most [`GSO_MAX_SEGMENTS`], and [`GSO_MAX_BYTES`] in all),
/// together with one shorter datagram right after it, becomes one GSO message; every
/// other datagram is a message of its own.
fn plan(iovs: &[libc::iovec], gso: bool, full: usize, out: &mut Vec<Message>) {
    out.clear();
    let max = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / full.max(1));
    let mut i = 0;
    while i < iovs.len() {
        let mut count = 1;
        if gso && iovs[i].iov_len == full && max >= 2 {
            while count < max && iovs.get(i + count).is_some_and(|v| v.iov_len == full) {
                count += 1;
            }
            // One shorter last segment: the GSO total still stays under
            // `(count + 1) * full <= max * full`.
            if count < max && iovs.get(i + count).is_some_and(|v| v.iov_len < full) {
                count += 1;
            }
        }
        let segment = if count >= 2 { full } else { 0 };
        out.push(Message {
            first: i,
            count,
            segment,
        });
        i += count;
    }
}

/// Points `hdr`'s control data at `cmsg`, holding one `UDP_SEGMENT` of `segment`.
fn set_segment(hdr: &mut libc::msghdr, cmsg: &mut GsoCmsg, segment: u16) {
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; `cmsg` is 8-aligned and larger
    // than CMSG_SPACE(2), so the header and its two data bytes fit in it.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        debug_assert!(space <= std::mem::size_of::<GsoCmsg>());
        hdr.msg_control = cmsg.0.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(hdr);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
    }
}

/// Whether the kernel knows `UDP_SEGMENT` (Linux 4.18+).
fn gso_supported(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: one c_int and its length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
}

/// Errors with which a GSO message says GSO does not work on this path.
fn gso_refused(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EMSGSIZE | libc::EOPNOTSUPP)
    )
}

/// Waits until `fd` can be written to, or `timeout` passed.
fn wait_writable(fd: RawFd, timeout: Duration) {
    // An error only ends the wait early: the send after it says what is wrong.
    let _ = ncu_host::poll(
        &mut [ncu_host::pollfd(fd, libc::POLLOUT)],
        Some(timeout.max(Duration::from_millis(1))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iovs(sizes: &[usize]) -> Vec<libc::iovec> {
        sizes
            .iter()
            .map(|&n| libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: n,
            })
            .collect()
    }

    fn planned(sizes: &[usize], gso: bool, full: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        plan(&iovs(sizes), gso, full, &mut out);
        out.iter().map(|m| (m.first, m.count, m.segment)).collect()
    }

    #[test]
    fn runs_of_full_datagrams_and_one_shorter_become_gso_messages() {
        let sizes = [90, 100, 100, 100, 40, 100, 50, 100, 100, 100];
        assert_eq!(
            planned(&sizes, true, 100),
            vec![
                (0, 1, 0),
                (1, 4, 100),
                // One full datagram and a shorter one: a run of two.
                (5, 2, 100),
                (7, 3, 100),
            ]
        );
        // Without GSO, or without full datagrams: one datagram per message.
        assert_eq!(
            planned(&sizes, false, 100),
            (0..sizes.len()).map(|i| (i, 1, 0)).collect::<Vec<_>>()
        );
        assert_eq!(
            planned(&[99, 99, 98], true, 100),
            vec![(0, 1, 0), (1, 1, 0), (2, 1, 0)]
        );
        // A lone full datagram stays alone.
        assert_eq!(planned(&[100], true, 100), vec![(0, 1, 0)]);
    }

    #[test]
    fn gso_messages_stay_within_the_kernel_limits() {
        // 1400-byte segments: 46 fit 65,507 bytes; the 47th starts a new run.
        let sizes = vec![1400; 100];
        let plan = planned(&sizes, true, 1400);
        assert_eq!(plan, vec![(0, 46, 1400), (46, 46, 1400), (92, 8, 1400)]);
        // Small segments: at most 64 per message.
        let sizes = vec![200; 130];
        assert_eq!(
            planned(&sizes, true, 200),
            vec![(0, 64, 200), (64, 64, 200), (128, 2, 200)]
        );
        for (sizes, full) in [
            (
                vec![1400; 45].into_iter().chain([1399]).collect::<Vec<_>>(),
                1400,
            ),
            (vec![1000; 70], 1000),
            (vec![65_507, 65_507], 65_507),
        ] {
            for m in planned(&sizes, true, full) {
                let total: usize = sizes[m.0..m.0 + m.1].iter().sum();
                assert!(m.1 <= GSO_MAX_SEGMENTS && total <= GSO_MAX_BYTES, "{m:?}");
            }
        }
    }
}
