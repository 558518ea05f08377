//! Storage for the tracker: a compact hash index of slot numbers and a chunked slab.

/// An open-addressing hash index of `u32` ids whose keys live elsewhere (in a slab): the
/// caller hashes and compares. Linear probing at most 3/4 full, backward-shift deletion (no
/// tombstones: a long churn does not degrade it). Each bucket keeps 32 bits of the hash next
/// to the id (8 bytes), so that mismatches, growing and deleting never touch the records.
#[derive(Default)]
pub(super) struct IdTable {
    pub(super) buckets: Vec<Bucket>,
    pub(super) len: usize,
}

#[derive(Clone, Copy, Default)]
pub(super) struct Bucket {
    pub(super) hash: u32,
    /// The id + 1; 0: empty.
    pub(super) id1: u32,
}

impl IdTable {
    const MIN_BUCKETS: usize = 16;

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The bucket holding the id `eq` accepts among those filed under `hash`.
    pub(super) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let h = hash as u32;
        let mut i = h as usize & mask;
        // Terminates: the table is never full (at most 3/4).
        loop {
            let b = self.buckets[i];
            if b.id1 == 0 {
                return None;
            }
            if b.hash == h && eq(b.id1 - 1) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    pub(super) fn id_at(&self, pos: usize) -> u32 {
        self.buckets[pos].id1.wrapping_sub(1)
    }

    /// Files `id` (below `u32::MAX`) under `hash`; the caller knows it is not there yet.
    pub(super) fn insert(&mut self, hash: u64, id: u32) {
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            let n = (self.buckets.len() * 2).max(Self::MIN_BUCKETS);
            let old = std::mem::replace(&mut self.buckets, vec![Bucket::default(); n]);
            for b in old.into_iter().filter(|b| b.id1 != 0) {
                self.place(b);
            }
        }
        self.place(Bucket {
            hash: hash as u32,
            id1: id.wrapping_add(1),
        });
        self.len += 1;
    }

    pub(super) fn place(&mut self, b: Bucket) {
        let mask = self.buckets.len() - 1;
        let mut i = b.hash as usize & mask;
        while self.buckets[i].id1 != 0 {
            i = (i + 1) & mask;
        }
        self.buckets[i] = b;
    }

    /// Removes the id in bucket `pos` (from [`IdTable::find`]), moving back the ids after it
    /// that may move closer to their home bucket.
    pub(super) fn remove_at(&mut self, pos: usize) {
        let mask = self.buckets.len() - 1;
        let mut hole = pos;
        let mut j = pos;
        loop {
            j = (j + 1) & mask;
            let b = self.buckets[j];
            if b.id1 == 0 {
                break;
            }
            let home = b.hash as usize & mask;
            // The id at j may fill the hole if the hole lies on its probe path (home ..= j).
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.buckets[hole] = b;
                hole = j;
            }
        }
        self.buckets[hole] = Bucket::default();
        self.len -= 1;
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets
            .iter()
            .filter(|b| b.id1 != 0)
            .map(|b| b.id1 - 1)
    }
}

/// Slots per slab chunk.
pub(super) const CHUNK: usize = 1024;

/// Records in fixed-size chunks (growing never copies nor doubles), addressed by `u32`; freed
/// slots are reused first, so a long run stays flat.
pub(super) struct Slab<T> {
    pub(super) chunks: Vec<Vec<T>>,
    pub(super) free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            chunks: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T: Default> Slab<T> {
    pub(super) fn insert(&mut self, v: T) -> u32 {
        if let Some(i) = self.free.pop()
            && let Some(slot) = self.get_mut(i)
        {
            *slot = v;
            return i;
        }
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(v),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(v);
                self.chunks.push(c);
            }
        }
        let last = self.chunks.last().map_or(0, Vec::len);
        ((self.chunks.len() - 1) * CHUNK + last - 1) as u32
    }

    pub(super) fn get(&self, i: u32) -> Option<&T> {
        self.chunks.get(i as usize / CHUNK)?.get(i as usize % CHUNK)
    }

    pub(super) fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.chunks
            .get_mut(i as usize / CHUNK)?
            .get_mut(i as usize % CHUNK)
    }

    /// Frees slot `i` (its value is dropped now) for reuse.
    pub(super) fn remove(&mut self, i: u32) -> Option<T> {
        let v = std::mem::take(self.get_mut(i)?);
        self.free.push(i);
        Some(v)
    }

    /// Slots made (in use or free): what the slab holds memory for.
    pub(super) fn slots(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// Slots in use.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum::<usize>() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::model::tracker::tests::Lcg;

    #[test]
    fn id_table_matches_a_hash_map_under_churn() {
        // Keys live in `keys` (as records in a slab would); the table holds their ids.
        let mut keys: Vec<u64> = Vec::new();
        let mut table = IdTable::default();
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut rng = Lcg(7);
        // Few distinct keys and a weak hash: long clusters, many collisions and wrap-arounds.
        let hash = |k: u64| (k % 97).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for round in 0..50_000 {
            let k = rng.next() % 300;
            let pos = table.find(hash(k), |id| keys[id as usize] == k);
            assert_eq!(
                pos.map(|p| table.id_at(p)),
                model.get(&k).copied(),
                "round {round}"
            );
            match pos {
                Some(p) if rng.next().is_multiple_of(2) => {
                    table.remove_at(p);
                    model.remove(&k);
                }
                Some(_) => {}
                None => {
                    let id = keys.len() as u32;
                    keys.push(k);
                    table.insert(hash(k), id);
                    model.insert(k, id);
                }
            }
            assert_eq!(table.len(), model.len());
        }
        let mut ids: Vec<u32> = table.iter().collect();
        let mut want: Vec<u32> = model.values().copied().collect();
        ids.sort_unstable();
        want.sort_unstable();
        assert_eq!(ids, want);
        // Never more than 3/4 full.
        assert!(table.len() * 4 <= table.buckets.len() * 3);
    }

    #[test]
    fn slab_reuses_freed_slots() {
        let mut s: Slab<u64> = Slab::default();
        let ids: Vec<u32> = (0..3000).map(|i| s.insert(i)).collect();
        assert_eq!(ids, (0..3000).collect::<Vec<u32>>());
        assert_eq!(s.chunks.len(), 3);
        assert_eq!(s.get(2048), Some(&2048));
        assert_eq!(s.get(3000), None);
        for i in (0..3000).step_by(2) {
            assert_eq!(s.remove(i), Some(u64::from(i)));
        }
        assert_eq!(s.len(), 1500);
        // Freed slots are used again before any new chunk.
        for i in 0..1500 {
            let id = s.insert(10_000 + i);
            assert_eq!(id % 2, 0);
        }
        assert_eq!((s.len(), s.chunks.len()), (3000, 3));
        assert_eq!(s.insert(1), 3000);
        assert_eq!(s.chunks.len(), 3);
    }
}
