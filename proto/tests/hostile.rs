//! Hostile fragment floods against the memory budget (issue: forged senders that
//! start long lines and never finish them grew the receiver without bound).
//!
//! 20,000 forged sessions from one source each send FRAGMENT pieces of a line that
//! claims to be long, beside a good ncu stream and a quiet netconsole host from
//! sources of their own. At every step the budget holds
//! (`budget_used <= max_held_bytes + BUDGET_SLACK`); at the end the good stream
//! arrived whole and in order, and the quiet host's last line is quoted when it goes
//! silent. Replay with the seed it prints: `NCU_HOSTILE_SEED=<seed>`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ncu_proto::event::Event;
use ncu_proto::framer::{Framer, Outbox};
use ncu_proto::reassembler::{Config, Reassembler, BUDGET_SLACK};
use ncu_proto::wire::{self, Header, Payload, Repr};

mod common;
use common::Rng;

const BUDGET: usize = 8 << 20;

struct Run {
    rx: Reassembler,
    base: Instant,
    now_us: u64,
    events: Vec<Event>,
    peak: usize,
}

impl Run {
    fn feed(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.now_us += 20;
        let at = self.base + Duration::from_micros(self.now_us);
        self.rx.handle_datagram(at, self.now_us, from, bytes);
        if let Some(t) = self.rx.poll_timeout().filter(|&t| t <= at) {
            self.rx.handle_timeout(t, self.now_us);
        }
        self.check();
    }

    fn check(&mut self) {
        let used = self.rx.budget_used();
        self.peak = self.peak.max(used);
        assert!(
            used <= BUDGET + BUDGET_SLACK,
            "budget {used} > {BUDGET} + {BUDGET_SLACK} at {} us",
            self.now_us
        );
        while let Some(e) = self.rx.poll_event() {
            // Keep what the assertions need, not 20,000 sessions' events.
            let kept = match &e {
                Event::Line { session, .. }
                | Event::Gap { session, .. }
                | Event::Silent { session, .. }
                | Event::Retired { session } => !session.addr.ip().to_string().ends_with(".2"),
                _ => false,
            };
            if kept {
                self.events.push(e);
            }
        }
    }

    /// Runs the clock `secs` further, firing every deadline on the way.
    fn idle(&mut self, secs: u64) {
        let end = self.now_us + secs * 1_000_000;
        while let Some(t) = self.rx.poll_timeout() {
            let t_us = t.duration_since(self.base).as_micros() as u64;
            if t_us > end {
                break;
            }
            self.now_us = self.now_us.max(t_us);
            self.rx.handle_timeout(t, self.now_us);
            self.check();
        }
        self.now_us = end;
    }
}

/// A FRAGMENT of line 1 of a forged session.
fn forged_piece(session: u64, offset: u32, total: u32, bytes: &[u8], now_us: u64) -> Vec<u8> {
    let mut out = Vec::new();
    Repr {
        header: Header {
            session,
            seq: 1,
            sent_at_us: now_us,
            counter: offset,
        },
        payload: Payload::Fragment {
            offset,
            total,
            line_flags: 0,
            bytes,
        },
    }
    .emit(&mut out);
    out
}

/// `nearly_complete`: each forged line is filled to one byte short of its total;
/// otherwise four 1,300-byte pieces at scattered offsets of a 1 MiB line.
fn flood(nearly_complete: bool) {
    let seed = common::seed("NCU_HOSTILE_SEED");
    let mut rng = Rng(seed);
    let base = Instant::now();
    let config = Config {
        max_held_bytes: BUDGET,
        ..Config::default()
    };
    let mut run = Run {
        rx: Reassembler::new(config, base),
        base,
        now_us: 1_700_000_000_000_000,
        events: Vec::new(),
        peak: 0,
    };
    let good: SocketAddr = "10.0.0.1:5000".parse().expect("an address");
    let evil: SocketAddr = "10.0.0.2:6000".parse().expect("an address");
    let quiet: SocketAddr = "10.0.0.3:6665".parse().expect("an address");

    // The quiet host says its last words, then nothing.
    run.feed(quiet, b"6,100,5000000,-;last words of the quiet host\n");
    // The good stream.
    let session = wire::session_id((run.now_us / 1_000_000) as u32, 0x600d);
    let mut framer = Framer::new(session, "good", 1400);
    let mut outbox = Outbox::default();
    framer.hello(1, run.now_us, "stdin", run.now_us, &mut outbox);
    let mut sent = Vec::new();

    let pieces = 1300u32;
    let total = if nearly_complete { 16 * 1024 } else { 1 << 20 };
    for i in 0..20_000u64 {
        let forged = wire::session_id((run.now_us / 1_000_000) as u32, rng.next() as u32);
        let from = SocketAddr::new(evil.ip(), 6000 + (i % 64) as u16);
        if nearly_complete {
            // Every byte but the last, in random order.
            let mut offsets: Vec<u32> = (0..total - 1).step_by(pieces as usize).collect();
            for k in (1..offsets.len()).rev() {
                offsets.swap(k, rng.index(k + 1));
            }
            for offset in offsets {
                let len = pieces.min(total - 1 - offset) as usize;
                let d = forged_piece(forged, offset, total, &vec![b'x'; len], run.now_us);
                run.feed(from, &d);
            }
        } else {
            for _ in 0..4 {
                let offset = rng.below(u64::from(total - pieces)) as u32;
                let d = forged_piece(forged, offset, total, &[b'x'; 1300], run.now_us);
                run.feed(from, &d);
            }
        }
        if i % 50 == 0 {
            let text = format!("good line {}", sent.len() + 1).into_bytes();
            framer.push_line(0, &text, run.now_us, &mut outbox);
            framer.flush(&mut outbox);
            sent.push(text);
            let datagrams: Vec<Vec<u8>> = outbox.datagrams().map(<[u8]>::to_vec).collect();
            outbox.clear();
            for d in datagrams {
                run.feed(good, &d);
            }
        }
    }
    framer.end(wire::EndReason::Eof, run.now_us, &mut outbox);
    let datagrams: Vec<Vec<u8>> = outbox.datagrams().map(<[u8]>::to_vec).collect();
    for d in datagrams {
        run.feed(good, &d);
    }
    run.idle(10);

    let good_lines: Vec<&[u8]> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Line { session, text, .. } if session.addr == good => Some(text.as_slice()),
            _ => None,
        })
        .collect();
    let want: Vec<&[u8]> = sent.iter().map(Vec::as_slice).collect();
    assert_eq!(
        good_lines, want,
        "seed {seed}: the good stream arrives whole"
    );
    for e in &run.events {
        match e {
            Event::Gap { session, .. } | Event::Retired { session } => {
                panic!("seed {seed}: {e:?} of a session that is not the flood's: {session:?}")
            }
            _ => {}
        }
    }
    let quiet_silent = run.events.iter().any(|e| {
        matches!(e, Event::Silent { session, last_text: Some(t), .. }
            if session.addr == quiet && t == b"last words of the quiet host")
    });
    assert!(
        quiet_silent,
        "seed {seed}: the quiet host's silence names its last line"
    );
    assert!(
        run.rx.stats().held_limit_reached > 0,
        "the flood reached the budget"
    );
    println!(
        "seed {seed}: peak budget use {} KiB of {} KiB (+{} KiB slack); budget full {} times; {} sessions retired",
        run.peak / 1024,
        BUDGET / 1024,
        BUDGET_SLACK / 1024,
        run.rx.stats().held_limit_reached,
        run.rx.stats().retired
    );
}

#[test]
fn a_flood_of_unfinished_long_lines_stays_within_the_budget() {
    flood(false);
}

#[test]
fn a_flood_of_lines_one_byte_short_stays_within_the_budget() {
    flood(true);
}

/// A flood of spoofed source addresses, each one kernel record and so a session
/// of its own (every source with one session), with a session limit far above
/// what the budget holds: the budget still holds after every datagram (sessions
/// heard least recently are retired to stay within it), and a quiet host heard
/// just before the end keeps its last line.
#[test]
fn a_flood_of_spoofed_addresses_stays_within_the_budget() {
    let budget = 2 << 20;
    let config = Config {
        max_held_bytes: budget,
        max_sessions: 1 << 20,
        ..Config::default()
    };
    let base = Instant::now();
    let mut rx = Reassembler::new(config, base);
    let mut now_us = 0u64;
    let mut retired = 0u64;
    let mut peak = 0usize;
    for h in 0..40_000u32 {
        now_us += 5;
        let from = SocketAddr::from(([10, (h >> 16) as u8, (h >> 8) as u8, h as u8], 6665));
        let record = format!("6,{h},1000,-;spoofed record {h:06} .............................\n");
        rx.handle_datagram(
            base + Duration::from_micros(now_us),
            now_us,
            from,
            record.as_bytes(),
        );
        let used = rx.budget_used();
        peak = peak.max(used);
        assert!(
            used <= budget + BUDGET_SLACK,
            "budget {used} > {budget} + {BUDGET_SLACK} after {h} sources"
        );
        while let Some(e) = rx.poll_event() {
            retired += u64::from(matches!(e, Event::Retired { .. }));
        }
    }
    assert!(
        retired > 0,
        "sessions were retired to stay within the budget"
    );
    assert_eq!(rx.stats().retired, retired);
    eprintln!(
        "40,000 spoofed sources: peak {} KiB of a {} KiB budget, {retired} retired",
        peak / 1024,
        budget / 1024
    );
}
