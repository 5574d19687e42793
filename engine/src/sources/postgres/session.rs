//! The replication session, on a background thread with its own tokio runtime: checks the
//! server, creates (or reuses) the slot, starts the backfill of the tables not read yet (see
//! [`super::backfill`]), then streams `pgoutput` transactions and hands each committed one,
//! and each backfilled chunk at its high watermark, to the source as Debezium records.
//! Reports the sinks' committed LSN back to the server as the flush position.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use tributary_operators::{RawRecord, Schema};

use super::backfill::{recv_from, watch_window, Backfill, Progress, WATERMARK_PREFIX};
use super::discover::covers;
use super::pgoutput::{self, RowMessage};
use super::server::{
    advance_slot, check_slot_for_resume, connect_control, connect_replication, create_slot,
    drop_stale_slot, free_slot, preflight, start, MARKER_PREFIX,
};
use super::transaction::{report_schema_change, OpenTransaction, TableShape};
use super::PostgresSourceSpec;
use crate::error::SourceError;
use crate::sources::TableFilter;

/// What the session hands to the source, in order.
#[derive(Debug)]
pub(super) enum Feed {
    /// Records of one committed transaction.
    Records(Vec<RawRecord>),
    /// A backfilled chunk's records; the reader reads the next chunk once they are handed to
    /// the pipeline (`taken`), so that few chunks wait in memory.
    Chunk(Vec<RawRecord>, tokio::sync::oneshot::Sender<()>),
    /// The backfill's progress from this offset on.
    Progress(u64, serde_json::Value),
    /// The next transaction changes a table whose schema no longer fits the one the pipeline
    /// declared (what changed); nothing follows.
    SchemaChanged(String),
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
    /// What the pipeline took from the source: a change that no longer fits stops the stream
    /// before it.
    pub followed: Arc<Followed>,
    /// The backfill replaces what the sinks hold: each table's rows follow a truncate.
    pub reload: bool,
    /// The backfill's progress the sinks committed (`None`: none recorded).
    pub committed_progress: Option<Progress>,
    /// The backfill as it stands.
    pub backfill: Backfill,
}

/// The tables a pipeline declared with the source's schemas, and the new ones it would read.
#[derive(Debug, Default)]
pub(super) struct Followed {
    /// `server.schema.table` → the schema declared.
    pub schemas: BTreeMap<String, Schema>,
    /// New tables the pipeline reads (`None`: none).
    pub new_tables: Option<TableFilter>,
}

/// Why streaming stopped early.
#[derive(Debug)]
enum Interrupted {
    /// The connection broke: reconnect and go on.
    Lost(String),
    /// Anything else: the run fails.
    Fatal(SourceError),
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// How often the committed LSN is reported to the server.
const FEEDBACK_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

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
        let (mut client, start_at) = match self.resume_from {
            Some(lsn) => {
                check_slot_for_resume(&control, &self.spec, lsn).await?;
                config.start_lsn = Lsn(lsn);
                config.ack_lsn = Some(Lsn(lsn));
                self.acknowledged.fetch_max(lsn, Ordering::Relaxed);
                self.delivered = lsn;
                (connect_replication(&self.spec, config).await?, lsn)
            }
            None => {
                drop_stale_slot(&control, &self.spec).await?;
                let mut client = connect_replication(&self.spec, config).await?;
                let consistent_point = create_slot(&mut client, &self.spec).await?;
                tracing::info!(slot = %self.spec.slot, consistent_point = %Lsn(consistent_point).to_pg_string(), tables = tables.len(), "created replication slot");
                (client, consistent_point)
            }
        };
        let marker = self.until_idle.then(|| uuid::Uuid::new_v4().to_string());
        self.start_backfill(&control, &tables, start_at, marker.clone())
            .await?;
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

    /// How `shape` no longer fits the schemas the pipeline declared from the source: a
    /// followed table's new columns or types, or a new table it would read.
    fn unfit(&self, shape: &TableShape) -> Option<String> {
        let relation = &shape.relation;
        let name = format!(
            "{}.{}.{}",
            self.spec.server, relation.schema, relation.table
        );
        let Some(schema) = self.followed.schemas.get(&name) else {
            let filter = self.followed.new_tables.as_ref()?;
            return filter
                .matches(&relation.schema, &relation.table)
                .then(|| format!("table {name} is new"));
        };
        covers(schema, relation)
            .err()
            .map(|change| format!("table {name}: {change}"))
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

    pub(super) async fn send(&self, feed: Feed) -> Result<(), SourceError> {
        // A closed feed means the source was dropped: the run is over, nothing to report.
        self.feed
            .send(feed)
            .await
            .map_err(|_| SourceError::Postgres {
                what: "stream".into(),
                reason: "the source was closed".into(),
            })
    }

    /// Streams transactions until stopped; each commit becomes one batch of records.
    async fn follow(
        &mut self,
        client: &mut ReplicationClient,
        marker: Option<&str>,
    ) -> Result<(), Interrupted> {
        let mut open: Option<OpenTransaction> = None;
        // A backfill watermark in the open transaction: it takes effect at its commit.
        let mut watermark: Option<bytes::Bytes> = None;
        let mut feedback = tokio::time::interval(FEEDBACK_INTERVAL);
        loop {
            let reading = self.backfill.from_reader.is_some() && self.backfill.arrived.is_none();
            let event = tokio::select! {
                event = client.recv() => event.map_err(|e| Interrupted::Lost(e.to_string()))?,
                _ = feedback.tick() => {
                    client.update_applied_lsn(Lsn(self.confirmable()));
                    continue;
                }
                _ = self.stop.changed() => return Ok(()),
                message = recv_from(&mut self.backfill.from_reader), if reading => {
                    if let Some(change) = self.on_reader_message(message).map_err(Interrupted::Fatal)? {
                        self.send(Feed::SchemaChanged(change))
                            .await
                            .map_err(Interrupted::Fatal)?;
                        return Ok(());
                    }
                    continue;
                }
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
                    watermark = None;
                    open = Some(OpenTransaction {
                        xid: u64::from(xid),
                        ts_ms: (commit_time_micros + PG_EPOCH_MICROS).div_euclid(1000),
                        changes: Vec::new(),
                        schema_change: None,
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
                            report_schema_change(
                                previous,
                                &shape,
                                !self.followed.schemas.is_empty(),
                            );
                        }
                        if let (Some(tx), Some(change)) = (open.as_mut(), self.unfit(&shape)) {
                            tx.schema_change.get_or_insert(change);
                        }
                        self.relations.insert(shape.relation.oid, shape);
                    } else if let Some(tx) = open.as_mut() {
                        if let Some(window) = self.backfill.window.as_mut() {
                            watch_window(window, &self.relations, &message);
                        }
                        if !self.backfill.left_out(&self.relations, &message) {
                            tx.add(&self.spec, &self.relations, message, wal_start.as_u64())
                                .map_err(Interrupted::Fatal)?;
                        }
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    let Some(tx) = open.take() else {
                        self.in_transaction = false;
                        continue;
                    };
                    let end = end_lsn.as_u64();
                    if end <= self.delivered {
                        self.in_transaction = false;
                        continue;
                    }
                    if let Some(change) = tx.schema_change {
                        // Stop before it (still "in" it: the slot is not confirmed past it);
                        // the run restarts with the table's new schema and replays it.
                        self.send(Feed::SchemaChanged(change))
                            .await
                            .map_err(Interrupted::Fatal)?;
                        return Ok(());
                    }
                    self.in_transaction = false;
                    self.delivered = end;
                    if !tx.changes.is_empty() {
                        let records = tx.into_records(end);
                        self.send(Feed::Records(records))
                            .await
                            .map_err(Interrupted::Fatal)?;
                    }
                    if let Some(content) = watermark.take() {
                        self.watermark(&content, end)
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
                    if prefix == WATERMARK_PREFIX {
                        watermark = Some(content);
                        continue;
                    }
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

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
