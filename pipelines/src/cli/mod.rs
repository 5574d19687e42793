//! The `tributary` command line, as a library: [`main`] gives any crate the whole CLI (`run`,
//! `pipelines`, `generate`, `bench`, `maintain`, `tables`, `tributary.toml`, signals) over its
//! own pipelines.
//!
//! ```no_run
//! use tributary::cli;
//! use tributary_engine::{BuildError, Pipeline, PipelineBuilder};
//!
//! fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
//!     // declare tables and outputs here
//!     Ok(())
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let mut pipelines = tributary::pipelines();
//!     pipelines.push(Pipeline::new("mine", "what it computes", build));
//!     cli::main(&pipelines)
//! }
//! ```

mod bench;
mod generate;
mod maintain;
mod run;
mod tables;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};

use tributary_engine::Pipeline;

pub use run::{ConfigError, RunConfig};

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
    Run(Box<RunCommand>),
    /// Write the deterministic orders workload as Debezium JSONL.
    Generate(generate::GenerateArgs),
    /// Measure a pipeline on the orders workload pre-encoded in memory.
    Bench(bench::BenchArgs),
    /// Maintain an Iceberg table (run while the pipeline writing it is stopped).
    Maintain(maintain::MaintainArgs),
    /// List the Iceberg tables with their current snapshot and epoch (--consistent: a
    /// transaction-consistent cut across each pipeline's tables).
    Tables(tables::TablesArgs),
}

#[derive(clap::Args, Debug)]
struct RunCommand {
    /// A tributary.toml with any of these options (keys are the flag names without `--`);
    /// flags given here win.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: RunConfig,
}

/// Runs the command line of the process over `pipelines`: sets up logging, parses the
/// arguments, runs the command, and returns the exit code (a one-line `error: …` on failure).
pub fn main(pipelines: &[Pipeline]) -> ExitCode {
    main_with_args(std::env::args_os(), pipelines)
}

/// [`main`] with explicit arguments (the first is the program name).
pub fn main_with_args(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    pipelines: &[Pipeline],
) -> ExitCode {
    let huge_pages = crate::huge_pages::configure();
    let cli = Cli::parse_from(args);
    // A second call in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    tracing::debug!(?huge_pages, "transparent huge pages");
    match dispatch(cli.command, pipelines) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command, pipelines: &[Pipeline]) -> anyhow::Result<()> {
    match command {
        Command::Pipelines => {
            for p in pipelines {
                println!("{:<20} {}", p.name(), p.about());
            }
            Ok(())
        }
        Command::Run(command) => run_pipeline(*command, pipelines),
        Command::Generate(args) => generate::generate(args),
        Command::Bench(args) => bench::bench(args, pipelines),
        Command::Maintain(args) => maintain::maintain(args),
        Command::Tables(args) => tables::list(args),
    }
}

fn find_pipeline<'p>(pipelines: &'p [Pipeline], name: &str) -> anyhow::Result<&'p Pipeline> {
    pipelines.iter().find(|p| p.name() == name).ok_or_else(|| {
        let names: Vec<_> = pipelines.iter().map(Pipeline::name).collect();
        anyhow::anyhow!("no pipeline `{name}`; try one of: {}", names.join(", "))
    })
}

fn run_pipeline(command: RunCommand, pipelines: &[Pipeline]) -> anyhow::Result<()> {
    let mut settings = command.settings;
    if let Some(path) = &command.config {
        settings = settings.over(RunConfig::from_file(path)?)?;
    }
    let Some(name) = &settings.pipeline else {
        bail!("which pipeline? give its name (see `tributary pipelines`) or `pipeline = …` in --config");
    };
    let pipeline = find_pipeline(pipelines, name)?;
    tributary_engine::run(pipeline, settings.options(pipeline)?)?;
    Ok(())
}
