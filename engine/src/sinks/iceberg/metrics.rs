//! Column metrics of the Parquet files a commit writes, read from their footers as the
//! Iceberg spec asks: value and null counts, column sizes, and lower/upper bounds in the spec's
//! single-value serialization (strings and binaries truncated to 16 characters or bytes, as
//! Java's default `truncate(16)` metrics mode does; position-delete files keep full paths, so
//! that readers can tell which data file they apply to).

use std::collections::HashMap;

use bytes::Bytes;
use iceberg::spec::{DataFileBuilder, Datum, PrimitiveType};
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::statistics::Statistics;

use super::IcebergError;

/// Characters (or bytes) kept of string and binary bounds.
const TRUNCATE_BOUNDS_TO: usize = 16;

/// A file's column metrics, by field id.
#[derive(Debug, Default)]
pub(super) struct FileMetrics {
    column_sizes: HashMap<i32, u64>,
    value_counts: HashMap<i32, u64>,
    null_value_counts: HashMap<i32, u64>,
    lower_bounds: HashMap<i32, Datum>,
    upper_bounds: HashMap<i32, Datum>,
    split_offsets: Vec<i64>,
}

/// Whether string and binary bounds are truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bounds {
    /// To [`TRUNCATE_BOUNDS_TO`].
    Truncated,
    /// Whole.
    Full,
}

impl FileMetrics {
    /// The metrics of the Parquet file `bytes`, whose columns carry field ids; `type_of` gives
    /// each field's type (fields it does not know get counts but no bounds).
    pub(super) fn of(
        file: &Bytes,
        type_of: impl Fn(i32) -> Option<PrimitiveType>,
        bounds: Bounds,
    ) -> Result<Self, IcebergError> {
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(file)
            .map_err(|e| IcebergError::Io(format!("reading back a parquet footer: {e}")))?;
        let mut metrics = FileMetrics::default();
        let mut lowers: HashMap<i32, Datum> = HashMap::new();
        let mut uppers: HashMap<i32, Datum> = HashMap::new();
        let mut unbounded = std::collections::HashSet::new();
        for group in metadata.row_groups() {
            if let Some(offset) = group.file_offset() {
                metrics.split_offsets.push(offset);
            }
            for column in group.columns() {
                let info = column.column_descr().self_type().get_basic_info();
                if !info.has_id() {
                    continue;
                }
                let id = info.id();
                *metrics.column_sizes.entry(id).or_default() += column.compressed_size() as u64;
                *metrics.value_counts.entry(id).or_default() += column.num_values() as u64;
                let Some(statistics) = column.statistics() else {
                    unbounded.insert(id);
                    continue;
                };
                if let Some(nulls) = statistics.null_count_opt() {
                    *metrics.null_value_counts.entry(id).or_default() += nulls;
                }
                let Some((ty, (low, high))) =
                    type_of(id).and_then(|ty| Some((ty.clone(), min_max(statistics, &ty)?)))
                else {
                    if statistics.min_bytes_opt().is_some() {
                        unbounded.insert(id);
                    }
                    continue;
                };
                let low = Datum::try_from_bytes(&low, ty.clone());
                let high = Datum::try_from_bytes(&high, ty);
                let (Ok(low), Ok(high)) = (low, high) else {
                    unbounded.insert(id);
                    continue;
                };
                match lowers.get(&id) {
                    Some(held) if held <= &low => {}
                    _ => {
                        lowers.insert(id, low);
                    }
                }
                match uppers.get(&id) {
                    Some(held) if held >= &high => {}
                    _ => {
                        uppers.insert(id, high);
                    }
                }
            }
        }
        for id in unbounded {
            lowers.remove(&id);
            uppers.remove(&id);
        }
        for (id, low) in lowers {
            if let Some(low) = truncate_lower(low, bounds) {
                metrics.lower_bounds.insert(id, low);
            }
        }
        for (id, high) in uppers {
            if let Some(high) = truncate_upper(high, bounds) {
                metrics.upper_bounds.insert(id, high);
            }
        }
        Ok(metrics)
    }

    /// Puts the metrics on a data or delete file's description.
    pub(super) fn describe(self, file: &mut DataFileBuilder) {
        file.column_sizes(self.column_sizes)
            .value_counts(self.value_counts)
            .null_value_counts(self.null_value_counts)
            .lower_bounds(self.lower_bounds)
            .upper_bounds(self.upper_bounds)
            .split_offsets(Some(self.split_offsets));
    }
}

/// A column chunk's min and max in Iceberg's single-value serialization for type `ty`
/// (decimals stored as Parquet integers become big-endian unscaled values).
fn min_max(statistics: &Statistics, ty: &PrimitiveType) -> Option<(Vec<u8>, Vec<u8>)> {
    let decimal = matches!(ty, PrimitiveType::Decimal { .. });
    let unscaled = |v: i128| v.to_be_bytes().to_vec();
    Some(match statistics {
        Statistics::Boolean(s) => (vec![u8::from(*s.min_opt()?)], vec![u8::from(*s.max_opt()?)]),
        Statistics::Int32(s) if decimal => (
            unscaled(i128::from(*s.min_opt()?)),
            unscaled(i128::from(*s.max_opt()?)),
        ),
        Statistics::Int64(s) if decimal => (
            unscaled(i128::from(*s.min_opt()?)),
            unscaled(i128::from(*s.max_opt()?)),
        ),
        Statistics::Int32(s) => (
            s.min_opt()?.to_le_bytes().to_vec(),
            s.max_opt()?.to_le_bytes().to_vec(),
        ),
        Statistics::Int64(s) => (
            s.min_opt()?.to_le_bytes().to_vec(),
            s.max_opt()?.to_le_bytes().to_vec(),
        ),
        Statistics::Float(s) => (
            s.min_opt()?.to_le_bytes().to_vec(),
            s.max_opt()?.to_le_bytes().to_vec(),
        ),
        Statistics::Double(s) => (
            s.min_opt()?.to_le_bytes().to_vec(),
            s.max_opt()?.to_le_bytes().to_vec(),
        ),
        Statistics::ByteArray(s) => (s.min_opt()?.data().to_vec(), s.max_opt()?.data().to_vec()),
        Statistics::FixedLenByteArray(s) => {
            (s.min_opt()?.data().to_vec(), s.max_opt()?.data().to_vec())
        }
        Statistics::Int96(_) => return None,
    })
}

/// A lower bound cut to its first characters (a prefix sorts no later).
fn truncate_lower(bound: Datum, bounds: Bounds) -> Option<Datum> {
    if bounds == Bounds::Full {
        return Some(bound);
    }
    match bound.data_type() {
        PrimitiveType::String => {
            let text = bound.to_human_string();
            Some(Datum::string(
                text.chars().take(TRUNCATE_BOUNDS_TO).collect::<String>(),
            ))
        }
        PrimitiveType::Binary => match bound.literal() {
            iceberg::spec::PrimitiveLiteral::Binary(bytes) => Some(Datum::binary(
                bytes.iter().copied().take(TRUNCATE_BOUNDS_TO),
            )),
            _ => Some(bound),
        },
        _ => Some(bound),
    }
}

/// An upper bound cut to its first characters with the last one incremented (so it still
/// sorts no earlier than every value); none when no character can be incremented.
fn truncate_upper(bound: Datum, bounds: Bounds) -> Option<Datum> {
    if bounds == Bounds::Full {
        return Some(bound);
    }
    match (bound.data_type(), bound.literal()) {
        (PrimitiveType::String, iceberg::spec::PrimitiveLiteral::String(text)) => {
            let mut chars: Vec<char> = text.chars().collect();
            if chars.len() <= TRUNCATE_BOUNDS_TO {
                return Some(bound);
            }
            chars.truncate(TRUNCATE_BOUNDS_TO);
            while let Some(last) = chars.pop() {
                let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
                if let Some(next) = next {
                    chars.push(next);
                    return Some(Datum::string(chars.into_iter().collect::<String>()));
                }
            }
            None
        }
        (PrimitiveType::Binary, iceberg::spec::PrimitiveLiteral::Binary(bytes)) => {
            if bytes.len() <= TRUNCATE_BOUNDS_TO {
                return Some(bound);
            }
            let mut bytes = bytes[..TRUNCATE_BOUNDS_TO].to_vec();
            while let Some(last) = bytes.pop() {
                if last < u8::MAX {
                    bytes.push(last + 1);
                    return Some(Datum::binary(bytes));
                }
            }
            None
        }
        _ => Some(bound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_bounded_by_truncated_prefixes() {
        let low = truncate_lower(
            Datum::string("abcdefghijklmnopqrstuvwxyz"),
            Bounds::Truncated,
        );
        assert_eq!(low, Some(Datum::string("abcdefghijklmnop")));
        let high = truncate_upper(
            Datum::string("abcdefghijklmnopqrstuvwxyz"),
            Bounds::Truncated,
        );
        assert_eq!(high, Some(Datum::string("abcdefghijklmnoq")));
        let short = truncate_upper(Datum::string("abc"), Bounds::Truncated);
        assert_eq!(short, Some(Datum::string("abc")));
        let full = truncate_upper(Datum::string("abcdefghijklmnopqrstuvwxyz"), Bounds::Full);
        assert_eq!(full, Some(Datum::string("abcdefghijklmnopqrstuvwxyz")));
        let binary = truncate_upper(Datum::binary([0xFFu8; 20]), Bounds::Truncated);
        assert_eq!(binary, None, "no byte can be incremented");
    }
}
