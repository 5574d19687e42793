//! A source table's faces as relations: its change stream, its current state, and its replica
//! (state plus the last change's op and time).

use std::sync::Arc;

use super::relation::{Relation, SideOutputs};
use super::upsert::{StateSize, Upsert};
use super::Collection;
use crate::event::{ChangeEvent, Op, Position};
use crate::row::{Key, Row};
use crate::schema::{Column, ColumnType, Schema, TableId, TableSpec};
use crate::value::Value;

/// Columns the change relation puts before the table's own (`after`) columns.
pub const CHANGE_COLUMNS: [&str; 2] = ["op", "event_time"];

/// Debezium's op codes as shared string values, made once per operator.
struct OpNames([Value; 5]);

impl Default for OpNames {
    fn default() -> Self {
        OpNames(["c", "u", "d", "r", "t"].map(Value::str))
    }
}

impl OpNames {
    /// The op's code; `None` for a tombstone, which is not a change.
    fn of(&self, op: Op) -> Option<&Value> {
        Some(match op {
            Op::Create => &self.0[0],
            Op::Update => &self.0[1],
            Op::Delete => &self.0[2],
            Op::Read => &self.0[3],
            Op::Truncate => &self.0[4],
            Op::Tombstone => return None,
        })
    }
}

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
    let op_names = OpNames::default();
    let rows = events.flat_map(move |event| {
        let prefix = [
            op_names.of(event.op)?.clone(),
            Value::Timestamp(event.event_time_ms.saturating_mul(1000)),
        ];
        Some(match event.after {
            Some(after) if after.len() == width => after.framed(&prefix, &[]),
            after => Row::concat(
                &prefix,
                after.as_deref().unwrap_or_default(),
                prefix.len() + width,
            ),
        })
    });
    Relation::new(Arc::new(Schema::new(columns)), None, rows, side)
}

/// The table's current state (upsert by primary key), keyed by the primary key; `size`
/// counts the rows held and their bytes.
pub fn state<'s>(
    events: Collection<'s, ChangeEvent>,
    spec: &TableSpec,
    side: SideOutputs<'s>,
    name: &str,
    size: Arc<StateSize>,
) -> Relation<'s> {
    let rows = events.upsert(name, spec.key.clone(), size, |_, after| after);
    Relation::new(
        Arc::new(spec.schema.clone()),
        Some(spec.key.clone()),
        rows,
        side,
    )
}

/// Columns a replica puts after the table's own: the last change's op and source time.
pub const REPLICA_COLUMNS: [&str; 2] = ["cdc_operation", "cdc_timestamp"];

/// The current state with the op (`c`/`u`/`r`) and source time of each row's last change
/// appended (a lakehouse replica), keyed by the primary key.
pub fn replica<'s>(
    events: Collection<'s, ChangeEvent>,
    spec: &TableSpec,
    side: SideOutputs<'s>,
    name: &str,
    size: Arc<StateSize>,
) -> Relation<'s> {
    let stamped = replica_stamp();
    let rows = events.upsert(name, spec.key.clone(), size, stamped);
    Relation::new(
        Arc::new(replica_schema(spec)),
        Some(spec.key.clone()),
        rows,
        side,
    )
}

/// The replica's changes by key, without state (see [`super::by_key`]): per epoch and changed
/// key, a retraction holding only the key and the key's new replica row, for a sink that
/// deletes by key. Memory does not grow with the table; what needs the previous row becomes
/// a dead letter.
pub fn replica_by_key<'s>(
    events: Collection<'s, ChangeEvent>,
    spec: &TableSpec,
    side: SideOutputs<'s>,
    name: &str,
) -> Relation<'s> {
    let stamp = replica_stamp();
    let (rows, letters) =
        super::by_key::keyed_changes(events, name, spec.key.clone(), spec.schema.len(), stamp);
    side.borrow_mut().push(letters);
    Relation::new(
        Arc::new(replica_schema(spec)),
        Some(spec.key.clone()),
        rows,
        side,
    )
}

/// Appends the replica columns (the event's op and source time) to a row.
fn replica_stamp() -> impl Fn(&ChangeEvent, Row) -> Row + 'static {
    let op_names: [Value; 3] = ["c", "u", "r"].map(Value::str);
    move |event: &ChangeEvent, after: Row| {
        let op = match event.op {
            Op::Update => &op_names[1],
            Op::Read => &op_names[2],
            _ => &op_names[0],
        };
        let stamp = [
            op.clone(),
            Value::Timestamp(event.event_time_ms.saturating_mul(1000)),
        ];
        after.framed(&[], &stamp)
    }
}

/// The schema of a table's replica: its columns, then [`REPLICA_COLUMNS`].
pub fn replica_schema(spec: &TableSpec) -> Schema {
    let mut columns = spec.schema.columns.clone();
    columns.push(Column::new(REPLICA_COLUMNS[0], ColumnType::String).not_null());
    columns.push(Column::new(REPLICA_COLUMNS[1], ColumnType::Timestamp).not_null());
    Schema::new(columns)
}

/// The event that rebuilds a replica row read back from a lakehouse table: its op and time
/// come from the replica columns, so the rebuilt state row is identical.
pub fn replica_seed_event(table: TableId, spec: &TableSpec, row: &Row, index: u64) -> ChangeEvent {
    let width = spec.schema.len();
    let op = match row.get(width) {
        Some(Value::Str(op)) if op.as_ref() == "u" => Op::Update,
        Some(Value::Str(op)) if op.as_ref() == "r" => Op::Read,
        _ => Op::Create,
    };
    let event_time_ms = match row.get(width + 1) {
        Some(Value::Timestamp(micros)) => micros.div_euclid(1000),
        _ => 0,
    };
    let after = Row::from_slice(&row[..width.min(row.len())]);
    ChangeEvent {
        table,
        op,
        key: Key::of(&after, &spec.key),
        before: None,
        after: Some(after),
        position: Position::new(u32::MAX, index),
        event_time_ms,
        tx: None,
        source_lsn: None,
    }
}

/// Columns the changed-rows relation puts before the table's own.
pub const CHANGED_ROW_COLUMNS: [&str; 3] = ["op", "event_time", "source_lsn"];

/// Every change as the row it leaves: `op` (c/u/d/r), `event_time`, `source_lsn` (NULL where
/// the connector sends none), then the `after` columns — or, for a delete, the `before`
/// columns (the row removed; without `REPLICA IDENTITY FULL` only its key). Append-only;
/// truncates and tombstones carry no row and are left out.
pub fn changed_rows<'s>(
    events: Collection<'s, ChangeEvent>,
    spec: &TableSpec,
    side: SideOutputs<'s>,
) -> Relation<'s> {
    let mut columns = vec![
        Column::new(CHANGED_ROW_COLUMNS[0], ColumnType::String).not_null(),
        Column::new(CHANGED_ROW_COLUMNS[1], ColumnType::Timestamp).not_null(),
        Column::new(CHANGED_ROW_COLUMNS[2], ColumnType::Int64),
    ];
    columns.extend(spec.schema.columns.iter().map(|c| Column {
        nullable: true,
        ..c.clone()
    }));
    let op_names = OpNames::default();
    let rows = events.flat_map(move |event| {
        let image = match event.op {
            Op::Delete => event.before.as_ref(),
            _ => event.after.as_ref(),
        }?;
        let mut values: smallvec::SmallVec<[Value; 16]> =
            smallvec::SmallVec::with_capacity(image.len() + 3);
        values.push(op_names.of(event.op)?.clone());
        values.push(Value::Timestamp(event.event_time_ms.saturating_mul(1000)));
        values.push(
            event
                .source_lsn
                .and_then(|lsn| i64::try_from(lsn).ok())
                .map_or(Value::Null, Value::Int),
        );
        values.extend(image.iter().cloned());
        Some(Row::from_slice(&values))
    });
    Relation::new(Arc::new(Schema::new(columns)), None, rows, side)
}

/// Every change as one flat row: `op`, `event_time`, then `before_<column>` and
/// `after_<column>` for each column (NULL where Debezium sent no image). Append-only.
pub fn changelog<'s>(
    events: Collection<'s, ChangeEvent>,
    spec: &TableSpec,
    side: SideOutputs<'s>,
) -> Relation<'s> {
    let mut columns = vec![
        Column::new(CHANGE_COLUMNS[0], ColumnType::String).not_null(),
        Column::new(CHANGE_COLUMNS[1], ColumnType::Timestamp).not_null(),
    ];
    for image in ["before", "after"] {
        columns.extend(
            spec.schema
                .columns
                .iter()
                .map(|c| Column::new(&format!("{image}_{}", c.name), c.ty)),
        );
    }
    let width = spec.schema.len();
    let op_names = OpNames::default();
    let rows = events.flat_map(move |event| {
        let op = op_names.of(event.op)?;
        let mut values = Vec::with_capacity(2 + 2 * width);
        values.push(op.clone());
        values.push(Value::Timestamp(event.event_time_ms.saturating_mul(1000)));
        for image in [&event.before, &event.after] {
            match image {
                Some(row) => values.extend(row.iter().cloned()),
                None => values.resize(values.len() + width, Value::Null),
            }
        }
        Some(Row::new(values))
    });
    Relation::new(Arc::new(Schema::new(columns)), None, rows, side)
}
