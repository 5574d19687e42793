//! The replication session, on a background thread with its own tokio runtime: checks the
//! server, creates (or reuses) the slot, reads the initial snapshot under the snapshot the slot
//! exported, then streams `pgoutput` transactions and hands each committed one to the source as
//! Debezium records. Reports the sinks' committed LSN back to the server as the flush position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pgwire_replication::{
    Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent,
};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, SimpleQueryMessage};

use tributary_operators::{Position, RawRecord};

use super::encode::{change_event, ChangeSource, ColumnInfo, RowImage};
use super::pgoutput::{self, Datum, Relation, RowMessage};
use super::tls::{self, SslMode};
use super::PostgresSourceSpec;
use crate::error::SourceError;

/// What the session hands to the source, in order.
#[derive(Debug)]
pub(super) enum Feed {
    /// Records of the snapshot or of one committed transaction.
    Records(Vec<RawRecord>),
    /// The initial snapshot is complete: it forms an epoch of its own.
    SnapshotDone,
    /// The stream passed the WAL position that was current when the run started.
    CaughtUp,
    /// The session ended with this error.
    Failed(SourceError),
}

/// Everything the session needs, moved onto its thread.
#[derive(Debug)]
pub(super) struct Session {
    pub spec: PostgresSourceSpec,
    /// The LSN the sinks last committed (transactions ending at or before it are skipped);
    /// `None`: nothing committed, take a new snapshot.
    pub resume_from: Option<u64>,
    /// Report [`Feed::CaughtUp`] once the WAL current at start has been streamed.
    pub until_idle: bool,
    /// The LSN every durable sink has committed (flush position for the server).
    pub acknowledged: Arc<AtomicU64>,
    pub feed: mpsc::Sender<Feed>,
    pub stop: watch::Receiver<bool>,
    /// End LSN of the last transaction handed to the source (or the resume point).
    pub delivered: u64,
    /// The relations the server described, by OID (kept across reconnects).
    pub relations: HashMap<u32, TableShape>,
    /// The server's WAL position from its last keepalive.
    pub server_position: u64,
    /// Between a transaction's Begin and Commit (its changes are not handed on yet).
    pub in_transaction: bool,
}

/// Why streaming stopped early.
#[derive(Debug)]
enum Interrupted {
    /// The connection broke: reconnect and go on.
    Lost(String),
    /// Anything else: the run fails.
    Fatal(SourceError),
}

/// The transaction id given to snapshot rows: above every PostgreSQL xid, so the epoch clock
/// never splits the snapshot and always closes it before the first streamed transaction.
const SNAPSHOT_TX: u64 = 1 << 40;
/// Prefix of the logical message that marks "caught up" for `--until-idle`.
const MARKER_PREFIX: &str = "tributary.caught-up";
/// Rows fetched per round trip while reading the snapshot.
const SNAPSHOT_FETCH: usize = 5000;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// How often the committed LSN is reported to the server.
const FEEDBACK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a slot still held by a server process (e.g. of a killed run) is waited for.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(15);
/// The longest wait between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Session settings that make text values unambiguous (ISO dates, UTC timestamps).
pub(super) const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO,YMD -c TimeZone=UTC -c IntervalStyle=iso_8601 -c extra_float_digits=3";

impl Session {
    /// Runs until the stream ends, the source is dropped, or an error; errors go to the feed.
    pub async fn run(self) {
        let feed = self.feed.clone();
        if let Err(error) = self.stream().await {
            let _ = feed.send(Feed::Failed(error)).await;
        }
    }

    async fn stream(mut self) -> Result<(), SourceError> {
        let mut control = connect_control(&self.spec).await?;
        let tables = preflight(&control, &self.spec).await?;
        let mut config = self.spec.replication_config();
        let mut client = match self.resume_from {
            Some(lsn) => {
                check_slot_for_resume(&control, &self.spec, lsn).await?;
                config.start_lsn = Lsn(lsn);
                config.ack_lsn = Some(Lsn(lsn));
                self.acknowledged.fetch_max(lsn, Ordering::Relaxed);
                self.delivered = lsn;
                connect_replication(&self.spec, config).await?
            }
            None => {
                drop_stale_slot(&control, &self.spec).await?;
                let mut client = connect_replication(&self.spec, config).await?;
                let (consistent_point, snapshot) = create_slot(&mut client, &self.spec).await?;
                tracing::info!(slot = %self.spec.slot, consistent_point = %Lsn(consistent_point).to_pg_string(), tables = tables.len(), "created replication slot; reading the initial snapshot");
                let rows = self
                    .read_snapshot(&control, &tables, &snapshot, consistent_point)
                    .await?;
                tracing::info!(rows, "initial snapshot read");
                self.send(Feed::SnapshotDone).await?;
                client
            }
        };
        let marker = if self.until_idle {
            Some(emit_marker(&control).await?)
        } else {
            None
        };
        start(&mut client, &self.spec).await?;
        tracing::info!(slot = %self.spec.slot, publication = %self.spec.publication, "streaming changes");
        loop {
            let outcome = self.follow(&mut client, marker.as_deref()).await;
            client.stop();
            let _ = client.shutdown().await;
            match outcome {
                Err(Interrupted::Lost(reason)) => {
                    tracing::warn!(%reason, resume_after = %Lsn(self.delivered).to_pg_string(), "lost the replication connection; reconnecting");
                    let Some((new_control, new_client)) = self.reconnect().await? else {
                        return Ok(());
                    };
                    (control, client) = (new_control, new_client);
                    self.in_transaction = false;
                    tracing::info!(slot = %self.spec.slot, resume_after = %Lsn(self.delivered).to_pg_string(), "reconnected; streaming changes");
                }
                outcome => {
                    // The client's stop does not send a last status update: move the slot to
                    // what the sinks committed ourselves, now that no session holds it.
                    let confirmed = self.confirmable();
                    if confirmed > self.resume_from.unwrap_or(0) {
                        advance_slot(&control, &self.spec, confirmed).await;
                    }
                    return outcome.map_err(|interrupted| match interrupted {
                        Interrupted::Fatal(error) => error,
                        Interrupted::Lost(reason) => SourceError::Postgres {
                            what: "replication".into(),
                            reason,
                        },
                    });
                }
            }
        }
    }

    /// The flush position to report: what every durable sink committed; and once they have
    /// committed every transaction handed on and none is open, the server's WAL position (what
    /// lies in between changed no published table), so the slot keeps no WAL it does not need
    /// and a server shutdown, which waits for the client to confirm, is not held up.
    fn confirmable(&self) -> u64 {
        let acknowledged = self.acknowledged.load(Ordering::Relaxed);
        if !self.in_transaction && acknowledged >= self.delivered {
            acknowledged.max(self.server_position)
        } else {
            acknowledged
        }
    }

    /// Connects again after a lost connection (a server restart, a network cut), with
    /// backoff, until it works, the source is closed (`None`), or the slot is gone. Streaming
    /// resumes after the last transaction handed to the pipeline.
    async fn reconnect(&mut self) -> Result<Option<(Client, ReplicationClient)>, SourceError> {
        let mut delay = Duration::from_millis(500);
        loop {
            let wait = tokio::time::sleep(delay);
            tokio::select! {
                _ = wait => {}
                _ = self.stop.changed() => return Ok(None),
            }
            match self.connect_again().await {
                Ok(pair) => return Ok(Some(pair)),
                Err(error @ SourceError::Resume { .. }) => return Err(error),
                Err(error) => {
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "PostgreSQL is not back yet");
                }
            }
        }
    }

    async fn connect_again(&self) -> Result<(Client, ReplicationClient), SourceError> {
        let control = connect_control(&self.spec).await?;
        let from = self.delivered;
        if free_slot(&control, &self.spec).await?.is_none() {
            return Err(SourceError::Resume {
                source_name: self.spec.describe(),
                reason: format!(
                    "replication slot `{}` disappeared while streaming",
                    self.spec.slot
                ),
            });
        }
        let mut config = self.spec.replication_config();
        config.start_lsn = Lsn(from);
        config.ack_lsn = Some(Lsn(self.acknowledged.load(Ordering::Relaxed)));
        let mut client = connect_replication(&self.spec, config).await?;
        start(&mut client, &self.spec).await?;
        Ok((control, client))
    }

    async fn send(&self, feed: Feed) -> Result<(), SourceError> {
        // A closed feed means the source was dropped: the run is over, nothing to report.
        self.feed
            .send(feed)
            .await
            .map_err(|_| SourceError::Postgres {
                what: "stream".into(),
                reason: "the source was closed".into(),
            })
    }

    /// Reads every published table under the exported snapshot, as `r` events at the slot's
    /// consistent point; returns the row count.
    async fn read_snapshot(
        &self,
        control: &Client,
        tables: &[(String, String)],
        snapshot: &str,
        consistent_point: u64,
    ) -> Result<u64, SourceError> {
        let sql_error = |e: tokio_postgres::Error| db_error("snapshot", e);
        control
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(sql_error)?;
        control
            .batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT {}",
                quote_literal(snapshot)
            ))
            .await
            .map_err(sql_error)?;
        let ts_ms = now_ms();
        let mut total = 0;
        for (schema, table) in tables {
            let columns = table_columns(control, schema, table).await?;
            let list = columns
                .iter()
                .map(|c| quote_ident(&c.name))
                .collect::<Vec<_>>()
                .join(", ");
            control
                .batch_execute(&format!(
                    "DECLARE tributary_snapshot NO SCROLL CURSOR FOR SELECT {list} FROM {}.{}",
                    quote_ident(schema),
                    quote_ident(table)
                ))
                .await
                .map_err(sql_error)?;
            let source = ChangeSource {
                server: &self.spec.server,
                db: &self.spec.database,
                schema,
                table,
                tx_id: SNAPSHOT_TX,
                lsn: consistent_point,
                ts_ms,
                snapshot: true,
            };
            loop {
                let messages = control
                    .simple_query(&format!(
                        "FETCH FORWARD {SNAPSHOT_FETCH} FROM tributary_snapshot"
                    ))
                    .await
                    .map_err(sql_error)?;
                let mut records = Vec::with_capacity(SNAPSHOT_FETCH);
                let mut values = Vec::with_capacity(columns.len());
                for message in messages {
                    let SimpleQueryMessage::Row(row) = message else {
                        continue;
                    };
                    values.clear();
                    values.extend((0..columns.len()).map(|i| match row.get(i) {
                        Some(text) => Datum::Text(Bytes::copy_from_slice(text.as_bytes())),
                        None => Datum::Null,
                    }));
                    let after = RowImage {
                        columns: &columns,
                        values: &values,
                        fallback: None,
                    };
                    let json = change_event('r', None, Some(after), &source);
                    records.push(record(json, consistent_point));
                }
                if records.is_empty() {
                    break;
                }
                total += records.len() as u64;
                self.send(Feed::Records(records)).await?;
            }
            control
                .batch_execute("CLOSE tributary_snapshot")
                .await
                .map_err(sql_error)?;
        }
        control.batch_execute("COMMIT").await.map_err(sql_error)?;
        Ok(total)
    }

    /// Streams transactions until stopped; each commit becomes one batch of records.
    async fn follow(
        &mut self,
        client: &mut ReplicationClient,
        marker: Option<&str>,
    ) -> Result<(), Interrupted> {
        let mut open: Option<OpenTransaction> = None;
        let mut feedback = tokio::time::interval(FEEDBACK_INTERVAL);
        loop {
            let event = tokio::select! {
                event = client.recv() => event.map_err(|e| Interrupted::Lost(e.to_string()))?,
                _ = feedback.tick() => {
                    client.update_applied_lsn(Lsn(self.confirmable()));
                    continue;
                }
                _ = self.stop.changed() => return Ok(()),
            };
            let Some(event) = event else {
                return Ok(());
            };
            match event {
                ReplicationEvent::Begin {
                    xid,
                    commit_time_micros,
                    ..
                } => {
                    self.in_transaction = true;
                    open = Some(OpenTransaction {
                        xid: u64::from(xid),
                        ts_ms: (commit_time_micros + PG_EPOCH_MICROS).div_euclid(1000),
                        changes: Vec::new(),
                    });
                }
                ReplicationEvent::XLogData {
                    wal_start, data, ..
                } => {
                    let message = pgoutput::parse(&data).map_err(|e| {
                        Interrupted::Fatal(SourceError::Postgres {
                            what: "stream".into(),
                            reason: e.to_string(),
                        })
                    })?;
                    if let RowMessage::Relation(relation) = message {
                        let shape = TableShape::new(relation);
                        if let Some(previous) = self.relations.get(&shape.relation.oid) {
                            report_schema_change(previous, &shape);
                        }
                        self.relations.insert(shape.relation.oid, shape);
                    } else if let Some(tx) = open.as_mut() {
                        tx.add(&self.spec, &self.relations, message, wal_start.as_u64())
                            .map_err(Interrupted::Fatal)?;
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    self.in_transaction = false;
                    let Some(tx) = open.take() else { continue };
                    let end = end_lsn.as_u64();
                    if end <= self.delivered {
                        continue;
                    }
                    self.delivered = end;
                    if !tx.changes.is_empty() {
                        let records = tx.into_records(end);
                        self.send(Feed::Records(records))
                            .await
                            .map_err(Interrupted::Fatal)?;
                    }
                }
                ReplicationEvent::KeepAlive {
                    wal_end,
                    reply_requested,
                    ..
                } => {
                    self.server_position = self.server_position.max(wal_end.as_u64());
                    if reply_requested {
                        client.update_applied_lsn(Lsn(self.confirmable()));
                    }
                }
                ReplicationEvent::Message {
                    prefix, content, ..
                } => {
                    let ours = marker.is_some_and(|m| {
                        prefix == MARKER_PREFIX && content.as_ref() == m.as_bytes()
                    });
                    if ours {
                        self.send(Feed::CaughtUp)
                            .await
                            .map_err(Interrupted::Fatal)?;
                    }
                }
                _ => {}
            }
        }
    }
}

/// A relation with its columns as the encoder wants them.
#[derive(Debug)]
pub(super) struct TableShape {
    relation: Relation,
    columns: Vec<ColumnInfo>,
}

impl TableShape {
    fn new(relation: Relation) -> Self {
        let columns = relation
            .columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.clone(),
                type_oid: c.type_oid,
            })
            .collect();
        TableShape { relation, columns }
    }

    fn image<'a>(&'a self, values: &'a [Datum], fallback: Option<&'a [Datum]>) -> RowImage<'a> {
        RowImage {
            columns: &self.columns,
            values,
            fallback,
        }
    }

    fn key_changed(&self, old: &[Datum], new: &[Datum]) -> bool {
        self.relation
            .columns
            .iter()
            .enumerate()
            .any(|(i, c)| c.key && old.get(i) != new.get(i))
    }
}

fn report_schema_change(previous: &TableShape, current: &TableShape) {
    if previous.columns == current.columns {
        return;
    }
    let names = |shape: &TableShape| -> Vec<String> {
        shape.columns.iter().map(|c| c.name.clone()).collect()
    };
    let (before, after) = (names(previous), names(current));
    let added: Vec<&String> = after.iter().filter(|c| !before.contains(c)).collect();
    let dropped: Vec<&String> = before.iter().filter(|c| !after.contains(c)).collect();
    let retyped: Vec<&String> = current
        .columns
        .iter()
        .filter(|c| {
            previous
                .columns
                .iter()
                .any(|p| p.name == c.name && p.type_oid != c.type_oid)
        })
        .map(|c| &c.name)
        .collect();
    tracing::warn!(
        table = %format!("{}.{}", current.relation.schema, current.relation.table),
        ?added,
        ?dropped,
        ?retyped,
        "schema change in the source table: rows from now on carry the new columns; columns \
         the pipeline declares but the table dropped arrive as null (a NOT NULL column makes \
         them dead letters), new columns are ignored until the pipeline declares them"
    );
}

/// A transaction being received: its changes as (change LSN, Debezium JSON).
#[derive(Debug)]
struct OpenTransaction {
    xid: u64,
    ts_ms: i64,
    changes: Vec<(u64, String)>,
}

impl OpenTransaction {
    fn add<'a>(
        &mut self,
        spec: &'a PostgresSourceSpec,
        relations: &'a HashMap<u32, TableShape>,
        message: RowMessage,
        lsn: u64,
    ) -> Result<(), SourceError> {
        let shape_of = |oid: u32| {
            relations.get(&oid).ok_or_else(|| SourceError::Postgres {
                what: "stream".into(),
                reason: format!("a change refers to relation {oid}, which was never described"),
            })
        };
        let (xid, ts_ms) = (self.xid, self.ts_ms);
        let source = |shape: &'a TableShape| ChangeSource {
            server: &spec.server,
            db: &spec.database,
            schema: &shape.relation.schema,
            table: &shape.relation.table,
            tx_id: xid,
            lsn,
            ts_ms,
            snapshot: false,
        };
        let mut events = Vec::with_capacity(2);
        match message {
            RowMessage::Insert { oid, new } => {
                let shape = shape_of(oid)?;
                events.push(change_event(
                    'c',
                    None,
                    Some(shape.image(&new, None)),
                    &source(shape),
                ));
            }
            RowMessage::Update { oid, old, new } => {
                let shape = shape_of(oid)?;
                match old.as_deref() {
                    // A changed primary key is a delete of the old key and a create of the
                    // new one, as Debezium emits it.
                    Some(old) if shape.key_changed(old, &new) => {
                        events.push(change_event(
                            'd',
                            Some(shape.image(old, None)),
                            None,
                            &source(shape),
                        ));
                        events.push(change_event(
                            'c',
                            None,
                            Some(shape.image(&new, Some(old))),
                            &source(shape),
                        ));
                    }
                    old => {
                        let before = old
                            .filter(|_| shape.relation.replica_identity == b'f')
                            .map(|old| shape.image(old, None));
                        events.push(change_event(
                            'u',
                            before,
                            Some(shape.image(&new, old)),
                            &source(shape),
                        ));
                    }
                }
            }
            RowMessage::Delete { oid, old } => {
                let shape = shape_of(oid)?;
                events.push(change_event(
                    'd',
                    Some(shape.image(&old, None)),
                    None,
                    &source(shape),
                ));
            }
            RowMessage::Truncate { oids } => {
                for oid in oids {
                    let shape = shape_of(oid)?;
                    events.push(change_event('t', None, None, &source(shape)));
                }
            }
            RowMessage::Relation(_) | RowMessage::Ignored => {}
        }
        for event in events {
            // Offsets increase within a transaction even if the server repeats an LSN.
            let offset = self
                .changes
                .last()
                .map_or(lsn, |(previous, _)| lsn.max(previous + 1));
            self.changes.push((offset, event));
        }
        Ok(())
    }

    /// The transaction's records. Each change keeps its own LSN as its offset, so changes to
    /// one key sort in commit order within an epoch (row locks order them in the WAL); the
    /// last one carries the commit's end LSN, which is what an epoch's position records.
    fn into_records(self, end_lsn: u64) -> Vec<RawRecord> {
        let last = self.changes.len().saturating_sub(1);
        self.changes
            .into_iter()
            .enumerate()
            .map(|(i, (lsn, json))| record(json, if i == last { end_lsn.max(lsn) } else { lsn }))
            .collect()
    }
}

fn record(json: String, offset: u64) -> RawRecord {
    RawRecord {
        key: None,
        value: Some(Arc::from(json.into_bytes().into_boxed_slice())),
        topic: None,
        position: Position { stream: 0, offset },
        line: false,
    }
}

async fn connect_control(spec: &PostgresSourceSpec) -> Result<Client, SourceError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&spec.host)
        .port(spec.port)
        .user(&spec.user)
        .dbname(&spec.database)
        .application_name("tributary")
        .options(SESSION_OPTIONS)
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = &spec.password {
        config.password(password);
    }
    let failed = |e: tokio_postgres::Error| SourceError::Postgres {
        what: format!("connect to {}:{}", spec.host, spec.port),
        reason: format!("{}; is the server running and the URL right?", describe(&e)),
    };
    if spec.ssl_mode == SslMode::Disable {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(failed)?;
        spawn_connection(connection);
        return Ok(client);
    }
    let tls = tls::client_config(spec.ssl_mode, spec.ssl_root_cert.as_ref()).map_err(|reason| {
        SourceError::Postgres {
            what: "tls".into(),
            reason,
        }
    })?;
    config.ssl_mode(if spec.ssl_mode == SslMode::Prefer {
        tokio_postgres::config::SslMode::Prefer
    } else {
        tokio_postgres::config::SslMode::Require
    });
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let (client, connection) = config.connect(connector).await.map_err(failed)?;
    spawn_connection(connection);
    Ok(client)
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL control connection ended");
        }
    });
}

/// Checks what logical replication needs and returns the published tables.
async fn preflight(
    control: &Client,
    spec: &PostgresSourceSpec,
) -> Result<Vec<(String, String)>, SourceError> {
    let fail = |reason: String| SourceError::Postgres {
        what: "setup".into(),
        reason,
    };
    let query = |e: tokio_postgres::Error| db_error("setup", e);
    let wal_level: String = control
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(query)?
        .get(0);
    if wal_level != "logical" {
        return Err(fail(format!(
            "wal_level is `{wal_level}`, logical decoding needs `logical`: run `ALTER SYSTEM SET \
             wal_level = logical` and restart PostgreSQL"
        )));
    }
    let may_replicate: bool = control
        .query_one(
            "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(query)?
        .get(0);
    if !may_replicate {
        return Err(fail(format!(
            "permission denied: role `{}` may not replicate; run `ALTER ROLE {} WITH \
             REPLICATION` (and GRANT SELECT on the published tables for the snapshot)",
            spec.user,
            quote_ident(&spec.user)
        )));
    }
    let publication = control
        .query_opt(
            "SELECT pubupdate OR pubdelete FROM pg_publication WHERE pubname = $1",
            &[&spec.publication],
        )
        .await
        .map_err(query)?;
    let needs_identity: bool = match publication {
        Some(row) => row.get(0),
        None if spec.create_publication => {
            control
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR ALL TABLES",
                    quote_ident(&spec.publication)
                ))
                .await
                .map_err(query)?;
            tracing::info!(publication = %spec.publication, "created publication FOR ALL TABLES");
            true
        }
        None => {
            return Err(fail(format!(
                "publication `{p}` does not exist: create it with `CREATE PUBLICATION {q} FOR \
                 TABLE public.orders, …` (or FOR ALL TABLES), or add `create_publication=true` \
                 to the source URL to have Tributary create it FOR ALL TABLES",
                p = spec.publication,
                q = quote_ident(&spec.publication)
            )))
        }
    };
    let rows = control
        .query(
            "SELECT p.schemaname::text, p.tablename::text, c.relreplident::text, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_publication_tables p \
             JOIN pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             WHERE p.pubname = $1 ORDER BY 1, 2",
            &[&spec.publication],
        )
        .await
        .map_err(query)?;
    let mut tables = Vec::with_capacity(rows.len());
    let mut without_identity = Vec::new();
    for row in rows {
        let (schema, table, identity, has_key): (String, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if needs_identity && (identity == "n" || (identity == "d" && !has_key)) {
            without_identity.push(format!("{}.{}", quote_ident(&schema), quote_ident(&table)));
        }
        tables.push((schema, table));
    }
    if !without_identity.is_empty() {
        return Err(fail(format!(
            "table(s) {list} have no primary key and no REPLICA IDENTITY, so their updates and \
             deletes cannot be captured (PostgreSQL even rejects them); add a primary key or run \
             `ALTER TABLE … REPLICA IDENTITY FULL` for each",
            list = without_identity.join(", ")
        )));
    }
    if tables.is_empty() {
        return Err(fail(format!(
            "publication `{}` publishes no tables; `ALTER PUBLICATION {} ADD TABLE …`",
            spec.publication,
            quote_ident(&spec.publication)
        )));
    }
    Ok(tables)
}

/// The slot a resumed run needs must exist, be free, and not be ahead of the sinks.
async fn check_slot_for_resume(
    control: &Client,
    spec: &PostgresSourceSpec,
    committed: u64,
) -> Result<(), SourceError> {
    let resume = |reason: String| SourceError::Resume {
        source_name: spec.describe(),
        reason,
    };
    let slot = free_slot(control, spec).await?;
    let Some(slot) = slot else {
        return Err(resume(format!(
            "the sinks committed up to LSN {} but replication slot `{}` is gone, so changes \
             after it may be lost; to start over from a new snapshot, write to new (or dropped) \
             sink tables",
            Lsn(committed).to_pg_string(),
            spec.slot
        )));
    };
    let confirmed = slot
        .get::<_, Option<String>>(0)
        .and_then(|text| Lsn::parse(&text).ok())
        .map_or(0, Lsn::as_u64);
    if confirmed > committed {
        // Tributary confirms only positions every durable sink has handled: what lies between
        // changed nothing in them (their tables record the last position that did).
        tracing::info!(slot = %spec.slot, committed = %Lsn(committed).to_pg_string(), confirmed = %Lsn(confirmed).to_pg_string(), "the slot is past the sinks' last commit; the WAL between changed none of their tables");
    }
    Ok(())
}

/// Moves the slot's confirmed flush LSN forward to `committed` once the replication session
/// has let go of it; best effort (the next run checks the slot anyway).
async fn advance_slot(control: &Client, spec: &PostgresSourceSpec, committed: u64) {
    let target = Lsn(committed).to_pg_string();
    for _ in 0..50 {
        let result = control
            .execute(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND active_pid IS NULL AND confirmed_flush_lsn < $2::text::pg_lsn",
                &[&spec.slot, &target],
            )
            .await;
        match result {
            Ok(_) if slot_is_free(control, spec).await => return,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(slot = %spec.slot, error = %describe(&error), "could not advance the replication slot");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn slot_is_free(control: &Client, spec: &PostgresSourceSpec) -> bool {
    control
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NULL",
            &[&spec.slot],
        )
        .await
        .is_ok_and(|row| row.is_some())
}

/// The slot's row (`confirmed_flush_lsn` as text), once no session holds it; `None` if there
/// is no such slot. A killed run's server process lets go within moments, so wait a while
/// before blaming another consumer.
async fn free_slot(
    control: &Client,
    spec: &PostgresSourceSpec,
) -> Result<Option<tokio_postgres::Row>, SourceError> {
    let deadline = tokio::time::Instant::now() + SLOT_RELEASE_WAIT;
    loop {
        let slot = control
            .query_opt(
                "SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&spec.slot],
            )
            .await
            .map_err(|e| db_error("setup", e))?;
        let Some(pid) = slot.as_ref().and_then(|s| s.get::<_, Option<i32>>(1)) else {
            return Ok(slot);
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(SourceError::Postgres {
                what: "setup".into(),
                reason: format!(
                    "replication slot `{}` is in use by server process {pid} (another \
                     Tributary?); stop that consumer or `SELECT pg_terminate_backend({pid})`",
                    spec.slot
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A slot left by a run whose sinks committed nothing has no use: drop it for a new snapshot.
async fn drop_stale_slot(control: &Client, spec: &PostgresSourceSpec) -> Result<(), SourceError> {
    if free_slot(control, spec).await?.is_none() {
        return Ok(());
    }
    tracing::info!(slot = %spec.slot, "dropping the replication slot of a run whose sinks committed nothing; taking a new snapshot");
    control
        .execute("SELECT pg_drop_replication_slot($1)", &[&spec.slot])
        .await
        .map_err(|e| db_error("setup", e))?;
    Ok(())
}

/// Sends START_REPLICATION on a gated session and waits until the server accepted it.
async fn start(
    client: &mut ReplicationClient,
    spec: &PostgresSourceSpec,
) -> Result<(), SourceError> {
    client
        .start()
        .await
        .map_err(|e| replication_error(spec, e))?;
    client
        .wait_started()
        .await
        .map_err(|e| replication_error(spec, e))
}

async fn connect_replication(
    spec: &PostgresSourceSpec,
    config: ReplicationConfig,
) -> Result<ReplicationClient, SourceError> {
    tls::install_crypto_provider();
    ReplicationClient::connect_gated(config)
        .await
        .map_err(|e| replication_error(spec, e))
}

/// Creates the slot on the replication session, exporting its snapshot; returns the
/// consistent point and the snapshot's name (valid until the session's next command).
async fn create_slot(
    client: &mut ReplicationClient,
    spec: &PostgresSourceSpec,
) -> Result<(u64, String), SourceError> {
    let rows = client
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(&spec.slot)
        ))
        .await
        .map_err(|e| replication_error(spec, e))?;
    let text = |i: usize| {
        rows.first()
            .and_then(|row| row.get(i))
            .and_then(|v| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let lsn = text(1).and_then(|t| Lsn::parse(&t).ok());
    match (lsn, text(2)) {
        (Some(lsn), Some(snapshot)) => Ok((lsn.as_u64(), snapshot)),
        _ => Err(SourceError::Postgres {
            what: "create slot".into(),
            reason: "CREATE_REPLICATION_SLOT returned no consistent point or snapshot".into(),
        }),
    }
}

/// Writes a non-transactional logical message; streaming reaches it once everything committed
/// before now has been received. Returns its unique content.
async fn emit_marker(control: &Client) -> Result<String, SourceError> {
    let nonce = uuid::Uuid::new_v4().to_string();
    control
        .execute(
            "SELECT pg_logical_emit_message(false, $1, $2)",
            &[&MARKER_PREFIX, &nonce],
        )
        .await
        .map_err(|e| db_error("mark the WAL end for --until-idle", e))?;
    Ok(nonce)
}

/// Columns of a table that `pgoutput` sends (generated columns excluded), in table order.
async fn table_columns(
    control: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<ColumnInfo>, SourceError> {
    let rows = control
        .query(
            "SELECT a.attname::text, a.atttypid::oid FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attgenerated = '' ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| db_error("snapshot", e))?;
    Ok(rows
        .iter()
        .map(|row| ColumnInfo {
            name: row.get(0),
            type_oid: row.get(1),
        })
        .collect())
}

fn db_error(what: &str, error: tokio_postgres::Error) -> SourceError {
    SourceError::Postgres {
        what: what.into(),
        reason: describe(&error),
    }
}

/// The server's message (with its hint) when there is one, else the client's.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match (db.hint(), db.message()) {
            (Some(hint), message) => format!("{message} ({hint})"),
            (None, message) => message.to_owned(),
        },
        None => crate::error::with_causes(error),
    }
}

fn replication_error(spec: &PostgresSourceSpec, error: PgWireError) -> SourceError {
    let text = error.to_string();
    let hint = if text.contains("replication") && text.contains("permission")
        || text.contains("must be superuser or replication role")
    {
        format!(
            "; run `ALTER ROLE {} WITH REPLICATION`",
            quote_ident(&spec.user)
        )
    } else if text.contains("pg_hba.conf") {
        "; allow replication connections for this user in pg_hba.conf".to_owned()
    } else {
        String::new()
    };
    SourceError::Postgres {
        what: "replication".into(),
        reason: format!("{text}{hint}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `"name"` with inner quotes doubled.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
