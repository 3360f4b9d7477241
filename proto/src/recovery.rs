//! The sender's side of recovery, without IO: a resend ring bounded in bytes, and
//! the answer to a receiver's NACK, bounded by a token bucket.
//!
//! The sender keeps every DATA datagram it sent (as sent: sealed, if sealing is on)
//! in a [`ResendRing`]. When a NACK asks for lines, [`Recovery::handle_nack`] finds
//! the datagrams that carry them and hands them back for sending again, byte for
//! byte, as long as the token bucket allows; lines older than the ring holds are
//! answered with a GONE range so the receiver reports them at once.
//!
//! ```
//! use std::time::Instant;
//! use ncu_proto::framer::Outbox;
//! use ncu_proto::recovery::Recovery;
//!
//! let mut recovery = Recovery::new(1 << 20, 1 << 20);
//! recovery.record(1, 3, b"a datagram carrying lines 1 to 3");
//! let (mut resend, mut gone) = (Outbox::default(), Vec::new());
//! recovery.handle_nack([(2, 1)].into_iter(), Instant::now(), &mut resend, &mut gone);
//! assert_eq!(resend.datagrams().next(), Some(&b"a datagram carrying lines 1 to 3"[..]));
//! assert!(gone.is_empty());
//! ```

use std::collections::VecDeque;
use std::time::Instant;

use crate::framer::Outbox;

/// Recent datagrams by the lines they carry, bounded in bytes (oldest dropped first).
///
/// One buffer of exactly `max_bytes`, allocated at the first push and used as a
/// circular byte ring: keeping a datagram is one copy (two at the wrap), with no
/// reallocation and no more memory than the bound.
#[derive(Debug, Clone)]
pub struct ResendRing {
    max_bytes: usize,
    buf: Vec<u8>,
    /// Total bytes ever pushed: the ring position of the next datagram.
    end: u64,
    /// Held bytes (the oldest datagram starts at `end - held`).
    held: usize,
    entries: VecDeque<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    first: u64,
    last: u64,
    /// Ring position (total bytes pushed before it).
    at: u64,
    len: usize,
}

impl ResendRing {
    /// A ring holding at most `max_bytes` of datagrams (0: keeps nothing).
    pub fn new(max_bytes: usize) -> ResendRing {
        ResendRing {
            max_bytes,
            buf: Vec::new(),
            end: 0,
            held: 0,
            entries: VecDeque::new(),
        }
    }

    /// Keeps `datagram`, which carries lines `first..=last` (lines are recorded in
    /// increasing order), dropping the oldest datagrams to make room.
    pub fn push(&mut self, first: u64, last: u64, datagram: &[u8]) {
        if datagram.is_empty() || datagram.len() > self.max_bytes {
            return;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; self.max_bytes];
        }
        while self.held + datagram.len() > self.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.held -= old.len;
        }
        let cap = self.buf.len();
        let start = (self.end % cap as u64) as usize;
        let first_part = datagram.len().min(cap - start);
        self.buf[start..start + first_part].copy_from_slice(&datagram[..first_part]);
        self.buf[..datagram.len() - first_part].copy_from_slice(&datagram[first_part..]);
        self.entries.push_back(Entry {
            first,
            last,
            at: self.end,
            len: datagram.len(),
        });
        self.end += datagram.len() as u64;
        self.held += datagram.len();
    }

    /// The oldest line still held.
    pub fn oldest(&self) -> Option<u64> {
        self.entries.front().map(|e| e.first)
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Calls `found` with every held datagram that carries a line of
    /// `first..=last`, oldest first, and the last line it carries; stops when `found`
    /// returns false.
    pub fn find(&self, first: u64, last: u64, mut found: impl FnMut(&[u8], u64) -> bool) {
        let start = self.entries.partition_point(|e| e.last < first);
        let mut scratch = Vec::new();
        for entry in self.entries.range(start..) {
            if entry.first > last {
                break;
            }
            let cap = self.buf.len();
            let at = (entry.at % cap as u64) as usize;
            let first_part = entry.len.min(cap - at);
            scratch.clear();
            scratch.extend_from_slice(&self.buf[at..at + first_part]);
            scratch.extend_from_slice(&self.buf[..entry.len - first_part]);
            if !found(&scratch, entry.last) {
                return;
            }
        }
    }
}

/// A token bucket: `rate` units per second, at most `burst` at once.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u64, burst: u64) -> TokenBucket {
        TokenBucket {
            rate: rate_per_sec as f64,
            burst: burst as f64,
            tokens: burst as f64,
            refilled: None,
        }
    }

    /// Takes `n` tokens if there are that many at `now`.
    pub fn take(&mut self, now: Instant, n: u64) -> bool {
        if let Some(last) = self.refilled {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.refilled = Some(now);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// What recovery did, for `-v` and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// NACKs handled.
    pub nacks: u64,
    /// Datagrams resent.
    pub resent: u64,
    /// Bytes resent.
    pub resent_bytes: u64,
    /// Resends refused by the rate limit.
    pub limited: u64,
    /// Line ranges answered as gone (older than the ring).
    pub gone: u64,
}

/// The sender's recovery state: the ring and the rate limit of resends.
#[derive(Debug, Clone)]
pub struct Recovery {
    ring: ResendRing,
    bucket: TokenBucket,
    stats: RecoveryStats,
}

/// Most datagrams resent for one NACK (a NACK names at most 64 ranges; this bounds
/// the work of one forged NACK asking for everything).
pub const MAX_RESEND_PER_NACK: usize = 1024;

impl Recovery {
    /// A ring of `ring_bytes`, resending at most `rate_bytes_per_sec` (with a burst of
    /// one second's worth).
    pub fn new(ring_bytes: usize, rate_bytes_per_sec: u64) -> Recovery {
        Recovery {
            ring: ResendRing::new(ring_bytes),
            bucket: TokenBucket::new(rate_bytes_per_sec, rate_bytes_per_sec.max(65_536)),
            stats: RecoveryStats::default(),
        }
    }

    /// Keeps a sent DATA datagram carrying lines `first..=last`.
    pub fn record(&mut self, first: u64, last: u64, datagram: &[u8]) {
        self.ring.push(first, last, datagram);
    }

    /// The ring.
    pub fn ring(&self) -> &ResendRing {
        &self.ring
    }

    /// What recovery did so far.
    pub fn stats(&self) -> RecoveryStats {
        self.stats
    }

    /// Answers a NACK: datagrams carrying the asked lines go into `resend` (each at
    /// most once, within the rate limit), ranges older than the ring into `gone` as
    /// `(first, last)`.
    pub fn handle_nack(
        &mut self,
        ranges: impl Iterator<Item = (u64, u32)>,
        now: Instant,
        resend: &mut Outbox,
        gone: &mut Vec<(u64, u64)>,
    ) {
        self.stats.nacks += 1;
        let oldest = self.ring.oldest();
        let mut sent = 0usize;
        // Highest line already covered by a resent datagram: ranges come in
        // increasing order, so one datagram is not resent twice for one NACK.
        let mut covered: u64 = 0;
        for (first, count) in ranges {
            let last = first.saturating_add(u64::from(count).saturating_sub(1));
            match oldest {
                Some(oldest) if first < oldest => {
                    gone.push((first, last.min(oldest - 1)));
                    self.stats.gone += 1;
                }
                None => {
                    gone.push((first, last));
                    self.stats.gone += 1;
                    continue;
                }
                _ => {}
            }
            let first = first.max(covered + 1);
            if first > last {
                continue;
            }
            let bucket = &mut self.bucket;
            let stats = &mut self.stats;
            let mut carried_to = covered;
            self.ring.find(first, last, |datagram, carries_last| {
                if sent >= MAX_RESEND_PER_NACK {
                    return false;
                }
                if !bucket.take(now, datagram.len() as u64) {
                    stats.limited += 1;
                    return false;
                }
                resend.push(datagram);
                stats.resent += 1;
                stats.resent_bytes += datagram.len() as u64;
                sent += 1;
                carried_to = carried_to.max(carries_last);
                true
            });
            // A datagram carrying lines past this range is not resent again for the
            // next range it also carries.
            covered = covered.max(carried_to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn datagram(first: u64, last: u64) -> Vec<u8> {
        format!("lines {first}-{last}").into_bytes()
    }

    #[test]
    fn ring_is_bounded_and_finds_by_line() {
        let mut ring = ResendRing::new(100);
        for i in 0..20u64 {
            ring.push(i * 2 + 1, i * 2 + 2, &datagram(i * 2 + 1, i * 2 + 2));
        }
        assert!(ring.held_bytes() <= 100);
        let oldest = ring.oldest().unwrap();
        assert!(oldest > 1, "old datagrams were dropped");
        let mut found = Vec::new();
        ring.find(36, 37, |d, _| {
            found.push(String::from_utf8(d.to_vec()).unwrap());
            true
        });
        assert_eq!(found, ["lines 35-36", "lines 37-38"]);
    }

    #[test]
    fn nack_resends_each_datagram_once_and_answers_gone_for_old_lines() {
        let mut recovery = Recovery::new(60, 1 << 20);
        for i in 1..=10u64 {
            recovery.record(i, i, &datagram(i, i)); // 9-10 bytes each: about 6 kept
        }
        let oldest = recovery.ring().oldest().unwrap();
        let (mut resend, mut gone) = (Outbox::default(), Vec::new());
        recovery.handle_nack(
            [(1, 2), (oldest, 2), (oldest + 1, 1)].into_iter(),
            Instant::now(),
            &mut resend,
            &mut gone,
        );
        assert_eq!(gone, [(1, 2)]);
        let got: Vec<&[u8]> = resend.datagrams().collect();
        assert_eq!(
            got,
            [
                &datagram(oldest, oldest)[..],
                &datagram(oldest + 1, oldest + 1)[..]
            ]
        );
    }

    #[test]
    fn a_datagram_carrying_two_asked_ranges_is_resent_once() {
        let mut recovery = Recovery::new(1 << 20, 1 << 20);
        recovery.record(1, 10, &datagram(1, 10));
        recovery.record(11, 20, &datagram(11, 20));
        let (mut resend, mut gone) = (Outbox::default(), Vec::new());
        recovery.handle_nack(
            [(2, 1), (5, 1), (12, 1)].into_iter(),
            Instant::now(),
            &mut resend,
            &mut gone,
        );
        let got: Vec<&[u8]> = resend.datagrams().collect();
        assert_eq!(got, [&datagram(1, 10)[..], &datagram(11, 20)[..]]);
    }

    #[test]
    fn ring_wraps_and_returns_exact_bytes() {
        let mut ring = ResendRing::new(1000);
        let mut kept = Vec::new();
        for i in 1..=300u64 {
            let d: Vec<u8> = (0..(i % 37 + 1)).map(|k| (i * 7 + k) as u8).collect();
            ring.push(i, i, &d);
            kept.push(d);
            assert!(ring.held_bytes() <= 1000);
        }
        let oldest = ring.oldest().unwrap();
        for i in oldest..=300 {
            let mut got = None;
            ring.find(i, i, |d, _| {
                got = Some(d.to_vec());
                false
            });
            assert_eq!(
                got.as_deref(),
                Some(&kept[(i - 1) as usize][..]),
                "line {i}"
            );
        }
    }

    #[test]
    fn forged_nacks_cannot_exceed_the_rate() {
        let mut recovery = Recovery::new(1 << 20, 100_000);
        for i in 1..=1000u64 {
            recovery.record(i, i, &[0u8; 1000]);
        }
        let start = Instant::now();
        let mut bytes = 0;
        for k in 0..100u32 {
            let (mut resend, mut gone) = (Outbox::default(), Vec::new());
            let now = start + Duration::from_millis(u64::from(k) * 10); // one second
            recovery.handle_nack([(1, 1000)].into_iter(), now, &mut resend, &mut gone);
            bytes += resend.datagrams().map(<[u8]>::len).sum::<usize>();
        }
        // Burst (100,000) plus one second at 100,000 bytes/s.
        assert!(bytes <= 200_000, "resent {bytes} bytes");
        assert!(recovery.stats().limited > 0);
    }
}
