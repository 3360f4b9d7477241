//! Batches waiting to be sent, and what becomes of them after: DATA datagrams go to
//! the resend ring as sent (the whole buffer, moved, not copied), other buffers are
//! reused.

use std::collections::VecDeque;

use crate::framer::Outbox;
use crate::recovery::Slot;
use crate::seal::Sealer;
use crate::wire::{Datagram, Kind};

use super::answer::Recovering;
use super::To;

/// Empty batches kept for reuse.
const POOL: usize = 4;

/// Datagrams for one destination (or all), back to back.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) to: To,
    pub(super) bytes: Vec<u8>,
    pub(super) ends: Vec<usize>,
    /// The DATA datagrams' places and lines, for the ring of session `keep`.
    slots: Vec<Slot>,
    keep: Option<u64>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            to: To::All,
            bytes: Vec::new(),
            ends: Vec::new(),
            slots: Vec::new(),
            keep: None,
        }
    }
}

impl Batch {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.slots.clear();
        self.keep = None;
    }
}

/// The batches waiting, the one handed out last (kept for the ring once sent),
/// and empty ones to reuse.
#[derive(Debug, Default)]
pub(super) struct Queue {
    waiting: VecDeque<Batch>,
    handed: Option<Batch>,
    pool: Vec<Batch>,
}

impl Queue {
    /// The batch handed out last was sent: its DATA datagrams go to the ring when
    /// it is still `session`'s (a rollover started a new ring).
    pub(super) fn commit(&mut self, recovery: &mut Option<Recovering>, session: u64) {
        let Some(mut batch) = self.handed.take() else {
            return;
        };
        if let (Some(r), Some(keep)) = (recovery.as_mut(), batch.keep) {
            if keep == session && !batch.slots.is_empty() {
                let bytes = std::mem::take(&mut batch.bytes);
                let slots = std::mem::take(&mut batch.slots);
                (batch.bytes, batch.slots) = r.keep(bytes, slots);
            }
        }
        self.recycle(batch);
    }

    /// Hands out the oldest waiting batch.
    pub(super) fn next(&mut self) -> Option<&Batch> {
        let batch = self.waiting.pop_front()?;
        Some(self.handed.insert(batch))
    }

    /// The last datagram queued (END, right after queueing it).
    pub(super) fn last_datagram(&self) -> Option<&[u8]> {
        let batch = self.waiting.back()?;
        let end = *batch.ends.last()?;
        let start = batch.ends.len().checked_sub(2).map_or(0, |i| batch.ends[i]);
        Some(&batch.bytes[start..end])
    }

    fn fresh(&mut self, to: To) -> Batch {
        let mut batch = self.pool.pop().unwrap_or_default();
        batch.to = to;
        batch
    }

    fn recycle(&mut self, mut batch: Batch) {
        if self.pool.len() < POOL {
            batch.clear();
            self.pool.push(batch);
        }
    }

    fn enqueue(&mut self, batch: Batch) {
        if batch.ends.is_empty() {
            self.recycle(batch);
        } else {
            self.waiting.push_back(batch);
        }
    }

    /// Queues copies of `datagrams` for `to`, not kept (resends, END repeats).
    pub(super) fn push_copy(&mut self, to: To, datagram: &[u8]) {
        let mut batch = self.fresh(to);
        batch.bytes.extend_from_slice(datagram);
        batch.ends.push(datagram.len());
        self.enqueue(batch);
    }

    /// Queues the datagrams of `outbox` (copied, not kept: resends).
    pub(super) fn push_resends(&mut self, to: To, outbox: &Outbox) {
        let mut batch = self.fresh(to);
        batch.bytes.extend_from_slice(outbox.bytes());
        batch.ends.extend_from_slice(outbox.ends());
        self.enqueue(batch);
    }

    /// Moves the finished datagrams of `outbox` into a batch for `to` (the buffer
    /// itself, no copy; the outbox goes on with a recycled one), indexed for
    /// session `keep`'s ring when given.
    pub(super) fn push_outbox(
        &mut self,
        to: To,
        outbox: &mut Outbox,
        keep: Option<u64>,
        lines_sent: u64,
    ) {
        if outbox.is_empty() {
            return;
        }
        let mut batch = self.fresh(to);
        batch.ends.extend_from_slice(outbox.ends());
        batch.bytes = outbox.take_buffer(std::mem::take(&mut batch.bytes));
        batch.keep = keep;
        if keep.is_some() {
            index(&mut batch.slots, &batch.bytes, &batch.ends, lines_sent);
        }
        self.enqueue(batch);
    }

    /// Seals the finished datagrams of `outbox` into a batch for `to` and empties
    /// the outbox; returns how many were sealed.
    pub(super) fn push_sealed(
        &mut self,
        to: To,
        outbox: &mut Outbox,
        sealer: &mut Sealer,
        keep: Option<u64>,
        lines_sent: u64,
    ) -> usize {
        if outbox.is_empty() {
            return 0;
        }
        let mut batch = self.fresh(to);
        for d in outbox.datagrams() {
            sealer.seal(d, &mut batch.bytes);
            batch.ends.push(batch.bytes.len());
        }
        outbox.clear();
        let sealed = batch.ends.len();
        batch.keep = keep;
        if keep.is_some() {
            index(&mut batch.slots, &batch.bytes, &batch.ends, lines_sent);
        }
        self.enqueue(batch);
        sealed
    }
}

/// Indexes the DATA datagrams of one batch (`bytes`, each ending at `ends`) for
/// the resend ring: where each lies and the lines it carries. Lines are numbered in
/// order, so a datagram carries the lines from its own `seq` up to the next DATA
/// datagram's `seq` minus one (fragments: their line only), and the last one up to
/// `lines_sent`: two header fields per datagram, no parsing (a sealed datagram's
/// header is in the clear). HELLO, HEARTBEAT, END and GONE are not kept.
fn index(slots: &mut Vec<Slot>, bytes: &[u8], ends: &[usize], lines_sent: u64) {
    let mut pending: Option<(usize, usize, u64)> = None;
    let mut start = 0;
    for &end in ends {
        let view = Datagram::new_unchecked(&bytes[start..end]);
        if view.kind_byte() == Kind::Data as u8 {
            let seq = view.seq();
            if let Some((s, e, first)) = pending {
                let last = seq.saturating_sub(1).max(first);
                slots.push(Slot {
                    start: s,
                    end: e,
                    first,
                    last,
                });
            }
            pending = Some((start, end, seq));
        }
        start = end;
    }
    if let Some((s, e, first)) = pending {
        let last = lines_sent.max(first);
        slots.push(Slot {
            start: s,
            end: e,
            first,
            last,
        });
    }
}
