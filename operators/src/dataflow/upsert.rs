//! Upsert: one row per key; events of an epoch apply in source order; deletes, tombstones and
//! truncates retract. Emits only the net change per key per epoch (per part of an epoch between
//! truncates), found by applying only each key's last event. An update that carries Debezium's
//! placeholder for an unchanged TOASTed value gets the value from the key's previous row.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use std::hash::{Hash, Hasher};

use hashbrown::hash_table::HashTable;

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;

use differential_dataflow::AsCollection;

use super::row_table::RowTable;
use super::{route_hash, Collection, PendingEpochs};
use crate::debezium::UNAVAILABLE_VALUE;
use crate::event::{ChangeEvent, Op};
use crate::row::{Key, Row, PREFETCH_AHEAD};
use crate::value::Value;

/// Turns a table's change events into its current state.
pub trait Upsert<'s> {
    /// Current state: per key (at `key_columns` of the rows), the `after` of its last event in
    /// source order, absent after a delete, tombstone or truncate. `before` is never trusted.
    /// `stored_row` makes the row kept for an event from the event and its `after` (a replica
    /// appends the op and time); it runs as the event reaches its key's worker, so that a row
    /// the state keeps is allocated by the worker that frees it.
    /// `size` tracks the rows held and about how many bytes they take (summed over workers).
    fn upsert(
        self,
        name: &str,
        key_columns: Vec<usize>,
        size: Arc<StateSize>,
        stored_row: impl Fn(&ChangeEvent, Row) -> Row + 'static,
    ) -> Collection<'s, Row>;
}

impl<'s> Upsert<'s> for Collection<'s, ChangeEvent> {
    fn upsert(
        self,
        name: &str,
        key_columns: Vec<usize>,
        size: Arc<StateSize>,
        stored_row: impl Fn(&ChangeEvent, Row) -> Row + 'static,
    ) -> Collection<'s, Row> {
        let peers = self.inner.scope().peers() as u64;
        // Keyed events go to the key's worker; a truncate goes to every worker. Events move
        // straight from the input to the output (they are large).
        let routed = self
            .inner
            .unary(Pipeline, "route-by-key", move |_capability, _info| {
                move |input, output| {
                    input.for_each(|capability, data| {
                        let mut session = output.session(&capability);
                        for (event, _time, diff) in data.drain(..) {
                            if diff <= 0 {
                                continue;
                            }
                            if event.op == Op::Truncate {
                                for worker in 0..peers {
                                    session.give((worker, event.clone()));
                                }
                            } else if peers == 1 {
                                session.give((0, event));
                            } else {
                                session.give((route_hash(&event.key) % peers, event));
                            }
                        }
                    });
                }
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
                            entry.1.extend(data.drain(..).map(|(_, mut event)| {
                                if let Some(after) = event.after.take() {
                                    event.after = Some(stored_row(&event, after));
                                }
                                event
                            }));
                        });
                        while let Some(entry) = pending.first_entry() {
                            if frontier.less_equal(entry.key()) {
                                break;
                            }
                            let (time, (capability, mut events)) = entry.remove_entry();
                            let applied = events.len();
                            let mut session = output.session(&capability);
                            let before = state.len();
                            let mut bytes = 0i64;
                            state.apply_epoch(&mut events, |update, diff| {
                                bytes += diff * (update.heap_bytes() + SLOT_BYTES) as i64;
                                session.give((update, time, diff));
                            });
                            // A buffer far larger than epochs now need (after a snapshot) is
                            // given back.
                            if events.capacity() > 4 * applied.max(SPARE_EVENTS) {
                                events.shrink_to(applied);
                            }
                            spare = events;
                            let change = state.len() as i64 - before as i64;
                            size.rows.fetch_add(change, Ordering::Relaxed);
                            size.bytes.fetch_add(bytes, Ordering::Relaxed);
                        }
                    }
                },
            )
            .as_collection()
    }
}

/// Whether `event` is an update with a placeholder for an unchanged TOASTed value.
pub(crate) fn has_unavailable_values(event: &ChangeEvent) -> bool {
    event.op == Op::Update
        && event
            .after
            .as_ref()
            .is_some_and(|after| after.values().iter().any(is_unavailable))
}

fn is_unavailable(value: &Value) -> bool {
    match value {
        Value::Str(text) | Value::Json(text) => &**text == UNAVAILABLE_VALUE,
        Value::Bytes(bytes) => &**bytes == UNAVAILABLE_VALUE.as_bytes(),
        _ => false,
    }
}

/// What a table's state holds: rows, and about how many bytes they take (each row's
/// [`Row::heap_bytes`] plus its slot in the table).
#[derive(Debug, Default)]
pub struct StateSize {
    /// Live rows, all workers.
    pub rows: AtomicI64,
    /// Their bytes, all workers.
    pub bytes: AtomicI64,
}

/// A row's slot in the state's table: its hash and handle (24 bytes), at half load.
const SLOT_BYTES: usize = 2 * 24;

/// Events an epoch buffer may keep room for whatever the epoch that used it last.
const SPARE_EVENTS: usize = 16_384;

/// The per-worker current rows and the epoch application logic (no dataflow types). Rows are
/// stored once, found by hashing their key columns, so a live key costs a slot in the table
/// (a hash and a pointer) plus the row itself.
#[derive(Debug, Default)]
pub struct UpsertState {
    key_columns: Vec<usize>,
    /// Each row with its key's hash: growing the table rehashes without fetching the rows, and
    /// a lookup compares a row's key only when the hashes agree.
    rows: RowTable,
    /// Scratch space of [`UpsertState::apply_run`], kept between epochs so that its memory
    /// stays mapped and warm.
    last_events: LastEvents,
}

/// Which events of a run are the last of their key: only those change the state.
#[derive(Debug, Default)]
struct LastEvents {
    /// The key hash of each event of the run (0 for an event that changes nothing).
    hashes: Vec<u64>,
    /// Whether an event of the run at a later source position has the same key.
    superseded: Vec<bool>,
    /// Per key seen in the run, the index of its latest event (an epoch holds far fewer than
    /// 2³² events: each takes over a hundred bytes).
    latest: HashTable<u32>,
}

/// Whether `op` sets its key's row (to its `after`).
fn is_upsert(op: Op) -> bool {
    matches!(op, Op::Create | Op::Update | Op::Read)
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
            ..UpsertState::default()
        }
    }

    /// Whether a row has `key` at the key columns.
    fn is_key<'a>(key_columns: &'a [usize], key: &'a Key) -> impl Fn(&Row) -> bool + 'a {
        move |row| {
            key_columns
                .iter()
                .zip(key.iter())
                .all(|(&i, k)| row.get(i) == Some(k))
        }
    }

    /// Applies one epoch's events (in any order: their positions give the source order) and
    /// reports the net row change of each key (one per key and run between truncates);
    /// `events` is left empty (its buffer can be reused).
    pub fn apply_epoch(&mut self, events: &mut Vec<ChangeEvent>, mut emit: impl FnMut(Row, i64)) {
        // Within a run each key's latest event is found by its position, so the events need
        // source order only where a truncate divides them into runs. (Sorting moves every
        // event, and with several workers an epoch's events arrive interleaved.)
        if events.iter().any(|event| event.op == Op::Truncate) {
            events.sort_by_key(|event| event.position);
        }
        let mut start = 0;
        while start < events.len() {
            let run = &mut events[start..];
            let truncate = run.iter().position(|event| event.op == Op::Truncate);
            let end = truncate.unwrap_or(run.len());
            self.apply_run(&mut run[..end], &mut emit);
            let Some(truncate) = truncate else { break };
            for row in self.rows.drain() {
                emit(row, -1);
            }
            start += truncate + 1;
        }
        events.clear();
    }

    /// Applies a run of events without truncates, in any order: per key, only its last event
    /// (by source position) counts, and it changes the row the key had before the run.
    fn apply_run(&mut self, events: &mut [ChangeEvent], emit: &mut impl FnMut(Row, i64)) {
        if events.iter().any(has_unavailable_values) {
            self.fill_unavailable_values(events);
        }
        let mut last_events = std::mem::take(&mut self.last_events);
        let LastEvents {
            hashes,
            superseded,
            latest,
        } = &mut last_events;
        hashes.clear();
        superseded.clear();
        superseded.resize(events.len(), false);
        latest.clear();
        for (index, event) in events.iter().enumerate() {
            let upsert_without_row = is_upsert(event.op) && event.after.is_none();
            if upsert_without_row {
                superseded[index] = true;
                hashes.push(0);
                continue;
            }
            let hash = hash_key(event.key.iter());
            hashes.push(hash);
            let same_key = |&other: &u32| {
                let other = other as usize;
                hashes[other] == hash && events[other].key == event.key
            };
            match latest.find_mut(hash, same_key) {
                Some(latest) => {
                    let earlier = *latest as usize;
                    if events[earlier].position < event.position {
                        superseded[earlier] = true;
                        *latest = index as u32;
                    } else {
                        superseded[index] = true;
                    }
                }
                None => {
                    latest.insert_unique(hash, index as u32, |&i| hashes[i as usize]);
                }
            }
        }
        for index in 0..events.len() {
            // The state is far larger than the caches, and an epoch's rows have left them: the
            // slot of a key applied 2 × PREFETCH_AHEAD events from now, and the rows (old and
            // new) of one PREFETCH_AHEAD from now, load while this event applies.
            let ahead = |distance: usize| {
                let ahead = index + distance;
                hashes.get(ahead).filter(|_| !superseded[ahead]).copied()
            };
            if let Some(hash) = ahead(2 * PREFETCH_AHEAD) {
                self.rows.prefetch_slot(hash);
            }
            if let Some(hash) = ahead(PREFETCH_AHEAD) {
                self.rows.prefetch_row(hash);
                if let Some(after) = &events[index + PREFETCH_AHEAD].after {
                    after.prefetch();
                }
            }
            if superseded[index] {
                continue;
            }
            let event = &mut events[index];
            let hash = hashes[index];
            let is_key = Self::is_key(&self.key_columns, &event.key);
            match event.after.take() {
                Some(after) if is_upsert(event.op) => {
                    let previous = self.rows.insert(hash, after.clone(), is_key);
                    if previous.as_ref() == Some(&after) {
                        continue;
                    }
                    emit(after, 1);
                    if let Some(previous) = previous {
                        emit(previous, -1);
                    }
                }
                _ => {
                    if let Some(previous) = self.rows.remove(hash, is_key) {
                        emit(previous, -1);
                    }
                }
            }
        }
        // Room far beyond what epochs now need (after a snapshot) is given back.
        if hashes.capacity() > 4 * events.len().max(SPARE_EVENTS) {
            last_events = LastEvents::default();
        }
        self.last_events = last_events;
    }

    /// Puts into each update's placeholders for unchanged TOASTed values the key's value
    /// before it: of the event before it in the run, else of the state. Where neither holds
    /// the key (a row the state never saw), the placeholder stays.
    fn fill_unavailable_values(&self, events: &mut [ChangeEvent]) {
        events.sort_by_key(|event| event.position);
        let mut latest: std::collections::HashMap<Key, Option<Row>> = Default::default();
        for event in events.iter_mut() {
            if has_unavailable_values(event) {
                let previous = match latest.get(&event.key) {
                    Some(row) => row.clone(),
                    None => {
                        let hash = hash_key(event.key.iter());
                        self.rows
                            .get(hash, Self::is_key(&self.key_columns, &event.key))
                            .cloned()
                    }
                };
                if let (Some(previous), Some(after)) = (previous, event.after.as_mut()) {
                    let mut values = after.values().to_vec();
                    for (value, old) in values.iter_mut().zip(previous.values()) {
                        if is_unavailable(value) {
                            *value = old.clone();
                        }
                    }
                    *after = Row::new(values);
                }
            }
            let row = event.after.clone().filter(|_| is_upsert(event.op));
            latest.insert(event.key.clone(), row);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Position;

    /// An event on key `id` (its row is `[id, status]`), at source offset `offset`.
    fn event(op: Op, id: i64, status: &str, offset: u64) -> ChangeEvent {
        let keyed = op != Op::Truncate;
        ChangeEvent {
            table: 0,
            op,
            key: Key::new(if keyed { vec![Value::Int(id)] } else { vec![] }),
            before: None,
            after: is_upsert(op).then(|| row(id, status)),
            position: Position::new(0, offset),
            event_time_ms: 0,
            tx: None,
            source_lsn: None,
        }
    }

    fn row(id: i64, status: &str) -> Row {
        Row::new(vec![Value::Int(id), Value::str(status)])
    }

    /// Applies `events` (listed out of source order) and returns what was emitted, sorted.
    fn apply(state: &mut UpsertState, mut events: Vec<ChangeEvent>) -> Vec<(Row, i64)> {
        events.reverse();
        let mut emitted = Vec::new();
        state.apply_epoch(&mut events, |row, diff| emitted.push((row, diff)));
        assert!(events.is_empty());
        emitted.sort();
        emitted
    }

    #[test]
    fn an_epoch_emits_one_net_change_per_key() {
        let mut state = UpsertState::new(vec![0]);
        let seeded = apply(
            &mut state,
            vec![event(Op::Create, 1, "new", 1), event(Op::Read, 2, "new", 2)],
        );
        assert_eq!(seeded, vec![(row(1, "new"), 1), (row(2, "new"), 1)]);

        let emitted = apply(
            &mut state,
            vec![
                event(Op::Update, 1, "paid", 3),
                event(Op::Update, 1, "shipped", 4),
                // Key 2 ends as it began: nothing to emit.
                event(Op::Delete, 2, "", 5),
                event(Op::Create, 2, "new", 6),
                // Key 3 is born and dies within the epoch.
                event(Op::Create, 3, "new", 7),
                event(Op::Tombstone, 3, "", 8),
                // An update without a row changes nothing.
                ChangeEvent {
                    after: None,
                    ..event(Op::Update, 4, "", 9)
                },
            ],
        );
        assert_eq!(emitted, vec![(row(1, "new"), -1), (row(1, "shipped"), 1)]);
        assert_eq!(state.len(), 2);
    }

    #[test]
    fn unchanged_toasted_values_come_from_the_keys_previous_row() {
        let mut state = UpsertState::new(vec![0]);
        apply(&mut state, vec![event(Op::Create, 1, "long text", 1)]);
        // From the state: the row does not change, so nothing is emitted.
        let unchanged = apply(&mut state, vec![event(Op::Update, 1, UNAVAILABLE_VALUE, 2)]);
        assert_eq!(unchanged, vec![]);
        // From the event before it in the same epoch.
        let emitted = apply(
            &mut state,
            vec![
                event(Op::Update, 1, "longer text", 3),
                event(Op::Update, 1, UNAVAILABLE_VALUE, 4),
                event(Op::Create, 2, "other", 5),
                event(Op::Update, 2, UNAVAILABLE_VALUE, 6),
            ],
        );
        assert_eq!(
            emitted,
            vec![
                (row(1, "long text"), -1),
                (row(1, "longer text"), 1),
                (row(2, "other"), 1)
            ]
        );
        // A key the state never held keeps the placeholder (nothing to take it from).
        let unknown = apply(&mut state, vec![event(Op::Update, 9, UNAVAILABLE_VALUE, 7)]);
        assert_eq!(unknown, vec![(row(9, UNAVAILABLE_VALUE), 1)]);
    }

    #[test]
    fn a_truncate_retracts_the_rows_it_finds_and_later_events_apply_after_it() {
        let mut state = UpsertState::new(vec![0]);
        apply(
            &mut state,
            vec![
                event(Op::Create, 1, "new", 1),
                event(Op::Create, 2, "new", 2),
            ],
        );
        let emitted = apply(
            &mut state,
            vec![
                event(Op::Update, 1, "paid", 3),
                event(Op::Truncate, 0, "", 4),
                event(Op::Create, 3, "new", 5),
                event(Op::Update, 3, "paid", 6),
            ],
        );
        let mut net = BTreeMap::new();
        for (row, diff) in emitted {
            *net.entry(row).or_insert(0) += diff;
        }
        net.retain(|_, diff| *diff != 0);
        let expected = BTreeMap::from([
            (row(1, "new"), -1),
            (row(2, "new"), -1),
            (row(3, "paid"), 1),
        ]);
        assert_eq!(net, expected);
        assert_eq!(state.len(), 1);
    }
}
