//! A replica partitioned by `identity(status)`, `bucket(order_id, 4)` and `hour(created_at)`:
//! status updates move rows across partitions (a delete in the old partition, a row in the new
//! one). pyiceberg reads every snapshot equal to the oracle at its position, also after a
//! restart that rebuilds the position index from the partitioned files; the same with equality
//! deletes, read by iceberg-rust's table scan.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use crate::support::iceberg::{check_snapshots, pyiceberg_available, read_table, SnapshotRead};
use crate::support::iceberg_rust::read_table_iceberg_rust;
use tributary::tables::{orders_schema, ORDERS};
use tributary_engine::sources::generator::{GeneratorConfig, OrdersWorkload};
use tributary_engine::sources::SourceSpec;
use tributary_engine::{
    run, shared_writer, BuildError, ConsoleFormat, ConsoleMode, ConsoleOptions, DeleteMode,
    IcebergOptions, Partition, Pipeline, PipelineBuilder, RunOptions,
};

const TABLE: &str = "demo.orders_partitioned";

fn partitioned(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let orders = p.table(ORDERS, orders_schema(), &["order_id"])?;
    p.iceberg_replica_partitioned(
        TABLE,
        &orders,
        &[
            Partition::identity("status"),
            Partition::bucket("order_id", 4),
            Partition::hour("created_at"),
        ],
    )?;
    Ok(())
}

fn run_on(path: &Path, warehouse: &Path, workers: usize, deletes: DeleteMode) {
    let pipeline = Pipeline::new(
        "orders-partitioned",
        "orders replica partitioned three ways",
        partitioned,
    );
    let mut iceberg = IcebergOptions::new(warehouse);
    iceberg.commit_interval = Duration::from_millis(100);
    iceberg.deletes = deletes;
    run(
        &pipeline,
        RunOptions {
            source: SourceSpec::File(path.to_owned()),
            workers,
            epoch: Duration::from_millis(10),
            until_idle: true,
            console: ConsoleOptions {
                format: ConsoleFormat::Jsonl,
                mode: ConsoleMode::Update,
                max_rows: 20,
                writer: shared_writer(std::io::sink()),
            },
            iceberg,
            ..RunOptions::default()
        },
    )
    .unwrap();
}

/// Runs the first half of the workload with 1 worker, then all of it with 2 (resuming), and
/// checks every snapshot `read` gives against the oracle.
fn across_a_restart(
    deletes: DeleteMode,
    read: fn(&Path) -> Vec<SnapshotRead>,
) -> Vec<SnapshotRead> {
    let dir = tempfile::tempdir().unwrap();
    let mut workload = OrdersWorkload::new(GeneratorConfig {
        events: Some(40_000),
        keys: 3_000,
        seed: 5,
        ..Default::default()
    });
    let mut lines = Vec::new();
    let mut line = String::new();
    while workload.next_line(&mut line) {
        lines.push(line.clone());
    }
    let path = dir.path().join("orders.jsonl");
    let source = format!("file:{}", path.display());
    let warehouse = dir.path().join("warehouse");
    let half = lines.len() / 2;
    std::fs::write(&path, lines[..half].join("\n") + "\n").unwrap();
    run_on(&path, &warehouse, 1, deletes);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    run_on(&path, &warehouse, 2, deletes);

    let snapshots = read(&warehouse);
    assert_eq!(
        check_snapshots(&snapshots, &source, &lines),
        lines.len() as u64
    );
    // Each commit writes a data file per partition it touches (compaction snapshots, which
    // fold them, aside).
    let commits: Vec<&SnapshotRead> = snapshots
        .iter()
        .filter(|s| s.operation != "replace")
        .collect();
    let files: u64 = commits
        .iter()
        .map(|s| s.summary["added-data-files"].parse::<u64>().unwrap())
        .sum();
    assert!(
        files >= 2 * commits.len() as u64,
        "rows are spread over partitions: {files} data files in {} commits",
        commits.len()
    );
    snapshots
}

#[test]
fn partitioned_snapshots_equal_the_oracle_across_a_restart() {
    if !pyiceberg_available() {
        return;
    }
    across_a_restart(DeleteMode::Position, |warehouse| {
        read_table(warehouse, TABLE, false).0
    });
}

#[test]
fn partitioned_equality_deletes_equal_the_oracle_across_a_restart() {
    let snapshots = across_a_restart(DeleteMode::Equality, |warehouse| {
        read_table_iceberg_rust(warehouse, TABLE)
    });
    let summary = &snapshots.last().unwrap().summary;
    assert!(summary["total-equality-deletes"].parse::<u64>().unwrap() > 0);
    assert_eq!(summary["total-position-deletes"], "0");
}
