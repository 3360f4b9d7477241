//! The receiver's one memory budget: everything held on behalf of senders (lines
//! waiting for a hole, fragments, partial text, per-session state), counted per
//! source IP address and in total, and who gives up what when it is full.
//!
//! This is bookkeeping only; the [`Reassembler`](crate::reassembler::Reassembler)
//! charges and refunds it on every path that holds bytes, and when
//! [`Budget::victim`] names a source, gives up that source's oldest incomplete work
//! ([`Budget::oldest_holder`]) or, when it holds only session state, retires its
//! oldest session but the one it began with ([`Budget::oldest_session`]). A flood
//! from one source therefore sheds its own work first and cannot evict a quiet
//! host's tail, nor the session its own address had before the flood.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

/// Default budget (`--max-held`): 64 MiB, safe on a 1 GB machine.
pub const DEFAULT_MAX_HELD: usize = 64 << 20;

/// What one source holds: 24 bytes, and no allocation while it has one session
/// holding nothing (a fleet has many such sources).
#[derive(Debug)]
struct Load<K> {
    /// Bytes charged: work plus session state.
    bytes: usize,
    /// Live sessions.
    live: u32,
    /// Its sessions after the one it began with, and those holding work, when
    /// there are any.
    more: Option<Box<More<K>>>,
}

/// A source's sessions after its first, and those holding work.
#[derive(Debug)]
struct More<K> {
    /// Sessions holding work, oldest holder first: (holding since, key).
    holders: BTreeSet<(Instant, K)>,
    /// Live sessions begun while the source had one already, oldest first; may
    /// hold keys of sessions gone (skipped and compacted lazily). A source's first
    /// session is not among them: a flood from one address gives up its own later
    /// sessions, and the one that was there before it stays.
    sessions: VecDeque<K>,
}

impl<K: Copy + Ord> Load<K> {
    fn more(&mut self) -> &mut More<K> {
        self.more.get_or_insert_with(|| {
            Box::new(More {
                holders: BTreeSet::new(),
                sessions: VecDeque::new(),
            })
        })
    }

    fn holds_work(&self) -> bool {
        self.more.as_ref().is_some_and(|m| !m.holders.is_empty())
    }

    /// Gives `more` back when it holds nothing.
    fn compact(&mut self) {
        if self
            .more
            .as_ref()
            .is_some_and(|m| m.holders.is_empty() && m.sessions.is_empty())
        {
            self.more = None;
        }
    }
}

/// A source address as the budget keys it: 16 bytes (IPv4 mapped), where an
/// `IpAddr` takes 17 and pads its entry to 8 more.
fn source(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address of a budget key.
fn address(key: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Per-source and total charges, bounded by a limit; see the module doc.
#[derive(Debug)]
pub struct Budget<K> {
    limit: usize,
    per_source: usize,
    total: usize,
    sources: HashMap<[u8; 16], Load<K>>,
    /// The sources with more than one session or with work held (those with
    /// `more`): the only ones [`Budget::heaviest`] looks at, so that its cost
    /// follows them and not a fleet of one-session hosts (or spoofed addresses).
    busy: HashSet<[u8; 16]>,
    /// How often the budget was full and something was given up.
    reached: u64,
}

impl<K: Copy + Ord + Hash> Budget<K> {
    /// A budget of `limit` bytes in total, of which one source may use half.
    pub fn new(limit: usize) -> Budget<K> {
        Budget {
            limit,
            per_source: limit / 2,
            total: 0,
            sources: HashMap::new(),
            busy: HashSet::new(),
            reached: 0,
        }
    }

    /// The limit in total.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged in total.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes charged to `ip`.
    pub fn of(&self, ip: IpAddr) -> usize {
        self.sources.get(&source(ip)).map_or(0, |l| l.bytes)
    }

    /// How many times something was given up because the budget was full.
    pub fn reached(&self) -> u64 {
        self.reached
    }

    /// Counts one time the budget was full.
    pub fn note_reached(&mut self) {
        self.reached += 1;
    }

    fn load(&mut self, ip: IpAddr) -> &mut Load<K> {
        self.sources.entry(source(ip)).or_insert_with(|| Load {
            bytes: 0,
            live: 0,
            more: None,
        })
    }

    fn forget_if_empty(&mut self, ip: IpAddr) {
        let key = source(ip);
        if self
            .sources
            .get(&key)
            .is_some_and(|l| l.bytes == 0 && l.live == 0 && !l.holds_work())
        {
            self.sources.remove(&key);
        }
        self.note_busy(key);
    }

    /// Keeps `busy` in step with whether source `key` has `more`.
    fn note_busy(&mut self, key: [u8; 16]) {
        if self.sources.get(&key).is_some_and(|l| l.more.is_some()) {
            self.busy.insert(key);
        } else {
            self.busy.remove(&key);
        }
    }

    /// A new session of `ip`.
    pub fn add_session(&mut self, ip: IpAddr, key: K) {
        let load = self.load(ip);
        if load.live > 0 {
            load.more().sessions.push_back(key);
        }
        load.live += 1;
        self.note_busy(source(ip));
    }

    /// A session of `ip` is gone (its charges refunded before).
    pub fn remove_session(&mut self, ip: IpAddr) {
        if let Some(load) = self.sources.get_mut(&source(ip)) {
            load.live = load.live.saturating_sub(1);
        }
        self.forget_if_empty(ip);
    }

    /// Charges `n` bytes to `ip`.
    pub fn charge(&mut self, ip: IpAddr, n: usize) {
        self.load(ip).bytes += n;
        self.total += n;
    }

    /// Refunds `n` bytes charged to `ip` before.
    pub fn refund(&mut self, ip: IpAddr, n: usize) {
        if let Some(load) = self.sources.get_mut(&source(ip)) {
            load.bytes = load.bytes.saturating_sub(n);
        }
        self.total = self.total.saturating_sub(n);
        self.forget_if_empty(ip);
    }

    /// Session `key` of `ip` holds work since `since`.
    pub fn start_holding(&mut self, ip: IpAddr, key: K, since: Instant) {
        self.load(ip).more().holders.insert((since, key));
        self.note_busy(source(ip));
    }

    /// Session `key` of `ip`, holding since `since`, holds no work any more.
    pub fn stop_holding(&mut self, ip: IpAddr, key: K, since: Instant) {
        if let Some(load) = self.sources.get_mut(&source(ip)) {
            if let Some(more) = &mut load.more {
                more.holders.remove(&(since, key));
            }
            load.compact();
        }
        self.forget_if_empty(ip);
    }

    /// The source to give something up from before `extra` more bytes are charged
    /// to `ip`: `ip` itself when it would pass its share (half the limit), else the
    /// heaviest source when the total would pass the limit; `None` when there is
    /// room.
    pub fn victim(&self, ip: IpAddr, extra: usize) -> Option<IpAddr> {
        // No source holds more than all of them: the common case needs no lookup.
        if self.total + extra <= self.per_source {
            return None;
        }
        if self.of(ip) + extra > self.per_source {
            return Some(ip);
        }
        if self.total + extra <= self.limit {
            return None;
        }
        self.heaviest()
    }

    /// Of the sources with more than one session or with work held, the one
    /// charged the most (a source with one session and no work has nothing to give
    /// up but that session: the caller retires the least recently heard instead).
    pub fn heaviest(&self) -> Option<IpAddr> {
        self.busy
            .iter()
            .filter_map(|addr| Some((self.sources.get(addr)?.bytes, *addr)))
            .max()
            .map(|(_, addr)| address(addr))
    }

    /// The session of `ip` that has held work the longest.
    pub fn oldest_holder(&self, ip: IpAddr) -> Option<K> {
        let more = self.sources.get(&source(ip))?.more.as_ref()?;
        more.holders.first().map(|&(_, key)| key)
    }

    /// The oldest live session of `ip` other than `except` and other than the one
    /// `ip` began with (`None` for a source with one session); `is_live` tells
    /// which remembered keys are still sessions.
    pub fn oldest_session(
        &mut self,
        ip: IpAddr,
        except: K,
        is_live: impl Fn(&K) -> bool,
    ) -> Option<K> {
        let load = self.sources.get_mut(&source(ip))?;
        let live = load.live as usize;
        let more = load.more.as_mut()?;
        while more.sessions.front().is_some_and(|k| !is_live(k)) {
            more.sessions.pop_front();
        }
        if more.sessions.len() > 2 * live + 16 {
            more.sessions.retain(|k| is_live(k));
        }
        let found = more
            .sessions
            .iter()
            .copied()
            .find(|&k| k != except && is_live(&k));
        load.compact();
        self.note_busy(source(ip));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_source_past_its_share_pays_itself_before_anyone_else() {
        let t = Instant::now();
        let mut b: Budget<u32> = Budget::new(1000);
        b.charge(ip(1), 100);
        b.add_session(ip(2), 2);
        b.start_holding(ip(2), 2, t);
        b.charge(ip(2), 450);
        assert_eq!(b.victim(ip(2), 50), None);
        assert_eq!(b.victim(ip(2), 51), Some(ip(2)));
        b.charge(ip(3), 400);
        // Within its share, but the total is full: the heaviest pays.
        assert_eq!(b.victim(ip(1), 100), Some(ip(2)));
        b.refund(ip(2), 450);
        assert_eq!(b.of(ip(2)), 0);
        assert_eq!(b.total(), 500);
        // Holding nothing, with one session: not a source to give anything up.
        b.stop_holding(ip(2), 2, t);
        assert_eq!(b.heaviest(), None);
    }

    #[test]
    fn oldest_holder_and_oldest_session_in_order() {
        let t = Instant::now();
        let later = t + std::time::Duration::from_millis(5);
        let mut b: Budget<u32> = Budget::new(1000);
        for k in 1..=3 {
            b.add_session(ip(1), k);
        }
        b.start_holding(ip(1), 2, later);
        b.start_holding(ip(1), 3, t);
        assert_eq!(b.oldest_holder(ip(1)), Some(3));
        b.stop_holding(ip(1), 3, t);
        assert_eq!(b.oldest_holder(ip(1)), Some(2));
        // The session the source began with is never the one given up.
        assert_eq!(b.oldest_session(ip(1), 9, |_| true), Some(2));
        assert_eq!(b.oldest_session(ip(1), 2, |_| true), Some(3));
        assert_eq!(b.oldest_session(ip(1), 9, |&k| k != 2), Some(3));
        assert_eq!(b.oldest_session(ip(1), 3, |&k| k != 2), None);
        b.stop_holding(ip(1), 2, later);
        for _ in 1..=3 {
            b.remove_session(ip(1));
        }
        assert!(b.sources.is_empty());
    }

    #[test]
    fn a_source_with_one_idle_session_allocates_nothing() {
        let mut b: Budget<u32> = Budget::new(1000);
        b.add_session(ip(1), 1);
        b.charge(ip(1), 100);
        assert!(b.sources.values().all(|l| l.more.is_none()));
        assert_eq!(b.oldest_session(ip(1), 9, |_| true), None);
        let v6: IpAddr = "fe80::7".parse().unwrap();
        b.add_session(v6, 2);
        b.charge(v6, 50);
        assert_eq!(b.of(v6), 50);
        // Sources with one session holding nothing are not looked at.
        assert_eq!(b.heaviest(), None);
        assert!(b.busy.is_empty());
        // A second session makes a source one to look at; the heavier of those.
        b.add_session(v6, 3);
        b.add_session(ip(1), 4);
        b.charge(v6, 100);
        assert_eq!(b.heaviest(), Some(v6));
        b.charge(ip(1), 100);
        assert_eq!(b.heaviest(), Some(ip(1)));
    }
}
