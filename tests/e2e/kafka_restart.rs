//! Killing a Kafka-fed run mid-stream: the consumer group's committed offsets never run ahead
//! of what the sinks had handled; running again gives exactly the oracle's result — `op-counts`
//! (console only) recomputes from the earliest offsets, `orders-replica` resumes its Iceberg
//! table from the per-partition offsets of its last snapshot, and pyiceberg reads the final
//! table equal to the oracle, no row lost or duplicated; after a complete run the group is
//! committed to the end of every partition, and `--kafka-start committed` then has nothing left
//! to read.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::Path;

use crate::support::iceberg::{pyiceberg_available, read_table};
use crate::support::kafka::Broker;
use crate::support::kafka_workload::{orders_workload, CUSTOMERS, ORDERS};
use crate::support::{parse_console, run_tributary, table_at, tributary_bin, ConsoleLine};

const TABLE: &str = "demo.orders_realtime_replica";

const EVENTS: u64 = 150_000;

#[test]
fn killed_runs_never_commit_ahead_and_reruns_match_the_oracle() {
    let Some(broker) = Broker::start_or_skip("kafka_restart") else {
        return;
    };
    broker.create_topic(ORDERS, 4);
    broker.create_topic(CUSTOMERS, 2);
    let workload = orders_workload(EVENTS, 10_000, 5, 4, 2);
    let positions = broker.produce(&workload.messages);
    let source = format!("kafka://{}/{ORDERS},{CUSTOMERS}", broker.addr);
    let group = "restart-test";
    let dir = tempfile::tempdir().unwrap();

    let warehouse = dir.path().join("warehouse");
    let warehouse = warehouse.to_str().unwrap();
    for pipeline in ["op-counts", "orders-replica"] {
        // 1. Kill -9 once a few batches are out.
        let out_path = dir.path().join(format!("{pipeline}-killed.jsonl"));
        let mut child = Command::new(tributary_bin())
            .args([
                "run",
                pipeline,
                "--warehouse",
                warehouse,
                "--commit-ms",
                "200",
                "--source",
                &source,
                "--until-idle",
                "--epoch-ms",
                "100",
                "--console-format",
                "jsonl",
                "--kafka-group",
                group,
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while batches(&std::fs::read(&out_path).unwrap()) < 5 {
            assert!(started.elapsed() < Duration::from_secs(60), "no output");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            child.try_wait().unwrap().is_none(),
            "{pipeline} finished before it could be killed; produce more events"
        );
        child.kill().unwrap();
        child.wait().unwrap();

        // 2. Committed offsets cover no more events than the printed batches counted.
        if pipeline == "op-counts" {
            let printed = complete_lines(&std::fs::read(&out_path).unwrap());
            let lines = parse_console(&printed);
            let handled: i64 = table_at(&lines, "op_counts", u64::MAX)
                .keys()
                .map(|row| {
                    let row: serde_json::Value = serde_json::from_str(row).unwrap();
                    row["event_count"].as_i64().unwrap()
                })
                .sum();
            let committed = broker.committed(group, ORDERS, 4);
            let committed_events = workload
                .counted
                .iter()
                .zip(&positions)
                .zip(&workload.messages)
                .filter(|((counted, (partition, offset)), message)| {
                    **counted
                        && message.topic == ORDERS
                        && committed[*partition as usize].is_some_and(|c| *offset < c)
                })
                .count() as i64;
            eprintln!(
                "killed after printing {handled} events; group committed {committed_events} \
                 events' offsets: {committed:?}"
            );
            assert!(
                committed_events > 0,
                "offsets are committed while the run goes on"
            );
            assert!(
                committed_events <= handled,
                "committed offsets ({committed:?}, {committed_events} events) ran ahead of the \
                 printed results ({handled} events)"
            );
        }

        // 3. A rerun from the earliest offsets gives exactly the oracle's result.
        let rerun = run_tributary(&[
            "run",
            pipeline,
            "--warehouse",
            warehouse,
            "--source",
            &source,
            "--until-idle",
            "--kafka-start",
            "earliest",
            "--epoch-ms",
            "200",
            "--console-format",
            "jsonl",
            "--workers",
            "2",
            "--kafka-group",
            group,
        ]);
        assert!(
            rerun.status.success(),
            "{}",
            String::from_utf8_lossy(&rerun.stderr)
        );
        let lines = parse_console(&rerun.stdout);
        if pipeline == "op-counts" {
            assert_eq!(table_at(&lines, "op_counts", u64::MAX), workload.op_counts);
            continue;
        }
        // The rerun printed the recovered aggregate as batch 0, then the rest.
        assert_eq!(
            table_at(&lines, "status", u64::MAX),
            workload.orders.status_table()
        );
        if !pyiceberg_available() {
            continue;
        }
        let (snapshots, _) = read_table(Path::new(warehouse), TABLE, false);
        let killed_commits = snapshots
            .iter()
            .take_while(|s| {
                s.summary["tributary.epoch"].parse::<u64>().unwrap() < resumed_epoch(&lines)
            })
            .count();
        assert!(
            killed_commits > 0,
            "the killed run committed snapshots the rerun resumed from"
        );
        let final_rows = &snapshots.last().unwrap().rows;
        assert_eq!(final_rows, &workload.replica.rows(), "final Iceberg table");
        eprintln!(
            "orders-replica: {killed_commits} snapshots before the kill, {} in all; final table \
             equals the oracle",
            snapshots.len()
        );
    }

    // 4. After a complete run the group is committed to the end of every partition.
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (message, (partition, offset)) in workload.messages.iter().zip(&positions) {
        let end = ends.entry((message.topic.clone(), *partition)).or_insert(0);
        *end = (*end).max(offset + 1);
    }
    for (topic, partitions) in [(ORDERS, 4), (CUSTOMERS, 2)] {
        let committed = broker.committed(group, topic, partitions);
        for (partition, offset) in committed.iter().enumerate() {
            assert_eq!(
                *offset,
                Some(ends[&(topic.to_owned(), partition as i32)]),
                "{topic}/{partition} committed to its end"
            );
        }
    }

    // 5. Starting from the committed offsets, nothing is left.
    let resumed = run_tributary(&[
        "run",
        "op-counts",
        "--source",
        &source,
        "--until-idle",
        "--kafka-start",
        "committed",
        "--console-format",
        "jsonl",
        "--kafka-group",
        group,
    ]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        resumed.stdout.is_empty(),
        "nothing left after the committed offsets: {}",
        String::from_utf8_lossy(&resumed.stdout)
    );
}

/// The first epoch of a resumed run (its first batch after the recovered batch 0).
fn resumed_epoch(lines: &[ConsoleLine]) -> u64 {
    lines
        .iter()
        .map(|l| l.batch)
        .find(|b| *b > 0)
        .unwrap_or(u64::MAX)
}

/// Distinct batch numbers in complete JSONL lines.
fn batches(stdout: &[u8]) -> usize {
    let lines = parse_console(&complete_lines(stdout));
    let mut batches: Vec<u64> = lines.iter().map(|l| l.batch).collect();
    batches.dedup();
    batches.len()
}

/// Up to the last newline (a killed process may leave half a line).
fn complete_lines(stdout: &[u8]) -> Vec<u8> {
    match stdout.iter().rposition(|b| *b == b'\n') {
        Some(end) => stdout[..=end].to_vec(),
        None => Vec::new(),
    }
}
