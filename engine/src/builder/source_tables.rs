//! What a pipeline takes from the source's own tables: the catalog a run starts with (the
//! tables the user declared, then those the source describes or those learnt from its
//! records), the tables learnt from schema-wrapped records, and the builder's methods that
//! declare and replicate such tables.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tributary_operators::dataflow::decode::SourceSchemas;
use tributary_operators::dataflow::table;
use tributary_operators::debezium::DescribedTable;
use tributary_operators::Schema;

use super::{KeylessTable, PipelineBuilder, Table};
use crate::error::BuildError;
use crate::options::{RunOptions, TableOptions};
use crate::sinks::iceberg::{self, DeleteMode, TableIdent};
use crate::sources::{SourceTable, TableFilter};

/// What the run's source said about its tables before the dataflow was built, for pipelines
/// that take their tables from it.
#[derive(Debug, Default)]
pub(crate) struct SourceCatalog {
    /// The source, as logs describe it.
    pub source: String,
    /// Its tables (those `--tables` selects); `None`: none can be known.
    pub tables: Option<Vec<SourceTable>>,
    /// `--namespace`.
    pub namespace: Option<String>,
    /// The schemas the pipeline declared for source tables it follows
    /// ([`PipelineBuilder::replicate`]): the source stops before a change that no longer
    /// fits them.
    pub followed: std::sync::Mutex<BTreeMap<String, Schema>>,
    /// The pipeline listed the source's tables: a new one rebuilds it (or, from sources
    /// that describe no tables, its events are `no-schema` dead letters).
    pub listed: std::sync::atomic::AtomicBool,
    /// `--tables`.
    pub filter: Option<TableFilter>,
    /// Per source table, how `replicate` writes it.
    pub table_options: BTreeMap<String, TableOptions>,
    /// Where the decoder puts the tables schema-wrapped records describe (`None`: the source
    /// describes its tables, or nothing is learnt).
    pub learning: Option<Learning>,
}

/// Tables learnt from schema-wrapped records, for sources that describe none ahead of their
/// data: a record of a table the run lacks, or whose schema its declaration does not hold,
/// is learnt here and aborts the run (nothing more is committed); the run builds the
/// pipeline again with what it learnt and replays from the last commit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Learning {
    /// By `server.schema.table`; kept across the run's rebuilds.
    pub learnt: Arc<std::sync::Mutex<BTreeMap<String, SourceTable>>>,
    /// Tables the user declared: never relearnt.
    pub declared: Arc<BTreeSet<String>>,
    /// Set when something was learnt: stop, commit nothing more.
    pub abort: Arc<std::sync::atomic::AtomicBool>,
}

impl SourceCatalog {
    /// The run's source tables: those the user declared, then those the source describes (or,
    /// for sources that describe none, those learnt from their records), `--tables` selecting;
    /// `None` when no table can be known.
    pub(crate) fn tables_for_run(
        options: &RunOptions,
        described: Option<Vec<SourceTable>>,
        learning: Option<&Learning>,
    ) -> Option<Vec<SourceTable>> {
        let selected = |t: &SourceTable| {
            let filter = options.tables.as_ref();
            filter.is_none_or(|f| f.matches(&t.namespace, &t.table))
        };
        let learnt = learning.and_then(|l| {
            l.learnt
                .lock()
                .ok()
                .map(|t| t.values().cloned().collect::<Vec<_>>())
        });
        let mut tables: Vec<SourceTable> = options
            .declared_tables
            .iter()
            .filter(|t| selected(t))
            .cloned()
            .collect();
        let others = described.or(learnt)?;
        let more: Vec<SourceTable> = others
            .into_iter()
            .filter(|t| selected(t) && !tables.iter().any(|d| d.name == t.name))
            .collect();
        tables.extend(more);
        Some(tables)
    }

    /// What the decoder does with tables and schemas it does not know.
    pub(super) fn decoder_schemas(&self) -> SourceSchemas {
        let filter = self.filter.clone();
        let wanted = Arc::new(move |name: &str| {
            let parts: Vec<&str> = name.rsplitn(3, '.').collect();
            match (&filter, parts.as_slice()) {
                (None, _) => true,
                (Some(filter), [table, namespace, ..]) => filter.matches(namespace, table),
                (Some(_), _) => false,
            }
        });
        let learn = self.learning.clone().map(|learning| {
            let learn: Arc<dyn Fn(DescribedTable) + Send + Sync> =
                Arc::new(move |described: DescribedTable| learning.learn(described));
            learn
        });
        SourceSchemas { wanted, learn }
    }
}

impl Learning {
    fn learn(&self, described: DescribedTable) {
        if self.declared.contains(&described.name) {
            return;
        }
        let parts: Vec<&str> = described.name.rsplitn(3, '.').collect();
        let (table, namespace) = match parts.as_slice() {
            [table, namespace, ..] => ((*table).to_owned(), (*namespace).to_owned()),
            _ => (described.name.clone(), "default".to_owned()),
        };
        let unmapped = described.unmapped;
        let learnt = SourceTable {
            name: described.name,
            namespace,
            table,
            schema: described.schema,
            key: described.key,
        };
        if let Ok(mut tables) = self.learnt.lock() {
            if tables.get(&learnt.name) != Some(&learnt) {
                tracing::info!(table = %learnt.name, columns = %learnt.schema.names(), key = ?learnt.key, "a record describes a table the run does not have (or a new schema of it): rebuilding the pipeline with it");
                if !unmapped.is_empty() {
                    tracing::warn!(table = %learnt.name, columns = ?unmapped, "no mapping for these Connect types: replicated as text (values that are not text become type-mismatch dead letters)");
                }
                tables.insert(learnt.name.clone(), learnt);
                self.abort.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

impl<'s> PipelineBuilder<'s> {
    /// The tables the source describes (with `--tables`, those it selects): their names,
    /// schemas and primary keys. A pipeline that asks is built again when a new table
    /// appears (its first change stops the source before it). From sources that describe no
    /// tables ahead of their data (files, Kafka): those declared and those learnt so far from
    /// schema-wrapped records (see [`PipelineBuilder::learns_tables`]).
    pub fn source_tables(&self) -> Result<&[SourceTable], BuildError> {
        self.source
            .listed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.source.tables.as_deref().ok_or_else(|| {
            BuildError::SourceTables(format!(
                "source `{}` does not describe its tables: declare them in tributary.toml \
                 ([[table]] with name, key and columns), or read them from PostgreSQL \
                 (--source postgres://…)",
                self.source.source
            ))
        })
    }

    /// True when the source describes no tables ahead of its data and the run learns them
    /// from schema-wrapped records as they come (a table's first record rebuilds the
    /// pipeline with it): a pipeline may start with none.
    pub fn learns_tables(&self) -> bool {
        self.source.learning.is_some()
    }

    /// `--namespace`: where pipelines that take their tables from the source put their
    /// Iceberg tables (`None`: in the source's schema, e.g. `public`).
    pub fn namespace(&self) -> Option<&str> {
        self.source.namespace.as_deref()
    }

    /// Declares the source table `name` (`server.schema.table`) with the schema the source
    /// describes, keyed by `key`, or by its primary key when `key` is empty. Fails when the
    /// source does not describe it (naming the tables it does) or it has no key.
    pub fn source_table(&mut self, name: &str, key: &[&str]) -> Result<Table<'s>, BuildError> {
        let tables = self.source_tables()?;
        let Some(found) = tables.iter().find(|t| t.name == name).cloned() else {
            let known: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            return Err(BuildError::Table {
                table: name.to_owned(),
                reason: format!(
                    "the source does not describe it (it has: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        };
        let key: Vec<&str> = if key.is_empty() {
            found.key.iter().map(String::as_str).collect()
        } else {
            key.to_vec()
        };
        self.table(name, found.schema, &key)
    }

    /// Keeps the source table `source` (as [`source_tables`](Self::source_tables) describes
    /// it) in the Iceberg table `name`, following its schema: upserted by its primary key with
    /// `cdc_operation` and `cdc_timestamp` (see [`iceberg_replica`](Self::iceberg_replica);
    /// with equality deletes, by key without keeping the rows in memory),
    /// or, without a key, as an append-only log of its changed rows. Columns other than the
    /// key may be NULL (rows replayed from before a column was added lack it); columns the
    /// table has and the source dropped stay (NULL from then on); the Iceberg schema evolves
    /// to take new columns and widened types. A later change the schema does not fit stops
    /// the source before it, and the run restarts with the new schema.
    pub fn replicate(&mut self, source: &SourceTable, name: &str) -> Result<(), BuildError> {
        let sink_error = |cause: iceberg::IcebergError| BuildError::Sink {
            sink: format!("iceberg table `{name}`"),
            cause: cause.into(),
        };
        let ident = TableIdent::parse(name).map_err(sink_error)?;
        let existing = self
            .sinks
            .iceberg
            .existing_schema(&ident)
            .map_err(sink_error)?;
        let options = self
            .source
            .table_options
            .get(&source.name)
            .cloned()
            .unwrap_or_default();
        let key = options.key.clone().unwrap_or_else(|| source.key.clone());
        let schema = followed_schema(source, &key, existing.as_ref());
        if let Ok(mut followed) = self.source.followed.lock() {
            followed.insert(source.name.clone(), schema.clone());
        }
        if key.is_empty() {
            let table = self.keyless_table(&source.name, schema)?;
            return self.iceberg_append(name, &table.changed_rows());
        }
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        let table = self.table(&source.name, schema, &key)?;
        let deletes = options
            .deletes
            .unwrap_or_else(|| self.sinks.iceberg.default_deletes());
        // Deleted by key, the replica needs no rows in memory.
        let by_key = deletes == DeleteMode::Equality;
        self.iceberg_replica_with(name, &table, &options.partitions, (Some(deletes), by_key))
            .map(|_| ())
    }

    /// Declares a source table without a primary key: only its changes can be read
    /// ([`KeylessTable::changed_rows`]), as an append-only log.
    pub fn keyless_table(
        &mut self,
        name: &str,
        schema: Schema,
    ) -> Result<KeylessTable<'s>, BuildError> {
        self.declare(name, schema, Vec::new()).map(KeylessTable)
    }
}

/// The schema a followed source table is declared with: the source's columns, NULL allowed
/// outside `key`, then the columns an existing Iceberg table keeps that the source dropped
/// (the replica's and change log's own columns aside).
fn followed_schema(source: &SourceTable, key: &[String], existing: Option<&Schema>) -> Schema {
    let mut columns: Vec<tributary_operators::Column> = source
        .schema
        .columns
        .iter()
        .map(|column| {
            let mut column = column.clone();
            column.nullable |= !key.iter().any(|k| **k == *column.name);
            column
        })
        .collect();
    let computed = table::REPLICA_COLUMNS
        .iter()
        .chain(&table::CHANGED_ROW_COLUMNS);
    let computed: Vec<&str> = computed.copied().collect();
    for column in existing.map(|s| s.columns.as_slice()).unwrap_or_default() {
        let known = columns.iter().any(|c| c.name == column.name);
        if !known && !computed.contains(&column.name.as_ref()) {
            let mut kept = column.clone();
            kept.nullable = true;
            columns.push(kept);
        }
    }
    Schema::new(columns)
}
