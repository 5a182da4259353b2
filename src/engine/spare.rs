//! Giving back the room a crowd left behind: a map or vector keeps the capacity of its
//! largest moment, so after a spike of 10,000 sessions a room held megabytes of empty slots
//! (members, seats, avatars) for as long as it ran, and `malloc_trim` cannot return memory
//! that is still allocated. Rooms call [`shrink`] on their per-session containers from their
//! once-a-second sweep, never on the tick's path.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use indexmap::IndexMap;

/// A container whose spare capacity can be given back.
pub trait Spare {
    fn len(&self) -> usize;
    fn capacity(&self) -> usize;
    fn shrink_to(&mut self, min_capacity: usize);
}

/// Below this capacity the slots are not worth a reallocation.
const KEEP: usize = 64;

/// Shrinks `c` to twice its length once it is at most a quarter full: the gap between the two
/// thresholds keeps a room whose population swings from shrinking and growing back each time.
pub fn shrink<C: Spare>(c: &mut C) {
    let (len, cap) = (c.len(), c.capacity());
    if cap > KEEP && len * 4 <= cap {
        c.shrink_to((len * 2).max(KEEP));
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> Spare for HashMap<K, V, S> {
    fn len(&self) -> usize {
        HashMap::len(self)
    }
    fn capacity(&self) -> usize {
        HashMap::capacity(self)
    }
    fn shrink_to(&mut self, min_capacity: usize) {
        HashMap::shrink_to(self, min_capacity);
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> Spare for IndexMap<K, V, S> {
    fn len(&self) -> usize {
        IndexMap::len(self)
    }
    fn capacity(&self) -> usize {
        IndexMap::capacity(self)
    }
    fn shrink_to(&mut self, min_capacity: usize) {
        IndexMap::shrink_to(self, min_capacity);
    }
}

impl<T> Spare for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }
    fn shrink_to(&mut self, min_capacity: usize) {
        Vec::shrink_to(self, min_capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_shrinks_only_once_mostly_empty() {
        let mut v: Vec<u64> = (0..10_000).collect();
        v.truncate(3_000);
        shrink(&mut v);
        assert!(v.capacity() >= 10_000, "30 % full: kept");
        v.truncate(2_000);
        shrink(&mut v);
        assert!(v.capacity() < 5_000, "20 % full: given back");
        assert_eq!(v.len(), 2_000);
        assert_eq!(v[1_999], 1_999, "contents kept");

        let mut m: HashMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
        m.retain(|k, _| *k < 100);
        shrink(&mut m);
        assert!(m.capacity() < 1_000 && m.len() == 100 && m[&99] == 99);

        let mut small: Vec<u8> = Vec::with_capacity(KEEP);
        shrink(&mut small);
        assert_eq!(small.capacity(), KEEP, "small ones are left alone");
    }
}
