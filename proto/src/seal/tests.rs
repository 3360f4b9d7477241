//! Sealing against the reference AEAD, nonce uniqueness, key files, replay.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use super::*;
use crate::framer::{Framer, Outbox};
use crate::wire::{EndReason, Header, Payload, Repr, LINE_PARTIAL};

const NOW: u64 = 1_700_000_000_000_000;
const OLD_KEY: [u8; 32] = [0x11; 32];
const NEW_KEY: [u8; 32] = [0x22; 32];

/// One datagram of every kind and shape: HELLO, packed lines, fragments,
/// HEARTBEAT, END.
fn sample_datagrams() -> Vec<Vec<u8>> {
    let mut framer = Framer::new(0x6553_f100_dead_beef, "web-01", 200);
    let mut outbox = Outbox::default();
    framer.hello(42, NOW, "stdin", NOW, &mut outbox);
    framer.push_line(
        0,
        b"GET /index.html 200 secret-token=hunter2",
        NOW,
        &mut outbox,
    );
    framer.push_line(LINE_PARTIAL, b"partial line", NOW, &mut outbox);
    framer.flush(&mut outbox);
    let long: Vec<u8> = (0..500u32).map(|i| b'a' + (i % 26) as u8).collect();
    framer.push_line(0, &long, NOW + 1, &mut outbox);
    framer.heartbeat(NOW + 2, &mut outbox);
    framer.end(EndReason::Exit(3), NOW + 3, &mut outbox);
    outbox.datagrams().map(<[u8]>::to_vec).collect()
}

fn sealed(keys: &Keys, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    seal(keys, plain, &mut out);
    out
}

#[test]
fn the_associated_data_is_the_header_before_the_crc() {
    let plain = &sample_datagrams()[1];
    let view = Datagram::new_unchecked(&plain[..]);
    assert_eq!(view.header_before_crc().len(), AD_LEN);
    let mut copy = plain.clone();
    let mut view = Datagram::new_unchecked(&mut copy[..]);
    view.set_flags(0x05);
    view.set_payload_len(0x1234);
    assert_eq!((view.flags(), view.payload_len()), (0x05, 0x1234));
    assert_eq!(&copy[HEADER_LEN..], &plain[HEADER_LEN..]);
}

#[test]
fn seal_open_round_trip_every_kind() {
    let keys = Keys::from_bytes(NEW_KEY, &[]);
    let samples = sample_datagrams();
    assert!(samples.len() >= 6, "HELLO, DATA, fragments, HEARTBEAT, END");
    for plain in &samples {
        let s = sealed(&keys, plain);
        assert_eq!(s.len(), plain.len() + SEAL_OVERHEAD);
        assert_eq!(s[..4], plain[..4]);
        assert_eq!(Repr::parse(&s).unwrap_err(), DecodeError::Sealed);
        let view = Datagram::new_checked(&s[..]).unwrap();
        assert_eq!(view.flags() & FLAG_SEALED, FLAG_SEALED);
        let mut out = vec![0xaa]; // appends after what is there
        open(&keys, &s, &mut out).unwrap();
        assert_eq!(&out[1..], &plain[..]);
        Repr::parse(&out[1..]).unwrap();
    }
}

#[test]
fn sealed_bytes_hide_the_text() {
    let keys = Keys::from_bytes(NEW_KEY, &[]);
    for plain in sample_datagrams() {
        let s = sealed(&keys, &plain);
        for text in [
            &b"GET /index.html 200 secret-token=hunter2"[..],
            b"partial line",
            b"web-01",
            b"stdin",
            b"abcdefghijklmnop",
        ] {
            for piece in text.windows(5) {
                assert!(
                    !s.windows(5).any(|w| w == piece),
                    "{:?} visible in sealed bytes",
                    String::from_utf8_lossy(piece)
                );
            }
        }
    }
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let keys = Keys::from_bytes(NEW_KEY, &[]);
    for plain in sample_datagrams() {
        let good = sealed(&keys, &plain);
        let mut out = Vec::new();
        for bit in 0..good.len() * 8 {
            let mut v = good.clone();
            v[bit / 8] ^= 1 << (bit % 8);
            assert!(open(&keys, &v, &mut out).is_err(), "bit {bit}");
            // The same flip with the CRC fixed up: the AEAD alone must catch it.
            if bit / 8 < AD_LEN || bit / 8 >= HEADER_LEN {
                wire::seal_checksum(&mut v);
                let err = open(&keys, &v, &mut out).unwrap_err();
                assert_ne!(err, OpenError::Malformed(DecodeError::BadChecksum));
            }
            assert!(out.is_empty());
        }
    }
}

#[test]
fn truncation_is_rejected() {
    let keys = Keys::from_bytes(NEW_KEY, &[]);
    let good = sealed(&keys, &sample_datagrams()[1]);
    let mut out = Vec::new();
    for len in 0..good.len() {
        assert!(open(&keys, &good[..len], &mut out).is_err());
        // Consistently truncated (length and CRC fixed up): the tag catches it.
        if len >= HEADER_LEN {
            let mut v = good[..len].to_vec();
            wire::finish_datagram(&mut v);
            let err = open(&keys, &v, &mut out).unwrap_err();
            assert!(
                matches!(
                    err,
                    OpenError::Auth | OpenError::Malformed(DecodeError::Truncated)
                ),
                "{len}: {err:?}"
            );
        }
    }
    assert!(out.is_empty());
}

#[test]
fn wrong_key_and_unsealed_are_rejected() {
    let keys = Keys::from_bytes(NEW_KEY, &[]);
    let other = Keys::from_bytes(OLD_KEY, &[]);
    let mut out = Vec::new();
    for plain in sample_datagrams() {
        assert_eq!(
            open(&other, &sealed(&keys, &plain), &mut out),
            Err(OpenError::Auth)
        );
        assert_eq!(open(&keys, &plain, &mut out), Err(OpenError::Unsealed));
    }
    assert_eq!(
        open(&keys, b"hello, plain text", &mut out),
        Err(OpenError::Malformed(DecodeError::BadMagic))
    );
    assert_eq!(OpenError::Auth.as_str(), "auth");
    assert_eq!(OpenError::Unsealed.to_string(), "unsealed");
    assert!(out.is_empty());
}

#[test]
fn key_rotation_opens_with_every_key() {
    let old_sender = Keys::from_bytes(OLD_KEY, &[]);
    let new_sender = Keys::from_bytes(NEW_KEY, &[]);
    let receiver = Keys::parse(&format!(
        "# rotation: new first\n{}\n\n  {}  \n",
        "22".repeat(32),
        "11".repeat(32).to_uppercase()
    ))
    .unwrap();
    assert_eq!(receiver.len(), 2);
    let new_only = Keys::from_bytes(NEW_KEY, &[]);
    for plain in sample_datagrams() {
        let mut out = Vec::new();
        open(&receiver, &sealed(&old_sender, &plain), &mut out).unwrap();
        assert_eq!(out, plain);
        out.clear();
        open(&receiver, &sealed(&new_sender, &plain), &mut out).unwrap();
        assert_eq!(out, plain);
        out.clear();
        assert_eq!(
            open(&new_only, &sealed(&old_sender, &plain), &mut out),
            Err(OpenError::Auth)
        );
        // The receiver seals with its first key.
        assert_eq!(sealed(&receiver, &plain), sealed(&new_sender, &plain));
    }
}

#[test]
fn key_text_errors() {
    let err = |text: &str| Keys::parse(text).unwrap_err().into_kind();
    assert!(matches!(err(""), KeyErrorKind::NoKey));
    assert!(matches!(err("# only a comment\n\n"), KeyErrorKind::NoKey));
    assert!(matches!(
        err(&format!("# c\n{}\n", "ab".repeat(31))),
        KeyErrorKind::BadLine { line: 2 }
    ));
    assert!(matches!(
        err(&format!("{}zz\n", "ab".repeat(31))),
        KeyErrorKind::BadLine { line: 1 }
    ));
    assert!(matches!(
        err(&format!("{} # trailing\n", "ab".repeat(32))),
        KeyErrorKind::BadLine { line: 1 }
    ));
    let text = Keys::parse("nope").unwrap_err().to_string();
    assert!(text.contains("line 1") && !text.contains("nope"), "{text}");
    let keys = Keys::parse(&"ab".repeat(32)).unwrap();
    assert_eq!(format!("{keys:?}"), "Keys { count: 1, .. }");
}

#[test]
fn nonces_never_repeat_over_a_long_run() {
    // Two sessions (a restart in the same second with other random bits), each a
    // long run of packed lines, fragments and heartbeats (which repeat their seq).
    let keys = Keys::from_bytes(NEW_KEY, &[]);
    let mut nonces = HashSet::new();
    let mut total = 0usize;
    for session in [0x6553_f100_0000_0001, 0x6553_f100_0000_0002] {
        let mut framer = Framer::new(session, "web", 256);
        let mut outbox = Outbox::default();
        framer.hello(1, NOW, "stdin", NOW, &mut outbox);
        let long = [b'x'; 600];
        let mut i = 0u64;
        while total < 1_000_000 {
            // The clock does not move: the counter alone must keep nonces apart.
            let now = NOW;
            match i % 8 {
                0..=3 => {
                    framer.push_line(0, b"a 120-byte-ish log line", now, &mut outbox);
                }
                4 => {
                    framer.push_line(0, &long, now, &mut outbox);
                }
                _ => {
                    framer.flush(&mut outbox);
                    framer.heartbeat(now, &mut outbox);
                }
            }
            framer.flush(&mut outbox);
            for d in outbox.datagrams() {
                let n = nonce(d);
                if total % 997 == 1 {
                    // Sealing keeps the header fields the nonce is made of.
                    assert_eq!(nonce(&sealed(&keys, d)), n);
                }
                assert!(nonces.insert(n), "nonce repeated after {total} datagrams");
                total += 1;
            }
            outbox.clear();
            i += 1;
            if total >= 500_000 && session & 1 == 1 {
                break;
            }
        }
    }
    assert!(nonces.len() >= 1_000_000);
}

fn header(session: u64, counter: u32, sent_at_us: u64) -> Header {
    Header {
        session,
        seq: 1,
        sent_at_us,
        counter,
    }
}

#[test]
fn replay_guard_rejects_exact_replays_and_counts_copies_as_duplicates() {
    let mut guard = ReplayGuard::new(ReplayConfig::default());
    for c in 0..10 {
        assert_eq!(guard.check(&header(1, c, NOW), NOW), Ok(()));
    }
    for c in 0..10 {
        assert_eq!(guard.check(&header(1, c, NOW), NOW), Err(Replay::Duplicate));
        // Another session's counters are its own.
        assert_eq!(guard.check(&header(2, c, NOW), NOW), Ok(()));
    }
    assert!(Replay::Duplicate.is_duplicate() && !Replay::TooOld.is_duplicate());
}

#[test]
fn replay_window_slides() {
    let mut guard = ReplayGuard::new(ReplayConfig::default());
    assert_eq!(guard.check(&header(1, 5000, NOW), NOW), Ok(()));
    // Reordered within the window: accepted once.
    let inside = 5000 - (REPLAY_WINDOW - 1);
    assert_eq!(guard.check(&header(1, inside, NOW), NOW), Ok(()));
    assert_eq!(
        guard.check(&header(1, inside, NOW), NOW),
        Err(Replay::Duplicate)
    );
    assert_eq!(
        guard.check(&header(1, 100, NOW), NOW),
        Err(Replay::BehindWindow)
    );
    // A big jump forward forgets everything behind.
    assert_eq!(guard.check(&header(1, 1_000_000, NOW), NOW), Ok(()));
    assert_eq!(
        guard.check(&header(1, 5000, NOW), NOW),
        Err(Replay::BehindWindow)
    );
    assert_eq!(guard.check(&header(1, 999_999, NOW), NOW), Ok(()));
    assert_eq!(
        guard.check(&header(1, u32::MAX, NOW), NOW),
        Ok(()),
        "top of the range"
    );
    assert_eq!(
        guard.check(&header(1, u32::MAX, NOW), NOW),
        Err(Replay::Duplicate)
    );
}

#[test]
fn replay_guard_checks_sent_at_against_the_clock() {
    let config = ReplayConfig::default();
    let skew = config.max_skew_us;
    let mut guard = ReplayGuard::new(config);
    assert_eq!(
        guard.check(&header(1, 0, NOW - skew - 1), NOW),
        Err(Replay::TooOld)
    );
    assert_eq!(
        guard.check(&header(1, 0, NOW + skew + 1), NOW),
        Err(Replay::TooNew)
    );
    assert_eq!(guard.sessions(), 0, "refusals change nothing");
    assert_eq!(guard.check(&header(1, 0, NOW - skew), NOW), Ok(()));
    assert_eq!(guard.check(&header(1, 1, NOW + skew), NOW), Ok(()));
    // A long-running session (started hours ago) is fine: only sent_at counts.
    let session = wire::session_id(((NOW / 1_000_000) - 86_400) as u32, 7);
    assert_eq!(guard.check(&header(session, 123_456, NOW), NOW), Ok(()));
    let off = ReplayGuard::new(ReplayConfig {
        max_skew_us: u64::MAX,
        ..ReplayConfig::default()
    })
    .check(&header(3, 0, 0), NOW);
    assert_eq!(off, Ok(()));
}

#[test]
fn replay_guard_is_bounded_and_counts_early_evictions() {
    let config = ReplayConfig {
        max_skew_us: 1_000_000,
        max_sessions: 4,
    };
    let mut guard = ReplayGuard::new(config);
    for s in 0..4 {
        guard.check(&header(s, 0, NOW), NOW + s).unwrap();
    }
    // Session 0 is the least recently heard; a fifth session pushes it out early.
    guard.check(&header(9, 0, NOW), NOW + 10).unwrap();
    assert_eq!((guard.sessions(), guard.early_evictions()), (4, 1));
    assert_eq!(guard.check(&header(1, 0, NOW), NOW), Err(Replay::Duplicate));
    // Much later, evicting a long-idle session is not early.
    let later = NOW + 3_000_000;
    guard.check(&header(10, 0, later), later).unwrap();
    assert_eq!(guard.early_evictions(), 1);
}

#[test]
fn replay_window_matches_a_model() {
    // Against an obviously correct set of seen counters.
    let seed = test_seed();
    let mut rng = XorShift(seed);
    for _ in 0..20 {
        let mut guard = ReplayGuard::new(ReplayConfig::default());
        let mut seen = BTreeSet::new();
        let mut top = 0u32;
        let mut base = rng.next() as u32 % 100_000;
        for _ in 0..20_000 {
            base += (rng.next() % 3) as u32;
            let back = (rng.next() % 5000) as u32;
            let c = base.saturating_sub(back);
            let got = guard.check(&header(1, c, NOW), NOW);
            let behind = !seen.is_empty() && c < top && top / 64 - c / 64 >= 65;
            let want = if behind {
                Err(Replay::BehindWindow)
            } else if seen.contains(&c) {
                Err(Replay::Duplicate)
            } else {
                Ok(())
            };
            assert_eq!(got, want, "seed {seed}: counter {c}, top {top}");
            if top - c.min(top) < REPLAY_WINDOW {
                assert_ne!(got, Err(Replay::BehindWindow), "window too small");
            }
            if got.is_ok() {
                seen.insert(c);
                top = top.max(c);
            }
        }
    }
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `NCU_TEST_SEED` if set, else from the clock; printed so a failure can be rerun.
fn test_seed() -> u64 {
    let seed = std::env::var("NCU_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    println!("seed {seed} (rerun with NCU_TEST_SEED={seed})");
    seed
}

#[test]
fn mutated_sealed_datagrams_never_panic_nor_open() {
    let seed = test_seed();
    let mut rng = XorShift(seed);
    let keys = Keys::from_bytes(NEW_KEY, &[OLD_KEY]);
    let samples: Vec<Vec<u8>> = sample_datagrams()
        .iter()
        .map(|p| sealed(&keys, p))
        .collect();
    let mut out = Vec::new();
    for round in 0..20_000 {
        let mut v = samples[round % samples.len()].clone();
        for _ in 0..1 + rng.next() % 4 {
            let at = (rng.next() as usize) % (v.len() + 1);
            match rng.next() % 5 {
                0 if at < v.len() => v[at] ^= 1 << (rng.next() % 8),
                1 if at < v.len() => v[at] = rng.next() as u8,
                2 => v.truncate(at),
                3 => v.insert(at, rng.next() as u8),
                _ => v.extend_from_slice(&rng.next().to_be_bytes()),
            }
        }
        if rng.next() & 1 == 1 && v.len() >= HEADER_LEN {
            wire::seal_checksum(&mut v); // let it past the CRC
        }
        let changed = !samples.contains(&v);
        let result = open(&keys, &v, &mut out);
        if changed {
            assert!(
                result.is_err(),
                "seed {seed}, round {round}: forged {v:02x?}"
            );
        }
        out.clear();
    }
}

/// What a key holder may seal: mutated plain datagrams (the fuzz target `sealed`
/// in every run) seal, open to the same bytes, and go through parse and the
/// replay guard without panic.
#[test]
fn anything_a_key_holder_seals_opens_whole_and_parses_without_panic() {
    let seed = test_seed();
    let mut rng = XorShift(seed);
    let keys = Keys::from_bytes(NEW_KEY, &[OLD_KEY]);
    let samples = sample_datagrams();
    let (mut sealed, mut opened) = (Vec::new(), Vec::new());
    let mut parsed = 0;
    for round in 0..20_000 {
        let mut plain = samples[round % samples.len()].clone();
        for _ in 0..1 + rng.next() % 4 {
            let at = HEADER_LEN.min(plain.len())
                + (rng.next() as usize) % (plain.len() - HEADER_LEN + 1);
            match rng.next() % 4 {
                0 if at < plain.len() => plain[at] ^= 1 << (rng.next() % 8),
                1 if at < plain.len() => plain[at] = rng.next() as u8,
                2 => plain.truncate(at),
                _ => plain.insert(at, rng.next() as u8),
            }
        }
        // The kind and flags bytes too, now and then.
        if rng.next().is_multiple_of(8) {
            plain[4 + (rng.next() % 2) as usize] = rng.next() as u8;
        }
        wire::set_payload_len(&mut plain);
        sealed.clear();
        opened.clear();
        seal(&keys, &plain, &mut sealed);
        if open(&keys, &sealed, &mut opened).is_err() {
            // Only a header open() refuses before the AEAD (kind, flags).
            continue;
        }
        assert_eq!(
            opened[HEADER_LEN..],
            plain[HEADER_LEN..],
            "seed {seed}, round {round}"
        );
        if let Ok(repr) = Repr::parse(&opened) {
            parsed += 1;
            let mut guard = ReplayGuard::new(ReplayConfig::default());
            assert!(guard.check(&repr.header, repr.header.sent_at_us).is_ok());
            assert!(guard.check(&repr.header, repr.header.sent_at_us).is_err());
        }
    }
    assert!(
        parsed > 1_000,
        "seed {seed}: only {parsed} of 20,000 parsed"
    );
}

/// The AEAD here is RustCrypto's `XChaCha20Poly1305`, byte for byte: same sealed
/// bytes for every sample datagram and for every payload length from 0 to 1300
/// (every block and padding boundary).
#[test]
fn aead_matches_chacha20poly1305() {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};

    let seed = test_seed();
    let mut rng = XorShift(seed);
    let mut key = [0u8; KEY_LEN];
    let check = |key: &[u8; KEY_LEN], plain: &[u8]| {
        let ours = sealed(&Keys::from_bytes(*key, &[]), plain);
        let reference = XChaCha20Poly1305::new(key.into());
        let mut want = ours[..HEADER_LEN].to_vec(); // our header, flag and length set
        let mut payload = plain[HEADER_LEN..].to_vec();
        let tag = reference
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce(&want)),
                &want[..AD_LEN],
                &mut payload,
            )
            .unwrap();
        want.extend_from_slice(&payload);
        want.extend_from_slice(&tag);
        wire::seal_checksum(&mut want);
        assert_eq!(ours, want, "seed {seed}: {} payload bytes", payload.len());
    };
    for plain in sample_datagrams() {
        check(&NEW_KEY, &plain);
    }
    let mut framer = Framer::new(0x6553_f100_0000_0001, "web", 1400);
    let mut outbox = Outbox::default();
    let line: Vec<u8> = (0..1400).map(|_| rng.next() as u8).collect();
    for len in 0..1300 {
        key.iter_mut().for_each(|b| *b = rng.next() as u8);
        framer.push_line(0, &line[..len], NOW + len as u64, &mut outbox);
        framer.flush(&mut outbox);
        for plain in outbox.datagrams() {
            check(&key, plain);
        }
        outbox.clear();
    }
}

/// A [`Sealer`] (subkey remembered while the nonce prefix stays) fed by a framer
/// that skips the plain CRC gives byte for byte what [`seal`] gives for the
/// checksummed datagrams, across batches whose `sent_at_us` (and so subkey) change.
#[test]
fn sealer_matches_seal_across_batches() {
    let keys = Keys::from_bytes(NEW_KEY, &[]);
    let mut sealer = Sealer::new(keys.clone());
    let (mut checked, mut unchecked) = (
        Framer::new(0x6553_f100_0000_0002, "web", 300),
        Framer::new(0x6553_f100_0000_0002, "web", 300),
    );
    unchecked.set_sealed_next(true);
    let (mut a, mut b) = (Outbox::default(), Outbox::default());
    let mut batches = 0;
    for batch in 0..50u64 {
        for i in 0..=(batch % 7) {
            let line = format!("batch {batch} line {i} {}", "x".repeat((i * 40) as usize));
            checked.push_line(0, line.as_bytes(), NOW + batch, &mut a);
            unchecked.push_line(0, line.as_bytes(), NOW + batch, &mut b);
        }
        checked.flush(&mut a);
        unchecked.flush(&mut b);
        assert_eq!(a.datagrams().count(), b.datagrams().count());
        batches += usize::from(a.datagrams().count() > 1);
        for (plain, crcless) in a.datagrams().zip(b.datagrams()) {
            assert_ne!(plain, crcless, "the plain CRC was skipped");
            let mut ours = Vec::new();
            sealer.seal(crcless, &mut ours);
            assert_eq!(ours, sealed(&keys, plain), "batch {batch}");
            let mut opened = Vec::new();
            open(&keys, &ours, &mut opened).unwrap();
            assert_eq!(opened, plain, "opens to the checksummed datagram");
        }
        a.clear();
        b.clear();
    }
    assert!(batches > 10, "batches of several datagrams share a subkey");
}

/// Not a correctness test: prints seal+open throughput for datagrams carrying
/// one 120-byte line, against the CRC-only decode of the plain datagram. Run
/// with `cargo test -p ncu-proto --release seal -- --nocapture`.
#[test]
fn seal_throughput() {
    let n: u32 = if cfg!(debug_assertions) {
        20_000
    } else {
        1_000_000
    };
    let keys = Keys::from_bytes(NEW_KEY, &[OLD_KEY]);
    let mut framer = Framer::new(0x6553_f100_0000_0001, "web", 1400);
    let mut outbox = Outbox::default();
    framer.push_line(0, &[b'x'; 120], NOW, &mut outbox);
    framer.flush(&mut outbox);
    let plain = outbox.datagrams().next().unwrap().to_vec();
    assert_eq!(plain.len(), HEADER_LEN + 3 + 120);

    let mut decoded = 0usize;
    let t = Instant::now();
    for _ in 0..n {
        let repr = Repr::parse(std::hint::black_box(&plain)).unwrap();
        if let Payload::Lines { count, .. } = repr.payload {
            decoded += usize::from(count);
        }
    }
    let decode = t.elapsed();
    assert_eq!(decoded, n as usize);

    let mut s = Vec::with_capacity(2048);
    let t = Instant::now();
    for _ in 0..n {
        s.clear();
        seal(&keys, std::hint::black_box(&plain), &mut s);
    }
    let seal_time = t.elapsed();

    let mut o = Vec::with_capacity(2048);
    let t = Instant::now();
    for _ in 0..n {
        o.clear();
        open(&keys, std::hint::black_box(&s), &mut o).unwrap();
        Repr::parse(&o).unwrap();
    }
    let open_time = t.elapsed();

    // The worst case for a rotating receiver: the second key is the right one.
    let old_sealed = sealed(&Keys::from_bytes(OLD_KEY, &[]), &plain);
    let t = Instant::now();
    for _ in 0..n {
        o.clear();
        open(&keys, std::hint::black_box(&old_sealed), &mut o).unwrap();
    }
    let open2_time = t.elapsed();

    let rate = |d: std::time::Duration| f64::from(n) / d.as_secs_f64();
    println!(
        "seal throughput ({} build, {n} datagrams of {} bytes, one 120-byte line):\n  \
         plain decode (CRC + parse): {:>12.0} datagrams/s\n  \
         seal:                       {:>12.0} datagrams/s\n  \
         open + parse:               {:>12.0} datagrams/s\n  \
         open with the 2nd key:      {:>12.0} datagrams/s",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        plain.len(),
        rate(decode),
        rate(seal_time),
        rate(open_time),
        rate(open2_time),
    );
}
