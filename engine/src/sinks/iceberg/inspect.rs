//! What a catalog holds, for `tributary tables`: each table's snapshots with their `tributary.*`
//! summaries, and consistent cuts across the tables of one pipeline: per table, the snapshot
//! that holds exactly its state at one epoch, the same epoch for all of them.

use std::collections::BTreeMap;

use iceberg::spec::TableMetadata;
use serde::Serialize;

use tributary_operators::Time;

use super::table::{
    SUMMARY_BACKFILL, SUMMARY_EPOCH, SUMMARY_FIRST_EPOCH, SUMMARY_PIPELINE, SUMMARY_POSITIONS,
    SUMMARY_PROGRESS,
};
use super::{CatalogLocation, IcebergError, IcebergOptions};

/// One snapshot as `tributary tables` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// The snapshot id.
    pub id: i64,
    /// Its parent's id.
    pub parent: Option<i64>,
    /// When it was committed (milliseconds since the epoch).
    pub timestamp_ms: i64,
    /// `tributary.pipeline`, when Tributary wrote it.
    pub pipeline: Option<String>,
    /// `tributary.epoch`: the last epoch it covers.
    pub epoch: Option<Time>,
    /// `tributary.first-epoch`: the first epoch whose changes it adds.
    pub first_epoch: Option<Time>,
    /// `tributary.source-positions` (JSON).
    pub positions: Option<String>,
    /// `tributary.source-progress` (JSON).
    pub progress: Option<String>,
    /// `tributary.backfill`: `in-progress` or `complete`.
    pub backfill: Option<String>,
}

/// A table and the snapshots of its current history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    /// `namespace.table`.
    pub table: String,
    /// The current snapshot and its retained ancestors, oldest first.
    pub snapshots: Vec<SnapshotInfo>,
}

impl TableInfo {
    /// The current snapshot.
    pub fn current(&self) -> Option<&SnapshotInfo> {
        self.snapshots.last()
    }

    fn of(table: String, metadata: &TableMetadata) -> TableInfo {
        let mut snapshots = Vec::new();
        let mut next = metadata.current_snapshot();
        while let Some(snapshot) = next {
            let summary = &snapshot.summary().additional_properties;
            let number = |key: &str| summary.get(key).and_then(|v| v.parse().ok());
            snapshots.push(SnapshotInfo {
                id: snapshot.snapshot_id(),
                parent: snapshot.parent_snapshot_id(),
                timestamp_ms: snapshot.timestamp_ms(),
                pipeline: summary.get(SUMMARY_PIPELINE).cloned(),
                epoch: number(SUMMARY_EPOCH),
                first_epoch: number(SUMMARY_FIRST_EPOCH),
                positions: summary.get(SUMMARY_POSITIONS).cloned(),
                progress: summary.get(SUMMARY_PROGRESS).cloned(),
                backfill: summary.get(SUMMARY_BACKFILL).cloned(),
            });
            next = snapshot
                .parent_snapshot_id()
                .and_then(|id| metadata.snapshot_by_id(id));
        }
        snapshots.reverse();
        TableInfo { table, snapshots }
    }
}

/// Every table of the catalog `options` name, with its snapshots.
pub fn tables(options: &IcebergOptions) -> Result<Vec<TableInfo>, IcebergError> {
    if let CatalogLocation::Sqlite(path) = &options.catalog {
        if !path.exists() {
            return Err(IcebergError::Io(format!(
                "no catalog at {}: name a pipeline's --warehouse (and --catalog)",
                path.display()
            )));
        }
    }
    let (mut catalog, io, _) = options.open()?;
    let runtime = super::table::io_runtime()?;
    let mut out = Vec::new();
    for ident in catalog.list()? {
        let Some(location) = catalog.load(&ident)? else {
            continue;
        };
        let metadata = runtime
            .block_on(TableMetadata::read_from(&io, &location))
            .map_err(|e| IcebergError::iceberg(format!("reading {location}"), e))?;
        out.push(TableInfo::of(ident.to_string(), &metadata));
    }
    Ok(out)
}

/// A consistent cut: per table, the snapshot that holds its state at `epoch` (`None`: the
/// table was still empty then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cut {
    /// The pipeline whose tables these are.
    pub pipeline: String,
    /// The epoch.
    pub epoch: Time,
    /// Table → snapshot id.
    pub snapshots: BTreeMap<String, Option<i64>>,
}

/// The newest consistent cut of each pipeline's tables, where there is one: the newest epoch
/// that every table has reached (its current snapshot is at least there) and at which every
/// table's state is a snapshot of its own (the next snapshot adds only later changes).
pub fn consistent_cuts(tables: &[TableInfo]) -> Vec<Cut> {
    let mut by_pipeline: BTreeMap<&str, Vec<&TableInfo>> = BTreeMap::new();
    for table in tables {
        if let Some(pipeline) = table.current().and_then(|s| s.pipeline.as_deref()) {
            by_pipeline.entry(pipeline).or_default().push(table);
        }
    }
    by_pipeline
        .into_iter()
        .filter_map(|(pipeline, tables)| cut(pipeline, &tables))
        .collect()
}

fn cut(pipeline: &str, tables: &[&TableInfo]) -> Option<Cut> {
    let mut epoch = tables
        .iter()
        .map(|t| t.current().and_then(|s| s.epoch))
        .min()
        .flatten()?;
    'lower: loop {
        let mut snapshots = BTreeMap::new();
        for table in tables {
            match state_at(&table.snapshots, epoch) {
                Ok(id) => {
                    snapshots.insert(table.table.clone(), id);
                }
                Err(lower) => {
                    epoch = lower?;
                    continue 'lower;
                }
            }
        }
        return Some(Cut {
            pipeline: pipeline.to_owned(),
            epoch,
            snapshots,
        });
    }
}

/// The snapshot of `snapshots` (oldest first) that holds the table's state at `epoch`
/// (`None`: empty then), or an earlier epoch to try (`None`: no earlier one can work).
fn state_at(snapshots: &[SnapshotInfo], epoch: Time) -> Result<Option<i64>, Option<Time>> {
    let stamped: Vec<&SnapshotInfo> = snapshots.iter().filter(|s| s.epoch.is_some()).collect();
    let at = stamped.iter().rposition(|s| s.epoch <= Some(epoch));
    let next = at.map_or(0, |i| i + 1);
    let Some(after) = stamped.get(next) else {
        return Ok(at.map(|i| stamped[i].id));
    };
    let Some(i) = at else {
        // No snapshot by then: the table was empty if its first one adds only later changes.
        return match after.first_epoch {
            Some(first) if first > epoch => Ok(None),
            _ => Err(after.first_epoch.and_then(|f| f.checked_sub(1))),
        };
    };
    let before = stamped[i];
    if before.epoch == Some(epoch) {
        return Ok(Some(before.id));
    }
    if after.parent != Some(before.id) {
        // A snapshot in between was expired: only `before`'s own epoch is known.
        return Err(before.epoch.filter(|e| *e < epoch));
    }
    // Without a recorded first epoch, changes may start right after `before` (or none,
    // for a snapshot at the same epoch, which compaction writes).
    let first = after
        .first_epoch
        .unwrap_or_else(|| match (before.epoch, after.epoch) {
            (Some(a), Some(b)) if a == b => a + 1,
            (a, _) => a.map_or(0, |a| a + 1),
        });
    if first > epoch {
        Ok(Some(before.id))
    } else {
        Err(first.checked_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: i64, epoch: Time, first: Time) -> SnapshotInfo {
        SnapshotInfo {
            id,
            parent: (id > 1).then_some(id - 1),
            timestamp_ms: 0,
            pipeline: Some("p".into()),
            epoch: Some(epoch),
            first_epoch: Some(first),
            positions: None,
            progress: None,
            backfill: None,
        }
    }

    fn table(name: &str, snapshots: Vec<SnapshotInfo>) -> TableInfo {
        TableInfo {
            table: name.into(),
            snapshots,
        }
    }

    #[test]
    fn the_cut_is_the_newest_epoch_every_table_holds_exactly() {
        // a commits at 5, 10, 15; b changed at 3 and 12 only (its 10 holds nothing new).
        let a = table(
            "a",
            vec![snapshot(1, 5, 1), snapshot(2, 10, 6), snapshot(3, 15, 11)],
        );
        let b = table("b", vec![snapshot(1, 5, 3), snapshot(2, 15, 12)]);
        let cuts = consistent_cuts(&[a.clone(), b.clone()]);
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].epoch, 15);
        assert_eq!(cuts[0].snapshots["a"], Some(3));
        // c has not reached 15: the cut goes back to 10, where b still holds its 5.
        let c = table("c", vec![snapshot(1, 10, 2)]);
        let cut = &consistent_cuts(&[a.clone(), b.clone(), c])[0];
        assert_eq!(cut.epoch, 10);
        assert_eq!(
            (cut.snapshots["a"], cut.snapshots["b"], cut.snapshots["c"]),
            (Some(2), Some(1), Some(1))
        );
        // d changed at 9 but first committed at 12: no snapshot holds its state at 10 (or at
        // 8, where a has none either), so the cut goes back to 5, when d was still empty.
        let d = table("d", vec![snapshot(1, 12, 9)]);
        let cut = &consistent_cuts(&[a, b, d])[0];
        assert_eq!(cut.epoch, 5);
        assert_eq!(cut.snapshots["d"], None, "d was empty at 5");
    }

    #[test]
    fn expired_snapshots_are_not_guessed_over() {
        let mut after = snapshot(5, 20, 16);
        after.parent = Some(4); // 4 was expired
        let a = table("a", vec![snapshot(1, 10, 1), after]);
        let b = table("b", vec![snapshot(1, 15, 1), snapshot(2, 20, 18)]);
        let cut = &consistent_cuts(&[a, b])[0];
        assert_eq!(cut.epoch, 20, "both have a snapshot at 20");
        let mut lagging = snapshot(5, 20, 16);
        lagging.parent = Some(4);
        let a = table("a", vec![snapshot(1, 10, 1), lagging]);
        let b = table("b", vec![snapshot(1, 15, 1)]);
        let cut = &consistent_cuts(&[a, b])[0];
        assert_eq!(
            (cut.epoch, cut.snapshots["a"], cut.snapshots["b"]),
            (0, None, None),
            "a's state at 15 was in an expired snapshot, and b has none at 10: only the start \
             is certain"
        );
    }
}
