//! A PostgreSQL transaction on its way to the pipeline: the relations the server described,
//! and each change turned into Debezium JSON at the transaction's commit position.

use std::collections::HashMap;
use std::sync::Arc;

use tributary_operators::{Position, RawRecord};

use super::encode::{change_event, ChangeSource, ColumnInfo, RowImage};
use super::pgoutput::{Datum, Relation, RowMessage};
use super::PostgresSourceSpec;
use crate::error::SourceError;

/// A relation with its columns as the encoder wants them.
#[derive(Debug)]
pub(super) struct TableShape {
    pub relation: Relation,
    columns: Vec<ColumnInfo>,
}

impl TableShape {
    pub(super) fn new(relation: Relation) -> Self {
        let columns = relation
            .columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.clone(),
                type_oid: c.type_oid,
            })
            .collect();
        TableShape { relation, columns }
    }

    fn image<'a>(&'a self, values: &'a [Datum], fallback: Option<&'a [Datum]>) -> RowImage<'a> {
        RowImage {
            columns: &self.columns,
            values,
            fallback,
        }
    }

    fn key_changed(&self, old: &[Datum], new: &[Datum]) -> bool {
        self.relation
            .columns
            .iter()
            .enumerate()
            .any(|(i, c)| c.key && old.get(i) != new.get(i))
    }
}

/// Logs a table's new shape; `followed`: the pipeline takes its schemas from the source (and
/// restarts with them), else it keeps its declared ones.
pub(super) fn report_schema_change(previous: &TableShape, current: &TableShape, followed: bool) {
    if previous.columns == current.columns {
        return;
    }
    let names = |shape: &TableShape| -> Vec<String> {
        shape.columns.iter().map(|c| c.name.clone()).collect()
    };
    let (before, after) = (names(previous), names(current));
    let added: Vec<&String> = after.iter().filter(|c| !before.contains(c)).collect();
    let dropped: Vec<&String> = before.iter().filter(|c| !after.contains(c)).collect();
    let retyped: Vec<&String> = current
        .columns
        .iter()
        .filter(|c| {
            previous
                .columns
                .iter()
                .any(|p| p.name == c.name && p.type_oid != c.type_oid)
        })
        .map(|c| &c.name)
        .collect();
    let table = format!("{}.{}", current.relation.schema, current.relation.table);
    if followed {
        tracing::info!(%table, ?added, ?dropped, ?retyped, "schema change in the source table");
        return;
    }
    tracing::warn!(
        %table,
        ?added,
        ?dropped,
        ?retyped,
        "schema change in the source table: rows from now on carry the new columns; columns \
         the pipeline declares but the table dropped arrive as null (a NOT NULL column makes \
         them dead letters), new columns are ignored until the pipeline declares them"
    );
}

/// A transaction being received: its changes as Debezium JSON, in WAL order.
#[derive(Debug)]
pub(super) struct OpenTransaction {
    pub xid: u64,
    pub ts_ms: i64,
    pub changes: Vec<String>,
    /// A table it changes no longer fits the schema the pipeline declared from the source.
    pub schema_change: Option<String>,
}

impl OpenTransaction {
    pub(super) fn add<'a>(
        &mut self,
        spec: &'a PostgresSourceSpec,
        relations: &'a HashMap<u32, TableShape>,
        message: RowMessage,
        lsn: u64,
    ) -> Result<(), SourceError> {
        let shape_of = |oid: u32| {
            relations.get(&oid).ok_or_else(|| SourceError::Postgres {
                what: "stream".into(),
                reason: format!("a change refers to relation {oid}, which was never described"),
            })
        };
        let (xid, ts_ms) = (self.xid, self.ts_ms);
        let source = |shape: &'a TableShape| ChangeSource {
            server: &spec.server,
            db: &spec.database,
            schema: &shape.relation.schema,
            table: &shape.relation.table,
            tx_id: xid,
            lsn,
            ts_ms,
            snapshot: false,
        };
        let mut events = Vec::with_capacity(2);
        match message {
            RowMessage::Insert { oid, new } => {
                let shape = shape_of(oid)?;
                events.push(change_event(
                    'c',
                    None,
                    Some(shape.image(&new, None)),
                    &source(shape),
                ));
            }
            RowMessage::Update { oid, old, new } => {
                let shape = shape_of(oid)?;
                match old.as_deref() {
                    // A changed primary key is a delete of the old key and a create of the
                    // new one, as Debezium emits it.
                    Some(old) if shape.key_changed(old, &new) => {
                        events.push(change_event(
                            'd',
                            Some(shape.image(old, None)),
                            None,
                            &source(shape),
                        ));
                        events.push(change_event(
                            'c',
                            None,
                            Some(shape.image(&new, Some(old))),
                            &source(shape),
                        ));
                    }
                    old => {
                        let before = old
                            .filter(|_| shape.relation.replica_identity == b'f')
                            .map(|old| shape.image(old, None));
                        events.push(change_event(
                            'u',
                            before,
                            Some(shape.image(&new, old)),
                            &source(shape),
                        ));
                    }
                }
            }
            RowMessage::Delete { oid, old } => {
                let shape = shape_of(oid)?;
                events.push(change_event(
                    'd',
                    Some(shape.image(&old, None)),
                    None,
                    &source(shape),
                ));
            }
            RowMessage::Truncate { oids } => {
                for oid in oids {
                    let shape = shape_of(oid)?;
                    events.push(change_event('t', None, None, &source(shape)));
                }
            }
            RowMessage::Relation(_) | RowMessage::Ignored => {}
        }
        self.changes.extend(events);
        Ok(())
    }

    /// The transaction's records: all at the commit's end LSN (what an epoch's position
    /// records, and the order of transactions), in WAL order within it (row locks order one
    /// key's changes there). A change's own LSN, which may lie below an earlier
    /// transaction's commit, stays in its `source.lsn`.
    pub(super) fn into_records(self, end_lsn: u64) -> Vec<RawRecord> {
        self.changes
            .into_iter()
            .enumerate()
            .map(|(i, json)| record(json, end_lsn, i))
            .collect()
    }
}

/// A record at `offset`, the `seq`-th there.
pub(super) fn record(json: String, offset: u64, seq: usize) -> RawRecord {
    RawRecord {
        key: None,
        value: Some(Arc::from(json.into_bytes().into_boxed_slice())),
        topic: None,
        position: Position {
            stream: 0,
            offset,
            seq: u32::try_from(seq).unwrap_or(u32::MAX),
        },
        line: false,
    }
}
