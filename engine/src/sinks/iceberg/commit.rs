//! The snapshot producer: writes a commit's Parquet data files and delete files (position or
//! equality), their manifests, the manifest list and the new table metadata, then commits
//! through the catalog atomically. Files written before a failed or interrupted commit are
//! orphans, never visible.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use bytes::Bytes;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, ManifestContentType, ManifestFile,
    ManifestListWriter, Operation, PrimitiveType, Snapshot, Struct, Summary, TableMetadata,
    MAIN_BRANCH,
};

use tributary_operators::Row;

use super::columns::{delete_schema, DELETE_FILE_PATH_ID, DELETE_POS_ID};
use super::encode::{encode_files, encode_parquet_with, group_into_files, Encoded, Statistics};
use super::manifests::Entry;
use super::metrics::{Bounds, FileMetrics};
use super::read::DataFileRef;
use super::summary::{summary, Tally};
use super::table::IcebergTable;
use super::IcebergError;

/// The changes one snapshot commits.
#[derive(Debug, Default)]
pub struct Changes {
    /// Rows to append, in the order they get positions in the new data file.
    pub rows: Vec<Row>,
    /// Rows to delete: (data file, position).
    pub deletes: Vec<(Arc<DataFileRef>, u64)>,
    /// Rows of earlier commits to delete by key (equality deletes on the table's identifier
    /// fields; written whole, matched on the key).
    pub equality_deletes: Vec<Row>,
    /// Extra snapshot-summary properties (`tributary.*`).
    pub summary: HashMap<String, String>,
    /// Live data and delete files the snapshot removes (compaction: the rows are their live
    /// rows): their manifest entries become `DELETED`.
    pub removed: HashSet<String>,
}

/// What a commit wrote.
#[derive(Debug)]
pub struct CommitOutcome {
    /// The new data files (one per partition, or more when a large commit is split between
    /// cores).
    pub data_files: Vec<Arc<DataFileRef>>,
    /// For each appended row, in order: its data file (an index into `data_files`) and
    /// position.
    pub row_locations: Vec<(usize, u64)>,
    /// The new snapshot.
    pub snapshot_id: i64,
}

/// Position deletes touching at most this many data files get a delete file per data file
/// (which names it as `referenced_data_file`, and goes with it when it is compacted); more
/// get one per partition.
const MAX_DELETE_FILES_PER_COMMIT: usize = 256;

impl IcebergTable {
    /// Commits `changes` as one snapshot; an error (nothing visible) if another writer
    /// committed to the table since it was loaded.
    pub fn commit(&mut self, changes: Changes, tag: &str) -> Result<CommitOutcome, IcebergError> {
        let snapshot_id = new_snapshot_id();
        let location = self.metadata.location().to_owned();
        let file_stem = format!("{tag}-{}", uuid::Uuid::new_v4());

        let (files, row_locations) = group_into_files(&self.partitioner, changes.rows)?;
        let (partitions, rows): (Vec<Struct>, Vec<Vec<Row>>) = files.into_iter().unzip();
        let encoded = encode_files(&self.columns, rows)?;
        let mut data_files = Vec::new();
        let mut written = Vec::new();
        for (i, (partition, file)) in partitions.into_iter().zip(encoded).enumerate() {
            let path = format!("{location}/data/{file_stem}-{i}.parquet");
            data_files.push(self.write_file(&path, DataContentType::Data, file, &partition)?);
            written.push(Arc::new(DataFileRef {
                path: Arc::from(path.as_str()),
                partition,
                spec_id: self.metadata.default_partition_spec_id(),
            }));
        }
        let mut delete_files = self.write_position_deletes(changes.deletes, &file_stem)?;

        let (equality_files, _) = group_into_files(&self.partitioner, changes.equality_deletes)?;
        if !equality_files.is_empty() {
            let equality_ids: Vec<i32> = self
                .metadata
                .current_schema()
                .identifier_field_ids()
                .collect();
            if equality_ids.is_empty() {
                return Err(IcebergError::Config(format!(
                    "table {} has no identifier fields to delete by; use position deletes",
                    self.ident
                )));
            }
            let (partitions, rows): (Vec<Struct>, Vec<Vec<Row>>) =
                equality_files.into_iter().unzip();
            let encoded = encode_files(&self.columns, rows)?;
            for (i, (partition, file)) in partitions.into_iter().zip(encoded).enumerate() {
                let path = format!("{location}/data/{file_stem}-{i}-eq-deletes.parquet");
                let mut file =
                    self.describe_file(&path, DataContentType::EqualityDeletes, file, &partition)?;
                file.equality_ids(Some(equality_ids.clone()));
                let file = file
                    .build()
                    .map_err(|e| IcebergError::Io(format!("{path}: {e}")))?;
                delete_files.push((self.metadata.default_partition_spec_id(), file));
            }
        }

        self.commit_files(
            (data_files, delete_files),
            &changes.removed,
            changes.summary,
            (snapshot_id, &file_stem),
        )?;
        Ok(CommitOutcome {
            data_files: written,
            row_locations,
            snapshot_id,
        })
    }

    /// Commits written data files (of the default partition spec) and delete files (each with
    /// its data files' spec) as one snapshot that also removes `removed_files` (their entries
    /// become `DELETED`), with `extra_summary` in its summary.
    pub(super) fn commit_files(
        &mut self,
        (data_files, delete_files): (Vec<DataFile>, Vec<(i32, DataFile)>),
        removed_files: &HashSet<String>,
        extra_summary: HashMap<String, String>,
        (snapshot_id, file_stem): (i64, &str),
    ) -> Result<(), IcebergError> {
        let location = self.metadata.location().to_owned();
        let mut added = Tally::default();
        data_files
            .iter()
            .chain(delete_files.iter().map(|(_, f)| f))
            .for_each(|f| added.count(f));
        let operation = if !removed_files.is_empty() {
            Operation::Replace
        } else if delete_files.is_empty() {
            Operation::Append
        } else if data_files.is_empty() {
            Operation::Delete
        } else {
            Operation::Overwrite
        };
        // One manifest of data files, and one of delete files per partition spec.
        let mut new_manifests: Vec<(String, ManifestContentType, i32, Vec<DataFile>)> = Vec::new();
        if !data_files.is_empty() {
            let spec_id = self.metadata.default_partition_spec_id();
            new_manifests.push(("m0".into(), ManifestContentType::Data, spec_id, data_files));
        }
        let mut by_spec: BTreeMap<i32, Vec<DataFile>> = BTreeMap::new();
        for (spec_id, file) in delete_files {
            by_spec.entry(spec_id).or_default().push(file);
        }
        for (spec_id, files) in by_spec {
            let name = format!("m1-{spec_id}");
            new_manifests.push((name, ManifestContentType::Deletes, spec_id, files));
        }

        let parent = self.metadata.current_snapshot().cloned();
        let parent_id = parent.as_ref().map(|s| s.snapshot_id());
        let (manifests, removed) = self.block_on(async {
            let inherited: Vec<ManifestFile> = match &parent {
                Some(parent) => self
                    .manifests(parent.manifest_list())
                    .await?
                    .consume_entries()
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            };
            let (carried, removed) = self
                .carried_manifests(inherited, removed_files, (snapshot_id, file_stem))
                .await?;
            let mut manifests = self
                .merged_manifests(carried, (snapshot_id, file_stem))
                .await?;
            for (name, content, spec_id, files) in new_manifests {
                let path = format!("{location}/metadata/{file_stem}-{name}.avro");
                let entries = files.into_iter().map(Entry::Added).collect();
                manifests.push(
                    self.write_manifest(&path, snapshot_id, (content, spec_id), entries)
                        .await?,
                );
            }
            Ok::<_, IcebergError>((manifests, removed))
        })?;
        self.forget_manifests_but(&manifests);
        let mut summary = summary(
            parent.as_ref().map(|s| &s.summary().additional_properties),
            &added,
            &removed,
        );
        summary.extend(extra_summary);
        self.swap_in_snapshot(
            (snapshot_id, parent_id, file_stem),
            manifests,
            Summary {
                operation,
                additional_properties: summary,
            },
        )
    }

    /// Writes position deletes: a file per data file when few data files are touched (naming
    /// it as `referenced_data_file`), else a file per partition.
    fn write_position_deletes(
        &self,
        deletes: Vec<(Arc<DataFileRef>, u64)>,
        file_stem: &str,
    ) -> Result<Vec<(i32, DataFile)>, IcebergError> {
        let mut by_file: HashMap<Arc<DataFileRef>, Vec<u64>> = HashMap::new();
        for (file, position) in deletes {
            by_file.entry(file).or_default().push(position);
        }
        // (spec, partition, the one data file named) → (data file, position) deleted.
        type Groups = HashMap<(i32, Struct, Option<Arc<str>>), Vec<(Arc<str>, u64)>>;
        let mut groups = Groups::new();
        let per_file = by_file.len() <= MAX_DELETE_FILES_PER_COMMIT;
        for (file, positions) in by_file {
            let referenced = per_file.then(|| Arc::clone(&file.path));
            groups
                .entry((file.spec_id, file.partition.clone(), referenced))
                .or_default()
                .extend(positions.into_iter().map(|p| (Arc::clone(&file.path), p)));
        }
        let location = self.metadata.location();
        let mut files = Vec::new();
        for (i, ((spec_id, partition, referenced), mut deletes)) in groups.into_iter().enumerate() {
            deletes.sort();
            let path = format!("{location}/data/{file_stem}-{i}-deletes.parquet");
            let paths: StringArray = deletes.iter().map(|(f, _)| Some(&**f)).collect();
            let positions: Int64Array = deletes.iter().map(|(_, p)| *p as i64).collect();
            let batch = RecordBatch::try_new(
                delete_schema(),
                vec![Arc::new(paths) as ArrayRef, Arc::new(positions)],
            )?;
            let encoded = (
                encode_parquet_with(batch.schema(), &batch, Statistics::Whole)?,
                deletes.len() as u64,
            );
            let mut file =
                self.describe_file(&path, DataContentType::PositionDeletes, encoded, &partition)?;
            file.referenced_data_file(referenced.map(|f| f.to_string()))
                .partition_spec_id(spec_id);
            let file = file
                .build()
                .map_err(|e| IcebergError::Io(format!("{path}: {e}")))?;
            files.push((spec_id, file));
        }
        Ok(files)
    }

    /// The schema id the next snapshot is written with: the pending schema's, once added,
    /// else the current one.
    fn snapshot_schema_id(&self) -> Result<i32, IcebergError> {
        if self.pending_schema.is_none() {
            return Ok(self.metadata.current_schema_id());
        }
        let next = self.with_pending_schema(self.metadata.clone().into_builder(None))?;
        next.build()
            .map(|built| built.metadata.current_schema_id())
            .map_err(|e| IcebergError::iceberg(format!("evolving the schema of {}", self.ident), e))
    }

    /// Makes a snapshot of `manifests` (built on `parent_id`) current: writes its manifest
    /// list and swaps in the metadata. When another writer changed the table meanwhile without
    /// moving `main` (metadata, another branch), the snapshot is built again on top (with the
    /// next sequence number); when it moved `main` (data this writer's row positions may not
    /// know), the commit fails, nothing visible.
    fn swap_in_snapshot(
        &mut self,
        (snapshot_id, parent_id, file_stem): (i64, Option<i64>, &str),
        manifests: Vec<ManifestFile>,
        summary: Summary,
    ) -> Result<(), IcebergError> {
        // What the snapshot's files were written for: a change of it is a real conflict.
        let layout = |m: &TableMetadata| {
            (
                m.default_partition_spec_id(),
                m.current_schema_id(),
                m.last_column_id(),
            )
        };
        let written_for = layout(&self.metadata);
        let mut attempts = 0;
        loop {
            let sequence_number = self.metadata.next_sequence_number();
            let manifest_list_path = format!(
                "{}/metadata/snap-{snapshot_id}-{}-{file_stem}.avro",
                self.metadata.location(),
                attempts + 1
            );
            self.block_on(self.write_manifest_list(
                &manifest_list_path,
                (snapshot_id, parent_id, sequence_number),
                manifests.clone(),
            ))?;
            let snapshot = Snapshot::builder()
                .with_snapshot_id(snapshot_id)
                .with_parent_snapshot_id(parent_id)
                .with_sequence_number(sequence_number)
                .with_timestamp_ms(now_ms().max(self.metadata.last_updated_ms()))
                .with_manifest_list(manifest_list_path.clone())
                .with_summary(summary.clone())
                .with_schema_id(self.snapshot_schema_id()?)
                .build();
            let base = self
                .metadata
                .clone()
                .into_builder(Some(self.metadata_location.clone()));
            let metadata = self
                .with_pending_schema(base)?
                .set_branch_snapshot(snapshot, MAIN_BRANCH)
                .and_then(|b| b.build())
                .map_err(|e| IcebergError::iceberg("new table metadata", e))?
                .metadata;
            match self.swap_metadata(metadata) {
                Ok(()) => {
                    self.pending_schema = None;
                    return Ok(());
                }
                Err(IcebergError::Conflict(table)) if attempts < MAX_COMMIT_ATTEMPTS => {
                    attempts += 1;
                    self.delete_files(&[manifest_list_path]);
                    self.reload()?;
                    let current = self.metadata.current_snapshot_id();
                    if current != parent_id {
                        return Err(IcebergError::ConcurrentSnapshot {
                            table,
                            snapshot: current.unwrap_or_default(),
                        });
                    }
                    if layout(&self.metadata) != written_for {
                        // Another schema or partition spec: the files are not written for it.
                        return Err(IcebergError::Conflict(table));
                    }
                    tracing::info!(table = %self.ident, attempt = attempts, "another writer changed the table during a commit without moving main; building the snapshot again on top of it");
                }
                outcome => return outcome,
            }
        }
    }

    async fn write_manifest_list(
        &self,
        path: &str,
        (snapshot_id, parent_id, sequence_number): (i64, Option<i64>, i64),
        manifests: Vec<ManifestFile>,
    ) -> Result<(), IcebergError> {
        let failed = |e| IcebergError::iceberg(path, e);
        let output = self.io.new_output(path).map_err(failed)?;
        let mut list = ManifestListWriter::v2(
            output.writer().await.map_err(failed)?,
            snapshot_id,
            parent_id,
            sequence_number,
        );
        list.add_manifests(manifests.into_iter()).map_err(failed)?;
        list.close().await.map_err(failed)
    }

    /// Writes an encoded Parquet file at `path`.
    fn write_file(
        &self,
        path: &str,
        content: DataContentType,
        encoded: Encoded,
        partition: &Struct,
    ) -> Result<DataFile, IcebergError> {
        self.describe_file(path, content, encoded, partition)?
            .build()
            .map_err(|e| IcebergError::Io(format!("{path}: {e}")))
    }

    /// Writes an encoded Parquet file at `path`, and describes it (with its column metrics)
    /// for a manifest.
    fn describe_file(
        &self,
        path: &str,
        content: DataContentType,
        (bytes, record_count): Encoded,
        partition: &Struct,
    ) -> Result<DataFileBuilder, IcebergError> {
        let bytes = Bytes::from(bytes);
        let size = bytes.len() as u64;
        let schema = self.write_schema();
        let metrics = match content {
            DataContentType::PositionDeletes => FileMetrics::of(
                &bytes,
                |id| match id {
                    DELETE_FILE_PATH_ID => Some(PrimitiveType::String),
                    DELETE_POS_ID => Some(PrimitiveType::Long),
                    _ => None,
                },
                Bounds::Full,
            ),
            _ => FileMetrics::of(
                &bytes,
                |id| {
                    let field = schema.field_by_id(id)?;
                    field.field_type.as_primitive_type().cloned()
                },
                Bounds::Truncated,
            ),
        }?;
        self.block_on(async {
            self.io
                .new_output(path)
                .map_err(|e| IcebergError::iceberg(path, e))?
                .write(bytes)
                .await
                .map_err(|e| IcebergError::iceberg(path, e))
        })?;
        let mut file = DataFileBuilder::default();
        file.content(content)
            .file_path(path.to_owned())
            .file_format(DataFileFormat::Parquet)
            .partition(partition.clone())
            .record_count(record_count)
            .file_size_in_bytes(size)
            .partition_spec_id(self.metadata.default_partition_spec_id());
        metrics.describe(&mut file);
        Ok(file)
    }
}

/// Compare-and-swap attempts per commit when other writers only change metadata.
const MAX_COMMIT_ATTEMPTS: u32 = 10;

fn new_snapshot_id() -> i64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64)) as i64
}

/// Now, in Unix milliseconds (snapshot and expiry times).
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow_schema::{DataType, Field, Schema as ArrowSchema};
    use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
    use tributary_operators::{Column, ColumnType, Schema, Value};

    use super::*;
    use crate::sinks::iceberg::{IcebergOptions, IcebergSinks, TableIdent, WriteMode};

    fn row(id: i64, version: i64) -> Row {
        Row::new(vec![Value::Int(id), Value::Int(version)])
    }

    /// Another writer's equality deletes on a column other than the key (`version`, field 2)
    /// delete by their own `equality_ids`, and only rows written before them.
    #[test]
    fn equality_deletes_of_other_writers_apply_by_their_own_fields() {
        let warehouse = tempfile::tempdir().unwrap();
        let schema = Schema::new(vec![
            Column::new("id", ColumnType::Int64),
            Column::new("version", ColumnType::Int64),
        ]);
        let opened = IcebergSinks::new(IcebergOptions::new(warehouse.path()), "test")
            .open(
                &TableIdent::parse("test.rows").unwrap(),
                &schema,
                WriteMode::Upsert { key: vec![0] },
                (&[], None),
            )
            .unwrap();
        let mut writer = opened.take_writer().unwrap();
        let positions = crate::positions::StreamPositions::new();
        writer
            .apply(vec![(row(1, 10), 1), (row(2, 20), 1), (row(3, 10), 1)])
            .unwrap();
        writer
            .commit(1, (&positions, &Default::default()), None, false)
            .unwrap();

        // Delete every row of version 10, as another engine would: a file of that one column.
        let field = Field::new("version", DataType::Int64, false)
            .with_metadata([(PARQUET_FIELD_ID_META_KEY.to_owned(), "2".to_owned())].into());
        let arrow = Arc::new(ArrowSchema::new(vec![field]));
        let batch = RecordBatch::try_new(
            Arc::clone(&arrow),
            vec![Arc::new(Int64Array::from(vec![10])) as ArrayRef],
        )
        .unwrap();
        let table = &mut writer.table;
        let path = format!(
            "{}/data/other-writer-eq.parquet",
            table.metadata().location()
        );
        let encoded = (
            encode_parquet_with(arrow, &batch, Statistics::Truncated).unwrap(),
            1,
        );
        let mut file = table
            .describe_file(
                &path,
                DataContentType::EqualityDeletes,
                encoded,
                &Struct::empty(),
            )
            .unwrap();
        file.equality_ids(Some(vec![2]));
        table
            .commit_files(
                (Vec::new(), vec![(0, file.build().unwrap())]),
                &HashSet::new(),
                HashMap::from([("tributary.pipeline".to_owned(), "test".to_owned())]),
                (new_snapshot_id(), "other"),
            )
            .unwrap();
        let rows = |table: &IcebergTable| -> BTreeMap<i64, i64> {
            table
                .scan()
                .unwrap()
                .into_iter()
                .map(|stored| match stored.row.values() {
                    [Value::Int(id), Value::Int(version)] => (*id, *version),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(rows(table), BTreeMap::from([(2, 20)]));
        assert_eq!(
            table
                .metadata()
                .current_snapshot()
                .unwrap()
                .summary()
                .operation,
            Operation::Delete
        );

        // A row of version 10 written after the delete stays.
        writer.apply(vec![(row(4, 10), 1)]).unwrap();
        writer
            .commit(2, (&positions, &Default::default()), None, false)
            .unwrap();
        assert_eq!(rows(&writer.table), BTreeMap::from([(2, 20), (4, 10)]));
    }
}
