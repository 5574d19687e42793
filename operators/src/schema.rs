//! Table schemas: column names and types, primary keys, and the catalog of declared tables.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The logical type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// Boolean.
    Bool,
    /// 32-bit integer (kept as i64 in rows; an Iceberg `int`).
    Int32,
    /// 64-bit integer.
    Int64,
    /// 64-bit float.
    Float64,
    /// Exact decimal with precision and scale.
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// UTF-8 text.
    String,
    /// Raw bytes.
    Bytes,
    /// Calendar date.
    Date,
    /// Timestamp without zone, microseconds.
    Timestamp,
    /// Timestamp with zone (stored as UTC), microseconds.
    TimestampTz,
    /// A JSON document.
    Json,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Bool => f.write_str("boolean"),
            ColumnType::Int32 => f.write_str("int"),
            ColumnType::Int64 => f.write_str("long"),
            ColumnType::Float64 => f.write_str("double"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::String => f.write_str("string"),
            ColumnType::Bytes => f.write_str("binary"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::TimestampTz => f.write_str("timestamptz"),
            ColumnType::Json => f.write_str("json"),
        }
    }
}

/// One column of a schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name as it appears in Debezium's `after`/`before`.
    pub name: Arc<str>,
    /// Logical type.
    pub ty: ColumnType,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

impl Column {
    /// A nullable column.
    pub fn new(name: &str, ty: ColumnType) -> Self {
        Column {
            name: Arc::from(name),
            ty,
            nullable: true,
        }
    }

    /// The same column, NOT NULL.
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }

    /// Reads a column as a configuration file declares it: `NAME TYPE [NOT NULL]`, where TYPE
    /// is Tributary's name (`long`, `decimal(10,2)`, `timestamptz` …) or PostgreSQL's (`bigint`,
    /// `numeric(10,2)`, `text`, `timestamp with time zone` …).
    pub fn parse(spec: &str) -> Result<Column, String> {
        let spec = spec.trim();
        let (name, rest) = spec
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("`{spec}`: a column is `NAME TYPE [NOT NULL]`"))?;
        let rest = rest.trim().to_ascii_lowercase();
        let (ty, nullable) = match rest.strip_suffix("not null") {
            Some(ty) => (ty.trim_end(), false),
            None => (rest.as_str(), true),
        };
        let ty = ColumnType::parse(ty).map_err(|e| format!("column `{name}`: {e}"))?;
        Ok(Column {
            name: Arc::from(name),
            ty,
            nullable,
        })
    }
}

impl ColumnType {
    /// A type by Tributary's name or PostgreSQL's (see [`Column::parse`]).
    pub fn parse(text: &str) -> Result<ColumnType, String> {
        let text = text.trim().to_ascii_lowercase();
        if let Some(args) = ["decimal(", "numeric("]
            .iter()
            .find_map(|p| text.strip_prefix(p))
            .and_then(|a| a.strip_suffix(')'))
        {
            let (precision, scale) = args.split_once(',').unwrap_or((args, "0"));
            let digits = |d: &str| d.trim().parse::<u8>().ok();
            return match (digits(precision), digits(scale)) {
                (Some(precision), Some(scale))
                    if (1..=38).contains(&precision) && scale <= precision =>
                {
                    Ok(ColumnType::Decimal { precision, scale })
                }
                _ => Err(format!(
                    "`{text}`: a decimal has 1 to 38 digits and a scale at most that"
                )),
            };
        }
        Ok(match text.as_str() {
            "boolean" | "bool" => ColumnType::Bool,
            "int" | "integer" | "int4" | "smallint" | "int2" => ColumnType::Int32,
            "long" | "bigint" | "int8" => ColumnType::Int64,
            "double" | "double precision" | "float8" | "float" | "real" | "float4" => {
                ColumnType::Float64
            }
            "string" | "text" | "varchar" | "character varying" | "char" | "uuid" => {
                ColumnType::String
            }
            "binary" | "bytes" | "bytea" => ColumnType::Bytes,
            "date" => ColumnType::Date,
            "timestamp" | "timestamp without time zone" => ColumnType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ColumnType::TimestampTz,
            "json" | "jsonb" => ColumnType::Json,
            other => {
                return Err(format!(
                    "unknown type `{other}`; one of boolean, int, long, double, decimal(P,S), \
                     string, binary, date, timestamp, timestamptz, json (or PostgreSQL's names)"
                ))
            }
        })
    }
}

/// An ordered list of columns.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Schema {
    /// Columns in row order.
    pub columns: Vec<Column>,
}

impl Schema {
    /// Builds a schema from columns.
    pub fn new(columns: Vec<Column>) -> Self {
        Schema { columns }
    }

    /// Index of the column called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| &*c.name == name)
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True when the schema has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Whether rows of `other` fit this schema: every column of `other` is here, with the
    /// same type or one that holds it (int in long, a decimal in one of more digits at the
    /// same scale); else what differs, e.g. "column `x` (string) was added".
    pub fn holds(&self, other: &Schema) -> Result<(), String> {
        for column in &other.columns {
            let here = self.index_of(&column.name).map(|i| self.columns[i].ty);
            let holds = match (here, column.ty) {
                (Some(here), ty) if here == ty => true,
                (Some(ColumnType::Int64), ColumnType::Int32) => true,
                (
                    Some(ColumnType::Decimal { precision, scale }),
                    ColumnType::Decimal {
                        precision: fewer,
                        scale: same,
                    },
                ) => fewer <= precision && same == scale,
                _ => false,
            };
            if !holds {
                return Err(match here {
                    None => format!("column `{}` ({}) was added", column.name, column.ty),
                    Some(here) => format!(
                        "column `{}` changed from {here} to {}",
                        column.name, column.ty
                    ),
                });
            }
        }
        Ok(())
    }

    /// Column names joined by commas, for error messages.
    pub fn names(&self) -> String {
        self.columns
            .iter()
            .map(|c| &*c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A source table a pipeline reads: its Debezium name, schema, and primary key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// `server.schema.table`, e.g. `dbserver1.public.orders` (also the Kafka topic).
    pub name: String,
    /// Declared columns; Debezium fields not declared here are ignored.
    pub schema: Schema,
    /// Indices of the primary-key columns in `schema`.
    pub key: Vec<usize>,
    /// Decode `before` of updates too (for change logs); otherwise only deletes carry it.
    pub keep_before: bool,
    /// The columns the decoder converts (indices into `schema`, the key among them); the
    /// others, which nothing in the pipeline reads, are left NULL and unchecked. `None`: all.
    #[serde(default)]
    pub decoded: Option<Vec<usize>>,
}

impl TableSpec {
    /// Whether the decoder converts column `index`.
    pub fn decodes(&self, index: usize) -> bool {
        self.decoded
            .as_ref()
            .is_none_or(|columns| columns.contains(&index))
    }

    /// The primary-key column names.
    pub fn key_names(&self) -> Vec<&str> {
        self.key
            .iter()
            .map(|&i| &*self.schema.columns[i].name)
            .collect()
    }
}

/// Index of a table in a [`TableCatalog`].
pub type TableId = u32;

/// The tables a pipeline reads, looked up by Debezium name.
#[derive(Clone, Debug, Default)]
pub struct TableCatalog {
    tables: Vec<Arc<TableSpec>>,
    by_name: BTreeMap<String, TableId>,
}

impl TableCatalog {
    /// Adds a table and returns its id; a second table with the same name is an error.
    pub fn add(&mut self, spec: TableSpec) -> Result<TableId, String> {
        if self.by_name.contains_key(&spec.name) {
            return Err(format!("table `{}` is declared twice", spec.name));
        }
        let id = self.tables.len() as TableId;
        self.by_name.insert(spec.name.clone(), id);
        self.tables.push(Arc::new(spec));
        Ok(id)
    }

    /// Finds a table by its Debezium name (or topic).
    pub fn lookup(&self, name: &str) -> Option<TableId> {
        self.by_name.get(name).copied()
    }

    /// Finds a table by the parts of its name (`server`, `schema`, `table`) without joining them.
    pub fn lookup_parts(&self, parts: &[&str]) -> Option<TableId> {
        self.tables
            .iter()
            .position(|spec| {
                let mut rest = spec.name.as_str();
                parts.iter().enumerate().all(|(i, part)| {
                    if i > 0 {
                        match rest.strip_prefix('.') {
                            Some(r) => rest = r,
                            None => return false,
                        }
                    }
                    match rest.strip_prefix(part) {
                        Some(r) => {
                            rest = r;
                            true
                        }
                        None => false,
                    }
                }) && rest.is_empty()
            })
            .map(|i| i as TableId)
    }

    /// Makes the decoder keep `before` of updates for this table (change logs need it).
    pub fn keep_before(&mut self, id: TableId) {
        if let Some(spec) = self.tables.get_mut(id as usize) {
            Arc::make_mut(spec).keep_before = true;
        }
    }

    /// Makes the decoder convert only `columns` of this table (the ones the pipeline reads).
    pub fn decode_only(&mut self, id: TableId, columns: Vec<usize>) {
        if let Some(spec) = self.tables.get_mut(id as usize) {
            Arc::make_mut(spec).decoded = Some(columns);
        }
    }

    /// The table with this id.
    pub fn get(&self, id: TableId) -> Option<&Arc<TableSpec>> {
        self.tables.get(id as usize)
    }

    /// Number of tables.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// True when no table is declared.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_parse_as_files_declare_them() {
        assert_eq!(
            Column::parse("order_id bigint NOT NULL").unwrap(),
            Column::new("order_id", ColumnType::Int64).not_null()
        );
        assert_eq!(
            Column::parse(" price numeric(10, 2)").unwrap().ty,
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            Column::parse("at timestamp with time zone").unwrap().ty,
            ColumnType::TimestampTz
        );
        assert!(Column::parse("lonely").is_err());
        assert!(Column::parse("x decimal(40,2)").is_err());
        let error = Column::parse("x point").unwrap_err();
        assert!(error.contains("unknown type `point`"), "{error}");
    }
}
