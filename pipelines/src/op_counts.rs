//! `op-counts`: live `op, event_count, total_quantity` over every orders event, all-time and per
//! 10-second tumbling window of event time ("Streaming CDC with Kafka").

use std::time::Duration;

use tributary_engine::{col, count, sum, BuildError, Pipeline, PipelineBuilder, Window};

use crate::tables::{orders_schema, ORDERS};

/// The pipeline.
pub fn pipeline() -> Pipeline {
    Pipeline::new(
        "op-counts",
        "event counts and quantity by Debezium op, all-time and per 10 s window",
        build,
    )
}

/// Window size of the windowed counts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How late (in event time) an event may arrive and still count in its window.
pub const LATENESS: Duration = Duration::from_secs(5);

fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let orders = p.table(ORDERS, orders_schema(), &["order_id"])?;
    let changes = orders.changes();
    let measures = || {
        [
            count().alias("event_count"),
            sum(col("quantity")).alias("total_quantity"),
        ]
    };

    p.output("op_counts", &changes.group_by(["op"])?.agg(measures())?)?;

    let windowed = changes.window(
        "op_counts/10s",
        "event_time",
        Window::tumbling(WINDOW).lateness(LATENESS),
    )?;
    let per_window = windowed
        .group_by(["window_start", "window_end", "op"])?
        .agg(measures())?;
    p.output("op_counts_10s", &per_window)?;
    Ok(())
}
