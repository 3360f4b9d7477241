//! One set of `u64` ranges (`first -> last`, inclusive), as a receiver keeps the
//! lines it reported lost to recognise the late ones.

use std::collections::BTreeMap;

/// Disjoint inclusive ranges of sequence numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub const fn new() -> RangeSet {
        RangeSet {
            ranges: BTreeMap::new(),
        }
    }

    /// Adds `first..=last`, which the caller knows is disjoint from what is held
    /// (a receiver reports each line lost once).
    pub fn insert(&mut self, first: u64, last: u64) {
        debug_assert!(first <= last);
        self.ranges.insert(first, last);
    }

    /// Whether `seq` is in a range.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &last)| seq <= last)
    }

    /// Removes `seq` from the range that holds it; false when none does.
    pub fn remove(&mut self, seq: u64) -> bool {
        let Some((&first, &last)) = self.ranges.range(..=seq).next_back() else {
            return false;
        };
        if seq > last {
            return false;
        }
        self.ranges.remove(&first);
        if first < seq {
            self.ranges.insert(first, seq - 1);
        }
        if seq < last {
            self.ranges.insert(seq + 1, last);
        }
        true
    }

    /// How many ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// No range.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Forgets the lowest range (to stay within a bound).
    pub fn pop_first(&mut self) {
        self.ranges.pop_first();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Checked against the obviously correct model: a set of numbers.
    #[test]
    fn against_a_set_of_numbers() {
        let seed: u64 = 0x0a11_5e75;
        println!("seed {seed:#x}");
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..500 {
            let mut set = RangeSet::new();
            let mut model = BTreeSet::new();
            let mut start = 0u64;
            for _ in 0..next(20) {
                // Disjoint ranges in increasing order, as gaps are reported.
                let first = start + next(5);
                let last = first + next(6);
                set.insert(first, last);
                model.extend(first..=last);
                start = last + 1 + next(3);
            }
            for _ in 0..100 {
                let seq = next(start + 5);
                assert_eq!(set.contains(seq), model.contains(&seq), "{seq} in {set:?}");
                if next(2) == 0 {
                    assert_eq!(set.remove(seq), model.remove(&seq));
                }
            }
            for seq in 0..start + 5 {
                assert_eq!(set.contains(seq), model.contains(&seq));
            }
        }
    }
}
