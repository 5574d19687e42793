//! Iceberg sink: one atomic snapshot per commit interval covering whole epochs, with rows
//! inserted and deleted (position deletes) and the source positions in the snapshot summary;
//! on restart, state and positions come back from the table (exactly-once).

mod batch;
mod catalog;
mod columns;
mod commit;
mod committer;
mod encode;
mod expire;
mod housekeeping;
mod inspect;
mod keyed;
mod maintain;
mod manifests;
mod metrics;
mod options;
mod orphans;
mod partition;
mod read;
mod rest;
mod rewrite;
mod summary;
mod table;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary_operators::{Row, Schema, Time};

pub use catalog::{Catalog, PostgresCatalog, SqliteCatalog, TableIdent, CATALOG_NAME};
pub use columns::{iceberg_schema, iceberg_type, ColumnMap};
pub use committer::{attach, CommitterContext};
pub use encode::encode_parquet;
pub use expire::{Expired, Retention};
pub use inspect::{consistent_cuts, tables, Cut, SnapshotInfo, TableInfo};
pub use maintain::{compact, expire, remove_orphans, Compacted};
pub use options::{CatalogLocation, DeleteMode, IcebergOptions, ObjectStore};
pub use orphans::Orphans;
pub use partition::Partition;
pub use read::{DataFileRef, StoredRow};
pub use rest::RestCatalog;
pub use table::{
    Committed, IcebergTable, SUMMARY_EPOCH, SUMMARY_FIRST_EPOCH, SUMMARY_PIPELINE,
    SUMMARY_POSITIONS,
};
pub use writer::{CommitStats, TableWriter, WriteMode};

use crate::positions::{StreamPositions, StreamProgress};

/// What can go wrong writing Iceberg tables.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    /// A setting or table definition is wrong.
    #[error("{0}")]
    Config(String),
    /// The catalog could not be read or written.
    #[error("{0}")]
    Catalog(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The pipeline's rows do not fit the table.
    #[error("schema mismatch: {0}")]
    SchemaMismatch(String),
    /// The table and the dataflow disagree (a bug, or another writer changed the table).
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
    /// Another writer committed to the table first.
    #[error(
        "table {0} was changed by another writer during a commit; only one Tributary \
         pipeline may write a table"
    )]
    Conflict(String),
    /// Another writer committed a snapshot while this one was committing.
    #[error(
        "table {table} got snapshot {snapshot} from another writer during a commit (e.g. \
         `tributary maintain compact` while the pipeline runs); this commit was dropped, nothing \
         of it is visible. Restart the pipeline: it resumes from the table as it is now"
    )]
    ConcurrentSnapshot {
        /// The table.
        table: String,
        /// The other writer's snapshot.
        snapshot: i64,
    },
    /// The iceberg library reported an error.
    #[error("{context}: {cause}")]
    Iceberg {
        /// What was being done.
        context: String,
        /// The library's error.
        cause: Box<iceberg::Error>,
    },
}

impl IcebergError {
    pub(crate) fn iceberg(context: impl std::fmt::Display, cause: iceberg::Error) -> Self {
        IcebergError::Iceberg {
            context: context.to_string(),
            cause: Box::new(cause),
        }
    }
}

impl From<iceberg::Error> for IcebergError {
    fn from(cause: iceberg::Error) -> Self {
        IcebergError::iceberg("iceberg", cause)
    }
}

impl From<arrow_schema::ArrowError> for IcebergError {
    fn from(cause: arrow_schema::ArrowError) -> Self {
        IcebergError::Io(format!("arrow: {cause}"))
    }
}

/// A table opened for this run, shared by the workers while they build the dataflow.
#[derive(Debug)]
pub struct OpenedTable {
    /// The writer, taken by the worker that hosts the sink.
    writer: Mutex<Option<TableWriter>>,
    /// Rows to rebuild the dataflow state from (upserts), until every worker took its share.
    seed: Mutex<Option<Arc<Vec<Row>>>>,
    seed_takers: AtomicUsize,
    /// What the table's last snapshot recorded.
    pub committed: Committed,
    /// Rows are appended (not upserted by a key).
    appends: bool,
}

impl OpenedTable {
    /// Takes the writer (once).
    pub fn take_writer(&self) -> Option<TableWriter> {
        self.writer.lock().ok()?.take()
    }

    /// This worker's share of the seed rows: every `peers`-th row from `index`.
    pub fn seed_share(&self, index: usize, peers: usize) -> Vec<Row> {
        let Ok(mut seed) = self.seed.lock() else {
            return Vec::new();
        };
        let share = seed
            .as_ref()
            .map(|rows| rows.iter().skip(index).step_by(peers).cloned().collect())
            .unwrap_or_default();
        if self.seed_takers.fetch_add(1, Ordering::SeqCst) + 1 == peers {
            *seed = None;
        }
        share
    }
}

/// The Iceberg tables of a run, opened once and shared by all workers.
#[derive(Debug, Clone)]
pub struct IcebergSinks {
    options: IcebergOptions,
    pipeline: String,
    tables: Arc<Mutex<BTreeMap<TableIdent, Arc<OpenedTable>>>>,
}

impl IcebergSinks {
    /// Tables of `pipeline` under `options`.
    pub fn new(options: IcebergOptions, pipeline: &str) -> Self {
        IcebergSinks {
            options,
            pipeline: pipeline.to_owned(),
            tables: Arc::default(),
        }
    }

    /// The current schema of table `ident`, if it exists (and this run writes Iceberg).
    pub fn existing_schema(&self, ident: &TableIdent) -> Result<Option<Schema>, IcebergError> {
        if !self.options.write {
            return Ok(None);
        }
        let (mut catalog, io, _) = self.options.open()?;
        let Some(location) = catalog.load(ident)? else {
            return Ok(None);
        };
        let metadata = table::io_runtime()?
            .block_on(iceberg::spec::TableMetadata::read_from(&io, &location))
            .map_err(|e| IcebergError::iceberg(format!("reading {location}"), e))?;
        columns::schema_of(metadata.current_schema()).map(Some)
    }

    /// False when Iceberg outputs are computed but not written.
    pub fn writes(&self) -> bool {
        self.options.write
    }

    /// How tables delete replaced rows unless a table says (`--iceberg-deletes`).
    pub fn default_deletes(&self) -> DeleteMode {
        self.options.deletes
    }

    /// The commit interval.
    pub fn commit_interval(&self) -> Duration {
        self.options.commit_interval
    }

    /// Opens (or creates) `ident` for rows of `schema`, partitioned by `partitions` when
    /// created, deleting replaced rows as `deletes` says (default: the run's
    /// `--iceberg-deletes`); the first worker to ask does the I/O.
    pub fn open(
        &self,
        ident: &TableIdent,
        schema: &Schema,
        mode: WriteMode,
        (partitions, deletes): (&[Partition], Option<DeleteMode>),
    ) -> Result<Arc<OpenedTable>, IcebergError> {
        let mut tables = self
            .tables
            .lock()
            .map_err(|_| IcebergError::Inconsistent("a worker failed while opening".into()))?;
        if let Some(opened) = tables.get(ident) {
            return Ok(Arc::clone(opened));
        }
        let (catalog, io, warehouse) = self.options.open()?;
        let key = match &mode {
            WriteMode::Upsert { key } | WriteMode::ByKey { key } => key.clone(),
            WriteMode::Append => Vec::new(),
        };
        let appends = matches!(mode, WriteMode::Append);
        let table = IcebergTable::open_or_create(
            catalog,
            io,
            (&warehouse, &self.options.properties),
            ident.clone(),
            (schema, &key, partitions),
        )?;
        let deletes = match mode {
            WriteMode::ByKey { .. } => DeleteMode::Equality,
            _ => deletes.unwrap_or(self.options.deletes),
        };
        let (writer, rows) = TableWriter::recover(table, mode, deletes, &self.pipeline)?;
        let committed = writer.committed().clone();
        if committed.epoch.is_some() {
            tracing::info!(
                table = %ident,
                epoch = committed.epoch,
                rows = rows.len(),
                positions = ?committed.positions,
                "resuming from the table's last snapshot"
            );
        }
        let opened = Arc::new(OpenedTable {
            writer: Mutex::new(Some(writer)),
            seed: Mutex::new(Some(Arc::new(rows))),
            seed_takers: AtomicUsize::new(0),
            committed,
            appends,
        });
        tables.insert(ident.clone(), Arc::clone(&opened));
        Ok(opened)
    }

    /// Where the source resumes (`None`: no table has a snapshot yet). Tables ahead of it drop
    /// what they already hold (see `PipelineBuilder`).
    pub fn resume_point(&self) -> Result<Option<ResumePoint>, IcebergError> {
        let tables = self
            .tables
            .lock()
            .map_err(|_| IcebergError::Inconsistent("a worker failed while opening".into()))?;
        let committed: Vec<(&TableIdent, &Committed)> = tables
            .iter()
            .map(|(ident, t)| (ident, &t.committed))
            .collect();
        Ok(resume_from(&committed).map(|mut point| {
            point.appended = tables
                .iter()
                .filter(|(_, t)| t.appends && t.committed.epoch.is_some())
                .map(|(ident, _)| ident.to_string())
                .collect();
            point
        }))
    }
}

/// Where a restarted run's source resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// Per stream, the earliest position any table still needs.
    pub positions: StreamPositions,
    /// Per stream, the progress committed with that position.
    pub progress: StreamProgress,
    /// The last epoch any table committed.
    pub epoch: Time,
    /// Tables with no snapshot yet, while others have one: resumed, they miss the source's
    /// earlier rows, unless the source can read everything again.
    pub unstarted: Vec<String>,
    /// Append-only tables with a snapshot: reading everything again appends rows again.
    pub appended: Vec<String>,
}

/// The resume point of tables committed as `tables` say (see [`IcebergSinks::resume_point`]).
fn resume_from(tables: &[(&TableIdent, &Committed)]) -> Option<ResumePoint> {
    let resumed: Vec<&Committed> = tables
        .iter()
        .filter_map(|(_, c)| c.epoch.is_some().then_some(*c))
        .collect();
    let epoch = resumed.iter().filter_map(|c| c.epoch).max()?;
    let unstarted = tables
        .iter()
        .filter(|(_, c)| c.epoch.is_none())
        .map(|(ident, _)| ident.to_string())
        .collect();
    let streams: BTreeSet<&String> = resumed.iter().flat_map(|c| c.positions.keys()).collect();
    let positions: StreamPositions = streams
        .into_iter()
        .filter_map(|stream| {
            // A table that never saw the stream needs all of it.
            let earliest = resumed
                .iter()
                .map(|c| c.positions.get(stream).copied())
                .min()
                .flatten()?;
            Some((stream.clone(), earliest))
        })
        .collect();
    // Progress goes with the position it was committed at: a table's at the earliest one.
    let progress = positions
        .iter()
        .filter_map(|(stream, offset)| {
            let note = resumed
                .iter()
                .filter(|c| c.positions.get(stream) == Some(offset))
                .find_map(|c| c.progress.get(stream))?;
            Some((stream.clone(), note.clone()))
        })
        .collect();
    Some(ResumePoint {
        positions,
        progress,
        epoch,
        unstarted,
        appended: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(epoch: Option<Time>, positions: &[(&str, u64)]) -> Committed {
        Committed {
            epoch,
            progress: StreamProgress::new(),
            positions: positions
                .iter()
                .map(|(s, o)| ((*s).to_owned(), *o))
                .collect(),
        }
    }

    #[test]
    fn tables_resume_from_the_earliest_position_any_of_them_needs() {
        let (a, b, c) = (
            TableIdent::parse("ns.a").unwrap(),
            TableIdent::parse("ns.b").unwrap(),
            TableIdent::parse("ns.c").unwrap(),
        );
        let ahead = committed(Some(9), &[("t/0", 90), ("t/1", 40)]);
        let idle = committed(Some(3), &[("t/0", 30), ("t/1", 45)]);
        let fresh = committed(None, &[]);
        let point = resume_from(&[(&a, &ahead), (&b, &idle), (&c, &fresh)]).unwrap();
        assert_eq!(point.epoch, 9, "epochs go on after the newest");
        assert_eq!(
            point.positions,
            StreamPositions::from([("t/0".into(), 30), ("t/1".into(), 40)])
        );
        assert_eq!(point.unstarted, ["ns.c"]);
        let partial = committed(Some(4), &[("t/0", 50)]);
        let point = resume_from(&[(&a, &ahead), (&b, &partial)]).unwrap();
        assert!(point.unstarted.is_empty());
        assert_eq!(
            point.positions,
            StreamPositions::from([("t/0".into(), 50)]),
            "a stream one table never saw is read from its start"
        );
        assert_eq!(resume_from(&[(&c, &fresh)]), None);
    }
}
