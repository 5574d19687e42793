//! Upsert: one row per key; events of an epoch apply in source order; deletes, tombstones and
//! truncates retract. Emits only the net change per key per epoch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use std::hash::{Hash, Hasher};

use hashbrown::hash_table::{Entry, HashTable};
use smallvec::SmallVec;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;

use differential_dataflow::AsCollection;

use super::{route_hash, Collection, PendingEpochs};
use crate::event::{ChangeEvent, Op};
use crate::row::{Key, Row};
use crate::value::Value;

/// Turns a table's change events into its current state.
pub trait Upsert<'s> {
    /// Current state: per key (at `key_columns` of the rows), the `after` of its last event in
    /// source order, absent after a delete, tombstone or truncate. `before` is never trusted.
    /// `live_rows` tracks the number of rows held (summed over workers).
    fn upsert(
        self,
        name: &str,
        key_columns: Vec<usize>,
        live_rows: Arc<AtomicI64>,
    ) -> Collection<'s, Row>;
}

impl<'s> Upsert<'s> for Collection<'s, ChangeEvent> {
    fn upsert(
        self,
        name: &str,
        key_columns: Vec<usize>,
        live_rows: Arc<AtomicI64>,
    ) -> Collection<'s, Row> {
        let peers = self.inner.scope().peers() as u64;
        // Keyed events go to the key's worker; a truncate goes to every worker.
        let routed = self.inner.flat_map(move |(event, _time, diff)| {
            let mut targets: SmallVec<[(u64, ChangeEvent); 1]> = SmallVec::new();
            if diff > 0 && event.op == Op::Truncate {
                targets.extend((0..peers).map(|worker| (worker, event.clone())));
            } else if diff > 0 {
                targets.push((route_hash(&event.key) % peers, event));
            }
            targets
        });
        routed
            .unary_frontier(
                Exchange::new(|(worker, _): &(u64, ChangeEvent)| *worker),
                name,
                |_capability, _info| {
                    let mut pending: PendingEpochs<ChangeEvent> = BTreeMap::new();
                    let mut state = UpsertState::new(key_columns);
                    // The last applied epoch's buffer, empty, for the next epoch (a new one,
                    // grown by doublings in every epoch, copied each event once more).
                    let mut spare: Vec<ChangeEvent> = Vec::new();
                    move |(input, frontier), output| {
                        input.for_each(|capability, data| {
                            let Some(&time) = capability.least() else {
                                return;
                            };
                            let entry = pending.entry(time).or_insert_with(|| {
                                (capability.delayed(&time, 0), std::mem::take(&mut spare))
                            });
                            entry.1.extend(data.drain(..).map(|(_, event)| event));
                        });
                        while let Some(entry) = pending.first_entry() {
                            if frontier.less_equal(entry.key()) {
                                break;
                            }
                            let (time, (capability, mut events)) = entry.remove_entry();
                            let applied = events.len();
                            let mut session = output.session(&capability);
                            let before = state.len();
                            state.apply_epoch(&mut events, |update, diff| {
                                session.give((update, time, diff));
                            });
                            // A buffer far larger than epochs now need (after a snapshot) is
                            // given back.
                            if events.capacity() > 4 * applied.max(SPARE_EVENTS) {
                                events.shrink_to(applied);
                            }
                            spare = events;
                            let change = state.len() as i64 - before as i64;
                            live_rows.fetch_add(change, Ordering::Relaxed);
                        }
                    }
                },
            )
            .as_collection()
    }
}

/// Events an epoch buffer may keep room for whatever the epoch that used it last.
const SPARE_EVENTS: usize = 16_384;

/// The per-worker current rows and the epoch application logic (no dataflow types). Rows are
/// stored once, found by hashing their key columns, so a live key costs one pointer in the table
/// plus the row itself.
#[derive(Debug, Default)]
pub struct UpsertState {
    key_columns: Vec<usize>,
    /// Each row with its key's hash: growing the table rehashes without fetching the rows, and
    /// a lookup compares a row's key only when the hashes agree.
    rows: HashTable<(u64, Row)>,
}

/// A key an epoch changed: its row before the epoch and its row now.
struct Touched {
    hash: u64,
    key: Key,
    original: Option<Row>,
    current: Option<Row>,
}

fn hash_key<'a>(values: impl Iterator<Item = &'a Value>) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    for value in values {
        value.hash(&mut hasher);
    }
    hasher.finish()
}

impl UpsertState {
    /// State for rows whose key is at `key_columns`.
    pub fn new(key_columns: Vec<usize>) -> Self {
        UpsertState {
            key_columns,
            rows: HashTable::new(),
        }
    }

    fn matches<'a>(
        key_columns: &'a [usize],
        hash: u64,
        key: &'a Key,
    ) -> impl Fn(&(u64, Row)) -> bool + 'a {
        move |(row_hash, row)| {
            *row_hash == hash
                && key_columns
                    .iter()
                    .zip(key.iter())
                    .all(|(&i, k)| row.get(i) == Some(k))
        }
    }

    fn insert(&mut self, hash: u64, key: &Key, row: Row) -> Option<Row> {
        let matches = Self::matches(&self.key_columns, hash, key);
        match self.rows.entry(hash, matches, |(hash, _)| *hash) {
            Entry::Occupied(mut occupied) => {
                Some(std::mem::replace(&mut occupied.get_mut().1, row))
            }
            Entry::Vacant(vacant) => {
                vacant.insert((hash, row));
                None
            }
        }
    }

    fn remove(&mut self, hash: u64, key: &Key) -> Option<Row> {
        let found = self
            .rows
            .find_entry(hash, Self::matches(&self.key_columns, hash, key));
        found.ok().map(|entry| entry.remove().0 .1)
    }

    /// Applies one epoch's events in source order and reports the net row changes; `events`
    /// is left empty (its buffer can be reused).
    pub fn apply_epoch(&mut self, events: &mut Vec<ChangeEvent>, mut emit: impl FnMut(Row, i64)) {
        events.sort_by_key(|event| event.position);
        // Per key touched this epoch: its row before the epoch and its row now (kept here, so
        // the state is not searched again at the end).
        // Sized for every event touching another key, so that it is never regrown.
        let mut touched: HashTable<Touched> = HashTable::with_capacity(events.len());
        let mut touch = |hash: u64, key: Key, previous: Option<Row>, current: Option<Row>| {
            let same_key = |t: &Touched| t.hash == hash && t.key == key;
            match touched.find_mut(hash, same_key) {
                Some(entry) => entry.current = current,
                None => {
                    let entry = Touched {
                        hash,
                        key,
                        original: previous,
                        current,
                    };
                    touched.insert_unique(hash, entry, |t| t.hash);
                }
            }
        };
        for event in events.drain(..) {
            match event.op {
                Op::Truncate => {
                    for (hash, row) in self.rows.drain() {
                        let key = Key::of(&row, &self.key_columns);
                        touch(hash, key, Some(row), None);
                    }
                }
                Op::Create | Op::Update | Op::Read => {
                    let Some(after) = event.after else { continue };
                    let hash = hash_key(event.key.iter());
                    let previous = self.insert(hash, &event.key, after.clone());
                    touch(hash, event.key, previous, Some(after));
                }
                Op::Delete | Op::Tombstone => {
                    let hash = hash_key(event.key.iter());
                    let previous = self.remove(hash, &event.key);
                    touch(hash, event.key, previous, None);
                }
            }
        }
        for Touched {
            original, current, ..
        } in touched
        {
            if original == current {
                continue;
            }
            if let Some(current) = current {
                emit(current, 1);
            }
            if let Some(original) = original {
                emit(original, -1);
            }
        }
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no key is live.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}
