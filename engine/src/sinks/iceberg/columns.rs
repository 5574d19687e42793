//! Column mapping: Tributary schemas ↔ Iceberg schemas ↔ Arrow record batches (with Parquet
//! field ids), both ways, so rows can be written to and read back from Parquet.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{
    Array, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    Int64Array, LargeBinaryArray, LargeStringArray, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use iceberg::spec::{NestedField, PrimitiveType, Schema as IcebergSchema, Type};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;

use tributary_operators::{Column, ColumnType, Decimal, Float, Key, Row, Schema, Value};

use super::IcebergError;

/// Field id of `file_path` in position-delete files (Iceberg spec, reserved).
pub const DELETE_FILE_PATH_ID: i32 = i32::MAX - 101;
/// Field id of `pos` in position-delete files (Iceberg spec, reserved).
pub const DELETE_POS_ID: i32 = i32::MAX - 102;

/// The Iceberg type of a Tributary column type.
pub fn iceberg_type(ty: &ColumnType) -> Type {
    Type::Primitive(match ty {
        ColumnType::Bool => PrimitiveType::Boolean,
        ColumnType::Int32 => PrimitiveType::Int,
        ColumnType::Int64 => PrimitiveType::Long,
        ColumnType::Float64 => PrimitiveType::Double,
        ColumnType::Decimal { precision, scale } => PrimitiveType::Decimal {
            precision: u32::from(*precision),
            scale: u32::from(*scale),
        },
        ColumnType::String | ColumnType::Json => PrimitiveType::String,
        ColumnType::Bytes => PrimitiveType::Binary,
        ColumnType::Date => PrimitiveType::Date,
        ColumnType::Timestamp => PrimitiveType::Timestamp,
        ColumnType::TimestampTz => PrimitiveType::Timestamptz,
    })
}

/// The Tributary schema of an existing table (for maintenance, which has no pipeline).
pub fn schema_of(table: &IcebergSchema) -> Result<Schema, IcebergError> {
    let columns = table
        .as_struct()
        .fields()
        .iter()
        .map(|field| {
            let ty = match &*field.field_type {
                Type::Primitive(primitive) => match primitive {
                    PrimitiveType::Boolean => Some(ColumnType::Bool),
                    PrimitiveType::Int => Some(ColumnType::Int32),
                    PrimitiveType::Long => Some(ColumnType::Int64),
                    PrimitiveType::Double => Some(ColumnType::Float64),
                    PrimitiveType::Decimal { precision, scale } => Some(ColumnType::Decimal {
                        precision: *precision as u8,
                        scale: *scale as u8,
                    }),
                    PrimitiveType::String => Some(ColumnType::String),
                    PrimitiveType::Binary => Some(ColumnType::Bytes),
                    PrimitiveType::Date => Some(ColumnType::Date),
                    PrimitiveType::Timestamp => Some(ColumnType::Timestamp),
                    PrimitiveType::Timestamptz => Some(ColumnType::TimestampTz),
                    _ => None,
                },
                _ => None,
            }
            .ok_or_else(|| {
                IcebergError::SchemaMismatch(format!(
                    "column `{}` has type {}, which Tributary does not write",
                    field.name, field.field_type
                ))
            })?;
            let column = Column::new(&field.name, ty);
            Ok(if field.required {
                column.not_null()
            } else {
                column
            })
        })
        .collect::<Result<Vec<_>, IcebergError>>()?;
    Ok(Schema::new(columns))
}

/// The Iceberg schema for a new table: fields numbered from 1, key columns as identifier
/// fields (they must be NOT NULL).
pub fn iceberg_schema(schema: &Schema, key: &[usize]) -> Result<IcebergSchema, IcebergError> {
    let fields = schema.columns.iter().enumerate().map(|(i, column)| {
        let id = i as i32 + 1;
        let ty = iceberg_type(&column.ty);
        Arc::new(if column.nullable && !key.contains(&i) {
            NestedField::optional(id, column.name.as_ref(), ty)
        } else {
            NestedField::required(id, column.name.as_ref(), ty)
        })
    });
    IcebergSchema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(key.iter().map(|&i| i as i32 + 1))
        .build()
        .map_err(IcebergError::from)
}

/// What a table's schema needs to take a pipeline's rows: `None` when it takes them as it is;
/// else the evolved schema (fields keep their ids): a column the table lacks becomes a new
/// optional field (`last_column_id` + 1, …), a type widens where Iceberg allows it (int →
/// long, decimal precision up at the same scale), a required field the rows may leave NULL
/// becomes optional, and the table's columns the rows lack stay, optional. Anything else is an
/// error naming the column, both types and the remedy.
pub fn evolve(
    schema: &Schema,
    key: &[usize],
    table: &IcebergSchema,
    last_column_id: i32,
) -> Result<Option<IcebergSchema>, IcebergError> {
    let mut next_id = last_column_id.max(table.highest_field_id());
    let mut changed = false;
    let mut fields = Vec::with_capacity(schema.len());
    for (i, column) in schema.columns.iter().enumerate() {
        let wanted = iceberg_type(&column.ty);
        let required = !column.nullable || key.contains(&i);
        let Some(field) = table.field_by_name(&column.name) else {
            next_id += 1;
            changed = true;
            let name = column.name.as_ref();
            fields.push(Arc::new(NestedField::optional(next_id, name, wanted)));
            continue;
        };
        let ty = if *field.field_type == wanted {
            wanted
        } else if widens(&field.field_type, &wanted) {
            changed = true;
            wanted
        } else {
            return Err(IcebergError::SchemaMismatch(format!(
                "column `{}` is {} in the table and {} in the source; Iceberg cannot change \
                 it that way (it widens int to long, float to double and a decimal's \
                 precision); write to a new table, or cast the column back in the source",
                column.name, field.field_type, column.ty
            )));
        };
        let optional = !field.required || !required;
        changed |= field.required && optional;
        fields.push(Arc::new(if optional {
            NestedField::optional(field.id, field.name.as_str(), ty)
        } else {
            NestedField::required(field.id, field.name.as_str(), ty)
        }));
    }
    let identifiers: Vec<i32> = table.identifier_field_ids().collect();
    for field in table.as_struct().fields() {
        if schema.index_of(&field.name).is_some() {
            continue;
        }
        if identifiers.contains(&field.id) {
            return Err(IcebergError::SchemaMismatch(format!(
                "key column `{}` of the table is gone from the source; write to a new table",
                field.name
            )));
        }
        changed |= field.required;
        fields.push(Arc::new(NestedField::optional(
            field.id,
            field.name.as_str(),
            (*field.field_type).clone(),
        )));
    }
    if !changed {
        return Ok(None);
    }
    IcebergSchema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(identifiers)
        .build()
        .map(Some)
        .map_err(IcebergError::from)
}

/// Whether Iceberg lets a column of type `from` become `to`.
fn widens(from: &Type, to: &Type) -> bool {
    use PrimitiveType::{Decimal, Double, Float, Int, Long};
    match (from, to) {
        (Type::Primitive(from), Type::Primitive(to)) => match (from, to) {
            (Int, Long) | (Float, Double) => true,
            (
                Decimal { precision, scale },
                Decimal {
                    precision: wider,
                    scale: same,
                },
            ) => wider >= precision && same == scale,
            _ => false,
        },
        _ => false,
    }
}

/// How the columns of a Tributary schema sit in a table's Iceberg schema.
#[derive(Debug, Clone)]
pub struct ColumnMap {
    schema: Schema,
    arrow: Arc<ArrowSchema>,
}

impl ColumnMap {
    /// Maps `schema` onto `table` by column name; every column must exist with the same type.
    pub fn new(schema: &Schema, table: &IcebergSchema) -> Result<Self, IcebergError> {
        let mut fields = Vec::with_capacity(schema.len());
        for column in &schema.columns {
            let field = table.field_by_name(&column.name).ok_or_else(|| {
                IcebergError::SchemaMismatch(format!(
                    "column `{}` is not in the table (it has {}); a schema change needs a new \
                     table or `ALTER TABLE … ADD COLUMN` first",
                    column.name,
                    table
                        .as_struct()
                        .fields()
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if *field.field_type != iceberg_type(&column.ty) {
                return Err(IcebergError::SchemaMismatch(format!(
                    "column `{}` is {} in the table but {} in the pipeline",
                    column.name, field.field_type, column.ty
                )));
            }
            let data_type = arrow_type(&column.ty);
            fields.push(with_field_id(
                Field::new(column.name.as_ref(), data_type, !field.required),
                field.id,
            ));
        }
        Ok(ColumnMap {
            schema: schema.clone(),
            arrow: Arc::new(ArrowSchema::new(fields)),
        })
    }

    /// The Arrow schema, with Parquet field ids.
    pub fn arrow_schema(&self) -> &Arc<ArrowSchema> {
        &self.arrow
    }

    /// Builds a record batch from rows laid out like the schema.
    pub fn to_batch<R: Borrow<Row>>(
        &self,
        rows: impl IntoIterator<Item = R>,
    ) -> Result<RecordBatch, IcebergError> {
        super::batch::rows_to_batch(&self.schema, &self.arrow, rows)
    }

    /// The position of the column of field `id` in the pipeline's rows.
    pub fn column_of_field(&self, id: i32) -> Option<usize> {
        self.arrow
            .fields()
            .iter()
            .position(|field| field_id(field) == Some(id))
    }

    /// The keys on `columns` (positions in the pipeline's rows) of a record batch that holds
    /// at least those columns (an equality-delete file of any writer).
    pub fn keys_of_batch(
        &self,
        batch: &RecordBatch,
        columns: &[usize],
    ) -> Result<Vec<Key>, IcebergError> {
        let values = columns
            .iter()
            .map(|&c| {
                let id = self.arrow.fields().get(c).and_then(|f| field_id(f));
                let array = batch
                    .schema()
                    .fields()
                    .iter()
                    .position(|f| id.is_some() && field_id(f) == id)
                    .map(|i| batch.column(i))
                    .ok_or_else(|| {
                        IcebergError::SchemaMismatch(format!(
                            "an equality-delete file lacks its column `{}`",
                            self.schema.columns[c].name
                        ))
                    })?;
                read_array(&self.schema.columns[c].ty, array.as_ref())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((0..batch.num_rows())
            .map(|r| Key::new(values.iter().map(|column| column[r].clone()).collect()))
            .collect())
    }

    /// Turns a record batch read from a data file back into rows (columns found by field id).
    pub fn rows_of_batch(&self, batch: &RecordBatch) -> Result<Vec<Row>, IcebergError> {
        let ids: HashMap<i32, usize> = batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((field_id(f)?, i)))
            .collect();
        let columns = self
            .arrow
            .fields()
            .iter()
            .zip(&self.schema.columns)
            .map(|(field, column)| {
                let array = field_id(field)
                    .and_then(|id| ids.get(&id))
                    .map(|&i| batch.column(i));
                match array {
                    Some(array) => read_array(&column.ty, array.as_ref()),
                    None if field.is_nullable() => Ok(vec![Value::Null; batch.num_rows()]),
                    None => Err(IcebergError::SchemaMismatch(format!(
                        "a data file lacks the required column `{}`",
                        column.name
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((0..batch.num_rows())
            .map(|r| columns.iter().map(|c| c[r].clone()).collect::<Row>())
            .collect())
    }
}

/// The Arrow schema of position-delete files.
pub fn delete_schema() -> Arc<ArrowSchema> {
    Arc::new(ArrowSchema::new(vec![
        with_field_id(
            Field::new("file_path", DataType::Utf8, false),
            DELETE_FILE_PATH_ID,
        ),
        with_field_id(Field::new("pos", DataType::Int64, false), DELETE_POS_ID),
    ]))
}

fn with_field_id(field: Field, id: i32) -> Field {
    field.with_metadata(HashMap::from([(
        PARQUET_FIELD_ID_META_KEY.to_owned(),
        id.to_string(),
    )]))
}

fn field_id(field: &Field) -> Option<i32> {
    field
        .metadata()
        .get(PARQUET_FIELD_ID_META_KEY)?
        .parse()
        .ok()
}

fn arrow_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
        ColumnType::String | ColumnType::Json => DataType::Utf8,
        ColumnType::Bytes => DataType::Binary,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnType::TimestampTz => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        }
    }
}

fn read_array(ty: &ColumnType, array: &dyn Array) -> Result<Vec<Value>, IcebergError> {
    macro_rules! read {
        ($array:ty, |$v:ident| $value:expr) => {{
            let array = array.as_any().downcast_ref::<$array>().ok_or_else(|| {
                IcebergError::SchemaMismatch(format!(
                    "a data file has {} where {ty} was expected",
                    array.data_type()
                ))
            })?;
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        Value::Null
                    } else {
                        let $v = array.value(i);
                        $value
                    }
                })
                .collect()
        }};
    }
    Ok(match ty {
        ColumnType::Bool => read!(BooleanArray, |v| Value::Bool(v)),
        ColumnType::Int32 => read!(Int32Array, |v| Value::Int(i64::from(v))),
        // Files written before the column was widened from int hold 32-bit values.
        ColumnType::Int64 if array.data_type() == &DataType::Int32 => {
            read!(Int32Array, |v| Value::Int(i64::from(v)))
        }
        ColumnType::Int64 => read!(Int64Array, |v| Value::Int(v)),
        ColumnType::Float64 => read!(Float64Array, |v| Value::Float(Float(v))),
        // (Iceberg decimals have at most 38 digits, so the scale always fits.)
        ColumnType::Decimal { scale, .. } => {
            read!(Decimal128Array, |v| Decimal::new(v, *scale)
                .map_or(Value::Null, Value::Decimal))
        }
        // Other writers (pyiceberg) may use Arrow's large variants.
        ColumnType::String if array.data_type() == &DataType::LargeUtf8 => {
            read!(LargeStringArray, |v| Value::str(v))
        }
        ColumnType::Json if array.data_type() == &DataType::LargeUtf8 => {
            read!(LargeStringArray, |v| Value::Json(Arc::from(v)))
        }
        ColumnType::Bytes if array.data_type() == &DataType::LargeBinary => {
            read!(LargeBinaryArray, |v| Value::Bytes(Arc::from(v)))
        }
        ColumnType::String => read!(StringArray, |v| Value::str(v)),
        ColumnType::Json => read!(StringArray, |v| Value::Json(Arc::from(v))),
        ColumnType::Bytes => read!(BinaryArray, |v| Value::Bytes(Arc::from(v))),
        ColumnType::Date => read!(Date32Array, |v| Value::Date(v)),
        ColumnType::Timestamp | ColumnType::TimestampTz => {
            read!(TimestampMicrosecondArray, |v| Value::Timestamp(v))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_evolve_where_iceberg_allows() {
        let before = Schema::new(vec![
            Column::new("id", ColumnType::Int64).not_null(),
            Column::new("n", ColumnType::Int32).not_null(),
            Column::new("gone", ColumnType::String).not_null(),
            Column::new(
                "price",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
        ]);
        let table = iceberg_schema(&before, &[0]).unwrap();
        assert!(
            evolve(&before, &[0], &table, 4).unwrap().is_none(),
            "as it is"
        );
        let after = Schema::new(vec![
            Column::new("id", ColumnType::Int64).not_null(),
            Column::new("added", ColumnType::String).not_null(),
            Column::new("n", ColumnType::Int64),
            Column::new(
                "price",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
            ),
        ]);
        let evolved = evolve(&after, &[0], &table, 4).unwrap().unwrap();
        let field = |name: &str| evolved.field_by_name(name).unwrap().clone();
        assert_eq!((field("id").id, field("id").required), (1, true));
        assert_eq!(field("added").id, 5, "a new field id");
        assert!(!field("added").required, "added columns are optional");
        assert_eq!(*field("n").field_type, Type::Primitive(PrimitiveType::Long));
        assert!(!field("n").required);
        assert!(!field("gone").required, "a dropped column stays, optional");
        assert_eq!(evolved.identifier_field_ids().collect::<Vec<_>>(), [1]);
        // The evolved table takes the new rows.
        assert!(ColumnMap::new(&after, &evolved).is_ok());

        let narrowed = Schema::new(vec![
            Column::new("id", ColumnType::Int64).not_null(),
            Column::new("n", ColumnType::String),
        ]);
        let error = evolve(&narrowed, &[0], &table, 4).unwrap_err().to_string();
        assert!(
            error.contains("`n` is int in the table and string"),
            "{error}"
        );
        let rescaled = Schema::new(vec![
            Column::new("id", ColumnType::Int64).not_null(),
            Column::new(
                "price",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 3,
                },
            ),
        ]);
        assert!(evolve(&rescaled, &[0], &table, 4).is_err());
    }

    #[test]
    fn rows_survive_a_round_trip_through_arrow() {
        let schema = Schema::new(vec![
            Column::new("id", ColumnType::Int64).not_null(),
            Column::new("n", ColumnType::Int32),
            Column::new(
                "price",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            Column::new("name", ColumnType::String),
            Column::new("at", ColumnType::Timestamp),
            Column::new("ok", ColumnType::Bool),
            Column::new("ratio", ColumnType::Float64),
            Column::new("day", ColumnType::Date),
            Column::new("at_tz", ColumnType::TimestampTz),
            Column::new("blob", ColumnType::Bytes),
            Column::new("doc", ColumnType::Json),
        ]);
        let table = iceberg_schema(&schema, &[0]).unwrap();
        let map = ColumnMap::new(&schema, &table).unwrap();
        let rows: Vec<Row> = vec![
            [
                Value::Int(1),
                Value::Int(7),
                Value::Decimal(Decimal::new(1234, 2).unwrap()),
                Value::str("a"),
                Value::Timestamp(5),
                Value::Bool(true),
                Value::Float(Float(-2.5)),
                Value::Date(-3),
                Value::Timestamp(-7),
                Value::Bytes(Arc::from(&[0u8, 255][..])),
                Value::Json(Arc::from(r#"{"a":[1]}"#)),
            ]
            .into_iter()
            .collect(),
            std::iter::once(Value::Int(2))
                .chain(std::iter::repeat_n(Value::Null, 10))
                .collect(),
        ];
        let batch = map.to_batch(rows.iter()).unwrap();
        assert_eq!(map.rows_of_batch(&batch).unwrap(), rows);
        // Iceberg has no JSON type: a JSON column reads back as a string column.
        let mut read_back = schema.clone();
        read_back.columns[10].ty = ColumnType::String;
        assert_eq!(schema_of(&table).unwrap(), read_back);
    }
}
