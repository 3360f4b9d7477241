//! A fleet's kernels on one machine, for `bench/netconsole.sh`: extended netconsole
//! records of 96 bytes from HOSTS hosts, each its own loopback address
//! (127.1.0.0 on, port 6665, as the kernel sends from), at a given rate.
//!
//! ```text
//! bench-netconsole ADDR HOSTS RATE SECONDS [FIRST_SEQ]
//! ```
//! Record `i` goes from host `i % HOSTS` with that host's number `FIRST_SEQ + i / HOSTS`
//! (so a second run with FIRST_SEQ continues every host's numbering). RATE 0: as fast
//! as it can. Prints on stdout: `sent N records from H hosts in S s (R/s)`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// The size of each record, header and newline included.
const RECORD: usize = 96;

fn host_addr(h: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 1 + (h >> 16) as u8, (h >> 8) as u8, h as u8)
}

fn raise_fd_limit(want: u64) {
    let lim = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit with a valid struct; failing leaves the limit as it was.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
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
    raise_fd_limit(u64::from(hosts) + 1024);
    let sockets: Vec<UdpSocket> = (0..hosts)
        .map(|h| {
            let s = UdpSocket::bind(SocketAddrV4::new(host_addr(h), 6665))
                .unwrap_or_else(|e| panic!("bind {}:6665: {e}", host_addr(h)));
            s.connect(dest).expect("connect");
            s
        })
        .collect();
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
        if sent % 256 == 0 {
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
        while sockets[h as usize].send(&record).is_err() {}
        sent += 1;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "sent {sent} records from {hosts} hosts in {took:.3} s ({:.0}/s)",
        sent as f64 / took
    );
}
