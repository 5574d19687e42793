//! `orders-replica`: the current state of `orders` in the Iceberg table
//! `demo.orders_realtime_replica` (with `cdc_operation`, `cdc_timestamp`), and live `status,
//! order_count, total_revenue` over it on the console ("Pattern 2.3 CDC").

use tributary_engine::{col, count, sum, BuildError, Pipeline, PipelineBuilder};

use crate::tables::{orders_schema, ORDERS};

/// The pipeline.
pub fn pipeline() -> Pipeline {
    Pipeline::new(
        "orders-replica",
        "orders replicated to Iceberg demo.orders_realtime_replica; count and revenue by status",
        build,
    )
}

fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let orders = p.table(ORDERS, orders_schema(), &["order_id"])?;
    let replica = p.iceberg_replica("demo.orders_realtime_replica", &orders)?;
    let by_status = replica.group_by(["status"])?.agg([
        count().alias("order_count"),
        sum(col("quantity") * col("price")).alias("total_revenue"),
    ])?;
    p.output("status", &by_status)?;
    Ok(())
}
