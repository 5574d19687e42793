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
    if args.workers == 0 || args.events == 0 || args.partitions == 0 {
        bail!("--workers, --partitions and --events must be at least 1");
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
            kafka_records: args.kafka_records,
        },
    )?;
    match args.format {
        ReportFormat::Text => print!("{}", report.text()),
        ReportFormat::Json => println!("{}", report.json()),
    }
    Ok(())
}
