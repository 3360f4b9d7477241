//! The budget's side in the reassembler: every byte held on behalf of a sender
//! is charged and refunded here, a session makes room within its own bound here,
//! and sessions are registered and forgotten here (see [`crate::budget`]; the
//! budget across sessions and retirement are the table's).

use super::*;

impl Inner {
    // ---- the budget: every byte held on behalf of a sender is charged here ----

    /// Charges `n` more held bytes (a waiting line, a fragment) to `session`.
    pub(super) fn hold(&mut self, session: &mut Session, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        let ip = session.who.ip();
        if session.extra().held_bytes == 0 {
            session.extra_mut().held_since = Some(now);
            self.budget.start_holding(ip, session.key(), now);
        }
        session.extra_mut().held_bytes += n;
        self.total_held_bytes += n;
        self.budget.charge(ip, n);
    }

    /// Refunds `n` held bytes of `session` (delivered, given up, dropped).
    pub(super) fn release(&mut self, session: &mut Session, n: usize) {
        if n == 0 {
            return;
        }
        let ip = session.who.ip();
        session.extra_mut().held_bytes -= n;
        self.total_held_bytes -= n;
        self.budget.refund(ip, n);
        if session.extra().held_bytes == 0 {
            if let Some(since) = session.extra_mut().held_since.take() {
                self.budget.stop_holding(ip, session.key(), since);
            }
        }
    }

    /// Brings the budget's charge for `session`'s own state up to date.
    pub(super) fn recharge(&mut self, session: &mut Session) {
        session.compact();
        // A session's state is far below 4 GiB (its parts are bounded).
        let cost = u32::try_from(session.state_cost()).unwrap_or(u32::MAX) as usize;
        let charged = session.state_bytes as usize;
        if cost == charged {
            return;
        }
        let ip = session.who.ip();
        match (session.first, cost > charged) {
            (true, true) => self.budget.charge_total(cost - charged),
            (true, false) => self.budget.refund_total(charged - cost),
            (false, true) => self.budget.charge(ip, cost - charged),
            (false, false) => self.budget.refund(ip, charged - cost),
        }
        session.state_bytes = cost as u32;
    }

    /// Makes room for `len` more held bytes in `session` within its own bound, by
    /// giving up its own holes. The budget across sessions is the table's, after the
    /// datagram ([`Reassembler::enforce_budget`]).
    pub(super) fn make_room(&mut self, session: &mut Session, len: usize) {
        while session.extra().held_bytes + len > self.config.max_pending_bytes && self.shed(session)
        {
        }
    }

    /// Gives up `session`'s oldest held work: its first hole (a gap, or a fragmented
    /// line at the hole), or fragments of lines already given up. Returns whether
    /// anything was freed.
    pub(super) fn shed(&mut self, session: &mut Session) -> bool {
        let before = session.extra().held_bytes;
        if session.first_seq().is_none() {
            self.resolve_join(session);
        }
        while session.extra().held_bytes == before {
            let first_fragment = session.extra().fragments.first_key_value().map(|(&k, _)| k);
            match first_fragment {
                Some(seq) if seq < session.next => self.drop_fragments(session, seq),
                _ if self.give_up_first_hole(session) => {}
                _ => {
                    // Nothing left to give up in order: what is left are fragments.
                    let all: Vec<u64> = session.extra().fragments.keys().copied().collect();
                    for seq in all {
                        self.drop_fragments(session, seq);
                    }
                    break;
                }
            }
        }
        session.extra().held_bytes < before
    }

    /// A session in the budget from now on (once in the table: whether it is the
    /// first of its source is known there).
    pub(super) fn register(&mut self, session: &mut Session) {
        if !session.first {
            self.budget.add_session(session.who.ip(), session.key());
        }
        self.recharge(session);
    }

    /// Forgets a session: its charges are refunded, its summary kept.
    pub(super) fn finish(&mut self, mut session: Session) {
        let held = session.extra().held_bytes;
        self.release(&mut session, held);
        let ip = session.who.ip();
        if session.first {
            self.budget.refund_total(session.state_bytes as usize);
        } else {
            self.budget.refund(ip, session.state_bytes as usize);
            self.budget.remove_session(ip);
        }
        if let Some(id) = session.key().ncu_id() {
            if let Some(name) = session.who.name() {
                let sender = (session.who.ip(), name.to_string());
                if self.senders.get(&sender) == Some(&id) {
                    self.senders.remove(&sender);
                }
            }
        }
        if self.config.max_finished_summaries > 0 {
            if self.finished.len() >= self.config.max_finished_summaries {
                self.finished.pop_front();
            }
            self.finished.push_back(session.summary());
        }
    }
}
