//! `orders-replica` into an S3 warehouse (`--warehouse s3://bucket/prefix`, SQLite catalog on
//! local disk) on a real S3-compatible server (moto's standalone server over HTTP): killed
//! (`kill -9`) twice mid-run and restarted — recovery reads the table back from S3 — then read
//! by pyiceberg from S3: every snapshot equals the oracle at its recorded line, the last covers
//! the whole file.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use crate::support::iceberg::{check_snapshots, pyiceberg_available, read_table_with};
use crate::support::s3::S3Server;
use crate::support::{
    kill_twice_then_finish, orders_lines, replica_run, tributary_bin, write_lines,
};

const TABLE: &str = "demo.orders_realtime_replica";

#[test]
fn s3_warehouse_survives_kills_and_reads_back_equal_to_the_oracle() {
    let Some(s3) = S3Server::start_or_skip("iceberg_s3") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    s3.create_bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.jsonl");
    let lines = orders_lines(60_000, 5_000, 23);
    write_lines(&path, &lines);
    let source = format!("file:{}", path.display());
    let catalog = dir.path().join("state/catalog.db");
    let warehouse = "s3://lake/tables";
    let command = || {
        let mut command = replica_run(&source, warehouse);
        command
            .arg("--catalog")
            .arg(format!("sqlite:{}", catalog.display()))
            .envs(s3.env());
        command
    };
    kill_twice_then_finish(command);

    let (snapshots, read_seconds) = read_table_with(
        warehouse,
        Some(catalog.to_str().unwrap()),
        &s3.env(),
        TABLE,
        false,
    );
    assert!(snapshots.len() >= 2, "only {} snapshots", snapshots.len());
    let last = check_snapshots(&snapshots, &source, &lines);
    assert_eq!(
        last,
        lines.len() as u64,
        "the last snapshot covers the file"
    );
    assert!(
        !Path::new("tables").exists() && !dir.path().join("tables").exists(),
        "nothing is written to a local directory named after the S3 prefix"
    );
    eprintln!(
        "iceberg_s3: {} snapshots in S3, pyiceberg read them in {read_seconds:.2}s",
        snapshots.len()
    );
}

#[test]
fn s3_warehouse_without_a_catalog_is_refused_clearly() {
    let output = Command::new(tributary_bin())
        .args(["run", "orders-replica", "--source", "generator:10"])
        .args(["--warehouse", "s3://lake/tables", "--until-idle"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--catalog sqlite:PATH"), "{stderr}");
}
