//! The backfill's reader: on a connection of its own, reads each table in chunks by key
//! between watermarks and hands each chunk to the stream, one read while the pipeline takes
//! the one before; reconnects after a lost connection; then watches the publication for new
//! tables.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::{BackfillTable, Chunk, FromReader, Progress, TableProgress, WATERMARK_PREFIX};
use crate::error::SourceError;
use crate::sources::postgres::encode::{change_event, envelope_tail, read_event, ChangeSource};
use crate::sources::postgres::server::{
    connect_control, db_error, emit_marker, quote_ident, quote_literal, table_columns,
};
use crate::sources::postgres::PostgresSourceSpec;

/// How often the reader looks for tables added to the publication.
const NEW_TABLE_CHECK: Duration = Duration::from_secs(2);

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
                    // After a server restart the chunk is read again, with new watermarks.
                    Err(error) => match self.recover(&mut control, error).await? {
                        true => continue,
                        false => return Ok(()),
                    },
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
                Err(error) => match self.recover(&mut control, error).await? {
                    true => continue,
                    false => return Ok(()),
                },
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

    /// After `error`: if it broke the connection, connects again, with backoff, and says
    /// whether to go on (false: the stream is gone); any other error ends the reader.
    async fn recover(&self, control: &mut Client, error: SourceError) -> Result<bool, SourceError> {
        if !control.is_closed() {
            return Err(error);
        }
        tracing::warn!(%error, "lost the backfill's connection; reconnecting");
        let mut delay = Duration::from_millis(500);
        loop {
            tokio::time::sleep(delay).await;
            if self.to_stream.is_closed() {
                return Ok(false);
            }
            match connect_control(&self.spec).await {
                Ok(again) => {
                    *control = again;
                    return Ok(true);
                }
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
            ts_ms: crate::sources::postgres::session::now_ms(),
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
