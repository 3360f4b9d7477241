//! The kernel's netconsole joined to a `--kmsg` session by the address the
//! sender claims (issue 15): the real Sender sends kernel records and its claim,
//! the "kernel" sends the same records (and then the panic) from the claimed
//! address, and the real Reassembler must show one story: each record once, in
//! order, the ones only the netconsole delivered marked and after the others, a
//! number missing on both paths reported once, and `silent` saying what came after
//! ncu-send's last record. A netconsole from another address stays its own session.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ncu_proto::event::{Event, GapKind};
use ncu_proto::kmsg::{From, Reader};
use ncu_proto::reassembler::{Config, Reassembler};
use ncu_proto::sender::{self, Sender};
use ncu_proto::wire::{self, LINE_KMSG};

struct Rig {
    base: Instant,
    tx: Sender,
    rx: Reassembler,
    reader: Reader,
    events: Vec<Event>,
    /// The next datagram ncu-send sends is lost on the way.
    drop_next: bool,
}

const SENDER: &str = "10.0.0.7:40000";
const KERNEL: &str = "10.0.0.7:6665";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

fn record(seq: u64, text: &str) -> Vec<u8> {
    format!("6,{seq},{},-;{text}\n", seq * 1000).into_bytes()
}

impl Rig {
    fn new() -> Rig {
        let base = Instant::now();
        let config = sender::Config {
            resend_buffer: 0,
            ..sender::Config::new("db-7")
        };
        let tx = Sender::new(
            config,
            wire::session_id(1_700_000_000, 9),
            base,
            1_700_000_000_000_000,
        );
        let mut rig = Rig {
            base,
            tx,
            rx: Reassembler::new(Config::default(), base),
            reader: Reader::new(From::All, None),
            events: Vec::new(),
            drop_next: false,
        };
        rig.tx
            .set_companion(Some(addr(KERNEL)), base, 1_700_000_000_000_000);
        rig.ship(0);
        rig
    }

    fn at(&self, ms: u64) -> (Instant, u64) {
        (
            self.base + Duration::from_millis(ms),
            1_700_000_000_000_000 + ms * 1000,
        )
    }

    /// What the sender framed goes to the receiver.
    fn ship(&mut self, ms: u64) {
        let (now, wall) = self.at(ms);
        let mut out = Vec::new();
        while let Some(t) = self.tx.poll_transmit() {
            out.extend(t.datagrams().map(<[u8]>::to_vec));
        }
        for d in out {
            if std::mem::take(&mut self.drop_next) {
                continue;
            }
            self.rx.handle_datagram(now, wall, addr(SENDER), &d);
        }
        self.drain();
    }

    /// ncu-send reads kernel records `seqs` and sends them.
    fn kmsg(&mut self, ms: u64, seqs: impl IntoIterator<Item = u64>) {
        let mut lines = Vec::new();
        let mut line = Vec::new();
        for seq in seqs {
            if self
                .reader
                .record(&record(seq, &format!("record {seq}")), &mut line)
            {
                lines.push(line.clone());
            }
        }
        let (_, wall) = self.at(ms);
        self.tx
            .handle_records(LINE_KMSG, lines.iter().map(Vec::as_slice), wall);
        self.ship(ms);
    }

    /// The kernel's netconsole sends record `seq` from `from`.
    fn netconsole(&mut self, ms: u64, from: &str, seq: u64, text: &str) {
        let (now, wall) = self.at(ms);
        self.rx
            .handle_datagram(now, wall, addr(from), &record(seq, text));
        self.drain();
    }

    fn wait(&mut self, ms: u64) {
        let (now, wall) = self.at(ms);
        while let Some(due) = self.rx.poll_timeout().filter(|&d| d <= now) {
            let us = wall - (now - due).as_micros() as u64;
            self.rx.handle_timeout(due, us);
        }
        self.drain();
    }

    fn drain(&mut self) {
        self.events
            .extend(std::iter::from_fn(|| self.rx.poll_event()));
    }

    /// (kernel number, text, via netconsole) of every line of the ncu session.
    fn story(&self) -> Vec<(u64, String, bool)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Line {
                    session,
                    text,
                    kernel: Some(k),
                    ..
                } if session.name() == "db-7" => Some((
                    k.seq,
                    String::from_utf8_lossy(text).into_owned(),
                    k.via_netconsole,
                )),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn both_paths_make_one_story_ending_in_the_panic() {
    let mut rig = Rig::new();
    // Records 0-99 come both ways (the netconsole's copy sometimes first; the last
    // one's after ncu-send's).
    for seq in 0..100u64 {
        let ms = 10 + seq;
        if seq % 3 == 1 {
            rig.netconsole(ms, KERNEL, seq, &format!("record {seq}"));
            rig.kmsg(ms, [seq]);
        } else {
            rig.kmsg(ms, [seq]);
            rig.netconsole(ms, KERNEL, seq, &format!("record {seq}"));
        }
    }
    // ncu-send dies; the kernel goes on alone: 100-119, 110 lost on the way, then
    // the panic.
    for seq in 100..120u64 {
        if seq != 110 {
            rig.netconsole(200 + seq, KERNEL, seq, &format!("oops line {seq}"));
        }
    }
    rig.netconsole(
        400,
        KERNEL,
        120,
        "Kernel panic - not syncing: Fatal exception",
    );
    rig.netconsole(401, KERNEL, 121, "Rebooting in 1 seconds..");
    rig.wait(60_000);

    let story = rig.story();
    let seqs: Vec<u64> = story.iter().map(|s| s.0).collect();
    let want: Vec<u64> = (0..=121).filter(|&s| s != 110).collect();
    assert_eq!(seqs, want, "each record once, in order");
    assert!(
        story[..100].iter().all(|s| !s.2),
        "ncu-send's own records are not marked"
    );
    assert!(
        story[100..].iter().all(|s| s.2),
        "the rest came via netconsole"
    );
    let gaps: Vec<(u64, u64, GapKind)> = rig
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Gap {
                first, last, kind, ..
            } => Some((*first, *last, *kind)),
            _ => None,
        })
        .collect();
    assert_eq!(
        gaps,
        [(110, 110, GapKind::KernelSeq)],
        "missing on both paths, once"
    );
    let silent = rig
        .events
        .iter()
        .find_map(|e| match e {
            Event::Silent { netconsole, .. } => Some(netconsole.clone()),
            _ => None,
        })
        .expect("silent");
    let tail = silent.expect("what the netconsole delivered after ncu-send");
    assert_eq!(tail.last_kmsg.map(|k| k.0), Some(99));
    assert_eq!((tail.first, tail.last, tail.missing), (100, 121, 1));
    assert_eq!(tail.last_text, b"Rebooting in 1 seconds..");
    assert_eq!(
        tail.panic.as_deref(),
        Some(&b"Kernel panic - not syncing: Fatal exception"[..]),
        "the panic message, not what follows it"
    );
    // The silent event comes after the netconsole's records.
    let silent_at = rig
        .events
        .iter()
        .position(|e| matches!(e, Event::Silent { .. }));
    let last_line_at = rig
        .events
        .iter()
        .rposition(|e| matches!(e, Event::Line { .. }));
    assert!(silent_at > last_line_at, "silent after the story");
}

#[test]
fn another_address_stays_its_own_session() {
    let mut rig = Rig::new();
    rig.kmsg(10, 0..5);
    // Another machine's netconsole, and this machine's from a port it did not claim.
    rig.netconsole(20, "10.0.0.8:6665", 3, "another machine");
    rig.netconsole(21, "10.0.0.7:6666", 4, "not the claimed port");
    rig.wait(60_000);
    let story = rig.story();
    assert_eq!(
        story.len(),
        5,
        "only ncu-send's records in its session: {story:?}"
    );
    let others: Vec<String> = rig
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Start { session, .. } if session.name() != "db-7" => {
                Some(session.addr.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        others,
        ["10.0.0.8:6665", "10.0.0.7:6666"],
        "separate sessions"
    );
}

/// A record lost on ncu-send's path while it lives (no recovery) but delivered by
/// the netconsole: the ncu line is reported lost on its path, and the record shows
/// up once, via netconsole, in its place in the kernel's order.
#[test]
fn a_record_lost_on_the_ncu_path_comes_via_the_netconsole_in_its_place() {
    let mut rig = Rig::new();
    for seq in 0..60u64 {
        let ms = 10 + seq;
        rig.netconsole(ms, KERNEL, seq, &format!("record {seq}"));
        rig.drop_next = seq == 30;
        rig.kmsg(ms, [seq]);
        rig.wait(ms);
    }
    rig.wait(1_000);
    let story = rig.story();
    let seqs: Vec<u64> = story.iter().map(|s| s.0).collect();
    assert_eq!(
        seqs,
        (0..60).collect::<Vec<_>>(),
        "each record once, in order"
    );
    let via: Vec<u64> = story.iter().filter(|s| s.2).map(|s| s.0).collect();
    assert_eq!(via, [30], "record 30 via netconsole, in its place");
    let lost = rig
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Gap {
                    kind: GapKind::Lost,
                    ..
                }
            )
        })
        .count();
    assert_eq!(lost, 1, "the ncu line is lost on its path");
}

/// A soft lockup or a hung task panics seconds to minutes after user space stopped:
/// the session has gone silent (ncu-send's last record) before the kernel's
/// netconsole brings the panic. The records still join the session, in order, and
/// once the netconsole is quiet too `silent` comes again with the whole story; only
/// once more.
#[test]
fn the_panic_after_silent_tells_the_story_again() {
    let mut rig = Rig::new();
    for seq in 0..50u64 {
        rig.kmsg(seq, [seq]);
        rig.netconsole(seq, KERNEL, seq, &format!("record {seq}"));
    }
    let dead_after = Config::default().dead_after.as_millis() as u64;
    let later = 50 + dead_after + 5_000;
    rig.wait(later);
    let silents = |rig: &Rig| -> Vec<_> {
        rig.events
            .iter()
            .filter_map(|e| match e {
                Event::Silent { netconsole, .. } => Some(netconsole.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        silents(&rig),
        [None],
        "ncu-send went silent, nothing after it"
    );
    for seq in 50..60u64 {
        rig.netconsole(later + seq, KERNEL, seq, &format!("watchdog line {seq}"));
    }
    rig.netconsole(
        later + 60,
        KERNEL,
        60,
        "Kernel panic - not syncing: softlockup: hung tasks",
    );
    rig.netconsole(later + 61, KERNEL, 61, "Rebooting in 1 seconds..");
    rig.wait(later + 61 + dead_after - 1);
    assert_eq!(silents(&rig).len(), 1, "not before the netconsole is quiet");
    rig.wait(later + 61 + dead_after * 10);
    let told = silents(&rig);
    assert_eq!(told.len(), 2, "silent once more, and only once: {told:?}");
    let tail = told[1].as_ref().expect("the whole story");
    assert_eq!((tail.first, tail.last, tail.missing), (50, 61, 0));
    assert_eq!(
        tail.panic.as_deref(),
        Some(&b"Kernel panic - not syncing: softlockup: hung tasks"[..])
    );
    let seqs: Vec<u64> = rig.story().iter().map(|s| s.0).collect();
    assert_eq!(
        seqs,
        (0..=61).collect::<Vec<_>>(),
        "each record once, in order"
    );
}
