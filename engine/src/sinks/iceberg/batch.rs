//! Rows → an Arrow record batch, a row at a time: each row is read once and its values are
//! appended to every column's builder, so a commit of rows that no longer sit in the cache
//! fetches each row once instead of once per column.

use std::borrow::Borrow;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::Schema as ArrowSchema;

use tributary_operators::row::prefetched;
use tributary_operators::{ColumnType, Decimal, Row, Schema, Value};

use super::IcebergError;

/// A record batch of `rows`, laid out like `schema` (whose Arrow form is `arrow`). Rows given
/// by value are released as soon as they are read, while they are still in the cache.
pub(super) fn rows_to_batch<R: Borrow<Row>>(
    schema: &Schema,
    arrow: &Arc<ArrowSchema>,
    rows: impl IntoIterator<Item = R>,
) -> Result<RecordBatch, IcebergError> {
    let rows = rows.into_iter();
    let capacity = rows.size_hint().0;
    let mut builders = schema
        .columns
        .iter()
        .map(|column| ColumnBuilder::new(&column.ty, capacity))
        .collect::<Result<Vec<_>, _>>()?;
    // A commit reads rows that have long left the caches.
    for row in prefetched(rows, |row| row.borrow()) {
        let row = row.borrow();
        if row.len() != builders.len() {
            return Err(IcebergError::SchemaMismatch(format!(
                "a row of {} values for a table of {} columns",
                row.len(),
                builders.len()
            )));
        }
        for ((builder, column), value) in builders.iter_mut().zip(&schema.columns).zip(row.iter()) {
            builder.append(&column.ty, value)?;
        }
    }
    let columns = builders.into_iter().map(ColumnBuilder::finish).collect();
    RecordBatch::try_new(Arc::clone(arrow), columns).map_err(IcebergError::from)
}

/// One column's Arrow builder.
enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    /// With the column's scale, which every value is rescaled to.
    Decimal(Decimal128Builder, u8),
    /// Strings and JSON text.
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    /// With or without a time zone.
    Timestamp(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    fn new(ty: &ColumnType, capacity: usize) -> Result<Self, IcebergError> {
        Ok(match ty {
            ColumnType::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            ColumnType::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            ColumnType::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
            ColumnType::Decimal { precision, scale } => Self::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*precision, *scale as i8)?,
                *scale,
            ),
            ColumnType::String | ColumnType::Json => {
                Self::Utf8(StringBuilder::with_capacity(capacity, capacity * 8))
            }
            ColumnType::Bytes => Self::Binary(BinaryBuilder::with_capacity(capacity, capacity * 8)),
            ColumnType::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            ColumnType::TimestampTz => Self::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("+00:00"),
            ),
        })
    }

    /// Appends `value` (of a column of type `ty`); a value of another type is an error.
    fn append(&mut self, ty: &ColumnType, value: &Value) -> Result<(), IcebergError> {
        let unfit = || mismatch(ty, value);
        match (self, value) {
            (Self::Bool(b), Value::Null) => b.append_null(),
            (Self::Bool(b), Value::Bool(v)) => b.append_value(*v),
            (Self::Int32(b), Value::Null) => b.append_null(),
            (Self::Int32(b), Value::Int(i)) => {
                b.append_value(i32::try_from(*i).map_err(|_| unfit())?)
            }
            (Self::Int64(b), Value::Null) => b.append_null(),
            (Self::Int64(b), Value::Int(i)) => b.append_value(*i),
            (Self::Float64(b), Value::Null) => b.append_null(),
            (Self::Float64(b), Value::Float(f)) => b.append_value(f.0),
            (Self::Float64(b), Value::Int(i)) => b.append_value(*i as f64),
            (Self::Decimal(b, _), Value::Null) => b.append_null(),
            (Self::Decimal(b, scale), Value::Decimal(d)) => {
                b.append_value(rescale(d, *scale).ok_or_else(unfit)?)
            }
            (Self::Decimal(b, scale), Value::Int(i)) => b.append_value(
                Decimal::from_scaled(i128::from(*i), 0, *scale)
                    .ok_or_else(unfit)?
                    .unscaled,
            ),
            (Self::Utf8(b), Value::Null) => b.append_null(),
            (Self::Utf8(b), Value::Str(s) | Value::Json(s)) => b.append_value(s.as_ref()),
            (Self::Binary(b), Value::Null) => b.append_null(),
            (Self::Binary(b), Value::Bytes(v)) => b.append_value(v.as_ref()),
            (Self::Date(b), Value::Null) => b.append_null(),
            (Self::Date(b), Value::Date(d)) => b.append_value(*d),
            (Self::Timestamp(b), Value::Null) => b.append_null(),
            (Self::Timestamp(b), Value::Timestamp(t)) => b.append_value(*t),
            _ => return Err(unfit()),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::Int32(mut b) => Arc::new(b.finish()),
            Self::Int64(mut b) => Arc::new(b.finish()),
            Self::Float64(mut b) => Arc::new(b.finish()),
            Self::Decimal(mut b, _) => Arc::new(b.finish()),
            Self::Utf8(mut b) => Arc::new(b.finish()),
            Self::Binary(mut b) => Arc::new(b.finish()),
            Self::Date(mut b) => Arc::new(b.finish()),
            Self::Timestamp(mut b) => Arc::new(b.finish()),
        }
    }
}

fn mismatch(ty: &ColumnType, value: &Value) -> IcebergError {
    IcebergError::SchemaMismatch(format!("value {value:?} does not fit a {ty} column"))
}

/// The unscaled value of `decimal` at `scale`, exactly (an error if digits would be lost).
fn rescale(decimal: &Decimal, scale: u8) -> Option<i128> {
    decimal.rescale(scale).map(|d| d.unscaled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_operators::Column;

    #[test]
    fn decimals_are_rescaled_exactly_or_refused() {
        let d = Decimal::new(150, 1).unwrap();
        assert_eq!(rescale(&d, 2), Some(1500));
        assert_eq!(rescale(&d, 0), Some(15));
        assert_eq!(rescale(&Decimal::new(151, 1).unwrap(), 0), None);
    }

    #[test]
    fn a_value_that_does_not_fit_its_column_is_an_error() {
        let schema = Schema::new(vec![
            Column::new("id", ColumnType::Int32),
            Column::new("name", ColumnType::String),
        ]);
        let arrow = Arc::new(ArrowSchema::new(vec![
            arrow_schema::Field::new("id", arrow_schema::DataType::Int32, true),
            arrow_schema::Field::new("name", arrow_schema::DataType::Utf8, true),
        ]));
        let row = |values: Vec<Value>| Row::new(values);
        let fits = [
            row(vec![Value::Int(1), Value::str("a")]),
            row(vec![Value::Null, Value::Null]),
        ];
        assert_eq!(
            rows_to_batch(&schema, &arrow, fits.iter())
                .unwrap()
                .num_rows(),
            2
        );
        for bad in [
            row(vec![Value::Int(i64::from(i32::MAX) + 1), Value::str("a")]),
            row(vec![Value::Int(1), Value::Int(2)]),
            row(vec![Value::Int(1)]),
        ] {
            assert!(rows_to_batch(&schema, &arrow, [bad].iter()).is_err());
        }
    }
}
