//! Iceberg helpers: reading a table back with pyiceberg (an independent reader, in Python), and
//! an oracle for `orders-replica`'s replica rows at any source position.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value as Json};

use crate::support::price_cents;

/// One snapshot as pyiceberg reads it.
#[derive(Debug, Clone)]
pub struct SnapshotRead {
    /// Its id.
    pub id: i64,
    /// Its summary (`tributary.*` and counts).
    pub summary: BTreeMap<String, String>,
    /// `append` or `overwrite`.
    pub operation: String,
    /// Its rows as JSON objects (timestamps in µs, decimals as text), sorted.
    pub rows: Vec<Json>,
}

impl SnapshotRead {
    /// The `tributary.source-positions` offset of `stream`.
    pub fn position(&self, stream: &str) -> u64 {
        let positions: BTreeMap<String, u64> = serde_json::from_str(
            self.summary
                .get("tributary.source-positions")
                .expect("snapshot summary has tributary.source-positions"),
        )
        .expect("positions are JSON");
        positions.get(stream).copied().unwrap_or(0)
    }
}

/// Whether pyiceberg can be imported; without it (and outside CI) tests skip loudly.
pub fn pyiceberg_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import pyiceberg, pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "pyiceberg is required under CI=true (`pip install \"pyiceberg[sql-sqlite,pyarrow]==0.12.0\"`)"
        );
        eprintln!(
            "SKIPPING: pyiceberg is not installed; run `pip install \"pyiceberg[sql-sqlite,pyarrow]==0.12.0\"` (or .ci/run)"
        );
    }
    found
}

/// Reads every snapshot of `table` (or only the current one) with pyiceberg; also returns the
/// reader's time in seconds.
pub fn read_table(warehouse: &Path, table: &str, current_only: bool) -> (Vec<SnapshotRead>, f64) {
    read_table_with(
        warehouse.to_str().expect("UTF-8 path"),
        None,
        &[],
        table,
        current_only,
    )
}

/// [`read_table`] for any warehouse (a directory or `s3://…`), an explicit catalog (a SQLite
/// file or a `postgres://` URL), and extra environment (S3 endpoint and credentials) for the reader.
pub fn read_table_with(
    warehouse: &str,
    catalog: Option<&str>,
    env: &[(&str, String)],
    table: &str,
    current_only: bool,
) -> (Vec<SnapshotRead>, f64) {
    let script = super::tests_path("py/read_iceberg.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(warehouse).arg(table);
    if current_only {
        command.arg("--current");
    }
    if let Some(catalog) = catalog {
        command.arg("--catalog").arg(catalog);
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let output = command.output().expect("run python3");
    assert!(
        output.status.success(),
        "pyiceberg reader failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Json = serde_json::from_slice(&output.stdout).expect("reader prints JSON");
    let snapshots = json["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| {
            let mut rows = s["rows"].as_array().expect("rows").clone();
            rows.sort_by_key(|r| r.to_string());
            SnapshotRead {
                id: s["snapshot_id"].as_i64().expect("snapshot_id"),
                summary: serde_json::from_value(s["summary"].clone()).expect("summary"),
                operation: s["operation"].as_str().unwrap_or_default().to_owned(),
                rows,
            }
        })
        .collect();
    (snapshots, json["read_seconds"].as_f64().unwrap_or_default())
}

/// The current rows of `table` (pyiceberg), without the replica's `cdc_*` columns, sorted.
pub fn current_rows(warehouse: &Path, table: &str) -> Vec<Json> {
    let (snapshots, _) = read_table(warehouse, table, true);
    let mut rows: Vec<Json> = snapshots
        .last()
        .map(|s| s.rows.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut row| {
            if let Some(object) = row.as_object_mut() {
                object.retain(|column, _| !column.starts_with("cdc_"));
            }
            row
        })
        .collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// `tributary tables --format json` of `warehouse`.
pub fn tables_json(warehouse: &Path) -> Json {
    let listing = super::run_tributary_ok(&[
        "tables",
        "--warehouse",
        warehouse.to_str().expect("UTF-8 path"),
        "--format",
        "json",
    ]);
    serde_json::from_str(&listing).expect("tables prints JSON")
}

/// `orders-replica`'s replica recomputed from the workload lines: per order, the last `after`
/// plus `cdc_operation` and `cdc_timestamp`.
#[derive(Debug, Default, Clone)]
pub struct ReplicaOracle {
    rows: BTreeMap<i64, Json>,
}

impl ReplicaOracle {
    /// Applies one JSONL line of the orders workload.
    pub fn apply(&mut self, line: &str) {
        let Ok(json) = serde_json::from_str::<Json>(line) else {
            return;
        };
        let payload = if json.get("payload").is_some() {
            &json["payload"]
        } else {
            &json
        };
        let Some(op) = payload["op"].as_str() else {
            return;
        };
        let ts_ms = payload["source"]["ts_ms"]
            .as_i64()
            .or_else(|| payload["ts_ms"].as_i64())
            .unwrap_or(0);
        match op {
            "c" | "u" | "r" => {
                let after = &payload["after"];
                let id = after["order_id"].as_i64().expect("order_id");
                let cents = price_cents(&after["price"]);
                self.rows.insert(
                    id,
                    json!({
                        "order_id": id,
                        "customer_id": after["customer_id"],
                        "status": after["status"],
                        "quantity": after["quantity"],
                        "price": format!("{}.{:02}", cents / 100, cents % 100),
                        "created_at": after["created_at"],
                        "cdc_operation": op,
                        "cdc_timestamp": ts_ms * 1000,
                    }),
                );
            }
            "d" => {
                let id = payload["before"]["order_id"]
                    .as_i64()
                    .expect("before.order_id");
                self.rows.remove(&id);
            }
            _ => {}
        }
    }

    /// The replica's rows sorted like the reader sorts them.
    pub fn rows(&self) -> Vec<Json> {
        let mut rows: Vec<Json> = self.rows.values().cloned().collect();
        rows.sort_by_key(|r| r.to_string());
        rows
    }
}

/// Checks every snapshot against the oracle at the snapshot's recorded position of `stream`
/// (line numbers of `lines`), and that positions never go back; returns the last position.
pub fn check_snapshots(snapshots: &[SnapshotRead], stream: &str, lines: &[String]) -> u64 {
    let mut oracle = ReplicaOracle::default();
    let mut applied = 0u64;
    for (i, snapshot) in snapshots.iter().enumerate() {
        let position = snapshot.position(stream);
        assert!(
            position >= applied,
            "snapshot {i} goes back from line {applied} to {position}"
        );
        for line in &lines[applied as usize..position as usize] {
            oracle.apply(line);
        }
        applied = position;
        let expected = oracle.rows();
        if snapshot.rows != expected {
            let first_difference = snapshot
                .rows
                .iter()
                .zip(&expected)
                .find(|(got, want)| got != want);
            panic!(
                "snapshot {i} (epoch {:?}, line {position}) has {} rows, the oracle {}; first \
                 difference: {first_difference:?}",
                snapshot.summary.get("tributary.epoch"),
                snapshot.rows.len(),
                expected.len()
            );
        }
    }
    applied
}

/// Where a replica's table lives: one catalog and storage variant.
#[derive(Debug, Clone, Default)]
pub struct Lake {
    /// `--warehouse`: a directory or `s3://…`.
    pub warehouse: String,
    /// `--catalog` as the binary takes it (`sqlite:PATH`, `postgres://…`, `http://…`).
    pub catalog: Option<String>,
    /// The catalog as the Python reader takes it (a SQLite file's path, or the same URL).
    pub reader_catalog: Option<String>,
    /// Extra flags for the runs.
    pub args: Vec<String>,
    /// Environment for the runs and the reader (S3 endpoint and credentials, tokens).
    pub env: Vec<(&'static str, String)>,
}

impl Lake {
    /// Every snapshot of `table`, read by pyiceberg through this lake's catalog.
    pub fn read(&self, table: &str) -> Vec<SnapshotRead> {
        read_table_with(
            &self.warehouse,
            self.reader_catalog.as_deref(),
            &self.env,
            table,
            false,
        )
        .0
    }
}

/// `orders-replica` over 60,000 generated events (`seed`) into `lake`: killed (`kill -9`)
/// twice mid-run, then run to the end; every snapshot must equal the oracle at its recorded
/// line and the last must cover the file. Returns the snapshots.
pub fn replica_survives_kills(lake: &Lake, dir: &Path, seed: u64) -> Vec<SnapshotRead> {
    let path = dir.join("orders.jsonl");
    let lines = crate::support::orders_lines(60_000, 5_000, seed);
    crate::support::write_lines(&path, &lines);
    let source = format!("file:{}", path.display());
    let command = || {
        let mut command = crate::support::replica_run(&source, &lake.warehouse);
        if let Some(catalog) = &lake.catalog {
            command.args(["--catalog", catalog]);
        }
        command
            .args(&lake.args)
            .envs(lake.env.iter().map(|(k, v)| (*k, v)));
        command
    };
    crate::support::kill_twice_then_finish(command);
    let snapshots = lake.read("demo.orders_realtime_replica");
    assert!(snapshots.len() >= 2, "only {} snapshots", snapshots.len());
    let last = check_snapshots(&snapshots, &source, &lines);
    assert_eq!(
        last,
        lines.len() as u64,
        "the last snapshot covers the file"
    );
    snapshots
}
