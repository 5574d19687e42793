//! `customers-changelog`: every change lands once, flattened (`before_*`, `after_*`), in the
//! append-only Iceberg table `analytics.customers_changelog`; a second run over a longer file
//! appends only what is new. pyiceberg reads each snapshot equal to the log up to its position.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use crate::support::iceberg::{pyiceberg_available, read_table};
use crate::support::run_tributary_ok;
use serde_json::{json, Value as Json};

const FIELDS: [&str; 6] = ["id", "first_name", "last_name", "email", "city", "country"];

fn workload(events: u64) -> Vec<String> {
    let mut live: BTreeMap<u64, Json> = BTreeMap::new();
    let mut lines = Vec::new();
    for i in 0..events {
        let id = (i * 7919) % 97;
        let ts_ms = 1_700_000_000_000 + i as i64;
        let (op, before, after) = match live.get(&id) {
            Some(row) if i % 5 == 0 => ("d", row.clone(), Json::Null),
            Some(row) => {
                let mut new = row.clone();
                new["email"] = json!(format!("c{id}.{i}@example.com"));
                ("u", row.clone(), new)
            }
            None => (
                "c",
                Json::Null,
                json!({"id": id, "first_name": format!("F{id}"), "last_name": format!("L{id}"),
                       "email": format!("c{id}@example.com"), "city": "Lisbon", "country": "PT"}),
            ),
        };
        if op == "d" {
            live.remove(&id);
        } else {
            live.insert(id, after.clone());
        }
        lines.push(
            json!({"before": before, "after": after, "op": op, "ts_ms": ts_ms,
                   "source": {"ts_ms": ts_ms, "name": "dbserver1", "schema": "public",
                              "table": "customers", "txId": i}})
            .to_string(),
        );
    }
    lines
}

fn expected(lines: &[String], through: u64) -> Vec<Json> {
    let mut rows: Vec<Json> = lines[..through as usize]
        .iter()
        .map(|line| {
            let event: Json = serde_json::from_str(line).unwrap();
            let mut row = json!({
                "op": event["op"],
                "event_time": event["source"]["ts_ms"].as_i64().unwrap() * 1000,
            });
            for image in ["before", "after"] {
                for field in FIELDS {
                    row[format!("{image}_{field}")] = event[image][field].clone();
                }
            }
            row
        })
        .collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

#[test]
fn every_change_is_appended_once_across_runs() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.jsonl");
    let source = format!("file:{}", path.display());
    let warehouse = dir.path().join("warehouse");
    let lines = workload(3_000);
    for part in [&lines[..1_000], &lines[..]] {
        std::fs::write(&path, part.join("\n") + "\n").unwrap();
        run_tributary_ok(&[
            "run",
            "customers-changelog",
            "--source",
            &source,
            "--until-idle",
            "--epoch-ms",
            "5",
            "--commit-ms",
            "40",
            "--warehouse",
            warehouse.to_str().unwrap(),
        ]);
    }
    let (snapshots, _) = read_table(&warehouse, "analytics.customers_changelog", false);
    assert!(snapshots.len() >= 2);
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
