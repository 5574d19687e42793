//! Workloads shared by the criterion benches: the orders workload's
//! Debezium lines held in memory, and the orders table catalog.

use tributary::tables::{orders_schema, ORDERS};
use tributary_engine::sources::generator::{GeneratorConfig, OrdersWorkload};
use tributary_operators::{TableCatalog, TableSpec};

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
    let spec = TableSpec {
        name: ORDERS.to_owned(),
        schema: orders_schema(),
        key: vec![0],
        keep_before: false,
        decoded: None,
    };
    catalog.add(spec).map(|_| catalog).unwrap_or_default()
}
