//! The rows a table writer appends at its next commit, with a compact index of them by key: a
//! table of `(hash, slot)` pairs, eight bytes each, instead of a map holding every key (tens of
//! bytes each). The index of a commit of a million rows stays a few megabytes, so looking keys
//! up and growing it touch far less memory; the keys themselves are kept in slot order. Slots
//! of rows retracted before the commit are compacted away once they outnumber the pending rows.

use std::hash::{Hash, Hasher};

use hashbrown::hash_table::{Entry, HashTable};

use tributary_operators::{Key, Row};

/// Rows to append, in arrival order; with keys (upserts) or without (appends).
#[derive(Debug, Default)]
pub struct Pending {
    /// `None` once retracted again before the commit.
    rows: Vec<Option<Row>>,
    /// Each keyed row's key, by slot.
    keys: Vec<Key>,
    /// `(hash of the key, slot)` for the keyed rows not retracted.
    index: HashTable<(u32, u32)>,
    /// Rows not retracted.
    live: usize,
}

impl Pending {
    /// Adds a row without a key (appends).
    pub fn push(&mut self, row: Row) {
        self.rows.push(Some(row));
        self.live += 1;
    }

    /// Adds `row` under `key`; gives it back when a row of that key is already pending.
    pub fn insert(&mut self, key: Key, row: Row) -> Result<(), Row> {
        if self.rows.len() >= 2 * self.live + COMPACT_AFTER {
            self.compact();
        }
        let hash = key_hash(&key);
        let keys = &self.keys;
        let entry = self.index.entry(
            spread(hash),
            |&(h, slot)| h == hash && keys.get(slot as usize) == Some(&key),
            |&(h, _)| spread(h),
        );
        match entry {
            Entry::Occupied(_) => Err(row),
            Entry::Vacant(vacant) => {
                let slot = self.rows.len();
                vacant.insert((hash, slot as u32));
                self.rows.push(Some(row));
                self.keys.push(key);
                self.live += 1;
                Ok(())
            }
        }
    }

    /// Retracts the pending row of `key`; whether there was one.
    pub fn retract(&mut self, key: &Key) -> bool {
        let hash = key_hash(key);
        let keys = &self.keys;
        let found = self.index.find_entry(spread(hash), |&(h, slot)| {
            h == hash && keys.get(slot as usize) == Some(key)
        });
        let Ok(entry) = found else {
            return false;
        };
        let ((_, slot), _) = entry.remove();
        if let Some(row) = self.rows.get_mut(slot as usize) {
            *row = None;
        }
        self.live -= 1;
        true
    }

    /// Drops the slots of retracted rows, so that rows updated again and again between two
    /// commits take no more memory than twice the rows pending.
    fn compact(&mut self) {
        if self.keys.len() != self.rows.len() {
            // Rows without keys are never retracted.
            return;
        }
        let mut keys = std::mem::take(&mut self.keys).into_iter();
        let rows = std::mem::take(&mut self.rows);
        self.index.clear();
        for row in rows {
            let key = keys.next();
            let (Some(row), Some(key)) = (row, key) else {
                continue;
            };
            let hash = key_hash(&key);
            let slot = self.rows.len() as u32;
            self.index
                .insert_unique(spread(hash), (hash, slot), |&(h, _)| spread(h));
            self.rows.push(Some(row));
            self.keys.push(key);
        }
    }

    /// Whether any row is pending.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Takes the pending rows, in arrival order, and (for keyed rows) their keys; both are
    /// collected in place, in the memory they were pending in.
    pub fn take(&mut self) -> (Vec<Row>, Vec<Key>) {
        self.index.clear();
        self.live = 0;
        let rows = std::mem::take(&mut self.rows);
        let keys = std::mem::take(&mut self.keys)
            .into_iter()
            .zip(&rows)
            .filter_map(|(key, row)| row.is_some().then_some(key))
            .collect();
        // `filter_map` collects in place; `flatten` would allocate anew.
        #[allow(clippy::filter_map_identity)]
        let rows = rows.into_iter().filter_map(|row| row).collect();
        (rows, keys)
    }

    /// Drops the pending rows.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.keys.clear();
        self.index.clear();
        self.live = 0;
    }
}

/// Retracted slots kept before the pending rows are compacted (beyond as many as there are
/// rows pending).
const COMPACT_AFTER: usize = 1 << 16;

/// A key's hash, folded to 32 bits (the index keeps it to tell keys apart without reading
/// them, and to grow without rehashing them).
fn key_hash(key: &Key) -> u32 {
    let mut hasher = rustc_hash::FxHasher::default();
    key.hash(&mut hasher);
    let hash = hasher.finish();
    (hash >> 32) as u32 ^ hash as u32
}

/// Spreads a 32-bit hash over the 64 bits the table uses (its low bits pick the bucket, its top
/// seven the control byte).
fn spread(hash: u32) -> u64 {
    u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_operators::Value;

    fn key(id: i64) -> Key {
        Key::new(vec![Value::Int(id)])
    }

    fn row(id: i64, version: i64) -> Row {
        Row::new(vec![Value::Int(id), Value::Int(version)])
    }

    #[test]
    fn keeps_one_row_per_key_in_arrival_order() {
        let mut pending = Pending::default();
        // Enough keys to make the index grow several times.
        for id in 0..10_000 {
            assert!(pending.insert(key(id), row(id, 0)).is_ok());
        }
        assert_eq!(pending.insert(key(7), row(7, 1)), Err(row(7, 1)));
        for id in (0..10_000).step_by(2) {
            assert!(pending.retract(&key(id)));
            assert!(!pending.retract(&key(id)), "retracted twice");
        }
        assert!(!pending.retract(&key(10_000)));
        assert!(pending.insert(key(4), row(4, 1)).is_ok());
        assert!(!pending.is_empty());
        let (rows, keys) = pending.take();
        let expected: Vec<i64> = (1..10_000).step_by(2).chain([4]).collect();
        assert_eq!(keys, expected.iter().map(|&id| key(id)).collect::<Vec<_>>());
        assert_eq!(rows.last(), Some(&row(4, 1)));
        assert_eq!(rows.len(), keys.len());
        assert!(pending.is_empty());
        assert_eq!(pending.take(), (Vec::new(), Vec::new()));
    }

    #[test]
    fn rows_updated_again_and_again_take_bounded_memory() {
        let mut pending = Pending::default();
        for version in 0..(4 * COMPACT_AFTER as i64) {
            for id in 0..3 {
                if version > 0 {
                    assert!(pending.retract(&key(id)));
                }
                assert!(pending.insert(key(id), row(id, version)).is_ok());
            }
        }
        assert!(pending.rows.len() <= 2 * 3 + COMPACT_AFTER);
        assert_eq!(pending.insert(key(1), row(1, 0)), Err(row(1, 0)));
        let last = 4 * COMPACT_AFTER as i64 - 1;
        let (rows, keys) = pending.take();
        assert_eq!(rows, [row(0, last), row(1, last), row(2, last)]);
        assert_eq!(keys, [key(0), key(1), key(2)]);
    }

    #[test]
    fn keeps_rows_without_keys() {
        let mut pending = Pending::default();
        pending.push(row(1, 0));
        pending.push(row(1, 0));
        let (rows, keys) = pending.take();
        assert_eq!((rows.len(), keys.len()), (2, 0));
    }
}
