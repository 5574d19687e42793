//! A pipeline whose definition is wrong fails the run at start with a message that names the
//! problem, on any number of workers, instead of hanging or panicking.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use tributary_engine::sources::SourceSpec;
use tributary_engine::{
    col, count, run, shared_writer, sum, BuildError, Column, ColumnType, ConsoleFormat,
    ConsoleMode, ConsoleOptions, IcebergOptions, Pipeline, PipelineBuilder, RunError, RunOptions,
    Schema,
};

fn typo(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let schema = Schema::new(vec![Column::new("order_id", ColumnType::Int64).not_null()]);
    let orders = p.table("dbserver1.public.orders", schema, &["order_id"])?;
    let totals = orders
        .state()
        .group_by(["status"])?
        .agg([count(), sum(col("quantity"))])?;
    p.output("status", &totals)
}

/// Runs `build` on 1 and 3 workers and returns each run's error message.
fn build_errors(
    build: for<'s> fn(&mut PipelineBuilder<'s>) -> Result<(), BuildError>,
) -> Vec<String> {
    let pipeline = Pipeline::new("broken", "a pipeline with a definition error", build);
    [1, 3]
        .into_iter()
        .map(|workers| {
            let error = run(
                &pipeline,
                RunOptions {
                    source: SourceSpec::Generator(Some(10)),
                    workers,
                    epoch: Duration::from_millis(10),
                    until_idle: true,
                    console: ConsoleOptions {
                        format: ConsoleFormat::Jsonl,
                        mode: ConsoleMode::Update,
                        max_rows: 20,
                        writer: shared_writer(std::io::sink()),
                    },
                    iceberg: IcebergOptions::new(
                        std::env::temp_dir().join("tributary-build-errors"),
                    ),
                    ..RunOptions::default()
                },
            )
            .unwrap_err();
            assert!(matches!(error, RunError::Build { .. }), "{error}");
            error.to_string()
        })
        .collect()
}

#[test]
fn an_unknown_column_fails_the_run_with_the_known_columns() {
    for message in build_errors(typo) {
        assert!(
            message.contains("no column `status`") && message.contains("order_id"),
            "{message}"
        );
    }
}

fn wide_decimal(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let schema = Schema::new(vec![
        Column::new("order_id", ColumnType::Int64).not_null(),
        Column::new(
            "price",
            ColumnType::Decimal {
                precision: 40,
                scale: 2,
            },
        ),
    ]);
    let orders = p.table("dbserver1.public.orders", schema, &["order_id"])?;
    p.output("orders", &orders.state())
}

#[test]
fn a_decimal_wider_than_38_digits_fails_the_run() {
    for message in build_errors(wide_decimal) {
        assert!(
            message.contains("`price` is decimal(40,2)") && message.contains("at most 38"),
            "{message}"
        );
    }
}
