//! The budget's side in the reassembler: every byte held on behalf of a sender
//! is charged and refunded here, room is made here, and sessions are registered,
//! retired and forgotten here (see [`crate::budget`]).

use super::*;

impl Reassembler {
    // ---- the budget: every byte held on behalf of a sender is charged here ----

    /// Charges `n` more held bytes (a waiting line, a fragment) to `session`.
    pub(super) fn hold(&mut self, session: &mut Session, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        let ip = session.info.addr.ip();
        if session.held_bytes == 0 {
            session.held_since = Some(now);
            self.budget.start_holding(ip, session_key(session), now);
        }
        session.held_bytes += n;
        self.total_held_bytes += n;
        self.budget.charge(ip, n);
    }

    /// Refunds `n` held bytes of `session` (delivered, given up, dropped).
    pub(super) fn release(&mut self, session: &mut Session, n: usize) {
        if n == 0 {
            return;
        }
        let ip = session.info.addr.ip();
        session.held_bytes -= n;
        self.total_held_bytes -= n;
        self.budget.refund(ip, n);
        if session.held_bytes == 0 {
            if let Some(since) = session.held_since.take() {
                self.budget.stop_holding(ip, session_key(session), since);
            }
        }
    }

    /// Brings the budget's charge for `session`'s own state up to date.
    pub(super) fn recharge(&mut self, session: &mut Session) {
        let cost = session.state_cost();
        if cost == session.state_bytes {
            return;
        }
        let ip = session.info.addr.ip();
        if cost > session.state_bytes {
            self.budget.charge(ip, cost - session.state_bytes);
        } else {
            self.budget.refund(ip, session.state_bytes - cost);
        }
        session.state_bytes = cost;
    }

    /// Makes room for `len` more held bytes in `session`: within its own bound by
    /// giving up its own holes, then within the budget (see [`crate::budget`]).
    pub(super) fn make_room(&mut self, session: &mut Session, len: usize, now: Instant) {
        while session.held_bytes + len > self.config.max_pending_bytes && self.shed(session) {}
        self.enforce_budget(session, len, now);
    }

    /// Gives up held work, oldest first, from the source the budget names, until
    /// `extra` more bytes for `current` (the session being handled, out of the map)
    /// fit; a source holding only session state loses its oldest session.
    pub(super) fn enforce_budget(&mut self, current: &mut Session, extra: usize, now: Instant) {
        let ip = current.info.addr.ip();
        let current_key = session_key(current);
        let mut counted = false;
        while let Some(victim) = self.budget.victim(ip, extra) {
            if !counted {
                self.stats.held_limit_reached += 1;
                counted = true;
            }
            if let Some(key) = self.budget.oldest_holder(victim) {
                let freed = if key == current_key {
                    self.shed(current)
                } else if let Some(mut other) = self.sessions.remove(&key) {
                    let freed = self.shed(&mut other);
                    self.schedule(key, &mut other, now);
                    self.sessions.insert(key, other);
                    freed
                } else {
                    false
                };
                if freed {
                    continue;
                }
                break;
            }
            let sessions = &self.sessions;
            let oldest = self.budget.oldest_session(victim, current_key, |k| {
                *k == current_key || sessions.contains_key(k)
            });
            match oldest {
                Some(key) => self.retire(key),
                None => break,
            }
        }
    }

    /// Gives up `session`'s oldest held work: its first hole (a gap, or a fragmented
    /// line at the hole), or fragments of lines already given up. Returns whether
    /// anything was freed.
    pub(super) fn shed(&mut self, session: &mut Session) -> bool {
        let before = session.held_bytes;
        if session.first_seq.is_none() {
            self.resolve_join(session);
        }
        while session.held_bytes == before {
            let first_fragment = session.fragments.first_key_value().map(|(&k, _)| k);
            match first_fragment {
                Some(seq) if seq < session.next => self.drop_fragments(session, seq),
                _ if self.give_up_first_hole(session) => {}
                _ => {
                    // Nothing left to give up in order: what is left are fragments.
                    let all: Vec<u64> = session.fragments.keys().copied().collect();
                    for seq in all {
                        self.drop_fragments(session, seq);
                    }
                    break;
                }
            }
        }
        session.held_bytes < before
    }

    // ---- sessions: limits ----

    pub(super) fn enforce_session_limit(&mut self, now: Instant, keep: SessionKey) {
        if self.sessions.len() <= self.config.max_sessions {
            return;
        }
        // The oldest session of the source that costs the most: a flood of sessions
        // from one source retires its own, never a quiet host's.
        let Some(ip) = self.budget.heaviest() else {
            return;
        };
        let sessions = &self.sessions;
        let victim = self
            .budget
            .oldest_session(ip, keep, |k| sessions.contains_key(k))
            .or_else(|| {
                // That source has only the session being handled: the one idle
                // longest among a few others.
                self.sessions
                    .iter()
                    .filter(|(k, _)| **k != keep)
                    .take(32)
                    .min_by_key(|(_, s)| (s.fate == Fate::Running, s.last_rx))
                    .map(|(k, _)| *k)
            });
        if let Some(key) = victim {
            self.retire(key);
        }
        let _ = now;
    }

    /// Drops session `key` from memory to make room, reporting what it held.
    pub(super) fn retire(&mut self, key: SessionKey) {
        if let Some(mut session) = self.sessions.remove(&key) {
            self.resolve_join(&mut session);
            self.give_up_all(&mut session);
            self.stats.retired += 1;
            self.events.push_back(Event::Retired {
                session: session.info.clone(),
            });
            self.finish(session);
        }
    }

    /// A session in the budget from now on.
    pub(super) fn register(&mut self, session: &mut Session) {
        self.budget
            .add_session(session.info.addr.ip(), session_key(session));
        self.recharge(session);
    }

    /// Forgets a session: its charges are refunded, its summary kept.
    pub(super) fn finish(&mut self, mut session: Session) {
        let held = session.held_bytes;
        self.release(&mut session, held);
        let ip = session.info.addr.ip();
        self.budget.refund(ip, session.state_bytes);
        self.budget.remove_session(ip);
        if let SessionKey::Ncu(id) = session_key(&session) {
            let sender = (session.info.addr.ip(), session.info.name.clone());
            if self.senders.get(&sender) == Some(&id) {
                self.senders.remove(&sender);
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
