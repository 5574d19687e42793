//! The backfill: reads the published tables' existing rows in chunks by primary key while
//! changes stream, with the watermark technique of DBLog (Netflix, 2020), as Flink CDC's
//! incremental snapshot does. For each chunk the reader writes a low watermark (a logical
//! message, `pg_logical_emit_message`, so no signalling table is needed), selects the next `chunk_rows` rows after the last key
//! read, and writes a high watermark. The stream, which sees both watermarks in WAL order,
//! drops the chunk's rows whose keys changed between them (the streamed change is newer) and
//! hands the rest on at the high watermark as `r` events: no change is lost or seen twice,
//! and a table is whole once its last chunk is in. At most two chunks wait in memory (one
//! read while the pipeline takes the other), so memory is bounded by the chunk size,
//! whatever the table's. Progress (finished tables, the last key
//! read of the table in progress) travels with the sinks' commits and is where a restarted
//! run goes on.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::encode::{change_event, envelope_tail, read_event, ChangeSource, ColumnInfo};
use super::pgoutput::Datum;
use super::server::{
    connect_control, db_error, emit_marker, quote_ident, quote_literal, table_columns,
};
use super::PostgresSourceSpec;
use crate::error::SourceError;

/// Prefix of the watermark messages.
pub(super) const WATERMARK_PREFIX: &str = "tributary.backfill";
/// Rows per chunk unless the URL says (`chunk_rows=`).
pub const DEFAULT_CHUNK_ROWS: usize = 10_000;
/// How often the reader looks for tables added to the publication.
const NEW_TABLE_CHECK: Duration = Duration::from_secs(2);

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

/// The reader's settings and state, moved onto its task.
pub(super) struct Reader {
    pub spec: PostgresSourceSpec,
    pub chunk_rows: usize,
    /// A unique id of this run, in every watermark (older runs' watermarks are ignored).
    pub run: String,
    pub progress: Progress,
    /// Tables whose first chunk follows a truncate.
    pub reload: bool,
    /// Tables known when the run started (new ones are reported, not read).
    pub known: HashSet<String>,
    /// Look for tables added to the publication.
    pub watch_publication: bool,
    /// The `--until-idle` marker to write once every table is read.
    pub marker: Option<String>,
    pub to_stream: mpsc::Sender<FromReader>,
}

/// The transaction id of chunk rows: above every PostgreSQL xid, a new one per chunk.
const CHUNK_TX_BASE: u64 = 1 << 40;

impl Reader {
    /// Reads every table the progress does not have done, then watches the publication.
    pub async fn run(mut self) -> Result<(), SourceError> {
        let mut control = connect_control(&self.spec).await?;
        let mut queue: VecDeque<String> = self
            .progress
            .tables
            .iter()
            .filter(|(_, p)| **p != TableProgress::Done)
            .map(|(name, _)| name.clone())
            .collect();
        let mut chunk_id = 0u64;
        let mut in_pipeline: Option<oneshot::Receiver<()>> = None;
        while let Some(name) = queue.pop_front() {
            let Some((schema, table)) = name.split_once('.') else {
                continue;
            };
            let Some(target) = describe_table(&control, schema, table).await? else {
                tracing::warn!(table = %name, "a table to backfill is gone from the database; skipped");
                self.progress.tables.remove(&name);
                continue;
            };
            if target.key.is_empty() {
                tracing::warn!(table = %name, "no primary key or replica identity index: the table is read in one pass, held in memory, and read again if it changes meanwhile");
            }
            let mut first = self.progress.tables.get(&name) == Some(&TableProgress::Pending);
            match self.progress.tables.get(&name) {
                Some(TableProgress::After(key)) => {
                    tracing::info!(table = %name, after = ?key, chunk_rows = self.chunk_rows, "backfilling, resumed after the last committed chunk")
                }
                _ => tracing::info!(table = %name, chunk_rows = self.chunk_rows, "backfilling"),
            }
            let started = std::time::Instant::now();
            let (mut rows, mut chunks) = (0u64, 0u32);
            loop {
                chunk_id += 1;
                let after = match self.progress.tables.get(&name) {
                    Some(TableProgress::After(key)) => Some(key.clone()),
                    _ => None,
                };
                let read = self
                    .read_chunk(&control, &target, chunk_id, after.as_deref(), first)
                    .await;
                let (chunk, accepted, taken) = match read {
                    Ok(read) => read,
                    // A lost connection (a server restart): the chunk is read again, with
                    // new watermarks, once the server is back.
                    Err(error) if control.is_closed() => {
                        match self.reconnect(error).await? {
                            Some(again) => control = again,
                            None => return Ok(()),
                        }
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                let then = chunk.then.clone();
                let read = chunk.rows.len() as u64;
                // The chunk before must be in the pipeline first: at most two wait in memory,
                // and reading one overlaps with the pipeline taking the other.
                if let Some(previous) = in_pipeline.take() {
                    if previous.await.is_err() {
                        return Ok(());
                    }
                }
                if self.to_stream.send(FromReader::Chunk(chunk)).await.is_err() {
                    return Ok(());
                }
                match accepted.await {
                    Ok(true) => in_pipeline = Some(taken),
                    // The table changed in a way the window cannot sort out: read it again.
                    Ok(false) => continue,
                    Err(_) => return Ok(()),
                }
                first = false;
                rows += read;
                chunks += 1;
                let done = then == TableProgress::Done;
                self.progress.tables.insert(name.clone(), then);
                if done {
                    let seconds = started.elapsed().as_secs_f64();
                    tracing::info!(
                        table = %name,
                        rows,
                        chunks,
                        elapsed_s = format!("{seconds:.2}"),
                        rows_per_s = (rows as f64 / seconds.max(1e-9)) as u64,
                        "backfilled"
                    );
                    break;
                }
            }
        }
        if let Some(marker) = &self.marker {
            emit_marker(&control, marker).await?;
        }
        if self.to_stream.send(FromReader::Complete).await.is_err() {
            return Ok(());
        }
        if !self.watch_publication {
            return Ok(());
        }
        loop {
            tokio::time::sleep(NEW_TABLE_CHECK).await;
            let tables = match published(&control, &self.spec).await {
                Ok(tables) => tables,
                Err(error) if control.is_closed() => {
                    match self.reconnect(error).await? {
                        Some(again) => control = again,
                        None => return Ok(()),
                    }
                    continue;
                }
                Err(error) => return Err(error),
            };
            for (schema, table) in tables {
                let new = self.known.insert(format!("{schema}.{table}"));
                let message = FromReader::NewTable(schema, table);
                if new && self.to_stream.send(message).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// Connects again after `error` broke the connection, with backoff, until it works or the
    /// stream is gone (`None`).
    async fn reconnect(&self, error: SourceError) -> Result<Option<Client>, SourceError> {
        tracing::warn!(%error, "lost the backfill's connection; reconnecting");
        let mut delay = Duration::from_millis(500);
        loop {
            tokio::time::sleep(delay).await;
            if self.to_stream.is_closed() {
                return Ok(None);
            }
            match connect_control(&self.spec).await {
                Ok(control) => return Ok(Some(control)),
                Err(error) => {
                    delay = (delay * 2).min(Duration::from_secs(30));
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "PostgreSQL is not back yet");
                }
            }
        }
    }

    /// Reads the chunk after `after` between its watermarks.
    async fn read_chunk(
        &self,
        control: &Client,
        target: &BackfillTable,
        id: u64,
        after: Option<&[String]>,
        first: bool,
    ) -> Result<(Chunk, oneshot::Receiver<bool>, oneshot::Receiver<()>), SourceError> {
        let key_names: Vec<&str> = target
            .key
            .iter()
            .map(|(i, _)| target.columns[*i].name.as_str())
            .collect();
        let mark = |mark: &str| {
            json!({
                "run": self.run, "chunk": id, "mark": mark,
                "schema": target.schema, "table": target.table, "key": key_names,
            })
            .to_string()
        };
        emit_watermark(control, &mark("low")).await?;
        let list = target
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "SELECT {list} FROM {}.{}",
            quote_ident(&target.schema),
            quote_ident(&target.table)
        );
        let keys = target
            .key
            .iter()
            .map(|(i, _)| quote_ident(&target.columns[*i].name))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(after) = after {
            let values = target
                .key
                .iter()
                .zip(after)
                .map(|((_, ty), v)| format!("{}::{ty}", quote_literal(v)))
                .collect::<Vec<_>>()
                .join(", ");
            sql.push_str(&format!(" WHERE ({keys}) > ({values})"));
        }
        if !target.key.is_empty() {
            sql.push_str(&format!(" ORDER BY {keys} LIMIT {}", self.chunk_rows));
        }
        let messages = control
            .simple_query(&sql)
            .await
            .map_err(|e| db_error("backfill", e))?;
        let high = emit_watermark(control, &mark("high")).await?;
        let source = ChangeSource {
            server: &self.spec.server,
            db: &self.spec.database,
            schema: &target.schema,
            table: &target.table,
            tx_id: CHUNK_TX_BASE + id,
            lsn: high,
            ts_ms: super::session::now_ms(),
            snapshot: true,
        };
        let tail = envelope_tail('r', &source);
        let mut rows = Vec::with_capacity(self.chunk_rows.min(messages.len()));
        let mut values: Vec<Option<&str>> = Vec::with_capacity(target.columns.len());
        for message in &messages {
            let SimpleQueryMessage::Row(row) = message else {
                continue;
            };
            values.clear();
            values.extend((0..target.columns.len()).map(|i| row.get(i)));
            let key: Vec<String> = target
                .key
                .iter()
                .map(|(i, _)| {
                    values
                        .get(*i)
                        .copied()
                        .flatten()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            rows.push((key, read_event(&target.columns, &values, &tail)));
        }
        let then = match rows.last() {
            Some((key, _)) if !target.key.is_empty() && rows.len() >= self.chunk_rows => {
                TableProgress::After(key.clone())
            }
            _ => TableProgress::Done,
        };
        let truncate = (self.reload && first).then(|| change_event('t', None, None, &source));
        let (verdict, accepted) = oneshot::channel();
        let (taken, in_pipeline) = oneshot::channel();
        Ok((
            Chunk {
                id,
                table: target.name(),
                rows,
                truncate,
                then,
                verdict,
                taken,
            },
            accepted,
            in_pipeline,
        ))
    }
}

/// Writes a watermark, in a transaction of its own: the stream sees it at its commit, which
/// also flushes the WAL (a non-transactional message would wait for the WAL writer, up to
/// `wal_writer_delay` per watermark). Returns its LSN.
async fn emit_watermark(control: &Client, content: &str) -> Result<u64, SourceError> {
    let row = control
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&WATERMARK_PREFIX, &content],
        )
        .await
        .map_err(|e| db_error("backfill watermark", e))?;
    let lsn: String = row.get(0);
    pgwire_replication::Lsn::parse(&lsn)
        .map(|l| l.as_u64())
        .map_err(|_| SourceError::Postgres {
            what: "backfill watermark".into(),
            reason: format!("unreadable LSN `{lsn}`"),
        })
}

/// A table's columns and the key it is read by (its primary key, else its replica identity
/// index); `None` if it is gone.
pub(super) async fn describe_table(
    control: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<BackfillTable>, SourceError> {
    let columns = table_columns(control, schema, table).await?;
    if columns.is_empty() {
        return Ok(None);
    }
    let rows = control
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indexrelid = ( \
                 SELECT j.indexrelid FROM pg_index j WHERE j.indrelid = c.oid \
                   AND (j.indisprimary OR j.indisreplident) \
                 ORDER BY j.indisprimary DESC LIMIT 1) \
             ORDER BY k.ord",
            &[&schema, &table],
        )
        .await
        .map_err(|e| db_error("backfill", e))?;
    let mut key = Vec::with_capacity(rows.len());
    for row in rows {
        let (name, ty): (String, String) = (row.get(0), row.get(1));
        match columns.iter().position(|c| c.name == name) {
            Some(i) => key.push((i, ty)),
            // A key over a generated column: read the table in one pass.
            None => {
                key.clear();
                break;
            }
        }
    }
    Ok(Some(BackfillTable {
        schema: schema.to_owned(),
        table: table.to_owned(),
        columns,
        key,
    }))
}

/// The publication's tables, `(schema, table)`.
pub(super) async fn published(
    control: &Client,
    spec: &PostgresSourceSpec,
) -> Result<Vec<(String, String)>, SourceError> {
    let rows = control
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
             WHERE pubname = $1 ORDER BY 1, 2",
            &[&spec.publication],
        )
        .await
        .map_err(|e| db_error("backfill", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
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
