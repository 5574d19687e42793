//! The table writer: turns consolidated per-epoch changes into the rows to append and the rows
//! to delete — by position (keeping `key → (data file, position)` for the rows it holds) or by
//! key (equality deletes, no index) — and commits them with the epoch and source positions in
//! the snapshot summary.

use std::collections::HashMap;
use std::sync::Arc;

use differential_dataflow::consolidation::consolidate;

use tributary_operators::row::prefetched;
use tributary_operators::{Diff, Key, Row, Time};

use super::commit::Changes;
use super::housekeeping::Upkeep;
use super::keyed::{KeyHash, KeyedSlots};
use super::read::DataFileRef;
use super::table::{
    Committed, IcebergTable, SUMMARY_BACKFILL, SUMMARY_EPOCH, SUMMARY_FIRST_EPOCH,
    SUMMARY_PIPELINE, SUMMARY_POSITIONS, SUMMARY_PROGRESS,
};
use super::{DeleteMode, IcebergError};
use crate::positions::{StreamPositions, StreamProgress};

/// How a table takes changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// One row per key: an update deletes the old row by position and appends the new one.
    Upsert {
        /// Key columns of the rows.
        key: Vec<usize>,
    },
    /// Changes by key without state (a replica that keeps no rows in memory): each changed
    /// key's retraction, a row holding only the key, and its new row; deleted by equality
    /// deletes, and nothing read back at start.
    ByKey {
        /// Key columns of the rows.
        key: Vec<usize>,
    },
    /// Every inserted row is appended; retractions are not expected (change logs).
    Append,
}

/// What one commit did, for logs and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitStats {
    /// Rows appended.
    pub rows: u64,
    /// Rows deleted (by position, or by key with equality deletes).
    pub deletes: u64,
}

/// Writes one table.
#[derive(Debug)]
pub struct TableWriter {
    pub(super) table: IcebergTable,
    pub(super) mode: WriteMode,
    pipeline: String,
    /// The data files of the stored rows; compacted ones are `None`, their indexes free.
    pub(super) files: Vec<Option<Arc<DataFileRef>>>,
    /// With position deletes, the live rows of the table: key → (file index, position).
    pub(super) stored: KeyedSlots<(u32, u64)>,
    /// Upserted rows to append at the next commit, by key.
    pending: KeyedSlots<Row>,
    /// Appended rows (no key) for the next commit.
    appended: Vec<Row>,
    deletes: Vec<(u32, u64)>,
    /// With equality deletes: the stored rows retracted since the last commit.
    deleted_rows: Vec<Row>,
    pub(super) delete_mode: DeleteMode,
    committed: Committed,
    /// When maintenance last ran, and commits since.
    pub(super) upkeep: Upkeep,
}

impl TableWriter {
    /// Takes over `table`; for upserts, reads its live rows (returned, so the dataflow state
    /// can be rebuilt from them) and where they are stored.
    pub fn recover(
        table: IcebergTable,
        mode: WriteMode,
        delete_mode: DeleteMode,
        pipeline: &str,
    ) -> Result<(Self, Vec<Row>), IcebergError> {
        let committed = table.committed(pipeline)?;
        let mut writer = TableWriter {
            table,
            mode,
            pipeline: pipeline.to_owned(),
            files: Vec::new(),
            stored: KeyedSlots::default(),
            pending: KeyedSlots::default(),
            appended: Vec::new(),
            deletes: Vec::new(),
            deleted_rows: Vec::new(),
            delete_mode,
            committed,
            upkeep: Upkeep::default(),
        };
        let WriteMode::Upsert { key } = &writer.mode else {
            return Ok((writer, Vec::new()));
        };
        let key = key.clone();
        let mut file_ids: HashMap<Arc<str>, u32> = HashMap::new();
        let mut seen = rustc_hash::FxHashSet::default();
        let mut rows = Vec::new();
        for stored in writer.table.scan()? {
            let file = *file_ids
                .entry(Arc::clone(&stored.file.path))
                .or_insert_with(|| {
                    writer.files.push(Some(Arc::clone(&stored.file)));
                    writer.files.len() as u32 - 1
                });
            let row_key = Key::of(&stored.row, &key);
            let duplicate = match delete_mode {
                DeleteMode::Position => writer
                    .stored
                    .insert(KeyHash::of(&row_key), row_key, (file, stored.position))
                    .is_err(),
                DeleteMode::Equality => !seen.insert(row_key),
            };
            if duplicate {
                return Err(IcebergError::Inconsistent(format!(
                    "table {} holds two live rows with the key of {:?}",
                    writer.table.ident, stored.row
                )));
            }
            rows.push(stored.row);
        }
        Ok((writer, rows))
    }

    /// The table.
    pub fn table(&self) -> &IcebergTable {
        &self.table
    }

    /// The epoch and positions of the last commit (of this or an earlier run).
    pub fn committed(&self) -> &Committed {
        &self.committed
    }

    /// Applies one epoch's changes (not consolidated: the dataflow hands them over as they
    /// are, and they are consolidated here, off the worker).
    pub fn apply(&mut self, mut updates: Vec<(Row, Diff)>) -> Result<(), IcebergError> {
        let key_columns = match &self.mode {
            WriteMode::Append => {
                consolidate(&mut updates);
                for (row, diff) in updates {
                    for _ in 0..diff.max(0) {
                        self.appended.push(row.clone());
                    }
                }
                return Ok(());
            }
            WriteMode::Upsert { key } | WriteMode::ByKey { key } => key.clone(),
        };
        // Each row is read once, for its key (and compared with the one before when their keys
        // agree, as an update's two halves usually arrive); the updates are then taken key by
        // key, in the order of their keys' hashes, so that an update's halves meet.
        let mut batch: Vec<Update> = Vec::with_capacity(updates.len());
        let mut order = Vec::with_capacity(updates.len());
        // The rows were made (or retracted from the state) an epoch ago and have left the caches.
        for (row, diff) in prefetched(updates, |(row, _)| row) {
            let key = Key::of(&row, &key_columns);
            let same_as_previous = batch
                .last()
                .is_some_and(|previous| previous.key == key && previous.row.as_ref() == Some(&row));
            order.push((KeyHash::of(&key), batch.len()));
            batch.push(Update {
                key,
                row: Some(row),
                diff,
                same_as_previous,
            });
        }
        order.sort_unstable();
        let mut group = Vec::new();
        for same_hash in order.chunk_by(|a, b| a.0 == b.0) {
            let hash = same_hash[0].0;
            let update = |index: usize| batch.get(index);
            match *same_hash {
                [(_, index)] => {
                    let Some((key, row, diff)) = take(&mut batch, index) else {
                        continue;
                    };
                    if diff > 0 {
                        self.insert(hash, key, row)?;
                    } else if diff < 0 {
                        if let Err(row) = self.retract(hash, &key, row) {
                            return Err(self.unmatched(&row));
                        }
                    }
                }
                [(_, first), (_, second)]
                    if update(first).zip(update(second)).is_some_and(|(a, b)| {
                        a.key == b.key && matches!((a.diff, b.diff), (-1, 1) | (1, -1))
                    }) =>
                {
                    let adjacent = update(second)
                        .filter(|_| second == first + 1)
                        .map(|b| b.same_as_previous);
                    let (Some((key, a, diff)), Some((_, b, _))) =
                        (take(&mut batch, first), take(&mut batch, second))
                    else {
                        continue;
                    };
                    let (old, new) = if diff < 0 { (a, b) } else { (b, a) };
                    if adjacent.unwrap_or_else(|| old == new) {
                        // `(row, -1)` and `(row, +1)` in one epoch: nothing changes.
                        continue;
                    }
                    self.replace(hash, key, old, new)?;
                }
                _ => {
                    group.clear();
                    group.extend(
                        same_hash
                            .iter()
                            .filter_map(|&(_, index)| take(&mut batch, index))
                            .map(|(key, row, diff)| ((key, row), diff)),
                    );
                    self.apply_group(hash, &mut group)?;
                }
            }
        }
        Ok(())
    }

    /// The general case of [`apply`](Self::apply): a group of updates whose keys share a hash,
    /// other than one retraction, one insertion, or one of each for one key.
    fn apply_group(
        &mut self,
        hash: KeyHash,
        group: &mut Vec<((Key, Row), Diff)>,
    ) -> Result<(), IcebergError> {
        consolidate(group);
        // Retractions first: an update is (old, -1) then (new, +1) for one key.
        group.sort_by_key(|(_, diff)| *diff > 0);
        for ((key, row), diff) in group.drain(..) {
            if diff < 0 {
                if let Err(row) = self.retract(hash, &key, row) {
                    return Err(self.unmatched(&row));
                }
            } else {
                self.insert(hash, key, row)?;
            }
        }
        Ok(())
    }

    /// Removes the row of `key`, pending or stored; gives `row` back when there is none.
    fn retract(&mut self, hash: KeyHash, key: &Key, row: Row) -> Result<(), Row> {
        if self.pending.remove(hash, key).is_some() {
            // Appended and retracted between two commits.
        } else if self.delete_mode == DeleteMode::Equality {
            // Deleted by key: rows of earlier commits only (the sequence-number rule).
            self.deleted_rows.push(row);
        } else if let Some(place) = self.stored.remove(hash, key) {
            self.deletes.push(place);
        } else {
            return Err(row);
        }
        Ok(())
    }

    /// Adds `row` under `key`, which must hold no row.
    fn insert(&mut self, hash: KeyHash, key: Key, row: Row) -> Result<(), IcebergError> {
        let added = if self.stored.contains(hash, &key) {
            Err(row)
        } else {
            self.pending.insert(hash, key, row)
        };
        added.map_err(|row| {
            IcebergError::Inconsistent(format!(
                "table {}: {row:?} arrives while its key is still stored",
                self.table.ident
            ))
        })
    }

    /// Replaces the row of `key` (`old`, which differs from `new`) with `new`: in place when
    /// it is pending.
    fn replace(&mut self, hash: KeyHash, key: Key, old: Row, new: Row) -> Result<(), IcebergError> {
        let Err(new) = self.pending.replace(hash, &key, new) else {
            return Ok(());
        };
        match self.retract(hash, &key, old) {
            Ok(()) => self.insert(hash, key, new),
            Err(old) => Err(self.unmatched(&old)),
        }
    }

    fn unmatched(&self, row: &Row) -> IcebergError {
        IcebergError::Inconsistent(format!(
            "table {}: a retraction of {row:?} matches no stored row",
            self.table.ident
        ))
    }

    /// Whether there is anything to commit.
    pub fn has_changes(&self) -> bool {
        !self.deletes.is_empty()
            || !self.deleted_rows.is_empty()
            || !self.pending.is_empty()
            || !self.appended.is_empty()
    }

    /// Commits the applied changes as one snapshot covering epochs up to `epoch` and the
    /// source `positions` (with the sources' `progress` there); `first_changed` is the first epoch whose changes it holds (recorded
    /// for readers that look for consistent cuts across tables). When nothing changed, nothing
    /// happens unless `even_if_unchanged` and the positions moved: then a snapshot without
    /// files records them (an idle table keeps up, so that restarts need not replay for it
    /// and sources may be acknowledged).
    pub fn commit(
        &mut self,
        epoch: Time,
        (positions, progress): (&StreamPositions, &StreamProgress),
        first_changed: Option<Time>,
        even_if_unchanged: bool,
    ) -> Result<Option<CommitStats>, IcebergError> {
        let mut merged = self.committed.positions.clone();
        for (stream, offset) in positions {
            let entry = merged.entry(stream.clone()).or_insert(0);
            *entry = (*entry).max(*offset);
        }
        // A stream without a note this run keeps the one committed before.
        let mut progress_merged = self.committed.progress.clone();
        progress_merged.extend(progress.iter().map(|(s, n)| (s.clone(), n.clone())));
        let moved = merged != self.committed.positions || self.committed.epoch.is_none();
        let changed = self.has_changes();
        let record_only = !changed && even_if_unchanged && moved;
        if !changed && !record_only {
            self.pending.clear();
            return Ok(None);
        }
        let (mut rows, keys) = self.pending.take();
        if rows.is_empty() {
            rows = std::mem::take(&mut self.appended);
        } else {
            rows.append(&mut self.appended);
        }
        let deletes: Vec<(Arc<DataFileRef>, u64)> = self
            .deletes
            .drain(..)
            .map(|(file, position)| match self.files.get(file as usize) {
                Some(Some(file)) => Ok((Arc::clone(file), position)),
                _ => Err(IcebergError::Inconsistent(format!(
                    "table {}: a deleted row's file {file} is not known",
                    self.table.ident
                ))),
            })
            .collect::<Result<_, _>>()?;
        let equality_deletes = std::mem::take(&mut self.deleted_rows);
        let stats = CommitStats {
            rows: rows.len() as u64,
            deletes: (deletes.len() + equality_deletes.len()) as u64,
        };
        let positions_json = serde_json::to_string(&merged)
            .map_err(|e| IcebergError::Io(format!("source positions: {e}")))?;
        let mut summary = HashMap::from([
            (SUMMARY_PIPELINE.to_owned(), self.pipeline.clone()),
            (SUMMARY_EPOCH.to_owned(), epoch.to_string()),
            (SUMMARY_POSITIONS.to_owned(), positions_json),
            (
                SUMMARY_FIRST_EPOCH.to_owned(),
                first_changed
                    .filter(|_| changed)
                    .unwrap_or(epoch + 1)
                    .to_string(),
            ),
        ]);
        if !progress_merged.is_empty() {
            let json = serde_json::to_string(&progress_merged)
                .map_err(|e| IcebergError::Io(format!("source progress: {e}")))?;
            summary.insert(SUMMARY_PROGRESS.to_owned(), json);
            let backfilling = progress_merged
                .values()
                .any(|note| note.get("backfill").and_then(|b| b.as_str()) == Some("in-progress"));
            let backfill = if backfilling {
                "in-progress"
            } else {
                "complete"
            };
            summary.insert(SUMMARY_BACKFILL.to_owned(), backfill.to_owned());
        }
        let outcome = self.table.commit(
            Changes {
                rows,
                deletes,
                equality_deletes,
                summary,
                removed: Default::default(),
            },
            &format!("{epoch:010}"),
        )?;
        let indexes = self.add_files(outcome.data_files);
        // Rows are found by position only with position deletes.
        if self.delete_mode == DeleteMode::Position && !keys.is_empty() {
            let places = outcome
                .row_locations
                .into_iter()
                .map(|(file, position)| (indexes[file], position))
                .collect();
            let written = KeyedSlots::with_values(keys, places);
            if let Err(place) = self.stored.merge(written) {
                return Err(IcebergError::Inconsistent(format!(
                    "table {}: a row written at {place:?} has the key of a stored row",
                    self.table.ident
                )));
            }
        }
        self.committed = Committed {
            epoch: Some(epoch),
            positions: merged,
            progress: progress_merged,
        };
        Ok(Some(stats))
    }
}

impl TableWriter {
    /// Takes `files` into the writer's list (reusing the indexes of compacted ones); returns
    /// their indexes.
    pub(super) fn add_files(&mut self, files: Vec<Arc<DataFileRef>>) -> Vec<u32> {
        files
            .into_iter()
            .map(|file| match self.upkeep.free_files.pop() {
                Some(free) => {
                    self.files[free as usize] = Some(file);
                    free
                }
                None => {
                    self.files.push(Some(file));
                    self.files.len() as u32 - 1
                }
            })
            .collect()
    }
}

/// An update of an epoch, while the epoch is applied.
struct Update {
    key: Key,
    /// Taken when applied.
    row: Option<Row>,
    diff: Diff,
    /// Whether the update before it has the same row (and key).
    same_as_previous: bool,
}

/// Takes the update at `index` to apply it.
fn take(batch: &mut [Update], index: usize) -> Option<(Key, Row, Diff)> {
    let update = batch.get_mut(index)?;
    let row = update.row.take()?;
    Some((std::mem::take(&mut update.key), row, update.diff))
}

#[cfg(test)]
mod tests;
