//! Bounded mutation fuzzing on the stable toolchain, run with every `cargo test`:
//! valid datagrams (from the framer) and real netconsole captures are mutated (bit
//! flips, byte overwrites, truncation, splicing, length-field edits) and fed to the
//! decoder and the reassembler. Invariants: nothing panics, held memory stays under
//! the configured bounds, every rejection is counted.
//!
//! The coverage-guided targets in `fuzz/` (cargo-fuzz) use the same entry points.
//! Replay: `NCU_FUZZ_SEED=<seed> cargo test -p ncu-proto --test fuzz`; longer runs:
//! `NCU_FUZZ_ITERS=10000000`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ncu_proto::framer::{Framer, Outbox};
use ncu_proto::reassembler::{Config, Reassembler};
use ncu_proto::wire::{self, EndReason, Repr};

mod common;
use common::Rng;

fn seed() -> u64 {
    common::seed("NCU_FUZZ_SEED") | 1
}

fn iterations(default: usize) -> usize {
    std::env::var("NCU_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Valid datagrams of every kind, and real netconsole captures.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for max in [128, 512, 1400] {
        let mut framer = Framer::new(wire::session_id(1_700_000_000, max as u32), "fuzz", max);
        framer.set_pad_full(max == 512);
        framer.set_recovery(max == 1400);
        let mut outbox = Outbox::default();
        framer.hello(7, 0, "stdin", 0, &mut outbox);
        framer.push_line(0, b"short line", 1, &mut outbox);
        framer.push_line(wire::LINE_PARTIAL, b"", 1, &mut outbox);
        framer.flush(&mut outbox);
        framer.push_line(0, &vec![b'x'; 3 * max], 2, &mut outbox);
        framer.heartbeat(3, &mut outbox);
        framer.end(EndReason::Exit(1), 4, &mut outbox);
        out.extend(outbox.datagrams().map(<[u8]>::to_vec));
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/netconsole");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_none_or(|e| e != "hex") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(40)
        {
            let hex = line.split_whitespace().last().unwrap_or("");
            if !hex.is_ascii() {
                continue;
            }
            let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            out.extend(bytes);
        }
    }
    out.push(b"plain text from nc -u\n".to_vec());
    out
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..1 + rng.index(4) {
        match rng.index(7) {
            0 if !input.is_empty() => {
                let bit = rng.index(input.len() * 8);
                input[bit / 8] ^= 1 << (bit % 8);
            }
            1 if !input.is_empty() => {
                let i = rng.index(input.len());
                input[i] = rng.next() as u8;
            }
            2 => input.truncate(rng.index(input.len() + 1)),
            3 => {
                let other = &corpus[rng.index(corpus.len())];
                let from = rng.index(other.len() + 1);
                input.extend_from_slice(&other[from..]);
            }
            4 if input.len() >= 8 => {
                // Rewrite the payload length or a length inside the payload.
                let i = if rng.index(2) == 0 {
                    6
                } else {
                    rng.index(input.len() - 1)
                };
                let v = [0u16, 1, 0xff, 0xffff, rng.next() as u16][rng.index(5)];
                input[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            5 if input.len() >= wire::HEADER_LEN => {
                // Keep the CRC right so the payload parser itself is exercised.
                wire::seal_checksum(input);
            }
            _ => input.extend((0..rng.index(16)).map(|_| rng.next() as u8)),
        }
    }
    if input.len() >= wire::HEADER_LEN && rng.index(2) == 0 {
        wire::seal_checksum(input);
    }
}

#[test]
fn fuzz_decoder() {
    let mut rng = Rng(seed());
    let corpus = corpus();
    let mut accepted = 0;
    for _ in 0..iterations(200_000) {
        let mut input = corpus[rng.index(corpus.len())].clone();
        mutate(&mut rng, &corpus, &mut input);
        if let Ok(repr) = Repr::parse(&input) {
            accepted += 1;
            // Whatever decodes re-encodes to the same bytes.
            let mut again = Vec::new();
            repr.emit(&mut again);
            // FLAG_RECOVERY is a property of the sender, set on the bytes by the
            // framer; Repr does not carry it.
            if input[5] & wire::FLAG_RECOVERY != 0 {
                again[5] |= wire::FLAG_RECOVERY;
                wire::seal_checksum(&mut again);
            }
            assert_eq!(again, input, "decode/encode round trip");
        }
    }
    println!("decoder: {accepted} mutated datagrams still decoded");
    assert!(
        accepted > 0,
        "the mutator never produced a valid datagram: it explores nothing"
    );
}

#[test]
fn fuzz_reassembler() {
    let mut rng = Rng(seed());
    let corpus = corpus();
    let config = Config {
        max_sessions: 64,
        max_pending_bytes: 1 << 20,
        max_held_bytes: 4 << 20,
        max_line_bytes: 1 << 20,
        ..Config::default()
    };
    let bound = config.max_held_bytes + ncu_proto::reassembler::BUDGET_SLACK;
    let base = Instant::now();
    let mut rx = Reassembler::new(config, base);
    let mut now_us = 0u64;
    let mut events = 0u64;
    let iters = iterations(100_000);
    for i in 0..iters {
        let mut input = corpus[rng.index(corpus.len())].clone();
        if rng.index(4) != 0 {
            mutate(&mut rng, &corpus, &mut input);
        }
        now_us += rng.index(20_000) as u64;
        let at = base + Duration::from_micros(now_us);
        let from = SocketAddr::from(([10, 0, 0, rng.index(4) as u8], 1000 + rng.index(3) as u16));
        rx.handle_datagram(at, now_us, from, &input);
        if let Some(t) = rx.poll_timeout().filter(|&t| t <= at) {
            rx.handle_timeout(t, now_us);
        }
        while rx.poll_event().is_some() {
            events += 1;
        }
        assert!(
            rx.budget_used() <= bound,
            "iteration {i}: held {} > {bound}",
            rx.budget_used()
        );
        assert!(
            rx.session_count() <= 64 + 1,
            "iteration {i}: sessions unbounded"
        );
    }
    rx.flush(base + Duration::from_micros(now_us), now_us);
    while rx.poll_event().is_some() {
        events += 1;
    }
    assert_eq!(rx.stats().datagrams, iters as u64);
    println!("reassembler: {events} events, stats {:?}", rx.stats());
}
