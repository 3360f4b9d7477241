//! The receiver's one memory budget: everything held on behalf of senders (lines
//! waiting for a hole, fragments, partial text, per-session state), counted per
//! source IP address and in total, and who gives up what when it is full.
//!
//! This is bookkeeping only; the [`Reassembler`](crate::reassembler::Reassembler)
//! charges and refunds it on every path that holds bytes, and when
//! [`Budget::victim`] names a source, gives up that source's oldest incomplete work
//! ([`Budget::oldest_holder`]) or, when it holds only session state, retires its
//! oldest session ([`Budget::oldest_session`]). A flood from one source therefore
//! sheds its own work first and cannot evict a quiet host's tail.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

/// Default budget (`--max-held`): 64 MiB, safe on a 1 GB machine.
pub const DEFAULT_MAX_HELD: usize = 64 << 20;

/// What one source holds. Most sources are one host with one session holding
/// nothing: that costs no allocation (a fleet has many).
#[derive(Debug)]
struct Load<K> {
    /// Bytes charged: work plus session state.
    bytes: usize,
    /// Live sessions.
    live: usize,
    /// The oldest session remembered (it may be gone: skipped lazily)...
    first: Option<K>,
    /// ... and the rest, with the sessions holding work, when there are any.
    more: Option<Box<More<K>>>,
}

/// A source's sessions after its first, and those holding work.
#[derive(Debug)]
struct More<K> {
    /// Sessions holding work, oldest holder first: (holding since, key).
    holders: BTreeSet<(Instant, K)>,
    /// Live sessions after `first`, oldest first; may hold keys of sessions gone
    /// (skipped and compacted lazily).
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

/// Per-source and total charges, bounded by a limit; see the module doc.
#[derive(Debug)]
pub struct Budget<K> {
    limit: usize,
    per_source: usize,
    total: usize,
    sources: HashMap<IpAddr, Load<K>>,
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
        self.sources.get(&ip).map_or(0, |l| l.bytes)
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
        self.sources.entry(ip).or_insert_with(|| Load {
            bytes: 0,
            live: 0,
            first: None,
            more: None,
        })
    }

    fn forget_if_empty(&mut self, ip: IpAddr) {
        if self
            .sources
            .get(&ip)
            .is_some_and(|l| l.bytes == 0 && l.live == 0 && !l.holds_work())
        {
            self.sources.remove(&ip);
        }
    }

    /// A new session of `ip`.
    pub fn add_session(&mut self, ip: IpAddr, key: K) {
        let load = self.load(ip);
        load.live += 1;
        match load.first {
            None => load.first = Some(key),
            Some(_) => load.more().sessions.push_back(key),
        }
    }

    /// A session of `ip` is gone (its charges refunded before).
    pub fn remove_session(&mut self, ip: IpAddr) {
        if let Some(load) = self.sources.get_mut(&ip) {
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
        if let Some(load) = self.sources.get_mut(&ip) {
            load.bytes = load.bytes.saturating_sub(n);
        }
        self.total = self.total.saturating_sub(n);
        self.forget_if_empty(ip);
    }

    /// Session `key` of `ip` holds work since `since`.
    pub fn start_holding(&mut self, ip: IpAddr, key: K, since: Instant) {
        self.load(ip).more().holders.insert((since, key));
    }

    /// Session `key` of `ip`, holding since `since`, holds no work any more.
    pub fn stop_holding(&mut self, ip: IpAddr, key: K, since: Instant) {
        if let Some(load) = self.sources.get_mut(&ip) {
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

    /// The source charged the most.
    pub fn heaviest(&self) -> Option<IpAddr> {
        self.sources
            .iter()
            .max_by_key(|(addr, l)| (l.bytes, **addr))
            .map(|(addr, _)| *addr)
    }

    /// The session of `ip` that has held work the longest.
    pub fn oldest_holder(&self, ip: IpAddr) -> Option<K> {
        let more = self.sources.get(&ip)?.more.as_ref()?;
        more.holders.first().map(|&(_, key)| key)
    }

    /// The oldest live session of `ip` other than `except`; `is_live` tells which
    /// remembered keys are still sessions.
    pub fn oldest_session(
        &mut self,
        ip: IpAddr,
        except: K,
        is_live: impl Fn(&K) -> bool,
    ) -> Option<K> {
        let load = self.sources.get_mut(&ip)?;
        // The first remembered session gone: the next one takes its place.
        while load.first.is_some_and(|k| !is_live(&k)) {
            load.first = load.more.as_mut().and_then(|m| m.sessions.pop_front());
        }
        if let Some(more) = &mut load.more {
            if more.sessions.len() > 2 * load.live + 16 {
                more.sessions.retain(|k| is_live(k));
            }
        }
        load.compact();
        let rest = load.more.iter().flat_map(|m| m.sessions.iter().copied());
        load.first
            .into_iter()
            .chain(rest)
            .find(|&k| k != except && is_live(&k))
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
        let mut b: Budget<u32> = Budget::new(1000);
        b.charge(ip(1), 100);
        b.charge(ip(2), 450);
        assert_eq!(b.victim(ip(2), 50), None);
        assert_eq!(b.victim(ip(2), 51), Some(ip(2)));
        b.charge(ip(3), 400);
        // Within its share, but the total is full: the heaviest pays.
        assert_eq!(b.victim(ip(1), 100), Some(ip(2)));
        b.refund(ip(2), 450);
        assert_eq!(b.of(ip(2)), 0);
        assert_eq!(b.total(), 500);
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
        assert_eq!(b.oldest_session(ip(1), 1, |_| true), Some(2));
        assert_eq!(b.oldest_session(ip(1), 9, |&k| k != 1), Some(2));
        b.stop_holding(ip(1), 2, later);
        for _ in 1..=3 {
            b.remove_session(ip(1));
        }
        assert!(b.sources.is_empty());
    }
}
