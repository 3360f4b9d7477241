//! ncu sessions: datagrams with their own numbers, sealed or not, and long
//! lines rebuilt from fragments.

use super::foreign::kernel_meta;
use super::*;

/// What an ncu datagram asks of the table.
pub(super) struct NcuOutcome {
    /// The same sender's previous session, to be marked restarted.
    pub(super) superseded: Option<u64>,
    /// A new claim: the kernel's netconsole of this session sends from here.
    pub(super) claim: Option<SocketAddr>,
}

impl Inner {
    // ---- ncu sessions ----

    /// A new ncu session for the first datagram seen of it. A name the datagram
    /// carries is learnt before `start` is reported; a session it supersedes (the
    /// same sender's previous run) is returned, to be marked restarted before this
    /// one's events.
    pub(super) fn new_ncu_session(
        &mut self,
        now: Instant,
        wall_us: u64,
        from: SocketAddr,
        repr: &Repr<'_>,
    ) -> (Session, Option<u64>) {
        let who = Who::new(repr.header.session, from, SourceKind::Ncu);
        self.stats.sessions += 1;
        let mut s = Session::new(who, Tick::of(self.started, now), wall_us);
        // HELLO, HEARTBEAT and END carry the name: learn it before `start` is
        // reported (HELLO starts the session when it is handled).
        let superseded = match repr.payload {
            Payload::Hello { name, .. }
            | Payload::Heartbeat { name }
            | Payload::End { name, .. } => self.learn_name(&mut s, name),
            _ => None,
        };
        let is_hello = matches!(repr.payload, Payload::Hello { .. });
        if !is_hello {
            let started_us = u64::from(wire::session_started_secs(repr.header.session)) * 1_000_000;
            let age = Duration::from_micros(repr.header.sent_at_us.saturating_sub(started_us));
            let uptime = now.saturating_duration_since(self.started);
            if repr.header.seq > 1 && age > uptime + JOIN_MARGIN {
                // Running since before this receiver: wait a reorder window for
                // the lowest line, then start there.
                s.extra_mut().joining_until = Some(now + self.config.reorder_window);
            } else {
                self.start(&mut s, 1, false);
            }
        }
        (s, superseded)
    }

    /// One ncu datagram for `session`. Returns what the table must act on: the
    /// session this one supersedes, when it learnt its name now (see
    /// [`Inner::learn_name`]), and the address its kernel's netconsole sends from,
    /// when it says so.
    pub(super) fn ncu_datagram(
        &mut self,
        session: &mut Session,
        now: Instant,
        wall_us: u64,
        from: SocketAddr,
        flags: u8,
        repr: Repr<'_>,
    ) -> NcuOutcome {
        let mut superseded = None;
        let mut claim = None;
        self.touch(session, now, wall_us, repr.header.seq);
        session.extra_mut().last_addr = Some(from);
        session.extra_mut().recovery |= flags & wire::FLAG_RECOVERY != 0;
        let sent_at = repr.header.sent_at_us;
        match repr.payload {
            Payload::Nack { .. } => {}
            Payload::Companion { source } => {
                if session.extra().companion_addr != Some(source) {
                    session.extra_mut().companion_addr = Some(source);
                    claim = Some(source);
                }
            }
            Payload::Gone { last } => {
                if last >= repr.header.seq && last > session.extra().gone_upto {
                    session.extra_mut().gone_upto = last;
                    // The sender no longer has these: report them now.
                    while session.first_seq().is_some()
                        && session.next <= session.extra().gone_upto
                        && self.give_up_first_hole_upto(session, last)
                    {}
                }
            }
            Payload::Hello { name, .. } => {
                superseded = self.learn_name(session, name);
                // A repeated HELLO is no line: `duplicates` counts lines only.
                if session.first_seq().is_none() {
                    self.start(session, repr.header.seq, false);
                }
            }
            Payload::Lines { lines, count } => {
                let mut seq = repr.header.seq;
                for (i, line) in lines.enumerate() {
                    let followed = i + 1 < usize::from(count);
                    let incoming = match line.flags & LINE_KMSG {
                        0 => IncomingLine {
                            seq,
                            text: self.text_buffer(line.text),
                            flags: line.flags,
                            sent_at_us: Some(sent_at),
                            kernel: None,
                            skipped: None,
                            followed,
                        },
                        _ => kmsg_line(seq, line.text, line.flags, sent_at, followed),
                    };
                    self.accept_line(session, incoming, now, wall_us);
                    seq = seq.saturating_add(1);
                }
            }
            Payload::Fragment {
                offset,
                total,
                line_flags,
                bytes,
            } => {
                let seq = repr.header.seq;
                if let Some(text) =
                    self.accept_fragment(session, seq, offset, total, line_flags, bytes, now, from)
                {
                    let incoming = match line_flags & LINE_KMSG {
                        0 => IncomingLine {
                            seq,
                            text,
                            flags: line_flags,
                            sent_at_us: Some(sent_at),
                            kernel: None,
                            skipped: None,
                            followed: false,
                        },
                        _ => kmsg_line(seq, &text, line_flags, sent_at, false),
                    };
                    self.accept_line(session, incoming, now, wall_us);
                }
            }
            Payload::Heartbeat { name } => {
                superseded = self.learn_name(session, name);
                self.learn_known_last(session, repr.header.seq, now);
            }
            Payload::End { name, reason } => {
                superseded = self.learn_name(session, name);
                // END is repeated while the sender lingers: no line, not a duplicate.
                if session.extra().end.is_none() {
                    session.extra_mut().end = Some((repr.header.seq, reason));
                    session.extra_mut().known_since = Some(now);
                    session.extra_mut().known_last =
                        session.extra().known_last.max(repr.header.seq);
                }
            }
        }
        if session.first_seq().is_none() && session.extra().pending.contains_key(&1) {
            self.start(session, 1, false);
        }
        self.after_input(session, now);
        NcuOutcome { superseded, claim }
    }

    pub(super) fn handle_sealed(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        // Without a key, a sealed session is reported once (rate limited like every
        // rejection), then counted quietly.
        let session_id = wire::Datagram::new_unchecked(bytes).session();
        if self.sealed_reported.len() >= MAX_SEALED_REPORTED {
            self.sealed_reported.clear();
        }
        if self.sealed_reported.insert(session_id) {
            self.corrupt(now, from, CorruptReason::SealedNoKey);
        } else {
            *self
                .stats
                .corrupt
                .entry(CorruptReason::SealedNoKey.as_str())
                .or_default() += 1;
        }
    }

    /// Records a datagram's arrival: resumes a silent session.
    pub(super) fn touch(&mut self, session: &mut Session, now: Instant, wall_us: u64, seq: u64) {
        session.last_rx = Tick::of(self.started, now);
        session.last_rx_wall = wall_us;
        if session.fate == Fate::Silent {
            session.fate = Fate::Running;
            self.events.push_back(Event::Resumed {
                session: session.who.info(),
                seq,
            });
        }
    }

    /// The sender's name, from HELLO, HEARTBEAT or END. When it names a sender
    /// whose newer session this is, returns the id of that sender's previous session
    /// (for the table to mark it restarted).
    pub(super) fn learn_name(&mut self, session: &mut Session, name: &str) -> Option<u64> {
        if session.who.name().map(|n| &**n) == Some(name) {
            return None;
        }
        session.who.set_name(name);
        let sender = (session.who.ip(), name.to_owned());
        let previous = self.senders.insert(sender, session.who.id);
        previous.filter(|&id| id != session.who.id)
    }

    pub(super) fn learn_known_last(&mut self, session: &mut Session, last: u64, now: Instant) {
        if last > session.extra().known_last {
            session.extra_mut().known_last = last;
            session.extra_mut().known_since = Some(now);
        }
    }

    pub(super) fn start(&mut self, session: &mut Session, first_seq: u64, joined: bool) {
        // ncu numbers lines from 1; the kernel numbers its records from 0.
        let first_seq = if session.who.kind == SourceKind::Ncu {
            first_seq.max(1)
        } else {
            first_seq
        };
        session.set_first_seq(first_seq);
        session.extra_mut().joining_until = None;
        session.joined = joined;
        session.next = first_seq;
        if joined && first_seq > 1 {
            session.extra_mut().lost_ranges.insert(1, first_seq - 1);
        }
        self.events.push_back(Event::Start {
            session: session.who.info(),
            first_seq,
            joined,
        });
        // Lines held while joining that are below the start are late; the rest flow.
        let below: Vec<u64> = session
            .extra()
            .pending
            .range(..first_seq)
            .map(|(&k, _)| k)
            .collect();
        for seq in below {
            if let Some(line) = session.extra_mut().pending.remove(&seq) {
                self.release(session, line.held_cost());
                self.deliver(session, seq, line, true);
            }
        }
        self.drain(session);
    }

    pub(super) fn resolve_join(&mut self, session: &mut Session) {
        if session.first_seq().is_some() {
            return;
        }
        let lowest = [
            session.extra().pending.first_key_value().map(|(&k, _)| k),
            session.extra().fragments.first_key_value().map(|(&k, _)| k),
        ]
        .into_iter()
        .flatten()
        .min();
        let first = lowest.unwrap_or(session.extra().known_last.saturating_add(1));
        self.start(session, first, first > 1);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn accept_fragment(
        &mut self,
        session: &mut Session,
        seq: u64,
        offset: u32,
        total: u32,
        flags: u8,
        bytes: &[u8],
        now: Instant,
        from: SocketAddr,
    ) -> Option<Vec<u8>> {
        let already_done = session.first_seq().is_some()
            && (seq < session.next && !session.extra().lost_ranges.contains(seq)
                || session.extra().pending.contains_key(&seq));
        if already_done {
            session.extra_mut().duplicates += 1;
            return None;
        }
        if total as usize > self.config.max_line_bytes {
            self.corrupt(now, from, CorruptReason::LineTooLong);
            return None;
        }
        if !session.extra().fragments.contains_key(&seq) {
            if session.extra().fragments.len() >= self.config.max_lines_in_fragments {
                // Too many long lines in flight: drop the oldest (it will be a gap).
                if let Some((&old, _)) = session.extra().fragments.first_key_value() {
                    self.drop_fragments(session, old);
                }
            }
            session.extra_mut().fragments.insert(
                seq,
                FragmentedLine {
                    bytes: ByteAssembler::new(),
                    total,
                    flags,
                    arrived: now,
                },
            );
        }
        let frag = session.extra().fragments.get(&seq)?;
        if frag.total != total || frag.flags != flags {
            self.corrupt(
                now,
                from,
                CorruptReason::Decode(DecodeError::FragmentOutOfRange),
            );
            return None;
        }
        // Room for what this piece can cost; making it may give up this very line.
        self.make_room(session, bytes.len() + PIECE_OVERHEAD);
        let frag = session.extra_mut().fragments.get_mut(&seq)?;
        let before = frag.bytes.held_cost();
        // The decoder checked offset + len <= total.
        if frag.bytes.insert(offset, bytes) == 0 {
            session.extra_mut().duplicates += 1;
            return None;
        }
        let cost = frag.bytes.held_cost() - before;
        let complete = frag.bytes.received() >= frag.total;
        self.hold(session, cost, now);
        if !complete {
            return None;
        }
        let frag = session.extra_mut().fragments.remove(&seq)?;
        self.release(session, frag.bytes.held_cost());
        Some(frag.bytes.into_bytes())
    }

    pub(super) fn drop_fragments(&mut self, session: &mut Session, seq: u64) {
        if let Some(frag) = session.extra_mut().fragments.remove(&seq) {
            self.release(session, frag.bytes.held_cost());
        }
    }
}

/// A line flagged [`LINE_KMSG`]: the kernel record it carries becomes the line's
/// text and kernel metadata, as for extended netconsole, with what was skipped
/// before it. A line that does not parse as a record stays a plain line.
fn kmsg_line(seq: u64, line: &[u8], flags: u8, sent_at_us: u64, followed: bool) -> IncomingLine {
    let plain = |text: &[u8]| IncomingLine {
        seq,
        text: text.to_vec(),
        flags: flags & !LINE_KMSG,
        sent_at_us: Some(sent_at_us),
        kernel: None,
        skipped: None,
        followed,
    };
    let Ok(record) = kmsg::parse_line(line) else {
        return plain(line);
    };
    let skipped = Skipped::parse(line);
    IncomingLine {
        seq,
        text: record.text.to_vec(),
        flags,
        sent_at_us: Some(sent_at_us),
        kernel: Some(Box::new(kernel_meta(
            record.level,
            record.facility,
            record.seq,
            record.ts_usec,
            record.cont,
            record.dict_pairs(),
        ))),
        skipped: (!skipped.is_empty()).then(|| Box::new(skipped)),
        followed,
    }
}
