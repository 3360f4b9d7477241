//! Model-based test of the reassembler: thousands of random sessions through a network
//! that loses, reorders, duplicates, flips bits and truncates, each checked against an
//! obviously correct model built from sets of sequence numbers.
//!
//! Replay a failure with the seed it prints:
//! `NCU_MODEL_SEED=<seed> cargo test -p ncu-proto --test model`.
//! More sessions: `NCU_MODEL_SESSIONS=100000`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ncu_proto::event::{Event, SilentReason};
use ncu_proto::framer::{Framer, Outbox};
use ncu_proto::reassembler::{Config, Reassembler};
use ncu_proto::wire::{EndReason, Payload, Repr, LINE_PARTIAL};

mod common;
use common::Rng;

/// What the sender sent: lines by sequence number.
struct SentLine {
    text: Vec<u8>,
    flags: u8,
}

/// One datagram in flight.
struct Flight {
    arrive_us: u64,
    order: u64,
    session: usize,
    bytes: Vec<u8>,
    corrupted: bool,
}

struct Profile {
    loss: u64,
    dup: u64,
    corrupt: u64,
    max_delay_us: u64,
}

struct SessionPlan {
    lines: Vec<SentLine>,
    ends_cleanly: bool,
    addr: SocketAddr,
}

fn make_lines(rng: &mut Rng, max_datagram: usize) -> Vec<SentLine> {
    let n = match rng.below(10) {
        0 => 0,
        1..=6 => rng.below(60),
        _ => rng.below(400),
    };
    (0..n)
        .map(|i| {
            let len = match rng.below(20) {
                0 => max_datagram + rng.below(3 * max_datagram as u64) as usize, // fragments
                1 => 0,
                _ => rng.below(200) as usize,
            };
            let mut text: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len > 3 {
                text[..3].copy_from_slice(&(i as u32).to_be_bytes()[1..]);
            }
            let flags = if rng.chance(5) { LINE_PARTIAL } else { 0 };
            SentLine { text, flags }
        })
        .collect()
}

/// Runs the sender side of one session: returns its datagrams with send times.
fn send_session(
    rng: &mut Rng,
    id: u64,
    name: &str,
    plan: &SessionPlan,
    max_datagram: usize,
    start_us: u64,
) -> Vec<(u64, Vec<u8>)> {
    let mut framer = Framer::new(id, name, max_datagram);
    framer.set_pad_full(rng.chance(50));
    let mut outbox = Outbox::default();
    let mut now = start_us;
    let mut out = Vec::new();
    framer.hello(1, now, "stdin", now, &mut outbox);
    let mut i = 0;
    while i < plan.lines.len() {
        // A batch of lines that were waiting together.
        let batch = 1 + rng.below(8) as usize;
        for line in plan.lines.iter().skip(i).take(batch) {
            framer.push_line(line.flags, &line.text, now, &mut outbox);
        }
        i += batch;
        framer.flush(&mut outbox);
        if rng.chance(10) {
            framer.heartbeat(now, &mut outbox);
        }
        for d in outbox.datagrams() {
            out.push((now, d.to_vec()));
        }
        outbox.clear();
        now += rng.below(50_000);
    }
    // Idle tail: heartbeats, then END (or death).
    for _ in 0..rng.below(3) {
        now += 100_000 + rng.below(200_000);
        framer.heartbeat(now, &mut outbox);
    }
    if plan.ends_cleanly {
        now += rng.below(10_000);
        framer.end(EndReason::Eof, now, &mut outbox);
    }
    for d in outbox.datagrams() {
        out.push((now, d.to_vec()));
    }
    out
}

fn corrupt(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if rng.chance(50) && !bytes.is_empty() {
        let bit = rng.below(bytes.len() as u64 * 8) as usize;
        bytes[bit / 8] ^= 1 << (bit % 8);
    } else {
        // Lengths 1 and 2 would be a prefix of the magic: plain text, not ncu.
        let len = rng.below(bytes.len() as u64) as usize;
        bytes.truncate(if len < 3 { 0 } else { len });
    }
}

/// Lines whose every fragment arrived intact at least once (the model's "received").
fn received_lines(flights: &[Flight], session: usize) -> BTreeSet<u64> {
    let mut whole = BTreeSet::new();
    let mut frag_bytes: HashMap<u64, (u32, BTreeSet<u32>, u32)> = HashMap::new();
    for f in flights
        .iter()
        .filter(|f| f.session == session && !f.corrupted)
    {
        let repr = Repr::parse(&f.bytes).expect("intact datagrams decode");
        match repr.payload {
            Payload::Lines { count, .. } => {
                for k in 0..u64::from(count) {
                    whole.insert(repr.header.seq + k);
                }
            }
            Payload::Fragment {
                offset,
                total,
                bytes,
                ..
            } => {
                let entry =
                    frag_bytes
                        .entry(repr.header.seq)
                        .or_insert((total, BTreeSet::new(), 0));
                if entry.1.insert(offset) {
                    entry.2 += bytes.len() as u32;
                }
            }
            _ => {}
        }
    }
    for (seq, (total, _, got)) in frag_bytes {
        if got == total {
            whole.insert(seq);
        }
    }
    whole
}

fn check_session(
    seed: u64,
    index: usize,
    plan: &SessionPlan,
    flights: &[Flight],
    events: &[Event],
    max_whole_line: usize,
) {
    let ctx = format!("seed {seed} session {index}");
    if std::env::var_os("NCU_MODEL_DEBUG").is_some() {
        for e in events {
            match e {
                Event::Line { seq, late, .. } => eprintln!("{ctx}: line {seq} late={late}"),
                other => eprintln!("{ctx}: {other:?}"),
            }
        }
        for f in flights.iter().filter(|f| f.session == index) {
            let what = Repr::parse(&f.bytes).map(|r| (r.kind(), r.header.seq));
            eprintln!("{ctx}: flight at {} {what:?}", f.arrive_us);
        }
    }
    let n = plan.lines.len() as u64;
    let received = received_lines(flights, index);
    let hello_arrived = flights.iter().any(|f| {
        f.session == index
            && !f.corrupted
            && matches!(
                Repr::parse(&f.bytes).map(|r| r.payload),
                Ok(Payload::Hello { .. })
            )
    });
    let end_arrived = flights.iter().any(|f| {
        f.session == index
            && !f.corrupted
            && matches!(
                Repr::parse(&f.bytes).map(|r| r.payload),
                Ok(Payload::End { .. })
            )
    });
    let any_arrived = flights.iter().any(|f| f.session == index && !f.corrupted);
    if !any_arrived {
        assert!(
            events.is_empty(),
            "{ctx}: events for a session nothing arrived of"
        );
        return;
    }

    let mut first_seq = None;
    let mut expected_next = 0;
    let mut lost: BTreeSet<u64> = BTreeSet::new();
    let mut delivered: BTreeSet<u64> = BTreeSet::new();
    let mut lost_at_end = None;
    let mut silent = None;
    for event in events {
        match event {
            Event::Start {
                first_seq: f,
                joined,
                ..
            } => {
                assert!(first_seq.is_none(), "{ctx}: two starts");
                first_seq = Some(*f);
                expected_next = *f;
                if hello_arrived || received.contains(&1) {
                    // HELLO or line 1 may still arrive after the join window: then the
                    // session was joined at a later line, and they come late.
                    assert!(*f == 1 || *joined, "{ctx}: start {f} not joined");
                }
            }
            Event::Line {
                seq,
                text,
                partial,
                late,
                ..
            } => {
                assert!(first_seq.is_some(), "{ctx}: line before start");
                let sent = &plan.lines[(*seq - 1) as usize];
                assert_eq!(text, &sent.text, "{ctx}: text of line {seq}");
                assert_eq!(
                    *partial,
                    sent.flags & LINE_PARTIAL != 0,
                    "{ctx}: partial flag of {seq}"
                );
                assert!(
                    received.contains(seq),
                    "{ctx}: line {seq} delivered but never arrived"
                );
                assert!(delivered.insert(*seq), "{ctx}: line {seq} delivered twice");
                if *late {
                    assert!(
                        lost.remove(seq) || *seq < first_seq.unwrap(),
                        "{ctx}: late line {seq} was not in a reported gap"
                    );
                } else {
                    assert_eq!(*seq, expected_next, "{ctx}: line out of order");
                    expected_next += 1;
                }
            }
            Event::Gap { first, last, .. } => {
                assert_eq!(
                    *first, expected_next,
                    "{ctx}: gap does not start at the hole"
                );
                assert!(last >= first, "{ctx}: empty gap");
                for s in *first..=*last {
                    assert!(s <= n, "{ctx}: gap names line {s} past the {n} sent");
                    lost.insert(s);
                }
                expected_next = last + 1;
            }
            Event::End { lines, lost: l, .. } => {
                assert!(plan.ends_cleanly, "{ctx}: end for a sender that died");
                assert_eq!(*lines, n, "{ctx}: lines in END");
                assert_eq!(
                    expected_next,
                    n + 1,
                    "{ctx}: end before every line was accounted for"
                );
                lost_at_end = Some(*l);
                assert_eq!(*l, lost.len() as u64, "{ctx}: lost count at end");
            }
            Event::Silent {
                last_seq,
                last_text,
                reason,
                ..
            } => {
                assert_eq!(*reason, SilentReason::DeadAfter, "{ctx}");
                silent = Some((*last_seq, last_text.clone(), expected_next));
            }
            Event::Resumed { .. } => {
                panic!("{ctx}: resumed, but the sender never paused that long")
            }
            other => panic!("{ctx}: unexpected {other:?}"),
        }
    }
    let first = first_seq.unwrap_or_else(|| panic!("{ctx}: no start"));
    // Everything that arrived at or after the start was delivered, unless it was a
    // fragmented line whose gap was given up before its fragments completed.
    for seq in received.range(first..) {
        let long = plan.lines[(*seq - 1) as usize].text.len() > max_whole_line;
        assert!(
            delivered.contains(seq) || long,
            "{ctx}: line {seq} arrived but was not delivered"
        );
    }
    if end_arrived {
        assert!(lost_at_end.is_some(), "{ctx}: END arrived but no end event");
        assert!(silent.is_none(), "{ctx}: silent after a clean end");
    } else {
        let (last_seq, last_text, next) = silent.unwrap_or_else(|| panic!("{ctx}: no silent"));
        // A fragmented line whose fragments straggled past the windows is lost, so it
        // cannot be the last line named.
        let highest = received
            .iter()
            .rev()
            .find(|&&seq| {
                plan.lines[(seq - 1) as usize].text.len() <= max_whole_line
                    || delivered.contains(&seq)
            })
            .copied()
            .unwrap_or(0);
        assert_eq!(last_seq, highest, "{ctx}: silent names the wrong last line");
        if highest > 0 {
            let want = &plan.lines[(highest - 1) as usize].text;
            assert_eq!(
                last_text.as_deref(),
                Some(&want[..want.len().min(ncu_proto::event::LAST_TEXT_MAX)]),
                "{ctx}"
            );
        }
        // Tail loss is found when a heartbeat after the last line arrived.
        assert!(next > highest, "{ctx}: silent while lines were still held");
    }
}

fn run_batch(seed: u64, sessions: usize, profile: &Profile) -> usize {
    let mut rng = Rng(seed | 1);
    let max_datagram = [200, 512, 1400][rng.below(3) as usize];
    let plans: Vec<SessionPlan> = (0..sessions)
        .map(|i| SessionPlan {
            lines: make_lines(&mut rng, max_datagram),
            ends_cleanly: rng.chance(70),
            addr: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 40000)),
        })
        .collect();
    let mut flights = Vec::new();
    let mut order = 0;
    for (i, plan) in plans.iter().enumerate() {
        let start = rng.below(300_000);
        let id = ncu_proto::wire::session_id(1_700_000_000, rng.next() as u32);
        for (sent_us, bytes) in
            send_session(&mut rng, id, &format!("s{i}"), plan, max_datagram, start)
        {
            if rng.chance(profile.loss) {
                continue;
            }
            let copies = if rng.chance(profile.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let mut bytes = bytes.clone();
                let corrupted = rng.chance(profile.corrupt);
                if corrupted {
                    corrupt(&mut rng, &mut bytes);
                }
                let arrive_us = sent_us + rng.below(profile.max_delay_us + 1);
                order += 1;
                flights.push(Flight {
                    arrive_us,
                    order,
                    session: i,
                    bytes,
                    corrupted,
                });
            }
        }
    }
    flights.sort_by_key(|f| (f.arrive_us, f.order));

    let config = Config {
        reorder_window: Duration::from_millis(200),
        ..Config::default()
    };
    let dead_after = config.dead_after;
    let base = Instant::now();
    let mut rx = Reassembler::new(config, base);
    let at = |us: u64| base + Duration::from_micros(us);
    let index_of: HashMap<SocketAddr, usize> =
        plans.iter().enumerate().map(|(i, p)| (p.addr, i)).collect();
    let mut events: Vec<Vec<Event>> = (0..sessions).map(|_| Vec::new()).collect();
    let mut corrupt_events = 0u64;
    let mut collect = |rx: &mut Reassembler, corrupt_events: &mut u64| {
        while let Some(event) = rx.poll_event() {
            let addr = match &event {
                Event::Corrupt { suppressed, .. } => {
                    *corrupt_events += 1 + suppressed;
                    continue;
                }
                Event::Start { session, .. }
                | Event::Line { session, .. }
                | Event::Gap { session, .. }
                | Event::Silent { session, .. }
                | Event::Resumed { session, .. }
                | Event::End { session, .. }
                | Event::Retired { session } => session.addr,
            };
            // Kept as a copy; the event itself goes back, so that later lines are
            // built in recycled buffers (which this model then checks).
            events[index_of[&addr]].push(event.clone());
            rx.recycle(event);
        }
    };
    for f in &flights {
        while let Some(t) = rx.poll_timeout().filter(|&t| t <= at(f.arrive_us)) {
            let us = t.duration_since(base).as_micros() as u64;
            rx.handle_timeout(t, us);
            collect(&mut rx, &mut corrupt_events);
        }
        let addr = if f.corrupted {
            SocketAddr::from(([192, 0, 2, 1], 9))
        } else {
            plans[f.session].addr
        };
        rx.handle_datagram(at(f.arrive_us), f.arrive_us, addr, &f.bytes);
        collect(&mut rx, &mut corrupt_events);
    }
    let end_us = flights.last().map_or(0, |f| f.arrive_us) + dead_after.as_micros() as u64 * 3;
    while let Some(t) = rx.poll_timeout().filter(|&t| t <= at(end_us)) {
        rx.handle_timeout(t, t.duration_since(base).as_micros() as u64);
        collect(&mut rx, &mut corrupt_events);
    }
    let corrupted = flights.iter().filter(|f| f.corrupted).count() as u64;
    assert_eq!(
        rx.stats().corrupt_total(),
        corrupted,
        "seed {seed}: every corrupted datagram counted"
    );
    // Corrupt events, plus those folded into a later event's `suppressed`, plus those
    // still waiting to be reported, add up to the count.
    assert!(corrupt_events <= corrupted, "seed {seed}");
    assert_eq!(
        rx.held_bytes(),
        0,
        "seed {seed}: bytes still held after every session ended"
    );
    for (i, plan) in plans.iter().enumerate() {
        let max_whole_line = Framer::new(0, "", max_datagram).max_whole_line();
        check_session(seed, i, plan, &flights, &events[i], max_whole_line);
    }
    plans.iter().map(|p| p.lines.len()).sum()
}

fn sessions_wanted(default: usize) -> usize {
    std::env::var("NCU_MODEL_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn run_profile(name: &str, profile: &Profile, total_sessions: usize) {
    let seed = common::seed("NCU_MODEL_SEED");
    println!("model {name}: NCU_MODEL_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let mut done = 0;
    let mut lines = 0;
    while done < total_sessions {
        let batch = (1 + rng.below(16) as usize).min(total_sessions - done);
        let batch_seed = rng.next();
        lines += run_batch(batch_seed, batch, profile);
        done += batch;
    }
    println!("model {name}: {done} sessions, {lines} lines checked");
}

#[test]
fn model_clean_network() {
    let profile = Profile {
        loss: 0,
        dup: 0,
        corrupt: 0,
        max_delay_us: 0,
    };
    run_profile("clean", &profile, sessions_wanted(1_000));
}

#[test]
fn model_lossy_reordering_duplicating_corrupting_network() {
    let profile = Profile {
        loss: 10,
        dup: 5,
        corrupt: 3,
        max_delay_us: 150_000,
    };
    run_profile("lossy", &profile, sessions_wanted(10_000));
}

#[test]
fn model_delays_past_the_reorder_window_make_late_lines() {
    let profile = Profile {
        loss: 5,
        dup: 10,
        corrupt: 0,
        max_delay_us: 600_000,
    };
    run_profile("late", &profile, sessions_wanted(2_000));
}

#[test]
fn model_heavy_loss() {
    let profile = Profile {
        loss: 50,
        dup: 5,
        corrupt: 5,
        max_delay_us: 50_000,
    };
    run_profile("heavy", &profile, sessions_wanted(2_000));
}
