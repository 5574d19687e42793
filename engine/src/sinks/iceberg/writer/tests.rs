//! The table writer against a real table in a temporary warehouse: random unconsolidated
//! epochs, restarts, compaction and expiry between commits, compared with an oracle.

use std::collections::BTreeMap;

use tributary_operators::{Column, ColumnType, Schema, Value};

use super::*;
use crate::sinks::iceberg::{IcebergOptions, IcebergSinks, TableIdent};

/// A small deterministic generator (xorshift).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn row(id: i64, version: i64) -> Row {
    Row::new(vec![Value::Int(id), Value::Int(version)])
}

fn open(warehouse: &std::path::Path, deletes: DeleteMode) -> TableWriter {
    let mut options = IcebergOptions::new(warehouse);
    options.deletes = deletes;
    let schema = Schema::new(vec![
        Column::new("id", ColumnType::Int64),
        Column::new("version", ColumnType::Int64),
    ]);
    let ident = TableIdent::parse("test.rows").unwrap();
    let mode = WriteMode::Upsert { key: vec![0] };
    let opened = IcebergSinks::new(options, "test")
        .open(&ident, &schema, mode, (&[], None))
        .unwrap();
    opened.take_writer().unwrap()
}

fn table_rows(writer: &TableWriter) -> Vec<Row> {
    let mut rows: Vec<Row> = writer
        .table()
        .scan()
        .unwrap()
        .into_iter()
        .map(|stored| stored.row)
        .collect();
    rows.sort();
    rows
}

/// One epoch's updates as a dataflow may hand them over unconsolidated, in any order:
/// upserts and deletes of live keys, inserts of new ones, and noise that cancels out (a
/// row inserted and retracted, an update to the same row).
fn epoch(dice: &mut Dice, state: &mut BTreeMap<i64, Row>, version: i64) -> Vec<(Row, Diff)> {
    let mut updates = Vec::new();
    for id in 0..40 {
        let old = state.get(&id).cloned();
        match (dice.below(6), old) {
            (0, Some(old)) => {
                state.remove(&id);
                updates.push((old, -1));
            }
            (1 | 2, Some(old)) => {
                let new = row(id, version);
                state.insert(id, new.clone());
                updates.extend([(old, -1), (new, 1)]);
            }
            (1 | 2, None) => {
                let new = row(id, version);
                state.insert(id, new.clone());
                updates.push((new, 1));
            }
            (3, Some(old)) => updates.extend([(old.clone(), 1), (old, -1)]),
            (4, _) => {
                let noise = row(id, -version);
                updates.extend([(noise.clone(), 1), (noise, -1)]);
            }
            _ => {}
        }
    }
    for i in (1..updates.len()).rev() {
        updates.swap(i, dice.below(i as u64 + 1) as usize);
    }
    updates
}

#[test]
fn unconsolidated_epochs_in_any_order_commit_the_current_rows() {
    for deletes in [DeleteMode::Position, DeleteMode::Equality] {
        let warehouse = tempfile::tempdir().unwrap();
        let mut writer = open(warehouse.path(), deletes);
        let mut dice = Dice(0x9E37_79B9_7F4A_7C15);
        let mut state = BTreeMap::new();
        for version in 1..=60 {
            if version == 30 {
                // A restart: the stored rows' places come back from the table.
                drop(writer);
                writer = open(warehouse.path(), deletes);
            }
            writer.apply(epoch(&mut dice, &mut state, version)).unwrap();
            if dice.below(3) == 0 || version == 29 || version == 60 {
                writer
                    .commit(
                        version as Time,
                        (&StreamPositions::new(), &Default::default()),
                        None,
                        false,
                    )
                    .unwrap();
                let expected: Vec<Row> = state.values().cloned().collect();
                assert_eq!(
                    table_rows(&writer),
                    expected,
                    "{deletes:?}, epoch {version}"
                );
            }
        }
    }
}

#[test]
fn compaction_and_expiry_between_commits_keep_the_current_rows() {
    for deletes in [DeleteMode::Position, DeleteMode::Equality] {
        let warehouse = tempfile::tempdir().unwrap();
        let mut writer = open(warehouse.path(), deletes);
        let mut dice = Dice(0x2545_F491_4F6C_DD1D);
        let mut state = BTreeMap::new();
        let retention = crate::sinks::iceberg::Retention {
            max_age_ms: 0,
            min_to_keep: 3,
        };
        for version in 1..=80 {
            if version == 50 {
                drop(writer);
                writer = open(warehouse.path(), deletes);
            }
            writer.apply(epoch(&mut dice, &mut state, version)).unwrap();
            writer
                .commit(
                    version as Time,
                    (&StreamPositions::new(), &Default::default()),
                    None,
                    false,
                )
                .unwrap();
            writer.compact_small_files().unwrap();
            writer
                .table
                .expire_snapshots(retention, i64::MAX / 2)
                .unwrap();
            let expected: Vec<Row> = state.values().cloned().collect();
            assert_eq!(
                table_rows(&writer),
                expected,
                "{deletes:?}, epoch {version}"
            );
        }
        let snapshots = writer.table.metadata().snapshots().len();
        assert!(snapshots <= 3, "{deletes:?}: {snapshots} snapshots kept");
        let only_current = crate::sinks::iceberg::Retention {
            min_to_keep: 1,
            ..retention
        };
        writer
            .table
            .expire_snapshots(only_current, i64::MAX / 2)
            .unwrap();
        let live = writer.table.live_file_paths().unwrap();
        if deletes == DeleteMode::Position {
            assert!(
                live.len() < 30,
                "{} live files after 80 commits",
                live.len()
            );
        }
        // Only files the table references are left.
        let on_disk: Vec<_> = walk(&warehouse.path().join("test.db/rows/data"));
        for file in &on_disk {
            assert!(
                live.iter().any(|l| l.ends_with(file.as_str())),
                "{deletes:?}: {file} is not referenced"
            );
        }
    }
}

/// A column the pipeline stops writing keeps its values: compaction, which rewrites rows
/// through the pipeline's columns, leaves such a table alone.
#[test]
fn compaction_keeps_columns_the_pipeline_no_longer_writes() {
    let warehouse = tempfile::tempdir().unwrap();
    let ident = TableIdent::parse("test.rows").unwrap();
    let open_with = |columns: Vec<Column>| {
        IcebergSinks::new(IcebergOptions::new(warehouse.path()), "test")
            .open(
                &ident,
                &Schema::new(columns),
                WriteMode::Upsert { key: vec![0] },
                (&[], None),
            )
            .unwrap()
            .take_writer()
            .unwrap()
    };
    let id = || Column::new("id", ColumnType::Int64);
    let note = || Column::new("note", ColumnType::String);
    let mut writer = open_with(vec![id(), note()]);
    for i in 0..8 {
        writer
            .apply(vec![(Row::new(vec![Value::Int(i), Value::str("kept")]), 1)])
            .unwrap();
        writer
            .commit(
                i as Time,
                (&StreamPositions::new(), &Default::default()),
                None,
                false,
            )
            .unwrap();
    }
    drop(writer);
    // The source drops `note`; the table keeps it, optional.
    let mut writer = open_with(vec![id()]);
    for i in 8..16 {
        writer
            .apply(vec![(Row::new(vec![Value::Int(i)]), 1)])
            .unwrap();
        writer
            .commit(
                i as Time,
                (&StreamPositions::new(), &Default::default()),
                None,
                false,
            )
            .unwrap();
        writer.compact_small_files().unwrap();
    }
    drop(writer);
    let writer = open_with(vec![id(), note()]);
    let notes = writer
        .table()
        .scan()
        .unwrap()
        .into_iter()
        .filter(|stored| stored.row.values()[1] == Value::str("kept"))
        .count();
    assert_eq!(
        notes, 8,
        "the notes written before the column was dropped are still there"
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_retraction_of_a_row_never_written_is_refused() {
    let warehouse = tempfile::tempdir().unwrap();
    let mut writer = open(warehouse.path(), DeleteMode::Position);
    writer.apply(vec![(row(1, 1), 1)]).unwrap();
    writer
        .commit(
            1,
            (&StreamPositions::new(), &Default::default()),
            None,
            false,
        )
        .unwrap();
    // Alone, as half of an update of a key never written, and twice in one epoch.
    for updates in [
        vec![(row(2, 1), -1)],
        vec![(row(3, 1), -1), (row(3, 2), 1)],
        vec![(row(1, 1), -1), (row(1, 2), -1), (row(1, 3), 1)],
    ] {
        let error = writer.apply(updates).unwrap_err();
        assert!(matches!(error, IcebergError::Inconsistent(_)), "{error}");
    }
}

#[test]
fn an_idle_table_records_how_far_the_source_is_without_files() {
    let warehouse = tempfile::tempdir().unwrap();
    let mut writer = open(warehouse.path(), DeleteMode::Position);
    writer.apply(vec![(row(1, 1), 1)]).unwrap();
    let at = |offset| StreamPositions::from([("s".to_owned(), offset)]);
    assert!(writer
        .commit(1, (&at(10), &Default::default()), Some(1), false)
        .unwrap()
        .is_some());
    assert!(
        writer
            .commit(2, (&at(20), &Default::default()), None, false)
            .unwrap()
            .is_none(),
        "nothing changed: no snapshot unless asked"
    );
    let recorded = writer
        .commit(3, (&at(30), &Default::default()), None, true)
        .unwrap()
        .unwrap();
    assert_eq!((recorded.rows, recorded.deletes), (0, 0));
    assert_eq!(writer.committed().epoch, Some(3));
    assert_eq!(writer.committed().positions, at(30));
    assert!(
        writer
            .commit(4, (&at(30), &Default::default()), None, true)
            .unwrap()
            .is_none(),
        "positions that did not move are not recorded again"
    );
    let reopened = open(warehouse.path(), DeleteMode::Position);
    assert_eq!(reopened.committed().positions, at(30));
    assert_eq!(table_rows(&reopened), vec![row(1, 1)]);
}
