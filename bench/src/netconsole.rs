//! A fleet's kernels on one machine, for `bench/netconsole.sh`: extended netconsole
//! records of 96 bytes from HOSTS hosts, each its own loopback address
//! (127.1.0.0 on, port 6665, as the kernel sends from), at a given rate. One socket
//! sends them all, each datagram's source address set with `IP_PKTINFO` (a socket
//! per host would need more descriptors than a process may have).
//!
//! ```text
//! bench-netconsole ADDR HOSTS RATE SECONDS [FIRST_SEQ]
//! ```
//! Record `i` goes from host `i % HOSTS` with that host's number `FIRST_SEQ + i / HOSTS`
//! (so a second run with FIRST_SEQ continues every host's numbering). RATE 0: as fast
//! as it can. Prints on stdout: `sent N records from H hosts in S s (R/s)`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The size of each record, header and newline included.
const RECORD: usize = 96;

fn host_addr(h: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 1 + (h >> 16) as u8, (h >> 8) as u8, h as u8)
}

/// Sends `bytes` to `dest` from `src` (a local address) through `socket`.
fn send_from(socket: &UdpSocket, src: Ipv4Addr, dest: SocketAddrV4, bytes: &[u8]) -> bool {
    // SAFETY: plain C structures, zeroed then filled; the control buffer is sized by
    // CMSG_SPACE for one in_pktinfo and aligned for cmsghdr; every pointer given to
    // sendmsg lives until it returns.
    unsafe {
        let mut to: libc::sockaddr_in = std::mem::zeroed();
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_port = dest.port().to_be();
        to.sin_addr.s_addr = u32::from(*dest.ip()).to_be();
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut to as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen =
            libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::IPPROTO_IP;
        (*cmsg).cmsg_type = libc::IP_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let info = libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>();
        (*info).ipi_ifindex = 0;
        (*info).ipi_spec_dst.s_addr = u32::from(src).to_be();
        libc::sendmsg(socket.as_raw_fd(), &msg, 0) >= 0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench-netconsole ADDR HOSTS RATE SECONDS [FIRST_SEQ]";
    let dest: SocketAddr = args.get(1).expect(usage).parse().expect("ADDR");
    let hosts: u32 = args.get(2).expect(usage).parse().expect("HOSTS");
    let rate: f64 = args.get(3).expect(usage).parse().expect("RATE");
    let secs: f64 = args.get(4).expect(usage).parse().expect("SECONDS");
    let first_seq: u64 = args.get(5).map_or(0, |s| s.parse().expect("FIRST_SEQ"));
    assert!((1..=1 << 20).contains(&hosts), "{usage}");
    let SocketAddr::V4(dest) = dest else {
        panic!("ADDR must be IPv4")
    };
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6665))
        .expect("bind 0.0.0.0:6665 (the port the kernel's netconsole sends from)");
    let total = if rate > 0.0 {
        (rate * secs) as u64
    } else {
        u64::MAX
    };
    let deadline = Duration::from_secs_f64(secs);
    let mut record = Vec::with_capacity(RECORD);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        // Pacing: every 256 records, wait until the schedule catches up.
        if sent.is_multiple_of(256) {
            let elapsed = started.elapsed();
            if elapsed >= deadline {
                break;
            }
            if rate > 0.0 {
                let due = Duration::from_secs_f64(sent as f64 / rate);
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
        }
        let h = (sent % u64::from(hosts)) as u32;
        let seq = first_seq + sent / u64::from(hosts);
        record.clear();
        let head = format!(
            "6,{seq},{},-;ncu-bench host {h:06} record {seq:010} ",
            seq * 1000
        );
        record.extend_from_slice(head.as_bytes());
        record.resize(RECORD - 1, b'.');
        record.push(b'\n');
        // Loopback drops nothing on send; a full buffer (ENOBUFS) is retried.
        while !send_from(&socket, host_addr(h), dest, &record) {}
        sent += 1;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "sent {sent} records from {hosts} hosts in {took:.3} s ({:.0}/s)",
        sent as f64 / took
    );
}
