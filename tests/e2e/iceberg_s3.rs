//! `orders-replica` into an S3 warehouse (`--warehouse s3://bucket/prefix`, SQLite catalog on
//! local disk) on a real S3-compatible server (moto's standalone server over HTTP): killed
//! (`kill -9`) twice mid-run and restarted — recovery reads the table back from S3 — then read
//! by pyiceberg from S3: every snapshot equals the oracle at its recorded line, the last covers
//! the whole file.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use crate::support::iceberg::{pyiceberg_available, replica_survives_kills, Lake};
use crate::support::s3::S3Server;
use crate::support::tributary_bin;

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
    let catalog = dir.path().join("state/catalog.db");
    let lake = Lake {
        warehouse: "s3://lake/tables".to_owned(),
        catalog: Some(format!("sqlite:{}", catalog.display())),
        reader_catalog: Some(catalog.to_str().unwrap().to_owned()),
        env: s3.env(),
        ..Lake::default()
    };
    let snapshots = replica_survives_kills(&lake, dir.path(), 23);
    assert!(
        !Path::new("tables").exists() && !dir.path().join("tables").exists(),
        "nothing is written to a local directory named after the S3 prefix"
    );
    eprintln!("iceberg_s3: {} snapshots in S3", snapshots.len());
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
