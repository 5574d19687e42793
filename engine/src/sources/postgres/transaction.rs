//! A PostgreSQL transaction on its way to the pipeline: the relations the server described,
//! and each change turned into Debezium JSON with the offset that keeps one key's changes in
//! commit order.

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

pub(super) fn report_schema_change(previous: &TableShape, current: &TableShape) {
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
    tracing::warn!(
        table = %format!("{}.{}", current.relation.schema, current.relation.table),
        ?added,
        ?dropped,
        ?retyped,
        "schema change in the source table: rows from now on carry the new columns; columns \
         the pipeline declares but the table dropped arrive as null (a NOT NULL column makes \
         them dead letters), new columns are ignored until the pipeline declares them"
    );
}

/// A transaction being received: its changes as (change LSN, Debezium JSON).
#[derive(Debug)]
pub(super) struct OpenTransaction {
    pub xid: u64,
    pub ts_ms: i64,
    pub changes: Vec<(u64, String)>,
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
        for event in events {
            // Offsets increase within a transaction even if the server repeats an LSN.
            let offset = self
                .changes
                .last()
                .map_or(lsn, |(previous, _)| lsn.max(previous + 1));
            self.changes.push((offset, event));
        }
        Ok(())
    }

    /// The transaction's records. Each change keeps its own LSN as its offset, so changes to
    /// one key sort in commit order within an epoch (row locks order them in the WAL); the
    /// last one carries the commit's end LSN, which is what an epoch's position records.
    pub(super) fn into_records(self, end_lsn: u64) -> Vec<RawRecord> {
        let last = self.changes.len().saturating_sub(1);
        self.changes
            .into_iter()
            .enumerate()
            .map(|(i, (lsn, json))| record(json, if i == last { end_lsn.max(lsn) } else { lsn }))
            .collect()
    }
}

pub(super) fn record(json: String, offset: u64) -> RawRecord {
    RawRecord {
        key: None,
        value: Some(Arc::from(json.into_bytes().into_boxed_slice())),
        topic: None,
        position: Position { stream: 0, offset },
        line: false,
    }
}
