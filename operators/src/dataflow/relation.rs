//! `Relation`: a collection of rows with its schema, the type pipelines compose.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::expr::{BoundExpr, Expr};
use super::lineage::Origin;
use super::Collection;
use crate::event::DeadLetter;
use crate::row::Row;
use crate::schema::{Schema, TableId};

/// A problem in a pipeline definition, found while building it (unknown column, bad type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Dead-letter collections produced by operators downstream of decoding (e.g. late events),
/// gathered for the pipeline's dead-letter sink.
pub type SideOutputs<'s> = Rc<RefCell<Vec<Collection<'s, DeadLetter>>>>;

/// Rows with a schema. Diffs say how the relation changes at each epoch.
#[derive(Clone)]
pub struct Relation<'s> {
    schema: Arc<Schema>,
    key: Option<Vec<usize>>,
    rows: Collection<'s, Row>,
    side: SideOutputs<'s>,
    /// Per column, the source-table column it carries unchanged (`None`: computed here).
    origins: Rc<[Option<Origin>]>,
    /// The source tables its rows derive from.
    tables: Rc<[TableId]>,
}

impl std::fmt::Debug for Relation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relation")
            .field("schema", &self.schema)
            .field("key", &self.key)
            .finish()
    }
}

impl<'s> Relation<'s> {
    /// Wraps a collection of rows that follow `schema`. `key` names the columns that identify a
    /// row (a table's primary key, a group-by's groups), when there are such columns.
    pub fn new(
        schema: Arc<Schema>,
        key: Option<Vec<usize>>,
        rows: Collection<'s, Row>,
        side: SideOutputs<'s>,
    ) -> Self {
        Relation {
            schema,
            key,
            rows,
            side,
            origins: Rc::new([]),
            tables: Rc::new([]),
        }
    }

    /// The same relation, derived from these source tables.
    pub fn with_tables(mut self, tables: impl IntoIterator<Item = TableId>) -> Self {
        self.tables = tables.into_iter().collect();
        self
    }

    /// The source tables its rows derive from (a durable sink resumes them).
    pub fn tables(&self) -> &[TableId] {
        &self.tables
    }

    /// The same relation, its columns carrying these source-table columns (one per column).
    pub fn with_origins(mut self, origins: impl IntoIterator<Item = Option<Origin>>) -> Self {
        self.origins = origins.into_iter().collect();
        self
    }

    /// The schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Indices of the identifying columns, if any.
    pub fn key(&self) -> Option<&[usize]> {
        self.key.as_deref()
    }

    /// The rows, for a sink or any code that may look at every column: all columns count as
    /// read, so the decoder converts every source column they carry.
    pub fn rows(&self) -> &Collection<'s, Row> {
        self.reading(0..self.schema.len())
    }

    /// The rows, for an operator that looks only at `columns`: those count as read.
    pub(crate) fn reading(&self, columns: impl IntoIterator<Item = usize>) -> &Collection<'s, Row> {
        for column in columns {
            if let Some(origin) = self.origin(column) {
                origin.mark_read();
            }
        }
        &self.rows
    }

    /// The source-table column that column `index` carries, if any.
    pub(crate) fn origin(&self, index: usize) -> Option<&Origin> {
        self.origins.get(index)?.as_ref()
    }

    /// Where this relation's operators report dead letters.
    pub fn side_outputs(&self) -> &SideOutputs<'s> {
        &self.side
    }

    /// A relation derived from this one, sharing its side outputs; its columns are computed
    /// (use [`Relation::with_origins`] for those copied from this one).
    pub fn derive(
        &self,
        schema: Schema,
        key: Option<Vec<usize>>,
        rows: Collection<'s, Row>,
    ) -> Self {
        Relation::new(Arc::new(schema), key, rows, Rc::clone(&self.side))
            .with_tables(self.tables.iter().copied())
    }

    /// Resolves column names to indices.
    pub fn columns<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<usize>, PlanError> {
        names
            .into_iter()
            .map(|name| {
                self.schema.index_of(name).ok_or_else(|| {
                    PlanError(format!(
                        "no column `{name}`; the relation has: {}",
                        self.schema.names()
                    ))
                })
            })
            .collect()
    }

    /// `SELECT exprs`: one output column per expression.
    pub fn select(&self, exprs: impl IntoIterator<Item = Expr>) -> Result<Relation<'s>, PlanError> {
        let mut columns = Vec::new();
        let mut bound = Vec::new();
        for expr in exprs {
            let b = expr.bind(&self.schema).map_err(PlanError)?;
            columns.push(b.column(&expr.output_name()));
            bound.push(b);
        }
        // Keep the key when every key column is selected as a bare column.
        let key = self.key.as_ref().and_then(|key| {
            key.iter()
                .map(|k| {
                    bound
                        .iter()
                        .position(|b| matches!(b, BoundExpr::Column(i, _) if i == k))
                })
                .collect::<Option<Vec<_>>>()
        });
        let origins: Vec<_> = bound
            .iter()
            .map(|b| match b {
                BoundExpr::Column(i, _) => self.origin(*i).cloned(),
                _ => None,
            })
            .collect();
        let rows = self
            .reading(bound.iter().flat_map(BoundExpr::columns))
            .clone()
            .map(move |row| bound.iter().map(|b| b.eval(&row)).collect());
        Ok(self
            .derive(Schema::new(columns), key, rows)
            .with_origins(origins))
    }
}
