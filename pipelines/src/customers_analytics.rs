//! `customers-analytics` ("CDC Streaming Pipelines"): every change to `customers` as an
//! analytics row — `full_name`, `email`, `location`, and the change's `_cdc_operation`
//! (INSERT/UPDATE/DELETE), `_source_lsn` and `_event_timestamp_ms` — appended to the Iceberg
//! table `analytics.customers_analytics`.

use tributary_engine::{case, col, concat_ws, epoch_millis, BuildError, Pipeline, PipelineBuilder};

use crate::tables::{customers_schema, CUSTOMERS};

/// The pipeline.
pub fn pipeline() -> Pipeline {
    Pipeline::new(
        "customers-analytics",
        "customers changes as analytics rows (full_name, location, operation, LSN) appended \
            to Iceberg analytics.customers_analytics",
        build,
    )
}

fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let customers = p.table(CUSTOMERS, customers_schema(), &["id"])?;
    let analytics = customers.changed_rows().select([
        col("id"),
        concat_ws(" ", [col("first_name"), col("last_name")]).alias("full_name"),
        col("email"),
        concat_ws(", ", [col("city"), col("country")]).alias("location"),
        case(
            col("op"),
            [
                ("c", "INSERT"),
                ("r", "INSERT"),
                ("u", "UPDATE"),
                ("d", "DELETE"),
            ],
        )
        .alias("_cdc_operation"),
        col("source_lsn").alias("_source_lsn"),
        epoch_millis(col("event_time")).alias("_event_timestamp_ms"),
    ])?;
    p.iceberg_append("analytics.customers_analytics", &analytics)
}
