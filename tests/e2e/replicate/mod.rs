//! `tributary run replicate`, no code, end to end: from PostgreSQL (`postgres`), from
//! schema-wrapped Kafka topics (`kafka`), and from files with declared or learnt tables and
//! per-table options (`files`); helpers they share.

#![allow(clippy::unwrap_used)]

mod files;
mod kafka;
mod postgres;

use serde_json::Value as Json;

use crate::support::iceberg::read_table;
use crate::support::kafka::Outgoing;

/// Rows with JSON documents (strings in both) parsed, so that spacing does not matter, floats
/// as floats, and without the replica's `cdc_*` columns; sorted.
pub(super) fn normalized(mut rows: Vec<Json>) -> Vec<Json> {
    for row in &mut rows {
        for column in ["j", "jb"] {
            if let Some(Json::String(text)) = row.get(column).cloned() {
                row[column] = serde_json::from_str(&text).unwrap();
            }
        }
        for column in ["r", "dp"] {
            if let Some(number) = row.get(column).and_then(Json::as_f64) {
                row[column] = serde_json::json!(number);
            }
        }
        if let Some(object) = row.as_object_mut() {
            object.remove("cdc_operation");
            object.remove("cdc_timestamp");
        }
    }
    rows.sort_by_key(|r| r.to_string());
    rows
}

pub(super) fn current(warehouse: &std::path::Path, table: &str) -> Vec<Json> {
    let (snapshots, _) = read_table(warehouse, table, true);
    normalized(snapshots.last().map(|s| s.rows.clone()).unwrap_or_default())
}

/// `tributary run replicate` following its source (no `--until-idle`), logging to a file;
/// killed when dropped.
pub(super) struct Followed {
    child: std::process::Child,
    log_path: std::path::PathBuf,
}

impl Followed {
    pub(super) fn start(
        source: &str,
        warehouse: &std::path::Path,
        dir: &std::path::Path,
    ) -> Followed {
        let log_path = dir.join("follow.log");
        let child = std::process::Command::new(crate::support::tributary_bin())
            .args(["run", "replicate", "--source", source, "--warehouse"])
            .arg(warehouse)
            .args(["--epoch-ms", "20", "--commit-ms", "100"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        Followed { child, log_path }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (up to 90 s) until `done`, else fails saying `why` with the run's log.
    pub(super) fn wait_for(&self, done: &dyn Fn() -> bool, why: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{why}: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A schema-wrapped Debezium change event (Kafka's JsonConverter with schemas) of table
/// `pg1.public.<table>`, with `fields` (Connect field schemas of the row) and its message key.
pub(super) fn connect_message(
    table: &str,
    fields: &Json,
    key: (&str, i64),
    after: Option<Json>,
    tx: u64,
) -> Outgoing {
    let (key_field, id) = key;
    let row = serde_json::json!({"type": "struct", "optional": true, "fields": fields});
    let op = if after.is_some() { "c" } else { "d" };
    let before = if after.is_none() {
        serde_json::json!({key_field: id})
    } else {
        Json::Null
    };
    let value = serde_json::json!({
        "schema": {"type": "struct", "fields": [
            {"field": "before", "type": "struct", "optional": true, "fields": fields},
            {"field": "after", "type": "struct", "optional": true, "fields": row["fields"]},
            {"field": "source", "type": "struct", "fields": []},
            {"field": "op", "type": "string"}]},
        "payload": {"before": before, "after": after, "op": op,
                    "source": {"name": "pg1", "schema": "public", "table": table,
                               "ts_ms": 1_700_000_000_000u64 + tx, "txId": tx}},
    });
    let key = serde_json::json!({
        "schema": {"type": "struct", "fields": [{"field": key_field, "type": "int64", "optional": false}]},
        "payload": {key_field: id},
    });
    Outgoing {
        topic: format!("pg1.public.{table}"),
        partition: (id % 2) as i32,
        key: Some(key.to_string().into_bytes()),
        value: Some(value.to_string().into_bytes()),
    }
}
