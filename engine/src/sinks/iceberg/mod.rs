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
mod orphans;
mod partition;
mod read;
mod rest;
mod rewrite;
mod summary;
mod table;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iceberg::io::{FileIO, FileIOBuilder};
use iceberg_storage_opendal::OpenDalStorageFactory;

use tributary_operators::{Row, Schema, Time};

pub use catalog::{Catalog, PostgresCatalog, SqliteCatalog, TableIdent, CATALOG_NAME};
pub use columns::{iceberg_schema, iceberg_type, ColumnMap};
pub use committer::{attach, CommitterContext};
pub use encode::encode_parquet;
pub use expire::{Expired, Retention};
pub use inspect::{consistent_cuts, tables, Cut, SnapshotInfo, TableInfo};
pub use maintain::{compact, expire, remove_orphans, Compacted};
pub use orphans::Orphans;
pub use partition::Partition;
pub use read::{DataFileRef, StoredRow};
pub use rest::RestCatalog;
pub use table::{
    Committed, IcebergTable, SUMMARY_EPOCH, SUMMARY_FIRST_EPOCH, SUMMARY_PIPELINE,
    SUMMARY_POSITIONS,
};
pub use writer::{CommitStats, TableWriter, WriteMode};

use crate::positions::StreamPositions;

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

/// Where tables live and how often they commit.
#[derive(Debug, Clone)]
pub struct IcebergOptions {
    /// The local warehouse directory (tables at `<warehouse>/<namespace>.db/<table>`); unused
    /// when `object_store` is set.
    pub warehouse: PathBuf,
    /// An S3-compatible warehouse (`s3://bucket/prefix`) instead of the local directory.
    pub object_store: Option<ObjectStore>,
    /// The catalog (default: SQLite at `<warehouse>/catalog.db`).
    pub catalog: CatalogLocation,
    /// Commit at most this often (each commit covers whole epochs).
    pub commit_interval: Duration,
    /// How upserts delete replaced rows.
    pub deletes: DeleteMode,
    /// False computes the pipeline's Iceberg outputs without writing them (for `bench`).
    pub write: bool,
    /// Table properties set on the tables this run creates, and over existing tables' own
    /// for what this run does (retention, manifest merging, compaction).
    pub properties: BTreeMap<String, String>,
}

/// How an upserting table deletes the rows it replaces or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Position deletes (file, row position): read by every Iceberg reader, pyiceberg
    /// included; the sink keeps `key → (file, position)` for the rows it holds.
    #[default]
    Position,
    /// Equality deletes on the key columns (the table's identifier fields): no per-key index
    /// in the sink; readers must support equality deletes (Spark, Trino, Flink, iceberg-rust;
    /// not pyiceberg 0.12).
    Equality,
}

/// Where the SQL catalog lives.
#[derive(Clone, PartialEq, Eq)]
pub enum CatalogLocation {
    /// A SQLite file (`sqlite:PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`).
    Postgres(String),
    /// An Iceberg REST catalog (`http[s]://HOST[:PORT][/PATH]`).
    Rest(String),
}

impl std::fmt::Debug for CatalogLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogLocation::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            CatalogLocation::Postgres(url) => f.write_str(&crate::redact::without_password(url)),
            CatalogLocation::Rest(uri) => f.write_str(uri),
        }
    }
}

/// An S3-compatible warehouse location with its client settings (Iceberg `s3.*` properties).
#[derive(Clone)]
pub struct ObjectStore {
    /// `s3://bucket/prefix`.
    pub location: String,
    /// `s3.endpoint`, `s3.region`, credentials…
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials stay out of logs.
        f.debug_struct("ObjectStore")
            .field("location", &self.location)
            .field("endpoint", &self.properties.get(S3_ENDPOINT))
            .field("region", &self.properties.get(S3_REGION))
            .finish_non_exhaustive()
    }
}

const S3_ENDPOINT: &str = "s3.endpoint";
const S3_REGION: &str = "s3.region";

impl ObjectStore {
    /// `location` with settings from the environment: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`,
    /// default `us-east-1`), `TRIBUTARY_S3_ENDPOINT` (or `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`) for MinIO and other S3-compatible stores, and
    /// `TRIBUTARY_S3_PATH_STYLE=true|false` (default: path-style when an endpoint is set).
    pub fn from_env(location: &str) -> Result<Self, IcebergError> {
        let bucket = location
            .strip_prefix("s3://")
            .and_then(|rest| rest.split('/').next())
            .filter(|bucket| !bucket.is_empty());
        if bucket.is_none() {
            return Err(IcebergError::Config(format!(
                "--warehouse {location}: expected s3://BUCKET[/PREFIX]"
            )));
        }
        let env = |names: &[&str]| names.iter().find_map(|name| std::env::var(name).ok());
        let mut properties = BTreeMap::new();
        let mut set = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                properties.insert(key.to_owned(), value);
            }
        };
        set("s3.access-key-id", env(&["AWS_ACCESS_KEY_ID"]));
        set("s3.secret-access-key", env(&["AWS_SECRET_ACCESS_KEY"]));
        set("s3.session-token", env(&["AWS_SESSION_TOKEN"]));
        let region = env(&["AWS_REGION", "AWS_DEFAULT_REGION"]).unwrap_or("us-east-1".into());
        set(S3_REGION, Some(region));
        let endpoint = env(&[
            "TRIBUTARY_S3_ENDPOINT",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL",
        ]);
        let path_style = match env(&["TRIBUTARY_S3_PATH_STYLE"]) {
            Some(value) => value == "true",
            None => endpoint.is_some(),
        };
        set(S3_ENDPOINT, endpoint);
        set("s3.path-style-access", Some(path_style.to_string()));
        Ok(ObjectStore {
            location: location.trim_end_matches('/').to_owned(),
            properties,
        })
    }
}

impl IcebergOptions {
    /// The defaults for a warehouse directory.
    pub fn new(warehouse: impl Into<PathBuf>) -> Self {
        let warehouse = warehouse.into();
        IcebergOptions {
            catalog: CatalogLocation::Sqlite(warehouse.join("catalog.db")),
            warehouse,
            object_store: None,
            commit_interval: Duration::from_secs(10),
            deletes: DeleteMode::default(),
            write: true,
            properties: BTreeMap::new(),
        }
    }

    /// Parses `--warehouse` (a directory or `s3://bucket/prefix`) and `--catalog` values.
    pub fn parse(warehouse: &str, catalog: Option<&str>) -> Result<Self, IcebergError> {
        let object_store = if warehouse.starts_with("s3://") {
            Some(ObjectStore::from_env(warehouse)?)
        } else if warehouse.contains("://") {
            return Err(IcebergError::Config(format!(
                "--warehouse {warehouse}: expected a directory or s3://BUCKET[/PREFIX]"
            )));
        } else {
            None
        };
        let mut options = IcebergOptions::new(warehouse);
        options.object_store = object_store;
        match catalog {
            None if options.object_store.is_some() => {
                return Err(IcebergError::Config(format!(
                    "--warehouse {warehouse} needs a catalog: add --catalog sqlite:PATH (a local \
                     file, e.g. on a persistent volume), --catalog postgres://USER@HOST/DB or \
                     --catalog http[s]://HOST:PORT (REST)"
                )))
            }
            None => {}
            Some(spec) if spec.starts_with("postgres://") || spec.starts_with("postgresql://") => {
                options.catalog = CatalogLocation::Postgres(spec.to_owned());
            }
            Some(spec) if spec.starts_with("http://") || spec.starts_with("https://") => {
                options.catalog = CatalogLocation::Rest(spec.to_owned());
            }
            Some(spec) => match spec.strip_prefix("sqlite:") {
                Some(path) if !path.is_empty() => {
                    options.catalog = CatalogLocation::Sqlite(PathBuf::from(path));
                }
                _ => {
                    return Err(IcebergError::Config(format!(
                        "--catalog {spec}: expected sqlite:PATH, postgres://USER@HOST[:PORT]/DB \
                         or http[s]://HOST[:PORT][/PATH] (REST)"
                    )))
                }
            },
        }
        Ok(options)
    }

    /// Where tables are created: `file:///abs/dir` or `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        match &self.object_store {
            Some(store) => store.location.clone(),
            None => format!("file://{}", self.warehouse.display()),
        }
    }

    fn open(&self) -> Result<(Box<dyn Catalog>, FileIO, String), IcebergError> {
        let catalog: Box<dyn Catalog> = match &self.catalog {
            CatalogLocation::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        IcebergError::Io(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                Box::new(SqliteCatalog::open(path)?)
            }
            CatalogLocation::Postgres(url) => Box::new(PostgresCatalog::open(url)?),
            CatalogLocation::Rest(uri) => Box::new(RestCatalog::open(uri)?),
        };
        if let Some(store) = &self.object_store {
            let io = FileIOBuilder::new(Arc::new(OpenDalStorageFactory::S3 {
                customized_credential_load: None,
            }))
            .with_props(store.properties.clone())
            .build();
            return Ok((catalog, io, store.location.clone()));
        }
        std::fs::create_dir_all(&self.warehouse).map_err(|e| {
            IcebergError::Io(format!(
                "cannot create warehouse {}: {e}",
                self.warehouse.display()
            ))
        })?;
        let absolute = absolute(&self.warehouse)?;
        Ok((
            catalog,
            FileIO::new_with_fs(),
            format!("file://{}", absolute.display()),
        ))
    }
}

fn absolute(path: &Path) -> Result<PathBuf, IcebergError> {
    std::fs::canonicalize(path)
        .map_err(|e| IcebergError::Io(format!("warehouse {}: {e}", path.display())))
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
            WriteMode::Upsert { key } => key.clone(),
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
        let (writer, rows) = TableWriter::recover(
            table,
            mode,
            deletes.unwrap_or(self.options.deletes),
            &self.pipeline,
        )?;
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
    let positions = streams
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
    Some(ResumePoint {
        positions,
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
