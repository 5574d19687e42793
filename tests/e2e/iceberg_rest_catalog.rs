//! The Iceberg REST catalog (`--catalog http://…`) against a REST server in its own process
//! (`tests/py/rest_catalog.py`, pyiceberg's commit validation behind the REST endpoints):
//! `orders-replica` registers its table, commits every snapshot as REST requirements and
//! updates, is killed (`kill -9`) twice mid-run and resumes from the table the catalog serves;
//! then pyiceberg's RestCatalog reads every snapshot equal to the oracle at its recorded line.
//! Compaction and expiry commit through REST too, and so does a schema change; a missing token
//! is one clear error.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use crate::support::iceberg::{pyiceberg_available, replica_survives_kills, Lake};
use crate::support::rest::RestServer;
use crate::support::tributary_bin;

const TABLE: &str = "demo.orders_realtime_replica";
const TOKEN: &str = "tributary-test-token";

#[test]
fn rest_catalog_resumes_after_kills_and_pyiceberg_reads_it() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = RestServer::start(&dir.path().join("rest.db"), Some(TOKEN));
    let warehouse = dir.path().join("warehouse");
    let lake = Lake {
        warehouse: warehouse.to_str().unwrap().to_owned(),
        catalog: Some(server.uri.clone()),
        reader_catalog: Some(server.uri.clone()),
        args: vec!["--workers".into(), "2".into()],
        env: vec![("TRIBUTARY_REST_TOKEN", TOKEN.to_owned())],
    };
    let snapshots = replica_survives_kills(&lake, dir.path(), 31);
    assert!(
        !warehouse.join("catalog.db").exists(),
        "no SQLite catalog is made when the catalog is REST"
    );

    // Maintenance commits through the REST catalog as well.
    let maintain = |args: &[&str]| {
        let mut all = vec!["maintain"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--warehouse",
            warehouse.to_str().unwrap(),
            "--catalog",
            &server.uri,
        ]);
        let output = Command::new(tributary_bin())
            .args(&all)
            .env("TRIBUTARY_REST_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    maintain(&["compact", TABLE]);
    maintain(&["expire", TABLE, "--older-than", "0s"]);
    let after = lake.read(TABLE);
    assert_eq!(after.len(), 1, "expiry left only the current snapshot");
    assert_eq!(
        after[0].rows,
        snapshots.last().unwrap().rows,
        "compaction kept the rows"
    );

    // Without the token the catalog refuses, and the run says how to fix it.
    let refused = run_tributary_refused(&warehouse, &server.uri);
    assert!(
        refused.contains("HTTP 401") && refused.contains("TRIBUTARY_REST_TOKEN"),
        "{refused}"
    );
}

fn run_tributary_refused(warehouse: &std::path::Path, uri: &str) -> String {
    let output = Command::new(tributary_bin())
        .args([
            "run",
            "orders-replica",
            "--source",
            "generator:10",
            "--until-idle",
        ])
        .args(["--warehouse", warehouse.to_str().unwrap(), "--catalog", uri])
        .env("RUST_LOG", "warn")
        .env_remove("TRIBUTARY_REST_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A schema change commits through REST: `replicate` over a file with a declared table, then
/// the declaration gains a column; the table evolves (AddSchema, SetCurrentSchema with the
/// schema-id requirement), and pyiceberg's RestCatalog reads the new column, NULL in rows
/// that did not change since.
#[test]
fn a_new_column_evolves_the_table_through_rest() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = RestServer::start(&dir.path().join("rest.db"), Some(TOKEN));
    let warehouse = dir.path().join("warehouse");
    let lines = crate::support::orders_lines(600, 60, 5);
    let half = lines.len() / 2;
    let path = dir.path().join("orders.jsonl");
    let run = |lines: &[String], columns: &str| {
        crate::support::write_lines(&path, lines);
        let config = dir.path().join("tributary.toml");
        std::fs::write(
            &config,
            format!(
                "pipeline = \"replicate\"\nsource = \"file:{}\"\n\n[[table]]\n\
                 name = \"dbserver1.public.orders\"\nkey = [\"order_id\"]\ncolumns = [{columns}]\n",
                path.display()
            ),
        )
        .unwrap();
        let output = Command::new(tributary_bin())
            .args(["run", "--config", config.to_str().unwrap(), "--until-idle"])
            .args([
                "--warehouse",
                warehouse.to_str().unwrap(),
                "--catalog",
                &server.uri,
            ])
            .env("TRIBUTARY_REST_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{log}");
        log
    };
    run(
        &lines[..half],
        r#""order_id bigint not null", "status text""#,
    );
    let log = run(
        &lines,
        r#""order_id bigint not null", "status text", "quantity int""#,
    );
    assert!(log.contains("schema evolves with its next commit"), "{log}");
    // Per order: the last event, and whether it came after the column was added.
    let mut last: std::collections::BTreeMap<i64, (serde_json::Value, bool)> = Default::default();
    for (i, line) in lines.iter().enumerate() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(op) = event["op"].as_str() else {
            continue;
        };
        if op == "d" {
            last.remove(&event["before"]["order_id"].as_i64().unwrap());
        } else {
            let after = event["after"].clone();
            last.insert(after["order_id"].as_i64().unwrap(), (after, i >= half));
        }
    }
    let (snapshots, _) = crate::support::iceberg::read_table_with(
        warehouse.to_str().unwrap(),
        Some(&server.uri),
        &[("TRIBUTARY_REST_TOKEN", TOKEN.to_owned())],
        "public.orders",
        true,
    );
    let rows = &snapshots.last().unwrap().rows;
    assert_eq!(rows.len(), last.len());
    for row in rows {
        let (after, late) = &last[&row["order_id"].as_i64().unwrap()];
        assert_eq!(row["status"], after["status"]);
        let quantity = if *late {
            after["quantity"].clone()
        } else {
            serde_json::Value::Null
        };
        assert_eq!(row["quantity"], quantity, "{row}");
    }
}
