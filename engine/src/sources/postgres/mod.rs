//! PostgreSQL source: logical replication with the built-in `pgoutput` plugin, producing the
//! change events the Debezium PostgreSQL connector would (ops `c`/`u`/`d`/`r`/`t`, `source.lsn`,
//! `txId`, `ts_ms`, table = `server.schema.table`).
//!
//! A run without committed positions creates the slot and streams at once, while the backfill
//! reads the published tables' rows in chunks between watermarks (`r` events; see
//! `backfill.rs`). Positions are LSNs (one stream, `postgres/SLOT`): a resumed run restarts the
//! slot from the LSN its sinks committed and skips transactions that ended at or before it; the
//! backfill's progress is committed with them, so a resumed backfill goes on at its next chunk.
//! The slot's confirmed flush LSN advances only to what every durable sink committed.

mod backfill;
pub mod discover;
pub mod encode;
pub mod pgoutput;
mod server;
mod session;
pub mod tls;
mod transaction;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pgwire_replication::ReplicationConfig;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch};

use tributary_operators::RawRecord;

use self::backfill::{Progress, TableProgress};
use self::server::SESSION_OPTIONS;
use self::session::Followed;
use self::session::{Feed, Session};
use super::{single_stream_resume, Poll, Source, TableFilter};
use crate::error::SourceError;
use crate::positions::{StreamPositions, StreamProgress};

pub use self::backfill::DEFAULT_CHUNK_ROWS;

/// How long a poll waits for the backfill's next chunk once the last one is handed out.
const NEXT_CHUNK_WAIT: Duration = Duration::from_millis(50);

/// Transactions (or backfilled chunks) buffered between the session and the reading worker.
const FEED_CAPACITY: usize = 64;

/// A parsed `postgres://USER[:PASSWORD]@HOST[:PORT]/DB?publication=P&slot=S…` source.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSourceSpec {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Role (needs REPLICATION and SELECT on the published tables).
    pub user: String,
    /// From the URL, else `TRIBUTARY_PG_PASSWORD` or `PGPASSWORD`; never logged.
    pub password: Option<String>,
    /// Database.
    pub database: String,
    /// Publication naming the tables to capture (`publication=`, default `tributary`).
    pub publication: String,
    /// Replication slot (`slot=`; default `tributary_<pipeline>` through
    /// [`PostgresSourceSpec::default_slot_for`], else `tributary`). One consumer per slot.
    pub slot: String,
    /// Whether the URL named the slot.
    pub slot_given: bool,
    /// Debezium's `topic.prefix`: the first part of table names (`server=`, default
    /// `dbserver1`, as in Debezium's tutorial).
    pub server: String,
    /// Create a missing publication FOR ALL TABLES (`create_publication=true`).
    pub create_publication: bool,
    /// TLS for both connections (`sslmode=`, default `prefer`).
    pub ssl_mode: tls::SslMode,
    /// CA certificates (PEM) for `sslmode=verify-full` (`sslrootcert=`; default: the Mozilla
    /// roots).
    pub ssl_root_cert: Option<std::path::PathBuf>,
    /// Rows per backfill chunk (`chunk_rows=`, default [`DEFAULT_CHUNK_ROWS`]): with one
    /// chunk in flight, what bounds the backfill's memory.
    pub chunk_rows: usize,
}

impl std::fmt::Debug for PostgresSourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PostgresSourceSpec {
    /// Parses the part after `postgres://` (or `postgresql://`).
    pub fn parse(rest: &str) -> Result<Self, String> {
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, database) = location
            .split_once('/')
            .ok_or("postgres:// needs USER@HOST[:PORT]/DATABASE")?;
        let (credentials, host_port) = authority
            .rsplit_once('@')
            .ok_or("postgres:// needs a user: postgres://USER@HOST[:PORT]/DATABASE")?;
        let (user, password) = match credentials.split_once(':') {
            Some((user, password)) => (user, Some(percent_decode(password)?)),
            None => (credentials, None),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("`{port}` is not a port number"))?,
            ),
            None => (host_port, 5432),
        };
        if user.is_empty() || host.is_empty() || database.is_empty() {
            return Err("postgres:// needs USER@HOST[:PORT]/DATABASE".into());
        }
        let mut spec = PostgresSourceSpec {
            host: host.to_owned(),
            port,
            user: percent_decode(user)?,
            password: password.or_else(|| {
                std::env::var("TRIBUTARY_PG_PASSWORD")
                    .or_else(|_| std::env::var("PGPASSWORD"))
                    .ok()
            }),
            database: percent_decode(database)?,
            publication: "tributary".to_owned(),
            slot: "tributary".to_owned(),
            slot_given: false,
            server: "dbserver1".to_owned(),
            create_publication: false,
            ssl_mode: tls::SslMode::default(),
            ssl_root_cert: None,
            chunk_rows: DEFAULT_CHUNK_ROWS,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match name {
                "publication" => spec.publication = value,
                "slot" => {
                    let valid = !value.is_empty()
                        && value
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if !valid {
                        return Err(format!(
                            "slot `{value}`: slot names use lower-case letters, digits and `_`"
                        ));
                    }
                    spec.slot = value;
                    spec.slot_given = true;
                }
                "server" => spec.server = value,
                "create_publication" => spec.create_publication = value == "true",
                "sslmode" => spec.ssl_mode = tls::SslMode::parse(&value)?,
                "sslrootcert" => spec.ssl_root_cert = Some(value.into()),
                "chunk_rows" => {
                    spec.chunk_rows =
                        value.parse().ok().filter(|rows| *rows > 0).ok_or_else(|| {
                            format!("chunk_rows `{value}` is not a positive number")
                        })?
                }
                other => {
                    return Err(format!(
                        "unknown option `{other}`; expected publication, slot, server, \
                         create_publication, sslmode, sslrootcert or chunk_rows"
                    ))
                }
            }
        }
        Ok(spec)
    }

    /// Names the slot after `pipeline` (`tributary_orders_replica`) unless the URL named one,
    /// so that two pipelines never share (and silently advance) one slot.
    pub fn default_slot_for(&mut self, pipeline: &str) {
        if !self.slot_given {
            let name: String = pipeline
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            self.slot = format!("tributary_{name}");
        }
    }

    /// `postgres://USER@HOST:PORT/DB (publication P, slot S)`, without the password.
    pub fn describe(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{} (publication {}, slot {})",
            self.user, self.host, self.port, self.database, self.publication, self.slot
        )
    }

    fn stream_name(&self) -> String {
        format!("postgres/{}", self.slot)
    }

    fn replication_config(&self) -> ReplicationConfig {
        let mut config = ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.clone().unwrap_or_default(),
            self.database.clone(),
            self.slot.clone(),
            self.publication.clone(),
        )
        .with_port(self.port)
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1));
        config.options = Some(SESSION_OPTIONS.to_owned());
        config.tls = self.ssl_mode.replication(self.ssl_root_cert.as_ref());
        config.application_name = Some(format!("tributary/{}", self.slot));
        config
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in `{text}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` is not UTF-8 once decoded"))
}

/// The running session's handles.
#[derive(Debug)]
struct Running {
    feed: mpsc::Receiver<Feed>,
    acknowledged: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// Reads changes from PostgreSQL; see the module docs.
#[derive(Debug)]
pub struct PostgresSource {
    spec: PostgresSourceSpec,
    follow: bool,
    resume_from: Option<u64>,
    running: Option<Running>,
    pending: VecDeque<RawRecord>,
    /// The backfill's progress notes not yet taken: (offset, note).
    notes: Vec<(u64, serde_json::Value)>,
    /// Told once the pending records (a backfilled chunk's) are all handed out.
    chunk_taken: Option<tokio::sync::oneshot::Sender<()>>,
    /// The next chunk is on its way until then: polls wait for it rather than report idle
    /// (an idle source is polled again only after a pause).
    next_chunk_by: Option<std::time::Instant>,
    /// The backfill's progress the sinks committed.
    committed_progress: Option<Progress>,
    caught_up: bool,
    /// Schemas the pipeline declared from the source, and which new tables it reads.
    followed: Arc<Followed>,
    /// The stream stopped before a schema change (what changed).
    schema_changed: Option<String>,
    /// Take a new snapshot even though the sinks committed, emptying each table first.
    reload: bool,
}

impl PostgresSource {
    /// A source for `spec`; connects at the first poll. Without `follow` it finishes once
    /// it has streamed the WAL that was current when it started.
    pub fn new(spec: &PostgresSourceSpec, follow: bool) -> Self {
        PostgresSource {
            spec: spec.clone(),
            follow,
            resume_from: None,
            running: None,
            pending: VecDeque::new(),
            notes: Vec::new(),
            chunk_taken: None,
            next_chunk_by: None,
            committed_progress: None,
            caught_up: false,
            followed: Arc::default(),
            schema_changed: None,
            reload: false,
        }
    }

    fn start(&mut self) -> Result<&mut Running, SourceError> {
        if self.running.is_none() {
            let (feed_tx, feed) = mpsc::channel(FEED_CAPACITY);
            let (stop, stop_rx) = watch::channel(false);
            let acknowledged = Arc::new(AtomicU64::new(0));
            let session = Session {
                spec: self.spec.clone(),
                resume_from: self.resume_from,
                until_idle: !self.follow,
                acknowledged: Arc::clone(&acknowledged),
                feed: feed_tx,
                stop: stop_rx,
                delivered: self.resume_from.unwrap_or(0),
                relations: Default::default(),
                server_position: 0,
                in_transaction: false,
                followed: Arc::clone(&self.followed),
                reload: self.reload,
                committed_progress: self.committed_progress.take(),
                backfill: Default::default(),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SourceError::Postgres {
                    what: "start".into(),
                    reason: e.to_string(),
                })?;
            let thread = std::thread::Builder::new()
                .name("postgres-replication".into())
                .spawn(move || runtime.block_on(session.run()))
                .map_err(|e| SourceError::Postgres {
                    what: "start".into(),
                    reason: e.to_string(),
                })?;
            self.running = Some(Running {
                feed,
                acknowledged,
                stop,
                thread: Some(thread),
            });
        }
        self.running.as_mut().ok_or_else(|| SourceError::Postgres {
            what: "start".into(),
            reason: "the replication session did not start".into(),
        })
    }
}

impl Source for PostgresSource {
    fn describe(&self) -> String {
        self.spec.describe()
    }

    fn stream_names(&self) -> Vec<String> {
        vec![self.spec.stream_name()]
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Result<Poll, SourceError> {
        let mut received = false;
        loop {
            while out.len() < max {
                match self.pending.pop_front() {
                    Some(record) => out.push(record),
                    None => break,
                }
            }
            if self.pending.is_empty() {
                if let Some(taken) = self.chunk_taken.take() {
                    let _ = taken.send(());
                    self.next_chunk_by = Some(std::time::Instant::now() + NEXT_CHUNK_WAIT);
                }
            }
            if out.len() >= max {
                return Ok(Poll::Ready);
            }
            if self.pending.is_empty() && self.schema_changed.is_some() {
                return Ok(Poll::Finished);
            }
            let running = self.start()?;
            let next = running.feed.try_recv();
            if next.is_ok() {
                self.next_chunk_by = None;
            }
            match next {
                Ok(Feed::Records(records)) => {
                    received = true;
                    self.pending.extend(records);
                }
                Ok(Feed::Progress(offset, note)) => self.notes.push((offset, note)),
                Ok(Feed::Chunk(records, taken)) => {
                    received = true;
                    self.pending.extend(records);
                    self.chunk_taken = Some(taken);
                }
                Ok(Feed::CaughtUp) => self.caught_up = true,
                Ok(Feed::SchemaChanged(change)) => self.schema_changed = Some(change),
                Ok(Feed::Failed(error)) => return Err(error),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    return Err(SourceError::Postgres {
                        what: "stream".into(),
                        reason: "the replication session ended unexpectedly".into(),
                    })
                }
            }
        }
        if !out.is_empty() || received {
            return Ok(Poll::Ready);
        }
        if self.caught_up && !self.follow {
            return Ok(Poll::Finished);
        }
        if self
            .next_chunk_by
            .is_some_and(|by| std::time::Instant::now() < by)
        {
            std::thread::sleep(Duration::from_micros(200));
            return Ok(Poll::Ready);
        }
        Ok(Poll::Idle)
    }

    fn resume_after(&mut self, after: &StreamPositions) -> Result<(), SourceError> {
        let lsn = single_stream_resume(&self.spec.stream_name(), after)?;
        if lsn > 0 {
            self.resume_from = Some(lsn);
        }
        Ok(())
    }

    fn resume_progress(&mut self, progress: &StreamProgress, unstarted: &[String]) -> bool {
        self.committed_progress = progress
            .get(&self.spec.stream_name())
            .and_then(Progress::from_json);
        // Sink tables named after source tables (`replicate`'s `<schema>.<table>`): the
        // source tables of those without a snapshot are read again.
        let followed = !self.followed.schemas.is_empty();
        if let (true, Some(progress)) = (followed, self.committed_progress.as_mut()) {
            for (name, table) in progress.tables.iter_mut() {
                let table_name = name.split_once('.').map_or(name.as_str(), |(_, t)| t);
                let unread = unstarted
                    .iter()
                    .any(|ident| ident.rsplit_once('.').is_some_and(|(_, t)| t == table_name));
                if unread {
                    *table = TableProgress::Pending;
                }
            }
        }
        followed && self.committed_progress.is_some()
    }

    fn take_progress(&mut self) -> Vec<(u32, u64, serde_json::Value)> {
        self.notes
            .drain(..)
            .map(|(offset, note)| (0, offset, note))
            .collect()
    }

    fn reload(&mut self) -> bool {
        self.reload = true;
        true
    }

    fn at_transaction_end(&self) -> bool {
        // The session hands on committed transactions and backfilled chunks whole.
        self.pending.is_empty()
    }

    fn follow_schemas(
        &mut self,
        schemas: &BTreeMap<String, tributary_operators::Schema>,
        new_tables: Option<TableFilter>,
    ) {
        self.followed = Arc::new(Followed {
            schemas: schemas.clone(),
            new_tables,
        });
    }

    fn schema_changed(&self) -> Option<&str> {
        self.schema_changed.as_deref()
    }

    fn acknowledge(&mut self, positions: &BTreeMap<u32, u64>) -> Result<(), SourceError> {
        if let (Some(running), Some(lsn)) = (&self.running, positions.get(&0)) {
            running.acknowledged.fetch_max(*lsn, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Drop for PostgresSource {
    fn drop(&mut self) {
        if let Some(mut running) = self.running.take() {
            // The session reports the last acknowledged LSN to the server and ends.
            let _ = running.stop.send(true);
            running.feed.close();
            if let Some(thread) = running.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let spec = PostgresSourceSpec::parse(
            "replicator:s%40cret@db.internal:6543/shop?publication=orders_pub&slot=orders_slot&server=pg1",
        )
        .unwrap();
        assert_eq!(spec.user, "replicator");
        assert_eq!(spec.password.as_deref(), Some("s@cret"));
        assert_eq!((spec.host.as_str(), spec.port), ("db.internal", 6543));
        assert_eq!(spec.database, "shop");
        assert_eq!(spec.publication, "orders_pub");
        assert_eq!(spec.slot, "orders_slot");
        assert_eq!(spec.server, "pg1");
        assert!(!spec.describe().contains("s@cret"));
        assert!(!format!("{spec:?}").contains("s@cret"));

        let mut defaults = PostgresSourceSpec::parse("postgres@localhost/postgres").unwrap();
        assert_eq!(defaults.port, 5432);
        assert_eq!(defaults.slot, "tributary");
        defaults.default_slot_for("orders-replica");
        assert_eq!(defaults.slot, "tributary_orders_replica");
        let mut named = PostgresSourceSpec::parse("u@h/db?slot=mine").unwrap();
        named.default_slot_for("orders-replica");
        assert_eq!(named.slot, "mine");
        assert_eq!(defaults.server, "dbserver1");

        assert!(PostgresSourceSpec::parse("localhost/db").is_err());
        let tls =
            PostgresSourceSpec::parse("u@h/db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(tls.ssl_mode, tls::SslMode::VerifyFull);
        assert!(PostgresSourceSpec::parse("u@h/db?sslmode=verify-ca").is_err());
        assert!(PostgresSourceSpec::parse("u@h/db?slot=Bad-Name").is_err());
        assert!(PostgresSourceSpec::parse("u@h/db?colour=blue")
            .unwrap_err()
            .contains("unknown option"));
    }
}
