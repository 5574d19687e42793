//! `tributary maintain`: compaction, snapshot expiry and orphan-file removal of an Iceberg
//! table.

use std::time::Duration;

use clap::Subcommand;

use tributary_engine::IcebergOptions;

/// `tributary maintain` flags.
#[derive(clap::Args, Debug)]
pub struct MaintainArgs {
    #[command(subcommand)]
    task: MaintainTask,
    /// Where the Iceberg tables live: a directory or s3://BUCKET/PREFIX.
    #[arg(long, global = true, default_value = "warehouse")]
    warehouse: String,
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
    /// Drop snapshots older than a duration from the metadata (never the current one, the
    /// newest history.expire.min-snapshots-to-keep, or one a tag or branch needs) and delete
    /// the files only they referenced.
    Expire {
        /// The table, `namespace.table`.
        table: String,
        /// Age, e.g. `30s`, `15m`, `12h`, `7d`.
        #[arg(long, value_parser = parse_age)]
        older_than: Duration,
    },
    /// Delete files under the table that no snapshot, manifest or metadata version names
    /// (left by killed commits); a local warehouse only.
    RemoveOrphans {
        /// The table, `namespace.table`.
        table: String,
        /// Only files older than this (commits in flight keep theirs), e.g. `1h`, `3d`.
        #[arg(long, value_parser = parse_age, default_value = "3d")]
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

/// Runs the maintenance task.
pub fn maintain(args: MaintainArgs) -> anyhow::Result<()> {
    let options = IcebergOptions::parse(&args.warehouse, args.catalog.as_deref())?;
    match args.task {
        MaintainTask::Compact { table } => {
            let done = tributary_engine::sinks::iceberg::compact(&options, &table)?;
            let files = match done.data_files_after {
                1 => "1 data file".to_owned(),
                n => format!("{n} data files"),
            };
            println!(
                "compacted {table}: {} live rows in {files} (was {} data files, {} delete files)",
                done.rows, done.data_files_before, done.delete_files_before
            );
        }
        MaintainTask::Expire { table, older_than } => {
            let expired = tributary_engine::sinks::iceberg::expire(&options, &table, older_than)?;
            println!(
                "expired {} snapshots of {table}, deleted {} files only they referenced",
                expired.snapshots, expired.files
            );
        }
        MaintainTask::RemoveOrphans { table, older_than } => {
            let orphans =
                tributary_engine::sinks::iceberg::remove_orphans(&options, &table, older_than)?;
            println!(
                "deleted {} orphan files of {table} ({} files listed)",
                orphans.deleted, orphans.listed
            );
        }
    }
    Ok(())
}
