//! `orders-replica` → Iceberg, read back by pyiceberg (an independent reader): every snapshot
//! equals a from-scratch recomputation at the source position its summary records, with 1 and
//! 2 workers; and a run killed (SIGKILL) at random points and restarted many times ends with
//! exactly the oracle's table — no row lost, none duplicated.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::iceberg::{check_snapshots, pyiceberg_available, read_table, ReplicaOracle};
use crate::support::{run_tributary_ok, tributary_bin};
use tributary_engine::sources::generator::{GeneratorConfig, OrdersWorkload};

const TABLE: &str = "demo.orders_realtime_replica";

/// Writes `events` workload events (creates, updates, deletes with tombstones, string and
/// binary decimals) plus malformed lines; returns the lines.
fn workload(path: &Path, events: u64, keys: u64) -> Vec<String> {
    let mut workload = OrdersWorkload::new(GeneratorConfig {
        events: Some(events),
        keys,
        seed: 11,
        ..Default::default()
    });
    let mut lines = Vec::new();
    let mut line = String::new();
    while workload.next_line(&mut line) {
        lines.push(line.clone());
        if lines.len() % 50_000 == 7 {
            lines.push(r#"{"op":"u","after":{"order_id":"#.to_owned()); // truncated
        }
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    lines
}

fn run_args<'a>(source: &'a str, warehouse: &'a str, workers: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "orders-replica",
        "--source",
        source,
        "--warehouse",
        warehouse,
        "--workers",
        workers,
        "--until-idle",
        "--epoch-ms",
        "20",
        "--commit-ms",
        "150",
        "--console-format",
        "jsonl",
    ]
}

#[test]
fn every_snapshot_equals_the_oracle_at_its_position() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.jsonl");
    let lines = workload(&path, 200_000, 20_000);
    let source = format!("file:{}", path.display());
    for workers in ["1", "2"] {
        let warehouse = dir.path().join(format!("warehouse-{workers}"));
        let warehouse = warehouse.to_str().unwrap();
        let started = Instant::now();
        run_tributary_ok(&run_args(&source, warehouse, workers));
        let took = started.elapsed();
        let (snapshots, read_seconds) = read_table(Path::new(warehouse), TABLE, false);
        assert!(
            snapshots.len() >= 3,
            "expected several commits, got {}",
            snapshots.len()
        );
        assert!(
            snapshots.iter().any(|s| s.operation.contains("OVERWRITE")),
            "updates and deletes must commit position deletes: {:?}",
            snapshots.iter().map(|s| &s.operation).collect::<Vec<_>>()
        );
        let last = check_snapshots(&snapshots, &source, &lines);
        assert_eq!(
            last,
            lines.len() as u64,
            "the last snapshot covers the whole file"
        );
        eprintln!(
            "workers={workers}: {} events in {took:?}, {} snapshots, pyiceberg read all in {read_seconds:.2}s",
            lines.len(),
            snapshots.len()
        );
    }
}

#[test]
fn killing_and_restarting_loses_and_duplicates_nothing() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.jsonl");
    let lines = workload(&path, 150_000, 10_000);
    let source = format!("file:{}", path.display());
    let warehouse = dir.path().join("warehouse");
    let warehouse = warehouse.to_str().unwrap();
    // Kill points in milliseconds after start: spread so they land while reading, while
    // writing files, between files and the catalog swap, and right after commits.
    let kill_after_ms = [350, 700, 120, 900, 480, 260, 1100, 610, 90, 820];
    let mut kills = 0;
    for (attempt, delay) in kill_after_ms.iter().enumerate() {
        let workers = if attempt % 2 == 0 { "1" } else { "2" };
        let mut child = Command::new(tributary_bin())
            .args(run_args(&source, warehouse, workers))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    run_tributary_ok(&run_args(&source, warehouse, "2"));
    assert!(kills >= 3, "the run finished before enough kills ({kills})");

    let (snapshots, _) = read_table(Path::new(warehouse), TABLE, false);
    let last = check_snapshots(&snapshots, &source, &lines);
    assert_eq!(last, lines.len() as u64);
    let mut oracle = ReplicaOracle::default();
    lines.iter().for_each(|l| oracle.apply(l));
    let final_rows = &snapshots.last().unwrap().rows;
    assert_eq!(final_rows, &oracle.rows());
    let mut ids: Vec<i64> = final_rows
        .iter()
        .map(|r| r["order_id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), final_rows.len(), "no key appears twice");
    eprintln!(
        "{kills} kills, {} snapshots, final table equals the oracle",
        snapshots.len()
    );
}

#[test]
fn compaction_and_expiry_keep_the_table_and_its_resume_point() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("all.jsonl");
    let lines = workload(&full, 60_000, 5_000);
    let path = dir.path().join("orders.jsonl");
    let half = lines.len() / 2;
    std::fs::write(&path, lines[..half].join("\n") + "\n").unwrap();
    let source = format!("file:{}", path.display());
    let warehouse = dir.path().join("warehouse");
    let warehouse = warehouse.to_str().unwrap();
    run_tributary_ok(&run_args(&source, warehouse, "1"));
    let compacted = run_tributary_ok(&["maintain", "--warehouse", warehouse, "compact", TABLE]);
    assert!(compacted.contains("in 1 data file"), "{compacted}");
    let expired = run_tributary_ok(&[
        "maintain",
        "--warehouse",
        warehouse,
        "expire",
        TABLE,
        "--older-than",
        "0s",
    ]);
    assert!(expired.starts_with("expired "), "{expired}");

    let (snapshots, _) = read_table(Path::new(warehouse), TABLE, false);
    assert_eq!(snapshots.len(), 1, "only the compacted snapshot is left");
    assert!(snapshots[0].operation.contains("REPLACE"));
    assert_eq!(check_snapshots(&snapshots, &source, &lines), half as u64);

    // The rest of the file arrives; the pipeline resumes from the compacted table.
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    run_tributary_ok(&run_args(&source, warehouse, "2"));
    let (snapshots, _) = read_table(Path::new(warehouse), TABLE, false);
    assert_eq!(
        check_snapshots(&snapshots, &source, &lines),
        lines.len() as u64
    );
}
