//! The socket: dual-stack bind, a large receive buffer, and batched receive with
//! `recvmmsg(2)` that flags truncated datagrams. The kernel's drop counter is read
//! from `/proc/net/udp` when needed (not `SO_RXQ_OVFL`: a control message on every
//! datagram cost about 7% of the receive path).

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Datagrams taken per `recvmmsg` call.
pub(crate) const BATCH: usize = 32;

/// When the kernel granted less than `wanted` (`rcvbuf` as `SO_RCVBUF` reports
/// it): one sentence saying so and how to raise it, for stderr, the report and
/// `STATUS=`.
pub(crate) fn rcvbuf_capped(rcvbuf: usize, wanted: usize) -> Option<String> {
    (rcvbuf < wanted).then(|| {
        format!(
            "the kernel capped the receive buffer at {} KiB (asked for {} KiB): bursts may be \
             dropped; raise the cap with: sysctl -w net.core.rmem_max={} (or ReceiveBuffer= \
             in ncu-recv.socket)",
            rcvbuf / 1024,
            wanted / 1024,
            wanted
        )
    })
}

/// The bound socket and what happened while setting it up.
pub(crate) struct Listener {
    pub(crate) socket: Socket,
    /// The address it is bound to (port 0 resolved).
    pub(crate) local: SocketAddr,
    /// Whether IPv4 senders are served too on an IPv6 socket.
    pub(crate) dual_stack: bool,
    /// The receive buffer the kernel granted (as `SO_RCVBUF` reports it).
    pub(crate) rcvbuf: usize,
}

/// Binds `addr`; with `any_address`, `[::]` with `IPV6_V6ONLY` off, or `0.0.0.0` when
/// IPv6 is not available.
pub(crate) fn bind(addr: SocketAddr, any_address: bool, wanted: usize) -> io::Result<Listener> {
    let (socket, dual_stack) = match bind_one(addr, any_address) {
        Ok(s) => (s, addr.is_ipv6() && any_address),
        Err(e) if any_address && ipv6_unavailable(&e) => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            (bind_one(v4, false)?, false)
        }
        Err(e) => return Err(e),
    };
    listener(socket, dual_stack, wanted)
}

/// The socket systemd passed (socket activation: `LISTEN_PID` is this process and
/// `LISTEN_FDS` at least 1; the first descriptor, 3, is taken), given the same
/// receive-buffer treatment as one of ncu-recv's own. `Ok(None)` when none was
/// passed; an error when the descriptor is not a UDP socket.
pub(crate) fn inherited(wanted: usize) -> io::Result<Option<Listener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    if pid.and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
        || fds.and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) == 0
    {
        return Ok(None);
    }
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    const FIRST: RawFd = 3;
    let kind = getsockopt_int(FIRST, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let domain = getsockopt_int(FIRST, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    if kind != libc::SOCK_DGRAM || !matches!(domain, libc::AF_INET | libc::AF_INET6) {
        return Err(io::Error::other(
            "the socket passed (LISTEN_FDS) is not a UDP socket: use ListenDatagram=",
        ));
    }
    // SAFETY: descriptor 3 was handed to this process by the service manager to own
    // (LISTEN_PID is ours), and nothing else in it uses that descriptor.
    let socket = unsafe { <Socket as std::os::fd::FromRawFd>::from_raw_fd(FIRST) };
    socket.set_cloexec(true)?;
    let dual_stack = domain == libc::AF_INET6 && !socket.only_v6().unwrap_or(true);
    listener(socket, dual_stack, wanted).map(Some)
}

/// A bound socket made ready: non-blocking, its receive buffer raised to
/// `wanted` when smaller (root may force it beyond `net.core.rmem_max`;
/// others ask and see).
fn listener(socket: Socket, dual_stack: bool, wanted: usize) -> io::Result<Listener> {
    socket.set_nonblocking(true)?;
    let fd = socket.as_raw_fd();
    if socket.recv_buffer_size().unwrap_or(0) < wanted {
        let forced = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, wanted);
        if forced.is_err() {
            let _ = socket.set_recv_buffer_size(wanted);
        }
    }
    let rcvbuf = socket.recv_buffer_size().unwrap_or(0);
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound to a non-IP address"))?;
    Ok(Listener {
        socket,
        local,
        dual_stack,
        rcvbuf,
    })
}

fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a pointer to a c_int and its size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bind_one(addr: SocketAddr, dual: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && dual {
        socket.set_only_v6(false)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid fd and a pointer to a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One received datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// Who sent it (IPv4-mapped IPv6 addresses given as IPv4).
    pub(crate) from: SocketAddr,
    /// Bytes in the slot.
    pub(crate) len: usize,
    /// The datagram was larger than the slot (`MSG_TRUNC`).
    pub(crate) truncated: bool,
}

/// Receive buffers allocated once: `BATCH` slots and their addresses.
pub(crate) struct Batch {
    slot: usize,
    buf: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    meta: Vec<Meta>,
    use_recvmmsg: bool,
}

impl Batch {
    /// Buffers for `BATCH` datagrams of up to `slot` bytes each.
    pub(crate) fn new(slot: usize) -> Batch {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
        let zero_addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
        Batch {
            slot,
            buf: vec![0; slot * BATCH].into_boxed_slice(),
            addrs: vec![zero_addr; BATCH].into_boxed_slice(),
            meta: Vec::with_capacity(BATCH),
            use_recvmmsg: true,
        }
    }

    /// The datagrams of the last [`Batch::recv`]: metadata and bytes.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Meta, &[u8])> + '_ {
        self.meta
            .iter()
            .enumerate()
            .map(move |(i, m)| (*m, &self.buf[i * self.slot..i * self.slot + m.len]))
    }

    /// Takes what is waiting, without blocking: up to `BATCH` datagrams. Returns how
    /// many (0: nothing waits).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.meta.clear();
        // SAFETY: mmsghdr and iovec are plain old data; zeroes are valid.
        let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        let base = self.buf.as_mut_ptr();
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                // SAFETY: i * slot is within buf (BATCH slots).
                iov_base: unsafe { base.add(i * self.slot) }.cast(),
                iov_len: self.slot,
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        let n = loop {
            let rc = if self.use_recvmmsg {
                // SAFETY: hdrs points at BATCH initialised headers whose buffers live
                // as long as self; MSG_DONTWAIT never blocks.
                unsafe {
                    libc::recvmmsg(
                        fd,
                        hdrs.as_mut_ptr(),
                        BATCH as libc::c_uint,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                }
            } else {
                // SAFETY: as above, one header.
                let rc = unsafe { libc::recvmsg(fd, &mut hdrs[0].msg_hdr, libc::MSG_DONTWAIT) };
                if rc >= 0 {
                    hdrs[0].msg_len = rc as libc::c_uint;
                    1
                } else {
                    -1
                }
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(0),
                Some(libc::ENOSYS) if self.use_recvmmsg => self.use_recvmmsg = false,
                _ => return Err(err),
            }
        };
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            let h = &hdr.msg_hdr;
            let from = sockaddr_to_std(&self.addrs[i], h.msg_namelen)
                .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
            let len = (hdr.msg_len as usize).min(self.slot);
            let truncated = h.msg_flags & libc::MSG_TRUNC != 0;
            self.meta.push(Meta {
                from,
                len,
                truncated,
            });
        }
        Ok(n)
    }
}

fn sockaddr_to_std(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in, and it is long enough.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says it is a sockaddr_in6, and it is long enough.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            match ip.to_ipv4_mapped() {
                Some(v4) => Some(SocketAddr::V4(SocketAddrV4::new(v4, port))),
                None => Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                ))),
            }
        }
        _ => None,
    }
}

/// What became of a datagram handed to [`send_to`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Sent,
    /// The socket's send buffer is full (or the kernel is out of buffers): dropped.
    Full,
}

/// Sends `bytes` to `to` from the listening socket without blocking. An IPv4
/// destination is given as IPv4-mapped IPv6 on an IPv6 socket.
pub(crate) fn send_to(
    socket: &Socket,
    local: SocketAddr,
    to: SocketAddr,
    bytes: &[u8],
) -> io::Result<Sent> {
    let to = match to {
        SocketAddr::V4(v4) if local.is_ipv6() => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        other => other,
    };
    let to = SockAddr::from(to);
    loop {
        match socket.send_to(bytes, &to) {
            Ok(_) => return Ok(Sent::Sent),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                return Ok(Sent::Full)
            }
            Err(e) => return Err(e),
        }
    }
}

/// The kernel's drop count for socket `fd` (receive buffer full), from the line of
/// its inode in `/proc/self/net/udp6` or `/proc/self/net/udp` (the last column).
pub(crate) fn proc_drops(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat on a valid fd into a zeroed stat.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    let inode = st.st_ino.to_string();
    // Through /proc/self: the unit's ProcSubset=pid hides /proc/net, not /proc/self/net.
    for path in ["/proc/self/net/udp6", "/proc/self/net/udp"] {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 12 && cols[9] == inode {
                return cols.last().and_then(|d| d.parse().ok());
            }
        }
    }
    None
}
