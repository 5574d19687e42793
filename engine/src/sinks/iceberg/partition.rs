//! Partitioning: the partition spec a pipeline declares for a new table (identity, year, month,
//! day, hour, bucket), and each row's partition values under the table's spec.

use iceberg::spec::UnboundPartitionSpec;
use iceberg::spec::{Datum, Literal, PartitionSpec, Schema as IcebergSchema, Struct, Transform};
use iceberg::transform::{create_transform_function, BoxedTransformFunction};

use tributary_operators::{ColumnType, Row, Schema, Value};

use super::IcebergError;

/// One partition field of a new table: a transform of a source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The source column.
    pub column: String,
    /// The transform.
    pub transform: Transform,
}

impl Partition {
    fn new(column: &str, transform: Transform) -> Self {
        Partition {
            column: column.to_owned(),
            transform,
        }
    }

    /// The column's value itself.
    pub fn identity(column: &str) -> Self {
        Self::new(column, Transform::Identity)
    }

    /// Years since 1970 of a date or timestamp column.
    pub fn year(column: &str) -> Self {
        Self::new(column, Transform::Year)
    }

    /// Months since 1970-01.
    pub fn month(column: &str) -> Self {
        Self::new(column, Transform::Month)
    }

    /// Days since 1970-01-01.
    pub fn day(column: &str) -> Self {
        Self::new(column, Transform::Day)
    }

    /// Hours since 1970-01-01T00:00.
    pub fn hour(column: &str) -> Self {
        Self::new(column, Transform::Hour)
    }

    /// A hash of the column into `buckets` buckets.
    pub fn bucket(column: &str, buckets: u32) -> Self {
        Self::new(column, Transform::Bucket(buckets))
    }

    /// Reads `COLUMN`, `year(COLUMN)`, `month(…)`, `day(…)`, `hour(…)` or `bucket[N](COLUMN)`,
    /// as configuration files write partition fields.
    pub fn parse(text: &str) -> Result<Partition, String> {
        let text = text.trim();
        let Some((transform, rest)) = text.split_once('(') else {
            return Ok(Self::identity(text));
        };
        let column = rest
            .strip_suffix(')')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| format!("`{text}`: a partition field is TRANSFORM(COLUMN)"))?;
        let transform = transform.trim().to_ascii_lowercase();
        Ok(match transform.as_str() {
            "year" => Self::year(column),
            "month" => Self::month(column),
            "day" => Self::day(column),
            "hour" => Self::hour(column),
            _ => {
                let buckets = transform
                    .strip_prefix("bucket[")
                    .and_then(|n| n.strip_suffix(']'))
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        format!("`{text}`: transforms are year, month, day, hour and bucket[N]")
                    })?;
                Self::bucket(column, buckets)
            }
        })
    }

    fn field_name(&self) -> String {
        match self.transform {
            Transform::Identity => self.column.clone(),
            Transform::Bucket(n) => format!("{}_bucket_{n}", self.column),
            other => format!("{}_{}", self.column, other.to_string().to_lowercase()),
        }
    }
}

/// The spec for a new table with `schema` (field ids assigned by the table builder later).
pub fn unbound_spec(
    partitions: &[Partition],
    schema: &IcebergSchema,
) -> Result<UnboundPartitionSpec, IcebergError> {
    let mut builder = UnboundPartitionSpec::builder();
    for partition in partitions {
        let field = schema.field_by_name(&partition.column).ok_or_else(|| {
            IcebergError::Config(format!(
                "partition column `{}` is not a column of the table",
                partition.column
            ))
        })?;
        builder = builder
            .add_partition_field(field.id, partition.field_name(), partition.transform)
            .map_err(|e| IcebergError::iceberg("partition spec", e))?;
    }
    Ok(builder.build())
}

/// Computes rows' partition values under a table's spec.
#[derive(Debug)]
pub struct Partitioner {
    fields: Vec<(usize, ColumnType, BoxedTransformFunction)>,
}

impl Partitioner {
    /// The partitioner for `spec`, whose source columns are found in `schema` (the rows'
    /// layout) by name through `table` (the Iceberg schema).
    pub fn new(
        spec: &PartitionSpec,
        table: &IcebergSchema,
        schema: &Schema,
    ) -> Result<Self, IcebergError> {
        let fields = spec
            .fields()
            .iter()
            .map(|field| {
                let column = table
                    .name_by_field_id(field.source_id)
                    .and_then(|name| schema.index_of(name))
                    .ok_or_else(|| {
                        IcebergError::SchemaMismatch(format!(
                            "partition field `{}` refers to a column the pipeline does not write",
                            field.name
                        ))
                    })?;
                let function = create_transform_function(&field.transform)
                    .map_err(|e| IcebergError::iceberg("partition transform", e))?;
                Ok((column, schema.columns[column].ty, function))
            })
            .collect::<Result<Vec<_>, IcebergError>>()?;
        Ok(Partitioner { fields })
    }

    /// The partitioner of an unpartitioned table.
    #[cfg(test)]
    pub(super) fn unpartitioned() -> Self {
        Partitioner { fields: Vec::new() }
    }

    /// True when the table has no partition fields.
    pub fn is_unpartitioned(&self) -> bool {
        self.fields.is_empty()
    }

    /// The partition values of `row` (empty for an unpartitioned table).
    pub fn partition_of(&self, row: &Row) -> Result<Struct, IcebergError> {
        self.fields
            .iter()
            .map(|(column, ty, function)| {
                let Some(datum) = datum_of(&row[*column], ty)? else {
                    return Ok(None);
                };
                let value = function
                    .transform_literal(&datum)
                    .map_err(|e| IcebergError::iceberg("partition value", e))?;
                Ok(value.map(Literal::from))
            })
            .collect::<Result<Vec<Option<Literal>>, IcebergError>>()
            .map(Struct::from_iter)
    }
}

fn datum_of(value: &Value, ty: &ColumnType) -> Result<Option<Datum>, IcebergError> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => Datum::bool(*b),
        Value::Int(i) if *ty == ColumnType::Int32 => Datum::int(*i as i32),
        Value::Int(i) => Datum::long(*i),
        Value::Float(f) => Datum::double(f.0),
        Value::Str(s) | Value::Json(s) => Datum::string(s),
        Value::Bytes(b) => Datum::binary(b.iter().copied()),
        Value::Date(d) => Datum::date(*d),
        Value::Timestamp(t) if *ty == ColumnType::TimestampTz => Datum::timestamptz_micros(*t),
        Value::Timestamp(t) => Datum::timestamp_micros(*t),
        Value::Decimal(_) => {
            return Err(IcebergError::Config(
                "decimal columns cannot be partition sources yet".into(),
            ))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_fields_parse_as_files_write_them() {
        assert_eq!(
            Partition::parse("region"),
            Ok(Partition::identity("region"))
        );
        assert_eq!(
            Partition::parse("month(created_at)"),
            Ok(Partition::month("created_at"))
        );
        assert_eq!(
            Partition::parse("bucket[16](id)"),
            Ok(Partition::bucket("id", 16))
        );
        assert!(Partition::parse("week(at)").is_err());
        assert!(Partition::parse("bucket[0](id)").is_err());
    }
}
