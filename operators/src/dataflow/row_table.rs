//! `RowTable`: an upsert's rows, found by the hash of their key. Open addressing with linear
//! probing over one array of `(hash, row)` slots, so the slot where a key's search starts is
//! known from its hash alone. An epoch's lookups can then prefetch their slots and rows before
//! they need them: the state is far larger than the caches, so each of them would otherwise
//! wait for memory.

use crate::row::{prefetched, Row};

/// The table grows before more than this many eighths of its slots are taken. Past 3/4, linear
/// probing walks long runs of taken slots.
const MAX_LOAD_EIGHTHS: usize = 6;

/// Slots of a table's first allocation.
const MIN_SLOTS: usize = 16;

/// Rows keyed by a 64-bit hash of their key; the caller says which row is the key's.
#[derive(Debug, Default)]
pub struct RowTable {
    /// A power-of-two number of slots (none before the first insert). A key's row is in the
    /// first slot from its home ([`RowTable::home`]) on that holds it, with no empty slot
    /// between.
    slots: Vec<Option<(u64, Row)>>,
    len: usize,
}

impl RowTable {
    /// Number of rows held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot where the search for `hash` starts: its high bits after a multiplication, which
    /// mixes every bit of the hash into them. Only for a table with slots.
    fn home(&self, hash: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    fn next(&self, slot: usize) -> usize {
        (slot + 1) & (self.slots.len() - 1)
    }

    /// The slot holding the row with `hash` that `is_key` accepts, or else the empty slot where
    /// it would go. Only for a table with slots (one of them always empty).
    fn search(&self, hash: u64, is_key: impl Fn(&Row) -> bool) -> Result<usize, usize> {
        let mut slot = self.home(hash);
        loop {
            match &self.slots[slot] {
                None => return Err(slot),
                Some((held, row)) if *held == hash && is_key(row) => return Ok(slot),
                Some(_) => slot = self.next(slot),
            }
        }
    }

    /// Puts `row` in place of the key's row, returning the row it replaces.
    pub fn insert(&mut self, hash: u64, row: Row, is_key: impl Fn(&Row) -> bool) -> Option<Row> {
        if self.slots.is_empty() {
            self.resize(MIN_SLOTS);
        }
        match self.search(hash, is_key) {
            Ok(slot) => self.slots[slot]
                .as_mut()
                .map(|(_, held)| std::mem::replace(held, row)),
            Err(mut slot) => {
                if (self.len + 1) * 8 > self.slots.len() * MAX_LOAD_EIGHTHS {
                    self.resize(self.slots.len() * 2);
                    slot = self.empty_slot(hash);
                }
                self.slots[slot] = Some((hash, row));
                self.len += 1;
                None
            }
        }
    }

    /// The key's row.
    pub fn get(&self, hash: u64, is_key: impl Fn(&Row) -> bool) -> Option<&Row> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = self.search(hash, is_key).ok()?;
        self.slots[slot].as_ref().map(|(_, row)| row)
    }

    /// Takes out the key's row.
    pub fn remove(&mut self, hash: u64, is_key: impl Fn(&Row) -> bool) -> Option<Row> {
        if self.slots.is_empty() {
            return None;
        }
        let mut hole = self.search(hash, is_key).ok()?;
        let (_, removed) = self.slots[hole].take()?;
        self.len -= 1;
        // Rows after the hole that may sit closer to their home move back into it, so that no
        // search meets an empty slot before its row.
        let mask = self.slots.len() - 1;
        let mut slot = self.next(hole);
        while let Some((held, _)) = &self.slots[slot] {
            let home = self.home(*held);
            if slot.wrapping_sub(home) & mask >= slot.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[slot].take();
                hole = slot;
            }
            slot = self.next(slot);
        }
        Some(removed)
    }

    /// Takes out every row, keeping the slots.
    pub fn drain(&mut self) -> impl Iterator<Item = Row> + '_ {
        self.len = 0;
        self.slots
            .iter_mut()
            .filter_map(|slot| slot.take().map(|(_, row)| row))
    }

    /// Asks the CPU to load the slot where the search for `hash` starts.
    pub fn prefetch_slot(&self, hash: u64) {
        if !self.slots.is_empty() {
            crate::row::prefetch(&self.slots[self.home(hash)]);
        }
    }

    /// Asks the CPU to load the first row with `hash` (whether or not it is the key's: a hint
    /// needs no key comparison). Best after [`RowTable::prefetch_slot`] had time to load.
    pub fn prefetch_row(&self, hash: u64) {
        if self.slots.is_empty() {
            return;
        }
        let mut slot = self.home(hash);
        while let Some((held, row)) = &self.slots[slot] {
            if *held == hash {
                row.prefetch();
                return;
            }
            slot = self.next(slot);
        }
    }

    /// Moves the rows into `slots` new slots (the hashes are kept: no row is read).
    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![None; slots]);
        for (hash, row) in old.into_iter().flatten() {
            let slot = self.empty_slot(hash);
            self.slots[slot] = Some((hash, row));
        }
    }

    /// The first empty slot from the home of `hash` on.
    fn empty_slot(&self, hash: u64) -> usize {
        let mut slot = self.home(hash);
        while self.slots[slot].is_some() {
            slot = self.next(slot);
        }
        slot
    }
}

impl Drop for RowTable {
    /// Releases the rows each prefetched a few ahead: they have left the caches, and releasing
    /// a large state's rows one by one would wait for memory each time (at shutdown).
    fn drop(&mut self) {
        prefetched(self.drain(), |row| row).for_each(drop);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::value::Value;

    fn row(key: i64, version: i64) -> Row {
        Row::new(vec![Value::Int(key), Value::Int(version)])
    }

    fn is_key(key: i64) -> impl Fn(&Row) -> bool {
        move |row| row.first() == Some(&Value::Int(key))
    }

    proptest! {
        /// Inserts and removes against a map. Hashes are a few bits of the key, so that many
        /// keys share a hash, many more a home slot, and removals shift long runs back.
        #[test]
        fn the_table_holds_what_a_map_holds(
            ops in prop::collection::vec((any::<bool>(), 0..200i64), 1..2_000),
            hash_bits in 1u32..8,
        ) {
            let mut table = RowTable::default();
            let mut oracle: HashMap<i64, Row> = HashMap::new();
            let hash_of = |key: i64| (key as u64) & ((1 << hash_bits) - 1);
            for (version, (insert, key)) in ops.into_iter().enumerate() {
                let hash = hash_of(key);
                if insert {
                    let new = row(key, version as i64);
                    let replaced = table.insert(hash, new.clone(), is_key(key));
                    prop_assert_eq!(replaced, oracle.insert(key, new));
                } else {
                    prop_assert_eq!(table.remove(hash, is_key(key)), oracle.remove(&key));
                }
                prop_assert_eq!(table.len(), oracle.len());
            }
            for (key, expected) in &oracle {
                let found = table.remove(hash_of(*key), is_key(*key));
                prop_assert_eq!(found.as_ref(), Some(expected));
            }
            prop_assert!(table.is_empty());
        }
    }

    #[test]
    fn a_drained_table_is_empty_and_takes_rows_again() {
        let mut table = RowTable::default();
        for key in 0..100 {
            table.insert(key as u64, row(key, 0), is_key(key));
        }
        let mut drained: Vec<Row> = table.drain().collect();
        drained.sort();
        assert_eq!(drained, (0..100).map(|key| row(key, 0)).collect::<Vec<_>>());
        assert!(table.is_empty());
        assert_eq!(table.remove(7, is_key(7)), None);
        assert_eq!(table.insert(7, row(7, 1), is_key(7)), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn prefetching_changes_nothing_even_for_absent_keys() {
        let mut table = RowTable::default();
        table.prefetch_slot(3);
        table.prefetch_row(3);
        table.insert(3, row(3, 0), is_key(3));
        table.prefetch_slot(3);
        table.prefetch_row(3);
        table.prefetch_row(4);
        assert_eq!(table.remove(3, is_key(3)), Some(row(3, 0)));
    }
}
