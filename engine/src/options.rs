//! How to run a pipeline: the engine's options (the command line's `RunConfig` fills them in;
//! library users start from [`RunOptions::default`]).

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::sinks::console::ConsoleOptions;
use crate::sinks::iceberg::IcebergOptions;
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
