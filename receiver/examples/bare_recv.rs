//! Benchmark baseline (see `bench/receiver.sh`): the barest recvmmsg loop, 32 slots
//! of 64 KiB and a 64 MiB receive buffer like ncu-recv, counting datagrams until
//! none came for 1 s after the first. Prints the count on stdout.

use std::mem;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

const BATCH: usize = 32;
const SLOT: usize = 65_536;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let s = UdpSocket::bind(&addr).expect("bind");
    let fd = s.as_raw_fd();
    let size: libc::c_int = 64 << 20;
    // SAFETY: a valid fd and a c_int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    eprintln!("bare: listening on {}", s.local_addr().expect("bound"));
    let mut buf = vec![0u8; SLOT * BATCH];
    let mut total = 0u64;
    loop {
        let timeout = if total == 0 {
            None
        } else {
            Some(Duration::from_secs(1))
        };
        s.set_read_timeout(timeout).expect("timeout");
        // SAFETY: plain old data, zeroes are valid.
        let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for i in 0..BATCH {
            iovs[i].iov_base = buf[i * SLOT..].as_mut_ptr().cast();
            iovs[i].iov_len = SLOT;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: BATCH valid headers over live buffers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        total += n as u64;
    }
    println!("{total}");
}
