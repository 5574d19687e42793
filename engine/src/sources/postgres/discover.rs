//! Schemas from the server: every published table's columns, types, nullability and primary
//! key read from the catalog, and PostgreSQL types mapped to Tributary's (the mapping the
//! README's table documents).

use tokio_postgres::Client;

use tributary_operators::{Column, ColumnType, Schema};

use super::pgoutput::Relation;
use super::server::{connect_control, db_error};
use super::PostgresSourceSpec;
use crate::error::SourceError;
use crate::sources::{SourceTable, TableFilter};

/// Type OIDs with a mapping of their own (`pg_type.oid`).
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// Column name.
    pub name: String,
    /// Type OID (a domain's own: its values are replicated as text, as the change events
    /// carry them).
    pub type_oid: u32,
    /// `atttypmod` (numeric: precision and scale), -1 when unconstrained.
    pub type_modifier: i32,
    /// `pg_type.typtype` (`e`: enum) and `typcategory` (`A`: array).
    pub kind: (char, char),
    /// `format_type(…)`, for messages.
    pub type_name: String,
    /// NOT NULL.
    pub not_null: bool,
}

/// Tributary's type for a PostgreSQL column, and whether that is a fallback to text that the
/// user should hear about.
pub fn column_type(column: &CatalogColumn) -> (ColumnType, bool) {
    let mapped = match column.type_oid {
        oid::BOOL => ColumnType::Bool,
        oid::INT2 | oid::INT4 => ColumnType::Int32,
        oid::INT8 | oid::OID => ColumnType::Int64,
        oid::FLOAT4 | oid::FLOAT8 => ColumnType::Float64,
        oid::NUMERIC => match numeric_precision(column.type_modifier) {
            Some((precision, scale)) if precision <= 38 => ColumnType::Decimal { precision, scale },
            // Unconstrained (or wider than Iceberg's 38 digits): exact, as text.
            _ => ColumnType::String,
        },
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::CHAR | oid::NAME => ColumnType::String,
        oid::UUID | oid::TIME | oid::TIMETZ | oid::INTERVAL => ColumnType::String,
        oid::DATE => ColumnType::Date,
        oid::TIMESTAMP => ColumnType::Timestamp,
        oid::TIMESTAMPTZ => ColumnType::TimestampTz,
        oid::JSON | oid::JSONB => ColumnType::Json,
        oid::BYTEA => ColumnType::Bytes,
        _ if column.kind.0 == 'e' || column.kind.1 == 'A' => ColumnType::String,
        _ => return (ColumnType::String, true),
    };
    (mapped, false)
}

/// Whether rows of `relation` (a table's shape in the WAL) fit `schema`, the one a pipeline
/// declared from the source: every column is there, with the same type or one that holds it
/// (int in long, a decimal in one of more digits at the same scale); else what differs.
pub fn covers(schema: &Schema, relation: &Relation) -> Result<(), String> {
    let columns = relation.columns.iter().map(|column| {
        let (ty, _) = column_type(&CatalogColumn {
            name: column.name.clone(),
            type_oid: column.type_oid,
            type_modifier: column.type_modifier,
            kind: ('b', ' '),
            type_name: String::new(),
            not_null: false,
        });
        Column::new(&column.name, ty)
    });
    schema.holds(&Schema::new(columns.collect()))
}

/// `numeric(p,s)`'s precision and scale from its type modifier.
fn numeric_precision(modifier: i32) -> Option<(u8, u8)> {
    let bits = modifier.checked_sub(4).filter(|_| modifier >= 4)?;
    let precision = u8::try_from((bits >> 16) & 0xffff).ok()?;
    let scale = u8::try_from(bits & 0xffff).ok()?;
    (scale <= precision).then_some((precision, scale))
}

/// The published tables matching `filter`, with their schemas and primary keys, named
/// `server.schema.table` as their change events are.
pub fn discover(
    spec: &PostgresSourceSpec,
    filter: Option<&TableFilter>,
) -> Result<Vec<SourceTable>, SourceError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SourceError::Postgres {
            what: "discover".into(),
            reason: e.to_string(),
        })?;
    runtime.block_on(async {
        let control = connect_control(spec).await?;
        let tables = published_tables(&control, spec).await?;
        let tables: Vec<SourceTable> = tables
            .into_iter()
            .filter(|t| filter.is_none_or(|f| f.matches(&t.namespace, &t.table)))
            .collect();
        for table in tables.iter().filter(|t| t.key.is_empty()) {
            tracing::warn!(table = %table.name, "no primary key: pipelines that take tables from the source keep an append-only change log of it (add a primary key for its current state)");
        }
        Ok(tables)
    })
}

async fn published_tables(
    control: &Client,
    spec: &PostgresSourceSpec,
) -> Result<Vec<SourceTable>, SourceError> {
    let rows = control
        .query(
            "SELECT p.schemaname::text, p.tablename::text, a.attname::text, \
                    a.atttypid::oid, \
                    a.atttypmod, t.typtype::text, t.typcategory::text, \
                    format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    COALESCE(array_position(i.indkey::int2[], a.attnum) + 1, 0)::int4 \
             FROM pg_publication_tables p \
             JOIN pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
                  AND NOT a.attisdropped AND a.attgenerated = '' \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE p.pubname = $1 ORDER BY 1, 2, a.attnum",
            &[&spec.publication],
        )
        .await
        .map_err(|e| db_error("discover", e))?;
    let mut tables: Vec<SourceTable> = Vec::new();
    let mut keys: Vec<(i32, String)> = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut finish = |current: Option<(String, String)>,
                      columns: &mut Vec<Column>,
                      keys: &mut Vec<(i32, String)>| {
        if let Some((namespace, table)) = current {
            keys.sort();
            tables.push(SourceTable {
                name: format!("{}.{namespace}.{table}", spec.server),
                namespace,
                table,
                schema: Schema::new(std::mem::take(columns)),
                key: keys.drain(..).map(|(_, name)| name).collect(),
            });
        }
    };
    for row in rows {
        let at: (String, String) = (row.get(0), row.get(1));
        if current.as_ref() != Some(&at) {
            finish(current.take(), &mut columns, &mut keys);
            current = Some(at);
        }
        let text = |i: usize| row.get::<_, String>(i).chars().next().unwrap_or(' ');
        let column = CatalogColumn {
            name: row.get(2),
            type_oid: row.get(3),
            type_modifier: row.get(4),
            kind: (text(5), text(6)),
            type_name: row.get(7),
            not_null: row.get(8),
        };
        let (ty, fallback) = column_type(&column);
        if fallback {
            tracing::warn!(table = %format!("{}.{}", row.get::<_, String>(0), row.get::<_, String>(1)), column = %column.name, pg_type = %column.type_name, "no mapping for this type: replicated as its text");
        }
        // Its place in the primary key, from 1 (`indkey` counts from 0); 0: not in it.
        let key_position: i32 = row.get(9);
        if key_position > 0 {
            keys.push((key_position, column.name.clone()));
        }
        let mapped = Column::new(&column.name, ty);
        columns.push(if column.not_null {
            mapped.not_null()
        } else {
            mapped
        });
    }
    finish(current, &mut columns, &mut keys);
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(type_oid: u32, type_modifier: i32, kind: (char, char)) -> CatalogColumn {
        CatalogColumn {
            name: "c".into(),
            type_oid,
            type_modifier,
            kind,
            type_name: "t".into(),
            not_null: false,
        }
    }

    #[test]
    fn a_shape_fits_a_schema_that_holds_every_column() {
        use super::super::pgoutput::RelationColumn;
        let relation = |columns: &[(&str, u32, i32)]| Relation {
            oid: 1,
            schema: "public".into(),
            table: "t".into(),
            replica_identity: b'd',
            columns: columns
                .iter()
                .map(|&(name, type_oid, type_modifier)| RelationColumn {
                    name: name.into(),
                    type_oid,
                    type_modifier,
                    key: false,
                })
                .collect(),
        };
        let schema = Schema::new(vec![
            Column::new("id", ColumnType::Int64),
            Column::new("n", ColumnType::Int32),
            Column::new("gone", ColumnType::String),
        ]);
        assert!(covers(
            &schema,
            &relation(&[("id", oid::INT4, -1), ("n", oid::INT4, -1)])
        )
        .is_ok());
        let added = covers(
            &schema,
            &relation(&[("id", oid::INT8, -1), ("x", oid::TEXT, -1)]),
        );
        assert_eq!(added.unwrap_err(), "column `x` (string) was added");
        let widened = covers(&schema, &relation(&[("n", oid::INT8, -1)]));
        assert_eq!(widened.unwrap_err(), "column `n` changed from int to long");
    }

    #[test]
    fn maps_common_types_and_falls_back_to_text_with_a_warning() {
        let ty = |oid, modifier| column_type(&column(oid, modifier, ('b', 'N')));
        assert_eq!(ty(oid::INT2, -1), (ColumnType::Int32, false));
        assert_eq!(ty(oid::INT8, -1), (ColumnType::Int64, false));
        // numeric(10,2): ((10 << 16) | 2) + 4
        assert_eq!(
            ty(oid::NUMERIC, (10 << 16 | 2) + 4),
            (
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2
                },
                false
            )
        );
        assert_eq!(ty(oid::NUMERIC, -1), (ColumnType::String, false));
        assert_eq!(
            ty(oid::NUMERIC, (60 << 16 | 2) + 4),
            (ColumnType::String, false)
        );
        assert_eq!(ty(oid::TIMESTAMPTZ, -1), (ColumnType::TimestampTz, false));
        assert_eq!(ty(oid::JSONB, -1), (ColumnType::Json, false));
        let enumeration = column_type(&column(90_000, -1, ('e', 'E')));
        assert_eq!(enumeration, (ColumnType::String, false));
        let array = column_type(&column(1007, -1, ('b', 'A')));
        assert_eq!(array, (ColumnType::String, false));
        let point = column_type(&column(600, -1, ('b', 'G')));
        assert_eq!(
            point,
            (ColumnType::String, true),
            "no mapping: text, warned"
        );
    }
}
