//! Replay protection on the receiving end: each session's counters seen, in a
//! window, in a bounded table.

use core::fmt;
use std::collections::HashMap;

use super::REPLAY_WINDOW;
use crate::wire::Header;

/// Settings of a [`ReplayGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Largest accepted difference between a datagram's `sent_at_us` and the
    /// receiver's clock, either way (default 5 minutes). `u64::MAX` turns the time
    /// check off (then only the per-session windows protect, see [`ReplayGuard`]).
    pub max_skew_us: u64,
    /// Most sessions tracked at once (default 1024, about 600 bytes each); beyond
    /// that the least recently heard one is forgotten.
    pub max_sessions: usize,
}

impl Default for ReplayConfig {
    fn default() -> ReplayConfig {
        ReplayConfig {
            max_skew_us: 5 * 60 * 1_000_000,
            max_sessions: 1024,
        }
    }
}

/// Why [`ReplayGuard::check`] refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Replay {
    /// This (session, counter) was accepted before: a `--copies` copy, a network
    /// duplicate, or a replay of a recent datagram. Count it as a duplicate.
    Duplicate,
    /// The counter is more than the window behind the newest one of its session:
    /// cannot tell new from replayed, so refused.
    BehindWindow,
    /// `sent_at_us` is more than `max_skew_us` before the receiver's clock.
    TooOld,
    /// `sent_at_us` is more than `max_skew_us` after the receiver's clock.
    TooNew,
}

impl Replay {
    /// A short stable name for counters and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Replay::Duplicate => "duplicate",
            Replay::BehindWindow => "replay_window",
            Replay::TooOld => "too_old",
            Replay::TooNew => "too_new",
        }
    }
    /// A duplicate of a datagram accepted earlier (as opposed to a refusal).
    pub fn is_duplicate(self) -> bool {
        self == Replay::Duplicate
    }
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Replay {}

/// Words of the per-session bitmap: one more than `REPLAY_WINDOW / 64`, so that every
/// counter less than `REPLAY_WINDOW` behind the newest is tracked whatever the
/// alignment.
const WINDOW_WORDS: usize = REPLAY_WINDOW as usize / 64 + 1;

/// Receiver-side replay protection, sans-IO: consulted with the header of every
/// datagram that [`open`](super::open) authenticated (never with unauthenticated ones, which
/// could move the windows), and the receiver's clock.
///
/// A datagram is accepted once, when all hold:
/// * `|sent_at_us - now_us| <= max_skew_us` ([`Replay::TooOld`], [`Replay::TooNew`]);
/// * its session's counter window has not seen its counter ([`Replay::Duplicate`])
///   and it is less than [`REPLAY_WINDOW`] behind the newest counter of the
///   session ([`Replay::BehindWindow`]; farther back may still be tracked).
///
/// Refused datagrams change nothing. Sessions are kept in a table of at most
/// `max_sessions`; when it is full the least recently heard session is forgotten.
/// Forgetting is harmless when that session was last heard more than
/// `2 * max_skew_us` ago (everything it sent before is too old by now);
/// [`ReplayGuard::early_evictions`] counts the forgettings that were not. What is
/// not covered: a receiver restart forgets every window, so datagrams of the last
/// `max_skew_us` can be replayed once to the new process.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    config: ReplayConfig,
    sessions: HashMap<u64, Window>,
    early_evictions: u64,
}

#[derive(Debug, Clone)]
struct Window {
    /// Highest counter accepted.
    top: u32,
    /// Bit `c % 64` of word `(c / 64) % WINDOW_WORDS`: counter `c` was accepted.
    bits: [u64; WINDOW_WORDS],
    /// Receiver time of the last accepted datagram (for LRU eviction).
    last_heard_us: u64,
}

impl Window {
    fn new(counter: u32, now_us: u64) -> Window {
        let mut window = Window {
            top: counter,
            bits: [0; WINDOW_WORDS],
            last_heard_us: now_us,
        };
        window.set(counter);
        window
    }

    fn slot(counter: u32) -> (usize, u64) {
        let block = (counter / 64) as usize;
        (block % WINDOW_WORDS, 1 << (counter % 64))
    }

    fn set(&mut self, counter: u32) {
        let (word, bit) = Window::slot(counter);
        self.bits[word] |= bit;
    }

    fn check(&self, counter: u32) -> Result<(), Replay> {
        if counter > self.top {
            return Ok(());
        }
        if self.top / 64 - counter / 64 >= WINDOW_WORDS as u32 {
            return Err(Replay::BehindWindow);
        }
        let (word, bit) = Window::slot(counter);
        if self.bits[word] & bit != 0 {
            return Err(Replay::Duplicate);
        }
        Ok(())
    }

    /// Records an accepted counter (after [`Window::check`] passed).
    fn accept(&mut self, counter: u32, now_us: u64) {
        if counter > self.top {
            let old_block = self.top / 64;
            let new_block = counter / 64;
            // Clear the words of the blocks the window moves onto.
            let moved = (new_block - old_block).min(WINDOW_WORDS as u32);
            for block in (new_block - moved + 1)..=new_block {
                self.bits[block as usize % WINDOW_WORDS] = 0;
            }
            self.top = counter;
        }
        self.set(counter);
        self.last_heard_us = self.last_heard_us.max(now_us);
    }
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new(config: ReplayConfig) -> ReplayGuard {
        ReplayGuard {
            config,
            sessions: HashMap::new(),
            early_evictions: 0,
        }
    }

    /// Accepts (and remembers) or refuses one authenticated datagram, by its header.
    /// `now_us` is the receiver's wall clock, microseconds since the Unix epoch.
    pub fn check(&mut self, header: &Header, now_us: u64) -> Result<(), Replay> {
        let skew = self.config.max_skew_us;
        if header.sent_at_us.saturating_add(skew) < now_us {
            return Err(Replay::TooOld);
        }
        if header.sent_at_us > now_us.saturating_add(skew) {
            return Err(Replay::TooNew);
        }
        if let Some(window) = self.sessions.get_mut(&header.session) {
            window.check(header.counter)?;
            window.accept(header.counter, now_us);
            return Ok(());
        }
        if self.sessions.len() >= self.config.max_sessions.max(1) {
            self.evict_one(now_us);
        }
        self.sessions
            .insert(header.session, Window::new(header.counter, now_us));
        Ok(())
    }

    fn evict_one(&mut self, now_us: u64) {
        // O(max_sessions), only when a new session arrives at a full table.
        let oldest = self
            .sessions
            .iter()
            .min_by_key(|(_, w)| w.last_heard_us)
            .map(|(&id, w)| (id, w.last_heard_us));
        if let Some((id, last_heard_us)) = oldest {
            let safe_after =
                last_heard_us.saturating_add(self.config.max_skew_us.saturating_mul(2));
            if safe_after >= now_us {
                self.early_evictions += 1;
            }
            self.sessions.remove(&id);
        }
    }

    /// Sessions currently tracked.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions forgotten (table full) while their recent datagrams could still pass
    /// the time check: each is a window in which a replay would go unnoticed. Worth
    /// a warning; raise `max_sessions` if it grows.
    pub fn early_evictions(&self) -> u64 {
        self.early_evictions
    }
}
