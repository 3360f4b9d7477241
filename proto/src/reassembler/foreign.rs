//! Datagrams that are not ncu's: the kernel's netconsole (extended and plain) and
//! plain text (`nc -u`, `logger`), and rejections.

use super::*;

impl Inner {
    // ---- rejections ----

    pub(super) fn corrupt(&mut self, now: Instant, from: SocketAddr, reason: CorruptReason) {
        *self.stats.corrupt.entry(reason.as_str()).or_default() += 1;
        if self.corrupt_bucket.take(now, 1) {
            let suppressed = std::mem::take(&mut self.corrupt_suppressed);
            self.events.push_back(Event::Corrupt {
                addr: from,
                reason,
                suppressed,
            });
        } else {
            self.corrupt_suppressed += 1;
        }
    }

    // ---- netconsole and plain text ----

    /// One netconsole or text datagram for `session`: an extended netconsole
    /// record (`record`, as parsed), or text.
    pub(super) fn foreign_datagram(
        &mut self,
        session: &mut Session,
        record: Option<&ExtendedRecord<'_>>,
        now: Instant,
        wall_us: u64,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        let next = session.next;
        self.touch(session, now, wall_us, next);
        let pushed = match (record, session.who.kind) {
            (Some(record), SourceKind::KernelExtended) => {
                if let Some(whole) = KernelRecord::whole(record) {
                    // In one piece: straight to the ordering logic.
                    self.source_line(session, kernel_line(whole), now, wall_us);
                    self.after_input(session, now);
                    return;
                }
                let config = self.extended_config();
                let assembler = session.assembler.get_or_insert_with(|| {
                    Box::new(Assembler::Kernel(ExtendedAssembler::new(config)))
                });
                match assembler.as_mut() {
                    Assembler::Kernel(a) => a.push(record, now).is_ok(),
                    Assembler::Text(_) => false,
                }
            }
            (None, SourceKind::Text) => match session.assembler.as_deref_mut() {
                Some(Assembler::Text(joiner)) => {
                    joiner.push(bytes, now);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !pushed {
            self.corrupt(now, from, CorruptReason::Netconsole);
        }
        self.take_source_output(session, now, wall_us);
        self.after_input(session, now);
    }

    /// Moves complete records or lines out of a netconsole or text session's
    /// assembler into its ordering logic.
    pub(super) fn take_source_output(&mut self, session: &mut Session, now: Instant, wall_us: u64) {
        loop {
            let incoming = match session.assembler.as_deref_mut() {
                Some(Assembler::Kernel(a)) => match a.poll_record() {
                    Some(record) => kernel_line(record),
                    None => break,
                },
                // The receiver numbers a text source's lines, from 1, in the order
                // they are joined: every one is delivered at once, so the next is
                // one above the highest.
                Some(Assembler::Text(joiner)) => match joiner.poll_line() {
                    Some(line) => IncomingLine {
                        seq: session.highest + 1,
                        text: line.text,
                        flags: if line.partial { LINE_PARTIAL } else { 0 },
                        sent_at_us: None,
                        kernel: None,
                        skipped: None,
                        followed: false,
                    },
                    None => break,
                },
                None => break,
            };
            self.source_line(session, incoming, now, wall_us);
        }
    }

    /// One record or line of a netconsole or text session, in the order its
    /// source gave it.
    fn source_line(
        &mut self,
        session: &mut Session,
        incoming: IncomingLine,
        now: Instant,
        wall_us: u64,
    ) {
        if session.first_seq().is_none() {
            session.gap_kind = gap_kind_of(&incoming);
            self.start(session, incoming.seq, false);
        } else if self.is_reboot(session, &incoming) {
            self.reboot(session, incoming, now, wall_us);
            return;
        }
        if let Some(kernel) = &incoming.kernel {
            session.last_kernel_ts = session.last_kernel_ts.max(kernel.ts_usec);
        }
        self.accept_line(session, incoming, now, wall_us);
    }

    /// Lets a netconsole or text session's assembler give up what it holds (a line
    /// without newline, a record missing fragments) so that it is delivered.
    pub(super) fn flush_source(&mut self, session: &mut Session, now: Instant, wall_us: u64) {
        let flushed = session.assembler.as_mut().is_some_and(|a| a.flush());
        if flushed {
            self.take_source_output(session, now, wall_us);
        }
    }

    /// A kernel record numbered far below what was seen, with an earlier boot clock:
    /// the machine rebooted.
    pub(super) fn is_reboot(&self, session: &Session, incoming: &IncomingLine) -> bool {
        let Some(kernel) = &incoming.kernel else {
            return false;
        };
        incoming.seq.saturating_add(1) < session.next
            && kernel.ts_usec.saturating_add(1_000_000) < session.last_kernel_ts
    }

    /// Ends a kernel session as restarted and begins a new one with `first`.
    pub(super) fn reboot(
        &mut self,
        session: &mut Session,
        first: IncomingLine,
        now: Instant,
        wall_us: u64,
    ) {
        self.go_silent(session, SilentReason::Restarted, now, wall_us);
        let assembler = session.assembler.take();
        let mut fresh = self.new_local_session(session.who.addr(), session.who.kind, now, wall_us);
        fresh.assembler = assembler;
        fresh.slot = session.slot;
        fresh.first = session.first;
        let old = std::mem::replace(session, fresh);
        self.finish(old);
        self.register(session);
        session.gap_kind = gap_kind_of(&first);
        self.start(session, first.seq, false);
        if let Some(kernel) = &first.kernel {
            session.last_kernel_ts = kernel.ts_usec;
        }
        self.accept_line(session, first, now, wall_us);
    }

    pub(super) fn new_local_session(
        &mut self,
        from: SocketAddr,
        kind: SourceKind,
        now: Instant,
        wall_us: u64,
    ) -> Session {
        let id = self.next_local_id;
        self.next_local_id += 1;
        self.stats.sessions += 1;
        let who = Who::new(id, from, kind);
        let mut session = Session::new(who, Tick::of(self.started, now), wall_us);
        if kind == SourceKind::Text {
            session.assembler = Some(Box::new(Assembler::Text(PlainJoiner::new(PlainConfig {
                line_timeout: self.config.reorder_window,
                max_line_bytes: TEXT_LINE_MAX,
            }))));
        }
        session
    }
}

impl Inner {
    /// How a kernel session's assembler rebuilds fragmented records.
    fn extended_config(&self) -> ExtendedConfig {
        ExtendedConfig {
            fragment_timeout: self.config.reorder_window * 2,
            max_record_bytes: KERNEL_RECORD_MAX,
            max_pending: 2,
        }
    }
}

/// What a gap means in a session whose first record is `first`: it decides the
/// numbering, its msgid when the kernel sends one (gaps are then real losses),
/// else the kernel's seq (numbers of records below the console level never sent).
fn gap_kind_of(first: &IncomingLine) -> GapKind {
    match first.kernel.as_ref().is_some_and(|k| k.msgid.is_some()) {
        true => GapKind::Lost,
        false => GapKind::KernelSeq,
    }
}

/// The ordering logic's view of a kernel record.
pub(super) fn kernel_line(record: KernelRecord) -> IncomingLine {
    let flags = if record.is_complete() {
        0
    } else {
        LINE_PARTIAL
    };
    let meta = KernelMeta {
        msgid: record.msgid,
        ..kernel_meta(
            record.level,
            record.facility,
            record.seq,
            record.ts_usec,
            record.cont,
            record.dict_pairs(),
        )
    };
    IncomingLine {
        seq: record.msgid.unwrap_or(record.seq),
        flags,
        sent_at_us: None,
        kernel: Some(Box::new(meta)),
        text: record.text,
        skipped: None,
        followed: false,
    }
}

/// The `kernel` object of a record (netconsole's or `/dev/kmsg`'s): its numbers,
/// and its dictionary as text.
pub(super) fn kernel_meta(
    level: u8,
    facility: u8,
    seq: u64,
    ts_usec: u64,
    cont: bool,
    dict: DictPairs<'_>,
) -> KernelMeta {
    let fields = dict
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    KernelMeta {
        level,
        facility,
        seq,
        ts_usec,
        cont,
        msgid: None,
        fields,
        via_netconsole: false,
    }
}

/// No NUL, and at most one byte in 16 a control character other than tab, CR, LF.
pub(super) fn mostly_text(bytes: &[u8]) -> bool {
    let control = bytes
        .iter()
        .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f)
        .count();
    !bytes.contains(&0) && control * 16 <= bytes.len()
}
