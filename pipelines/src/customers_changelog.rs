//! `customers-changelog` ("Change Data Capture" project): every change to `customers` as one
//! flat row — `op`, `event_time`, `before_*`, `after_*` — appended to the Iceberg table
//! `analytics.customers_changelog`.

use tributary_engine::{BuildError, Pipeline, PipelineBuilder};

use crate::tables::{customers_schema, CUSTOMERS};

/// The pipeline.
pub fn pipeline() -> Pipeline {
    Pipeline::new(
        "customers-changelog",
        "every customers change (before/after) appended to Iceberg analytics.customers_changelog",
        build,
    )
}

fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let customers = p.table(CUSTOMERS, customers_schema(), &["id"])?;
    let changes = p.changelog(&customers);
    p.iceberg_append("analytics.customers_changelog", &changes)
}
