//! The table writer: turns consolidated per-epoch changes into the rows to append and the rows
//! to delete — by position (keeping `key → (data file, position)` for the rows it holds) or by
//! key (equality deletes, no index) — and commits them with the epoch and source positions in
//! the snapshot summary.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::Struct;
use rustc_hash::FxHashMap;

use tributary_operators::{Diff, Key, Row, Time};

use super::commit::Changes;
use super::pending::Pending;
use super::table::{Committed, IcebergTable, SUMMARY_EPOCH, SUMMARY_PIPELINE, SUMMARY_POSITIONS};
use super::{DeleteMode, IcebergError};
use crate::sources::StreamPositions;

/// How a table takes changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// One row per key: an update deletes the old row by position and appends the new one.
    Upsert {
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
    table: IcebergTable,
    mode: WriteMode,
    pipeline: String,
    files: Vec<(Arc<str>, Struct)>,
    /// Live rows of the table: key → (file index, position).
    stored: FxHashMap<Key, (u32, u64)>,
    /// Rows to append at the next commit.
    pending: Pending,
    deletes: Vec<(u32, u64)>,
    /// With equality deletes: the stored rows retracted since the last commit.
    deleted_rows: Vec<Row>,
    delete_mode: DeleteMode,
    committed: Committed,
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
            stored: FxHashMap::default(),
            pending: Pending::default(),
            deletes: Vec::new(),
            deleted_rows: Vec::new(),
            delete_mode,
            committed,
        };
        let WriteMode::Upsert { key } = &writer.mode else {
            return Ok((writer, Vec::new()));
        };
        let key = key.clone();
        let mut file_ids: HashMap<Arc<str>, u32> = HashMap::new();
        let mut seen = rustc_hash::FxHashSet::default();
        let mut rows = Vec::new();
        for stored in writer.table.scan()? {
            let file = *file_ids.entry(Arc::clone(&stored.file)).or_insert_with(|| {
                writer
                    .files
                    .push((Arc::clone(&stored.file), stored.partition.clone()));
                writer.files.len() as u32 - 1
            });
            let row_key = Key::of(&stored.row, &key);
            let duplicate = match delete_mode {
                DeleteMode::Position => writer
                    .stored
                    .insert(row_key, (file, stored.position))
                    .is_some(),
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

    /// Applies one epoch's consolidated changes.
    pub fn apply(&mut self, mut updates: Vec<(Row, Diff)>) -> Result<(), IcebergError> {
        let key = match &self.mode {
            WriteMode::Append => {
                for (row, diff) in updates {
                    for _ in 0..diff.max(0) {
                        self.pending.push(row.clone());
                    }
                }
                return Ok(());
            }
            WriteMode::Upsert { key } => key.clone(),
        };
        // Retractions first: an update is (old, -1) then (new, +1) for one key.
        updates.sort_by_key(|(_, diff)| *diff > 0);
        for (row, diff) in updates {
            let row_key = Key::of(&row, &key);
            if diff < 0 {
                if self.pending.retract(&row_key) {
                    // Appended and retracted between two commits.
                } else if self.delete_mode == DeleteMode::Equality {
                    // Deleted by key: rows of earlier commits only (the sequence-number rule).
                    self.deleted_rows.push(row);
                } else if let Some(stored) = self.stored.remove(&row_key) {
                    self.deletes.push(stored);
                } else {
                    return Err(IcebergError::Inconsistent(format!(
                        "table {}: a retraction of {row:?} matches no stored row",
                        self.table.ident
                    )));
                }
            } else if diff > 0 {
                let added = if self.stored.contains_key(&row_key) {
                    Err(row)
                } else {
                    self.pending.insert(row_key, row)
                };
                if let Err(row) = added {
                    return Err(IcebergError::Inconsistent(format!(
                        "table {}: {row:?} arrives while its key is still stored",
                        self.table.ident
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether there is anything to commit.
    pub fn has_changes(&self) -> bool {
        !self.deletes.is_empty() || !self.deleted_rows.is_empty() || !self.pending.is_empty()
    }

    /// Commits the applied changes as one snapshot covering epochs up to `epoch` and the
    /// source `positions`; nothing happens when nothing changed.
    pub fn commit(
        &mut self,
        epoch: Time,
        positions: &StreamPositions,
    ) -> Result<Option<CommitStats>, IcebergError> {
        let mut merged = self.committed.positions.clone();
        for (stream, offset) in positions {
            let entry = merged.entry(stream.clone()).or_insert(0);
            *entry = (*entry).max(*offset);
        }
        if !self.has_changes() {
            self.pending.clear();
            return Ok(None);
        }
        let (rows, mut keys) = self.pending.take();
        // Rows are found by position only with position deletes.
        if self.delete_mode != DeleteMode::Position {
            keys.clear();
        }
        let deletes: Vec<(Arc<str>, Struct, u64)> = self
            .deletes
            .drain(..)
            .map(|(file, position)| {
                let (path, partition) = &self.files[file as usize];
                (Arc::clone(path), partition.clone(), position)
            })
            .collect();
        let equality_deletes = std::mem::take(&mut self.deleted_rows);
        let stats = CommitStats {
            rows: rows.len() as u64,
            deletes: (deletes.len() + equality_deletes.len()) as u64,
        };
        let positions_json = serde_json::to_string(&merged)
            .map_err(|e| IcebergError::Io(format!("source positions: {e}")))?;
        let summary = HashMap::from([
            (SUMMARY_PIPELINE.to_owned(), self.pipeline.clone()),
            (SUMMARY_EPOCH.to_owned(), epoch.to_string()),
            (SUMMARY_POSITIONS.to_owned(), positions_json),
        ]);
        let outcome = self.table.commit(
            Changes {
                rows,
                deletes,
                equality_deletes,
                summary,
                replace_all: false,
            },
            &format!("{epoch:010}"),
        )?;
        let first_file = self.files.len() as u32;
        self.files.extend(outcome.data_files);
        self.stored.reserve(keys.len());
        for (key, (file, position)) in keys.into_iter().zip(outcome.row_locations) {
            self.stored
                .insert(key, (first_file + file as u32, position));
        }
        self.committed = Committed {
            epoch: Some(epoch),
            positions: merged,
        };
        Ok(Some(stats))
    }
}
