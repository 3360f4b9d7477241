//! One byte assembler for every line or record rebuilt from fragments (ncu
//! FRAGMENT datagrams and the kernel's `ncfrag=` records): it holds the bytes that
//! arrived, never a buffer of the length a datagram declares, so a forged "1 MiB
//! line" of four small fragments costs four small fragments.

use std::collections::BTreeMap;

/// What holding one received piece costs besides its bytes (its allocation and its
/// map node), counted by [`ByteAssembler::held_cost`] so that a flood of one-byte
/// fragments is bounded too.
pub const PIECE_OVERHEAD: usize = 64;

/// The received pieces of one line, by offset; overlapping bytes are kept once
/// (the first copy wins).
#[derive(Debug, Default, Clone)]
pub struct ByteAssembler {
    pieces: BTreeMap<u32, Vec<u8>>,
    received: u32,
}

impl ByteAssembler {
    /// An empty assembler.
    pub fn new() -> ByteAssembler {
        ByteAssembler::default()
    }

    /// Takes `bytes` at `offset`; bytes already held are skipped. Returns how many
    /// bytes were new (0: a duplicate). The caller checks `offset + len` against the
    /// line's total.
    pub fn insert(&mut self, offset: u32, bytes: &[u8]) -> u32 {
        let end = offset.saturating_add(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        let mut pos = offset;
        let mut added = 0;
        while pos < end {
            if let Some((&start, piece)) = self.pieces.range(..=pos).next_back() {
                let piece_end = start + piece.len() as u32;
                if piece_end > pos {
                    pos = piece_end;
                    continue;
                }
            }
            let next = self
                .pieces
                .range(pos + 1..)
                .next()
                .map_or(end, |(&start, _)| start.min(end));
            let from = (pos - offset) as usize;
            let to = (next - offset) as usize;
            self.pieces.insert(pos, bytes[from..to].to_vec());
            added += next - pos;
            pos = next;
        }
        self.received += added;
        added
    }

    /// Bytes held.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// What holding this costs: the bytes plus [`PIECE_OVERHEAD`] per piece.
    pub fn held_cost(&self) -> usize {
        self.received as usize + self.pieces.len() * PIECE_OVERHEAD
    }

    /// The bytes held, in order: the whole line when every byte arrived, else the
    /// pieces that did, joined.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut pieces = self.pieces.into_values();
        let Some(mut out) = pieces.next() else {
            return Vec::new();
        };
        out.reserve(self.received as usize - out.len());
        for piece in pieces {
            out.extend_from_slice(&piece);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checked against the obviously correct model: one `Option<u8>` per offset.
    #[test]
    fn against_a_bitmap_model_under_random_overlapping_pieces() {
        let seed: u64 = 0xa55e_b1e5;
        println!("seed {seed:#x}");
        let mut rng = seed;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..2000 {
            let total = 1 + (next() % 300) as u32;
            let mut model: Vec<Option<u8>> = vec![None; total as usize];
            let mut a = ByteAssembler::new();
            for _ in 0..(next() % 40) {
                let offset = (next() % u64::from(total)) as u32;
                let len = (next() % u64::from(total - offset + 1)) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let mut new = 0;
                for (i, &b) in bytes.iter().enumerate() {
                    let slot = &mut model[offset as usize + i];
                    if slot.is_none() {
                        *slot = Some(b);
                        new += 1;
                    }
                }
                assert_eq!(a.insert(offset, &bytes), new);
                let held = model.iter().filter(|b| b.is_some()).count();
                assert_eq!(a.received() as usize, held);
                assert!(a.held_cost() >= held);
                assert!(a.held_cost() <= held + a.pieces.len() * PIECE_OVERHEAD);
            }
            let want: Vec<u8> = model.iter().flatten().copied().collect();
            assert_eq!(a.into_bytes(), want);
        }
    }

    #[test]
    fn a_declared_length_costs_nothing() {
        let mut a = ByteAssembler::new();
        // Four 1,300-byte pieces of a line said to be 1 MiB long.
        for i in 0..4u32 {
            a.insert(i * 250_000, &[b'x'; 1300]);
        }
        assert_eq!(a.held_cost(), 4 * (1300 + PIECE_OVERHEAD));
    }
}
