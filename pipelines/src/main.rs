//! The `tributary` command line: list, run and feed pipelines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use tributary_engine::sources::generator::{DecimalMode, GeneratorConfig, OrdersWorkload};
use tributary_engine::sources::SourceSpec;
use tributary_engine::{
    run, shared_writer, ConsoleFormat, ConsoleMode, ConsoleOptions, RunOptions,
};

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
    Run(RunArgs),
    /// Write the deterministic orders workload as Debezium JSONL.
    Generate(GenerateArgs),
    /// Measure a pipeline on the orders workload pre-encoded in memory.
    Bench(BenchArgs),
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
    /// Pipeline to run.
    #[arg(long, default_value = "op-counts")]
    pipeline: String,
    /// Epoch interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    epoch_ms: u64,
    /// Schema-wrapped envelopes instead of plain ones.
    #[arg(long)]
    schema: bool,
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
    /// Pipeline name (see `tributary pipelines`).
    pipeline: String,
    /// file:PATH | generator[:EVENTS]
    #[arg(long, default_value = "generator")]
    source: String,
    /// Timely worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Close epochs at most this often, in milliseconds (only at transaction boundaries).
    #[arg(long, default_value_t = 1000)]
    epoch_ms: u64,
    /// Stop once the source is drained and every sink has written.
    #[arg(long)]
    until_idle: bool,
    /// How the console prints.
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    console_format: FormatArg,
    /// Changed rows per batch (update) or the whole result (complete).
    #[arg(long, value_enum, default_value_t = ModeArg::Update)]
    console_mode: ModeArg,
    /// Most rows a console table shows per batch.
    #[arg(long, default_value_t = 20)]
    console_rows: usize,
    /// Write dead letters (reason, source position, raw payload) to this JSONL file.
    #[arg(long)]
    dead_letter: Option<PathBuf>,
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
        Command::Run(args) => run_pipeline(args),
        Command::Generate(args) => generate(args),
        Command::Bench(args) => bench(args),
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
    if args.workers == 0 || args.events == 0 {
        bail!("--workers and --events must be at least 1");
    }
    let report = tributary::bench::bench(
        pipeline,
        tributary::bench::BenchConfig {
            events: args.events,
            keys: args.keys.max(1),
            workers: args.workers,
            epoch: Duration::from_millis(args.epoch_ms),
            schema: args.schema,
        },
    )?;
    match args.format {
        ReportFormat::Text => print!("{}", report.text()),
        ReportFormat::Json => println!("{}", report.json()),
    }
    Ok(())
}

fn run_pipeline(args: RunArgs) -> anyhow::Result<()> {
    let Some(pipeline) = tributary::find(&args.pipeline) else {
        let names: Vec<_> = tributary::PIPELINES.iter().map(|p| p.name).collect();
        bail!(
            "no pipeline `{}`; try one of: {}",
            args.pipeline,
            names.join(", ")
        );
    };
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let dead_letter = match &args.dead_letter {
        Some(path) => Some(shared_writer(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ))),
        None => None,
    };
    let options = RunOptions {
        source: SourceSpec::parse(&args.source)?,
        workers: args.workers,
        epoch: Duration::from_millis(args.epoch_ms),
        until_idle: args.until_idle,
        console: ConsoleOptions {
            format: match args.console_format {
                FormatArg::Table => ConsoleFormat::Table,
                FormatArg::Jsonl => ConsoleFormat::Jsonl,
            },
            mode: match args.console_mode {
                ModeArg::Update => ConsoleMode::Update,
                ModeArg::Complete => ConsoleMode::Complete,
            },
            max_rows: args.console_rows,
            writer: shared_writer(std::io::stdout()),
        },
        dead_letter,
    };
    run(pipeline, options)?;
    Ok(())
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
