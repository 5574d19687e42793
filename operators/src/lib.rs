//! Tributary operators: the data model, the Debezium codec, and pure dataflow operators.
//! Nothing here does I/O; the engine feeds sources in and drains sinks out.

#![warn(missing_docs)]

pub mod dataflow;
pub mod debezium;
pub mod event;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(test)]
mod fuzzing_tests;
pub mod row;
pub mod schema;
pub mod time;
pub mod topic;
pub mod value;

pub use dataflow::aggregate::{avg, count, sum, Agg};
pub use dataflow::expr::{case, col, concat_ws, epoch_millis, lit, Expr};
pub use dataflow::relation::{PlanError, Relation};
pub use dataflow::window::Window;
pub use dataflow::{Diff, Time};
pub use event::{ChangeEvent, DeadLetter, DeadLetterKind, Op, Position, RawRecord};
pub use row::{Key, Row};
pub use schema::{Column, ColumnType, Schema, TableCatalog, TableId, TableSpec};
pub use topic::TopicName;
pub use value::{Decimal, Float, Value};
