//! What a session's timers do when due ([`Inner::session_timeout`]), and
//! the NACKs they send.

use super::*;

impl Inner {
    /// Queues NACKs for the lines `session` is missing, oldest first: as many
    /// datagrams of [`wire::MAX_NACK_RANGES`] ranges as it takes, up to
    /// [`NACK_RANGES_PER_ROUND`] ranges, each datagram within the overall rate limit.
    pub(super) fn send_nack(&mut self, session: &mut Session, now: Instant, wall_us: u64) {
        session.extra_mut().last_nack = Some(now);
        let ranges = session.missing_ranges();
        if ranges.is_empty() {
            return;
        }
        for chunk in ranges.chunks(wire::MAX_NACK_RANGES) {
            if !self.nack_bucket.take(now, 1) {
                self.stats.nacks_suppressed += 1;
                return;
            }
            if let Some(&(first, count)) = chunk.last() {
                let end = first + u64::from(count) - 1;
                session.extra_mut().nack_horizon = session.extra().nack_horizon.max(end);
            }
            let bytes = self.nack_datagram(session.who.id, chunk, wall_us);
            self.stats.nacks_sent += 1;
            self.transmits.push_back(Transmit {
                to: session.extra().last_addr.unwrap_or(session.who.addr()),
                bytes,
            });
        }
    }

    /// One NACK datagram for `ranges` (sealed when this receiver has keys).
    pub(super) fn nack_datagram(
        &mut self,
        session: u64,
        ranges: &[(u64, u32)],
        wall_us: u64,
    ) -> Vec<u8> {
        // The counter of a NACK is random: several receivers may NACK one session
        // with one key in the same microsecond, and sealed nonces must not repeat.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let header = wire::Header {
            session,
            seq: 0,
            sent_at_us: wall_us,
            counter: self.rng as u32,
        };
        let mut bytes = Vec::with_capacity(wire::HEADER_LEN + 1 + 12 * ranges.len() + 16);
        wire::write_header(&mut bytes, wire::Kind::Nack, 0, 0, &header);
        wire::push_nack_ranges(&mut bytes, ranges);
        wire::finish_datagram(&mut bytes);
        if let Some(sealing) = &self.sealing {
            let mut sealed = Vec::with_capacity(bytes.len() + 16);
            seal::seal(&sealing.keys, &bytes, &mut sealed);
            bytes = sealed;
        }
        bytes
    }

    /// Acts on every timer of `session` that is due at `now`, in [`Timer::VALUES`]
    /// order (each looked at after the ones before it acted).
    pub(super) fn session_timeout(&mut self, session: &mut Session, now: Instant, wall_us: u64) {
        for timer in Timer::VALUES {
            if session
                .timer(timer, &self.config, self.started)
                .is_none_or(|due| due > now)
            {
                continue;
            }
            match timer {
                Timer::Source => {
                    let due = session
                        .assembler
                        .as_mut()
                        .is_some_and(|a| a.handle_timeout(now));
                    if due {
                        self.take_source_output(session, now, wall_us);
                    }
                }
                Timer::Join => self.resolve_join(session),
                Timer::Hole => {
                    while session
                        .timer(Timer::Hole, &self.config, self.started)
                        .is_some_and(|due| due <= now)
                    {
                        if !self.give_up_first_hole(session) {
                            break;
                        }
                    }
                }
                Timer::Nack => self.send_nack(session, now, wall_us),
                Timer::StaleFragments => {
                    let stale: Vec<u64> = session
                        .extra()
                        .fragments
                        .range(..session.next)
                        .filter(|(_, f)| f.arrived + 2 * self.config.reorder_window <= now)
                        .map(|(&k, _)| k)
                        .collect();
                    for seq in stale {
                        self.drop_fragments(session, seq);
                    }
                }
                Timer::EndWait => {
                    self.resolve_join(session);
                    self.give_up_all(session);
                }
                Timer::Dead => self.go_silent(session, SilentReason::DeadAfter, now, wall_us),
                // Forgetting takes the session out of the map: the caller does it.
                Timer::Forget => {}
            }
        }
        // END is reported once everything up to it is accounted for (a gap given up
        // above may be the last thing it waited for).
        self.maybe_end(session);
    }
}
