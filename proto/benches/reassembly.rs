//! Decoding plus in-order reassembly, on one core: `cargo bench -p ncu-proto --bench
//! reassembly`. 120-byte lines, one per datagram (the receiver's worst case: one
//! header and CRC per line), then packed datagrams for comparison. Prints lines/s.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ncu_proto::event::Event;
use ncu_proto::framer::{Framer, Outbox};
use ncu_proto::reassembler::{Config, Reassembler};
use ncu_proto::wire;

fn datagrams(lines: usize, pack: bool) -> Vec<Vec<u8>> {
    let mut framer = Framer::new(wire::session_id(1_700_000_000, 1), "bench", 1400);
    let mut outbox = Outbox::default();
    framer.hello(1, 0, "stdin", 0, &mut outbox);
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(lines + 1);
    for i in 0..lines {
        let mut line =
            format!("[{:>12.6}] kernel: ncu bench line {i:>9} ", i as f64 / 1e4).into_bytes();
        line.resize(120, b'x');
        framer.push_line(0, &line, i as u64, &mut outbox);
        if !pack || i % 10 == 9 {
            framer.flush(&mut outbox);
        }
        if outbox.len() >= 1024 {
            out.extend(outbox.datagrams().map(<[u8]>::to_vec));
            outbox.clear();
        }
    }
    framer.flush(&mut outbox);
    out.extend(outbox.datagrams().map(<[u8]>::to_vec));
    out
}

fn run(name: &str, lines: usize, pack: bool) {
    let input = datagrams(lines, pack);
    let from: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let base = Instant::now();
        let mut rx = Reassembler::new(Config::default(), base);
        let start = Instant::now();
        let mut delivered = 0usize;
        for d in &input {
            rx.handle_datagram(base, 0, from, d);
            while let Some(event) = rx.poll_event() {
                if let Event::Line { text, .. } = &event {
                    delivered += 1;
                    std::hint::black_box(text);
                }
                // As ncu-recv does once an event is written out.
                rx.recycle(event);
            }
        }
        best = best.min(start.elapsed());
        assert_eq!(delivered, lines, "every line delivered");
    }
    let rate = lines as f64 / best.as_secs_f64();
    println!(
        "{name:<32} {lines} lines in {:>7.1} ms: {:>6.2} M lines/s ({} datagrams)",
        best.as_secs_f64() * 1e3,
        rate / 1e6,
        input.len()
    );
}

fn main() {
    let lines = std::env::var("NCU_BENCH_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    run("decode+reassemble, 1 line/dgram", lines, false);
    run("decode+reassemble, 10 lines/dgram", lines, true);
}
