//! The stream's side of the backfill: which tables still need reading, the window between a
//! chunk's watermarks (the keys changed meanwhile), and the chunk merged into the stream at its
//! high watermark's commit.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;
use tokio_postgres::Client;

use tributary_operators::RawRecord;

use super::reader::{describe_table, Reader};
use super::{parse_watermark, Chunk, FromReader, Progress, TableProgress, Window};
use crate::error::SourceError;
use crate::sources::postgres::pgoutput::{Datum, RowMessage};
use crate::sources::postgres::session::{Feed, Session};
use crate::sources::postgres::transaction::{record, TableShape};

/// The stream's side of the backfill.
#[derive(Debug, Default)]
pub(in crate::sources::postgres) struct Backfill {
    pub progress: Progress,
    /// From the reader (`None` once it has finished).
    pub from_reader: Option<mpsc::Receiver<FromReader>>,
    /// Between a chunk's watermarks: the keys changed since the low one.
    pub window: Option<Window>,
    /// The chunk read, waiting for the stream to reach its high watermark.
    pub arrived: Option<Chunk>,
    /// This run's id in the watermarks.
    pub run: String,
    /// Tables without a key still to be read: their changes are left out until their one
    /// chunk, which holds them, is in (an append-only table would get them twice otherwise).
    pub keyless_pending: HashSet<String>,
}

impl Session {
    /// Works out which tables still need a backfill (of those the pipeline reads, all on a
    /// fresh run; on a resumed one those its committed progress does not have done, and new
    /// ones), records that as the progress from `start_at` on, and starts the reader, which
    /// writes `marker` once done.
    pub(in crate::sources::postgres) async fn start_backfill(
        &mut self,
        control: &Client,
        tables: &[(String, String)],
        start_at: u64,
        marker: Option<String>,
    ) -> Result<(), SourceError> {
        let known: HashSet<String> = tables.iter().map(|(s, t)| format!("{s}.{t}")).collect();
        // A pipeline that declared its tables from the source reads only those.
        let schemas = &self.followed.schemas;
        let server = &self.spec.server;
        let published: HashSet<String> = known
            .iter()
            .filter(|name| schemas.is_empty() || schemas.contains_key(&format!("{server}.{name}")))
            .cloned()
            .collect();
        let mut progress = match self.committed_progress.take() {
            Some(progress) => progress,
            // Positions without progress come from a run that read its snapshot whole.
            None if self.resume_from.is_some() => Progress {
                tables: published
                    .iter()
                    .map(|name| (name.clone(), TableProgress::Done))
                    .collect(),
            },
            None => Progress::default(),
        };
        progress.tables.retain(|name, _| published.contains(name));
        for name in &published {
            let table = progress
                .tables
                .entry(name.clone())
                .or_insert(TableProgress::Pending);
            if self.reload {
                *table = TableProgress::Pending;
            }
        }
        let mut keyless_pending = HashSet::new();
        for (name, table) in &progress.tables {
            let Some((schema, table_name)) = name.split_once('.') else {
                continue;
            };
            if *table != TableProgress::Done
                && describe_table(control, schema, table_name)
                    .await?
                    .is_some_and(|t| t.key.is_empty())
            {
                keyless_pending.insert(name.clone());
            }
        }
        self.send(Feed::Progress(start_at, progress.to_json()))
            .await?;
        let (to_stream, from_reader) = mpsc::channel(1);
        let run = uuid::Uuid::new_v4().to_string();
        let reader = Reader {
            spec: self.spec.clone(),
            chunk_rows: self.spec.chunk_rows,
            run: run.clone(),
            progress: progress.clone(),
            reload: self.reload,
            known,
            watch_publication: self.followed.new_tables.is_some(),
            marker,
            to_stream: to_stream.clone(),
        };
        tokio::spawn(async move {
            if let Err(error) = reader.run().await {
                let _ = to_stream.send(FromReader::Failed(error)).await;
            }
        });
        self.backfill = Backfill {
            progress,
            from_reader: Some(from_reader),
            window: None,
            arrived: None,
            run,
            keyless_pending,
        };
        Ok(())
    }

    /// What the reader says while the stream waits for WAL: a chunk is kept for its high
    /// watermark; a new table the pipeline would read stops the stream (`Some`).
    pub(in crate::sources::postgres) fn on_reader_message(
        &mut self,
        message: Option<FromReader>,
    ) -> Result<Option<String>, SourceError> {
        match message {
            None | Some(FromReader::Complete) => {
                if message.is_none() {
                    self.backfill.from_reader = None;
                }
                Ok(None)
            }
            Some(FromReader::Chunk(chunk)) => {
                self.backfill.arrived = Some(chunk);
                Ok(None)
            }
            Some(FromReader::NewTable(schema, table)) => {
                let followed = self
                    .followed
                    .new_tables
                    .as_ref()
                    .is_some_and(|filter| filter.matches(&schema, &table));
                Ok(followed.then(|| format!("table {}.{schema}.{table} is new", self.spec.server)))
            }
            Some(FromReader::Failed(error)) => Err(error),
        }
    }

    /// A watermark committed at `lsn`: a low one opens the chunk's window; at a high one the
    /// chunk's rows whose keys did not change meanwhile go to the pipeline, at `lsn`.
    pub(in crate::sources::postgres) async fn watermark(
        &mut self,
        content: &[u8],
        lsn: u64,
    ) -> Result<(), SourceError> {
        let Some((run, id, window)) = parse_watermark(content) else {
            return Ok(());
        };
        if run != self.backfill.run {
            return Ok(());
        }
        if let Some(window) = window {
            self.backfill.window = Some(window);
            return Ok(());
        }
        let Some(window) = self.backfill.window.take().filter(|w| w.chunk == id) else {
            return Ok(());
        };
        let chunk = match self.backfill.arrived.take() {
            Some(chunk) => chunk,
            None => loop {
                let message = match self.backfill.from_reader.as_mut() {
                    Some(from_reader) => from_reader.recv().await,
                    None => None,
                };
                if message.is_none() {
                    return Err(SourceError::Postgres {
                        what: "backfill".into(),
                        reason: "the backfill reader ended before its chunk".into(),
                    });
                }
                self.on_reader_message(message)?;
                if let Some(chunk) = self.backfill.arrived.take() {
                    break chunk;
                }
            },
        };
        if chunk.id > id {
            // The reader gave chunk `id` up after its high watermark (it lost its connection)
            // and read the next one, which waits for its own.
            self.backfill.arrived = Some(chunk);
            return Ok(());
        }
        if chunk.id != id {
            return Err(SourceError::Postgres {
                what: "backfill".into(),
                reason: format!("chunk {} arrived at the watermark of chunk {id}", chunk.id),
            });
        }
        if window.spoiled {
            tracing::debug!(table = %chunk.table, chunk = id, "the table changed without a usable key while its chunk was read; reading it again");
            let _ = chunk.verdict.send(false);
            return Ok(());
        }
        let mut records: Vec<RawRecord> = Vec::with_capacity(chunk.rows.len() + 1);
        if let Some(truncate) = chunk.truncate {
            records.push(record(truncate, lsn, 0));
        }
        for (key, json) in chunk.rows {
            if !window.changed.contains(&key) {
                let seq = records.len();
                records.push(record(json, lsn, seq));
            }
        }
        if records.is_empty() {
            // Nothing to add, but the progress must reach the sinks: a bare tombstone at the
            // watermark carries the position.
            records.push(RawRecord {
                value: None,
                ..record(String::new(), lsn, 0)
            });
        }
        if chunk.then == TableProgress::Done {
            self.backfill.keyless_pending.remove(&chunk.table);
        }
        self.backfill
            .progress
            .tables
            .insert(chunk.table, chunk.then);
        self.delivered = self.delivered.max(lsn);
        self.send(Feed::Progress(lsn, self.backfill.progress.to_json()))
            .await?;
        self.send(Feed::Chunk(records, chunk.taken)).await?;
        let _ = chunk.verdict.send(true);
        Ok(())
    }
}

impl Backfill {
    /// Whether `message` changes a keyless table whose backfill is still to come.
    pub(in crate::sources::postgres) fn left_out(
        &self,
        relations: &HashMap<u32, TableShape>,
        message: &RowMessage,
    ) -> bool {
        if self.keyless_pending.is_empty() {
            return false;
        }
        let oid = match message {
            RowMessage::Insert { oid, .. }
            | RowMessage::Update { oid, .. }
            | RowMessage::Delete { oid, .. } => *oid,
            _ => return false,
        };
        relations.get(&oid).is_some_and(|shape| {
            let name = format!("{}.{}", shape.relation.schema, shape.relation.table);
            self.keyless_pending.contains(&name)
        })
    }
}

/// Notes in `window` a change of its table.
pub(in crate::sources::postgres) fn watch_window(
    window: &mut Window,
    relations: &HashMap<u32, TableShape>,
    message: &RowMessage,
) {
    let oid = match message {
        RowMessage::Insert { oid, .. }
        | RowMessage::Update { oid, .. }
        | RowMessage::Delete { oid, .. } => *oid,
        RowMessage::Truncate { oids } => {
            let ours = oids.iter().any(|oid| {
                relations.get(oid).is_some_and(|shape| {
                    shape.relation.schema == window.schema && shape.relation.table == window.table
                })
            });
            window.spoiled |= ours;
            return;
        }
        RowMessage::Relation(_) | RowMessage::Ignored => return,
    };
    let Some(shape) = relations.get(&oid) else {
        return;
    };
    if shape.relation.schema != window.schema || shape.relation.table != window.table {
        return;
    }
    let names: Vec<String> = shape
        .relation
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut saw = |values: &[Datum]| window.saw(&names, values);
    match message {
        RowMessage::Insert { new, .. } => saw(new),
        RowMessage::Update { old, new, .. } => {
            saw(new);
            if let Some(old) = old {
                saw(old);
            }
        }
        RowMessage::Delete { old, .. } => saw(old),
        _ => {}
    }
}

/// The next message from the backfill reader, or never once it has finished.
pub(in crate::sources::postgres) async fn recv_from(
    from_reader: &mut Option<mpsc::Receiver<FromReader>>,
) -> Option<FromReader> {
    match from_reader {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
