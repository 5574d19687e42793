//! `orders-replica`'s `status` aggregation equals a from-scratch recomputation over the source
//! prefix of every closed epoch, with 1 and 4 workers (in process, through the real runtime).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use crate::support::Capture;
use crate::support::{parse_console, table_at, OrdersOracle};
use tributary_engine::sources::generator::{GeneratorConfig, OrdersWorkload};
use tributary_engine::sources::SourceSpec;
use tributary_engine::{
    run, shared_writer, ConsoleFormat, ConsoleMode, ConsoleOptions, IcebergOptions, RunOptions,
};

#[test]
fn status_matches_recomputation_after_every_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.jsonl");
    let mut workload = OrdersWorkload::new(GeneratorConfig {
        events: Some(6000),
        keys: 300,
        seed: 11,
        ..Default::default()
    });
    let mut lines = Vec::new();
    let mut line = String::new();
    while workload.next_line(&mut line) {
        lines.push(line.clone());
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let pipeline = &tributary::find("orders-replica").unwrap();

    for workers in [1, 4] {
        let capture = Capture::default();
        let summary = run(
            pipeline,
            RunOptions {
                source: SourceSpec::File(path.clone()),
                workers,
                epoch: Duration::ZERO,
                until_idle: true,
                console: ConsoleOptions {
                    format: ConsoleFormat::Jsonl,
                    mode: ConsoleMode::Update,
                    max_rows: 20,
                    writer: shared_writer(capture.clone()),
                },
                iceberg: IcebergOptions::new(dir.path().join(format!("warehouse-{workers}"))),
                ..RunOptions::default()
            },
        )
        .unwrap();
        assert_eq!(summary.events, 6000);
        assert!(
            summary.epochs.len() > 100,
            "expected many epochs, got {}",
            summary.epochs.len()
        );
        let output = parse_console(&capture.0.lock().unwrap());
        let mut oracle = OrdersOracle::default();
        let mut applied = 0usize;
        for record in &summary.epochs {
            let through = usize::try_from(record.positions[&0]).unwrap();
            for line in &lines[applied..through] {
                oracle.apply(line);
            }
            applied = through;
            assert_eq!(
                table_at(&output, "status", record.epoch),
                oracle.status_table(),
                "workers={workers}, epoch={}, through line {through}",
                record.epoch
            );
        }
        assert_eq!(applied, lines.len(), "the last epoch covers the whole file");
    }
}
