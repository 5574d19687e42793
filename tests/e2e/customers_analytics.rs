//! `customers-analytics`: every change to `customers` becomes one analytics row (`full_name`,
//! `location`, `_cdc_operation`, `_source_lsn`, `_event_timestamp_ms`) in the append-only
//! Iceberg table `analytics.customers_analytics`; deletes carry the row they removed. Two runs
//! (2 workers, then 1 over a longer file); pyiceberg reads every snapshot equal to an oracle
//! built straight from the JSON lines up to the snapshot's recorded position.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;

use crate::support::iceberg::{pyiceberg_available, read_table};
use crate::support::run_tributary_ok;
use serde_json::{json, Value as Json};

const TABLE: &str = "analytics.customers_analytics";

/// Creates, updates and deletes of 97 customers; some names and places are NULL, some events
/// have no `source.lsn`, some deletes carry only the key (default REPLICA IDENTITY), and a few
/// lines are tombstones or malformed.
fn workload(events: u64) -> Vec<String> {
    let mut live: BTreeMap<u64, Json> = BTreeMap::new();
    let mut lines = Vec::new();
    for i in 0..events {
        if i % 97 == 13 {
            lines.push(if i % 2 == 0 { "null" } else { "{not json" }.to_owned());
            continue;
        }
        let id = (i * 7919) % 97;
        let ts_ms = 1_700_000_000_000 + i as i64;
        let (op, before, after) = match live.get(&id) {
            Some(row) if i % 5 == 0 => {
                let before = if i % 2 == 0 {
                    row.clone()
                } else {
                    json!({"id": id})
                };
                ("d", before, Json::Null)
            }
            Some(row) => {
                let mut new = row.clone();
                new["email"] = json!(format!("c{id}.{i}@example.com"));
                new["city"] = if i % 3 == 0 {
                    Json::Null
                } else {
                    json!(format!("City{}", i % 4))
                };
                ("u", row.clone(), new)
            }
            None => (
                if i < 200 { "r" } else { "c" },
                Json::Null,
                json!({"id": id,
                       "first_name": if id % 11 == 0 { Json::Null } else { json!(format!("F{id}")) },
                       "last_name": format!("L{id}"),
                       "email": format!("c{id}@example.com"),
                       "city": "Lisbon",
                       "country": if id % 4 == 0 { Json::Null } else { json!("PT") }}),
            ),
        };
        if op == "d" {
            live.remove(&id);
        } else {
            live.insert(id, after.clone());
        }
        let mut source = json!({"ts_ms": ts_ms, "name": "dbserver1", "schema": "public",
                                "table": "customers", "txId": i});
        if i % 7 != 0 {
            source["lsn"] = json!(1_000_000 + i * 64);
        }
        lines.push(
            json!({"before": before, "after": after, "op": op, "ts_ms": ts_ms + 5, "source": source})
                .to_string(),
        );
    }
    lines
}

/// Spark's `concat_ws`: the non-NULL strings joined.
fn concat_ws(separator: &str, parts: &[&Json]) -> Json {
    let parts: Vec<&str> = parts.iter().filter_map(|p| p.as_str()).collect();
    json!(parts.join(separator))
}

/// The analytics rows of the first `through` lines, sorted as the reader sorts them.
fn expected(lines: &[String], through: u64) -> Vec<Json> {
    let mut rows: Vec<Json> = lines[..through as usize]
        .iter()
        .filter_map(|line| serde_json::from_str::<Json>(line).ok())
        .filter(|event| event.is_object())
        .map(|event| {
            let op = event["op"].as_str().unwrap();
            let image = if op == "d" {
                &event["before"]
            } else {
                &event["after"]
            };
            let operation = match op {
                "c" | "r" => "INSERT",
                "u" => "UPDATE",
                _ => "DELETE",
            };
            json!({
                "id": image["id"],
                "full_name": concat_ws(" ", &[&image["first_name"], &image["last_name"]]),
                "email": image["email"],
                "location": concat_ws(", ", &[&image["city"], &image["country"]]),
                "_cdc_operation": operation,
                "_source_lsn": event["source"]["lsn"],
                "_event_timestamp_ms": event["source"]["ts_ms"],
            })
        })
        .collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

#[test]
fn every_change_becomes_one_analytics_row_across_runs() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.jsonl");
    let source = format!("file:{}", path.display());
    let warehouse = dir.path().join("warehouse");
    let lines = workload(3_000);
    for (part, workers) in [(&lines[..1_200], "2"), (&lines[..], "1")] {
        std::fs::write(&path, part.join("\n") + "\n").unwrap();
        run_tributary_ok(&[
            "run",
            "customers-analytics",
            "--source",
            &source,
            "--until-idle",
            "--workers",
            workers,
            "--epoch-ms",
            "5",
            "--commit-ms",
            "40",
            "--warehouse",
            warehouse.to_str().unwrap(),
        ]);
    }
    let (snapshots, _) = read_table(&warehouse, TABLE, false);
    assert!(snapshots.len() >= 2, "{} snapshots", snapshots.len());
    for snapshot in &snapshots {
        let position = snapshot.position(&source);
        assert_eq!(
            snapshot.rows,
            expected(&lines, position),
            "at line {position}"
        );
    }
    assert_eq!(
        snapshots.last().unwrap().position(&source),
        lines.len() as u64
    );
}
