//! Workloads shared by the criterion benches and `tributary bench`: the orders workload's
//! Debezium lines held in memory, and the orders table catalog.

use tributary_engine::sources::generator::{GeneratorConfig, OrdersWorkload, ORDERS_TOPIC};
use tributary_operators::{Column, ColumnType, Schema, TableCatalog, TableSpec};

/// `events` change events of the orders workload (plus tombstones), one JSON line each.
pub fn workload_lines(events: u64, schema: bool) -> Vec<String> {
    let mut workload = OrdersWorkload::new(GeneratorConfig {
        events: Some(events),
        schema,
        ..GeneratorConfig::default()
    });
    let mut lines = Vec::new();
    let mut line = String::new();
    while workload.next_line(&mut line) {
        lines.push(line.clone());
    }
    lines
}

/// A catalog with the orders table as the pipelines declare it.
pub fn orders_catalog() -> TableCatalog {
    let mut catalog = TableCatalog::default();
    let schema = Schema::new(vec![
        Column::new("order_id", ColumnType::Int64).not_null(),
        Column::new("customer_id", ColumnType::Int64),
        Column::new("status", ColumnType::String),
        Column::new("quantity", ColumnType::Int32),
        Column::new(
            "price",
            ColumnType::Decimal {
                precision: 10,
                scale: 2,
            },
        ),
        Column::new("created_at", ColumnType::Timestamp),
    ]);
    let spec = TableSpec {
        name: ORDERS_TOPIC.to_owned(),
        schema,
        key: vec![0],
    };
    catalog.add(spec).map(|_| catalog).unwrap_or_default()
}
