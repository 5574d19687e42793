//! A commit's rows as Parquet: rows grouped into data files (one per partition, and a large
//! commit's split so that every core encodes a share), each encoded on a thread of its own
//! when there are several. Encoding (rows → Arrow → zstd Parquet) is most of a commit's work.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema as ArrowSchema;
use iceberg::spec::Struct;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use tributary_operators::Row;

use super::columns::ColumnMap;
use super::partition::Partitioner;
use super::IcebergError;

/// Fewest rows a data file gets when a commit is split between cores: smaller commits write
/// one file per partition.
const MIN_ROWS_PER_SPLIT_FILE: usize = 100_000;

/// Rows grouped into data files (with each file's partition, in order of first appearance),
/// and each row's file and position in it.
pub(super) type FileGroups = (Vec<(Struct, Vec<Row>)>, Vec<(usize, u64)>);

/// A data file's encoded bytes and its row count.
pub(super) type Encoded = (Vec<u8>, u64);

/// The cores to encode on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Groups `rows` into data files: by partition, and no file over an even share of the rows
/// per core (but at least [`MIN_ROWS_PER_SPLIT_FILE`]).
pub(super) fn group_into_files(
    partitioner: &Partitioner,
    rows: Vec<Row>,
) -> Result<FileGroups, IcebergError> {
    let per_file = rows.len().div_ceil(cores()).max(MIN_ROWS_PER_SPLIT_FILE);
    group_into_files_of(partitioner, rows, per_file)
}

/// Groups `rows` into data files by partition, at most `per_file` rows each.
fn group_into_files_of(
    partitioner: &Partitioner,
    rows: Vec<Row>,
    per_file: usize,
) -> Result<FileGroups, IcebergError> {
    let mut files: Vec<(Struct, Vec<Row>)> = Vec::new();
    let mut locations = Vec::with_capacity(rows.len());
    let unpartitioned = partitioner.is_unpartitioned();
    // The file each partition's rows go to now.
    let mut open: HashMap<Struct, usize> = HashMap::new();
    for row in rows {
        let partition = match unpartitioned {
            true => None,
            false => Some(partitioner.partition_of(&row)?),
        };
        let current = match &partition {
            None => files.len().checked_sub(1),
            Some(partition) => open.get(partition).copied(),
        };
        let file = match current {
            Some(file) if files[file].1.len() < per_file => file,
            _ => {
                let file = files.len();
                files.push((partition.clone().unwrap_or_else(Struct::empty), Vec::new()));
                if let Some(partition) = partition {
                    open.insert(partition, file);
                }
                file
            }
        };
        locations.push((file, files[file].1.len() as u64));
        files[file].1.push(row);
    }
    Ok((files, locations))
}

/// Encodes each file's rows as Parquet, in order; several files on as many threads as there
/// are cores.
pub(super) fn encode_files(
    columns: &ColumnMap,
    files: Vec<Vec<Row>>,
) -> Result<Vec<Encoded>, IcebergError> {
    let encode = |rows: Vec<Row>| -> Result<Encoded, IcebergError> {
        let batch = columns.to_batch(rows)?;
        Ok((
            encode_parquet(batch.schema(), &batch)?,
            batch.num_rows() as u64,
        ))
    };
    let lanes = cores().min(files.len());
    if lanes <= 1 {
        return files.into_iter().map(encode).collect();
    }
    // File `i` goes to lane `i % lanes`.
    let mut work: Vec<Vec<(usize, Vec<Row>)>> = (0..lanes).map(|_| Vec::new()).collect();
    for (i, rows) in files.into_iter().enumerate() {
        work[i % lanes].push((i, rows));
    }
    let mut encoded = std::thread::scope(|scope| {
        let encode = &encode;
        let handles: Vec<_> = work
            .into_iter()
            .map(|lane| {
                scope.spawn(move || {
                    lane.into_iter()
                        .map(|(i, rows)| encode(rows).map(|file| (i, file)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut encoded = Vec::new();
        for handle in handles {
            let lane = handle
                .join()
                .map_err(|_| IcebergError::Io("a Parquet encoding thread panicked".to_owned()))?;
            encoded.extend(lane?);
        }
        Ok::<_, IcebergError>(encoded)
    })?;
    encoded.sort_by_key(|(i, _)| *i);
    Ok(encoded.into_iter().map(|(_, file)| file).collect())
}

/// Encodes one record batch as a Parquet file (zstd).
pub fn encode_parquet(
    schema: Arc<ArrowSchema>,
    batch: &RecordBatch,
) -> Result<Vec<u8>, IcebergError> {
    encode_parquet_with(schema, batch, Statistics::Truncated)
}

/// How long the min and max of string columns in a Parquet footer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Statistics {
    /// Cut at Parquet's default length (data files: JSON columns may be long).
    Truncated,
    /// Whole (position deletes: readers match data-file paths against them).
    Whole,
}

/// [`encode_parquet`] with the footer statistics `statistics` says.
pub(super) fn encode_parquet_with(
    schema: Arc<ArrowSchema>,
    batch: &RecordBatch,
    statistics: Statistics,
) -> Result<Vec<u8>, IcebergError> {
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(1 << 20));
    if statistics == Statistics::Whole {
        properties = properties.set_statistics_truncate_length(None);
    }
    let properties = properties.build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties))
        .map_err(|e| IcebergError::Io(format!("parquet: {e}")))?;
    writer
        .write(batch)
        .map_err(|e| IcebergError::Io(format!("parquet: {e}")))?;
    writer
        .into_inner()
        .map_err(|e| IcebergError::Io(format!("parquet: {e}")))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use tributary_operators::{Column, ColumnType, Schema, Value};

    use super::*;
    use crate::sinks::iceberg::iceberg_schema;

    #[test]
    fn a_commit_split_into_files_reads_back_in_order() {
        let schema = Schema::new(vec![Column::new("id", ColumnType::Int64)]);
        let table = iceberg_schema(&schema, &[0]).unwrap();
        let columns = ColumnMap::new(&schema, &table).unwrap();
        let rows: Vec<Row> = (0..10).map(|i| Row::new(vec![Value::Int(i)])).collect();
        let (files, locations) =
            group_into_files_of(&Partitioner::unpartitioned(), rows.clone(), 4).unwrap();
        let sizes: Vec<usize> = files.iter().map(|(_, rows)| rows.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(
            (locations[0], locations[5], locations[9]),
            ((0, 0), (1, 1), (2, 1))
        );
        // More files than cores: each core encodes several, and they come back in order.
        let files: Vec<Vec<Row>> = files.into_iter().map(|(_, rows)| rows).collect();
        let encoded = encode_files(&columns, files).unwrap();
        let mut read = Vec::new();
        for (bytes, count) in encoded {
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap();
            let before = read.len();
            for batch in reader {
                read.extend(columns.rows_of_batch(&batch.unwrap()).unwrap());
            }
            assert_eq!((read.len() - before) as u64, count);
        }
        assert_eq!(read, rows);
    }
}
