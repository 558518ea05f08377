//! The one hasher: fast, and the same in every run (the tracker's tables, the session writer's
//! intern tables, and the detectors' dedupe decisions, which must replay identically).
use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

/// A fast hasher for tables keyed by kernel ids and paths (not attacker-chosen in a way that
/// matters: a collision costs time, never correctness). Seedless, so the same in every run.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // Final avalanche (splitmix64).
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// The [`FastHasher`] hash of a byte string (its length included).
pub fn hash_bytes(s: &[u8]) -> u64 {
    let mut h = FastHasher::default();
    h.write(s);
    h.write_u64(s.len() as u64);
    h.finish()
}
