//! Session ids for rollovers, drawn from a ChaCha20 keystream keyed with 32 bytes
//! the caller got from the OS random generator: as unpredictable as drawing each
//! from the OS, without asking the OS (or failing) in the middle of a session.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;

use crate::wire;

/// The generator of the random half of new session ids.
pub(super) struct SessionIds {
    stream: ChaCha20,
}

impl SessionIds {
    pub(super) fn new(seed: &[u8; 32]) -> SessionIds {
        SessionIds {
            stream: ChaCha20::new(seed.into(), &[0u8; 12].into()),
        }
    }

    /// A new session id for a session started at `wall_us`.
    pub(super) fn next(&mut self, wall_us: u64) -> u64 {
        let mut random = [0u8; 4];
        self.stream.apply_keystream(&mut random);
        wire::session_id((wall_us / 1_000_000) as u32, u32::from_le_bytes(random))
    }
}

impl std::fmt::Debug for SessionIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionIds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_by_seed_and_draw_and_carry_the_start_second() {
        let (mut a, mut b) = (SessionIds::new(&[1; 32]), SessionIds::new(&[2; 32]));
        let ids: Vec<u64> = (0..1000).map(|_| a.next(7_000_000)).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|&id| wire::session_started_secs(id) == 7));
        assert_ne!(SessionIds::new(&[1; 32]).next(0), b.next(0));
        assert_eq!(SessionIds::new(&[1; 32]).next(7_000_000), ids[0], "seeded");
    }
}
