//! The receiver's one memory budget: everything held on behalf of senders (lines
//! waiting for a hole, fragments, partial text, per-session state), counted per
//! source IP address and in total, and who gives up what when it is full.
//!
//! This is bookkeeping only; the [`Reassembler`](crate::reassembler::Reassembler)
//! charges and refunds it on every path that holds bytes, and when
//! [`Budget::victim`] names a source, gives up that source's oldest incomplete work
//! ([`Budget::oldest_holder`]) or, when it holds only session state, retires its
//! oldest listed session ([`Budget::oldest_session`]). A source's first session
//! (the one its address had before any other) is not listed: its state is charged
//! to the total only, and it is never the one its own source gives up. A flood
//! from one source therefore sheds its own work first and cannot evict a quiet
//! host's tail, nor the session its own address had before the flood; and a
//! fleet's hosts, one session each and idle, cost the budget no entry at all.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

/// Default budget (`--max-held`): 64 MiB, safe on a 1 GB machine.
pub const DEFAULT_MAX_HELD: usize = 64 << 20;

/// What one source holds, while it has listed sessions or work.
#[derive(Debug)]
struct Load<K> {
    /// Bytes charged: work plus the state of its listed sessions.
    bytes: usize,
    /// Listed sessions live.
    live: u32,
    /// Sessions holding work, oldest holder first: (holding since, key).
    holders: BTreeSet<(Instant, K)>,
    /// Listed sessions, oldest first; may hold keys of sessions gone (skipped and
    /// compacted lazily).
    sessions: VecDeque<K>,
}

impl<K> Load<K> {
    fn is_empty(&self) -> bool {
        self.bytes == 0 && self.live == 0 && self.holders.is_empty()
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
    /// The sources with listed sessions or work held: the only ones
    /// [`Budget::heaviest`] looks at, so that its cost follows them and not a
    /// fleet of one-session hosts (or spoofed addresses).
    sources: HashMap<[u8; 16], Load<K>>,
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

    /// Bytes charged to `ip` (its work and its listed sessions' state).
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
            holders: BTreeSet::new(),
            sessions: VecDeque::new(),
        })
    }

    fn forget_if_empty(&mut self, ip: IpAddr) {
        let key = source(ip);
        if self.sources.get(&key).is_some_and(Load::is_empty) {
            self.sources.remove(&key);
        }
    }

    /// A new listed session of `ip` (one begun while its first was live).
    pub fn add_session(&mut self, ip: IpAddr, key: K) {
        let load = self.load(ip);
        load.sessions.push_back(key);
        load.live += 1;
    }

    /// A listed session of `ip` is gone (its charges refunded before).
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

    /// Charges `n` bytes to the total only (a source's first session's state).
    pub fn charge_total(&mut self, n: usize) {
        self.total += n;
    }

    /// Refunds `n` bytes charged with [`Budget::charge_total`] before.
    pub fn refund_total(&mut self, n: usize) {
        self.total = self.total.saturating_sub(n);
    }

    /// Session `key` of `ip` holds work since `since`.
    pub fn start_holding(&mut self, ip: IpAddr, key: K, since: Instant) {
        self.load(ip).holders.insert((since, key));
    }

    /// Session `key` of `ip`, holding since `since`, holds no work any more.
    pub fn stop_holding(&mut self, ip: IpAddr, key: K, since: Instant) {
        if let Some(load) = self.sources.get_mut(&source(ip)) {
            load.holders.remove(&(since, key));
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

    /// Of the sources with listed sessions or with work held, the one charged the
    /// most (a source with one session and no work has nothing to give up but that
    /// session: the caller retires the least recently heard instead).
    pub fn heaviest(&self) -> Option<IpAddr> {
        self.sources
            .iter()
            .map(|(addr, load)| (load.bytes, *addr))
            .max()
            .map(|(_, addr)| address(addr))
    }

    /// The session of `ip` that has held work the longest.
    pub fn oldest_holder(&self, ip: IpAddr) -> Option<K> {
        let load = self.sources.get(&source(ip))?;
        load.holders.first().map(|&(_, key)| key)
    }

    /// The oldest listed session of `ip` other than `except` (`None` for a source
    /// with none: its first session is not listed); `is_live` tells which
    /// remembered keys are still sessions.
    pub fn oldest_session(
        &mut self,
        ip: IpAddr,
        except: K,
        is_live: impl Fn(&K) -> bool,
    ) -> Option<K> {
        let load = self.sources.get_mut(&source(ip))?;
        while load.sessions.front().is_some_and(|k| !is_live(k)) {
            load.sessions.pop_front();
        }
        if load.sessions.len() > 2 * load.live as usize + 16 {
            load.sessions.retain(|k| is_live(k));
        }
        load.sessions
            .iter()
            .copied()
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
        b.stop_holding(ip(2), 2, t);
        b.remove_session(ip(2));
        b.refund(ip(1), 100);
        b.refund(ip(3), 400);
        // Nothing held, no listed session: nothing to give up, nothing kept.
        assert_eq!(b.heaviest(), None);
        assert!(b.sources.is_empty());
        assert_eq!(b.total(), 0);
    }

    #[test]
    fn oldest_holder_and_oldest_session_in_order() {
        let t = Instant::now();
        let later = t + std::time::Duration::from_millis(5);
        let mut b: Budget<u32> = Budget::new(1000);
        // Session 1 is the source's first: not listed.
        for k in 2..=3 {
            b.add_session(ip(1), k);
        }
        b.start_holding(ip(1), 2, later);
        b.start_holding(ip(1), 3, t);
        b.start_holding(ip(1), 1, later + later.duration_since(t));
        assert_eq!(b.oldest_holder(ip(1)), Some(3));
        b.stop_holding(ip(1), 3, t);
        assert_eq!(b.oldest_holder(ip(1)), Some(2));
        // The session the source began with is never the one given up.
        assert_eq!(b.oldest_session(ip(1), 9, |_| true), Some(2));
        assert_eq!(b.oldest_session(ip(1), 2, |_| true), Some(3));
        assert_eq!(b.oldest_session(ip(1), 9, |&k| k != 2), Some(3));
        assert_eq!(b.oldest_session(ip(1), 3, |&k| k != 2), None);
        b.stop_holding(ip(1), 2, later);
        for _ in 2..=3 {
            b.remove_session(ip(1));
        }
        // Its first session still holds work.
        assert_eq!(b.oldest_holder(ip(1)), Some(1));
        b.stop_holding(ip(1), 1, later + later.duration_since(t));
        assert!(b.sources.is_empty());
    }

    #[test]
    fn a_source_with_only_its_first_session_idle_has_no_entry() {
        let mut b: Budget<u32> = Budget::new(1000);
        b.charge_total(100);
        assert!(b.sources.is_empty());
        assert_eq!(b.total(), 100);
        assert_eq!(b.heaviest(), None);
        // A listed session makes a source one to look at; the heavier of those.
        let v6: IpAddr = "fe80::7".parse().unwrap();
        b.add_session(v6, 2);
        b.charge(v6, 50);
        assert_eq!(b.of(v6), 50);
        assert_eq!(b.heaviest(), Some(v6));
        b.add_session(ip(1), 4);
        b.charge(ip(1), 100);
        assert_eq!(b.heaviest(), Some(ip(1)));
        b.refund_total(100);
        assert_eq!(b.total(), 150);
    }
}
