//! Stateful operators against from-scratch oracles, with 1 and 4 workers: upsert (current
//! state), changes by key (a replica without state), group-by aggregates over state, and
//! event-time windows with a watermark.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::ProbeHandle;

use crate::dataflow::{table, Collection, Time};
use crate::{
    col, count, sum, ChangeEvent, Column, ColumnType, Decimal, Key, Op, Position, Row, Schema,
    TableSpec, Value, Window,
};
use differential_dataflow::AsCollection;

fn spec() -> TableSpec {
    TableSpec {
        name: "t".into(),
        schema: Schema::new(vec![
            Column::new("id", ColumnType::Int64).not_null(),
            Column::new("status", ColumnType::String),
            Column::new("quantity", ColumnType::Int32),
            Column::new(
                "price",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
        ]),
        key: vec![0],
        keep_before: false,
        decoded: None,
    }
}

/// One generated change: epoch, op, key, status, quantity, price cents, event time (s).
type Change = (Time, Op, i64, u8, i64, i64, i64);

fn to_event((_, op, id, status, quantity, cents, ts): Change, offset: u64) -> ChangeEvent {
    let row = Row::new(vec![
        Value::Int(id),
        Value::str(["new", "paid", "shipped"][status as usize % 3]),
        if quantity == 0 {
            Value::Null
        } else {
            Value::Int(quantity)
        },
        Value::Decimal(Decimal::new(i128::from(cents), 2).unwrap()),
    ]);
    let keyed = op != Op::Truncate;
    ChangeEvent {
        table: 0,
        op,
        key: if keyed {
            Key::new(vec![Value::Int(id)])
        } else {
            Key::new(vec![])
        },
        before: None,
        after: matches!(op, Op::Create | Op::Update | Op::Read).then_some(row),
        position: Position::new(0, offset),
        event_time_ms: ts * 1000,
        tx: None,
        source_lsn: None,
    }
}

fn changes() -> impl Strategy<Value = Vec<Change>> {
    let op = prop_oneof![
        4 => Just(Op::Create),
        4 => Just(Op::Update),
        2 => Just(Op::Delete),
        1 => Just(Op::Tombstone),
        1 => Just(Op::Read),
        1 => Just(Op::Truncate),
    ];
    prop::collection::vec(
        (
            0u64..3,
            op,
            0i64..8,
            0u8..3,
            0i64..5,
            0i64..10_000,
            0i64..60,
        ),
        0..60,
    )
    .prop_map(|mut changes| {
        // epochs ascend; within an epoch, source order is the vector order
        let mut epoch = 0;
        for change in &mut changes {
            epoch += change.0;
            change.0 = epoch;
        }
        changes
    })
}

/// Runs `build` over the events on `workers` workers; returns every output update.
fn run<D, F>(workers: usize, changes: &[Change], build: F) -> Vec<(D, Time, i64)>
where
    D: Clone + Send + 'static + std::fmt::Debug,
    F: for<'s> Fn(Collection<'s, ChangeEvent>) -> Collection<'s, D> + Send + Sync + 'static,
{
    let changes = Arc::new(changes.to_vec());
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    timely::execute(timely::Config::process(workers), move |worker| {
        let sink = Arc::clone(&sink);
        let probe = ProbeHandle::new();
        let mut input = worker.dataflow::<Time, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<(ChangeEvent, Time, i64)>>();
            build(stream.as_collection())
                .inner
                .inspect(move |update| sink.lock().unwrap().push(update.clone()))
                .probe_with(&probe);
            input
        });
        if worker.index() == 0 {
            for (offset, change) in changes.iter().enumerate() {
                if change.0 > *input.time() {
                    // Let operators act on the epochs so far, as they would on a live source:
                    // later epochs then arrive while earlier ones are still in flight.
                    input.advance_to(change.0);
                    for _ in 0..offset % 3 {
                        worker.step();
                    }
                }
                input.send((to_event(*change, offset as u64), change.0, 1));
            }
        }
        drop(input);
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    let updates = out.lock().unwrap().clone();
    updates
}

/// The collection at each epoch `0..=last`, accumulated from updates.
fn snapshots<D: Ord + Clone>(updates: &[(D, Time, i64)], last: Time) -> Vec<BTreeMap<D, i64>> {
    (0..=last)
        .map(|epoch| {
            let mut acc = BTreeMap::new();
            for (d, t, diff) in updates.iter().filter(|u| u.1 <= epoch) {
                *acc.entry(d.clone()).or_insert(0) += diff;
                let _ = t;
            }
            acc.retain(|_, c| *c != 0);
            acc
        })
        .collect()
}

/// Oracle: replay events in order, per epoch, into a map.
fn oracle_state(changes: &[Change], epoch: Time) -> BTreeMap<Row, i64> {
    let mut state: HashMap<i64, Row> = HashMap::new();
    for (offset, change) in changes.iter().enumerate().filter(|(_, c)| c.0 <= epoch) {
        let event = to_event(*change, offset as u64);
        match change.1 {
            Op::Truncate => state.clear(),
            Op::Delete | Op::Tombstone => {
                state.remove(&change.2);
            }
            _ => {
                state.insert(change.2, event.after.unwrap());
            }
        }
    }
    state.into_values().map(|row| (row, 1)).collect()
}

fn oracle_status(changes: &[Change], epoch: Time) -> BTreeMap<Row, i64> {
    let mut groups: BTreeMap<Value, (i64, Option<i128>)> = BTreeMap::new();
    for row in oracle_state(changes, epoch).into_keys() {
        let entry = groups.entry(row[1].clone()).or_insert((0, None));
        entry.0 += 1;
        if let (Value::Int(q), Value::Decimal(p)) = (&row[2], &row[3]) {
            *entry.1.get_or_insert(0) += i128::from(*q) * p.unscaled;
        }
    }
    groups
        .into_iter()
        .map(|(status, (n, revenue))| {
            let revenue =
                revenue.map_or(Value::Null, |r| Value::Decimal(Decimal::new(r, 2).unwrap()));
            (Row::new(vec![status, Value::Int(n), revenue]), 1)
        })
        .collect()
}

fn last_epoch(changes: &[Change]) -> Time {
    changes.last().map_or(0, |c| c.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn upsert_matches_replay(changes in changes()) {
        for workers in [1, 4] {
            let updates = run(workers, &changes, |events| {
                table::state(events, &spec(), Rc::default(), "state", Arc::default()).rows().clone()
            });
            for (epoch, snapshot) in snapshots(&updates, last_epoch(&changes)).into_iter().enumerate() {
                prop_assert_eq!(&snapshot, &oracle_state(&changes, epoch as Time), "workers={} epoch={}", workers, epoch);
            }
        }
    }

    #[test]
    fn changes_by_key_deleted_by_key_match_replay(changes in changes()) {
        // Truncates need state: that path turns them into dead letters.
        let changes: Vec<Change> = changes.into_iter().filter(|c| c.1 != Op::Truncate).collect();
        for workers in [1, 4] {
            let updates = run(workers, &changes, |events| {
                table::replica_by_key(events, &spec(), Rc::default(), "by-key").rows().clone()
            });
            // What a table deleting by key holds: each epoch's retractions remove the key's
            // row of earlier epochs, then its new rows go in.
            let mut held: BTreeMap<Value, Row> = BTreeMap::new();
            for epoch in 0..=last_epoch(&changes) {
                let of_epoch = || updates.iter().filter(move |u| u.1 == epoch);
                for (row, _, diff) in of_epoch() {
                    prop_assert!(*diff == 1 || *diff == -1);
                    if *diff < 0 {
                        held.remove(&row[0]);
                    }
                }
                for (row, _, _) in of_epoch().filter(|u| u.2 > 0) {
                    let columns = row.values()[..4].to_vec();
                    prop_assert!(held.insert(row[0].clone(), Row::new(columns)).is_none(), "two rows for one key");
                }
                let snapshot: BTreeMap<Row, i64> = held.values().map(|r| (r.clone(), 1)).collect();
                prop_assert_eq!(&snapshot, &oracle_state(&changes, epoch), "workers={} epoch={}", workers, epoch);
            }
        }
    }

    #[test]
    fn status_aggregate_matches_recomputation(changes in changes()) {
        for workers in [1, 4] {
            let updates = run(workers, &changes, |events| {
                table::state(events, &spec(), Rc::default(), "state", Arc::default())
                    .group_by(["status"]).unwrap()
                    .agg([count(), sum(col("quantity") * col("price"))]).unwrap()
                    .rows().clone()
            });
            for (epoch, snapshot) in snapshots(&updates, last_epoch(&changes)).into_iter().enumerate() {
                prop_assert_eq!(&snapshot, &oracle_status(&changes, epoch as Time), "workers={} epoch={}", workers, epoch);
            }
        }
    }

    #[test]
    fn windows_match_watermark_oracle(changes in changes()) {
        let window = Window::tumbling(Duration::from_secs(10)).lateness(Duration::from_secs(15));
        // Oracle: a row counts unless its window ended at or before the watermark, which is the
        // largest event time of earlier epochs minus the lateness.
        let mut expected: BTreeMap<Row, i64> = BTreeMap::new();
        let mut late = 0i64;
        let tombstone_free: Vec<Change> = changes.iter().copied().filter(|c| c.1 != Op::Tombstone).collect();
        for change in &tombstone_free {
            let earlier = tombstone_free.iter().filter(|c| c.0 < change.0).map(|c| c.6 * 1_000_000).max();
            let watermark = earlier.map_or(i64::MIN, |m| m - 15_000_000);
            let start = change.6 / 10 * 10 * 1_000_000;
            if start + 10_000_000 <= watermark {
                late += 1;
                continue;
            }
            let op = ["c", "u", "d", "r", "t", "-"][change.1 as usize];
            *expected.entry(Row::new(vec![
                Value::Timestamp(start),
                Value::str(op),
                Value::Int(0),
            ])).or_insert(0) += 1;
        }
        let expected: BTreeMap<Row, i64> = expected
            .into_iter()
            .map(|(row, n)| (Row::new(vec![row[0].clone(), row[1].clone(), Value::Int(n)]), 1))
            .collect();
        for workers in [1, 4] {
            let late_seen = Arc::new(Mutex::new(0i64));
            let late_sink = Arc::clone(&late_seen);
            let updates = run(workers, &changes, move |events| {
                let side: crate::dataflow::relation::SideOutputs = Rc::default();
                let windowed = table::changes(events, &spec(), Rc::clone(&side))
                    .window("w", "event_time", window).unwrap();
                let late_sink = Arc::clone(&late_sink);
                for dead in side.borrow().iter() {
                    let late_sink = Arc::clone(&late_sink);
                    dead.inner.clone().inspect(move |(_, _, d)| *late_sink.lock().unwrap() += d);
                }
                windowed.group_by(["window_start", "op"]).unwrap().agg([count()]).unwrap().rows().clone()
            });
            let last = last_epoch(&changes);
            let final_snapshot = snapshots(&updates, last).pop().unwrap_or_default();
            prop_assert_eq!(&final_snapshot, &expected, "workers={}", workers);
            prop_assert_eq!(*late_seen.lock().unwrap(), late, "late events, workers={}", workers);
        }
    }
}

/// A row of a later epoch waits for every worker's maxima of the earlier ones: worker 1 holds
/// epoch 0 (whose maximum makes worker 0's epoch-1 row late) open while worker 0 runs ahead.
#[test]
fn a_window_waits_for_the_maxima_of_every_workers_earlier_epochs() {
    let late = Arc::new(Mutex::new(0i64));
    let windowed = Arc::new(Mutex::new(Vec::new()));
    let (late_sink, windowed_sink) = (Arc::clone(&late), Arc::clone(&windowed));
    timely::execute(timely::Config::process(2), move |worker| {
        let probe = ProbeHandle::new();
        let (late_sink, windowed_sink) = (Arc::clone(&late_sink), Arc::clone(&windowed_sink));
        let mut input = worker.dataflow::<Time, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<(ChangeEvent, Time, i64)>>();
            let side: crate::dataflow::relation::SideOutputs = Rc::default();
            let window = Window::tumbling(Duration::from_secs(10)).lateness(Duration::from_secs(5));
            let rows = table::changes(stream.as_collection(), &spec(), Rc::clone(&side))
                .window("w", "event_time", window)
                .unwrap();
            for dead in side.borrow().iter() {
                let late_sink = Arc::clone(&late_sink);
                dead.inner
                    .clone()
                    .inspect(move |(_, _, d)| *late_sink.lock().unwrap() += d)
                    .probe_with(&probe);
            }
            rows.rows()
                .inner
                .clone()
                .inspect(move |(row, _, d)| {
                    windowed_sink.lock().unwrap().push((row[0].clone(), *d))
                })
                .probe_with(&probe);
            input
        });
        if worker.index() == 1 {
            input.send((to_event((0, Op::Create, 1, 0, 1, 100, 1000), 0), 0, 1));
            let held = std::time::Instant::now();
            while held.elapsed() < Duration::from_millis(300) {
                worker.step();
            }
        } else {
            input.advance_to(1);
            input.send((to_event((1, Op::Create, 2, 0, 1, 100, 0), 1), 1, 1));
        }
        drop(input);
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    assert_eq!(*late.lock().unwrap(), 1, "the epoch-1 row at 0 s is late");
    assert_eq!(
        *windowed.lock().unwrap(),
        vec![(Value::Timestamp(1_000_000_000), 1)],
        "only the epoch-0 row at 1000 s is in a window"
    );
}
