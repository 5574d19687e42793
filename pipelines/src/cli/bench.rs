//! `tributary bench`: its flags (the measurement itself is [`crate::bench`]).

use std::time::Duration;

use anyhow::bail;
use clap::ValueEnum;

use tributary_engine::Pipeline;

use super::find_pipeline;

/// `tributary bench` flags.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Change events.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct order ids.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Timely worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Streams the input is split into by key, like a Kafka topic's partitions; the workers
    /// share them out and each reads its own. With more than one, windows see the partitions'
    /// event times skewed (see README, "Windows over several partitions").
    #[arg(long, default_value_t = 1)]
    partitions: usize,
    /// Pipeline to run.
    #[arg(long, default_value = "op-counts")]
    pipeline: String,
    /// Epoch interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    epoch_ms: u64,
    /// Schema-wrapped envelopes instead of plain ones.
    #[arg(long)]
    schema: bool,
    /// Feed Kafka records (message key, value, topic) as the Kafka source delivers Debezium's
    /// messages, instead of JSONL lines.
    #[arg(long)]
    kafka_records: bool,
    /// Compute the pipeline's Iceberg tables without writing them (measures the dataflow).
    #[arg(long)]
    no_iceberg: bool,
    /// Iceberg commit interval in milliseconds (a small one over many events measures commit
    /// latency over a long run, with the table's maintenance running between commits).
    #[arg(long, default_value_t = 10_000)]
    commit_ms: u64,
    /// Spread the orders over this many source tables by id (orders_00, orders_01, …),
    /// declared for pipelines that take their tables from the source (`replicate`).
    #[arg(long, default_value_t = 1)]
    tables: usize,
    /// Declare this many more tables that get no events (what an idle table costs).
    #[arg(long, default_value_t = 0)]
    idle_tables: usize,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ReportFormat {
    Text,
    Json,
}

/// Measures a pipeline and prints the report.
pub fn bench(args: BenchArgs, pipelines: &[Pipeline]) -> anyhow::Result<()> {
    let pipeline = find_pipeline(pipelines, &args.pipeline)?;
    if args.workers == 0 || args.events == 0 || args.partitions == 0 || args.tables == 0 {
        bail!("--workers, --partitions, --tables and --events must be at least 1");
    }
    if args.tables > 1 && args.kafka_records {
        bail!("--tables above 1 feeds JSON lines; leave out --kafka-records");
    }
    let report = crate::bench::bench(
        pipeline,
        crate::bench::BenchConfig {
            events: args.events,
            keys: args.keys.max(1),
            workers: args.workers,
            partitions: args.partitions,
            epoch: Duration::from_millis(args.epoch_ms),
            schema: args.schema,
            iceberg: !args.no_iceberg,
            commit: Duration::from_millis(args.commit_ms),
            kafka_records: args.kafka_records,
            tables: args.tables,
            idle_tables: args.idle_tables,
        },
    )?;
    match args.format {
        ReportFormat::Text => print!("{}", report.text()),
        ReportFormat::Json => println!("{}", report.json()),
    }
    Ok(())
}
