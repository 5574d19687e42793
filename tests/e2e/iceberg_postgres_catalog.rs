//! The SQL catalog on PostgreSQL (`--catalog postgres://…`) against a real server: created on
//! first use in the JDBC layout, `orders-replica` killed (`kill -9`) twice mid-run and resumed
//! from the catalog's table, then pyiceberg opens the same PostgreSQL catalog (SQLAlchemy +
//! psycopg2) and every snapshot equals the oracle at its recorded line; the catalog row names
//! the current metadata file, and a second pipeline adds its own table to the same catalog.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use crate::support::iceberg::{pyiceberg_available, replica_survives_kills, Lake};
use crate::support::postgres::Postgres;
use crate::support::run_tributary;

#[test]
fn postgres_catalog_resumes_after_kills_and_pyiceberg_reads_it() {
    let Some(pg) = Postgres::start_or_skip("iceberg_postgres_catalog") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    pg.psql("postgres", "CREATE DATABASE lake");
    let catalog = pg.url("postgres", "lake");
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let lake = Lake {
        warehouse: warehouse.to_str().unwrap().to_owned(),
        catalog: Some(catalog.clone()),
        reader_catalog: Some(catalog.clone()),
        ..Lake::default()
    };
    replica_survives_kills(&lake, dir.path(), 29);
    assert!(
        !warehouse.join("catalog.db").exists(),
        "no SQLite catalog is made when the catalog is PostgreSQL"
    );

    let row = pg.psql(
        "lake",
        "SELECT catalog_name, table_namespace, table_name, iceberg_type, \
         metadata_location LIKE 'file://%.metadata.json' FROM iceberg_tables",
    );
    assert_eq!(row.trim(), "tributary|demo|orders_realtime_replica|TABLE|t");

    // Another pipeline keeps its own table in the same catalog.
    let output = run_tributary(&[
        "run",
        "products-lake",
        "--source",
        "generator:100",
        "--until-idle",
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--catalog",
        &catalog,
    ]);
    assert!(output.status.success(), "a different table is fine");
    let tables = pg.psql("lake", "SELECT count(*) FROM iceberg_tables");
    assert_eq!(tables.trim(), "2");
}

#[test]
fn unreachable_postgres_catalog_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_tributary(&[
        "run",
        "orders-replica",
        "--source",
        "generator:10",
        "--until-idle",
        "--warehouse",
        dir.path().to_str().unwrap(),
        "--catalog",
        "postgres://nobody:hunter2@127.0.0.1:1/lake",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "cannot connect to the PostgreSQL catalog postgres://nobody@127.0.0.1:1/lake"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
}
