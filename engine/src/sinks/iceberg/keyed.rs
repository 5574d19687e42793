//! Values by key with a compact index: a table of `(hash, slot)` pairs, eight bytes each,
//! instead of a map holding every key (tens of bytes each), so that looking keys up and growing
//! the index touch little memory; the keys and values sit in vectors in slot order. The table
//! writer keeps its pending rows (to append at the next commit) and its stored rows' places
//! (for position deletes) in one each. Slots of removed values are compacted away once they
//! outnumber the live ones.

use std::hash::{Hash, Hasher};

use hashbrown::hash_table::{Entry, HashTable};

use tributary_operators::Key;

/// A key's hash, computed once per update and passed to every lookup of that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyHash(u64);

impl KeyHash {
    /// Hashes `key`.
    pub fn of(key: &Key) -> Self {
        let mut hasher = rustc_hash::FxHasher::default();
        key.hash(&mut hasher);
        KeyHash(hasher.finish())
    }

    /// Folded to the 32 bits an index entry keeps to tell keys apart without reading them,
    /// and to grow without rehashing them.
    fn short(self) -> u32 {
        (self.0 >> 32) as u32 ^ self.0 as u32
    }
}

/// Spreads a 32-bit hash over the 64 bits the table uses (its low bits pick the bucket, its top
/// seven the control byte).
fn spread(short: u32) -> u64 {
    u64::from(short).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Whether an index entry is `key`'s: its short hash agrees, then its slot's key.
fn is_key<'a>(
    keys: &'a [KeyHashed],
    short: u32,
    key: &'a Key,
) -> impl Fn(&(u32, u32)) -> bool + 'a {
    move |&(s, slot)| s == short && keys.get(slot as usize).is_some_and(|k| k.key == *key)
}

/// One value per key, in insertion order.
#[derive(Debug)]
pub struct KeyedSlots<V> {
    /// `None` once removed.
    values: Vec<Option<V>>,
    /// Each slot's key with its short hash.
    keys: Vec<KeyHashed>,
    /// `(short hash, slot)` of the live slots.
    index: HashTable<(u32, u32)>,
}

impl<V> Default for KeyedSlots<V> {
    fn default() -> Self {
        KeyedSlots {
            values: Vec::new(),
            keys: Vec::new(),
            index: HashTable::new(),
        }
    }
}

impl<V> KeyedSlots<V> {
    /// Values held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The values held, to change in place.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.values.iter_mut().flatten()
    }

    /// Makes room for `additional` more keys.
    pub fn reserve(&mut self, additional: usize) {
        self.values.reserve(additional);
        self.keys.reserve(additional);
        self.index.reserve(additional, |&(short, _)| spread(short));
    }

    fn find(&self, hash: KeyHash, key: &Key) -> Option<u32> {
        let short = hash.short();
        self.index
            .find(spread(short), is_key(&self.keys, short, key))
            .map(|&(_, slot)| slot)
    }

    /// Whether `key` holds a value.
    pub fn contains(&self, hash: KeyHash, key: &Key) -> bool {
        !self.is_empty() && self.find(hash, key).is_some()
    }

    /// Adds `value` under `key`; gives it back when `key` already holds one.
    pub fn insert(&mut self, hash: KeyHash, key: Key, value: V) -> Result<(), V> {
        if self.values.len() >= 2 * self.len() + COMPACT_AFTER {
            self.compact();
        }
        let short = hash.short();
        let entry = self
            .index
            .entry(spread(short), is_key(&self.keys, short, &key), |&(s, _)| {
                spread(s)
            });
        match entry {
            Entry::Occupied(_) => Err(value),
            Entry::Vacant(vacant) => {
                vacant.insert((short, self.values.len() as u32));
                self.values.push(Some(value));
                self.keys.push(KeyHashed { short, key });
                Ok(())
            }
        }
    }

    /// Replaces the value of `key` in its slot, returning the old one; gives `value` back when
    /// `key` holds none.
    pub fn replace(&mut self, hash: KeyHash, key: &Key, value: V) -> Result<V, V> {
        match self.find(hash, key) {
            Some(slot) => match self.values.get_mut(slot as usize) {
                Some(Some(held)) => Ok(std::mem::replace(held, value)),
                _ => Err(value),
            },
            None => Err(value),
        }
    }

    /// Removes the value of `key`.
    pub fn remove(&mut self, hash: KeyHash, key: &Key) -> Option<V> {
        if self.is_empty() {
            return None;
        }
        let short = hash.short();
        let found = self
            .index
            .find_entry(spread(short), is_key(&self.keys, short, key));
        let ((_, slot), _) = found.ok()?.remove();
        self.values.get_mut(slot as usize)?.take()
    }

    /// Drops the slots of removed values, so that keys removed and added again and again take
    /// no more memory than twice the live values.
    fn compact(&mut self) {
        let keys = std::mem::take(&mut self.keys);
        let values = std::mem::take(&mut self.values);
        self.index.clear();
        for (key, value) in keys.into_iter().zip(values) {
            let Some(value) = value else {
                continue;
            };
            let slot = self.values.len() as u32;
            self.index
                .insert_unique(spread(key.short), (key.short, slot), |&(s, _)| spread(s));
            self.values.push(Some(value));
            self.keys.push(key);
        }
    }

    /// Takes the values in insertion order, collected in place, in the memory they were held
    /// in; the keys stay indexed, numbered in that order, for [`with_values`](Self::with_values).
    pub fn take(&mut self) -> (Vec<V>, Keys) {
        let mut index = std::mem::take(&mut self.index);
        let values = std::mem::take(&mut self.values);
        if index.len() != values.len() {
            // Removed slots go: each live slot moves down past the removed ones before it.
            let mut live = 0;
            let renumbered: Vec<u32> = values
                .iter()
                .map(|value| {
                    let slot = live;
                    live += u32::from(value.is_some());
                    slot
                })
                .collect();
            for (_, slot) in index.iter_mut() {
                *slot = renumbered.get(*slot as usize).copied().unwrap_or(*slot);
            }
        }
        let keys = std::mem::take(&mut self.keys)
            .into_iter()
            .zip(&values)
            .filter_map(|(key, value)| value.is_some().then_some(key))
            .collect();
        // `filter_map` collects in place; `flatten` would allocate anew.
        #[allow(clippy::filter_map_identity)]
        let values = values.into_iter().filter_map(|value| value).collect();
        (values, Keys { keys, index })
    }

    /// The taken `keys` with new values, the i-th value for the i-th key.
    pub fn with_values(keys: Keys, values: Vec<V>) -> Self {
        debug_assert_eq!(keys.keys.len(), values.len());
        KeyedSlots {
            values: values.into_iter().map(Some).collect(),
            keys: keys.keys,
            index: keys.index,
        }
    }

    /// Adds every key of `other` (the smaller one is added into the larger); gives back the
    /// value of a key that both hold.
    pub fn merge(&mut self, mut other: KeyedSlots<V>) -> Result<(), V> {
        if other.len() > self.len() {
            std::mem::swap(self, &mut other);
        }
        if other.is_empty() {
            return Ok(());
        }
        self.reserve(other.len());
        for (key, value) in other.keys.into_iter().zip(other.values) {
            if let Some(value) = value {
                let hash = KeyHash(u64::from(key.short));
                self.insert(hash, key.key, value)?;
            }
        }
        Ok(())
    }

    /// Drops every value.
    pub fn clear(&mut self) {
        self.values.clear();
        self.keys.clear();
        self.index.clear();
    }
}

/// A key with its short hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyHashed {
    short: u32,
    key: Key,
}

/// The keys of taken values, still indexed.
#[derive(Debug)]
pub struct Keys {
    keys: Vec<KeyHashed>,
    index: HashTable<(u32, u32)>,
}

impl Keys {
    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Removed slots kept before compacting (beyond as many as there are live values).
const COMPACT_AFTER: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_operators::Value;

    fn key(id: i64) -> Key {
        Key::new(vec![Value::Int(id)])
    }

    fn insert(slots: &mut KeyedSlots<i64>, id: i64, value: i64) -> Result<(), i64> {
        slots.insert(KeyHash::of(&key(id)), key(id), value)
    }

    fn remove(slots: &mut KeyedSlots<i64>, id: i64) -> Option<i64> {
        slots.remove(KeyHash::of(&key(id)), &key(id))
    }

    fn taken(slots: &mut KeyedSlots<i64>) -> Vec<(i64, i64)> {
        let (values, keys) = slots.take();
        assert_eq!(values.len(), keys.keys.len());
        keys.keys
            .into_iter()
            .zip(values)
            .map(|(hashed, value)| match hashed.key.first() {
                Some(Value::Int(id)) => (*id, value),
                other => panic!("key {other:?}"),
            })
            .collect()
    }

    #[test]
    fn keeps_one_value_per_key_in_insertion_order() {
        let mut slots = KeyedSlots::default();
        // Enough keys to make the index grow several times.
        for id in 0..10_000 {
            assert_eq!(insert(&mut slots, id, 0), Ok(()));
        }
        assert_eq!(insert(&mut slots, 7, 1), Err(1));
        for id in (0..10_000).step_by(2) {
            assert_eq!(remove(&mut slots, id), Some(0));
            assert_eq!(remove(&mut slots, id), None, "removed twice");
        }
        assert_eq!(remove(&mut slots, 10_000), None);
        assert_eq!(insert(&mut slots, 4, 1), Ok(()));
        let hash = KeyHash::of(&key(5));
        assert_eq!(slots.replace(hash, &key(5), 2), Ok(0));
        assert_eq!(slots.replace(KeyHash::of(&key(6)), &key(6), 2), Err(2));
        assert!(slots.contains(hash, &key(5)));
        assert!(!slots.contains(KeyHash::of(&key(6)), &key(6)));
        assert_eq!(slots.len(), 5_001);
        let expected: Vec<(i64, i64)> = (1..10_000)
            .step_by(2)
            .map(|id| (id, if id == 5 { 2 } else { 0 }))
            .chain([(4, 1)])
            .collect();
        assert_eq!(taken(&mut slots), expected);
        assert!(slots.is_empty());
        assert!(taken(&mut slots).is_empty());
    }

    #[test]
    fn keys_removed_and_added_again_take_bounded_memory() {
        let mut slots = KeyedSlots::default();
        let rounds = 4 * COMPACT_AFTER as i64;
        for round in 0..rounds {
            for id in 0..3 {
                if round > 0 {
                    assert_eq!(remove(&mut slots, id), Some(round - 1));
                }
                assert_eq!(insert(&mut slots, id, round), Ok(()));
            }
        }
        assert!(slots.values.len() <= 2 * 3 + COMPACT_AFTER);
        assert_eq!(insert(&mut slots, 1, 0), Err(0));
        assert_eq!(
            taken(&mut slots),
            [(0, rounds - 1), (1, rounds - 1), (2, rounds - 1)]
        );
    }

    #[test]
    fn taken_keys_take_new_values_and_merge() {
        let mut pending = KeyedSlots::default();
        for id in 0..1_000 {
            assert_eq!(insert(&mut pending, id, id), Ok(()));
        }
        // Removed slots: the keys after them are numbered anew.
        for id in (0..1_000).step_by(3) {
            assert_eq!(remove(&mut pending, id), Some(id));
        }
        let (values, keys) = pending.take();
        assert!(pending.is_empty());
        let mut stored = KeyedSlots::default();
        for id in 1_000..1_010 {
            assert_eq!(insert(&mut stored, id, 0), Ok(()));
        }
        // The larger side's index is kept, the smaller one's keys are added into it.
        let doubled = values.iter().map(|value| 2 * value).collect();
        assert_eq!(stored.merge(KeyedSlots::with_values(keys, doubled)), Ok(()));
        assert_eq!(stored.len(), 666 + 10);
        for id in 0..1_000 {
            let expected = (id % 3 != 0).then_some(2 * id);
            assert_eq!(remove(&mut stored, id), expected, "key {id}");
        }
        for id in 1_000..1_010 {
            assert_eq!(remove(&mut stored, id), Some(0));
        }
        let mut again = KeyedSlots::default();
        assert_eq!(insert(&mut again, 5, 1), Ok(()));
        assert_eq!(insert(&mut stored, 5, 2), Ok(()));
        assert_eq!(stored.merge(again), Err(1));
    }
}
