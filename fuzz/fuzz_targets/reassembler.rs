//! Coverage-guided fuzzing of the reassembler (`cargo +nightly fuzz run reassembler`):
//! the input is cut into datagrams (2-byte length prefixes) with time steps; no panic,
//! held bytes stay under the bound.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ncu_proto::reassembler::{Config, Reassembler};

fuzz_target!(|data: &[u8]| {
    let config = Config {
        max_sessions: 8,
        max_held_bytes: 1 << 20,
        ..Config::default()
    };
    let bound = config.max_held_bytes + ncu_proto::reassembler::BUDGET_SLACK;
    let base = Instant::now();
    let mut rx = Reassembler::new(config, base);
    let mut rest = data;
    let mut now_us = 0u64;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 3);
        let step = u64::from(rest[2]) * 10_000;
        let (datagram, tail) = rest[3..].split_at(len);
        rest = tail;
        now_us += step;
        let at = base + Duration::from_micros(now_us);
        let from = SocketAddr::from(([10, 0, 0, (step % 3) as u8], 9));
        rx.handle_datagram(at, now_us, from, datagram);
        rx.handle_timeout(at, now_us);
        while rx.poll_event().is_some() {}
        assert!(rx.budget_used() <= bound);
    }
});
