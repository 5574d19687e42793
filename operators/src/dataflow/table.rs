//! A source table's two faces as relations: its change stream and its current state.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use super::relation::{Relation, SideOutputs};
use super::upsert::Upsert;
use super::Collection;
use crate::event::{ChangeEvent, Op};
use crate::row::Row;
use crate::schema::{Column, ColumnType, Schema, TableSpec};
use crate::value::Value;

/// Columns the change relation puts before the table's own (`after`) columns.
pub const CHANGE_COLUMNS: [&str; 2] = ["op", "event_time"];

/// Every Debezium event of the table as a row: `op` (c/u/d/r/t), `event_time` (source commit
/// time), then the `after` columns (NULL for deletes). Append-only; tombstones are not events.
pub fn changes<'s>(
    events: Collection<'s, ChangeEvent>,
    spec: &TableSpec,
    side: SideOutputs<'s>,
) -> Relation<'s> {
    let mut columns = vec![
        Column::new(CHANGE_COLUMNS[0], ColumnType::String).not_null(),
        Column::new(CHANGE_COLUMNS[1], ColumnType::Timestamp).not_null(),
    ];
    columns.extend(spec.schema.columns.iter().map(|c| Column {
        nullable: true,
        ..c.clone()
    }));
    let width = spec.schema.len();
    let op_names: [Value; 5] = ["c", "u", "d", "r", "t"].map(Value::str);
    let rows = events.flat_map(move |event| {
        let op = match event.op {
            Op::Create => &op_names[0],
            Op::Update => &op_names[1],
            Op::Delete => &op_names[2],
            Op::Read => &op_names[3],
            Op::Truncate => &op_names[4],
            Op::Tombstone => return None,
        };
        let mut values: smallvec::SmallVec<[Value; 16]> =
            smallvec::SmallVec::with_capacity(width + 2);
        values.push(op.clone());
        values.push(Value::Timestamp(event.event_time_ms.saturating_mul(1000)));
        match &event.after {
            Some(after) => values.extend(after.iter().cloned()),
            None => values.resize(width + 2, Value::Null),
        }
        Some(Row::from_slice(&values))
    });
    Relation::new(Arc::new(Schema::new(columns)), None, rows, side)
}

/// The table's current state (upsert by primary key), keyed by the primary key; `live_rows`
/// counts the rows held.
pub fn state<'s>(
    events: Collection<'s, ChangeEvent>,
    spec: &TableSpec,
    side: SideOutputs<'s>,
    name: &str,
    live_rows: Arc<AtomicI64>,
) -> Relation<'s> {
    let rows = events.upsert(name, spec.key.clone(), live_rows);
    Relation::new(
        Arc::new(spec.schema.clone()),
        Some(spec.key.clone()),
        rows,
        side,
    )
}
