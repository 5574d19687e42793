//! The snapshot producer: writes a commit's Parquet data files and delete files (position or
//! equality), their manifests, the manifest list and the new table metadata, then commits
//! through the catalog atomically. Files written before a failed or interrupted commit are
//! orphans, never visible.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use bytes::Bytes;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, Struct, Summary, MAIN_BRANCH,
};

use tributary_operators::Row;

use super::columns::delete_schema;
use super::encode::{encode_files, encode_parquet, group_into_files, Encoded};
use super::table::IcebergTable;
use super::IcebergError;

/// The changes one snapshot commits.
#[derive(Debug, Default)]
pub struct Changes {
    /// Rows to append, in the order they get positions in the new data file.
    pub rows: Vec<Row>,
    /// Rows to delete: (data file, its partition, position).
    pub deletes: Vec<(Arc<str>, Struct, u64)>,
    /// Rows of earlier commits to delete by key (equality deletes on the table's identifier
    /// fields; written whole, matched on the key).
    pub equality_deletes: Vec<Row>,
    /// Extra snapshot-summary properties (`tributary.*`).
    pub summary: HashMap<String, String>,
    /// The rows are the whole table (compaction): earlier files drop out of the snapshot.
    pub replace_all: bool,
}

/// What a commit wrote.
#[derive(Debug)]
pub struct CommitOutcome {
    /// The new data files (one per partition, or more when a large commit is split between
    /// cores) and their partitions.
    pub data_files: Vec<(Arc<str>, Struct)>,
    /// For each appended row, in order: its data file (an index into `data_files`) and
    /// position.
    pub row_locations: Vec<(usize, u64)>,
    /// The new snapshot.
    pub snapshot_id: i64,
}

impl IcebergTable {
    /// Commits `changes` as one snapshot; an error (nothing visible) if another writer
    /// committed to the table since it was loaded.
    pub fn commit(&mut self, changes: Changes, tag: &str) -> Result<CommitOutcome, IcebergError> {
        let snapshot_id = new_snapshot_id();
        let sequence_number = self.metadata.next_sequence_number();
        let location = self.metadata.location().to_owned();
        let file_stem = format!("{tag}-{}", uuid::Uuid::new_v4());

        let added_rows = changes.rows.len() as u64;
        let deleted_rows = changes.deletes.len() as u64;
        let equality_deleted = changes.equality_deletes.len() as u64;
        let (files, row_locations) = group_into_files(&self.partitioner, changes.rows)?;
        let (partitions, rows): (Vec<Struct>, Vec<Vec<Row>>) = files.into_iter().unzip();
        let encoded = encode_files(&self.columns, rows)?;
        let mut data_files = Vec::new();
        let mut written = Vec::new();
        for (i, (partition, file)) in partitions.into_iter().zip(encoded).enumerate() {
            let path = format!("{location}/data/{file_stem}-{i}.parquet");
            data_files.push(self.write_file(
                &path,
                DataContentType::Data,
                file,
                &partition,
                None,
            )?);
            written.push((Arc::from(path.as_str()), partition));
        }
        let mut delete_groups: HashMap<Struct, Vec<(Arc<str>, u64)>> = HashMap::new();
        for (file, partition, position) in changes.deletes {
            delete_groups
                .entry(partition)
                .or_default()
                .push((file, position));
        }
        let mut delete_files = Vec::new();
        for (i, (partition, mut deletes)) in delete_groups.into_iter().enumerate() {
            deletes.sort();
            let path = format!("{location}/data/{file_stem}-{i}-deletes.parquet");
            let files: StringArray = deletes.iter().map(|(f, _)| Some(&**f)).collect();
            let positions: Int64Array = deletes.iter().map(|(_, p)| *p as i64).collect();
            let batch = RecordBatch::try_new(
                delete_schema(),
                vec![Arc::new(files) as ArrayRef, Arc::new(positions)],
            )?;
            let file = (
                encode_parquet(batch.schema(), &batch)?,
                deletes.len() as u64,
            );
            delete_files.push(self.write_file(
                &path,
                DataContentType::PositionDeletes,
                file,
                &partition,
                None,
            )?);
        }

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
                delete_files.push(self.write_file(
                    &path,
                    DataContentType::EqualityDeletes,
                    file,
                    &partition,
                    Some(equality_ids.clone()),
                )?);
            }
        }

        let parent = self.metadata.current_snapshot();
        let parent_id = parent.map(|s| s.snapshot_id());
        let mut summary = totals(
            parent
                .filter(|_| !changes.replace_all)
                .map(|s| &s.summary().additional_properties),
            added_rows,
            (deleted_rows, equality_deleted),
            data_files.len() as u64,
            delete_files.len() as u64,
        );
        summary.extend(changes.summary);
        let operation = if changes.replace_all {
            Operation::Replace
        } else if delete_files.is_empty() {
            Operation::Append
        } else {
            Operation::Overwrite
        };

        let manifest_list_path =
            format!("{location}/metadata/snap-{snapshot_id}-1-{file_stem}.avro");
        let previous_list = parent
            .filter(|_| !changes.replace_all)
            .map(|s| s.manifest_list().to_owned());
        self.block_on(async {
            let mut manifests: Vec<ManifestFile> = match &previous_list {
                Some(list) => self
                    .manifests(list)
                    .await?
                    .consume_entries()
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            };
            if !data_files.is_empty() {
                let path = format!("{location}/metadata/{file_stem}-m0.avro");
                manifests.push(
                    self.write_manifest(&path, snapshot_id, data_files, false)
                        .await?,
                );
            }
            if !delete_files.is_empty() {
                let path = format!("{location}/metadata/{file_stem}-m1.avro");
                manifests.push(
                    self.write_manifest(&path, snapshot_id, delete_files, true)
                        .await?,
                );
            }
            let output = self
                .io
                .new_output(&manifest_list_path)
                .map_err(|e| IcebergError::iceberg(&manifest_list_path, e))?;
            let mut list = ManifestListWriter::v2(
                output
                    .writer()
                    .await
                    .map_err(|e| IcebergError::iceberg(&manifest_list_path, e))?,
                snapshot_id,
                parent_id,
                sequence_number,
            );
            list.add_manifests(manifests.into_iter())
                .map_err(|e| IcebergError::iceberg(&manifest_list_path, e))?;
            list.close()
                .await
                .map_err(|e| IcebergError::iceberg(&manifest_list_path, e))
        })?;

        let snapshot = Snapshot::builder()
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(parent_id)
            .with_sequence_number(sequence_number)
            .with_timestamp_ms(now_ms())
            .with_manifest_list(manifest_list_path)
            .with_summary(Summary {
                operation,
                additional_properties: summary,
            })
            .with_schema_id(self.snapshot_schema_id()?)
            .build();
        self.swap_in_snapshot(snapshot, parent_id)?;
        Ok(CommitOutcome {
            data_files: written,
            row_locations,
            snapshot_id,
        })
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

    /// Makes `snapshot` (built on `parent_id`) current. When another writer changed only the
    /// table's metadata meanwhile (`tributary maintain expire`, properties), the snapshot is
    /// re-applied on top of the reloaded metadata and swapped again; when it committed a new
    /// snapshot (data this writer's row positions may not know), the commit fails, nothing
    /// visible.
    fn swap_in_snapshot(
        &mut self,
        snapshot: Snapshot,
        parent_id: Option<i64>,
    ) -> Result<(), IcebergError> {
        let mut attempts = 0;
        loop {
            let base = self
                .metadata
                .clone()
                .into_builder(Some(self.metadata_location.clone()));
            let metadata = self
                .with_pending_schema(base)?
                .set_branch_snapshot(snapshot.clone(), MAIN_BRANCH)
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
                    self.reload()?;
                    let current = self.metadata.current_snapshot_id();
                    if current != parent_id
                        || self.metadata.next_sequence_number() != snapshot.sequence_number()
                    {
                        return Err(IcebergError::ConcurrentSnapshot {
                            table,
                            snapshot: current.unwrap_or_default(),
                        });
                    }
                    tracing::info!(table = %self.ident, attempt = attempts, "another writer changed the table's metadata during a commit; re-applying the snapshot on top of it");
                }
                outcome => return outcome,
            }
        }
    }

    /// Writes an encoded Parquet file at `path`, and describes it for a manifest.
    fn write_file(
        &self,
        path: &str,
        content: DataContentType,
        (bytes, record_count): Encoded,
        partition: &Struct,
        equality_ids: Option<Vec<i32>>,
    ) -> Result<DataFile, IcebergError> {
        let size = bytes.len() as u64;
        self.block_on(async {
            self.io
                .new_output(path)
                .map_err(|e| IcebergError::iceberg(path, e))?
                .write(Bytes::from(bytes))
                .await
                .map_err(|e| IcebergError::iceberg(path, e))
        })?;
        DataFileBuilder::default()
            .content(content)
            .file_path(path.to_owned())
            .file_format(DataFileFormat::Parquet)
            .partition(partition.clone())
            .record_count(record_count)
            .file_size_in_bytes(size)
            .partition_spec_id(self.metadata.default_partition_spec_id())
            .equality_ids(equality_ids)
            .build()
            .map_err(|e| IcebergError::Io(format!("{path}: {e}")))
    }

    async fn write_manifest(
        &self,
        path: &str,
        snapshot_id: i64,
        files: Vec<DataFile>,
        deletes: bool,
    ) -> Result<ManifestFile, IcebergError> {
        let output = self
            .io
            .new_output(path)
            .map_err(|e| IcebergError::iceberg(path, e))?;
        let builder = ManifestWriterBuilder::new(
            output,
            Some(snapshot_id),
            self.write_schema(),
            self.metadata.default_partition_spec().as_ref().clone(),
        );
        let mut writer = if deletes {
            builder.build_v2_deletes()
        } else {
            builder.build_v2_data()
        };
        for file in files {
            writer
                .add_file(file, -1)
                .map_err(|e| IcebergError::iceberg(path, e))?;
        }
        writer
            .write_manifest_file()
            .await
            .map_err(|e| IcebergError::iceberg(path, e))
    }
}

/// The summary's `added-*` and `total-*` counts, totals carried from the parent.
fn totals(
    parent: Option<&HashMap<String, String>>,
    added_records: u64,
    (deleted_positions, equality_deletes): (u64, u64),
    data_files: u64,
    delete_files: u64,
) -> HashMap<String, String> {
    let previous = |key: &str| -> u64 {
        parent
            .and_then(|p| p.get(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut summary = HashMap::new();
    let mut put = |key: &str, value: u64| {
        summary.insert(key.to_owned(), value.to_string());
    };
    put("added-data-files", data_files);
    put("added-records", added_records);
    put("added-delete-files", delete_files);
    put("added-position-deletes", deleted_positions);
    put("added-equality-deletes", equality_deletes);
    put(
        "total-data-files",
        previous("total-data-files") + data_files,
    );
    put(
        "total-delete-files",
        previous("total-delete-files") + delete_files,
    );
    put("total-records", previous("total-records") + added_records);
    put(
        "total-position-deletes",
        previous("total-position-deletes") + deleted_positions,
    );
    put(
        "total-equality-deletes",
        previous("total-equality-deletes") + equality_deletes,
    );
    summary
}

/// Compare-and-swap attempts per commit when other writers only change metadata.
const MAX_COMMIT_ATTEMPTS: u32 = 10;

fn new_snapshot_id() -> i64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64)) as i64
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
