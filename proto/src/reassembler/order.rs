//! The ordering logic every kind of session shares: lines held until the ones
//! before them came, gaps given up, END and silence reported.

use super::*;

impl Inner {
    // ---- the ordering logic shared by every kind of session ----

    pub(super) fn accept_line(
        &mut self,
        session: &mut Session,
        line: IncomingLine,
        now: Instant,
        wall_us: u64,
    ) {
        let seq = line.seq;
        let pending = PendingLine {
            text: line.text,
            flags: line.flags,
            sent_at_us: line.sent_at_us,
            received_at_us: wall_us,
            arrived: now,
            kernel: line.kernel,
            skipped: line.skipped,
        };
        let started = session.first_seq().is_some();
        let is_late = started && seq < session.next;
        if is_late && !session.extra().lost_ranges.contains(seq)
            || session.extra().pending.contains_key(&seq)
        {
            session.extra_mut().duplicates += 1;
            return;
        }
        if seq < session.highest {
            session.extra_mut().reordered += 1;
            if !is_late && seq <= session.extra().nack_horizon {
                session.extra_mut().recovered += 1;
            }
        }
        if seq >= session.highest {
            session.highest = seq;
            // The quoted last line, unless a later line of the same datagram follows.
            if !line.followed {
                session.set_last_line(seq, &pending.text, pending.sent_at_us);
            }
        }
        if is_late {
            session.extra_mut().lost_ranges.remove(seq);
            self.deliver(session, seq, pending, true);
            return;
        }
        if session.first_seq().is_some() && seq == session.next {
            self.deliver(session, seq, pending, false);
            session.next += 1;
            self.drain(session);
            return;
        }
        let len = pending.held_cost();
        self.make_room(session, len);
        if session.first_seq().is_some() && seq <= session.next {
            // Room was made by giving up the lines before this one (or this one).
            if seq == session.next {
                self.deliver(session, seq, pending, false);
                session.next += 1;
                self.drain(session);
            } else {
                session.extra_mut().lost_ranges.remove(seq);
                self.deliver(session, seq, pending, true);
            }
            return;
        }
        self.hold(session, len, now);
        session.extra_mut().pending.insert(seq, pending);
        if session.first_seq().is_none()
            && session.extra().pending.len() as u64 > self.config.max_pending_lines
        {
            self.resolve_join(session);
        }
        if session.first_seq().is_some() {
            // A jump far ahead gives up the lines in between at once.
            while seq.saturating_sub(session.next) > self.config.max_pending_lines
                || session.extra().pending.len() as u64 > self.config.max_pending_lines
            {
                self.give_up_first_hole(session);
            }
        }
    }

    pub(super) fn deliver(
        &mut self,
        session: &mut Session,
        seq: u64,
        line: PendingLine,
        late: bool,
    ) {
        if let Some(skipped) = &line.skipped {
            self.kernel_skipped(session, skipped);
        }
        // A record ncu-send delivered itself (`--kmsg`): the netconsole's copy of it
        // is not shown again.
        let kmsg = match (&line.kernel, session.who.kind) {
            (Some(k), SourceKind::Ncu) => Some((k.seq, line.sent_at_us)),
            _ => None,
        };
        if let Some((k, _)) = kmsg {
            self.before_kmsg(session, k);
        }
        session.lines += 1;
        if late {
            session.extra_mut().late += 1;
            if seq >= session.first_seq().unwrap_or(0) {
                let extra = session.extra_mut();
                extra.lost = extra.lost.saturating_sub(1);
            }
        }
        self.events.push_back(Event::Line {
            session: session.who.info(),
            seq,
            partial: line.flags & LINE_PARTIAL != 0,
            continuation: line.flags & LINE_CONTINUATION != 0,
            text: line.text,
            late,
            sent_at_us: line.sent_at_us,
            received_at_us: line.received_at_us,
            kernel: line.kernel,
        });
        if let Some((k, sent_at)) = kmsg {
            self.kmsg_delivered(session, k, sent_at);
        }
    }

    /// A `--kmsg` record says what the kernel skipped before it: overwritten ranges
    /// are reported as gaps of their own kind (in kernel numbers), filtered records
    /// only counted.
    fn kernel_skipped(&mut self, session: &mut Session, skipped: &Skipped) {
        session.extra_mut().kernel_filtered += skipped.filtered;
        for &(first, last) in skipped.overwritten() {
            session.extra_mut().kernel_overwritten += last - first + 1;
            let ranges = &mut session.extra_mut().kernel_overwritten_ranges;
            let full = ranges.len() >= MAX_OVERWRITTEN_RANGES;
            match ranges.last_mut() {
                Some(r) if full => r.1 = last,
                _ => ranges.push((first, last)),
            }
            self.events.push_back(Event::Gap {
                session: session.who.info(),
                first,
                last,
                kind: GapKind::Overwritten,
            });
        }
    }

    /// Delivers every held line that is next in order.
    pub(super) fn drain(&mut self, session: &mut Session) {
        // Read first: a session holding nothing is not given its `Extra` here.
        while session.extra().pending.first_key_value().map(|(&k, _)| k) == Some(session.next) {
            let Some(line) = session.extra_mut().pending.pop_first().map(|(_, l)| l) else {
                break;
            };
            self.release(session, line.held_cost());
            let seq = session.next;
            self.deliver(session, seq, line, false);
            session.next += 1;
        }
    }

    /// Reports the hole at `next` as lost and moves on. Returns false when there is
    /// no hole to give up.
    pub(super) fn give_up_first_hole(&mut self, session: &mut Session) -> bool {
        self.give_up_first_hole_upto(session, u64::MAX)
    }

    /// [`Reassembler::give_up_first_hole`], but no further than line `limit`.
    pub(super) fn give_up_first_hole_upto(&mut self, session: &mut Session, limit: u64) -> bool {
        if session.first_seq().is_none() || session.next > limit {
            return false;
        }
        let next = session.next;
        let last = if session.extra().fragments.contains_key(&next) {
            // Kept a while longer (see `session_timeout`): late fragments may still
            // complete it, and it is then delivered late.
            next
        } else {
            let after = [
                session.extra().pending.first_key_value().map(|(&k, _)| k),
                session
                    .extra()
                    .fragments
                    .range(next..)
                    .next()
                    .map(|(&k, _)| k),
            ]
            .into_iter()
            .flatten()
            .min();
            match after {
                Some(k) => k - 1,
                None if session.extra().known_last >= next => session.extra().known_last,
                None => return false,
            }
        };
        let last = last.min(limit);
        let count = last - next + 1;
        if session.gap_kind == GapKind::Lost {
            session.extra_mut().lost += count;
            session.extra_mut().lost_ranges.insert(next, last);
            if session.extra().lost_ranges.len() > MAX_LOST_RANGES {
                session.extra_mut().lost_ranges.pop_first();
            }
        } else {
            session.extra_mut().kernel_seq_skipped += count;
        }
        self.events.push_back(Event::Gap {
            session: session.who.info(),
            first: next,
            last,
            kind: session.gap_kind,
        });
        session.next = last + 1;
        self.drain(session);
        true
    }

    pub(super) fn give_up_all(&mut self, session: &mut Session) {
        while self.give_up_first_hole(session) {}
        self.release_companion(session);
        let stale: Vec<u64> = session.extra().fragments.keys().copied().collect();
        for seq in stale {
            self.drop_fragments(session, seq);
        }
    }

    /// After a datagram: report END when everything up to it is accounted for.
    pub(super) fn after_input(&mut self, session: &mut Session, now: Instant) {
        self.maybe_end(session);
        self.recharge(session);
        self.schedule(session, now);
    }

    pub(super) fn maybe_end(&mut self, session: &mut Session) {
        let Some((last_seq, reason)) = session.extra().end else {
            return;
        };
        if session.end_reported || session.first_seq().is_none() || session.next <= last_seq {
            return;
        }
        session.end_reported = true;
        session.fate = Fate::Ended;
        self.release_companion(session);
        self.events.push_back(Event::End {
            session: session.who.info(),
            last_seq,
            lines: last_seq,
            lost: session.extra().lost,
            reason,
        });
    }

    pub(super) fn go_silent(
        &mut self,
        session: &mut Session,
        reason: SilentReason,
        now: Instant,
        wall_us: u64,
    ) {
        self.flush_source(session, now, wall_us);
        self.resolve_join(session);
        self.give_up_all(session);
        session.fate = match reason {
            SilentReason::DeadAfter => Fate::Silent,
            SilentReason::Restarted => Fate::Restarted,
        };
        let (last_seq, last_text, last_sent_at_us) = match session.last_line() {
            Some((seq, text, sent)) => (seq, Some(text.to_vec()), sent),
            None => (0, None, None),
        };
        let netconsole = session
            .extra
            .as_mut()
            .and_then(|e| e.companion.as_mut())
            .and_then(|c| {
                c.untold = None;
                c.tail.clone()
            });
        let netconsole = netconsole.map(Box::new);
        self.events.push_back(Event::Silent {
            session: session.who.info(),
            last_seq,
            last_text,
            last_sent_at_us,
            last_received_at_us: session.last_rx_wall,
            reason,
            netconsole,
        });
    }
}
