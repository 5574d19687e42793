//! The `tributary` command line: list, run and feed pipelines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use tributary::config::RunConfig;
use tributary_engine::sinks::kafka::encode::KafkaSinkFormat;
use tributary_engine::sinks::kafka::KafkaSinkSpec;
use tributary_engine::sources::generator::{DecimalMode, GeneratorConfig, OrdersWorkload};
use tributary_engine::sources::kafka::client::{KafkaClientOptions, DEFAULT_CONNECT_TIMEOUT};
use tributary_engine::sources::kafka::StartFrom;
use tributary_engine::sources::SourceSpec;
use tributary_engine::{
    run, shared_writer, ConsoleFormat, ConsoleMode, ConsoleOptions, DeleteMode, IcebergOptions,
    RunOptions,
};

/// mimalloc: the dataflow allocates and frees small rows all the time, and the system
/// allocator made that a tenth of a worker's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "tributary",
    version,
    about = "Change-data-capture stream processing in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the pipelines, one per line.
    Pipelines,
    /// Run a pipeline.
    Run(Box<RunArgs>),
    /// Write the deterministic orders workload as Debezium JSONL.
    Generate(GenerateArgs),
    /// Measure a pipeline on the orders workload pre-encoded in memory.
    Bench(BenchArgs),
    /// Maintain an Iceberg table (run while the pipeline writing it is stopped).
    Maintain(MaintainArgs),
}

#[derive(clap::Args, Debug)]
struct MaintainArgs {
    #[command(subcommand)]
    task: MaintainTask,
    /// Directory of the Iceberg tables.
    #[arg(long, global = true, default_value = "warehouse")]
    warehouse: PathBuf,
    /// Iceberg catalog: sqlite:PATH | postgres://USER@HOST[:PORT]/DB | http[s]://HOST[:PORT][/PATH] (REST).  [default: sqlite:<warehouse>/catalog.db]
    #[arg(long, global = true)]
    catalog: Option<String>,
}

#[derive(Subcommand, Debug)]
enum MaintainTask {
    /// Rewrite the live rows into one data file, folding position deletes.
    Compact {
        /// The table, `namespace.table`.
        table: String,
    },
    /// Drop snapshots older than a duration (never the current one) from the metadata.
    Expire {
        /// The table, `namespace.table`.
        table: String,
        /// Age, e.g. `30s`, `15m`, `12h`, `7d`.
        #[arg(long, value_parser = parse_age)]
        older_than: Duration,
    },
}

fn parse_age(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit, e.g. 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(number * seconds))
}

fn maintain(args: MaintainArgs) -> anyhow::Result<()> {
    let options =
        IcebergOptions::parse(&args.warehouse.to_string_lossy(), args.catalog.as_deref())?;
    match args.task {
        MaintainTask::Compact { table } => {
            let done = tributary_engine::sinks::iceberg::compact(&options, &table)?;
            println!(
                "compacted {table}: {} live rows in 1 data file (was {} data files, {} delete files)",
                done.rows, done.data_files_before, done.delete_files_before
            );
        }
        MaintainTask::Expire { table, older_than } => {
            let removed = tributary_engine::sinks::iceberg::expire(&options, &table, older_than)?;
            println!("expired {removed} snapshots of {table}");
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
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

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Pipeline name (see `tributary pipelines`); may come from --config instead.
    pipeline: Option<String>,
    /// A tributary.toml with any of these options (keys are the flag names without `--`);
    /// flags given here win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// file:PATH | generator[:EVENTS] | kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC] |
    /// postgres://USER@HOST[:PORT]/DB?publication=P&slot=S
    /// [default: generator]
    #[arg(long)]
    source: Option<String>,
    /// Timely worker threads.  [default: 1]
    #[arg(long)]
    workers: Option<usize>,
    /// Close epochs at most this often, in milliseconds (only at transaction boundaries).
    /// [default: 1000]
    #[arg(long)]
    epoch_ms: Option<u64>,
    /// Stop once the source is drained and every sink has written.
    #[arg(long)]
    until_idle: bool,
    /// How the console prints: table or jsonl.  [default: table]
    #[arg(long, value_enum)]
    console_format: Option<FormatArg>,
    /// update (changed rows per batch) or complete (the whole result).  [default: update]
    #[arg(long, value_enum)]
    console_mode: Option<ModeArg>,
    /// Most rows a console table shows per batch.  [default: 20]
    #[arg(long)]
    console_rows: Option<usize>,
    /// Write dead letters (reason, source position, raw payload) to this JSONL file.
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Directory of the Iceberg tables.  [default: ./warehouse]
    #[arg(long)]
    warehouse: Option<PathBuf>,
    /// Iceberg catalog: sqlite:PATH | postgres://USER@HOST[:PORT]/DB | http[s]://HOST[:PORT][/PATH] (REST).  [default: sqlite:<warehouse>/catalog.db]
    #[arg(long)]
    catalog: Option<String>,
    /// Commit Iceberg snapshots at most this often, in milliseconds (each covers whole
    /// epochs).  [default: 10000]
    #[arg(long)]
    commit_ms: Option<u64>,
    /// How upserting Iceberg tables delete replaced rows: position (read by every reader,
    /// pyiceberg included) or equality (by key; no per-key index in memory; readers must support
    /// equality deletes).  [default: position]
    #[arg(long)]
    iceberg_deletes: Option<String>,
    /// Kafka consumer group whose offsets are committed once every sink has handled an epoch
    /// (for monitoring, and for --kafka-start committed).  [default: tributary-PIPELINE]
    #[arg(long)]
    kafka_group: Option<String>,
    /// Where Kafka partitions start: earliest, latest or committed (the group's offsets).
    /// [default: earliest]
    #[arg(long, value_enum)]
    kafka_start: Option<StartArg>,
    /// A librdkafka option for the Kafka source and sink, KEY=VALUE (repeatable), e.g.
    /// security.protocol=SASL_SSL. Secrets go in environment variables instead:
    /// TRIBUTARY_KAFKA_SASL_PASSWORD sets sasl.password.
    #[arg(long, value_name = "KEY=VALUE")]
    kafka_option: Vec<String>,
    /// How long to retry an unreachable broker or a missing topic at start.  [default: 30000]
    #[arg(long)]
    kafka_connect_timeout_ms: Option<u64>,
    /// Also write every output to Kafka topic PREFIX.OUTPUT: kafka://HOST:PORT[/PREFIX]
    /// (PREFIX defaults to the pipeline name).
    #[arg(long)]
    kafka_sink: Option<String>,
    /// Kafka sink messages: debezium ({"op","before","after"} per changed row) or upsert
    /// (key → row, tombstone on delete).  [default: debezium]
    #[arg(long, value_enum)]
    kafka_sink_format: Option<SinkFormatArg>,
}

impl RunArgs {
    fn as_config(&self) -> RunConfig {
        RunConfig {
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            workers: self.workers,
            epoch_ms: self.epoch_ms,
            until_idle: self.until_idle.then_some(true),
            console_format: self.console_format.map(|f| format!("{f:?}").to_lowercase()),
            console_mode: self.console_mode.map(|m| format!("{m:?}").to_lowercase()),
            console_rows: self.console_rows,
            dead_letter: self.dead_letter.clone(),
            metrics_addr: self.metrics_addr,
            warehouse: self.warehouse.clone(),
            catalog: self.catalog.clone(),
            commit_ms: self.commit_ms,
            iceberg_deletes: self.iceberg_deletes.clone(),
            kafka_group: self.kafka_group.clone(),
            kafka_start: self.kafka_start.map(|s| format!("{s:?}").to_lowercase()),
            kafka_option: self.kafka_option.clone(),
            kafka_connect_timeout_ms: self.kafka_connect_timeout_ms,
            kafka_sink: self.kafka_sink.clone(),
            kafka_sink_format: self
                .kafka_sink_format
                .map(|f| format!("{f:?}").to_lowercase()),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Table,
    Jsonl,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ModeArg {
    Update,
    Complete,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum StartArg {
    Earliest,
    Latest,
    Committed,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum SinkFormatArg {
    Debezium,
    Upsert,
}

#[derive(clap::Args, Debug)]
struct GenerateArgs {
    /// Change events to write (tombstones come on top).
    #[arg(long)]
    events: u64,
    /// Distinct order ids.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Wrap values in Kafka Connect's {"schema":…,"payload":…}.
    #[arg(long)]
    schema: bool,
    /// Decimal encoding: precise (base64), string or double.
    #[arg(long, default_value = "precise")]
    decimal_mode: String,
    /// Leave out the tombstone after each delete.
    #[arg(long)]
    no_tombstones: bool,
    /// Output file (`-` for stdout).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let huge_pages = tributary::huge_pages::configure();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    tracing::debug!(?huge_pages, "transparent huge pages");
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Pipelines => {
            for p in tributary::PIPELINES {
                println!("{:<20} {}", p.name, p.about);
            }
            Ok(())
        }
        Command::Run(args) => run_pipeline(*args),
        Command::Generate(args) => generate(args),
        Command::Bench(args) => bench(args),
        Command::Maintain(args) => maintain(args),
    }
}

fn find_pipeline(name: &str) -> anyhow::Result<&'static tributary_engine::Pipeline> {
    tributary::find(name).ok_or_else(|| {
        let names: Vec<_> = tributary::PIPELINES.iter().map(|p| p.name).collect();
        anyhow::anyhow!("no pipeline `{name}`; try one of: {}", names.join(", "))
    })
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let pipeline = find_pipeline(&args.pipeline)?;
    if args.workers == 0 || args.events == 0 || args.partitions == 0 {
        bail!("--workers, --partitions and --events must be at least 1");
    }
    let report = tributary::bench::bench(
        pipeline,
        tributary::bench::BenchConfig {
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

fn run_pipeline(args: RunArgs) -> anyhow::Result<()> {
    let mut config = args.as_config();
    if let Some(path) = &args.config {
        config = config.or(RunConfig::from_file(path)?);
    }
    let Some(name) = &config.pipeline else {
        bail!("which pipeline? give its name (see `tributary pipelines`) or `pipeline = …` in --config");
    };
    let pipeline = find_pipeline(name)?;
    let workers = config.workers.unwrap_or(1);
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    let format = match config.console_format.as_deref().unwrap_or("table") {
        "table" => ConsoleFormat::Table,
        "jsonl" => ConsoleFormat::Jsonl,
        other => bail!("console-format must be table or jsonl, not `{other}`"),
    };
    let mode = match config.console_mode.as_deref().unwrap_or("update") {
        "update" => ConsoleMode::Update,
        "complete" => ConsoleMode::Complete,
        other => bail!("console-mode must be update or complete, not `{other}`"),
    };
    let dead_letter = match &config.dead_letter {
        Some(path) => Some(shared_writer(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ))),
        None => None,
    };
    let warehouse = config
        .warehouse
        .clone()
        .unwrap_or_else(|| PathBuf::from("warehouse"));
    let mut iceberg =
        IcebergOptions::parse(&warehouse.to_string_lossy(), config.catalog.as_deref())?;
    if let Some(ms) = config.commit_ms {
        iceberg.commit_interval = Duration::from_millis(ms);
    }
    if let Some(deletes) = &config.iceberg_deletes {
        iceberg.deletes = DeleteMode::parse(deletes)?;
    }
    let (source, kafka_sink) = kafka_settings(&config, name)?;
    let options = RunOptions {
        source,
        kafka_sink,
        iceberg,
        workers,
        epoch: Duration::from_millis(config.epoch_ms.unwrap_or(1000)),
        until_idle: config.until_idle.unwrap_or(false),
        console: ConsoleOptions {
            format,
            mode,
            max_rows: config.console_rows.unwrap_or(20),
            writer: shared_writer(std::io::stdout()),
        },
        dead_letter,
        metrics_addr: config.metrics_addr,
        shutdown: Some(shutdown_on_signals()?),
    };
    run(pipeline, options)?;
    Ok(())
}

/// The source (with its Kafka client settings filled in) and the Kafka sink, if any.
fn kafka_settings(
    config: &RunConfig,
    pipeline: &str,
) -> anyhow::Result<(SourceSpec, Option<KafkaSinkSpec>)> {
    let client = KafkaClientOptions::from_env_and_flags(
        &config.kafka_option,
        config
            .kafka_connect_timeout_ms
            .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis),
    )?;
    let mut source = SourceSpec::parse(config.source.as_deref().unwrap_or("generator"))?;
    if let SourceSpec::Kafka(kafka) = &mut source {
        kafka.group = config
            .kafka_group
            .clone()
            .unwrap_or_else(|| format!("tributary-{pipeline}"));
        let start = config.kafka_start.as_deref().unwrap_or("earliest");
        kafka.start = StartFrom::parse(start).with_context(|| {
            format!("kafka-start must be earliest, latest or committed, not `{start}`")
        })?;
        kafka.client = client.clone();
    }
    if let SourceSpec::Postgres(postgres) = &mut source {
        // One slot per pipeline unless the URL names one: slots must not be shared.
        postgres.default_slot_for(pipeline);
    }
    let sink = match &config.kafka_sink {
        Some(spec) => {
            let mut sink = KafkaSinkSpec::parse(spec)?;
            sink.prefix.get_or_insert_with(|| pipeline.to_owned());
            let format = config.kafka_sink_format.as_deref().unwrap_or("debezium");
            sink.format = KafkaSinkFormat::parse(format).with_context(|| {
                format!("kafka-sink-format must be debezium or upsert, not `{format}`")
            })?;
            sink.client = client;
            Some(sink)
        }
        None => None,
    };
    Ok((source, sink))
}

/// SIGINT/SIGTERM set the returned flag: the run finishes its open epoch, every sink writes it,
/// and the process exits 0. A second signal exits at once with status 130.
fn shutdown_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
    }
    Ok(flag)
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let Some(decimal_mode) = DecimalMode::parse(&args.decimal_mode) else {
        bail!("--decimal-mode must be precise, string or double");
    };
    let config = GeneratorConfig {
        events: Some(args.events),
        keys: args.keys.max(1),
        seed: args.seed,
        schema: args.schema,
        decimal_mode,
        tombstones: !args.no_tombstones,
    };
    let out: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            File::create(&args.out)
                .with_context(|| format!("cannot create {}", args.out.display()))?,
        )
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut workload = OrdersWorkload::new(config);
    let mut line = String::new();
    while workload.next_line(&mut line) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
