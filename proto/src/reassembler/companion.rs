//! The kernel's netconsole joined to a `--kmsg` session (`ncu-send --netconsole`):
//! the same kernel records by a second path, merged by the kernel's own numbers.
//! A record that came both ways is shown once; while ncu-send lives, the
//! netconsole's copies are held (ncu-send's own copy is expected); once it is gone
//! (silent, ended), the records only the netconsole delivered (typically the panic)
//! follow in order, marked `via_netconsole`, and a number missing on both paths is
//! reported once.

use super::foreign::kernel_line;
use super::*;

/// Most netconsole records held per session while ncu-send may still deliver
/// them; past it the oldest is delivered at once (never dropped).
const MAX_HELD: usize = 4096;

/// How the kernel's panic message begins (`panic()` in kernel/panic.c).
const PANIC_PREFIX: &[u8] = b"Kernel panic - not syncing";

impl Inner {
    /// One extended netconsole datagram from the address `session` claimed.
    pub(super) fn companion_datagram(
        &mut self,
        session: &mut Session,
        now: Instant,
        wall_us: u64,
        from: SocketAddr,
        record: &ExtendedRecord<'_>,
    ) {
        let companion = session.extra_mut().companion.get_or_insert_with(|| {
            Box::new(Companion {
                assembler: ExtendedAssembler::new(ExtendedConfig {
                    fragment_timeout: self.config.reorder_window * 2,
                    max_record_bytes: KERNEL_RECORD_MAX,
                    max_pending: 2,
                }),
                held: BTreeMap::new(),
                both: 0,
                tail: None,
                untold: None,
            })
        });
        let pushed = companion.assembler.push(record, now);
        if pushed.is_err() {
            self.corrupt(now, from, CorruptReason::Netconsole);
        }
        while let Some(record) = session
            .extra_mut()
            .companion
            .as_mut()
            .and_then(|c| c.assembler.poll_record())
        {
            self.companion_record(session, record, now, wall_us);
        }
    }

    fn companion_record(
        &mut self,
        session: &mut Session,
        record: KernelRecord,
        now: Instant,
        wall_us: u64,
    ) {
        let k = record.seq;
        let mut line = kernel_line(record);
        if let Some(meta) = line.kernel.as_mut() {
            meta.via_netconsole = true;
        }
        let pending = PendingLine {
            text: line.text,
            flags: line.flags,
            sent_at_us: None,
            received_at_us: wall_us,
            arrived: now,
            kernel: line.kernel,
            skipped: None,
        };
        let alive = session.fate == Fate::Running && !session.end_reported;
        let extra = session.extra_mut();
        let Some(companion) = extra.companion.as_mut() else {
            return;
        };
        if extra.kernel_next.is_some_and(|n| k < n) || companion.held.contains_key(&k) {
            companion.both += 1;
            return;
        }
        if alive {
            let cost = pending.held_cost();
            companion.held.insert(k, pending);
            let full = companion.held.len() > MAX_HELD;
            self.hold(session, cost, now);
            if full {
                if let Some((k, p)) = session
                    .extra_mut()
                    .companion
                    .as_mut()
                    .and_then(|c| c.held.pop_first())
                {
                    self.release(session, p.held_cost());
                    self.deliver_companion(session, k, p, false);
                }
            }
        } else {
            self.release_companion(session);
            self.deliver_companion(session, k, pending, true);
        }
    }

    /// ncu-send is about to deliver kernel record `k` itself: the netconsole's
    /// copies of records before it that ncu-send never delivered (lost on its path,
    /// or overwritten or left out on its side) are shown first, via netconsole, so
    /// that every record either path brought appears once, in the kernel's order.
    pub(super) fn before_kmsg(&mut self, session: &mut Session, k: u64) {
        let Some(companion) = session.extra_mut().companion.as_mut() else {
            return;
        };
        if companion
            .held
            .first_key_value()
            .is_none_or(|(&first, _)| first >= k)
        {
            return;
        }
        let later = companion.held.split_off(&k);
        let earlier = std::mem::replace(&mut companion.held, later);
        for (seq, line) in earlier {
            self.release(session, line.held_cost());
            self.deliver_companion(session, seq, line, false);
        }
    }

    /// ncu-send delivered kernel record `k` itself: copies held up to it came
    /// both ways.
    pub(super) fn kmsg_delivered(
        &mut self,
        session: &mut Session,
        k: u64,
        sent_at_us: Option<u64>,
    ) {
        session.extra_mut().kernel_next =
            Some(session.extra().kernel_next.map_or(k + 1, |n| n.max(k + 1)));
        session.extra_mut().last_kmsg = Some((k, sent_at_us));
        let Some(companion) = session.extra_mut().companion.as_mut() else {
            return;
        };
        let mut freed = 0;
        while let Some(entry) = companion.held.first_entry() {
            if *entry.key() > k {
                break;
            }
            freed += entry.remove().held_cost();
            companion.both += 1;
        }
        self.release(session, freed);
    }

    /// ncu-send is gone (silent, ended, or at exit): the held records only the
    /// netconsole delivered follow, in order.
    pub(super) fn release_companion(&mut self, session: &mut Session) {
        if session.extra().companion.is_none() {
            return;
        }
        let Some(held) = session
            .extra_mut()
            .companion
            .as_mut()
            .map(|c| std::mem::take(&mut c.held))
        else {
            return;
        };
        for (k, p) in held {
            self.release(session, p.held_cost());
            self.deliver_companion(session, k, p, true);
        }
    }

    /// Delivers record `k`, which only the netconsole brought. After ncu-send is
    /// gone (`after`): after a gap for what neither path delivered before it, and as
    /// part of the story's tail. While it lives, its own gaps were reported already.
    fn deliver_companion(&mut self, session: &mut Session, k: u64, line: PendingLine, after: bool) {
        let missing = match session.extra().kernel_next {
            Some(n) if after && k > n => {
                self.events.push_back(Event::Gap {
                    session: session.who.info(),
                    first: n,
                    last: k - 1,
                    kind: GapKind::KernelSeq,
                });
                k - n
            }
            _ => 0,
        };
        session.extra_mut().kernel_next =
            Some(session.extra().kernel_next.map_or(k + 1, |n| n.max(k + 1)));
        let last_kmsg = session.extra().last_kmsg;
        let silent = session.fate == Fate::Silent;
        if let Some(c) = session.extra_mut().companion.as_mut().filter(|_| after) {
            let text = &line.text[..line.text.len().min(LAST_TEXT_MAX)];
            let tail = c.tail.get_or_insert_with(|| NetconsoleTail {
                last_kmsg,
                first: k,
                ..NetconsoleTail::default()
            });
            tail.last = k;
            if silent {
                c.untold = Some(line.arrived);
            }
            tail.last_text = text.to_vec();
            if tail.panic.is_none() && text.starts_with(PANIC_PREFIX) {
                tail.panic = Some(text.to_vec());
            }
            tail.missing += missing;
        }
        session.lines += 1;
        self.events.push_back(Event::Line {
            session: session.who.info(),
            // Not numbered by ncu-send: its number is the kernel's.
            seq: 0,
            partial: line.flags & LINE_PARTIAL != 0,
            continuation: false,
            text: line.text,
            late: false,
            sent_at_us: None,
            received_at_us: line.received_at_us,
            kernel: line.kernel,
        });
    }
}
