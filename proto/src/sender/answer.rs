//! Answering the receiver: NACKs get the datagrams they ask for again, within the
//! resend rate, and one GONE for what the ring no longer holds, within
//! [`GONE_PER_SEC`].

use std::time::Instant;

use crate::framer::Outbox;
use crate::recovery::{Recovery, RecoveryStats, ResendRing, Slot, TokenBucket};
use crate::seal;
use crate::wire::{Payload, Repr};

use super::{Sender, State, To, GONE_PER_SEC};

/// Recovery's state in the sender: the ring and rate limit
/// ([`crate::recovery`]), the GONE limit, reusable buffers, and the counters of
/// sessions before a rollover.
#[derive(Debug)]
pub(super) struct Recovering {
    recovery: Recovery,
    ring_bytes: usize,
    rate: u64,
    /// Datagrams to resend for one NACK.
    resend: Outbox,
    /// Line ranges one NACK asked for that the ring no longer holds.
    gone: Vec<(u64, u64)>,
    gone_bucket: TokenBucket,
    /// A sealed NACK, opened.
    opened: Vec<u8>,
    /// Counters of earlier sessions (rollover).
    past: RecoveryStats,
}

impl Recovering {
    pub(super) fn new(ring_bytes: usize, rate: u64) -> Recovering {
        Recovering {
            recovery: Recovery::new(ring_bytes, rate),
            ring_bytes,
            rate,
            resend: Outbox::default(),
            gone: Vec::new(),
            gone_bucket: TokenBucket::new(GONE_PER_SEC, GONE_PER_SEC),
            opened: Vec::new(),
            past: RecoveryStats::default(),
        }
    }

    pub(super) fn ring(&self) -> &ResendRing {
        self.recovery.ring()
    }

    /// Hands a sent buffer (and its datagrams' index) to the ring; returns empty
    /// buffers for the next batch (see [`ResendRing::push_chunk`]).
    pub(super) fn keep(&mut self, bytes: Vec<u8>, slots: Vec<Slot>) -> (Vec<u8>, Vec<Slot>) {
        self.recovery.record_chunk(bytes, slots)
    }

    /// A new session: its lines are numbered afresh, so the ring starts empty.
    pub(super) fn reset(&mut self) {
        self.past = self.stats();
        self.recovery = Recovery::new(self.ring_bytes, self.rate);
    }

    pub(super) fn stats(&self) -> RecoveryStats {
        let (p, s) = (self.past, self.recovery.stats());
        RecoveryStats {
            nacks: p.nacks + s.nacks,
            resent: p.resent + s.resent,
            resent_bytes: p.resent_bytes + s.resent_bytes,
            limited: p.limited + s.limited,
            gone: p.gone + s.gone,
        }
    }
}

impl Sender {
    /// A datagram that arrived on destination `dest`'s socket at `now`. A NACK for
    /// this session is answered: its datagrams are resent to that destination only,
    /// and lines the ring no longer holds are answered with one GONE. Anything else
    /// is counted in [`super::Stats::bad`]. Returns whether it was a NACK answered.
    pub fn handle_datagram(
        &mut self,
        dest: usize,
        bytes: &[u8],
        now: Instant,
        wall_us: u64,
    ) -> bool {
        self.queue.commit(&mut self.recovery, self.framer.session());
        let (Some(r), false) = (self.recovery.as_mut(), matches!(self.state, State::Closed)) else {
            self.stats.bad += 1;
            return false;
        };
        let plain: &[u8] = match &self.seal {
            Some(s) => {
                r.opened.clear();
                if seal::open(s.sealer.keys(), bytes, &mut r.opened).is_err() {
                    self.stats.bad += 1;
                    return false;
                }
                &r.opened
            }
            None => bytes,
        };
        let ranges = match Repr::parse(plain) {
            Ok(Repr {
                header,
                payload: Payload::Nack { ranges },
            }) if header.session == self.framer.session() => ranges,
            _ => {
                self.stats.bad += 1;
                return false;
            }
        };
        r.resend.clear();
        r.gone.clear();
        r.recovery
            .handle_nack(ranges, now, &mut r.resend, &mut r.gone);
        // Each datagram at most once per NACK (handle_nack sees to it).
        self.queue.push_resends(To::One(dest), &r.resend);
        // One GONE covers every range asked for below the ring's oldest line.
        let first = r.gone.iter().map(|g| g.0).min();
        let last = r.gone.iter().map(|g| g.1).max();
        if let (Some(first), Some(last)) = (first, last) {
            // A sealed session past its limit sends nothing more under its counter.
            let room = self.seal.as_ref().is_none_or(|s| s.counted < s.limit);
            if room && r.gone_bucket.take(now, 1) {
                self.stats.gone_sent += 1;
                // GONE is framed (counter, seal) like any other datagram, after
                // the lines framed before it.
                self.framer.flush(&mut self.outbox);
                self.send_outbox(To::All);
                self.framer.gone(first, last, wall_us, &mut self.outbox);
                self.send_outbox(To::One(dest));
            } else {
                self.stats.gone_limited += 1;
            }
        }
        if let State::Lingering { last_nack, .. } = &mut self.state {
            *last_nack = now;
        } else if self.seal.as_ref().is_some_and(|s| s.counted + 2 > s.limit) {
            self.roll_over(wall_us);
        }
        true
    }
}
