//! Where a run's Iceberg tables live and how they are written: the warehouse (a directory or
//! S3), the catalog, the commit interval, the delete mode and table properties, parsed from
//! `--warehouse`/`--catalog`, and the catalog and file I/O they open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iceberg::io::{FileIO, FileIOBuilder};
use iceberg_storage_opendal::OpenDalStorageFactory;

use super::catalog::Catalog;
use super::{IcebergError, PostgresCatalog, RestCatalog, SqliteCatalog};

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

    pub(super) fn open(&self) -> Result<(Box<dyn Catalog>, FileIO, String), IcebergError> {
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
