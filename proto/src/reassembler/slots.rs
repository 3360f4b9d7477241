//! Where sessions live: in slots that do not move while their session lives (the
//! timers name a session by its 4-byte slot), found by key
//! through an index that keeps only the slot (4 bytes per session: the key is
//! worked out from the session itself, [`Session::key`]). A second index names
//! each source address's first session (see [`Session::first`]).

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

use hashbrown::HashTable;

use super::session::{Session, SessionKey};

/// A session's place in [`Sessions`].
pub(super) type Slot = u32;

/// The sessions in memory, by slot and by key.
#[derive(Debug)]
pub(super) struct Sessions {
    slots: Vec<Option<Session>>,
    /// Slots given back, reused first.
    free: Vec<Slot>,
    /// Key -> slot (hashed with a random key: addresses are chosen by senders).
    index: HashTable<Slot>,
    /// Source IP -> the slot of its first session, while that session lives.
    firsts: HashTable<Slot>,
    hasher: RandomState,
}

impl Sessions {
    /// Room for `n` sessions in the index (growing it later rehashes every
    /// session at once); slots grow as sessions come.
    pub(super) fn with_capacity(n: usize) -> Sessions {
        Sessions {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::with_capacity(n),
            firsts: HashTable::with_capacity(n),
            hasher: RandomState::new(),
        }
    }

    /// Sessions in memory.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of the session with `key`.
    pub(super) fn slot_of(&self, key: &SessionKey) -> Option<Slot> {
        let slots = &self.slots;
        self.index
            .find(self.hasher.hash_one(key), |&slot| is(slots, slot, key))
            .copied()
    }

    pub(super) fn contains_key(&self, key: &SessionKey) -> bool {
        self.slot_of(key).is_some()
    }

    pub(super) fn get(&self, key: &SessionKey) -> Option<&Session> {
        self.at(self.slot_of(key)?)
    }

    pub(super) fn get_mut(&mut self, key: &SessionKey) -> Option<&mut Session> {
        self.at_mut(self.slot_of(key)?)
    }

    /// The session in `slot`, if one lives there.
    pub(super) fn at(&self, slot: Slot) -> Option<&Session> {
        at(&self.slots, slot)
    }

    pub(super) fn at_mut(&mut self, slot: Slot) -> Option<&mut Session> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Puts `session` (whose key is not in the table) in a slot, which it is told,
    /// and tells it whether it is the first of its source address.
    pub(super) fn insert(&mut self, mut session: Session) -> &mut Session {
        let key = session.key();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                // More sessions than 4 billion do not fit in any memory budget.
                let slot = Slot::try_from(self.slots.len()).expect("fewer than 2^32 sessions");
                self.slots.push(None);
                slot
            }
        };
        session.slot = slot;
        let ip = session.who.ip();
        let ip_hash = self.hasher.hash_one(ip);
        session.first = self
            .firsts
            .find(ip_hash, |&s| ip_of(&self.slots, s) == Some(ip))
            .is_none();
        let first = session.first;
        self.slots[slot as usize] = Some(session);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hasher.hash_one(key), slot, |&s| {
            at(slots, s).map_or(0, |session| hasher.hash_one(session.key()))
        });
        if first {
            self.firsts.insert_unique(ip_hash, slot, |&s| {
                ip_of(slots, s).map_or(0, |ip| hasher.hash_one(ip))
            });
        }
        self.slots[slot as usize]
            .as_mut()
            .expect("the session just put there")
    }

    /// Takes the session with `key` out.
    pub(super) fn remove(&mut self, key: &SessionKey) -> Option<Session> {
        let slots = &self.slots;
        let entry = self
            .index
            .find_entry(self.hasher.hash_one(key), |&slot| is(slots, slot, key))
            .ok()?;
        let (slot, _) = entry.remove();
        let ip = ip_of(&self.slots, slot)?;
        if let Ok(first) = self
            .firsts
            .find_entry(self.hasher.hash_one(ip), |&s| s == slot)
        {
            first.remove();
        }
        self.free.push(slot);
        self.slots[slot as usize].take()
    }

    /// Every session, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Session> + '_ {
        self.slots.iter().flatten()
    }
}

/// The session in `slot` of `slots`, if one lives there.
fn at(slots: &[Option<Session>], slot: Slot) -> Option<&Session> {
    slots.get(slot as usize)?.as_ref()
}

/// The source IP of the session in `slot`.
fn ip_of(slots: &[Option<Session>], slot: Slot) -> Option<IpAddr> {
    at(slots, slot).map(|s| s.who.ip())
}

/// Whether the session in `slot` has `key`.
fn is(slots: &[Option<Session>], slot: Slot, key: &SessionKey) -> bool {
    at(slots, slot).is_some_and(|s| s.key() == *key)
}
