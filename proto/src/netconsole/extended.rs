//! Extended netconsole records, rebuilt from fragments into owned
//! [`KernelRecord`]s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::assembler::ByteAssembler;

use super::record::parse_dec;

use super::*;

/// A complete (or given-up) kernel record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRecord {
    /// Kernel release prepended by netconsole's `r` option, if present.
    pub release: Option<Vec<u8>>,
    /// Syslog severity, 0 (emerg) to 7 (debug).
    pub level: u8,
    /// Syslog facility.
    pub facility: u8,
    /// printk sequence number (restarts on reboot; not deduplicated here).
    pub seq: u64,
    /// Monotonic timestamp in microseconds since boot.
    pub ts_usec: u64,
    /// Continuation hint (flag `c` or `+`), passed through unmerged.
    pub cont: bool,
    /// Message text with `\xNN` escapes as sent (see [`unescape`]), no newline.
    pub text: Vec<u8>,
    /// Raw dictionary lines (` KEY=VALUE\n`...); see [`KernelRecord::dict_pairs`].
    pub dict: Vec<u8>,
    /// Value of the last `msgid=` dictionary entry, when present and numeric.
    pub msgid: Option<u64>,
    /// Bytes of a fragmented record never received (0 when complete).
    pub missing: usize,
}

impl KernelRecord {
    fn new(meta: &ExtendedRecord<'_>, text: &[u8], dict: &[u8], missing: usize) -> Self {
        let msgid = DictPairs::new(dict)
            .filter(|(k, _)| *k == b"msgid")
            .last()
            .and_then(|(_, v)| parse_dec(v, 20).ok());
        Self {
            release: meta.release.map(<[u8]>::to_vec),
            level: meta.level,
            facility: meta.facility,
            seq: meta.seq,
            ts_usec: meta.ts_usec,
            cont: meta.cont,
            text: text.to_vec(),
            dict: dict.to_vec(),
            msgid,
            missing,
        }
    }

    /// A record that came in one piece (no `ncfrag`), as it is; `None` for a
    /// fragment, which an [`ExtendedAssembler`] rebuilds.
    pub fn whole(rec: &ExtendedRecord<'_>) -> Option<Self> {
        rec.frag
            .is_none()
            .then(|| Self::new(rec, rec.text, rec.dict, 0))
    }

    /// Whether every byte of the record arrived.
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// The syslog prefix value, `facility << 3 | level`.
    pub fn prefix(&self) -> u16 {
        u16::from(self.facility) << 3 | u16::from(self.level)
    }

    /// The dictionary's `(KEY, VALUE)` pairs, in order.
    pub fn dict_pairs(&self) -> DictPairs<'_> {
        DictPairs::new(&self.dict)
    }

    /// The value of the last dictionary entry named `key`.
    pub fn dict_get(&self, key: &[u8]) -> Option<&[u8]> {
        self.dict_pairs()
            .filter(|(k, _)| *k == key)
            .last()
            .map(|(_, v)| v)
    }
}

/// Splits a reassembled body at its first `\n` into text and dictionary.
fn split_body(body: &[u8]) -> (&[u8], &[u8]) {
    match body.iter().position(|&b| b == b'\n') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &[][..]),
    }
}

/// Limits for an [`ExtendedAssembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedConfig {
    /// Largest `ncfrag` total accepted; larger records are refused.
    pub max_record_bytes: usize,
    /// Time after a record's first fragment at which the missing rest is given up.
    pub fragment_timeout: Duration,
    /// Fragmented records in flight per source; a new one past this gives up the oldest.
    pub max_pending: usize,
}

impl Default for ExtendedConfig {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            fragment_timeout: DEFAULT_FRAGMENT_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

/// Identity of a fragmented record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FragKey {
    seq: u64,
    ts_usec: u64,
    total: u32,
}

/// A fragmented record being rebuilt.
#[derive(Debug)]
struct Pending {
    key: FragKey,
    release: Option<Vec<u8>>,
    level: u8,
    facility: u8,
    cont: bool,
    /// The bytes received so far (never a buffer of the declared total).
    body: ByteAssembler,
    deadline: Option<Instant>,
}

impl Pending {
    fn into_record(self) -> KernelRecord {
        let missing = (self.key.total.saturating_sub(self.body.received())) as usize;
        let body = self.body.into_bytes();
        let (text, dict) = split_body(&body);
        let meta = ExtendedRecord {
            release: self.release.as_deref(),
            level: self.level,
            facility: self.facility,
            seq: self.key.seq,
            ts_usec: self.key.ts_usec,
            cont: self.cont,
            frag: None,
            text: &[],
            dict: &[],
        };
        KernelRecord::new(&meta, text, dict, missing)
    }
}

/// Sans-IO per-source assembly of extended records into [`KernelRecord`]s.
///
/// Unfragmented records come out immediately; fragments are rebuilt by byte range
/// (any order, duplicates harmless) and come out when every byte has arrived. A
/// record still incomplete [`ExtendedConfig::fragment_timeout`] after its first
/// fragment, or evicted by a newer one past [`ExtendedConfig::max_pending`], comes
/// out anyway with the bytes that did arrive and [`KernelRecord::missing`] set (a
/// fragment arriving after that starts a new, likewise incomplete, record, so its
/// bytes are still delivered). Fragments are keyed by `(seq, ts_usec, total)`.
/// Held bytes never exceed `max_pending * max_record_bytes`. Records queue until
/// taken with [`ExtendedAssembler::poll_record`]; drain after every call.
#[derive(Debug)]
pub struct ExtendedAssembler {
    config: ExtendedConfig,
    pending: Vec<Pending>,
    recent: VecDeque<FragKey>,
    ready: VecDeque<KernelRecord>,
}

impl ExtendedAssembler {
    /// Creates an empty assembler.
    pub fn new(config: ExtendedConfig) -> Self {
        Self {
            config,
            pending: Vec::new(),
            recent: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// Takes in one parsed record received at `now`.
    ///
    /// Errors refuse a fragment (too large or out of range) and change no state.
    pub fn push(&mut self, rec: &ExtendedRecord<'_>, now: Instant) -> Result<(), NetconsoleError> {
        let Some(frag) = rec.frag else {
            self.ready
                .push_back(KernelRecord::new(rec, rec.text, rec.dict, 0));
            return Ok(());
        };
        let total = frag.total as usize;
        if total > self.config.max_record_bytes {
            return Err(NetconsoleError::RecordTooLarge);
        }
        let offset = frag.offset as usize;
        if offset >= total || rec.text.len() > total - offset {
            return Err(NetconsoleError::FragmentOutOfRange);
        }
        let key = FragKey {
            seq: rec.seq,
            ts_usec: rec.ts_usec,
            total: frag.total,
        };
        if self.recent.contains(&key) {
            // A late duplicate of a record already delivered.
            return Ok(());
        }
        let idx = match self.pending.iter().position(|p| p.key == key) {
            Some(i) => i,
            None => {
                if self.pending.len() >= self.config.max_pending.max(1) {
                    let oldest = self.pending.remove(0);
                    self.ready.push_back(oldest.into_record());
                }
                self.pending.push(Pending {
                    key,
                    release: rec.release.map(<[u8]>::to_vec),
                    level: rec.level,
                    facility: rec.facility,
                    cont: rec.cont,
                    body: ByteAssembler::new(),
                    deadline: now.checked_add(self.config.fragment_timeout),
                });
                self.pending.len() - 1
            }
        };
        let p = &mut self.pending[idx];
        p.body.insert(frag.offset, rec.text);
        if p.body.received() as usize == total {
            let done = self.pending.remove(idx);
            if self.recent.len() >= RECENT_KEYS {
                self.recent.pop_front();
            }
            self.recent.push_back(key);
            self.ready.push_back(done.into_record());
        }
        Ok(())
    }

    /// Takes the next finished record, if any.
    pub fn poll_record(&mut self) -> Option<KernelRecord> {
        let record = self.ready.pop_front();
        if self.ready.is_empty() && self.ready.capacity() > 0 {
            // An idle host's assembler holds no memory (a fleet has many).
            self.ready = VecDeque::new();
        }
        record
    }

    /// When [`ExtendedAssembler::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().filter_map(|p| p.deadline).min()
    }

    /// Gives up records whose timeout passed at `now`; returns how many.
    ///
    /// Given-up records are queued for [`ExtendedAssembler::poll_record`] with
    /// [`KernelRecord::missing`] non-zero.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let mut given_up = 0;
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline.is_some_and(|d| d <= now) {
                let p = self.pending.remove(i);
                self.ready.push_back(p.into_record());
                given_up += 1;
            } else {
                i += 1;
            }
        }
        given_up
    }

    /// Gives up every incomplete record now (e.g. at shutdown); returns how many.
    pub fn flush(&mut self) -> usize {
        let n = self.pending.len();
        for p in self.pending.drain(..) {
            self.ready.push_back(p.into_record());
        }
        n
    }

    /// Whether it holds nothing that a new assembler would not: no record being
    /// rebuilt, none waiting to be taken. (It forgets the keys of records it
    /// finished; a late duplicate fragment of one is then rebuilt again and given
    /// up, and the receiver's ordering counts it as a duplicate.)
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.ready.is_empty()
    }

    /// Body bytes currently held for incomplete records.
    pub fn held_bytes(&self) -> usize {
        self.pending.iter().map(|p| p.body.held_cost()).sum()
    }
}

impl Default for ExtendedAssembler {
    fn default() -> Self {
        Self::new(ExtendedConfig::default())
    }
}
