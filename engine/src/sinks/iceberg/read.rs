//! Reading a table back: its live files, the rows of its current snapshot with position and
//! equality deletes applied (for recovery, compaction and `maintain`), and the manifests it
//! reads (cached: files never change).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use bytes::Bytes;
use iceberg::spec::{
    DataContentType, ManifestEntryRef, ManifestFile, ManifestList, ManifestStatus, Struct,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use tributary_operators::{Key, Row};

use super::table::IcebergTable;
use super::IcebergError;

/// A snapshot's live files: data and equality-delete files with their partitions and data
/// sequence numbers, and position-delete files.
#[derive(Debug, Default)]
struct LiveFiles {
    data: Vec<(DataFileRef, i64)>,
    position_deletes: Vec<String>,
    /// With the field ids each file deletes by.
    equality_deletes: Vec<(String, Struct, i64, Vec<i32>)>,
}

/// What equality deletes delete: by the columns they match on (positions in the pipeline's
/// rows), (partition, key) → the newest delete's sequence number.
#[derive(Debug, Default)]
pub(super) struct KeysDeleted(HashMap<Vec<usize>, HashMap<(Struct, Key), i64>>);

impl KeysDeleted {
    /// Whether `row` of a data file of `partition` with data sequence number `sequence` is
    /// deleted (by a delete with a higher sequence number).
    pub(super) fn deletes(&self, partition: &Struct, row: &Row, sequence: i64) -> bool {
        self.0.iter().any(|(columns, keys)| {
            keys.get(&(partition.clone(), Key::of(row, columns)))
                .is_some_and(|delete| *delete > sequence)
        })
    }
}

/// A data file as deletes name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataFileRef {
    /// Its path.
    pub path: Arc<str>,
    /// Its partition.
    pub partition: Struct,
    /// The partition spec it was written with (its deletes carry the same).
    pub spec_id: i32,
}

/// A live row of the table and where it is stored.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// The data file.
    pub file: Arc<DataFileRef>,
    /// The row's position in that file.
    pub position: u64,
    /// The row.
    pub row: Row,
}

impl IcebergTable {
    /// Every live row of the current snapshot with its file and position (position and
    /// equality deletes applied).
    pub fn scan(&self) -> Result<Vec<StoredRow>, IcebergError> {
        let Some(snapshot) = self.metadata.current_snapshot() else {
            return Ok(Vec::new());
        };
        let files = self.block_on(self.live_files(snapshot.manifest_list()))?;
        let deleted = self.positions_deleted(&files.position_deletes)?;
        let mut by_key = KeysDeleted::default();
        for (path, partition, sequence, ids) in &files.equality_deletes {
            let file = (path.as_str(), partition, *sequence, ids.as_slice());
            self.read_equality_deletes(&mut by_key, file, &mut |_, _| true)?;
        }
        let mut rows = Vec::new();
        for (file, sequence) in files.data {
            let gone = deleted.get(&*file.path);
            let (path, partition) = (Arc::clone(&file.path), file.partition.clone());
            let file = Arc::new(file);
            let mut position = 0u64;
            for batch in self.read_parquet(&path)? {
                for row in self.columns.rows_of_batch(&batch)? {
                    let deleted = by_key.deletes(&partition, &row, sequence);
                    if !deleted && !gone.is_some_and(|g| g.contains(&position)) {
                        rows.push(StoredRow {
                            file: Arc::clone(&file),
                            position,
                            row,
                        });
                    }
                    position += 1;
                }
            }
        }
        Ok(rows)
    }

    /// The positions position-delete files `paths` delete, by data file.
    pub(super) fn positions_deleted(
        &self,
        paths: &[String],
    ) -> Result<HashMap<String, HashSet<u64>>, IcebergError> {
        let mut deleted: HashMap<String, HashSet<u64>> = HashMap::new();
        for path in paths {
            for batch in self.read_parquet(path)? {
                let unreadable = || {
                    IcebergError::SchemaMismatch(format!(
                        "{path}: a position-delete file without (file_path string, pos long)"
                    ))
                };
                let positions = batch
                    .column(1)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(unreadable)?;
                let column = batch.column(0);
                let files: Vec<&str> =
                    match (column.as_string_opt::<i32>(), column.as_string_opt::<i64>()) {
                        (Some(files), _) => files.iter().map(|f| f.unwrap_or_default()).collect(),
                        (None, Some(files)) => {
                            files.iter().map(|f| f.unwrap_or_default()).collect()
                        }
                        (None, None) => return Err(unreadable()),
                    };
                for (file, position) in files.into_iter().zip(positions.values()) {
                    deleted
                        .entry(file.to_owned())
                        .or_default()
                        .insert(*position as u64);
                }
            }
        }
        Ok(deleted)
    }

    /// The keys equality-delete files of one partition delete: (path, sequence number, field
    /// ids) each.
    pub(super) fn keys_deleted(
        &self,
        files: &[(String, i64, Vec<i32>)],
        wanted: &mut dyn FnMut(&[usize], &Key) -> bool,
    ) -> Result<KeysDeleted, IcebergError> {
        let mut by_key = KeysDeleted::default();
        for (path, sequence, ids) in files {
            let file = (path.as_str(), &Struct::empty(), *sequence, ids.as_slice());
            self.read_equality_deletes(&mut by_key, file, wanted)?;
        }
        Ok(by_key)
    }

    /// Adds what an equality-delete file deletes (by its own `equality_ids`) to `by_key`: the
    /// keys `wanted` (columns, key) says.
    fn read_equality_deletes(
        &self,
        by_key: &mut KeysDeleted,
        (path, partition, sequence, ids): (&str, &Struct, i64, &[i32]),
        wanted: &mut dyn FnMut(&[usize], &Key) -> bool,
    ) -> Result<(), IcebergError> {
        let columns = ids
            .iter()
            .map(|id| {
                self.columns.column_of_field(*id).ok_or_else(|| {
                    IcebergError::SchemaMismatch(format!(
                        "{path} deletes by field {id}, which the pipeline does not write"
                    ))
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let keys = by_key.0.entry(columns.clone()).or_default();
        for batch in self.read_parquet(path)? {
            for key in self.columns.keys_of_batch(&batch, &columns)? {
                if !wanted(&columns, &key) {
                    continue;
                }
                let newest = keys.entry((partition.clone(), key)).or_default();
                *newest = (*newest).max(sequence);
            }
        }
        Ok(())
    }

    /// The paths of the current snapshot's live data and delete files.
    pub(super) fn live_file_paths(&self) -> Result<HashSet<String>, IcebergError> {
        let Some(snapshot) = self.metadata.current_snapshot() else {
            return Ok(HashSet::new());
        };
        let files = self.block_on(self.live_files(snapshot.manifest_list()))?;
        Ok(files
            .data
            .into_iter()
            .map(|(file, _)| file.path.to_string())
            .chain(files.equality_deletes.into_iter().map(|(path, ..)| path))
            .chain(files.position_deletes)
            .collect())
    }

    /// The manifests of a snapshot's manifest list.
    pub(super) async fn manifests(
        &self,
        manifest_list: &str,
    ) -> Result<ManifestList, IcebergError> {
        let bytes = self
            .io
            .new_input(manifest_list)
            .map_err(|e| IcebergError::iceberg(manifest_list, e))?
            .read()
            .await
            .map_err(|e| IcebergError::iceberg(manifest_list, e))?;
        ManifestList::parse_with_version(&bytes, self.metadata.format_version())
            .map_err(|e| IcebergError::iceberg(manifest_list, e))
    }

    /// The entries of a manifest (with inherited snapshot ids and sequence numbers).
    pub(super) async fn entries(
        &self,
        manifest: &ManifestFile,
    ) -> Result<Arc<[ManifestEntryRef]>, IcebergError> {
        let path = &manifest.manifest_path;
        if let Some(entries) = self
            .manifest_cache
            .lock()
            .ok()
            .and_then(|c| c.get(path).cloned())
        {
            return Ok(entries);
        }
        let (entries, _) = manifest
            .load_manifest(&self.io)
            .await
            .map_err(|e| IcebergError::iceberg(path, e))?
            .into_parts();
        let entries: Arc<[ManifestEntryRef]> = entries.into();
        if let Ok(mut cache) = self.manifest_cache.lock() {
            cache.insert(path.clone(), Arc::clone(&entries));
        }
        Ok(entries)
    }

    /// Forgets the entries of manifests other than `kept`.
    pub(super) fn forget_manifests_but(&self, kept: &[ManifestFile]) {
        let kept: HashSet<&str> = kept.iter().map(|m| m.manifest_path.as_str()).collect();
        if let Ok(mut cache) = self.manifest_cache.lock() {
            cache.retain(|path, _| kept.contains(path.as_str()));
        }
    }

    /// The live files of a snapshot.
    async fn live_files(&self, manifest_list: &str) -> Result<LiveFiles, IcebergError> {
        let mut files = LiveFiles::default();
        for manifest_file in self.manifests(manifest_list).await?.entries() {
            let manifest = self.entries(manifest_file).await?;
            for entry in manifest.iter() {
                if entry.status() == ManifestStatus::Deleted {
                    continue;
                }
                let path = entry.file_path().to_owned();
                let partition = entry.data_file().partition().clone();
                let sequence = entry
                    .sequence_number()
                    .unwrap_or(manifest_file.sequence_number);
                match entry.content_type() {
                    DataContentType::Data => {
                        let file = DataFileRef {
                            path: Arc::from(path),
                            partition,
                            spec_id: manifest_file.partition_spec_id,
                        };
                        files.data.push((file, sequence))
                    }
                    DataContentType::PositionDeletes => files.position_deletes.push(path),
                    DataContentType::EqualityDeletes => {
                        let ids = entry.data_file().equality_ids().unwrap_or_default();
                        files
                            .equality_deletes
                            .push((path, partition, sequence, ids))
                    }
                }
            }
        }
        Ok(files)
    }

    pub(super) fn read_parquet(
        &self,
        path: &str,
    ) -> Result<Vec<arrow_array::RecordBatch>, IcebergError> {
        let bytes: Bytes = self
            .block_on(async { self.io.new_input(path)?.read().await })
            .map_err(|e| IcebergError::iceberg(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(|e| IcebergError::Io(format!("{path}: {e}")))?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IcebergError::Io(format!("{path}: {e}")))
    }
}
