//! `--iceberg-deletes equality`: `orders-replica` deletes replaced and removed rows by key
//! (equality deletes on the table's identifier field) instead of by position. Killed
//! (`kill -9`) twice mid-run, it resumes from the table — its own recovery applies the equality
//! deletes by sequence number — and iceberg-rust's table scan (an independent reader that
//! supports equality deletes; pyiceberg 0.12 does not) reads every snapshot equal to the oracle
//! at its recorded line.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use crate::support::iceberg::check_snapshots;
use crate::support::iceberg_rust::read_table_iceberg_rust;
use crate::support::{kill_twice_then_finish, orders_lines, replica_run, write_lines};

const TABLE: &str = "demo.orders_realtime_replica";

#[test]
fn equality_deletes_resume_after_kills_and_read_back_equal_to_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.jsonl");
    let lines = orders_lines(60_000, 5_000, 37);
    write_lines(&path, &lines);
    let source = format!("file:{}", path.display());
    let warehouse = dir.path().join("warehouse");
    let command = || {
        let mut command = replica_run(&source, &warehouse);
        command.args(["--iceberg-deletes", "equality", "--workers", "2"]);
        command
    };
    kill_twice_then_finish(command);

    let snapshots = read_table_iceberg_rust(&warehouse, TABLE);
    assert!(snapshots.len() >= 2, "only {} snapshots", snapshots.len());
    let last = check_snapshots(&snapshots, &source, &lines);
    assert_eq!(
        last,
        lines.len() as u64,
        "the last snapshot covers the file"
    );
    let summary = &snapshots.last().unwrap().summary;
    let total = |key: &str| summary[key].parse::<u64>().unwrap();
    assert!(
        total("total-equality-deletes") > 0,
        "rows were deleted by key: {summary:?}"
    );
    assert_eq!(total("total-position-deletes"), 0, "and never by position");
}
