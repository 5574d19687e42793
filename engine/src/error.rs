//! Engine errors: building a pipeline, opening sources, bad run options, running. Sinks keep
//! their own error types; they reach these as boxed causes, so this module imports none of them.

use tributary_operators::PlanError;

/// Any sink's own error.
pub type SinkCause = Box<dyn std::error::Error + Send + Sync>;

/// A pipeline definition that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A relation operation was invalid (unknown column, bad types).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A table was declared wrongly.
    #[error("table `{table}`: {reason}")]
    Table {
        /// The table's Debezium name.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// A sink could not open or recover what an output writes to.
    #[error("{sink}: {cause}")]
    Sink {
        /// The sink and what it writes, e.g. "iceberg table `demo.orders`".
        sink: String,
        /// What went wrong.
        cause: SinkCause,
    },
    /// Two sinks share a name.
    #[error("output `{0}` is declared twice")]
    DuplicateOutput(String),
    /// The pipeline takes tables from the source, and the source does not describe them.
    #[error("{0}")]
    SourceTables(String),
}

/// A source that cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The `--source` value is not understood.
    #[error("bad --source `{spec}`: {reason}")]
    BadSpec {
        /// What the user passed.
        spec: String,
        /// Why it is not understood, and what would be.
        reason: String,
    },
    /// The source's file could not be opened or read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// No Kafka broker answered within the connect timeout.
    #[error(
        "cannot reach Kafka at {brokers} ({attempts} attempts over {seconds}s: {cause}); is the \
         broker running, and are HOST:PORT and the security options (--kafka-option) right?"
    )]
    KafkaUnreachable {
        /// The bootstrap servers.
        brokers: String,
        /// Metadata requests tried.
        attempts: u32,
        /// How long it tried.
        seconds: u64,
        /// The client's last error.
        cause: String,
    },
    /// Topics that the source reads or the sink writes do not exist.
    #[error(
        "Kafka topic(s) {topics} do not exist on {brokers}; create them (e.g. `kafka-topics.sh \
         --bootstrap-server {brokers} --create --topic NAME --partitions N`) or check the \
         names (Debezium's topics are `server.schema.table`)"
    )]
    KafkaTopicMissing {
        /// The bootstrap servers.
        brokers: String,
        /// The missing topics, comma-separated.
        topics: String,
    },
    /// A Kafka client call failed.
    #[error("kafka {what} failed: {cause}; check the --kafka-option settings")]
    Kafka {
        /// What was being done.
        what: String,
        /// The client's error.
        cause: String,
    },
    /// PostgreSQL refused or is not set up for logical replication.
    #[error("postgres {what}: {reason}")]
    Postgres {
        /// What was being done.
        what: String,
        /// The server's or Tributary's explanation, with the fix where there is one.
        reason: String,
    },
    /// The source cannot resume where the sinks last committed.
    #[error("cannot resume {source_name}: {reason}")]
    Resume {
        /// The source.
        source_name: String,
        /// Why, and what to do.
        reason: String,
    },
}

/// A run option that is not understood.
#[derive(Debug, thiserror::Error)]
#[error("bad {option} `{value}`: {reason}")]
pub struct OptionError {
    /// The option, e.g. `--kafka-sink`.
    pub option: String,
    /// What the user passed (secrets removed).
    pub value: String,
    /// Why it is not understood, and what would be.
    pub reason: String,
}

/// A pipeline run that failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pipeline definition is invalid.
    #[error("pipeline `{pipeline}` cannot be built: {cause}")]
    Build {
        /// The pipeline name.
        pipeline: String,
        /// What is wrong.
        cause: BuildError,
    },
    /// A source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A run option is not understood.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// A sink could not open, write or commit.
    #[error("{sink} failed: {cause}")]
    Sink {
        /// The sink and what it writes, e.g. "console `status`", "iceberg table `demo.t`".
        sink: String,
        /// What went wrong.
        cause: SinkCause,
    },
    /// The metrics endpoint could not be bound.
    #[error("cannot serve metrics on {addr}: {cause}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The worker threads could not start or one of them panicked.
    #[error("dataflow workers failed: {0}")]
    Workers(String),
}

/// An error and its causes, `outer: inner: innermost`, for one-line messages.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}
