//! Recovery (issue 8) end to end: ncu-recv against a test that plays an ncu sender
//! with a UDP socket, a `Framer` and a `Recovery` ring, dropping chosen DATA
//! datagrams on purpose and answering the receiver's NACKs (resend or GONE).
//! Loopback only.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ncu_proto::framer::Outbox;
use ncu_proto::recovery::Recovery;
use ncu_proto::seal::{self, Keys};
use ncu_proto::wire::{self, DecodeError, Kind, Payload, Repr};
use ncu_tests::{recv_from, wall_us, Crafter, RecvProcess};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);
/// How long the receiver waits for a hole of a session offering recovery.
const NACK_WINDOW: Duration = Duration::from_secs(1);

/// The sender's side, played by the test.
struct Sender {
    c: Crafter,
    recovery: Recovery,
    keys: Option<Keys>,
    outbox: Outbox,
}

impl Sender {
    fn new(name: &str, dest: SocketAddr, offers_recovery: bool, keys: Option<Keys>) -> Sender {
        let mut c = Crafter::new(name, dest);
        c.framer.set_recovery(offers_recovery);
        let mut s = Sender {
            c,
            recovery: Recovery::new(1 << 20, 8 << 20),
            keys,
            outbox: Outbox::default(),
        };
        let hello = s.c.hello();
        s.send(&hello);
        s
    }

    /// Seals with the key, when there is one.
    fn seal(&self, datagram: &[u8]) -> Vec<u8> {
        match &self.keys {
            Some(keys) => {
                let mut out = Vec::new();
                seal::seal(keys, datagram, &mut out);
                out
            }
            None => datagram.to_vec(),
        }
    }

    fn send(&self, datagram: &[u8]) {
        let d = self.seal(datagram);
        self.c.send(&d);
    }

    /// Lines `1..=n` as "line N", one per datagram, each kept in the resend ring
    /// (as sent: sealed with a key) when `keep(N)`; those in `dropped` are not sent.
    fn lines(&mut self, n: u64, dropped: &BTreeSet<u64>, keep: impl Fn(u64) -> bool) {
        for i in 1..=n {
            let ds = self.c.line(format!("line {i}").as_bytes());
            assert_eq!(self.c.framer.lines_sent(), i);
            for d in ds {
                let d = self.seal(&d);
                if keep(i) {
                    self.recovery.record(i, i, &d);
                }
                if !dropped.contains(&i) {
                    self.c.send(&d);
                }
            }
        }
    }

    fn end(&mut self) {
        let end = self.c.end();
        self.send(&end);
    }

    /// The next datagram on the sender's socket within `timeout`: where it came from
    /// and its bytes.
    fn recv(&self, timeout: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        recv_from(self.c.socket(), timeout)
    }

    /// Nothing is waiting on the sender's socket now.
    fn assert_nothing_received(&self) {
        let socket = self.c.socket();
        socket.set_nonblocking(true).expect("non-blocking");
        let mut buf = [0u8; 2048];
        let got = socket.recv_from(&mut buf);
        socket.set_nonblocking(false).expect("blocking");
        match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok((n, from)) => panic!(
                "the sender's socket got a datagram from {from}: {:?}",
                Repr::parse(&buf[..n])
            ),
            Err(e) => panic!("recv: {e}"),
        }
    }

    /// The next NACK (opened with the key when there is one): checks that it is a
    /// NACK for this session from `rx`, and returns its ranges.
    fn next_nack(&self, rx: SocketAddr, timeout: Duration) -> Vec<(u64, u32)> {
        let (from, raw) = self
            .recv(timeout)
            .unwrap_or_else(|| panic!("no NACK within {timeout:?}"));
        assert_eq!(
            from.port(),
            rx.port(),
            "the NACK comes from the listening socket"
        );
        assert!(from.ip().is_loopback(), "{from}");
        let opened;
        let bytes = match &self.keys {
            Some(keys) => {
                assert_eq!(
                    Repr::parse(&raw).err(),
                    Some(DecodeError::Sealed),
                    "with a key the NACK is sealed"
                );
                assert_ne!(
                    wire::Datagram::new_unchecked(&raw[..]).flags() & wire::FLAG_SEALED,
                    0
                );
                let mut out = Vec::new();
                seal::open(keys, &raw, &mut out).expect("the NACK opens with the key");
                opened = out;
                &opened[..]
            }
            None => &raw[..],
        };
        let repr = Repr::parse(bytes).expect("the NACK decodes");
        assert_eq!(repr.kind(), Kind::Nack);
        assert_eq!(repr.header.session, self.c.framer.session());
        assert_eq!(repr.header.seq, 0);
        let Payload::Nack { ranges } = repr.payload else {
            panic!("not a NACK: {repr:?}")
        };
        ranges.collect()
    }

    /// Reads NACKs until one names exactly `want` (every NACK before it may name
    /// only some of them: it may have gone out before the last datagrams arrived).
    /// Fails if a NACK names a line that was not dropped, or after the window.
    fn nack_naming(&self, rx: SocketAddr, want: &BTreeSet<u64>) -> Vec<(u64, u32)> {
        let start = Instant::now();
        loop {
            let left = NACK_WINDOW.saturating_sub(start.elapsed());
            let ranges = self.next_nack(rx, left);
            let named = lines_of_ranges(&ranges);
            assert!(
                named.is_subset(want),
                "NACK {ranges:?} asks for lines that were not dropped ({want:?})"
            );
            if &named == want {
                return ranges;
            }
        }
    }

    /// Answers a NACK as ncu-send does: resends what the ring holds, GONE for the
    /// rest. Returns the GONE ranges.
    fn answer(&mut self, ranges: &[(u64, u32)]) -> Vec<(u64, u64)> {
        let (mut resend, mut gone) = (Outbox::default(), Vec::new());
        self.recovery.handle_nack(
            ranges.iter().copied(),
            Instant::now(),
            &mut resend,
            &mut gone,
        );
        for d in resend.datagrams() {
            self.c.send(d); // as kept: already sealed with a key
        }
        for &(first, last) in &gone {
            self.outbox.clear();
            self.c.framer.gone(first, last, wall_us(), &mut self.outbox);
            let ds: Vec<Vec<u8>> = self.outbox.datagrams().map(<[u8]>::to_vec).collect();
            for d in ds {
                self.send(&d);
            }
        }
        gone
    }
}

fn lines_of_ranges(ranges: &[(u64, u32)]) -> BTreeSet<u64> {
    ranges
        .iter()
        .flat_map(|&(first, count)| first..first + u64::from(count))
        .collect()
}

/// Lines and gaps in output order: "N" for line N, "gap A-B" for a gap.
fn order(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|v| match v["event"].as_str() {
            Some("line") => {
                assert_eq!(v["text"], format!("line {}", v["seq"]), "{v}");
                assert!(v.get("late").is_none(), "{v}");
                Some(format!("{}", v["seq"]))
            }
            Some("gap") => Some(format!("gap {}-{}", v["first"], v["last"])),
            _ => None,
        })
        .collect()
}

/// What the output must be: lines `1..=n` in order, with `gaps` (first, last) in
/// place of the lines they name.
fn want(n: u64, gaps: &[(u64, u64)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 1;
    while i <= n {
        match gaps.iter().find(|g| g.0 == i) {
            Some(&(a, b)) => {
                out.push(format!("gap {a}-{b}"));
                i = b + 1;
            }
            None => {
                out.push(i.to_string());
                i += 1;
            }
        }
    }
    out
}

/// The summary of the test's session and the summary object.
fn stop(rx: RecvProcess, session: &str) -> (Value, Value) {
    let (rest, status) = rx.stop_json();
    assert!(status.success());
    let summary = rest.last().expect("a summary").clone();
    assert_eq!(summary["event"], "summary");
    let s = summary["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["session"] == session)
        .unwrap_or_else(|| panic!("no summary of {session}: {summary}"))
        .clone();
    (s, summary)
}

/// (a) Dropped DATA datagrams are NACKed exactly, resent, and come out in order,
/// once each, without a gap; the summary counts them as recovered.
#[test]
fn recovery_nack_resend_recovers_dropped_lines() {
    let rx = RecvProcess::spawn(&["--json"]);
    let mut s = Sender::new("resend", rx.addr, true, None);
    let dropped: BTreeSet<u64> = [4, 9, 10, 15].into();
    s.lines(20, &dropped, |_| true);
    let ranges = s.nack_naming(rx.addr, &dropped);
    assert_eq!(ranges, [(4, 1), (9, 2), (15, 1)]);
    assert!(s.answer(&ranges).is_empty(), "the ring holds every line");
    let (before, _) = rx.wait_json(T, |v| v["event"] == "line" && v["seq"] == 20);
    s.end();
    let (after, end) = rx.wait_event(T, "end");
    let events: Vec<Value> = before.into_iter().chain(after).collect();
    assert!(
        events.iter().all(|v| v["event"] != "gap"),
        "no gap: {events:#?}"
    );
    let mut got = order(&events);
    got.push("20".to_owned());
    assert_eq!(got, want(20, &[]));
    assert_eq!(end["lost"], 0);
    let (sess, summary) = stop(rx, &s.c.session_hex());
    assert_eq!(sess["recovered"], 4, "{sess}");
    assert_eq!(sess["recovery"], true);
    assert_eq!(sess["lost"], 0);
    assert_eq!(sess["lines"], 20);
    assert_eq!(summary["nack"], true);
    assert!(summary["nacks_sent"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["nack_send_errors"], 0);
}

/// (b) A NACK answered with GONE for lines older than the ring: those lines are
/// reported lost at once (well before the recovery window), exactly; the line the
/// ring still holds is resent and recovered.
#[test]
fn recovery_gone_reports_the_gap_at_once() {
    let rx = RecvProcess::spawn(&["--json"]);
    let mut s = Sender::new("gone", rx.addr, true, None);
    let dropped: BTreeSet<u64> = [3, 4, 7].into();
    let sent_at = Instant::now();
    // The ring starts at line 5: lines 3 and 4 have left it.
    s.lines(10, &dropped, |i| i >= 5);
    let ranges = s.nack_naming(rx.addr, &dropped);
    assert_eq!(s.answer(&ranges), [(3, 4)]);
    let (before, gap) = rx.wait_event(T, "gap");
    let waited = sent_at.elapsed();
    assert!(
        waited < NACK_WINDOW * 7 / 10,
        "the gap came {waited:?} after the lines, not at once"
    );
    assert_eq!(
        (&gap["first"], &gap["last"], &gap["count"]),
        (&3.into(), &4.into(), &2.into())
    );
    assert_eq!(gap["kind"], "lost");
    assert_eq!(order(&before), ["1", "2"]);
    let (after, _) = rx.wait_json(T, |v| v["event"] == "line" && v["seq"] == 10);
    s.end();
    let (tail, end) = rx.wait_event(T, "end");
    let mut events = before;
    events.push(gap);
    events.extend(after);
    events.extend(tail);
    let mut got = order(&events);
    got.push("10".to_owned());
    assert_eq!(got, want(10, &[(3, 4)]));
    assert_eq!(end["lost"], 2);
    let (sess, _) = stop(rx, &s.c.session_hex());
    assert_eq!(sess["lost"], 2, "{sess}");
    assert_eq!(sess["recovered"], 1, "{sess}");
    assert_eq!(sess["lines"], 8);
}

/// (c) `--no-nack`: the receiver never sends anything; holes of a sender that offers
/// recovery are reported after the plain reorder window, naming the dropped lines.
#[test]
fn recovery_no_nack_sends_nothing() {
    let rx = RecvProcess::spawn(&["--json", "--no-nack"]);
    let mut s = Sender::new("oneway", rx.addr, true, None);
    let dropped: BTreeSet<u64> = [3, 6].into();
    let sent_at = Instant::now();
    s.lines(8, &dropped, |_| true);
    let (before, first_gap) = rx.wait_event(T, "gap");
    let waited = sent_at.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < NACK_WINDOW * 9 / 10,
        "the gap came {waited:?} after the lines: not the 200ms reorder window"
    );
    let (between, second_gap) = rx.wait_event(T, "gap");
    // A NACK would have gone out 20ms after the hole, long before its gap.
    s.assert_nothing_received();
    let mut events = before;
    events.push(first_gap);
    events.extend(between);
    events.push(second_gap);
    let (after, _) = rx.wait_json(T, |v| v["event"] == "line" && v["seq"] == 8);
    events.extend(after);
    let mut got = order(&events);
    got.push("8".to_owned());
    assert_eq!(got, want(8, &[(3, 3), (6, 6)]));
    s.end();
    rx.wait_event(T, "end");
    s.assert_nothing_received();
    let (sess, summary) = stop(rx, &s.c.session_hex());
    assert_eq!(sess["recovery"], true, "the sender offers it: {sess}");
    assert_eq!(sess["recovered"], 0);
    assert_eq!(sess["lost"], 2);
    assert_eq!(summary["nack"], false);
    assert_eq!(summary["nacks_sent"], 0);
    assert_eq!(summary["nacks_suppressed"], 0);
}

/// (d) A sender that does not offer recovery gets no NACK; its hole is reported
/// after the plain reorder window.
#[test]
fn recovery_not_offered_gets_no_nack() {
    let rx = RecvProcess::spawn(&["--json"]);
    let mut s = Sender::new("plain", rx.addr, false, None);
    let dropped: BTreeSet<u64> = [5].into();
    let sent_at = Instant::now();
    s.lines(8, &dropped, |_| true);
    let (before, gap) = rx.wait_event(T, "gap");
    let waited = sent_at.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < NACK_WINDOW * 9 / 10,
        "the gap came {waited:?} after the lines: not the 200ms reorder window"
    );
    s.assert_nothing_received();
    let (after, _) = rx.wait_json(T, |v| v["event"] == "line" && v["seq"] == 8);
    let mut events = before;
    events.push(gap);
    events.extend(after);
    let mut got = order(&events);
    got.push("8".to_owned());
    assert_eq!(got, want(8, &[(5, 5)]));
    s.end();
    rx.wait_event(T, "end");
    s.assert_nothing_received();
    let (sess, summary) = stop(rx, &s.c.session_hex());
    assert_eq!(sess["recovery"], false, "{sess}");
    assert_eq!(sess["recovered"], 0);
    assert_eq!(sess["lost"], 1);
    assert_eq!(summary["nack"], true);
    assert_eq!(summary["nacks_sent"], 0);
}

/// A key file in the temp directory, removed on drop.
struct KeyFile(PathBuf);

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// (e) With `--key-file`: the NACK is sealed and opens with the key; sealed resends
/// recover the lines.
#[test]
fn recovery_sealed_nack_and_resends() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let key = KeyFile(std::env::temp_dir().join(format!(
        "ncu-recovery-e2e-{}-{nanos}.key",
        std::process::id()
    )));
    ncu_host::generate_key_file(&key.0).expect("a key file");
    let keys = ncu_host::load_keys(&key.0).expect("the key loads");
    let rx = RecvProcess::spawn(&["--json", "--key-file", key.0.to_str().expect("UTF-8")]);
    let mut s = Sender::new("sealed", rx.addr, true, Some(keys));
    let dropped: BTreeSet<u64> = [2, 5, 6].into();
    s.lines(12, &dropped, |_| true);
    let ranges = s.nack_naming(rx.addr, &dropped);
    assert_eq!(ranges, [(2, 1), (5, 2)]);
    assert!(s.answer(&ranges).is_empty());
    let (before, _) = rx.wait_json(T, |v| v["event"] == "line" && v["seq"] == 12);
    s.end();
    let (after, end) = rx.wait_event(T, "end");
    let events: Vec<Value> = before.into_iter().chain(after).collect();
    assert!(
        events
            .iter()
            .all(|v| v["event"] != "gap" && v["event"] != "corrupt"),
        "{events:#?}"
    );
    let mut got = order(&events);
    got.push("12".to_owned());
    assert_eq!(got, want(12, &[]));
    assert_eq!(end["lost"], 0);
    let (sess, summary) = stop(rx, &s.c.session_hex());
    assert_eq!(sess["recovered"], 3, "{sess}");
    assert_eq!(sess["lost"], 0);
    assert_eq!(summary["corrupt_total"], 0, "{summary}");
}
