//! `tributary tables`: each table of a catalog with its current snapshot and epoch, and with
//! `--consistent` the snapshot of each that holds the state at one epoch for all of a
//! pipeline's tables (a transaction-consistent view of a whole database).

use clap::ValueEnum;
use serde_json::json;

use tributary_engine::sinks::iceberg::{consistent_cuts, tables, TableInfo};
use tributary_engine::IcebergOptions;
use tributary_operators::time::format_timestamp_micros;

/// `tributary tables` flags.
#[derive(clap::Args, Debug)]
pub struct TablesArgs {
    /// Where the Iceberg tables live: a directory or s3://BUCKET/PREFIX.
    #[arg(long, default_value = "warehouse")]
    warehouse: String,
    /// Iceberg catalog: sqlite:PATH | postgres://USER@HOST[:PORT]/DB |
    /// http[s]://HOST[:PORT][/PATH] (REST).  [default: sqlite:<warehouse>/catalog.db]
    #[arg(long)]
    catalog: Option<String>,
    /// Also pick, per pipeline, the snapshot of each table that holds its state at the newest
    /// epoch every table holds exactly.
    #[arg(long)]
    consistent: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TablesFormat::Text)]
    format: TablesFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum TablesFormat {
    Text,
    Json,
}

/// Lists the tables (and the consistent cuts).
pub fn list(args: TablesArgs) -> anyhow::Result<()> {
    let options = IcebergOptions::parse(&args.warehouse, args.catalog.as_deref())?;
    let tables = tables(&options)?;
    let cuts = if args.consistent {
        consistent_cuts(&tables)
    } else {
        Vec::new()
    };
    match args.format {
        TablesFormat::Json => {
            let current: Vec<_> = tables.iter().map(current_json).collect();
            let mut out = json!({ "tables": current });
            if args.consistent {
                out["consistent"] = serde_json::to_value(&cuts)?;
            }
            println!("{out}");
        }
        TablesFormat::Text => {
            println!(
                "{:<40} {:>20} {:>8}  {:<20} COMMITTED (UTC)",
                "TABLE", "SNAPSHOT", "EPOCH", "PIPELINE"
            );
            for table in &tables {
                let current = table.current();
                println!(
                    "{:<40} {:>20} {:>8}  {:<20} {}",
                    table.table,
                    current.map_or("-".into(), |s| s.id.to_string()),
                    current
                        .and_then(|s| s.epoch)
                        .map_or("-".into(), |e| e.to_string()),
                    current.and_then(|s| s.pipeline.as_deref()).unwrap_or("-"),
                    current.map_or("-".into(), |s| {
                        format_timestamp_micros(s.timestamp_ms.saturating_mul(1000))
                    }),
                );
            }
            if args.consistent && cuts.is_empty() {
                println!("\nno consistent cut: no pipeline's tables share an epoch yet");
            }
            for cut in &cuts {
                println!(
                    "\nconsistent cut of {} at epoch {}:",
                    cut.pipeline, cut.epoch
                );
                for (table, snapshot) in &cut.snapshots {
                    match snapshot {
                        Some(id) => println!("  {table:<40} snapshot {id}"),
                        None => println!("  {table:<40} empty (no snapshot yet)"),
                    }
                }
            }
        }
    }
    Ok(())
}

fn current_json(table: &TableInfo) -> serde_json::Value {
    let current = table.current();
    json!({
        "table": table.table,
        "snapshot": current.map(|s| s.id),
        "epoch": current.and_then(|s| s.epoch),
        "pipeline": current.and_then(|s| s.pipeline.clone()),
        "timestamp_ms": current.map(|s| s.timestamp_ms),
        "source_positions": current
            .and_then(|s| s.positions.as_deref())
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()),
        "source_progress": current
            .and_then(|s| s.progress.as_deref())
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()),
        "backfill": current.and_then(|s| s.backfill.clone()),
    })
}
