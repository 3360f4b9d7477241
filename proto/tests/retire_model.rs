//! Past the session limit, the session heard least recently is the one retired:
//! hosts (one session each, so that no source has a later session to give up) are
//! heard in a random order, at times a microsecond apart, and every `retired`
//! event is checked against the obvious model (a map from host to when it was
//! last heard). Replay with the seed it prints: `NCU_RETIRE_SEED=<seed>`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use ncu_proto::event::Event;
use ncu_proto::reassembler::{Config, Reassembler};

#[test]
fn the_session_heard_least_recently_is_retired() {
    const HOSTS: u32 = 3_000;
    const LIMIT: usize = 1_000;
    const DATAGRAMS: usize = 60_000;
    let seed = common::seed("NCU_RETIRE_SEED");
    let mut rng = common::Rng(seed | 1);
    let base = Instant::now();
    let mut rx = Reassembler::new(
        Config {
            max_sessions: LIMIT,
            dead_after: Duration::from_secs(3600),
            ..Config::default()
        },
        base,
    );
    let addr = |h: u32| {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(127, 9, (h >> 8) as u8, h as u8),
            6665,
        ))
    };
    // The model: host -> when last heard, and the reverse, for the oldest.
    let mut heard_at: HashMap<u32, u64> = HashMap::new();
    let mut by_time: BTreeMap<u64, u32> = BTreeMap::new();
    let mut seqs: HashMap<u32, u64> = HashMap::new();
    let mut retired = 0;
    for t in 1..=DATAGRAMS as u64 {
        // Some hosts far more often than others: a few busy, many quiet.
        let host = if rng.chance(25) {
            rng.below(50) as u32
        } else {
            rng.below(u64::from(HOSTS)) as u32
        };
        let seq = seqs.entry(host).or_insert(0);
        *seq += 1;
        let record = format!("6,{seq},{t},-;host {host} record {seq}\n");
        let now = base + Duration::from_micros(t);
        rx.handle_datagram(
            now,
            1_700_000_000_000_000 + t,
            addr(host),
            record.as_bytes(),
        );
        if let Some(old) = heard_at.insert(host, t) {
            by_time.remove(&old);
        }
        by_time.insert(t, host);
        if heard_at.len() > LIMIT {
            let (&at, &oldest) = by_time.iter().next().expect("a host");
            by_time.remove(&at);
            heard_at.remove(&oldest);
            let got = loop {
                match rx.poll_event() {
                    Some(Event::Retired { session }) => break session.addr,
                    Some(_) => continue,
                    None => panic!("seed {seed}: datagram {t}: no session retired"),
                }
            };
            assert_eq!(
                got,
                addr(oldest),
                "seed {seed}: datagram {t}: the retired session is not the least recently heard"
            );
            // A retired host starts over when heard again.
            seqs.remove(&oldest);
            retired += 1;
        }
        while let Some(e) = rx.poll_event() {
            assert!(
                !matches!(e, Event::Retired { .. }),
                "seed {seed}: datagram {t}: retired below the limit"
            );
        }
        assert_eq!(rx.session_count(), heard_at.len(), "seed {seed}");
    }
    assert!(retired > 1_000, "seed {seed}: {retired} retired");
    eprintln!("seed {seed}: {retired} sessions retired, each the least recently heard");
}
