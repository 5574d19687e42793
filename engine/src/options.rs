//! How to run a pipeline: the engine's options (the command line's `RunConfig` fills them in;
//! library users start from [`RunOptions::default`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::sinks::console::ConsoleOptions;
use crate::sinks::iceberg::{DeleteMode, IcebergOptions, Partition};
use crate::sinks::kafka::KafkaSinkSpec;
use crate::sinks::{SharedWriter, SinkSettings};
use crate::sources::{SourceSpec, SourceTable, TableFilter};

/// How to run a pipeline.
#[derive(Clone)]
pub struct RunOptions {
    /// Where records come from.
    pub source: SourceSpec,
    /// Timely worker threads.
    pub workers: usize,
    /// Close epochs at most this often (at transaction boundaries).
    pub epoch: Duration,
    /// Stop once the source is drained and every sink has committed.
    pub until_idle: bool,
    /// Console output settings.
    pub console: ConsoleOptions,
    /// Also write every named output to Kafka.
    pub kafka_sink: Option<KafkaSinkSpec>,
    /// JSONL file for dead letters.
    pub dead_letter: Option<SharedWriter>,
    /// Where Iceberg tables live and how often they commit.
    pub iceberg: IcebergOptions,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<SocketAddr>,
    /// Set (e.g. by a signal handler) to stop reading, finish the open epoch, let every sink
    /// write it, and return normally.
    pub shutdown: Option<Arc<AtomicBool>>,
    /// `--tables`: which source tables pipelines that take their tables from the source read.
    pub tables: Option<TableFilter>,
    /// `--namespace`: the Iceberg namespace such pipelines write to (default: the source's).
    pub namespace: Option<String>,
    /// Source tables declared by the user (for sources whose events carry no types); they win
    /// over the tables a source describes.
    pub declared_tables: Vec<SourceTable>,
    /// Per source table (`server.schema.table`), how pipelines that take their tables from
    /// the source write it.
    pub table_options: BTreeMap<String, TableOptions>,
}

/// How a pipeline that takes its tables from the source writes one of them (`[[table]]` in
/// `tributary.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// Key columns instead of the source's primary key (a table without one is then
    /// upserted rather than logged).
    pub key: Option<Vec<String>>,
    /// The Iceberg table's partition fields, when it is created.
    pub partitions: Vec<Partition>,
    /// How replaced rows are deleted (default: `--iceberg-deletes`).
    pub deletes: Option<DeleteMode>,
}

impl Default for RunOptions {
    /// The unbounded generator, one worker, 1 s epochs, console tables on stdout, Iceberg
    /// tables under `./warehouse`.
    fn default() -> Self {
        RunOptions {
            source: SourceSpec::Generator(None),
            workers: 1,
            epoch: Duration::from_secs(1),
            until_idle: false,
            console: ConsoleOptions::default(),
            kafka_sink: None,
            dead_letter: None,
            iceberg: IcebergOptions::new("warehouse"),
            metrics_addr: None,
            shutdown: None,
            tables: None,
            namespace: None,
            declared_tables: Vec::new(),
            table_options: BTreeMap::new(),
        }
    }
}

impl RunOptions {
    /// What the sinks need of these options.
    pub(crate) fn sink_settings<'a>(
        &'a self,
        pipeline: &'a str,
        streams: &'a [String],
    ) -> SinkSettings<'a> {
        SinkSettings {
            pipeline,
            console: &self.console,
            kafka: self.kafka_sink.as_ref(),
            dead_letter: self.dead_letter.as_ref(),
            iceberg: &self.iceberg,
            streams,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("source", &self.source)
            .field("workers", &self.workers)
            .field("epoch", &self.epoch)
            .field("until_idle", &self.until_idle)
            .finish_non_exhaustive()
    }
}
