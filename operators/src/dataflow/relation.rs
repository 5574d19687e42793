//! `Relation`: a collection of rows with its schema, the type pipelines compose.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::expr::Expr;
use super::Collection;
use crate::event::DeadLetter;
use crate::row::Row;
use crate::schema::Schema;

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
        }
    }

    /// The schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Indices of the identifying columns, if any.
    pub fn key(&self) -> Option<&[usize]> {
        self.key.as_deref()
    }

    /// The underlying collection (for sinks).
    pub fn rows(&self) -> &Collection<'s, Row> {
        &self.rows
    }

    /// Where this relation's operators report dead letters.
    pub fn side_outputs(&self) -> &SideOutputs<'s> {
        &self.side
    }

    /// A relation derived from this one, sharing its side outputs.
    pub fn derive(
        &self,
        schema: Schema,
        key: Option<Vec<usize>>,
        rows: Collection<'s, Row>,
    ) -> Self {
        Relation {
            schema: Arc::new(schema),
            key,
            rows,
            side: Rc::clone(&self.side),
        }
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
                        .position(|b| matches!(b, super::expr::BoundExpr::Column(i, _) if i == k))
                })
                .collect::<Option<Vec<_>>>()
        });
        let rows = self
            .rows
            .clone()
            .map(move |row| bound.iter().map(|b| b.eval(&row)).collect());
        Ok(self.derive(Schema::new(columns), key, rows))
    }
}
