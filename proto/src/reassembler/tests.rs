//! The reassembler's unit tests.

use super::*;
use crate::framer::{Framer, Outbox};
use crate::seal::{Keys, ReplayConfig};
use crate::wire::Header;

struct Harness {
    rx: Reassembler,
    base: Instant,
    now_us: u64,
}

impl Harness {
    fn new() -> Harness {
        let base = Instant::now();
        Harness {
            rx: Reassembler::new(Config::default(), base),
            base,
            now_us: 0,
        }
    }
    fn at(&self) -> Instant {
        self.base + Duration::from_micros(self.now_us)
    }
    fn feed(&mut self, from: &str, bytes: &[u8]) {
        let at = self.at();
        self.rx
            .handle_datagram(at, self.now_us, from.parse().unwrap(), bytes);
    }
    fn advance(&mut self, d: Duration) -> Vec<Event> {
        let end = self.now_us + d.as_micros() as u64;
        let mut events = self.events();
        while let Some(t) = self.rx.poll_timeout() {
            let us = t.duration_since(self.base).as_micros() as u64;
            if us > end {
                break;
            }
            self.now_us = us;
            self.rx.handle_timeout(t, us);
            events.extend(self.events());
        }
        self.now_us = end;
        events
    }
    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.rx.poll_event()).collect()
    }
}

fn datagrams(framer: &mut Framer, f: impl FnOnce(&mut Framer, &mut Outbox)) -> Vec<Vec<u8>> {
    let mut outbox = Outbox::default();
    f(framer, &mut outbox);
    framer.flush(&mut outbox);
    outbox.datagrams().map(<[u8]>::to_vec).collect()
}

fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Start { first_seq, .. } => format!("start {first_seq}"),
            Event::Line { seq, late, .. } => {
                format!("line {seq}{}", if *late { " late" } else { "" })
            }
            Event::Gap {
                first, last, kind, ..
            } => format!("gap {first}-{last} {}", kind.as_str()),
            Event::Silent {
                last_seq, reason, ..
            } => format!("silent {last_seq} {}", reason.as_str()),
            Event::Resumed { seq, .. } => format!("resumed {seq}"),
            Event::End { lost, .. } => format!("end lost={lost}"),
            Event::Corrupt { reason, .. } => format!("corrupt {reason}"),
            Event::Retired { .. } => "retired".to_owned(),
        })
        .collect()
}

#[test]
fn duplicates_count_lines_received_twice_not_repeated_ends() {
    let mut h = Harness::new();
    let mut f = Framer::new(wire::session_id(0, 7), "lingers", 1400);
    for d in datagrams(&mut f, |f, o| f.hello(1, 0, "stdin", 0, o)) {
        h.feed("10.0.0.1:5", &d);
    }
    let mut second = Vec::new();
    for text in [&b"one"[..], b"two", b"three"] {
        let ds = datagrams(&mut f, |f, o| {
            f.push_line(0, text, 0, o);
        });
        if text == b"two" {
            second = ds[0].clone();
        }
        for d in ds {
            h.feed("10.0.0.1:5", &d);
        }
    }
    // The sender lingers: END, repeated; a HELLO repeated too.
    let end = datagrams(&mut f, |f, o| f.end(EndReason::Eof, 0, o));
    for _ in 0..9 {
        h.feed("10.0.0.1:5", &end[0]);
    }
    h.advance(Duration::from_secs(1));
    let summary = &h.rx.summaries()[0];
    assert_eq!((summary.lines, summary.duplicates), (3, 0));
    // A line received twice is one duplicate.
    h.feed("10.0.0.1:5", &second);
    assert_eq!(h.rx.summaries()[0].duplicates, 1);
}

/// The same datagrams at the same times give the same events, exit ones included
/// (each reassembler's maps hash with a seed of their own, so any hash order that
/// reached the events would show here).
#[test]
fn the_same_inputs_and_times_give_the_same_events() {
    let run = || {
        let mut h = Harness::new();
        let mut out = Vec::new();
        for i in 0..40u64 {
            let mut f = Framer::new(wire::session_id(0, 100 + i as u32), &format!("s{i}"), 1400);
            let from = format!("10.0.{}.{}:5", i % 3, i);
            for d in datagrams(&mut f, |f, o| f.hello(1, 0, "stdin", 0, o)) {
                h.feed(&from, &d);
            }
            // Line 2 only: every session has a hole at line 1 when it all stops.
            let _ = datagrams(&mut f, |f, o| {
                f.push_line(0, b"lost", 0, o);
            });
            for d in datagrams(&mut f, |f, o| {
                f.push_line(0, format!("line of {i}").as_bytes(), 0, o);
            }) {
                h.feed(&from, &d);
            }
            h.feed(
                &format!("10.9.0.{i}:6665"),
                format!("partial text of {i}").as_bytes(),
            );
            h.now_us += 1;
        }
        out.extend(h.events());
        let at = h.at();
        h.rx.flush(at, h.now_us);
        out.extend(h.events());
        format!("{out:?}")
    };
    let first = run();
    // 40 gaps, 40 ncu lines and 40 partial text lines flushed at exit.
    assert_eq!(
        (
            first.matches("Gap {").count(),
            first.matches("Line {").count()
        ),
        (40, 80)
    );
    for _ in 0..5 {
        assert!(run() == first, "the events differ from run to run");
    }
}

#[test]
fn restarted_sender_silences_the_old_session_before_the_new_start() {
    let mut h = Harness::new();
    let mut old = Framer::new(wire::session_id(0, 1), "web", 1400);
    for d in datagrams(&mut old, |f, o| {
        f.hello(1, 0, "stdin", 0, o);
        f.push_line(0, b"last words", 0, o);
    }) {
        h.feed("10.0.0.1:1000", &d);
    }
    let mut new = Framer::new(wire::session_id(0, 2), "web", 1400);
    for d in datagrams(&mut new, |f, o| f.hello(2, 0, "stdin", 0, o)) {
        h.feed("10.0.0.1:1001", &d);
    }
    assert_eq!(
        kinds(&h.events()),
        ["start 1", "line 1", "silent 1 restarted", "start 1"]
    );
    // The old one does not go silent a second time when dead_after passes.
    let later = kinds(&h.advance(Duration::from_secs(6)));
    assert_eq!(
        later,
        ["silent 0 dead_after"],
        "only the new session goes silent"
    );
}

#[test]
fn a_sender_named_like_its_address_is_still_matched_on_restart() {
    let mut h = Harness::new();
    for id in [1, 2] {
        let mut f = Framer::new(wire::session_id(0, id), "10.0.0.7", 1400);
        for d in datagrams(&mut f, |f, o| f.hello(1, 0, "stdin", 0, o)) {
            h.feed("10.0.0.7:1000", &d);
        }
    }
    assert_eq!(
        kinds(&h.events()),
        ["start 1", "silent 0 restarted", "start 1"]
    );
}

#[test]
fn sealed_without_a_key_is_reported_once_per_session() {
    let mut h = Harness::new();
    let mut f = Framer::new(wire::session_id(0, 9), "s", 1400);
    let mut ds = datagrams(&mut f, |f, o| {
        for _ in 0..100 {
            f.push_line(0, b"secret", 0, o);
            f.flush(o);
        }
    });
    for d in &mut ds {
        d[5] |= wire::FLAG_SEALED;
        wire::seal_checksum(d);
        h.feed("10.0.0.8:1", d);
    }
    assert_eq!(kinds(&h.events()), ["corrupt sealed_no_key"]);
    assert_eq!(h.rx.stats().corrupt["sealed_no_key"], 100);
}

#[test]
fn with_a_key_only_authentic_sealed_datagrams_are_taken() {
    let key = [7u8; 32];
    let mut h = Harness::new();
    h.now_us = 1_700_000_000_000_000;
    h.rx.set_keys(Keys::from_bytes(key, &[]), ReplayConfig::default());
    let now_us = h.now_us;
    let mut f = Framer::new(wire::session_id(1_700_000_000, 5), "s", 1400);
    let plain = datagrams(&mut f, |f, o| {
        f.hello(1, now_us, "stdin", now_us, o);
        f.push_line(0, b"one", now_us, o);
        f.flush(o);
        f.push_line(0, b"two", now_us, o);
    });
    let sealed: Vec<Vec<u8>> = plain
        .iter()
        .map(|d| {
            let mut out = Vec::new();
            seal::seal(&Keys::from_bytes(key, &[]), d, &mut out);
            out
        })
        .collect();
    let wrong: Vec<u8> = {
        let mut out = Vec::new();
        seal::seal(&Keys::from_bytes([8; 32], &[]), &plain[2], &mut out);
        out
    };
    let mut flipped = sealed[2].clone();
    flipped[wire::HEADER_LEN + 1] ^= 1;
    wire::seal_checksum(&mut flipped);
    h.feed("10.0.0.9:1", &sealed[0]);
    h.feed("10.0.0.9:1", &sealed[1]);
    h.feed("10.0.0.9:1", &sealed[1]); // a copy
    h.feed("10.0.0.9:1", &plain[2]); // unsealed
    h.feed("10.0.0.9:1", &wrong); // another key
    h.feed("10.0.0.9:1", &flipped); // altered, CRC fixed up
    h.feed("10.0.0.9:1", b"6,1,2,-;forged kernel line\n");
    h.feed("10.0.0.9:1", &sealed[2]);
    assert_eq!(
        kinds(&h.events()),
        [
            "start 1",
            "line 1",
            "corrupt auth",
            "corrupt auth",
            "corrupt auth",
            "corrupt auth",
            "line 2"
        ]
    );
    assert_eq!(h.rx.summaries()[0].duplicates, 1);
}

#[test]
fn a_session_first_seen_by_heartbeat_starts_with_its_name() {
    let mut h = Harness::new();
    let mut f = Framer::new(wire::session_id(0, 11), "web", 1400);
    let ds = datagrams(&mut f, |f, o| f.heartbeat(0, o));
    h.feed("10.0.0.12:1", &ds[0]);
    match h.events().first() {
        Some(Event::Start { session, .. }) => assert_eq!(session.name(), "web"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn resumed_after_silence_and_tail_loss_from_heartbeat() {
    let mut h = Harness::new();
    let mut f = Framer::new(wire::session_id(0, 3), "db", 1400);
    let ds = datagrams(&mut f, |f, o| {
        f.hello(1, 0, "stdin", 0, o);
        f.push_line(0, b"one", 0, o);
        f.flush(o);
        f.push_line(0, b"two", 0, o); // lost below
        f.flush(o);
        f.heartbeat(0, o);
    });
    h.feed("10.0.0.2:1", &ds[0]);
    h.feed("10.0.0.2:1", &ds[1]);
    h.feed("10.0.0.2:1", &ds[3]);
    let events = h.advance(Duration::from_secs(6));
    assert_eq!(
        kinds(&events),
        ["start 1", "line 1", "gap 2-2 lost", "silent 1 dead_after"]
    );
    h.feed("10.0.0.2:1", &ds[3]);
    assert_eq!(kinds(&h.events()), ["resumed 2"]);
    h.feed("10.0.0.2:1", &ds[2]);
    assert_eq!(kinds(&h.events()), ["line 2 late"]);
}

#[test]
fn hostile_numbers_cost_nothing() {
    let mut h = Harness::new();
    let id = wire::session_id(0, 4);
    let mut f = Framer::new(id, "x", 1400);
    let hello = datagrams(&mut f, |f, o| f.hello(1, 0, "stdin", 0, o));
    h.feed("10.0.0.3:1", &hello[0]);
    // A line numbered near 2^64: the lines in between are one gap, not a loop.
    let mut payload = Vec::new();
    wire::push_line_record(&mut payload, 0, b"far");
    let header = Header {
        session: id,
        seq: u64::MAX - 1,
        sent_at_us: 0,
        counter: 5,
    };
    let mut bytes = Vec::new();
    wire::write_header(&mut bytes, wire::Kind::Data, 0, 0, &header);
    bytes.extend_from_slice(&payload);
    wire::finish_datagram(&mut bytes);
    h.feed("10.0.0.3:1", &bytes);
    let events = h.events();
    assert_eq!(
        kinds(&events),
        [
            "start 1",
            &format!("gap 1-{} lost", u64::MAX - 2),
            &format!("line {}", u64::MAX - 1)
        ]
    );
    // A fragment claiming a 4 GiB line is refused without allocating it.
    let header = Header {
        session: id,
        seq: 3,
        sent_at_us: 0,
        counter: 6,
    };
    let mut bytes = Vec::new();
    wire::write_header(
        &mut bytes,
        wire::Kind::Data,
        wire::FLAG_FRAGMENT,
        0,
        &header,
    );
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bytes.push(0);
    bytes.extend_from_slice(b"abc");
    wire::finish_datagram(&mut bytes);
    h.feed("10.0.0.3:1", &bytes);
    assert_eq!(kinds(&h.events()), ["corrupt line_too_long"]);
    assert_eq!(h.rx.held_bytes(), 0);
}

#[test]
fn many_session_ids_are_bounded() {
    let base = Instant::now();
    let config = Config {
        max_sessions: 100,
        ..Config::default()
    };
    let mut rx = Reassembler::new(config, base);
    for i in 0..10_000u32 {
        let mut f = Framer::new(wire::session_id(0, i), "flood", 1400);
        let mut o = Outbox::default();
        f.push_line(0, b"x", 0, &mut o);
        f.flush(&mut o);
        let from: SocketAddr = "10.9.9.9:9".parse().unwrap();
        rx.handle_datagram(base, 0, from, o.datagrams().next().unwrap());
        while rx.poll_event().is_some() {}
    }
    assert!(rx.session_count() <= 100);
    assert_eq!(rx.stats().retired, 10_000 - 100);
}

#[test]
fn garbage_is_counted_and_rate_limited() {
    let mut h = Harness::new();
    for i in 0..1000u32 {
        let mut bytes = vec![0u8, 1, 2, 3];
        bytes.extend_from_slice(&i.to_be_bytes());
        h.feed("10.0.0.4:1", &bytes);
    }
    h.feed("10.0.0.4:1", b"");
    h.feed("10.0.0.4:1", &[0xff, 0xfe, b'a']);
    let events = h.events();
    assert_eq!(h.rx.stats().corrupt_total(), 1002);
    assert!(
        events.len() <= 20,
        "a flood of garbage does not flood the events"
    );
    assert!(events.iter().all(|e| matches!(e, Event::Corrupt { .. })));
}

#[test]
fn text_lines_join_across_datagrams() {
    let mut h = Harness::new();
    h.feed("10.0.0.5:514", b"hello wo");
    h.feed("10.0.0.5:514", b"rld\nsecond\nthi");
    let events = h.advance(Duration::from_secs(6));
    let lines: Vec<(u64, Vec<u8>, bool)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Line {
                seq, text, partial, ..
            } => Some((*seq, text.clone(), *partial)),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        [
            (1, b"hello world".to_vec(), false),
            (2, b"second".to_vec(), false),
            (3, b"thi".to_vec(), true)
        ]
    );
    assert!(matches!(
        events.last(),
        Some(Event::Silent { last_seq: 3, .. })
    ));
}

fn fixture(name: &str) -> Vec<Vec<u8>> {
    let path = format!(
        "{}/tests/fixtures/netconsole/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let hex = l.split_whitespace().last().unwrap();
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn plain_console_bytes_from_a_known_text_source_are_kept() {
    let mut h = Harness::new();
    h.feed("10.0.2.15:6665", b"[    1.0] booting\n");
    h.feed(
        "10.0.2.15:6665",
        b"[    1.100000] ncu-escape: tab\there bell \x07 esc \x1b[0m latin1 \xe9 end\n",
    );
    h.feed("10.0.2.16:6665", b"\x07\x1b first datagram of a source\n");
    let events = h.advance(Duration::from_secs(6));
    let lines = events
        .iter()
        .filter(|e| matches!(e, Event::Line { .. }))
        .count();
    assert_eq!(lines, 2, "{:?}", kinds(&events));
    assert_eq!(h.rx.stats().corrupt_total(), 1);
}

#[test]
fn kernel_reboot_starts_a_new_session() {
    let mut h = Harness::new();
    for d in fixture("extended-reboot.hex") {
        h.feed("10.0.2.15:6665", &d);
    }
    let events = h.advance(Duration::from_secs(6));
    let k = kinds(&events);
    let starts: Vec<&String> = k.iter().filter(|e| e.starts_with("start")).collect();
    assert_eq!(starts, ["start 0", "start 0"]);
    assert!(k.iter().any(|e| e.ends_with("restarted")), "{k:?}");
    match events.last() {
        Some(Event::Silent {
            last_text: Some(text),
            reason: SilentReason::DeadAfter,
            ..
        }) => {
            assert!(
                text.starts_with(b"Kernel Offset:"),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn kernel_extended_capture_delivers_markers_in_order_and_names_the_panic() {
    for name in ["extended.hex", "extended-ignore-loglevel.hex"] {
        let mut h = Harness::new();
        for d in fixture(name) {
            h.feed("10.0.2.15:6665", &d);
        }
        let events = h.advance(Duration::from_secs(6));
        let mut markers = Vec::new();
        let mut long_line = false;
        for e in &events {
            if let Event::Line {
                text,
                kernel: Some(k),
                ..
            } = e
            {
                assert!(k.level <= 7);
                if let Some(pos) = text.windows(10).position(|w| w == b"ncu-marker") {
                    markers.push(text[pos..].to_vec());
                }
                long_line |= text.len() > 900;
            }
        }
        assert!(!markers.is_empty(), "{name}: markers");
        let mut sorted = markers.clone();
        sorted.sort();
        assert_eq!(markers, sorted, "{name}: markers in order");
        assert!(long_line, "{name}: the fragmented long record was rebuilt");
        assert!(
            matches!(events.last(), Some(Event::Silent { .. })),
            "{name}"
        );
        let corrupt = events
            .iter()
            .filter(|e| matches!(e, Event::Corrupt { .. }))
            .count();
        assert_eq!(corrupt, 0, "{name}");
    }
}

#[test]
fn the_default_budget_tracks_a_fleet_of_65536_hosts() {
    let n = sessions_for_budget(budget::DEFAULT_MAX_HELD);
    eprintln!("default session limit {n} (a session costs {SESSION_STATE_BYTES} bytes of state)");
    assert!(n >= 65_536, "{n}");
    assert_eq!(Config::default().max_sessions, n);
    // A smaller budget, fewer sessions; never none.
    assert!(sessions_for_budget(16 << 20) < n);
    assert_eq!(sessions_for_budget(0), 1);
}

#[test]
fn session_keys_tell_apart_what_sessions_are() {
    assert_eq!(std::mem::size_of::<SessionKey>(), 24);
    let v4: SocketAddr = "10.0.0.7:6665".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:10.0.0.7]:6665".parse().unwrap();
    let other_port: SocketAddr = "10.0.0.7:6666".parse().unwrap();
    let link_a: SocketAddr = "[fe80::1%2]:6665".parse().unwrap();
    let link_b: SocketAddr = "[fe80::1%3]:6665".parse().unwrap();
    let k = |a, kind| SessionKey::source(a, kind);
    assert_eq!(k(v4, SourceKind::Text), k(mapped, SourceKind::Text));
    assert_ne!(k(v4, SourceKind::Text), k(v4, SourceKind::KernelExtended));
    assert_ne!(k(v4, SourceKind::Text), k(other_port, SourceKind::Text));
    assert_ne!(k(link_a, SourceKind::Text), k(link_b, SourceKind::Text));
    for id in [0, 1, u64::MAX, 0x6b09_49c6_d17b_d5c1] {
        assert_eq!(SessionKey::ncu(id).ncu_id(), Some(id));
        assert_ne!(SessionKey::ncu(id), k(v4, SourceKind::Text));
    }
    assert_eq!(k(v4, SourceKind::Text).ncu_id(), None);
}

#[test]
fn who_gives_back_the_address_it_was_given_and_the_key_of_its_session() {
    assert_eq!(std::mem::size_of::<Who>(), 40);
    for addr in [
        "10.0.0.7:6665",
        "[::ffff:10.0.0.7]:6665",
        "[fe80::1%3]:6665",
        "[2001:db8::5]:1",
        "0.0.0.0:0",
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        for kind in [
            SourceKind::Ncu,
            SourceKind::KernelExtended,
            SourceKind::Text,
        ] {
            let mut who = Who::new(7, addr, kind);
            assert_eq!(who.addr(), addr);
            assert_eq!(who.ip(), addr.ip());
            let key = match kind {
                SourceKind::Ncu => SessionKey::ncu(7),
                kind => SessionKey::source(addr, kind),
            };
            assert_eq!(who.key(), key);
            assert_eq!(who.info().name(), addr.ip().to_string());
            who.set_name("db-7");
            let info = who.info();
            assert_eq!((info.id, info.addr, info.kind), (7, addr, kind));
            assert_eq!(info.name(), "db-7");
        }
    }
}
