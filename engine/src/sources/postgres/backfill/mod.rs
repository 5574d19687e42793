//! The backfill: reads the published tables' existing rows in chunks by primary key while
//! changes stream, with the watermark technique of DBLog (Netflix, 2020), as Flink CDC's
//! incremental snapshot does. For each chunk the reader writes a low watermark (a logical
//! message, `pg_logical_emit_message`, so no signalling table is needed), selects the next
//! `chunk_rows` rows after the last key read, and writes a high watermark (`reader.rs`). The
//! stream, which sees both watermarks in WAL order, drops the chunk's rows whose keys changed
//! between them (the streamed change is newer) and hands the rest on at the high watermark as
//! `r` events (`merge.rs`): no change is lost or seen twice, and a table is whole once its last
//! chunk is in. At most two chunks wait in memory (one read while the pipeline takes the
//! other), so memory is bounded by the chunk size, whatever the table's. Progress (finished
//! tables, the last key read of the table in progress) travels with the sinks' commits and is
//! where a restarted run goes on.

mod merge;
mod reader;

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::encode::ColumnInfo;
use super::pgoutput::Datum;
use crate::error::SourceError;

pub(super) use merge::{recv_from, watch_window, Backfill};

/// Prefix of the watermark messages.
pub(super) const WATERMARK_PREFIX: &str = "tributary.backfill";
/// Rows per chunk unless the URL says (`chunk_rows=`).
pub const DEFAULT_CHUNK_ROWS: usize = 10_000;
/// Where one table's backfill stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TableProgress {
    /// Not read yet.
    Pending,
    /// Read through this key (the key columns' text values).
    After(Vec<String>),
    /// Every row read.
    Done,
}

/// Every table's backfill, by `schema.table`: what the sinks commit as the stream's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Progress {
    pub tables: BTreeMap<String, TableProgress>,
}

impl Progress {
    /// The note committed with the sinks' positions.
    pub fn to_json(&self) -> Value {
        let tables: serde_json::Map<String, Value> = self
            .tables
            .iter()
            .map(|(name, progress)| {
                let value = match progress {
                    TableProgress::Pending => json!("pending"),
                    TableProgress::Done => json!("done"),
                    TableProgress::After(key) => json!({ "after": key }),
                };
                (name.clone(), value)
            })
            .collect();
        let complete = self.tables.values().all(|t| *t == TableProgress::Done);
        json!({
            "backfill": if complete { "complete" } else { "in-progress" },
            "tables": tables,
        })
    }

    /// Reads a committed note back (`None`: not one of ours).
    pub fn from_json(note: &Value) -> Option<Progress> {
        let tables = note.get("tables")?.as_object()?;
        let mut progress = Progress::default();
        for (name, value) in tables {
            let table = match value {
                Value::String(s) if s == "done" => TableProgress::Done,
                Value::String(s) if s == "pending" => TableProgress::Pending,
                Value::Object(o) => TableProgress::After(
                    o.get("after")?
                        .as_array()?
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<_>>()?,
                ),
                _ => return None,
            };
            progress.tables.insert(name.clone(), table);
        }
        Some(progress)
    }
}

/// A table to read: its columns and the key it is read in order of (none: read in one pass).
#[derive(Debug, Clone)]
pub(super) struct BackfillTable {
    pub schema: String,
    pub table: String,
    pub columns: Vec<ColumnInfo>,
    /// Key columns: (index in `columns`, SQL type).
    pub key: Vec<(usize, String)>,
}

impl BackfillTable {
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// What the low watermark tells the stream: which table's keys to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Window {
    pub chunk: u64,
    pub schema: String,
    pub table: String,
    /// Key column names (empty: the table has none, any change spoils the chunk).
    pub key: Vec<String>,
    /// Keys changed since the low watermark.
    pub changed: HashSet<Vec<String>>,
    /// A change without a usable key, or a truncate: the chunk's rows cannot be trusted.
    pub spoiled: bool,
}

/// A chunk read between its watermarks, waiting for the stream to reach the high one.
#[derive(Debug)]
pub(super) struct Chunk {
    pub id: u64,
    /// `schema.table`.
    pub table: String,
    /// Each row's key and its `r` event.
    pub rows: Vec<(Vec<String>, String)>,
    /// A `t` event to put first (a reload empties the table before its first chunk).
    pub truncate: Option<String>,
    /// The table's progress once the chunk is in.
    pub then: TableProgress,
    /// The stream's verdict at the high watermark: true if the chunk goes in, false if it
    /// must be read again.
    pub verdict: oneshot::Sender<bool>,
    /// Told once the chunk's rows are handed to the pipeline.
    pub taken: oneshot::Sender<()>,
}

/// What the reader tells the stream.
#[derive(Debug)]
pub(super) enum FromReader {
    Chunk(Chunk),
    /// A table joined the publication (`schema.table`).
    NewTable(String, String),
    /// Every table is read; the `--until-idle` marker, if any, was written after the last
    /// chunk.
    Complete,
    /// The reader failed.
    Failed(SourceError),
}

/// Parses a watermark message's content: (run, chunk, low?, window for a low one).
pub(super) fn parse_watermark(content: &[u8]) -> Option<(String, u64, Option<Window>)> {
    let value: Value = serde_json::from_slice(content).ok()?;
    let run = value.get("run")?.as_str()?.to_owned();
    let chunk = value.get("chunk")?.as_u64()?;
    let window = match value.get("mark")?.as_str()? {
        "low" => Some(Window {
            chunk,
            schema: value.get("schema")?.as_str()?.to_owned(),
            table: value.get("table")?.as_str()?.to_owned(),
            key: value
                .get("key")?
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
            changed: HashSet::new(),
            spoiled: false,
        }),
        _ => None,
    };
    Some((run, chunk, window))
}

impl Window {
    /// Notes a change of `values` (the relation's columns `names`) if it is of the window's
    /// table.
    pub fn saw(&mut self, names: &[String], values: &[Datum]) {
        if self.key.is_empty() {
            self.spoiled = true;
            return;
        }
        let key: Option<Vec<String>> = self
            .key
            .iter()
            .map(|k| {
                let i = names.iter().position(|n| n == k)?;
                match values.get(i)? {
                    Datum::Text(text) => Some(String::from_utf8_lossy(text).into_owned()),
                    Datum::Null | Datum::UnchangedToast => None,
                }
            })
            .collect();
        match key {
            Some(key) => {
                self.changed.insert(key);
            }
            None => self.spoiled = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn progress_round_trips_through_its_note() {
        let mut progress = Progress::default();
        progress
            .tables
            .insert("public.a".into(), TableProgress::Done);
        progress.tables.insert(
            "public.b".into(),
            TableProgress::After(vec!["42".into(), "x'y".into()]),
        );
        progress
            .tables
            .insert("public.c".into(), TableProgress::Pending);
        let note = progress.to_json();
        assert_eq!(note["backfill"], "in-progress");
        assert_eq!(Progress::from_json(&note), Some(progress.clone()));
        for table in progress.tables.values_mut() {
            *table = TableProgress::Done;
        }
        assert_eq!(progress.to_json()["backfill"], "complete");
        assert_eq!(Progress::from_json(&json!({"other": 1})), None);
    }

    #[test]
    fn a_window_collects_changed_keys_and_spoils_on_keyless_changes() {
        let content = json!({"run": "r", "chunk": 3, "mark": "low", "schema": "public",
            "table": "t", "key": ["id"]})
        .to_string();
        let (run, chunk, window) = parse_watermark(content.as_bytes()).unwrap();
        assert_eq!((run.as_str(), chunk), ("r", 3));
        let mut window = window.unwrap();
        let names = vec!["name".to_owned(), "id".to_owned()];
        window.saw(
            &names,
            &[Datum::Null, Datum::Text(Bytes::from_static(b"7"))],
        );
        assert!(window.changed.contains(&vec!["7".to_owned()]));
        assert!(!window.spoiled);
        window.saw(&names, &[Datum::Null, Datum::Null]);
        assert!(window.spoiled);
        let high = json!({"run": "r", "chunk": 3, "mark": "high"}).to_string();
        assert_eq!(parse_watermark(high.as_bytes()).unwrap().2, None);
    }
}
