//! Tributary engine: the runtime (workers, epochs, backpressure), the `PipelineBuilder` that
//! pipelines use, and the sources and sinks at the edges.

pub mod builder;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod progress;
pub mod runtime;
pub mod sinks;
pub mod sources;

pub use builder::{Pipeline, PipelineBuilder, Table};
pub use error::{BuildError, RunError, SourceError};
pub use runtime::{run, RunOptions, RunSummary};
pub use sinks::console::{ConsoleFormat, ConsoleMode, ConsoleOptions};
pub use sinks::iceberg::{DeleteMode, IcebergOptions, Partition};
pub use sinks::{shared_writer, SharedWriter};
pub use tributary_operators::{
    avg, case, col, concat_ws, count, epoch_millis, lit, sum, Column, ColumnType, Relation, Schema,
    Window,
};
