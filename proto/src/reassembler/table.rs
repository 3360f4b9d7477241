//! The session table: which session a datagram is for, the limits across sessions
//! (the memory budget, the number of sessions), retirement in a defined order
//! (least recently heard), and the walk over due timers. Each session's own work is
//! [`Inner`]'s, on the session borrowed in place.

use super::foreign::mostly_text;
use super::*;

impl Reassembler {
    /// Takes one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, wall_us: u64, from: SocketAddr, bytes: &[u8]) {
        self.inner.stats.datagrams += 1;
        self.inner.stats.bytes += bytes.len() as u64;
        if self.inner.sealing.is_some() {
            self.handle_with_key(now, wall_us, from, bytes);
            return;
        }
        if wire::has_magic(bytes) {
            match Repr::parse(bytes) {
                Ok(repr) => {
                    let flags = wire::Datagram::new_unchecked(bytes).flags();
                    self.handle_ncu(now, wall_us, from, flags, repr)
                }
                Err(DecodeError::Sealed) => self.inner.handle_sealed(now, from, bytes),
                Err(e) => self.inner.corrupt(now, from, CorruptReason::Decode(e)),
            }
            return;
        }
        self.handle_foreign(now, wall_us, from, bytes);
    }

    fn handle_ncu(
        &mut self,
        now: Instant,
        wall_us: u64,
        from: SocketAddr,
        flags: u8,
        repr: Repr<'_>,
    ) {
        let id = repr.header.session;
        let key = SessionKey::ncu(id);
        // NACKs go to senders; one here is misdirected (or a reflection attempt).
        if let Payload::Nack { .. } = repr.payload {
            self.inner.corrupt(now, from, CorruptReason::UnexpectedKind);
            return;
        }
        // One look in the index per datagram.
        let slot = match self.sessions.slot_of(&key) {
            Some(slot) => slot,
            // Only meaningful for a session this receiver knows.
            None if matches!(repr.payload, Payload::Gone { .. }) => return,
            None => {
                let (session, superseded) = self.inner.new_ncu_session(now, wall_us, from, &repr);
                if let Some(old) = superseded {
                    self.supersede(old, now, wall_us);
                }
                let session = self.sessions.insert(session);
                self.inner.register(session);
                session.slot
            }
        };
        let Some(session) = self.sessions.at_mut(slot) else {
            return;
        };
        let outcome = self
            .inner
            .ncu_datagram(session, now, wall_us, from, flags, repr);
        if let Some(source) = outcome.claim {
            // One claim per session: a new address replaces its earlier one.
            self.companions.retain(|_, claimer| *claimer != id);
            self.companions.insert(source, id);
        }
        if let Some(old) = outcome.superseded {
            self.supersede(old, now, wall_us);
        }
        self.after_datagram(from, key, now);
    }

    fn handle_with_key(&mut self, now: Instant, wall_us: u64, from: SocketAddr, bytes: &[u8]) {
        let Some(mut sealing) = self.inner.sealing.take() else {
            return;
        };
        sealing.opened.clear();
        let verdict = match seal::open(&sealing.keys, bytes, &mut sealing.opened) {
            Err(seal::OpenError::Malformed(e)) if wire::has_magic(bytes) => {
                Err(CorruptReason::Decode(e))
            }
            Err(_) => Err(CorruptReason::Auth),
            Ok(()) => match Repr::parse(&sealing.opened) {
                Err(e) => Err(CorruptReason::Decode(e)),
                Ok(repr) => match sealing.guard.check(&repr.header, wall_us) {
                    Ok(()) => {
                        let flags = wire::Datagram::new_unchecked(&sealing.opened).flags();
                        self.handle_ncu(now, wall_us, from, flags, repr);
                        Ok(())
                    }
                    Err(replay) if replay.is_duplicate() => {
                        // A byte-identical copy (--copies) or a replay within the window:
                        // dropped before it can make a dead sender look alive.
                        // Counted as the lines it carried again (none for HELLO,
                        // heartbeats and END).
                        let lines = match repr.payload {
                            Payload::Lines { count, .. } => u64::from(count),
                            Payload::Fragment { .. } => 1,
                            _ => 0,
                        };
                        if let Some(s) =
                            self.sessions.get_mut(&SessionKey::ncu(repr.header.session))
                        {
                            s.extra_mut().duplicates += lines;
                        }
                        Ok(())
                    }
                    Err(_) => Err(CorruptReason::Auth),
                },
            },
        };
        self.inner.sealing = Some(sealing);
        if let Err(reason) = verdict {
            self.inner.corrupt(now, from, reason);
        }
    }

    fn handle_foreign(&mut self, now: Instant, wall_us: u64, from: SocketAddr, bytes: &[u8]) {
        // Parsed once: an extended record is taken as parsed here.
        let record = netconsole::parse_extended(bytes).ok();
        let class = match record {
            Some(_) => netconsole::Kind::Extended,
            None => netconsole::classify(bytes),
        };
        // The kernel's netconsole of an ncu session that said where it sends from:
        // its records join that session (by exactly that address).
        if let (Some(&id), Some(record)) = (self.companions.get(&from), &record) {
            let key = SessionKey::ncu(id);
            if let Some(session) = self.sessions.get_mut(&key) {
                let ip = session.who.ip();
                self.inner
                    .companion_datagram(session, now, wall_us, from, record);
                self.inner.recharge(session);
                self.inner.schedule(session, now);
                self.enforce_budget(ip, key, now);
                return;
            }
        }
        let kind = match class {
            netconsole::Kind::Extended => SourceKind::KernelExtended,
            netconsole::Kind::Text => SourceKind::Text,
            // Plain netconsole sends the console's bytes as they are: once a source
            // has sent text, its datagrams with a few stray control or non-UTF-8 bytes
            // are still its console output (random bytes, or any NUL, are not).
            netconsole::Kind::Garbage(GarbageReason::Binary | GarbageReason::NotUtf8)
                if mostly_text(bytes)
                    && self
                        .sessions
                        .contains_key(&SessionKey::source(from, SourceKind::Text)) =>
            {
                SourceKind::Text
            }
            netconsole::Kind::Garbage(reason) => {
                let reason = match reason {
                    GarbageReason::Empty => CorruptReason::Empty,
                    GarbageReason::Binary => CorruptReason::Binary,
                    GarbageReason::NotUtf8 => CorruptReason::NotUtf8,
                };
                self.inner.corrupt(now, from, reason);
                return;
            }
        };
        let key = SessionKey::source(from, kind);
        let session = match self.sessions.slot_of(&key) {
            Some(slot) => self.sessions.at_mut(slot),
            None => {
                let session = self.inner.new_local_session(from, kind, now, wall_us);
                let session = self.sessions.insert(session);
                self.inner.register(session);
                Some(session)
            }
        };
        let Some(session) = session else {
            return;
        };
        self.inner
            .foreign_datagram(session, record.as_ref(), now, wall_us, from, bytes);
        self.after_datagram(from, key, now);
    }

    /// After a datagram for session `key`: the budget and the session limit.
    fn after_datagram(&mut self, from: SocketAddr, key: SessionKey, now: Instant) {
        self.enforce_budget(from.ip(), key, now);
        self.enforce_session_limit(key);
    }

    /// Marks session `old_id` (a sender's previous run, superseded by a new session
    /// of the same sender) silent as restarted.
    fn supersede(&mut self, old_id: u64, now: Instant, wall_us: u64) {
        let Some(old) = self.sessions.get_mut(&SessionKey::ncu(old_id)) else {
            return;
        };
        match old.fate {
            Fate::Running if old.extra().end.is_none() => {
                self.inner
                    .go_silent(old, SilentReason::Restarted, now, wall_us)
            }
            // Already reported silent: it stays so, now known to be restarted.
            Fate::Silent => old.fate = Fate::Restarted,
            _ => {}
        }
    }

    /// Gives up held work, oldest first, from the source the budget names, until
    /// what was charged for `ip` fits; a source holding only session state loses
    /// its oldest session but its first (not `keep`, the one just handled); when
    /// no source has either to give up and the total is over, the session heard
    /// least recently is retired.
    pub(super) fn enforce_budget(&mut self, ip: IpAddr, keep: SessionKey, now: Instant) {
        let mut counted = false;
        loop {
            let victim = self.inner.budget.victim(ip, 0);
            let over = self.inner.budget.total() > self.inner.budget.limit();
            if victim.is_none() && !over {
                break;
            }
            if !counted {
                self.inner.stats.held_limit_reached += 1;
                counted = true;
            }
            if let Some(key) = victim.and_then(|v| self.inner.budget.oldest_holder(v)) {
                let freed = match self.sessions.get_mut(&key) {
                    Some(session) => {
                        let freed = self.inner.shed(session);
                        self.inner.recharge(session);
                        self.inner.schedule(session, now);
                        freed
                    }
                    None => false,
                };
                if freed {
                    continue;
                }
                break;
            }
            let sessions = &self.sessions;
            let oldest = victim.and_then(|v| {
                self.inner
                    .budget
                    .oldest_session(v, keep, |k| sessions.contains_key(k))
            });
            // No source with work or a session but its first to give up (every
            // source one host, or spoofed addresses) while the total is over: the
            // session heard least recently goes.
            let key = match oldest {
                Some(key) => Some(key),
                None if over => self.least_recently_heard(keep),
                None => None,
            };
            match key {
                Some(key) => self.retire(key),
                None => break,
            }
        }
    }

    /// Past [`Config::max_sessions`]: retires the oldest session of the source that
    /// costs the most (a flood of sessions from one source retires its own, never a
    /// quiet host's, nor the one that source began with), or when that source has
    /// no other (but `keep`, the session just handled), the session heard least
    /// recently.
    fn enforce_session_limit(&mut self, keep: SessionKey) {
        if self.sessions.len() <= self.inner.config.max_sessions {
            return;
        }
        let sessions = &self.sessions;
        let of_heaviest = self.inner.budget.heaviest().and_then(|ip| {
            self.inner
                .budget
                .oldest_session(ip, keep, |k| sessions.contains_key(k))
        });
        if let Some(key) = of_heaviest.or_else(|| self.least_recently_heard(keep)) {
            self.retire(key);
        }
    }

    /// The session heard least recently, other than `keep`: the last current
    /// entry of the retirement order, which one walk over every session refills
    /// with the oldest [`RETIRE_ORDER_SHARE`]th of them when it runs out. (Every
    /// session not in it was heard after all in it were, when it was filled.)
    fn least_recently_heard(&mut self, keep: SessionKey) -> Option<SessionKey> {
        for walk in [false, true] {
            if walk {
                self.fill_retire_order();
            }
            while let Some(&(heard, slot)) = self.retire_order.last() {
                match self.sessions.at(slot) {
                    Some(s) if s.last_rx == heard && s.key() != keep => return Some(s.key()),
                    _ => self.retire_order.pop(),
                };
            }
        }
        None
    }

    /// Puts the oldest [`RETIRE_ORDER_SHARE`]th of the sessions (at least one) in
    /// the retirement order, the least recently heard last.
    fn fill_retire_order(&mut self) {
        let mut all: Vec<(Tick, Slot)> =
            self.sessions.iter().map(|s| (s.last_rx, s.slot)).collect();
        let share = (all.len() / RETIRE_ORDER_SHARE).max(1);
        if share < all.len() {
            all.select_nth_unstable(share);
            all.truncate(share);
        }
        all.sort_unstable_by(|a, b| b.cmp(a));
        self.retire_order = all;
    }

    /// Drops session `key` from memory to make room, reporting what it held.
    fn retire(&mut self, key: SessionKey) {
        if let Some(mut session) = self.sessions.remove(&key) {
            self.forget_claim(&session);
            self.inner.resolve_join(&mut session);
            self.inner.give_up_all(&mut session);
            self.inner.stats.retired += 1;
            self.inner.events.push_back(Event::Retired {
                session: session.who.info(),
            });
            self.inner.finish(session);
        }
    }

    /// Fires every deadline that is due at `now`: gaps given up on, joins resolved,
    /// sessions gone silent.
    pub fn handle_timeout(&mut self, now: Instant, wall_us: u64) {
        // Only sessions with a deadline due are visited: the cost follows the work,
        // not the number of sessions.
        let tick = Tick::of(self.inner.started, now);
        while let Some(&Reverse(next)) = self.inner.timers.peek() {
            let (due, slot) = (next.at(), next.slot());
            if due > tick {
                break;
            }
            self.inner.timers.pop();
            let Some(session) = self.sessions.at_mut(slot) else {
                continue;
            };
            if session.scheduled != due {
                continue; // a stale entry
            }
            session.scheduled = Tick::NONE;
            self.inner.session_timeout(session, now, wall_us);
            self.inner.recharge(session);
            let forget = session
                .timer(Timer::Forget, &self.inner.config, self.inner.started)
                .is_some_and(|due| due <= now);
            if forget && session.extra().pending.is_empty() && session.extra().fragments.is_empty()
            {
                let key = session.key();
                if let Some(session) = self.sessions.remove(&key) {
                    self.forget_claim(&session);
                    self.inner.finish(session);
                }
                continue;
            }
            self.inner.schedule(session, now);
        }
    }

    /// Gives up every hole in every session now (at exit), so that the events say
    /// exactly which lines were lost. Sessions stay as they are otherwise.
    ///
    /// Sessions are visited in the order they began (first datagram, then key), so
    /// the events are the same for the same inputs and times.
    pub fn flush(&mut self, now: Instant, wall_us: u64) {
        let mut keys: Vec<(u64, SessionKey)> = self
            .sessions
            .iter()
            .map(|s| (s.first_rx_wall, s.key()))
            .collect();
        keys.sort_unstable();
        for (_, key) in keys {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            self.inner.flush_source(session, now, wall_us);
            self.inner.resolve_join(session);
            self.inner.give_up_all(session);
        }
    }
}

impl Reassembler {
    /// A session leaving memory takes its netconsole claim with it.
    fn forget_claim(&mut self, session: &Session) {
        if let Some(addr) = session.extra().companion_addr {
            if self.companions.get(&addr) == Some(&session.who.id) {
                self.companions.remove(&addr);
            }
        }
    }
}

impl Inner {
    /// Makes sure `session`'s next deadline is in the timers (an earlier entry that
    /// turns out early is harmless: the session is visited and rescheduled).
    pub(super) fn schedule(&mut self, session: &mut Session, now: Instant) {
        if let Some(deadline) = session.deadline(&self.config, self.started) {
            // A deadline already past is handled at the next turn.
            let deadline = Tick::of(self.started, deadline.max(now));
            if deadline < session.scheduled {
                session.scheduled = deadline;
                self.timers.push(Reverse(Due {
                    at: deadline,
                    slot: session.slot,
                }));
            }
        }
    }
}
