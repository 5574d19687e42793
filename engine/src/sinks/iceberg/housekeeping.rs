//! Table maintenance inside the running pipeline, on the committer thread between commits:
//! snapshot expiry by the table's retention (at most once a second, when a snapshot is due),
//! compaction of small files (planned every few commits), and removal of the files killed
//! commits left (once per run, in a local warehouse). A failed step is logged and
//! tried again later, except when it finds another writer's snapshot on `main` (the writer's
//! row positions may no longer hold: the run stops, as a commit would) or the table is not as
//! the writer knows it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::commit::now_ms;
use super::rewrite::{Moved, Rewrite};
use super::writer::{TableWriter, WriteMode};
use super::{DeleteMode, IcebergError};
use crate::metrics::Metrics;

/// Expiry runs at most this often.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// Compaction is planned every this many commits.
const PLAN_EVERY_COMMITS: u32 = 4;
/// Unreferenced files at least this old are what killed commits left (younger ones may be a
/// `tributary maintain compact` in flight); removed after a run's first commit.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// When maintenance last ran.
#[derive(Debug)]
pub struct Upkeep {
    last_expiry: Instant,
    commits_since_plan: u32,
    orphans_removed: bool,
    /// Indexes of the writer's compacted files, to reuse.
    pub(super) free_files: Vec<u32>,
}

impl Default for Upkeep {
    fn default() -> Self {
        Upkeep {
            last_expiry: Instant::now(),
            commits_since_plan: 0,
            orphans_removed: false,
            free_files: Vec::new(),
        }
    }
}

impl TableWriter {
    /// Runs the maintenance that is due after a commit.
    pub fn maintain(&mut self, metrics: &Metrics) -> Result<(), IcebergError> {
        if !self.upkeep.orphans_removed {
            self.upkeep.orphans_removed = true;
            match self.table.remove_orphans(ORPHAN_AGE) {
                Ok(orphans) => Metrics::add(&metrics.iceberg_files_deleted, orphans.deleted as u64),
                Err(IcebergError::Config(_)) => {}
                Err(error) => {
                    tracing::warn!(table = %self.table.ident, %error, "removing orphan files failed")
                }
            }
        }
        self.upkeep.commits_since_plan += 1;
        if self.upkeep.commits_since_plan >= PLAN_EVERY_COMMITS {
            self.upkeep.commits_since_plan = 0;
            match self.compact_small_files() {
                Ok(files) => Metrics::add(&metrics.iceberg_files_compacted, files),
                Err(
                    error @ (IcebergError::ConcurrentSnapshot { .. }
                    | IcebergError::Inconsistent(_)),
                ) => return Err(error),
                Err(error) => {
                    tracing::warn!(table = %self.table.ident, %error, "compaction failed; trying again later")
                }
            }
        }
        if self.upkeep.last_expiry.elapsed() >= EXPIRE_EVERY {
            self.upkeep.last_expiry = Instant::now();
            let retention = self.table.retention();
            match self.table.expire_snapshots(retention, now_ms()) {
                Ok(expired) => {
                    Metrics::add(&metrics.iceberg_snapshots_expired, expired.snapshots as u64);
                    Metrics::add(&metrics.iceberg_files_deleted, expired.files as u64);
                }
                Err(error @ IcebergError::ConcurrentSnapshot { .. }) => return Err(error),
                Err(error) => {
                    tracing::warn!(table = %self.table.ident, %error, "snapshot expiry failed; trying again later")
                }
            }
        }
        Ok(())
    }

    /// Rewrites what the table's small files call for (see `rewrite.rs`); returns how
    /// many files were rewritten.
    pub fn compact_small_files(&mut self) -> Result<u64, IcebergError> {
        let mut files = 0;
        for rewrite in self.table.plan_rewrites()? {
            if self.rewrite(&rewrite)? {
                files += (rewrite.data.len() + rewrite.deletes.len()) as u64;
            }
        }
        Ok(files)
    }

    /// Rewrites the live rows of `rewrite`'s files as one file and moves the writer's row
    /// positions there. With position deletes the writer knows the live rows of its files;
    /// it skips a rewrite of a file it does not know (another writer's since this run
    /// started): false. Otherwise the files' delete files say which rows are live.
    fn rewrite(&mut self, rewrite: &Rewrite) -> Result<bool, IcebergError> {
        let by_position = self.delete_mode == DeleteMode::Position
            && matches!(self.mode, WriteMode::Upsert { .. });
        let known: HashMap<&str, u32> = self
            .files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((&*f.as_ref()?.path, i as u32)))
            .collect();
        let inputs: Vec<Option<u32>> = rewrite
            .data
            .iter()
            .map(|(path, _)| known.get(path.as_str()).copied())
            .collect();
        let mut rows = Vec::new();
        let mut moved = Moved {
            inputs: HashMap::new(),
        };
        if !by_position {
            rows = self.table.live_rows(rewrite)?;
        } else if inputs.iter().any(Option::is_none) {
            tracing::debug!(table = %self.table.ident, "a file to compact is not this run's; left for later");
            return Ok(false);
        } else {
            // Live positions of each input, from the writer's index of stored rows.
            let wanted: HashSet<u32> = inputs.iter().flatten().copied().collect();
            let mut live: HashMap<u32, Vec<u64>> = HashMap::new();
            for (file, position) in self.stored.values_mut() {
                if wanted.contains(file) {
                    live.entry(*file).or_default().push(*position);
                }
            }
            for ((path, _), index) in rewrite.data.iter().zip(inputs.iter().flatten()) {
                let mut positions = live.remove(index).unwrap_or_default();
                positions.sort_unstable();
                let first = rows.len();
                rows.extend(self.table.rows_of_file(path, Some(&positions))?);
                if positions.len() != rows.len() - first {
                    return Err(IcebergError::Inconsistent(format!(
                        "table {}: {path} has fewer rows than the writer stores in it",
                        self.table.ident
                    )));
                }
                moved.inputs.insert(*index, (positions, first));
            }
        }
        let outcome = self.table.commit_rewrite(rewrite, rows)?;
        for index in inputs.into_iter().flatten() {
            self.files[index as usize] = None;
            self.upkeep.free_files.push(index);
        }
        let indexes = self.add_files(outcome.data_files);
        if by_position {
            for place in self.stored.values_mut() {
                if let Some(row) = moved.row_of(place.0, place.1) {
                    let (file, position) = outcome.row_locations[row];
                    *place = (indexes[file], position);
                }
            }
        }
        Ok(true)
    }
}
