//! `orders-replica`: the current state of `orders`, and live `status, order_count,
//! total_revenue` over it ("Pattern 2.3 CDC"). The Iceberg replica lands with the Iceberg sink.

use tributary_engine::{col, count, sum, BuildError, Pipeline, PipelineBuilder};

use crate::tables::{orders_schema, ORDERS};

/// The pipeline.
pub const PIPELINE: Pipeline = Pipeline {
    name: "orders-replica",
    about: "current state of orders; order count and revenue by status",
    build,
};

fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let orders = p.table(ORDERS, orders_schema(), &["order_id"])?;
    let by_status = orders.state().group_by(["status"])?.agg([
        count().alias("order_count"),
        sum(col("quantity") * col("price")).alias("total_revenue"),
    ])?;
    p.console("status", &by_status)?;
    Ok(())
}
