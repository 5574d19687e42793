//! Sources: where raw records come from. Each yields [`RawRecord`]s with positions; the ingest
//! loop decodes them and closes epochs.

pub mod file;
pub mod generator;
pub mod kafka;
pub mod memory;
pub mod postgres;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tributary_operators::RawRecord;

use crate::error::SourceError;
use crate::positions::{StreamPositions, StreamProgress};

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Records were appended (maybe fewer than asked); poll again soon.
    Ready,
    /// Nothing new right now; more may come later (a followed file).
    Idle,
    /// The source is drained for good.
    Finished,
}

/// A source of raw records.
pub trait Source: Send {
    /// A short description for logs, e.g. `file:orders.jsonl`.
    fn describe(&self) -> String;

    /// Names of the streams that positions refer to, by stream index.
    fn stream_names(&self) -> Vec<String>;

    /// Appends up to `max` records to `out`. A stream's offsets never decrease, so a position
    /// a sink committed divides the stream into what it holds and what it does not.
    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Result<Poll, SourceError>;

    /// Narrows this source to the first of at most `parts` parts that different workers read
    /// side by side, and returns the others. Parts read disjoint streams but name all of them
    /// alike. Sources that cannot be split return none and stay whole.
    fn split_off(&mut self, _parts: usize) -> Result<Vec<Box<dyn Source>>, SourceError> {
        Ok(Vec::new())
    }

    /// Skips what an earlier run already delivered to every durable sink: for each stream named
    /// in `after`, the records at or before that offset. Called once, before the first poll.
    fn resume_after(&mut self, after: &StreamPositions) -> Result<(), SourceError>;

    /// What the sinks committed besides positions (see [`StreamProgress`]), before
    /// [`Source::resume_after`]; `unstarted` names the sink tables without a snapshot yet.
    /// True if the source reads the tables they need by itself (a backfill), so that they
    /// need no [`Source::reload`].
    fn resume_progress(&mut self, _progress: &StreamProgress, _unstarted: &[String]) -> bool {
        false
    }

    /// Progress notes since the last call: (stream index, offset, note), each holding from
    /// the records at that offset on (see [`StreamProgress`]).
    fn take_progress(&mut self) -> Vec<(u32, u64, serde_json::Value)> {
        Vec::new()
    }

    /// Instead of resuming, reads the source's whole current state again, each table's rows
    /// after an event that empties what the table held (a database snapshot); true if the
    /// source can. Called once, before the first poll, instead of [`Source::resume_after`].
    fn reload(&mut self) -> bool {
        false
    }

    /// Every durable sink has committed the records up to `positions` (stream index → last
    /// offset). Sources that keep offsets of their own (Kafka consumer groups, replication
    /// slots) may advance them now; they are for monitoring, the sinks' positions are the truth.
    fn acknowledge(&mut self, _positions: &BTreeMap<u32, u64>) -> Result<(), SourceError> {
        Ok(())
    }

    /// True (once) when the records polled so far complete a unit that must form an epoch of
    /// its own, whatever the epoch clock says (a database snapshot before its change stream).
    fn take_epoch_boundary(&mut self) -> bool {
        false
    }

    /// The pipeline declared these tables (`server.schema.table` → schema) from the schemas
    /// the source described, and (`new_tables`) reads every table the filter selects: a
    /// source that sees one of them change so that its rows no longer fit, or a new table
    /// the filter selects, stops before that change ([`Poll::Finished`], then
    /// [`Source::schema_changed`]), so that the run can restart with the new schemas.
    fn follow_schemas(
        &mut self,
        _schemas: &BTreeMap<String, tributary_operators::Schema>,
        _new_tables: Option<TableFilter>,
    ) {
    }

    /// Why the source finished early: a followed table's schema changed (what changed).
    fn schema_changed(&self) -> Option<&str> {
        None
    }

    /// True when every record polled so far ends a whole source transaction (the source reads
    /// whole transactions, e.g. PostgreSQL's committed ones): a due epoch may close now rather
    /// than wait for a quiet stream's transaction to go on.
    fn at_transaction_end(&self) -> bool {
        false
    }
}

/// The offset to skip through for a single-stream source named `name`, or an error if `after`
/// names other streams (the run reads a different source than the one that was committed).
pub fn single_stream_resume(name: &str, after: &StreamPositions) -> Result<u64, SourceError> {
    match after.iter().find(|(stream, _)| stream.as_str() != name) {
        Some((other, _)) => Err(SourceError::Resume {
            source_name: name.to_owned(),
            reason: format!(
                "the sinks last committed positions of `{other}`; run with that source, \
                 or write to a new table"
            ),
        }),
        None => Ok(after.get(name).copied().unwrap_or(0)),
    }
}

/// A parsed `--source` value.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// `file:PATH`: JSONL, one Debezium value per line.
    File(PathBuf),
    /// `generator[:EVENTS]`: the built-in orders workload; unbounded without a count.
    Generator(Option<u64>),
    /// `kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]`: every partition of the topics.
    Kafka(kafka::KafkaSourceSpec),
    /// `postgres://USER@HOST[:PORT]/DB?publication=P&slot=S`: logical replication.
    Postgres(postgres::PostgresSourceSpec),
    /// Records already in memory, one slice per stream (benchmarks); not reachable from
    /// `--source`.
    Memory(Vec<Arc<[RawRecord]>>),
}

impl SourceSpec {
    /// Parses `file:PATH`, `generator[:EVENTS]`, `kafka://HOST:PORT/TOPIC[,TOPIC]` (the Kafka
    /// client settings are defaults; the caller fills them in) or `postgres://…`.
    pub fn parse(spec: &str) -> Result<SourceSpec, SourceError> {
        let bad = |reason: &str| SourceError::BadSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = spec.strip_prefix("file:") {
            if path.is_empty() {
                return Err(bad("file: needs a path, e.g. file:events.jsonl"));
            }
            return Ok(SourceSpec::File(PathBuf::from(path)));
        }
        if spec == "generator" {
            return Ok(SourceSpec::Generator(None));
        }
        if let Some(count) = spec.strip_prefix("generator:") {
            let count = count
                .replace('_', "")
                .parse::<u64>()
                .map_err(|_| bad("generator:EVENTS needs a whole number of events"))?;
            return Ok(SourceSpec::Generator(Some(count)));
        }
        if let Some(rest) = spec.strip_prefix("kafka://") {
            return kafka::KafkaSourceSpec::parse(rest)
                .map(SourceSpec::Kafka)
                .map_err(|reason| bad(&reason));
        }
        if let Some(rest) = spec
            .strip_prefix("postgres://")
            .or_else(|| spec.strip_prefix("postgresql://"))
        {
            return postgres::PostgresSourceSpec::parse(rest)
                .map(SourceSpec::Postgres)
                .map_err(|reason| SourceError::BadSpec {
                    spec: crate::redact::without_password(spec),
                    reason,
                });
        }
        Err(bad(
            "expected file:PATH, generator[:EVENTS], kafka://HOST:PORT/TOPIC[,TOPIC] or \
             postgres://USER@HOST[:PORT]/DB?publication=P&slot=S",
        ))
    }

    /// Opens the source. `follow` keeps a file open for appended lines after its end.
    pub fn open(&self, follow: bool) -> Result<Box<dyn Source>, SourceError> {
        Ok(match self {
            SourceSpec::File(path) => Box::new(file::FileSource::open(path, follow)?),
            SourceSpec::Generator(count) => Box::new(generator::GeneratorSource::new(
                generator::GeneratorConfig {
                    events: *count,
                    ..Default::default()
                },
            )),
            SourceSpec::Kafka(spec) => Box::new(kafka::KafkaSource::open(spec, follow)?),
            SourceSpec::Postgres(spec) => Box::new(postgres::PostgresSource::new(spec, follow)),
            SourceSpec::Memory(streams) => Box::new(memory::MemorySource::new(streams.clone())),
        })
    }
}

/// A table the source describes itself: its name as its change events carry it
/// (`server.schema.table`), its columns and its primary key (empty: the table has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    /// `server.schema.table`.
    pub name: String,
    /// The source schema (PostgreSQL's `public`).
    pub namespace: String,
    /// The table's own name.
    pub table: String,
    /// Its columns, with Tributary types.
    pub schema: tributary_operators::Schema,
    /// Primary key columns, in key order.
    pub key: Vec<String>,
}

/// `--tables REGEX`: which source tables a run reads, matched whole against `schema.table`.
#[derive(Debug, Clone)]
pub struct TableFilter(regex::Regex);

impl TableFilter {
    /// Compiles `pattern` (anchored at both ends).
    pub fn new(pattern: &str) -> Result<TableFilter, String> {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(TableFilter)
            .map_err(|e| {
                // The parser's message ends with the reason, after a picture of where.
                let error = e.to_string();
                let reason = error.lines().last().unwrap_or_default();
                let reason = reason.trim_start_matches("error: ");
                format!("--tables `{pattern}` is not a regular expression: {reason}")
            })
    }

    /// Whether `namespace.table` matches.
    pub fn matches(&self, namespace: &str, table: &str) -> bool {
        self.0.is_match(&format!("{namespace}.{table}"))
    }
}

impl PartialEq for TableFilter {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl SourceSpec {
    /// The tables the source describes with their schemas (matching `filter`), for pipelines
    /// that take their tables from the source; `None` when the source carries no schemas
    /// ahead of its data.
    pub fn discover(
        &self,
        filter: Option<&TableFilter>,
    ) -> Result<Option<Vec<SourceTable>>, SourceError> {
        match self {
            SourceSpec::Postgres(spec) => postgres::discover::discover(spec, filter).map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_filters_match_whole_names() {
        let filter = TableFilter::new("public\\.(orders|customers)").unwrap();
        assert!(filter.matches("public", "orders"));
        assert!(!filter.matches("public", "orders_archive"));
        assert!(!filter.matches("audit", "orders"));
        assert!(TableFilter::new("(").is_err());
    }

    #[test]
    fn parses_specs() {
        assert_eq!(
            SourceSpec::parse("generator:1_000").unwrap(),
            SourceSpec::Generator(Some(1000))
        );
        assert_eq!(
            SourceSpec::parse("generator").unwrap(),
            SourceSpec::Generator(None)
        );
        assert_eq!(
            SourceSpec::parse("file:a.jsonl").unwrap(),
            SourceSpec::File("a.jsonl".into())
        );
        assert!(SourceSpec::parse("generator:x").is_err());
        match SourceSpec::parse("kafka://localhost:9092/a.b.c,a.b.d").unwrap() {
            SourceSpec::Kafka(kafka) => assert_eq!(kafka.topics, ["a.b.c", "a.b.d"]),
            other => panic!("{other:?}"),
        }
        assert!(SourceSpec::parse("kafka://localhost:9092")
            .unwrap_err()
            .to_string()
            .contains("HOST:PORT/TOPIC"));
        let error = SourceSpec::parse("postgres://u:hunter2@h/db?colour=x").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(SourceSpec::parse("ftp://x")
            .unwrap_err()
            .to_string()
            .contains("file:PATH"));
    }
}
