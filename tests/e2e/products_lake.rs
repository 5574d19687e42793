//! `products-lake`: duplicated, updated and deleted products land in `lake.products`, partitioned
//! by year and month of `created_at`; pyiceberg reads every snapshot equal to a recomputation at
//! the source position it records.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::iceberg::{pyiceberg_available, read_table};
use crate::support::run_tributary_ok;
use serde_json::{json, Value as Json};

const MONTH_US: i64 = 30 * 24 * 3600 * 1_000_000;

/// Debezium lines (string decimals) and, per line, the `lake.products` rows after it.
fn workload(events: u64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut live: BTreeMap<u64, Json> = BTreeMap::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..events {
        let id = next() % 400;
        let ts_ms = 1_700_000_000_000 + i as i64 * 1000;
        let (op, before, after) = match live.get(&id) {
            Some(row) if next() % 5 == 0 => ("d", row.clone(), Json::Null),
            Some(row) => {
                let mut new = row.clone();
                new["price"] = json!(format!("{}.{:02}", next() % 500, next() % 100));
                ("u", row.clone(), new)
            }
            None => {
                let category = ["tools", "toys", "books"][(id % 3) as usize];
                let row = json!({
                    "product_id": id,
                    "name": format!("product {id}"),
                    "category": category,
                    "price": format!("{}.{:02}", next() % 500, next() % 100),
                    // Spread over two years so that rows land in many year/month partitions.
                    "created_at": 1_672_531_200_000_000i64 + (id as i64 % 24) * MONTH_US,
                });
                ("c", Json::Null, row)
            }
        };
        let line = json!({
            "before": before, "after": after, "op": op, "ts_ms": ts_ms,
            "source": {"ts_ms": ts_ms, "table": "products", "schema": "public", "db": "shop",
                       "name": "dbserver1", "txId": i},
        })
        .to_string();
        if op == "d" {
            live.remove(&id);
        } else {
            live.insert(id, after);
        }
        lines.push(line.clone());
        if next() % 10 == 0 {
            lines.push(line); // a duplicate delivery
        }
        if op == "d" {
            lines.push("null".to_owned()); // its tombstone
        }
    }
    lines
}

/// The table's rows after the first `through` lines, as pyiceberg prints them.
fn expected(lines: &[String], through: u64) -> Vec<Json> {
    let mut rows: BTreeMap<i64, Json> = BTreeMap::new();
    for line in &lines[..through as usize] {
        let event: Json = serde_json::from_str(line).unwrap();
        let (Some(op), Some(ts)) = (event["op"].as_str(), event["source"]["ts_ms"].as_i64()) else {
            continue;
        };
        if op == "d" {
            rows.remove(&event["before"]["product_id"].as_i64().unwrap());
            continue;
        }
        let mut row = event["after"].clone();
        row["cdc_operation"] = json!(op);
        row["cdc_timestamp"] = json!(ts * 1000);
        rows.insert(row["product_id"].as_i64().unwrap(), row);
    }
    let mut rows: Vec<Json> = rows.into_values().collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

#[test]
fn products_lake_equals_the_oracle_at_every_snapshot() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("products.jsonl");
    let lines = workload(6_000);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let source = format!("file:{}", path.display());
    let warehouse = dir.path().join("warehouse");
    run_tributary_ok(&[
        "run",
        "products-lake",
        "--source",
        &source,
        "--until-idle",
        "--epoch-ms",
        "5",
        "--commit-ms",
        "50",
        "--workers",
        "2",
        "--warehouse",
        warehouse.to_str().unwrap(),
    ]);

    let (snapshots, _) = read_table(Path::new(&warehouse), "lake.products", false);
    assert!(!snapshots.is_empty());
    for snapshot in &snapshots {
        let position = snapshot.position(&source);
        assert_eq!(
            snapshot.rows,
            expected(&lines, position),
            "at line {position}"
        );
    }
    let last = snapshots.last().unwrap();
    assert_eq!(last.position(&source), lines.len() as u64);
    let files: u64 = last.summary["total-data-files"].parse().unwrap();
    assert!(
        files >= 12,
        "rows are spread over month partitions: {files} files"
    );
}
