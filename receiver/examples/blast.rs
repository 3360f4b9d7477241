//! Benchmark load for ncu-recv (see `bench/receiver.sh`); not part of the product.
//!
//! ```text
//! blast lines    ADDR SECONDS      one ncu session, one 100-byte line per datagram, flat out
//! blast garbage  ADDR SECONDS      random bytes, random lengths, flat out
//! blast sessions ADDR SESSIONS ROUNDS   SESSIONS concurrent ncu sessions, ROUNDS lines each
//! ```
//! Prints what it sent on stderr.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ncu_proto::framer::{Framer, Outbox};
use ncu_proto::wire::{self, EndReason};

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn session(n: u32) -> u64 {
    let now = wall_us();
    wire::session_id(
        (now / 1_000_000) as u32,
        (now as u32) ^ std::process::id().rotate_left(16) ^ n.wrapping_mul(0x9E37_79B9),
    )
}

fn socket(dest: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
    s.connect(dest).expect("connect");
    s
}

fn send_all(s: &UdpSocket, outbox: &mut Outbox) -> u64 {
    let mut n = 0;
    for d in outbox.datagrams() {
        // Loopback drops nothing on send; a full buffer (ENOBUFS) is just retried.
        while s.send(d).is_err() {}
        n += 1;
    }
    outbox.clear();
    n
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: blast lines|garbage ADDR SECONDS | blast sessions ADDR SESSIONS ROUNDS";
    let mode = args.get(1).expect(usage).as_str();
    let dest: SocketAddr = args.get(2).expect(usage).parse().expect("ADDR");
    let a: u64 = args.get(3).expect(usage).parse().expect("a number");
    match mode {
        "lines" => {
            let s = socket(dest);
            let mut f = Framer::new(session(0), &format!("blast-{}", std::process::id()), 1400);
            let mut out = Outbox::default();
            f.hello(std::process::id(), wall_us(), "blast", wall_us(), &mut out);
            let mut sent = send_all(&s, &mut out);
            let text = [b'x'; 100];
            let until = Instant::now() + Duration::from_secs(a);
            let mut lines = 0u64;
            while Instant::now() < until {
                for _ in 0..64 {
                    let now = wall_us();
                    f.push_line(0, &text, now, &mut out);
                    f.flush(&mut out);
                    lines += 1;
                }
                sent += send_all(&s, &mut out);
            }
            f.end(EndReason::Eof, wall_us(), &mut out);
            sent += send_all(&s, &mut out);
            eprintln!("blast lines: {lines} lines, {sent} datagrams in {a} s");
        }
        "garbage" => {
            let s = socket(dest);
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
            let mut buf = vec![0u8; 1500];
            let until = Instant::now() + Duration::from_secs(a);
            let mut sent = 0u64;
            while Instant::now() < until {
                for _ in 0..64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let len = 1 + (x % 1400) as usize;
                    for (i, b) in buf[..len].iter_mut().enumerate() {
                        *b = (x >> ((i % 8) * 8)) as u8 ^ i as u8;
                    }
                    if (x >> 3) & 3 == 0 {
                        buf[..4].copy_from_slice(b"NCU\x01");
                    }
                    let _ = s.send(&buf[..len]);
                    sent += 1;
                }
            }
            eprintln!("blast garbage: {sent} datagrams in {a} s");
        }
        "sessions" => {
            let rounds: u64 = args.get(4).expect(usage).parse().expect("ROUNDS");
            let s = socket(dest);
            let mut out = Outbox::default();
            let mut framers: Vec<Framer> = (0..a as u32)
                .map(|i| Framer::new(session(i), &format!("s{i}"), 1400))
                .collect();
            let mut sent = 0;
            for f in &mut framers {
                f.hello(1, wall_us(), "blast", wall_us(), &mut out);
                sent += send_all(&s, &mut out);
            }
            let text = [b'y'; 200];
            for _ in 0..rounds {
                for f in &mut framers {
                    f.push_line(0, &text, wall_us(), &mut out);
                    f.flush(&mut out);
                    sent += send_all(&s, &mut out);
                }
            }
            eprintln!("blast sessions: {a} sessions x {rounds} lines, {sent} datagrams");
        }
        _ => panic!("{usage}"),
    }
}
