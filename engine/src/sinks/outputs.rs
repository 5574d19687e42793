//! The output seam: a pipeline declares named outputs (`p.output(name, &relation)`), and the
//! run attaches every [`OutputSink`] it was given (console, Kafka, …) to each of them. The
//! sinks a run uses are put together here, in [`SinkContext::for_run`], so the runtime names
//! none of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tributary_operators::dataflow::{Diff, Time};
use tributary_operators::{Row, Schema};

use super::console::{ConsoleOptions, ConsoleOutput};
use super::dead_letter::DeadLetterSink;
use super::iceberg::{IcebergError, IcebergOptions, IcebergSinks, ResumePoint};
use super::kafka::{KafkaOutput, KafkaSinkSpec};
use super::{Durability, FailureSlot, SharedWriter};
use crate::metrics::Metrics;
use crate::positions::EpochLedger;

/// One output a pipeline declares.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Its name, unique in the pipeline (`status`, `op_counts`).
    pub name: String,
    /// Its columns.
    pub schema: Arc<Schema>,
    /// Its key columns (an aggregate's group-by columns), if it has one.
    pub key: Option<Vec<usize>>,
}

/// What an output writer reports to.
#[derive(Debug, Clone)]
pub struct OutputContext {
    /// Run counters.
    pub metrics: Arc<Metrics>,
    /// Where to report a failure (the run stops with it).
    pub failure: FailureSlot,
}

/// A sink that every declared output goes to.
pub trait OutputSink: Send + Sync + std::fmt::Debug {
    /// Its kind, for operator names and logs: `console`, `kafka`.
    fn kind(&self) -> &'static str;

    /// A writer for one output; called once per worker while the dataflow is built, and used
    /// on the sink worker only.
    fn open(&self, output: &OutputSpec, context: &OutputContext) -> Box<dyn OutputWriter>;
}

/// Writes one output's changes, epoch by epoch.
pub trait OutputWriter {
    /// One closed epoch's consolidated changes, in epoch order; only epochs with changes.
    fn write(&mut self, epoch: Time, changes: Vec<(Row, Diff)>);
}

impl OutputSink for ConsoleOptions {
    fn kind(&self) -> &'static str {
        "console"
    }

    fn open(&self, output: &OutputSpec, context: &OutputContext) -> Box<dyn OutputWriter> {
        Box::new(ConsoleOutput::new(
            &output.name,
            Arc::clone(&output.schema),
            output.key.clone(),
            self.clone(),
            Arc::clone(&context.metrics),
            Arc::clone(&context.failure),
        ))
    }
}

impl OutputSink for KafkaSinkSpec {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn open(&self, output: &OutputSpec, context: &OutputContext) -> Box<dyn OutputWriter> {
        Box::new(KafkaOutput::new(
            Arc::new(self.clone()),
            &output.name,
            (*output.schema).clone(),
            output.key.clone(),
            Arc::clone(&context.failure),
        ))
    }
}

/// What a durable sink did in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Commits (Iceberg snapshots).
    pub commits: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Time spent encoding and committing (all of its tables).
    pub busy: Duration,
    /// The time of each commit, in order (the first [`crate::metrics::Histogram::KEPT`]).
    pub commit_latencies: Vec<Duration>,
}

/// Every sink of a run and what they share.
#[derive(Clone, Debug)]
pub(crate) struct SinkContext {
    /// Attached to every output.
    pub outputs: Vec<Arc<dyn OutputSink>>,
    pub dead_letters: DeadLetterSink,
    pub metrics: Arc<Metrics>,
    pub failure: FailureSlot,
    pub durability: Durability,
    /// The tables pipelines declare (`iceberg_replica`, `iceberg_append`).
    pub iceberg: IcebergSinks,
    pub ledger: EpochLedger,
    /// The source's stream names, by stream index.
    pub streams: Arc<Vec<String>>,
    /// Set when the run is abandoned: durable sinks commit nothing more (a restart replays
    /// what they had not committed).
    pub abandoned: Arc<std::sync::atomic::AtomicBool>,
}

/// The sink settings of a run.
pub(crate) struct SinkSettings<'a> {
    pub pipeline: &'a str,
    pub console: &'a ConsoleOptions,
    pub kafka: Option<&'a KafkaSinkSpec>,
    pub dead_letter: Option<&'a SharedWriter>,
    pub iceberg: &'a IcebergOptions,
    /// Names of the source's streams, by index (for dead letters' positions).
    pub streams: &'a [String],
}

impl SinkContext {
    /// The sinks `settings` ask for: the console (always) and Kafka (when given) for every
    /// output, dead letters, and the pipeline's Iceberg tables.
    pub fn for_run(
        settings: SinkSettings<'_>,
        metrics: &Arc<Metrics>,
        failure: &FailureSlot,
    ) -> Self {
        let mut outputs: Vec<Arc<dyn OutputSink>> = vec![Arc::new(settings.console.clone())];
        if let Some(kafka) = settings.kafka {
            outputs.push(Arc::new(kafka.clone()));
        }
        SinkContext {
            outputs,
            dead_letters: DeadLetterSink {
                file: settings.dead_letter.cloned(),
                stream_names: Arc::new(settings.streams.to_vec()),
                metrics: Arc::clone(metrics),
                failure: Arc::clone(failure),
            },
            metrics: Arc::clone(metrics),
            failure: Arc::clone(failure),
            durability: Durability::default(),
            iceberg: IcebergSinks::new(settings.iceberg.clone(), settings.pipeline),
            ledger: EpochLedger::with_commit_interval(settings.iceberg.commit_interval),
            streams: Arc::new(settings.streams.to_vec()),
            abandoned: Arc::default(),
        }
    }

    /// Where the durable sinks' last commits leave the source, and their epoch.
    pub fn resume_point(&self) -> Result<Option<ResumePoint>, IcebergError> {
        self.iceberg.resume_point()
    }

    /// What the durable sinks did, by kind.
    pub fn stats(&self) -> BTreeMap<String, SinkStats> {
        let m = &self.metrics;
        let iceberg = SinkStats {
            commits: Metrics::get(&m.iceberg_commits),
            rows_written: Metrics::get(&m.iceberg_rows_written),
            busy: Duration::from_micros(Metrics::get(&m.iceberg_busy_us)),
            commit_latencies: m.iceberg_commit_latency.values(),
        };
        BTreeMap::from([("iceberg".to_owned(), iceberg)])
    }
}
