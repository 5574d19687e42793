//! Engine errors: building a pipeline, opening sources, running.

use tributary_operators::PlanError;

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
    /// An Iceberg table could not be opened or recovered.
    #[error("iceberg table `{table}`: {cause}")]
    Iceberg {
        /// The table.
        table: String,
        /// What went wrong.
        cause: crate::sinks::iceberg::IcebergError,
    },
    /// Two sinks share a name.
    #[error("output `{0}` is declared twice")]
    DuplicateOutput(String),
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
    /// A sink could not write.
    #[error("sink `{sink}` failed: {cause}")]
    Sink {
        /// The sink.
        sink: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// An Iceberg sink could not open, write or commit its table.
    #[error("iceberg sink `{sink}` failed: {cause}")]
    Iceberg {
        /// The table.
        sink: String,
        /// What went wrong.
        cause: crate::sinks::iceberg::IcebergError,
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
