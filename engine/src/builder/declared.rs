//! A declared source table and the relations it gives (state, replica, changes, changed
//! rows), and a table without a key, which gives only its changes.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use tributary_operators::dataflow::lineage::{ColumnsRead, Origin};
use tributary_operators::dataflow::relation::SideOutputs;
use tributary_operators::dataflow::upsert::StateSize;
use tributary_operators::dataflow::{table, Collection};
use tributary_operators::{ChangeEvent, Relation, TableId, TableSpec};

use crate::error::BuildError;

/// `table::state` or `table::replica`.
type UpsertBuilder<'s> = fn(
    Collection<'s, ChangeEvent>,
    &TableSpec,
    SideOutputs<'s>,
    &str,
    Arc<StateSize>,
) -> Relation<'s>;

/// A declared source table without a primary key: its changes only.
#[derive(Debug)]
pub struct KeylessTable<'s>(pub(super) Table<'s>);

impl<'s> KeylessTable<'s> {
    /// Every change as the row it leaves; see [`Table::changed_rows`].
    pub fn changed_rows(&self) -> Relation<'s> {
        self.0.changed_rows()
    }

    /// The table's declaration.
    pub fn spec(&self) -> &TableSpec {
        self.0.spec()
    }
}

/// A declared source table.
pub struct Table<'s> {
    pub(super) id: TableId,
    pub(super) spec: Arc<TableSpec>,
    /// The columns the pipeline reads (the decoder converts only these).
    pub(super) read: ColumnsRead,
    /// What its state holds.
    pub(super) state_size: Arc<StateSize>,
    /// Its change events (plus, after a restart, the events that rebuild its state).
    pub(super) events: RefCell<Collection<'s, ChangeEvent>>,
    pub(super) side: SideOutputs<'s>,
    pub(super) state: OnceCell<Relation<'s>>,
    pub(super) replica: OnceCell<Relation<'s>>,
}

impl std::fmt::Debug for Table<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("spec", &self.spec).finish()
    }
}

impl<'s> Table<'s> {
    /// The table's declaration.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// Every change event as a row: `op`, `event_time`, then the `after` columns.
    pub fn changes(&self) -> Relation<'s> {
        table::changes(
            self.events.borrow().clone(),
            &self.spec,
            Rc::clone(&self.side),
        )
        .with_origins(self.carrying(table::CHANGE_COLUMNS.len(), 0))
        .with_tables([self.id])
    }

    /// Every change as the row it leaves (for deletes, the row it removed): `op`,
    /// `event_time`, `source_lsn`, then the table's columns.
    pub fn changed_rows(&self) -> Relation<'s> {
        table::changed_rows(
            self.events.borrow().clone(),
            &self.spec,
            Rc::clone(&self.side),
        )
        .with_origins(self.carrying(table::CHANGED_ROW_COLUMNS.len(), 0))
        .with_tables([self.id])
    }

    /// The current state with each row's last `cdc_operation` (c/u/r) and `cdc_timestamp`.
    pub fn replica(&self) -> Relation<'s> {
        self.upserted(&self.replica, "replica", table::replica)
            .with_origins(self.carrying(0, table::REPLICA_COLUMNS.len()))
            .with_tables([self.id])
    }

    /// The replica's changes by key, without state (see [`table::replica_by_key`]).
    pub(super) fn replica_by_key(&self) -> Relation<'s> {
        table::replica_by_key(
            self.events.borrow().clone(),
            &self.spec,
            Rc::clone(&self.side),
            &format!("{}/replica-by-key", self.spec.name),
        )
        .with_origins(self.carrying(0, table::REPLICA_COLUMNS.len()))
        .with_tables([self.id])
    }

    /// Adds events that rebuild recovered state; only before the state is first used.
    pub(super) fn seed(&self, seed: Collection<'s, ChangeEvent>) -> Result<(), BuildError> {
        if self.state.get().is_some() || self.replica.get().is_some() {
            return Err(BuildError::Table {
                table: self.spec.name.clone(),
                reason: "declare its Iceberg replica before using its state".into(),
            });
        }
        let events = self.events.borrow().clone().concat(seed);
        *self.events.borrow_mut() = events;
        Ok(())
    }

    /// The current state: one row per primary key (upsert; deletes retract).
    pub fn state(&self) -> Relation<'s> {
        self.upserted(&self.state, "state", table::state)
            .with_origins(self.carrying(0, 0))
            .with_tables([self.id])
    }

    /// Origins of a relation with `before` computed columns, then the table's columns, then
    /// `after` computed columns.
    pub(super) fn carrying(
        &self,
        before: usize,
        after: usize,
    ) -> impl Iterator<Item = Option<Origin>> + '_ {
        let computed = |n| std::iter::repeat_n(None, n);
        computed(before)
            .chain(self.read.origins())
            .chain(computed(after))
    }

    /// An upserted relation built once (by `build`, named `<table>/<what>`) and kept in `cell`.
    fn upserted(
        &self,
        cell: &OnceCell<Relation<'s>>,
        what: &str,
        build: UpsertBuilder<'s>,
    ) -> Relation<'s> {
        cell.get_or_init(|| {
            build(
                self.events.borrow().clone(),
                &self.spec,
                Rc::clone(&self.side),
                &format!("{}/{what}", self.spec.name),
                Arc::clone(&self.state_size),
            )
        })
        .clone()
    }
}
