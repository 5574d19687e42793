//! Epoch assignment: closes only where every stream is between transactions, whatever sits
//! between them (tombstones, malformed lines), with one and several streams per reader.

use std::collections::HashMap;

use proptest::prelude::*;
use tributary_operators::Position;

use super::*;
use crate::positions::{EpochLedger, StreamPositions};

/// What a test record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A change event of this transaction.
    Tx(u64),
    /// A change event without a transaction id.
    NoTx,
    /// A Kafka tombstone (no value).
    Tombstone,
    /// A line that is not JSON.
    Malformed,
}

fn record(stream: u32, offset: u64, kind: Kind) -> RawRecord {
    let value = match kind {
        Kind::Tx(tx) => Some(format!(r#"{{"op":"c","source":{{"txId":{tx}}}}}"#)),
        Kind::NoTx => Some(r#"{"op":"c","source":{}}"#.to_owned()),
        Kind::Tombstone => None,
        Kind::Malformed => Some("{oops".to_owned()),
    };
    RawRecord {
        key: None,
        value: value.map(|v| Arc::from(v.as_bytes())),
        topic: None,
        position: Position::new(stream, offset),
        line: true,
    }
}

/// `(epoch, stream, offset)` of every record, in the order assigned.
type Assigned = Vec<(Time, u32, u64)>;

fn collector(assigned: &mut Assigned) -> impl FnMut(Emit) + '_ {
    let mut current = 0;
    move |emit| match emit {
        Emit::Advance(e) => current = e,
        Emit::Record(r) => assigned.push((current, r.position.stream, r.position.offset)),
    }
}

/// Feeds `batches` (settling after each, as the runtime does after each poll), then finishes.
fn assign(mut ingestor: Ingestor, batches: Vec<Vec<RawRecord>>) -> Assigned {
    let mut assigned = Vec::new();
    let mut emit = collector(&mut assigned);
    for batch in batches {
        ingestor.ingest(batch, &mut emit);
        ingestor.settle(false, &mut emit);
    }
    ingestor.finish(&mut emit);
    drop(emit);
    assigned
}

fn every_transaction(interval: Duration) -> Ingestor {
    Ingestor::new(Arc::default(), interval).with_quiet(Duration::from_secs(3600))
}

fn one_stream(kinds: &[Kind]) -> Vec<RawRecord> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| record(0, i as u64 + 1, *kind))
        .collect()
}

fn epochs(assigned: &Assigned) -> Vec<(Time, u64)> {
    assigned.iter().map(|(e, _, o)| (*e, *o)).collect()
}

#[test]
fn tombstones_and_malformed_lines_stay_inside_their_transaction() {
    use Kind::*;
    let records = one_stream(&[
        Tx(7),
        Tx(7),
        Tombstone,
        Tx(7),
        Tx(8),
        Malformed,
        Tombstone,
        Tx(8),
        Tx(9),
        Tombstone,
    ]);
    for batches in [
        vec![records.clone()],
        records.into_iter().map(|r| vec![r]).collect(),
    ] {
        assert_eq!(
            epochs(&assign(every_transaction(Duration::ZERO), batches)),
            vec![
                (0, 1),
                (0, 2),
                (0, 3),
                (0, 4),
                (1, 5),
                (1, 6),
                (1, 7),
                (1, 8),
                (2, 9),
                (2, 10)
            ]
        );
    }
}

#[test]
fn events_without_transaction_ids_are_transactions_of_their_own() {
    use Kind::*;
    let records = one_stream(&[NoTx, NoTx, Tombstone, NoTx]);
    assert_eq!(
        epochs(&assign(every_transaction(Duration::ZERO), vec![records])),
        vec![(0, 1), (1, 2), (1, 3), (2, 4)]
    );
}

#[test]
fn an_event_without_an_id_on_a_stream_with_ids_is_inside_its_transaction() {
    use Kind::*;
    let records = one_stream(&[Tx(7), NoTx, Tx(7), Tx(8)]);
    assert_eq!(
        epochs(&assign(every_transaction(Duration::ZERO), vec![records])),
        vec![(0, 1), (0, 2), (0, 3), (1, 4)]
    );
}

#[test]
fn an_epoch_that_falls_due_between_batches_still_closes_between_transactions() {
    let mut ingestor = every_transaction(Duration::from_millis(20));
    let mut assigned = Vec::new();
    let mut take = collector(&mut assigned);
    ingestor.ingest(vec![record(0, 1, Kind::Tx(7))], &mut take);
    std::thread::sleep(Duration::from_millis(30));
    ingestor.settle(false, &mut take);
    let batch = vec![
        record(0, 2, Kind::Tx(7)),
        record(0, 3, Kind::Tombstone),
        record(0, 4, Kind::Tx(8)),
        record(0, 5, Kind::Tx(8)),
    ];
    ingestor.ingest(batch, &mut take);
    drop(take);
    assert_eq!(
        epochs(&assigned),
        vec![(0, 1), (0, 2), (0, 3), (1, 4), (1, 5)]
    );
}

#[test]
fn interleaved_streams_close_where_each_is_between_transactions() {
    use Kind::*;
    let batch = vec![
        record(0, 1, Tx(5)),
        record(1, 1, Tx(9)),
        record(0, 2, Tx(5)),
        record(1, 2, Tombstone),
        record(0, 3, Tx(6)),
        record(0, 4, Tombstone),
        record(1, 3, Tx(9)),
        record(0, 5, Tx(6)),
        record(1, 4, Tx(10)),
    ];
    let assigned = assign(every_transaction(Duration::ZERO), vec![batch]);
    let of = |stream| {
        assigned
            .iter()
            .filter(|(_, s, _)| *s == stream)
            .map(|(e, _, o)| (*e, *o))
            .collect::<Vec<_>>()
    };
    // Epoch 0 closes once stream 0 leaves transaction 5; stream 1 had nothing in it yet, so
    // its records wait for epoch 1, which closes once stream 1 leaves transaction 9; and so on.
    assert_eq!(of(0), vec![(0, 1), (0, 2), (2, 3), (2, 4), (2, 5)]);
    assert_eq!(of(1), vec![(1, 1), (1, 2), (1, 3), (3, 4)]);
}

#[test]
fn a_stream_quiet_inside_a_transaction_is_taken_as_complete_after_the_quiet_time() {
    let mut ingestor =
        Ingestor::new(Arc::default(), Duration::ZERO).with_quiet(Duration::from_millis(30));
    let mut advanced = Vec::new();
    let mut take = |emit| {
        if let Emit::Advance(e) = emit {
            advanced.push(e);
        }
    };
    ingestor.ingest(
        vec![record(0, 1, Kind::Tx(5)), record(0, 2, Kind::Tx(5))],
        &mut take,
    );
    ingestor.settle(false, &mut take);
    assert_eq!(ingestor.epoch(), 0, "the transaction may go on");
    std::thread::sleep(Duration::from_millis(40));
    ingestor.settle(false, &mut take);
    assert_eq!(ingestor.epoch(), 1, "quiet long enough");
    assert_eq!(advanced, [1]);
}

#[test]
fn a_source_at_a_transaction_end_closes_at_once() {
    let mut ingestor = every_transaction(Duration::ZERO);
    ingestor.ingest(vec![record(0, 1, Kind::Tx(5))], |_| {});
    ingestor.settle(false, |_| {});
    assert_eq!(ingestor.epoch(), 0);
    ingestor.settle(true, |_| {});
    assert_eq!(ingestor.epoch(), 1);
}

#[test]
fn a_stop_ends_at_the_next_boundary_and_assigns_nothing_after_it() {
    use Kind::*;
    let mut ingestor = Ingestor::new(Arc::default(), Duration::from_secs(3600))
        .with_quiet(Duration::from_secs(3600));
    let mut assigned = Vec::new();
    let mut take = collector(&mut assigned);
    ingestor.ingest(vec![record(0, 1, Tx(5))], &mut take);
    ingestor.request_stop(&mut take);
    assert!(!ingestor.stopped(), "transaction 5 may go on");
    ingestor.ingest(
        vec![
            record(0, 2, Tx(5)),
            record(0, 3, Tx(6)),
            record(0, 4, Tx(6)),
        ],
        &mut take,
    );
    assert!(ingestor.stopped());
    ingestor.finish(&mut take);
    drop(take);
    assert_eq!(epochs(&assigned), vec![(0, 1), (0, 2)]);
    assert_eq!(ingestor.epochs().len(), 1);
    assert_eq!(ingestor.epochs()[0].positions, BTreeMap::from([(0, 2)]));
}

#[test]
fn closed_epochs_record_positions() {
    let mut ingestor = Ingestor::new(Arc::default(), Duration::from_secs(3600));
    ingestor.ingest(
        vec![record(0, 1, Kind::NoTx), record(0, 2, Kind::NoTx)],
        |_| {},
    );
    assert_eq!(ingestor.close_epoch(), 1);
    assert_eq!(ingestor.close_epoch(), 1, "an empty epoch does not close");
    assert_eq!(
        ingestor.epochs(),
        &[EpochRecord {
            epoch: 0,
            positions: BTreeMap::from([(0, 2)])
        }]
    );
}

#[test]
fn readers_on_one_clock_close_epochs_in_step() {
    let clock = EpochClock::default();
    let ledger = EpochLedger::default();
    let names = vec!["a".to_owned(), "b".to_owned()];
    let reader = || {
        every_transaction(Duration::from_secs(3600))
            .with_ledger(ledger.clone(), names.clone())
            .with_clock(clock.clone())
    };
    let (mut first, mut second) = (reader(), reader());
    let b = |offset| record(1, offset, Kind::NoTx);
    first.ingest(vec![record(0, 1, Kind::NoTx)], |_| {});
    second.ingest(vec![b(5)], |_| {});
    assert!(!second.due());
    assert_eq!(first.close_epoch(), 1);
    assert!(second.due(), "the other reader opened epoch 1");
    assert_eq!(first.close_epoch(), 1, "nothing new: no further epoch");
    let mut advanced = Vec::new();
    second.ingest(vec![b(6), b(7)], |emit| {
        if let Emit::Advance(epoch) = emit {
            advanced.push(epoch);
        }
    });
    assert_eq!(
        advanced,
        [1],
        "closes at its first boundary: record 6 is a transaction of its own"
    );
    assert_eq!(second.close_epoch(), 2);
    assert!(first.due());
    assert_eq!(
        first.close_epoch(),
        2,
        "an empty reader jumps to the newest epoch"
    );
    assert_eq!(
        ledger.positions_through(0),
        Some(StreamPositions::from([("a".into(), 1), ("b".into(), 5)]))
    );
    assert_eq!(
        ledger.positions_through(1),
        Some(StreamPositions::from([("a".into(), 1), ("b".into(), 7)]))
    );
}

/// Per stream: transactions of 1–4 change events, each maybe followed by a tombstone, with
/// malformed lines anywhere; or (`with_ids = false`) events without transaction ids.
fn stream_kinds() -> impl Strategy<Value = Vec<Kind>> {
    let transaction = (1usize..=4, proptest::collection::vec(0u8..10, 4));
    (any::<bool>(), proptest::collection::vec(transaction, 1..12)).prop_map(
        |(with_ids, transactions)| {
            let mut kinds = Vec::new();
            for (tx, (events, extras)) in transactions.into_iter().enumerate() {
                for extra in extras.into_iter().take(events) {
                    kinds.push(if with_ids {
                        Kind::Tx(tx as u64 + 100)
                    } else {
                        Kind::NoTx
                    });
                    match extra {
                        0 | 1 => kinds.push(Kind::Tombstone),
                        2 => kinds.push(Kind::Malformed),
                        _ => {}
                    }
                }
            }
            kinds
        },
    )
}

proptest! {
    /// Whatever the interleaving of streams and batches: every record is assigned once, in
    /// its stream's order, and no transaction has events in two epochs.
    #[test]
    fn no_epoch_splits_a_transaction(
        streams in proptest::collection::vec(stream_kinds(), 1..4),
        picks in proptest::collection::vec(any::<u32>(), 200),
        batch_sizes in proptest::collection::vec(1usize..8, 100),
    ) {
        // Interleave the streams by `picks`, then cut the sequence into batches.
        let mut next = vec![0usize; streams.len()];
        let mut sequence = Vec::new();
        let mut pick = picks.iter().cycle();
        while next.iter().zip(&streams).any(|(n, s)| *n < s.len()) {
            let open: Vec<usize> =
                (0..streams.len()).filter(|s| next[*s] < streams[*s].len()).collect();
            let stream = open[*pick.next().unwrap_or(&0) as usize % open.len()];
            let offset = next[stream];
            sequence.push(record(stream as u32, offset as u64 + 1, streams[stream][offset]));
            next[stream] += 1;
        }
        let total = sequence.len();
        let mut batches = Vec::new();
        let mut rest = sequence.into_iter();
        for size in batch_sizes.iter().cycle() {
            let batch: Vec<RawRecord> = rest.by_ref().take(*size).collect();
            if batch.is_empty() {
                break;
            }
            batches.push(batch);
        }
        let assigned = assign(every_transaction(Duration::ZERO), batches);

        prop_assert_eq!(assigned.len(), total);
        prop_assert!(assigned.windows(2).all(|w| w[0].0 <= w[1].0), "epochs go forward");
        let mut epoch_of_tx: HashMap<(u32, u64), Time> = HashMap::new();
        let mut last_offset: HashMap<u32, u64> = HashMap::new();
        for (epoch, stream, offset) in &assigned {
            let previous = last_offset.insert(*stream, *offset).unwrap_or(0);
            prop_assert_eq!(previous + 1, *offset, "stream {} out of order", stream);
            if let Kind::Tx(tx) = streams[*stream as usize][*offset as usize - 1] {
                let first = *epoch_of_tx.entry((*stream, tx)).or_insert(*epoch);
                prop_assert_eq!(first, *epoch, "transaction {} of stream {} split", tx, stream);
            }
        }
    }
}
