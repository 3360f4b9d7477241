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
/// The ring holds chunks: whole send buffers handed over after sending
/// ([`ResendRing::push_chunk`], no copy), or small buffers that single datagrams
/// are copied into ([`ResendRing::push`]). Each chunk has a small index: where each
/// datagram lies in it and which lines it carries. The bound counts every chunk's
/// capacity; the oldest chunks go first, and their buffers are handed back for reuse,
/// so a sender in steady state allocates nothing.
#[derive(Debug, Clone)]
pub struct ResendRing {
    max_bytes: usize,
    /// Sum of the chunks' byte capacities.
    held: usize,
    /// Datagrams held.
    count: usize,
    chunks: VecDeque<Chunk>,
}

/// One held datagram: its bytes `start..end` in its chunk and the lines
/// `first..=last` it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Start of the datagram in the chunk's bytes.
    pub start: usize,
    /// End of the datagram in the chunk's bytes.
    pub end: usize,
    /// First line carried.
    pub first: u64,
    /// Last line carried.
    pub last: u64,
}

#[derive(Debug, Clone)]
struct Chunk {
    bytes: Vec<u8>,
    /// Never empty; lines increase.
    slots: Vec<Slot>,
}

/// Largest buffer [`ResendRing::push`] allocates to copy single datagrams into.
const COPY_CHUNK: usize = 64 << 10;

/// Send buffers with fewer bytes than this are copied into the ring, not kept whole.
pub const COPY_BELOW: usize = 4 << 10;

impl ResendRing {
    /// A ring holding at most `max_bytes` of datagrams (0: keeps nothing).
    pub fn new(max_bytes: usize) -> ResendRing {
        ResendRing {
            max_bytes,
            held: 0,
            count: 0,
            chunks: VecDeque::new(),
        }
    }

    /// Drops the oldest chunks until `room` more bytes fit; returns the first
    /// dropped, for reuse.
    fn evict_until(&mut self, room: usize) -> Option<Chunk> {
        let mut first = None;
        while self.held + room > self.max_bytes {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.held -= old.bytes.capacity();
            self.count -= old.slots.len();
            if first.is_none() {
                first = Some(old);
            }
        }
        first
    }

    /// Keeps `datagram` (copied), which carries lines `first..=last` (lines are
    /// recorded in increasing order), dropping the oldest datagrams to make room.
    pub fn push(&mut self, first: u64, last: u64, datagram: &[u8]) {
        let len = datagram.len();
        if len == 0 || len > self.max_bytes {
            return;
        }
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.bytes.capacity() - c.bytes.len() >= len);
        if !fits {
            let want = (self.max_bytes / 16).min(COPY_CHUNK).max(len);
            let recycled = self.evict_until(want);
            let chunk = match recycled {
                Some(mut c)
                    if c.bytes.capacity() >= len
                        && self.held + c.bytes.capacity() <= self.max_bytes =>
                {
                    c.bytes.clear();
                    c.slots.clear();
                    c
                }
                _ => Chunk {
                    bytes: Vec::with_capacity(want),
                    slots: Vec::new(),
                },
            };
            self.held += chunk.bytes.capacity();
            self.chunks.push_back(chunk);
        }
        let chunk = self.chunks.back_mut().expect("a chunk with room");
        let start = chunk.bytes.len();
        chunk.bytes.extend_from_slice(datagram);
        chunk.slots.push(Slot {
            start,
            end: start + len,
            first,
            last,
        });
        self.count += 1;
    }

    /// Keeps the datagrams of a send buffer without copying them: `bytes` holds
    /// them (and possibly other datagrams, not kept) and `slots` says where each
    /// lies and which lines it carries (lines increase and follow those already
    /// held). Returns empty buffers to reuse for the next batch: those of the oldest
    /// chunk dropped to make room, when there is one. A small buffer (below
    /// [`COPY_BELOW`]: a line or a few, where copying costs less than a buffer and an
    /// index of its own), one too large for the ring, or one mostly empty, is copied
    /// from instead (then handed back itself).
    pub fn push_chunk(&mut self, mut bytes: Vec<u8>, mut slots: Vec<Slot>) -> (Vec<u8>, Vec<Slot>) {
        let cap = bytes.capacity();
        if slots.is_empty()
            || cap > self.max_bytes
            || bytes.len() < COPY_BELOW
            || bytes.len() * 4 < cap
        {
            for s in &slots {
                self.push(s.first, s.last, &bytes[s.start..s.end]);
            }
            bytes.clear();
            slots.clear();
            return (bytes, slots);
        }
        let recycled = self.evict_until(cap);
        self.held += cap;
        self.count += slots.len();
        self.chunks.push_back(Chunk { bytes, slots });
        match recycled {
            Some(mut c) => {
                c.bytes.clear();
                c.slots.clear();
                (c.bytes, c.slots)
            }
            None => (Vec::with_capacity(cap), Vec::new()),
        }
    }

    /// The oldest line still held.
    pub fn oldest(&self) -> Option<u64> {
        self.chunks.front().map(|c| c.slots[0].first)
    }

    /// Bytes held (the capacity of the buffers holding datagrams).
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Calls `found` with every held datagram that carries a line of
    /// `first..=last`, oldest first, and the last line it carries; stops when `found`
    /// returns false.
    pub fn find(&self, first: u64, last: u64, mut found: impl FnMut(&[u8], u64) -> bool) {
        let start = self
            .chunks
            .partition_point(|c| c.slots.last().is_some_and(|s| s.last < first));
        for chunk in self.chunks.range(start..) {
            let from = chunk.slots.partition_point(|s| s.last < first);
            for slot in &chunk.slots[from..] {
                if slot.first > last {
                    return;
                }
                if !found(&chunk.bytes[slot.start..slot.end], slot.last) {
                    return;
                }
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

    /// Keeps a sent DATA datagram carrying lines `first..=last` (copied).
    pub fn record(&mut self, first: u64, last: u64, datagram: &[u8]) {
        self.ring.push(first, last, datagram);
    }

    /// Keeps the DATA datagrams of a whole send buffer, moved rather than copied;
    /// returns empty buffers to reuse (see [`ResendRing::push_chunk`]).
    pub fn record_chunk(&mut self, bytes: Vec<u8>, slots: Vec<Slot>) -> (Vec<u8>, Vec<Slot>) {
        self.ring.push_chunk(bytes, slots)
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
    fn chunks_are_kept_without_copy_bounded_and_recycled() {
        // Batches of 1500-byte datagrams: large enough to be kept whole.
        let big = |first: u64, last: u64| {
            let mut d = datagram(first, last);
            d.resize(1500, b'.');
            d
        };
        let mut ring = ResendRing::new(64 << 10);
        let mut next_line = 1u64;
        let mut spare = Vec::new();
        let mut slots = Vec::new();
        let mut recycled = 0;
        for batch in 0..300u64 {
            let mut outbox = Outbox::default();
            for _ in 0..(batch % 5 + 3) {
                outbox.push(&big(next_line, next_line + 1));
                next_line += 2;
            }
            let mut line = next_line - 2 * outbox.len() as u64;
            let (mut start, ends) = (0, outbox.ends().to_vec());
            for &end in &ends {
                slots.push(Slot {
                    start,
                    end,
                    first: line,
                    last: line + 1,
                });
                (start, line) = (end, line + 2);
            }
            let bytes = outbox.take_buffer(std::mem::take(&mut spare));
            let ptr = bytes.as_ptr();
            assert!(outbox.is_empty() && outbox.bytes().is_empty());
            let (s, sl) = ring.push_chunk(bytes, std::mem::take(&mut slots));
            assert_ne!(s.as_ptr(), ptr, "kept whole, not copied");
            recycled += usize::from(s.capacity() > 0);
            (spare, slots) = (s, sl);
            assert!(ring.held_bytes() <= 64 << 10);
        }
        assert!(recycled > 0, "evicted buffers are handed back");
        let oldest = ring.oldest().unwrap();
        assert!(oldest > 1);
        for l in (oldest..next_line).step_by(2) {
            let mut got = Vec::new();
            ring.find(l + 1, l + 1, |d, last| {
                got.push((d.to_vec(), last));
                true
            });
            assert_eq!(got, [(big(l, l + 1), l + 1)], "line {l}");
        }
        // Single datagrams after chunks go on in line order.
        ring.push(next_line, next_line, &datagram(next_line, next_line));
        let mut n = 0;
        ring.find(next_line - 1, next_line, |_, _| {
            n += 1;
            true
        });
        assert_eq!(n, 2);
    }

    #[test]
    fn small_batches_are_copied_and_their_buffer_handed_back() {
        let mut ring = ResendRing::new(1 << 20);
        let mut outbox = Outbox::default();
        for line in 1..=1000u64 {
            outbox.push(&datagram(line, line));
            let slots = vec![Slot {
                start: 0,
                end: outbox.bytes().len(),
                first: line,
                last: line,
            }];
            let bytes = outbox.take_buffer(Vec::new());
            let ptr = bytes.as_ptr();
            let (back, _) = ring.push_chunk(bytes, slots);
            assert_eq!(back.as_ptr(), ptr, "line {line}: the same buffer back");
            outbox.take_buffer(back);
        }
        assert_eq!(ring.len(), 1000);
        assert!(ring.held_bytes() <= 64 << 10, "in one copy chunk");
        let mut got = Vec::new();
        ring.find(500, 500, |d, _| {
            got.push(d.to_vec());
            true
        });
        assert_eq!(got, [datagram(500, 500)]);
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
