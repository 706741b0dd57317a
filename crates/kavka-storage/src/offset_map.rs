//! The cleaner's key → latest offset map (Kafka's `SkimpyOffsetMap`): a fixed-size open
//! addressing table of 16-byte key digests, sized from `log.cleaner.dedupe.buffer.size`, so
//! memory stays bounded however many keys a log holds.
//!
//! Digests are two SipHash values under keys drawn at random for each map, so a client
//! cannot craft two keys that collide (a collision would make the cleaner drop the latest
//! value of one of them).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Bytes one slot takes: two 64-bit digest halves and the offset.
pub(crate) const SLOT_BYTES: usize = 24;
/// Kafka's `log.cleaner.io.buffer.load.factor`: the table is full at 90% of its slots.
const LOAD_FACTOR: f64 = 0.9;
const MIN_SLOTS: usize = 16;

#[derive(Clone, Copy)]
struct Slot {
    digest: [u64; 2],
    /// -1: empty.
    offset: i64,
}

const EMPTY: Slot = Slot {
    digest: [0, 0],
    offset: -1,
};

pub(crate) struct OffsetMap {
    /// Allocated by the first `clear`, so an idle cleaner holds no buffer.
    slots: Vec<Slot>,
    slot_count: usize,
    used: usize,
    max_entries: usize,
    hashers: [RandomState; 2],
}

impl OffsetMap {
    /// A map using at most `buffer_bytes` of memory (at least a few slots).
    pub(crate) fn with_buffer_bytes(buffer_bytes: usize) -> Self {
        let slots = (buffer_bytes / SLOT_BYTES).max(MIN_SLOTS);
        OffsetMap {
            slots: Vec::new(),
            slot_count: slots,
            used: 0,
            max_entries: ((slots as f64 * LOAD_FACTOR) as usize).max(1),
            hashers: [RandomState::new(), RandomState::new()],
        }
    }

    /// Empties the map (allocating it the first time) and draws new hash keys.
    pub(crate) fn clear(&mut self) {
        if self.slots.len() == self.slot_count {
            self.slots.fill(EMPTY);
        } else {
            self.slots = vec![EMPTY; self.slot_count];
        }
        self.used = 0;
        self.hashers = [RandomState::new(), RandomState::new()];
    }

    /// Distinct keys the map can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.max_entries
    }

    pub(crate) fn len(&self) -> usize {
        self.used
    }

    /// Keys that can still be added whatever they are.
    pub(crate) fn free(&self) -> usize {
        self.max_entries - self.used
    }

    fn digest(&self, key: &[u8]) -> [u64; 2] {
        [self.hashers[0].hash_one(key), self.hashers[1].hash_one(key)]
    }

    /// Index of the slot holding `digest`, or of the empty slot where it would go.
    fn probe(&self, digest: [u64; 2]) -> usize {
        let n = self.slots.len();
        let mut i = (digest[0] % n as u64) as usize;
        // The table is never full (load factor < 1), so this ends.
        loop {
            let s = &self.slots[i];
            if s.offset < 0 || s.digest == digest {
                return i;
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
    }

    /// Records `offset` as the latest for `key`. Returns false (and changes nothing) when the
    /// key is new and the map is full.
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) -> bool {
        if self.slots.is_empty() {
            self.clear();
        }
        let digest = self.digest(key);
        let i = self.probe(digest);
        if self.slots[i].offset < 0 {
            if self.used >= self.max_entries {
                return false;
            }
            self.used += 1;
        }
        self.slots[i] = Slot { digest, offset };
        true
    }

    /// The latest offset recorded for `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        if self.slots.is_empty() {
            return None;
        }
        let s = self.slots[self.probe(self.digest(key))];
        (s.offset >= 0).then_some(s.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_latest_and_refuses_new_keys_when_full() {
        let mut m = OffsetMap::with_buffer_bytes(SLOT_BYTES * 20);
        assert_eq!(m.capacity(), 18);
        for i in 0..18u32 {
            assert!(m.put(&i.to_be_bytes(), i64::from(i)));
        }
        assert!(!m.put(b"new", 100));
        assert!(
            m.put(&3u32.to_be_bytes(), 50),
            "updating a known key needs no room"
        );
        assert_eq!(m.get(&3u32.to_be_bytes()), Some(50));
        assert_eq!(m.get(&4u32.to_be_bytes()), Some(4));
        assert_eq!(m.get(b"new"), None);
        m.clear();
        assert_eq!((m.len(), m.get(&3u32.to_be_bytes())), (0, None));
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_hash_map(ops in proptest::collection::vec((0u8..40, 0i64..1000), 0..200)) {
            let mut m = OffsetMap::with_buffer_bytes(SLOT_BYTES * 64);
            let mut model = std::collections::HashMap::new();
            for (k, o) in ops {
                proptest::prop_assert!(m.put(&[k], o));
                model.insert(k, o);
            }
            for k in 0u8..40 {
                proptest::prop_assert_eq!(m.get(&[k]), model.get(&k).copied());
            }
        }
    }
}
