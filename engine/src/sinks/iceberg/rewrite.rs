//! Compaction while the pipeline runs: size-tiered bin-packing of each partition's small data
//! files, with the delete files that apply only to them folded in. Files are sorted into size
//! classes by their rows (each class four times the one below); a class with
//! `MIN_INPUT_FILES` files is rewritten as one file of the next class, so a row is rewritten
//! about once per class it climbs (write amplification grows with the logarithm of the table,
//! not with its size), and a partition keeps a bounded number of live files. Files of at
//! least three quarters of `write.target-file-size-bytes` are left alone. A data file with
//! `MIN_INPUT_FILES` delete files, or with half of its rows deleted, is rewritten too; so is
//! every small file older than the newest equality delete once a partition has
//! `2 × MIN_INPUT_FILES` of them. Each rewrite is a `replace` snapshot with `DELETED` entries
//! for what it replaced; the table writer moves its row positions to the new file.

use std::collections::{BTreeMap, HashMap, HashSet};

use iceberg::spec::{DataContentType, DataFile, PrimitiveLiteral, Struct};

use tributary_operators::{Key, Row};

use super::columns::DELETE_FILE_PATH_ID;
use super::commit::Changes;
use super::table::{
    IcebergTable, SUMMARY_BACKFILL, SUMMARY_EPOCH, SUMMARY_FIRST_EPOCH, SUMMARY_PIPELINE,
    SUMMARY_POSITIONS, SUMMARY_PROGRESS,
};
use super::IcebergError;

/// Files of one size class a rewrite waits for (Java's `rewrite_data_files` default
/// `min-input-files`).
const MIN_INPUT_FILES: usize = 5;
/// Java's default `write.target-file-size-bytes`: 512 MB.
const TARGET_FILE_BYTES: u64 = 512 << 20;
/// The smallest size class: files of up to 16 rows.
const SMALLEST_CLASS_ROWS: u64 = 16;
/// A rewrite holds its rows in memory: it reads at most this many, so that compaction's
/// memory does not grow with the table.
const MAX_REWRITE_ROWS: u64 = 200_000;
/// Files of this many rows are left alone, like files of the target size: rewriting them
/// again would reach [`MAX_REWRITE_ROWS`] with few files.
const FULL_FILE_ROWS: u64 = MAX_REWRITE_ROWS / 4;

/// Data files of one partition to rewrite as one, the delete files that apply to them, and
/// those of them that apply to no other data file (which the rewrite removes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rewrite {
    /// The data files, in the order their rows are written, with their data sequence numbers.
    pub data: Vec<(String, i64)>,
    /// Position-delete files that may name them.
    pub position_deletes: Vec<String>,
    /// Equality-delete files of the partition: path, sequence number, field ids.
    pub equality_deletes: Vec<(String, i64, Vec<i32>)>,
    /// Delete files that apply to no other data file.
    pub deletes: Vec<String>,
}

impl Rewrite {
    /// The files the rewrite removes.
    fn removed(&self) -> HashSet<String> {
        self.data
            .iter()
            .map(|(path, _)| path)
            .chain(&self.deletes)
            .cloned()
            .collect()
    }
}

/// A live file with its data sequence number.
type Sequenced<'a> = (&'a DataFile, i64);

/// A position-delete file: the one data file it names, or the range of paths it covers.
struct PositionDeletes<'a> {
    file: &'a DataFile,
    referenced: Option<String>,
    paths: Option<(String, String)>,
}

impl IcebergTable {
    /// The rewrites the current snapshot's files call for: none while the table has columns
    /// the pipeline does not write (dropped at the source, or another engine's), which a
    /// rewrite through the pipeline's columns would lose; `tributary maintain compact`
    /// rewrites such a table with all of its columns.
    pub(super) fn plan_rewrites(&self) -> Result<Vec<Rewrite>, IcebergError> {
        let Some(snapshot) = self.metadata.current_snapshot() else {
            return Ok(Vec::new());
        };
        let schema = self.write_schema();
        let unwritten = schema
            .as_struct()
            .fields()
            .iter()
            .find(|field| self.columns.column_of_field(field.id).is_none());
        if let Some(field) = unwritten {
            tracing::debug!(table = %self.ident, column = %field.name, "not compacting: the pipeline does not write every column of the table");
            return Ok(Vec::new());
        }
        let list = snapshot.manifest_list().to_owned();
        let files = self.block_on(self.live_data_files(&list))?;
        let target: u64 = self.property_or("write.target-file-size-bytes", TARGET_FILE_BYTES);
        let mut partitions: BTreeMap<String, Vec<Sequenced>> = BTreeMap::new();
        for (file, sequence) in &files {
            let key = format!("{:?}", file.partition());
            partitions.entry(key).or_default().push((file, *sequence));
        }
        Ok(partitions
            .into_values()
            .filter_map(|files| plan_partition(&files, target * 3 / 4))
            .collect())
    }

    /// Every live data and delete file of a snapshot, described, with its data sequence
    /// number.
    async fn live_data_files(
        &self,
        manifest_list: &str,
    ) -> Result<Vec<(DataFile, i64)>, IcebergError> {
        let mut files = Vec::new();
        for manifest_file in self.manifests(manifest_list).await?.entries() {
            let manifest = self.entries(manifest_file).await?;
            files.extend(manifest.iter().filter(|e| e.is_alive()).map(|e| {
                let sequence = e.sequence_number().unwrap_or(manifest_file.sequence_number);
                (e.data_file().clone(), sequence)
            }));
        }
        Ok(files)
    }

    /// The live rows of the data files of `rewrite` (their delete files applied), in order.
    /// Of the equality deletes only the keys of these rows are kept, so memory follows the
    /// rewrite, not the table.
    pub(super) fn live_rows(&self, rewrite: &Rewrite) -> Result<Vec<Row>, IcebergError> {
        let deleted = self.positions_deleted(&rewrite.position_deletes)?;
        let mut read: Vec<(Row, i64)> = Vec::new();
        for (path, sequence) in &rewrite.data {
            let gone = deleted.get(path.as_str());
            for (position, row) in self.rows_of_file(path, None)?.into_iter().enumerate() {
                if !gone.is_some_and(|g| g.contains(&(position as u64))) {
                    read.push((row, *sequence));
                }
            }
        }
        let mut keys_of: HashMap<Vec<usize>, HashSet<Key>> = HashMap::new();
        let by_key = self.keys_deleted(&rewrite.equality_deletes, &mut |columns, key| {
            keys_of
                .entry(columns.to_vec())
                .or_insert_with(|| read.iter().map(|(row, _)| Key::of(row, columns)).collect())
                .contains(key)
        })?;
        Ok(read
            .into_iter()
            .filter(|(row, sequence)| !by_key.deletes(&Struct::empty(), row, *sequence))
            .map(|(row, _)| row)
            .collect())
    }

    /// The rows of data file `path`: all of them, or those at `positions` (ascending).
    pub(super) fn rows_of_file(
        &self,
        path: &str,
        positions: Option<&[u64]>,
    ) -> Result<Vec<Row>, IcebergError> {
        let mut rows = Vec::new();
        let mut position = 0u64;
        let mut wanted = positions.map(|p| p.iter().peekable());
        for batch in self.read_parquet(path)? {
            for row in self.columns.rows_of_batch(&batch)? {
                let keep = match &mut wanted {
                    None => true,
                    Some(wanted) => wanted.next_if_eq(&&position).is_some(),
                };
                if keep {
                    rows.push(row);
                }
                position += 1;
            }
        }
        Ok(rows)
    }

    /// The `tributary.*` summary of a snapshot that rewrites the current one's rows without
    /// changing them (compaction): its pipeline, epoch and positions, and no changes of its
    /// own (`first-epoch` after `epoch`), so restarts and consistent cuts read it as before.
    pub(super) fn unchanged_state_summary(&self) -> HashMap<String, String> {
        let Some(current) = self.metadata.current_snapshot() else {
            return HashMap::new();
        };
        let current = &current.summary().additional_properties;
        let mut summary: HashMap<String, String> = [
            SUMMARY_PIPELINE,
            SUMMARY_EPOCH,
            SUMMARY_POSITIONS,
            SUMMARY_PROGRESS,
            SUMMARY_BACKFILL,
        ]
        .iter()
        .filter_map(|key| Some((key.to_string(), current.get(*key)?.clone())))
        .collect();
        if let Some(epoch) = summary
            .get(SUMMARY_EPOCH)
            .and_then(|e| e.parse::<u64>().ok())
        {
            summary.insert(SUMMARY_FIRST_EPOCH.to_owned(), (epoch + 1).to_string());
        }
        summary
    }

    /// Commits `rows` (the live rows of `rewrite`'s files) in their place as a `replace`
    /// snapshot that keeps the current snapshot's resume positions; returns where each row
    /// went.
    pub(super) fn commit_rewrite(
        &mut self,
        rewrite: &Rewrite,
        rows: Vec<Row>,
    ) -> Result<super::commit::CommitOutcome, IcebergError> {
        let summary = self.unchanged_state_summary();
        let removed = rewrite.removed();
        let rows_written = rows.len();
        let outcome = self.commit(
            Changes {
                rows,
                summary,
                removed,
                ..Changes::default()
            },
            "compacted",
        )?;
        tracing::info!(table = %self.ident, data_files = rewrite.data.len(), delete_files = rewrite.deletes.len(), rows = rows_written, "compacted small iceberg files");
        Ok(outcome)
    }
}

/// The size class of a file of `rows` rows.
fn size_class(rows: u64) -> u32 {
    let mut class = 0;
    let mut bound = SMALLEST_CLASS_ROWS;
    while rows > bound {
        class += 1;
        bound = bound.saturating_mul(4);
    }
    class
}

/// The rewrite one partition's live files (data and delete) call for, if any.
fn plan_partition(files: &[Sequenced], min_file_bytes: u64) -> Option<Rewrite> {
    let of = |content: DataContentType| {
        files
            .iter()
            .filter(move |(f, _)| f.content_type() == content)
    };
    let data: Vec<Sequenced> = of(DataContentType::Data).copied().collect();
    let equality: Vec<Sequenced> = of(DataContentType::EqualityDeletes).copied().collect();
    let deletes: Vec<PositionDeletes> = of(DataContentType::PositionDeletes)
        .map(|(file, _)| PositionDeletes {
            file,
            referenced: file.referenced_data_file().or_else(|| {
                let (low, high) = path_bounds(file)?;
                (low == high).then_some(low)
            }),
            paths: path_bounds(file),
        })
        .collect();
    let small = |file: &DataFile| {
        file.file_size_in_bytes() < min_file_bytes && file.record_count() < FULL_FILE_ROWS
    };
    let mut selected: HashSet<&str> = HashSet::new();
    // Size classes with enough small files.
    let mut classes: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (file, _) in data.iter().filter(|(f, _)| small(f)) {
        classes
            .entry(size_class(file.record_count()))
            .or_default()
            .push(file.file_path());
    }
    for class in classes.values().filter(|c| c.len() >= MIN_INPUT_FILES) {
        selected.extend(class.iter().copied());
    }
    // Files with many deletes.
    let mut deleted: HashMap<&str, (usize, u64)> = HashMap::new();
    for delete in &deletes {
        if let Some(referenced) = &delete.referenced {
            let entry = deleted.entry(referenced.as_str()).or_default();
            entry.0 += 1;
            entry.1 += delete.file.record_count();
        }
    }
    for (file, _) in &data {
        if let Some((count, rows)) = deleted.get(file.file_path()) {
            if *count >= MIN_INPUT_FILES || rows * 2 >= file.record_count() {
                selected.insert(file.file_path());
            }
        }
    }
    // Delete files covering several data files: once there are many, their data files too.
    let shared: Vec<&PositionDeletes> = deletes.iter().filter(|d| d.referenced.is_none()).collect();
    if shared.len() >= MIN_INPUT_FILES {
        for delete in &shared {
            selected.extend(
                data.iter()
                    .map(|(f, _)| f.file_path())
                    .filter(|path| covers(delete, path)),
            );
        }
    }
    // Many equality deletes: every small file older than the newest, so that they can go.
    if equality.len() >= 2 * MIN_INPUT_FILES {
        let newest = equality.iter().map(|(_, s)| *s).max().unwrap_or_default();
        selected.extend(
            data.iter()
                .filter(|(f, s)| small(f) && *s < newest)
                .map(|(f, _)| f.file_path()),
        );
    }
    // The oldest files first, up to what a rewrite may hold in memory.
    let mut oldest_first: Vec<&Sequenced> = data
        .iter()
        .filter(|(f, _)| selected.contains(f.file_path()))
        .collect();
    oldest_first.sort_by_key(|(f, sequence)| (*sequence, f.file_path()));
    let mut rows = 0;
    let selected: HashSet<&str> = oldest_first
        .into_iter()
        .take_while(|(f, _)| {
            rows += f.record_count();
            rows <= MAX_REWRITE_ROWS
        })
        .map(|(f, _)| f.file_path())
        .collect();
    if selected.is_empty() {
        return None;
    }
    let kept_data = || {
        data.iter()
            .filter(|(f, _)| !selected.contains(f.file_path()))
    };
    let mut folded: Vec<String> = deletes
        .iter()
        .filter(|delete| match &delete.referenced {
            Some(referenced) => selected.contains(referenced.as_str()),
            None => kept_data().all(|(f, _)| !covers(delete, f.file_path())),
        })
        .map(|delete| delete.file.file_path().to_owned())
        .collect();
    // An equality delete applies to older data files: it goes once none is left.
    folded.extend(
        equality
            .iter()
            .filter(|(_, delete)| kept_data().all(|(_, s)| s >= delete))
            .map(|(f, _)| f.file_path().to_owned()),
    );
    if selected.len() < 2 && folded.is_empty() {
        return None;
    }
    let mut inputs: Vec<(String, i64)> = data
        .iter()
        .filter(|(f, _)| selected.contains(f.file_path()))
        .map(|(f, s)| (f.file_path().to_owned(), *s))
        .collect();
    inputs.sort();
    Some(Rewrite {
        position_deletes: deletes
            .iter()
            .filter(|d| inputs.iter().any(|(path, _)| covers(d, path)))
            .map(|d| d.file.file_path().to_owned())
            .collect(),
        equality_deletes: equality
            .iter()
            .map(|(f, s)| {
                let ids = f.equality_ids().unwrap_or_default();
                (f.file_path().to_owned(), *s, ids)
            })
            .collect(),
        data: inputs,
        deletes: folded,
    })
}

/// Whether position-delete file `delete` may hold deletes of data file `path`.
fn covers(delete: &PositionDeletes, path: &str) -> bool {
    match (&delete.referenced, &delete.paths) {
        (Some(referenced), _) => referenced == path,
        (None, Some((low, high))) => low.as_str() <= path && path <= high.as_str(),
        (None, None) => true,
    }
}

/// The lowest and highest data-file path a position-delete file names, from its metrics.
fn path_bounds(file: &DataFile) -> Option<(String, String)> {
    let text = |bounds: &HashMap<i32, iceberg::spec::Datum>| match bounds
        .get(&DELETE_FILE_PATH_ID)?
        .literal()
    {
        PrimitiveLiteral::String(path) => Some(path.clone()),
        _ => None,
    };
    Some((text(file.lower_bounds())?, text(file.upper_bounds())?))
}

/// Where the live rows of a rewrite's input files went.
#[derive(Debug)]
pub(super) struct Moved {
    /// Input file (an index of the writer's) → its live positions, ascending, and the index
    /// of the first of its rows among the rewritten rows.
    pub inputs: HashMap<u32, (Vec<u64>, usize)>,
}

impl Moved {
    /// The rewritten row that was at `position` of input `file`.
    pub fn row_of(&self, file: u32, position: u64) -> Option<usize> {
        let (positions, first) = self.inputs.get(&file)?;
        positions.binary_search(&position).ok().map(|k| first + k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_file(path: &str, rows: u64) -> DataFile {
        iceberg::spec::DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(path.to_owned())
            .file_format(iceberg::spec::DataFileFormat::Parquet)
            .partition(Struct::empty())
            .partition_spec_id(0)
            .record_count(rows)
            .file_size_in_bytes(rows * 10)
            .build()
            .unwrap()
    }

    #[test]
    fn a_rewrite_reads_at_most_its_row_budget_oldest_files_first() {
        // Twelve files just below the full size: one class, but only four fit.
        let files: Vec<DataFile> = (0..12)
            .map(|i| data_file(&format!("f{i:02}"), FULL_FILE_ROWS - 1))
            .collect();
        let sequenced: Vec<Sequenced> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f, 12 - i as i64))
            .collect();
        let rewrite = plan_partition(&sequenced, u64::MAX).unwrap();
        let read: Vec<&str> = rewrite.data.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(read, ["f08", "f09", "f10", "f11"], "the oldest four");
        // Full files are left alone.
        let full: Vec<DataFile> = (0..6)
            .map(|i| data_file(&format!("g{i}"), FULL_FILE_ROWS))
            .collect();
        let sequenced: Vec<Sequenced> = full.iter().map(|f| (f, 1)).collect();
        assert_eq!(plan_partition(&sequenced, u64::MAX), None);
    }

    #[test]
    fn size_classes_grow_fourfold() {
        assert_eq!(size_class(1), 0);
        assert_eq!(size_class(16), 0);
        assert_eq!(size_class(17), 1);
        assert_eq!(size_class(64), 1);
        assert_eq!(size_class(1024), 3);
    }
}
