//! Table maintenance by hand (`tributary maintain`): compaction (rewrite the live rows into
//! one file per partition, folding deletes, as a `replace` snapshot; stop the writing pipeline
//! first, or it fails at its next commit and must be restarted), snapshot expiry (safe while
//! the pipeline runs: a commit that races it is re-applied on top) and orphan-file removal.
//! Compaction and expiry keep the current snapshot's `tributary.*` summary, so the pipeline
//! still resumes exactly; both retry when a concurrent commit wins the race.

use std::time::Duration;

use super::commit::{now_ms, Changes};
use super::expire::{Expired, Retention};
use super::orphans::Orphans;
use super::table::IcebergTable;
use super::{IcebergError, IcebergOptions, TableIdent};

/// What compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Live rows rewritten.
    pub rows: u64,
    /// Data files before.
    pub data_files_before: u64,
    /// Position-delete files before.
    pub delete_files_before: u64,
    /// Data files written (one per partition).
    pub data_files_after: u64,
}

fn open(options: &IcebergOptions, table: &str) -> Result<IcebergTable, IcebergError> {
    let ident = TableIdent::parse(table)?;
    let (catalog, io, _) = options.open()?;
    IcebergTable::open_existing(catalog, io, ident, &options.properties)
}

/// Rewrites `table`'s live rows into one data file as a `replace` snapshot without deletes.
pub fn compact(options: &IcebergOptions, table: &str) -> Result<Compacted, IcebergError> {
    retrying_conflicts(|| compact_once(options, table))
}

fn compact_once(options: &IcebergOptions, table: &str) -> Result<Compacted, IcebergError> {
    let mut table = open(options, table)?;
    let Some(current) = table.metadata().current_snapshot() else {
        return Ok(Compacted::default());
    };
    let summary = &current.summary().additional_properties;
    let count = |key: &str| summary.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    let before = (count("total-data-files"), count("total-delete-files"));
    let carried = table.unchanged_state_summary();
    let rows: Vec<_> = table.scan()?.into_iter().map(|stored| stored.row).collect();
    let removed = table.live_file_paths()?;
    let mut compacted = Compacted {
        rows: rows.len() as u64,
        data_files_before: before.0,
        delete_files_before: before.1,
        data_files_after: 0,
    };
    let outcome = table.commit(
        Changes {
            rows,
            deletes: Vec::new(),
            equality_deletes: Vec::new(),
            summary: carried,
            removed,
        },
        "compacted",
    )?;
    compacted.data_files_after = outcome.data_files.len() as u64;
    tracing::info!(table = %table.ident, rows = compacted.rows, "compacted iceberg table");
    Ok(compacted)
}

/// Removes snapshots older than `older_than` from `table`'s metadata, as the table's retention
/// allows (never the current one, which carries the resume positions, nor the newest
/// `history.expire.min-snapshots-to-keep`, nor one a tag or branch needs), and deletes the
/// files only they referenced.
pub fn expire(
    options: &IcebergOptions,
    table: &str,
    older_than: Duration,
) -> Result<Expired, IcebergError> {
    retrying_conflicts(|| expire_once(options, table, older_than))
}

/// Deletes the files under `table` that nothing references and that are older than
/// `older_than` (a local warehouse only).
pub fn remove_orphans(
    options: &IcebergOptions,
    table: &str,
    older_than: Duration,
) -> Result<Orphans, IcebergError> {
    open(options, table)?.remove_orphans(older_than)
}

/// Runs `attempt` again (from a fresh read of the table) when a concurrent commit won the
/// catalog swap.
fn retrying_conflicts<T>(
    mut attempt: impl FnMut() -> Result<T, IcebergError>,
) -> Result<T, IcebergError> {
    let mut tries = 1;
    loop {
        match attempt() {
            Err(IcebergError::Conflict(table) | IcebergError::ConcurrentSnapshot { table, .. })
                if tries < MAINTENANCE_ATTEMPTS =>
            {
                tries += 1;
                tracing::info!(%table, "a concurrent commit won; maintaining the table as it is now");
            }
            outcome => return outcome,
        }
    }
}

/// Attempts per maintenance command when concurrent commits keep winning.
const MAINTENANCE_ATTEMPTS: u32 = 20;

fn expire_once(
    options: &IcebergOptions,
    table: &str,
    older_than: Duration,
) -> Result<Expired, IcebergError> {
    let mut table = open(options, table)?;
    let retention = Retention {
        max_age_ms: older_than.as_millis() as i64,
        ..table.retention()
    };
    table.expire_snapshots(retention, now_ms())
}
