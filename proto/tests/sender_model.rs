//! The real [`Sender`] alone, with the test owning the clock: heartbeats only while
//! idle, END's repeats and the linger bound, the resend and GONE rate limits under a
//! NACK flood, and rollover before a sealed session's counter could repeat a nonce.
//! Schedules are random; replay with `NCU_SENDER_SEED=<seed>`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ncu_proto::seal::{self, Keys};
use ncu_proto::sender::{self, Config, Event, Sender, Timer, To};
use ncu_proto::wire::{self, Datagram, EndReason, Kind, Payload, Repr};

mod common;
use common::Rng;

/// A datagram as it left, and when.
struct Sent {
    at_us: u64,
    to: To,
    bytes: Vec<u8>,
}

fn drain(tx: &mut Sender, at_us: u64, out: &mut Vec<Sent>) {
    while let Some(t) = tx.poll_transmit() {
        for d in t.datagrams() {
            out.push(Sent {
                at_us,
                to: t.to,
                bytes: d.to_vec(),
            });
        }
    }
}

fn kind(d: &[u8]) -> Option<Kind> {
    Datagram::new_unchecked(d).kind()
}

fn seed() -> u64 {
    common::seed("NCU_SENDER_SEED")
}

#[test]
fn heartbeats_come_only_after_a_heartbeat_of_quiet() {
    let seed = seed();
    let mut rng = Rng(seed | 1);
    let base = Instant::now();
    let at = |us: u64| base + Duration::from_micros(us);
    let hb = Duration::from_millis(250);
    let config = Config {
        heartbeat: Some(hb),
        resend_buffer: 0,
        ..Config::new("idle")
    };
    let mut tx = Sender::new(config, wire::session_id(1, 1), at(0), 0);
    let mut sent = Vec::new();
    drain(&mut tx, 0, &mut sent);
    let mut now = 0u64;
    // Bursts of lines with random pauses, some far longer than a heartbeat.
    let mut next_input = 0u64;
    for _ in 0..400 {
        let deadline = tx.poll_timeout().expect("a heartbeat is always armed");
        let deadline_us = deadline.duration_since(base).as_micros() as u64;
        if next_input <= deadline_us {
            now = next_input.max(now);
            tx.handle_input(0, b"a line\n", now);
            drain(&mut tx, now, &mut sent);
            next_input = now
                + match rng.below(3) {
                    0 => rng.below(1_000),
                    1 => rng.below(200_000),
                    _ => rng.below(1_500_000),
                };
        } else {
            now = deadline_us;
        }
        tx.handle_timeout(at(now), now);
        drain(&mut tx, now, &mut sent);
    }
    let hb_us = hb.as_micros() as u64;
    let mut heartbeats = 0;
    for w in sent.windows(2) {
        let gap = w[1].at_us - w[0].at_us;
        if kind(&w[1].bytes) == Some(Kind::Heartbeat) {
            heartbeats += 1;
            assert_eq!(
                gap, hb_us,
                "seed {seed}: a heartbeat exactly one period after"
            );
        } else {
            assert!(gap <= hb_us, "seed {seed}: {gap} us without anything sent");
        }
    }
    assert!(heartbeats > 10, "seed {seed}: idle times had heartbeats");
}

#[test]
fn end_is_repeated_until_quiet_and_lingering_is_bounded() {
    let seed = seed();
    let mut rng = Rng(seed | 1);
    for nack_every_ms in [None, Some(100u64), Some(600)] {
        let base = Instant::now();
        let at = |us: u64| base + Duration::from_micros(us);
        let session = wire::session_id(2, rng.next() as u32);
        let mut tx = Sender::new(Config::new("ends"), session, at(0), 0);
        let mut sent = Vec::new();
        for i in 0..20 {
            tx.handle_input(0, format!("line {i}\n").as_bytes(), i);
        }
        drain(&mut tx, 0, &mut sent);
        tx.close(EndReason::Eof, at(1_000), 1_000);
        drain(&mut tx, 1_000, &mut sent);
        let nack = nack_for(session, &[(1, 1)]);
        let mut now = 1_000u64;
        let mut next_nack = nack_every_ms.map(|ms| now + ms * 1_000);
        let mut last_nack = now;
        while !tx.is_closed() {
            let t = tx.poll_timeout().expect("lingering has deadlines");
            let t_us = t.duration_since(base).as_micros() as u64;
            match next_nack {
                Some(n) if n < t_us => {
                    now = n;
                    assert!(tx.handle_datagram(0, &nack, at(now), now), "a NACK");
                    last_nack = now;
                    next_nack = Some(n + nack_every_ms.unwrap_or(0) * 1_000);
                }
                _ => {
                    now = t_us;
                    tx.handle_timeout(at(now), now);
                }
            }
            drain(&mut tx, now, &mut sent);
            assert!(now < 10_000_000, "lingering ends");
        }
        let lingered = now - 1_000;
        let max = sender::LINGER_MAX.as_micros() as u64;
        let quiet = sender::LINGER_QUIET.as_micros() as u64;
        assert!(lingered <= max, "{nack_every_ms:?}: lingered {lingered} us");
        match nack_every_ms {
            // NACKs more often than the quiet time keep it until the bound.
            Some(ms) if ms * 1_000 < quiet => assert_eq!(lingered, max),
            _ => assert_eq!(now, last_nack + quiet, "{nack_every_ms:?}: quiet ends it"),
        }
        let ends: Vec<&Sent> = sent
            .iter()
            .filter(|s| kind(&s.bytes) == Some(Kind::End))
            .collect();
        assert!(ends
            .iter()
            .all(|e| e.bytes == ends[0].bytes && e.to == To::All));
        let repeat = sender::END_REPEAT.as_micros() as u64;
        for w in ends.windows(2) {
            assert_eq!(w[1].at_us - w[0].at_us, repeat, "END every {repeat} us");
        }
        assert_eq!(
            ends.len() as u64,
            lingered / repeat + 1,
            "{nack_every_ms:?}"
        );
        assert!(tx.poll_timeout().is_none() && tx.deadline(Timer::Heartbeat).is_none());
    }
}

/// A receiver's NACK asking `session` for `ranges`.
fn nack_for(session: u64, ranges: &[(u64, u32)]) -> Vec<u8> {
    let header = wire::Header {
        session,
        seq: 0,
        sent_at_us: 0,
        counter: 0,
    };
    let mut out = Vec::new();
    wire::write_header(&mut out, Kind::Nack, 0, 0, &header);
    wire::push_nack_ranges(&mut out, ranges);
    wire::finish_datagram(&mut out);
    assert!(matches!(
        Repr::parse(&out).map(|r| r.payload),
        Ok(Payload::Nack { .. })
    ));
    out
}

#[test]
fn a_nack_flood_is_answered_within_the_rate_limits() {
    let seed = seed();
    let mut rng = Rng(seed | 1);
    let base = Instant::now();
    let at = |us: u64| base + Duration::from_micros(us);
    let rate = 200_000u64;
    let config = Config {
        resend_rate: rate,
        resend_buffer: 1 << 20,
        pack: false,
        ..Config::new("flood")
    };
    let session = wire::session_id(3, 3);
    let mut tx = Sender::new(config, session, at(0), 0);
    let mut sent = Vec::new();
    let filler = "x".repeat(900);
    for i in 0..3_000 {
        tx.handle_input(0, format!("{i} {filler}\n").as_bytes(), 0);
        drain(&mut tx, 0, &mut sent);
    }
    let oldest = tx.ring().and_then(|r| r.oldest()).expect("a ring");
    assert!(oldest > 1, "the ring dropped the oldest lines");
    sent.clear();
    // Two seconds of NACKs, one every 100 us at random, asking for random old and
    // new ranges.
    let mut now = 0u64;
    while now < 2_000_000 {
        now += rng.below(200) + 1;
        let first = rng.below(3_000) + 1;
        let nack = nack_for(session, &[(first, 1 + rng.below(500) as u32)]);
        tx.handle_datagram(0, &nack, at(now), now);
        drain(&mut tx, now, &mut sent);
    }
    let resent: u64 = sent
        .iter()
        .filter(|s| kind(&s.bytes) == Some(Kind::Data))
        .map(|s| s.bytes.len() as u64)
        .sum();
    let burst = rate.max(65_536);
    let allowed = burst + rate * now / 1_000_000;
    assert!(
        resent <= allowed,
        "seed {seed}: resent {resent} > {allowed}"
    );
    assert!(resent > allowed / 2, "seed {seed}: resent only {resent}");
    let gones = sent
        .iter()
        .filter(|s| kind(&s.bytes) == Some(Kind::Gone))
        .count() as u64;
    let gone_allowed = sender::GONE_PER_SEC + sender::GONE_PER_SEC * now / 1_000_000;
    assert!(gones <= gone_allowed, "seed {seed}: {gones} GONE");
    assert!(
        gones > 0 && tx.stats().gone_limited > 0,
        "seed {seed}: GONE limited"
    );
    assert!(
        sent.iter().all(|s| s.to == To::One(0)),
        "answers go to the asker"
    );
    // A NACK of another session, or garbage, is dropped and counted.
    let bad = tx.stats().bad;
    assert!(!tx.handle_datagram(0, &nack_for(session ^ 1, &[(1, 1)]), at(now), now));
    assert!(!tx.handle_datagram(0, b"garbage", at(now), now));
    assert_eq!(tx.stats().bad, bad + 2);
}

#[test]
fn sealed_sessions_roll_over_before_a_counter_repeats() {
    let seed = seed();
    let mut rng = Rng(seed | 1);
    let keys = Keys::from_bytes([7; 32], &[]);
    let base = Instant::now();
    let at = |us: u64| base + Duration::from_micros(us);
    let limit = 40u64;
    let config = Config {
        keys: Some(keys.clone()),
        rollover_after: limit,
        id_seed: [seed as u8; 32],
        max_datagram: 300,
        ..Config::new("sealed")
    };
    let first = wire::session_id(4, 4);
    let mut tx = Sender::new(config, first, at(0), 0);
    let mut sent = Vec::new();
    let mut ids = vec![first];
    let mut rolled = 0;
    let mut lines = 0u64;
    for i in 0..2_000u64 {
        // Short lines, and now and then one that takes several fragments.
        let len = if rng.chance(5) {
            300 + rng.index(2_000)
        } else {
            rng.index(60)
        };
        let text = format!("{i} {}\n", "y".repeat(len));
        tx.handle_input(0, text.as_bytes(), i);
        lines += 1;
        drain(&mut tx, i, &mut sent);
        if rng.chance(10) {
            tx.handle_timeout(at(i * 1_000_000), i);
            drain(&mut tx, i, &mut sent);
        }
        while let Some(e) = tx.poll_event() {
            let Event::RolledOver { from, to } = e;
            assert_eq!(Some(&from), ids.last());
            assert!(!ids.contains(&to), "seed {seed}: session id {to:x} twice");
            ids.push(to);
            rolled += 1;
        }
    }
    tx.close(EndReason::Eof, at(3_000_000_000), 3_000);
    drain(&mut tx, 3_000, &mut sent);
    assert!(rolled > 10, "seed {seed}: rolled over {rolled} times");
    let mut nonces = HashSet::new();
    let mut opened = Vec::new();
    let mut session = None;
    let mut carried = 0u64;
    for s in &sent {
        opened.clear();
        seal::open(&keys, &s.bytes, &mut opened).expect("every datagram sealed");
        let repr = Repr::parse(&opened).expect("parses");
        assert!(
            u64::from(repr.header.counter) < limit,
            "seed {seed}: counter"
        );
        if session != Some(repr.header.session) {
            assert!(ids.contains(&repr.header.session), "seed {seed}: announced");
            assert_eq!(
                repr.kind(),
                Kind::Hello,
                "seed {seed}: a session starts with HELLO"
            );
            session = Some(repr.header.session);
        }
        if s.to == To::All && repr.kind() != Kind::End {
            let first = (repr.header.session, repr.header.counter);
            assert!(nonces.insert(first), "seed {seed}: counter {first:?} twice");
        }
        match repr.payload {
            Payload::Lines { count, .. } => carried += u64::from(count),
            Payload::Fragment { offset: 0, .. } => carried += 1,
            _ => {}
        }
    }
    assert_eq!(carried, lines, "seed {seed}: every line sent once");
    assert_eq!(tx.stats().lines, lines);
    assert_eq!(tx.stats().sessions, rolled + 1);
}

/// A destination that could not be reached at the start (a name resolved later)
/// gets a HEARTBEAT naming the sender and its last line at once, to it alone, after
/// the lines framed so far went to every destination.
#[test]
fn a_destination_reached_late_learns_the_name_at_once() {
    let base = Instant::now();
    let config = Config {
        resend_buffer: 1 << 20,
        ..Config::new("late-host")
    };
    let mut tx = Sender::new(config, wire::session_id(1, 2), base, 0);
    let mut sent = Vec::new();
    tx.handle_input(0, b"one\ntwo\n", 10);
    drain(&mut tx, 10, &mut sent);
    let before = sent.len();
    tx.handle_destination(1, 20);
    drain(&mut tx, 20, &mut sent);
    let new = &sent[before..];
    let hb: Vec<&Sent> = new
        .iter()
        .filter(|s| kind(&s.bytes) == Some(Kind::Heartbeat))
        .collect();
    assert_eq!(hb.len(), 1, "one HEARTBEAT");
    assert_eq!(hb[0].to, To::One(1), "to the new destination alone");
    let repr = Repr::parse(&hb[0].bytes).expect("a valid HEARTBEAT");
    assert_eq!(repr.header.seq, 2, "the last line number");
    match repr.payload {
        Payload::Heartbeat { name } => assert_eq!(name, "late-host"),
        other => panic!("not a heartbeat: {other:?}"),
    }
}
