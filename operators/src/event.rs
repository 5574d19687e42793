//! Change events, raw source records, source positions and dead letters.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::row::{Key, Row};
use crate::schema::TableId;
use crate::topic::TopicName;

/// A Debezium operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `c`: a row was inserted.
    Create,
    /// `u`: a row was updated.
    Update,
    /// `d`: a row was deleted.
    Delete,
    /// `r`: a row read by the initial snapshot.
    Read,
    /// `t`: the table was truncated.
    Truncate,
    /// A Kafka tombstone (null value): confirms a delete of its key. Not a Debezium op, so it is
    /// not counted as an event, but it does retract state.
    Tombstone,
}

impl Op {
    /// Debezium's one-letter code (`-` for a tombstone).
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
            Op::Tombstone => "-",
        }
    }

    /// Parses Debezium's one-letter code.
    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            _ => return None,
        })
    }
}

/// Where a record came from: a source stream (file, Kafka partition, replication slot) and an
/// offset in it. Positions order the events of one stream; the engine maps `stream` to a
/// name. Offsets never decrease along a stream, so a committed offset divides it into what a
/// sink holds and what it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Index of the source stream (a file, a topic partition).
    pub stream: u32,
    /// Offset within the stream: a 1-based line number for files, the offset for Kafka, the
    /// commit LSN for PostgreSQL.
    pub offset: u64,
    /// Order among the records that share an offset (the changes of one PostgreSQL
    /// transaction, which all carry its commit LSN).
    pub seq: u32,
}

impl Position {
    /// The position `offset` of stream `stream` (the only record there).
    pub fn new(stream: u32, offset: u64) -> Self {
        Position {
            stream,
            offset,
            seq: 0,
        }
    }
}

/// Bytes as a source delivers them, before decoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The Kafka message key, when there is one.
    pub key: Option<Arc<[u8]>>,
    /// The message value or file line; `None` is a tombstone.
    pub value: Option<Arc<[u8]>>,
    /// The Kafka topic, when the source has one (used when the `source` block lacks a table).
    pub topic: Option<TopicName>,
    /// Where the record came from.
    pub position: Position,
    /// True for a JSONL line, which may wrap `{"key":…,"value":…}` itself.
    pub line: bool,
}

impl RawRecord {
    /// A JSONL line (or any record without key or topic) at `position`.
    pub fn line(bytes: &[u8], position: Position) -> Self {
        RawRecord {
            key: None,
            value: Some(Arc::from(bytes)),
            topic: None,
            position,
            line: true,
        }
    }
}

/// One decoded change to one row of one declared table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The table, an index into the pipeline's catalog.
    pub table: TableId,
    /// What happened.
    pub op: Op,
    /// Primary-key values (empty for a truncate).
    pub key: Key,
    /// The row before the change: decoded for deletes, where it carries the key. Never used
    /// for state.
    pub before: Option<Row>,
    /// The row after the change (`None` for deletes and tombstones).
    pub after: Option<Row>,
    /// Source position; orders the events of one key within an epoch.
    pub position: Position,
    /// Event time: Debezium's `ts_ms` (source commit time when present), milliseconds.
    pub event_time_ms: i64,
    /// Source transaction: the numeric `source.txId`, or a hash of a string `transaction.id`;
    /// only compared for equality (epochs close between transactions).
    pub tx: Option<u64>,
    /// The PostgreSQL log position of the change (`source.lsn`), where the connector sends one.
    pub source_lsn: Option<u64>,
}

/// A record that could not become an event, kept with the reason and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Which stage rejected it, e.g. `decode` or `orders/10s`.
    pub stage: Arc<str>,
    /// The reason class, counted per kind.
    pub kind: DeadLetterKind,
    /// Human-readable detail that says what to check.
    pub reason: String,
    /// Where the record came from (`None` when it was made inside the dataflow).
    pub position: Option<Position>,
    /// The raw payload (lossy UTF-8), for replay and inspection.
    pub raw: Arc<str>,
}

/// Why a record became a dead letter; a stable class for counters and alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeadLetterKind {
    /// Not valid JSON, or not UTF-8.
    BadJson,
    /// Valid JSON that is not a Debezium envelope (no `op`, wrong shapes).
    BadEnvelope,
    /// An `op` other than c/u/d/r/t.
    UnknownOp,
    /// No table name in the `source` block and no topic.
    UnknownTable,
    /// No key: no Kafka key and the key columns are missing or null.
    MissingKey,
    /// `c`/`u`/`r` without `after`.
    MissingAfter,
    /// The Kafka key disagrees with the primary-key columns of `after`.
    KeyMismatch,
    /// A value does not fit its declared column type, or a NOT NULL column is null.
    TypeMismatch,
    /// An event-time window already closed when the event arrived.
    LateEvent,
    /// An event of a table the pipeline would read, whose schema nobody declared and its
    /// events do not carry.
    NoSchema,
    /// An event that needs the table's previous rows, which the pipeline does not keep (a
    /// truncate, or an unchanged TOASTed value, in a replica that deletes by key).
    NeedsState,
}

impl DeadLetterKind {
    /// A short, stable, kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::BadJson => "bad-json",
            DeadLetterKind::BadEnvelope => "bad-envelope",
            DeadLetterKind::UnknownOp => "unknown-op",
            DeadLetterKind::UnknownTable => "unknown-table",
            DeadLetterKind::MissingKey => "missing-key",
            DeadLetterKind::MissingAfter => "missing-after",
            DeadLetterKind::KeyMismatch => "key-mismatch",
            DeadLetterKind::TypeMismatch => "type-mismatch",
            DeadLetterKind::LateEvent => "late-event",
            DeadLetterKind::NoSchema => "no-schema",
            DeadLetterKind::NeedsState => "needs-state",
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.stage, self.kind, self.reason)
    }
}
