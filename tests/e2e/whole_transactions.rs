//! Every Iceberg snapshot and every console batch holds whole source transactions. Debezium
//! streams with multi-event transactions, deletes followed by tombstones, malformed records and
//! schema-wrapped envelopes at random places are replayed by `orders-replica` (1, 2 and 4
//! workers, an epoch per transaction and a commit per epoch), from a file and
//! from Kafka partitions on the real broker. Each snapshot, read by pyiceberg at its own id,
//! and each console batch must equal the source replayed to the position it records, and no
//! transaction may have changes on both sides of that position.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::iceberg::{pyiceberg_available, read_table};
use crate::support::kafka::{Broker, Outgoing};
use crate::support::transactions::{
    for_kafka, oracles, transaction_fixture, whole_transactions_through, TxStream,
};
use crate::support::Capture;
use crate::support::{parse_console, table_at, ConsoleLine};
use tributary_engine::sources::SourceSpec;
use tributary_engine::{
    run, shared_writer, ConsoleFormat, ConsoleMode, ConsoleOptions, IcebergOptions, RunOptions,
    RunSummary,
};

const TABLE: &str = "demo.orders_realtime_replica";
const TOPIC: &str = "dbserver1.public.orders";

/// Runs `orders-replica` to the end of `source` with an epoch per transaction and a commit per
/// epoch; returns its summary and console lines.
fn replicate(
    source: SourceSpec,
    workers: usize,
    warehouse: &std::path::Path,
) -> (RunSummary, Vec<ConsoleLine>) {
    let capture = Capture::default();
    let mut iceberg = IcebergOptions::new(warehouse);
    iceberg.commit_interval = Duration::ZERO;
    let summary = run(
        &tributary::find("orders-replica").unwrap(),
        RunOptions {
            source,
            workers,
            epoch: Duration::ZERO,
            until_idle: true,
            console: ConsoleOptions {
                format: ConsoleFormat::Jsonl,
                mode: ConsoleMode::Update,
                max_rows: 20,
                writer: shared_writer(capture.clone()),
            },
            iceberg,
            ..RunOptions::default()
        },
    )
    .unwrap();
    let console = parse_console(&capture.0.lock().unwrap());
    (summary, console)
}

/// Records included per stream at `positions` (stream name → last offset included):
/// `first_offset` is the offset of each stream's first record (1 for file lines, 0 for Kafka).
fn included(names: &[String], positions: &BTreeMap<String, u64>, first_offset: u64) -> Vec<usize> {
    names
        .iter()
        .map(|name| {
            positions
                .get(name)
                .map_or(0, |p| (p + 1 - first_offset) as usize)
        })
        .collect()
}

/// Every console batch and every Iceberg snapshot of a finished run holds whole transactions
/// and equals the source replayed to its position.
fn check_run(
    streams: &[TxStream],
    names: &[String],
    first_offset: u64,
    (summary, console): (RunSummary, Vec<ConsoleLine>),
    warehouse: &std::path::Path,
    what: &str,
) {
    assert!(
        summary.epochs.len() > 30,
        "{what}: expected many epochs, got {}",
        summary.epochs.len()
    );
    for record in &summary.epochs {
        let positions = record
            .positions
            .iter()
            .map(|(stream, offset)| (summary.streams[*stream as usize].clone(), *offset))
            .collect();
        let at = format!("{what}, batch {}", record.epoch);
        let changes =
            whole_transactions_through(streams, &included(names, &positions, first_offset), &at);
        let (_, status) = oracles(&changes);
        assert_eq!(table_at(&console, "status", record.epoch), status, "{at}");
    }
    let (snapshots, _) = read_table(warehouse, TABLE, false);
    assert!(
        snapshots.len() > 10,
        "{what}: expected many snapshots, got {}",
        snapshots.len()
    );
    for (i, snapshot) in snapshots.iter().enumerate() {
        let positions: BTreeMap<String, u64> =
            serde_json::from_str(&snapshot.summary["tributary.source-positions"]).unwrap();
        let at = format!("{what}, snapshot {i}");
        let changes =
            whole_transactions_through(streams, &included(names, &positions, first_offset), &at);
        let (replica, _) = oracles(&changes);
        assert!(
            snapshot.rows == replica.rows(),
            "{at}: rows differ from the replay"
        );
    }
    let last = summary.epochs.last().unwrap();
    let total: Vec<usize> = streams.iter().map(Vec::len).collect();
    let named = last
        .positions
        .iter()
        .map(|(stream, offset)| (summary.streams[*stream as usize].clone(), *offset))
        .collect();
    assert_eq!(
        included(names, &named, first_offset),
        total,
        "{what}: the last batch covers every record"
    );
}

#[test]
fn file_snapshots_and_batches_hold_whole_transactions() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stream = transaction_fixture(120, 30, 3, 25);
    let path = dir.path().join("orders.jsonl");
    let lines: Vec<&str> = stream.iter().filter_map(|r| r.value.as_deref()).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let name = format!("file:{}", path.display());
    for workers in [1, 2, 4] {
        let warehouse = dir.path().join(format!("warehouse-{workers}"));
        let result = replicate(SourceSpec::File(path.clone()), workers, &warehouse);
        assert_eq!(result.0.streams, std::slice::from_ref(&name));
        check_run(
            std::slice::from_ref(&stream),
            std::slice::from_ref(&name),
            1,
            result,
            &warehouse,
            &format!("file, {workers} worker(s)"),
        );
    }
}

#[test]
fn kafka_snapshots_and_batches_hold_whole_transactions() {
    let Some(broker) = Broker::start_or_skip("whole_transactions") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    const PARTITIONS: usize = 3;
    let streams = for_kafka(&transaction_fixture(120, 30, 5, 25), PARTITIONS);
    broker.create_topic(TOPIC, PARTITIONS as u32);
    let messages: Vec<Outgoing> = streams
        .iter()
        .enumerate()
        .flat_map(|(partition, stream)| {
            stream.iter().map(move |record| Outgoing {
                topic: TOPIC.to_owned(),
                partition: partition as i32,
                key: record
                    .key
                    .map(|k| format!(r#"{{"order_id":{k}}}"#).into_bytes()),
                value: record.value.clone().map(String::into_bytes),
            })
        })
        .collect();
    broker.produce(&messages);
    let names: Vec<String> = (0..PARTITIONS).map(|p| format!("{TOPIC}/{p}")).collect();
    let dir = tempfile::tempdir().unwrap();
    for workers in [1, 2, 4] {
        let mut source = SourceSpec::parse(&format!("kafka://{}/{TOPIC}", broker.addr)).unwrap();
        if let SourceSpec::Kafka(spec) = &mut source {
            spec.group = format!("whole-transactions-{workers}");
            spec.idle_quiet = Duration::from_millis(500);
        }
        let warehouse = dir.path().join(format!("warehouse-{workers}"));
        let result = replicate(source, workers, &warehouse);
        let what = format!("kafka, {PARTITIONS} partitions, {workers} worker(s)");
        check_run(&streams, &names, 0, result, &warehouse, &what);
    }
}
