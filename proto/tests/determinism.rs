//! The same datagrams at the same times give the same events, in the same order,
//! exit events included: two reassemblers (each with its own hash seeds, so hash
//! order differs between them) are fed one random mix of ncu sessions with loss and
//! reordering, extended netconsole, plain text, garbage, more sessions than the
//! limit and more bytes than the budget, then flushed; their outputs must be
//! identical. Replay with `NCU_DETERMINISM_SEED=<seed>`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ncu_proto::reassembler::{Config, Reassembler};
use ncu_proto::sender::{self, Sender};
use ncu_proto::wire::{self, EndReason};

mod common;
use common::Rng;

/// One datagram and when it arrives (µs from the start).
struct Arrival {
    at_us: u64,
    from: SocketAddr,
    bytes: Vec<u8>,
}

fn traffic(seed: u64) -> Vec<Arrival> {
    let mut rng = Rng(seed | 1);
    let base = Instant::now();
    let mut out = Vec::new();
    // ncu senders, through the real Sender; some die without END.
    for s in 0..40u64 {
        let config = sender::Config {
            resend_buffer: 0,
            ..sender::Config::new(&format!("host-{}", s % 13))
        };
        let start = rng.below(2_000_000);
        let mut tx = Sender::new(config, wire::session_id(1, s as u32 + 1), base, start);
        let from: SocketAddr = format!("10.0.{}.{}:{}", s % 3, s % 7 + 1, 40_000 + s)
            .parse()
            .expect("literal");
        let lines = rng.below(300);
        let mut t = start;
        for i in 0..lines {
            t += rng.below(5_000);
            let text = format!("{s} line {i} {}\n", "z".repeat(rng.index(200)));
            tx.handle_input(0, text.as_bytes(), t);
            while let Some(batch) = tx.poll_transmit() {
                for d in batch.datagrams() {
                    if rng.chance(10) {
                        continue; // lost
                    }
                    let delay = rng.below(30_000);
                    out.push(Arrival {
                        at_us: t + delay,
                        from,
                        bytes: d.to_vec(),
                    });
                }
            }
        }
        if rng.chance(60) {
            tx.close(EndReason::Eof, base, t);
            while let Some(batch) = tx.poll_transmit() {
                for d in batch.datagrams() {
                    out.push(Arrival {
                        at_us: t + 100,
                        from,
                        bytes: d.to_vec(),
                    });
                }
            }
        }
    }
    // Extended netconsole, plain text and garbage from other sources.
    for k in 0..30u64 {
        let from: SocketAddr = format!("10.9.{}.{}:6665", k % 4, k + 1)
            .parse()
            .expect("literal");
        let mut t = rng.below(1_000_000);
        for seq in 0..rng.below(80) {
            t += rng.below(10_000);
            let bytes = match k % 3 {
                0 => format!("6,{},{},-;kernel {k} record {seq}\n", seq + rng.below(2), t)
                    .into_bytes(),
                1 => {
                    format!("text {k} {seq}{}", if rng.chance(70) { "\n" } else { "" }).into_bytes()
                }
                _ => (0..rng.index(40)).map(|_| rng.below(256) as u8).collect(),
            };
            out.push(Arrival {
                at_us: t,
                from,
                bytes,
            });
        }
    }
    out.sort_by_key(|a| a.at_us);
    out
}

/// Every event the reassembler gives for `arrivals`, timers and the final flush
/// included, as text.
fn run(arrivals: &[Arrival]) -> Vec<String> {
    let base = Instant::now();
    let config = Config {
        max_sessions: 24,
        max_held_bytes: 256 << 10,
        rng_seed: 7,
        ..Config::default()
    };
    let mut rx = Reassembler::new(config, base);
    let mut out = Vec::new();
    let at = |us: u64| base + Duration::from_micros(us);
    for a in arrivals {
        while let Some(due) = rx.poll_timeout().filter(|&d| d <= at(a.at_us)) {
            let us = due.duration_since(base).as_micros() as u64;
            rx.handle_timeout(due, us);
        }
        rx.handle_datagram(at(a.at_us), a.at_us, a.from, &a.bytes);
        out.extend(std::iter::from_fn(|| rx.poll_event()).map(|e| format!("{e:?}")));
        out.extend(std::iter::from_fn(|| rx.poll_transmit()).map(|t| format!("{t:?}")));
    }
    let end = arrivals.last().map_or(0, |a| a.at_us) + 3_000_000;
    while let Some(due) = rx.poll_timeout().filter(|&d| d <= at(end)) {
        let us = due.duration_since(base).as_micros() as u64;
        rx.handle_timeout(due, us);
        out.extend(std::iter::from_fn(|| rx.poll_event()).map(|e| format!("{e:?}")));
    }
    rx.flush(at(end), end);
    out.extend(std::iter::from_fn(|| rx.poll_event()).map(|e| format!("{e:?}")));
    out.extend(rx.summaries().iter().map(|s| format!("{s:?}")));
    out
}

#[test]
fn the_same_input_gives_the_same_output() {
    let seed = common::seed("NCU_DETERMINISM_SEED");
    for round in 0..5 {
        let arrivals = traffic(seed.wrapping_add(round));
        let (a, b) = (run(&arrivals), run(&arrivals));
        assert!(a.len() > 100, "seed {seed}: a real workload");
        assert!(
            a.iter().any(|e| e.starts_with("Retired")),
            "seed {seed}: the session limit was exercised"
        );
        if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
            panic!(
                "seed {seed} round {round}: event {i} differs:\n{}\n{}",
                a[i], b[i]
            );
        }
        assert_eq!(a.len(), b.len(), "seed {seed} round {round}");
    }
}
