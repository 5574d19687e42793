//! `tributary generate`: the deterministic orders workload as Debezium JSONL.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};

use tributary_engine::sources::generator::{DecimalMode, GeneratorConfig, OrdersWorkload};

/// `tributary generate` flags.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
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

/// Writes the workload.
pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
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
