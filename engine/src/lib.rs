//! Tributary engine: the runtime (workers, epochs, backpressure), the `PipelineBuilder` that
//! pipelines use, and the sources and sinks at the edges.

#![warn(missing_docs)]

mod builder;
pub mod error;
mod ingest;
pub mod kafka_client;
pub mod metrics;
#[cfg(test)]
mod module_graph;
mod names;
mod options;
pub mod positions;
mod progress;
mod redact;
mod runtime;
pub mod sinks;
pub mod sources;

pub use builder::{BuildFn, KeylessTable, Pipeline, PipelineBuilder, Table};
pub use error::{BuildError, OptionError, RunError, SourceError};
pub use options::{RunOptions, TableOptions};
pub use runtime::{run, RunSummary};
pub use sinks::console::{ConsoleFormat, ConsoleMode, ConsoleOptions};
pub use sinks::iceberg::{DeleteMode, IcebergOptions, Partition};
pub use sinks::{shared_writer, SharedWriter};
pub use sources::{SourceTable, TableFilter};
pub use tributary_operators::{
    avg, case, col, concat_ws, count, epoch_millis, lit, sum, Column, ColumnType, Relation, Schema,
    Window,
};
