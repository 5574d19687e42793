//! A crate of its own that defines a pipeline and gets Tributary's whole command line for it
//! (and for the built-in pipelines): `cargo run -p custom-pipeline -- run orders-by-status
//! --source generator:10000 --until-idle`.
//!
//! `orders_by(column)` takes a parameter: one function, as many pipelines as columns.

use std::process::ExitCode;

use tributary::tables::{orders_schema, ORDERS};
use tributary_engine::{col, count, sum, Pipeline, PipelineBuilder};

/// Live orders and revenue grouped by `column` of the orders table.
fn orders_by(column: &'static str) -> Pipeline {
    Pipeline::new(
        format!("orders-by-{}", column.replace('_', "-")),
        format!("live orders and revenue by {column}"),
        move |p: &mut PipelineBuilder<'_>| {
            let orders = p.table(ORDERS, orders_schema(), &["order_id"])?;
            let grouped = orders.state().group_by([column])?.agg([
                count().alias("orders"),
                sum(col("quantity") * col("price")).alias("revenue"),
            ])?;
            p.output(column, &grouped)
        },
    )
}

/// The built-in pipelines and this crate's own.
fn pipelines() -> Vec<Pipeline> {
    let mut all = tributary::pipelines();
    all.extend([orders_by("status"), orders_by("customer_id")]);
    all
}

fn main() -> ExitCode {
    tributary::cli::main(&pipelines())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use std::collections::BTreeMap;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tributary_engine::sources::generator::{GeneratorConfig, OrdersWorkload};
    use tributary_engine::sources::SourceSpec;
    use tributary_engine::{run, shared_writer, ConsoleFormat, ConsoleOptions, RunOptions};

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Live orders per status after replaying the generator's first `events` events.
    fn oracle(events: u64) -> BTreeMap<String, i64> {
        let mut workload = OrdersWorkload::new(GeneratorConfig {
            events: Some(events),
            ..GeneratorConfig::default()
        });
        let mut status = BTreeMap::new();
        let mut line = String::new();
        while workload.next_line(&mut line) {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            match event["op"].as_str() {
                Some("d") => {
                    status.remove(&event["before"]["order_id"].as_i64().unwrap());
                }
                Some(_) => {
                    let after = &event["after"];
                    let id = after["order_id"].as_i64().unwrap();
                    status.insert(id, after["status"].as_str().unwrap().to_owned());
                }
                None => {} // a tombstone
            }
        }
        let mut counts = BTreeMap::new();
        for s in status.into_values() {
            *counts.entry(s).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn the_parameterised_pipeline_counts_live_orders_by_status() {
        let capture = Capture::default();
        let pipeline = pipelines()
            .into_iter()
            .find(|p| p.name() == "orders-by-status")
            .unwrap();
        let warehouse = std::env::temp_dir().join("tributary-custom-pipeline");
        run(
            &pipeline,
            RunOptions {
                source: SourceSpec::Generator(Some(3000)),
                until_idle: true,
                console: ConsoleOptions {
                    format: ConsoleFormat::Jsonl,
                    writer: shared_writer(capture.clone()),
                    ..ConsoleOptions::default()
                },
                iceberg: tributary_engine::IcebergOptions::new(warehouse),
                ..RunOptions::default()
            },
        )
        .unwrap();
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for line in String::from_utf8(capture.0.lock().unwrap().clone())
            .unwrap()
            .lines()
        {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let row = &line["row"];
            let orders = row["orders"].as_i64().unwrap() * line["diff"].as_i64().unwrap();
            *counts
                .entry(row["status"].as_str().unwrap().to_owned())
                .or_insert(0) += orders;
        }
        counts.retain(|_, n| *n != 0);
        assert_eq!(counts, oracle(3000));
    }

    #[test]
    fn the_command_line_lists_built_in_and_own_pipelines() {
        let code = tributary::cli::main_with_args(["custom-pipeline", "pipelines"], &pipelines());
        assert_eq!(code, ExitCode::SUCCESS);
        let names: Vec<String> = pipelines().iter().map(|p| p.name().to_owned()).collect();
        assert!(names.contains(&"orders-replica".to_owned()));
        assert!(names.contains(&"orders-by-customer-id".to_owned()));
    }
}
