//! One Iceberg table as the sink sees it: opened (or created from the pipeline's schema) through
//! a catalog, its metadata, and the files and rows of its current snapshot for recovery.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use iceberg::io::FileIO;
use iceberg::spec::{
    FormatVersion, ManifestEntryRef, Schema as IcebergSchema, SortOrder, TableMetadata,
    TableMetadataBuilder,
};
use iceberg::MetadataLocation;

use tributary_operators::{Schema, Time};

use super::catalog::{Catalog, TableIdent};
use super::columns::{evolve, iceberg_schema, schema_of, ColumnMap};
use super::expire::FileIndex;
use super::partition::{unbound_spec, Partition, Partitioner};
use super::IcebergError;
use crate::positions::{StreamPositions, StreamProgress};

/// Snapshot-summary keys that make restarts exactly-once.
pub const SUMMARY_PIPELINE: &str = "tributary.pipeline";
/// The last epoch a snapshot covers.
pub const SUMMARY_EPOCH: &str = "tributary.epoch";
/// The source positions (JSON object: stream → last offset) a snapshot covers.
pub const SUMMARY_POSITIONS: &str = "tributary.source-positions";
/// What the sources need besides positions to resume (JSON object: stream → the source's
/// note), e.g. a PostgreSQL backfill's finished tables and chunks.
pub const SUMMARY_PROGRESS: &str = "tributary.source-progress";
/// `in-progress` while a source still backfills a table (its rows are then those of the
/// chunks read so far plus every change streamed since the backfill began), else `complete`;
/// absent when the source reports no backfill.
pub const SUMMARY_BACKFILL: &str = "tributary.backfill";
/// The first epoch whose changes a snapshot adds (its epoch + 1 when it adds none): with
/// `tributary.epoch`, what tells whether a table's snapshot holds its state at a given epoch.
pub const SUMMARY_FIRST_EPOCH: &str = "tributary.first-epoch";

/// Properties of the tables Tributary creates (besides Iceberg's defaults): zstd data files,
/// and metadata files past `write.metadata.previous-versions-max` (100) deleted after commits.
pub const CREATED_TABLE_PROPERTIES: [(&str, &str); 2] = [
    ("write.parquet.compression-codec", "zstd"),
    ("write.metadata.delete-after-commit.enabled", "true"),
];

/// An open table.
#[derive(Debug)]
pub struct IcebergTable {
    /// Its name.
    pub ident: TableIdent,
    pub(super) catalog: Box<dyn Catalog>,
    pub(super) io: FileIO,
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) metadata: TableMetadata,
    pub(super) metadata_location: String,
    /// The pipeline's columns in the table.
    pub columns: ColumnMap,
    /// Rows' partition values.
    pub partitioner: Partitioner,
    /// The evolved schema the next commit makes current (with its snapshot).
    pub(super) pending_schema: Option<IcebergSchema>,
    /// Table properties this run sets over the table's own (`--iceberg-property`).
    overrides: BTreeMap<String, String>,
    /// What maintenance has read of the table's manifest lists and manifests.
    pub(super) file_index: FileIndex,
    /// The entries of manifests read (manifests never change), by path.
    pub(super) manifest_cache: Mutex<HashMap<String, Arc<[ManifestEntryRef]>>>,
}

/// What the table's current snapshot says about an earlier run.
#[derive(Debug, Default, Clone)]
pub struct Committed {
    /// The last epoch committed.
    pub epoch: Option<Time>,
    /// The source positions committed.
    pub positions: StreamPositions,
    /// The sources' progress committed with them.
    pub progress: StreamProgress,
}

impl IcebergTable {
    /// Opens `ident`, creating it (format v2, partitioned by `partitions`, with
    /// `CREATED_TABLE_PROPERTIES` and `properties`) from `schema` if it does not exist;
    /// `properties` also override the table's own for this run.
    pub fn open_or_create(
        mut catalog: Box<dyn Catalog>,
        io: FileIO,
        (warehouse, properties): (&str, &BTreeMap<String, String>),
        ident: TableIdent,
        (schema, key, partitions): (&Schema, &[usize], &[Partition]),
    ) -> Result<Self, IcebergError> {
        let runtime = io_runtime()?;
        let (metadata, metadata_location) = match catalog.load(&ident)? {
            Some(location) => {
                let metadata = runtime
                    .block_on(TableMetadata::read_from(&io, &location))
                    .map_err(|e| IcebergError::iceberg(format!("reading {location}"), e))?;
                (metadata, location)
            }
            None => {
                let location = format!(
                    "{}/{}.db/{}",
                    warehouse.trim_end_matches('/'),
                    ident.namespace,
                    ident.name
                );
                let table_schema = iceberg_schema(schema, key)?;
                let spec = unbound_spec(partitions, &table_schema)?;
                let metadata = TableMetadataBuilder::new(
                    table_schema,
                    spec,
                    SortOrder::unsorted_order(),
                    location.clone(),
                    FormatVersion::V2,
                    CREATED_TABLE_PROPERTIES
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .chain(properties.clone())
                        .collect(),
                )
                .and_then(|b| b.build())
                .map_err(|e| IcebergError::iceberg(format!("creating {ident}"), e))?
                .metadata;
                let metadata_location =
                    MetadataLocation::new_with_metadata(&location, &metadata).to_string();
                runtime
                    .block_on(write_metadata(
                        &io,
                        &metadata,
                        &MetadataLocation::from_str(&metadata_location)
                            .map_err(|e| IcebergError::iceberg("metadata location", e))?,
                    ))
                    .map_err(|e| {
                        IcebergError::iceberg(format!("writing {metadata_location}"), e)
                    })?;
                catalog.create(&ident, &metadata_location)?;
                tracing::info!(table = %ident, location = %location, "created iceberg table");
                (metadata, metadata_location)
            }
        };
        let pending = Self::evolution(&ident, (schema, key), &metadata)?;
        let mut table = Self::loaded(
            catalog,
            io,
            runtime,
            ident,
            schema,
            (metadata, metadata_location),
            pending,
        )?;
        table.overrides = properties.clone();
        Ok(table)
    }

    /// The schema an existing table needs to take `schema`'s rows (see [`evolve`]), if it
    /// differs from the current one: committed with the table's next snapshot, so the first
    /// rows that need it and the schema change are one commit (earlier rows read NULL in new
    /// columns).
    fn evolution(
        ident: &TableIdent,
        (schema, key): (&Schema, &[usize]),
        metadata: &TableMetadata,
    ) -> Result<Option<IcebergSchema>, IcebergError> {
        let current = metadata.current_schema();
        let evolved = evolve(schema, key, current, metadata.last_column_id())
            .map_err(|e| IcebergError::SchemaMismatch(format!("table {ident}: {e}")))?;
        if let Some(evolved) = &evolved {
            let fields = |s: &IcebergSchema| -> Vec<String> {
                s.as_struct()
                    .fields()
                    .iter()
                    .map(|f| {
                        let null = if f.required { " not null" } else { "" };
                        format!("{} {}{null}", f.name, f.field_type)
                    })
                    .collect()
            };
            let old = fields(current);
            let changes: Vec<String> = fields(evolved)
                .into_iter()
                .filter(|f| !old.contains(f))
                .collect();
            tracing::info!(table = %ident, changed = ?changes, "the iceberg table's schema evolves with its next commit");
        }
        Ok(evolved)
    }

    fn loaded(
        catalog: Box<dyn Catalog>,
        io: FileIO,
        runtime: tokio::runtime::Runtime,
        ident: TableIdent,
        schema: &Schema,
        (metadata, metadata_location): (TableMetadata, String),
        pending_schema: Option<IcebergSchema>,
    ) -> Result<Self, IcebergError> {
        let in_table = |e| IcebergError::Config(format!("table {ident}: {e}"));
        let table_schema: &IcebergSchema = match &pending_schema {
            Some(pending) => pending,
            None => metadata.current_schema(),
        };
        let columns = ColumnMap::new(schema, table_schema).map_err(in_table)?;
        let partitioner = Partitioner::new(metadata.default_partition_spec(), table_schema, schema)
            .map_err(in_table)?;
        // Equality deletes (whole rows) must hold the identifier fields they delete by.
        let missing = table_schema
            .identifier_field_ids()
            .filter_map(|id| table_schema.field_by_id(id))
            .find(|field| schema.index_of(&field.name).is_none());
        if let Some(field) = missing {
            return Err(IcebergError::Config(format!(
                "table {ident}: no column for identifier field `{}`",
                field.name
            )));
        }
        Ok(IcebergTable {
            ident,
            catalog,
            io,
            runtime,
            metadata,
            metadata_location,
            columns,
            partitioner,
            pending_schema,
            overrides: BTreeMap::new(),
            file_index: FileIndex::default(),
            manifest_cache: Mutex::default(),
        })
    }

    /// A table property: this run's override, else the table's own.
    pub(super) fn property(&self, key: &str) -> Option<&str> {
        self.overrides
            .get(key)
            .or_else(|| self.metadata.properties().get(key))
            .map(String::as_str)
    }

    /// A table property parsed, or `default` when unset or unreadable (with a warning).
    pub(super) fn property_or<T: FromStr>(&self, key: &str, default: T) -> T {
        match self.property(key).map(|v| (v, v.trim().parse())) {
            None => default,
            Some((_, Ok(value))) => value,
            Some((text, Err(_))) => {
                tracing::warn!(table = %self.ident, property = key, value = text, "unreadable iceberg table property; using its default");
                default
            }
        }
    }

    /// The schema the table's files are written with: the one its next commit makes current,
    /// if it evolves, else the current one.
    pub(super) fn write_schema(&self) -> Arc<IcebergSchema> {
        match &self.pending_schema {
            Some(pending) => Arc::new(pending.clone()),
            None => Arc::clone(self.metadata.current_schema()),
        }
    }

    /// `metadata` with the pending schema added and made current, if there is one.
    pub(super) fn with_pending_schema(
        &self,
        metadata: TableMetadataBuilder,
    ) -> Result<TableMetadataBuilder, IcebergError> {
        match &self.pending_schema {
            Some(pending) => metadata.add_current_schema(pending.clone()).map_err(|e| {
                IcebergError::iceberg(format!("evolving the schema of {}", self.ident), e)
            }),
            None => Ok(metadata),
        }
    }
    /// Opens an existing table (for maintenance); its schema is the table's own, `properties`
    /// override its own.
    pub fn open_existing(
        mut catalog: Box<dyn Catalog>,
        io: FileIO,
        ident: TableIdent,
        properties: &BTreeMap<String, String>,
    ) -> Result<Self, IcebergError> {
        let runtime = io_runtime()?;
        let metadata_location = catalog.load(&ident)?.ok_or_else(|| {
            IcebergError::Config(format!("table {ident} does not exist in the catalog"))
        })?;
        let metadata = runtime
            .block_on(TableMetadata::read_from(&io, &metadata_location))
            .map_err(|e| IcebergError::iceberg(format!("reading {metadata_location}"), e))?;
        let schema = schema_of(metadata.current_schema())?;
        let mut table = Self::loaded(
            catalog,
            io,
            runtime,
            ident,
            &schema,
            (metadata, metadata_location),
            None,
        )?;
        table.overrides = properties.clone();
        Ok(table)
    }

    /// Reads the table's current metadata again from the catalog (after a lost swap).
    pub(super) fn reload(&mut self) -> Result<(), IcebergError> {
        let location = self.catalog.load(&self.ident)?.ok_or_else(|| {
            IcebergError::Inconsistent(format!("table {} left the catalog", self.ident))
        })?;
        let metadata = self
            .block_on(TableMetadata::read_from(&self.io, &location))
            .map_err(|e| IcebergError::iceberg(format!("reading {location}"), e))?;
        self.metadata = metadata;
        self.metadata_location = location;
        Ok(())
    }

    /// The table's metadata.
    pub fn metadata(&self) -> &TableMetadata {
        &self.metadata
    }

    /// Commits `metadata` as the table's next metadata through the catalog (a SQL catalog
    /// swaps its pointer to a metadata file written here; a REST catalog applies the change
    /// and writes the file itself). With `write.metadata.delete-after-commit.enabled`, the
    /// metadata files this writer wrote that drop out of the metadata log are deleted.
    pub(super) fn swap_metadata(&mut self, metadata: TableMetadata) -> Result<(), IcebergError> {
        let (location, written_here) = swap(
            self.catalog.as_mut(),
            (&self.io, &self.runtime),
            &self.ident,
            (&self.metadata_location, &self.metadata),
            &metadata,
        )?;
        let dropped: Vec<String> = if written_here
            && self.property_or("write.metadata.delete-after-commit.enabled", false)
        {
            let kept: HashSet<&str> = metadata
                .metadata_log()
                .iter()
                .map(|log| log.metadata_file.as_str())
                .collect();
            self.metadata
                .metadata_log()
                .iter()
                .filter(|log| !kept.contains(log.metadata_file.as_str()))
                .map(|log| log.metadata_file.clone())
                .collect()
        } else {
            Vec::new()
        };
        self.metadata = metadata;
        self.metadata_location = location;
        self.delete_files(&dropped);
        Ok(())
    }

    /// Deletes files no snapshot or metadata version needs any more; a file that cannot be
    /// deleted is left (an orphan) with a warning. Returns how many were deleted.
    pub(super) fn delete_files(&self, paths: &[String]) -> usize {
        let mut deleted = 0;
        for path in paths {
            match self.block_on(self.io.delete(path)) {
                Ok(()) => deleted += 1,
                Err(error) => {
                    tracing::warn!(table = %self.ident, file = %path, %error, "cannot delete a file the table no longer needs; it stays as an orphan")
                }
            }
        }
        deleted
    }

    /// What the newest snapshot Tributary wrote among the current one and its ancestors
    /// records of the run that wrote it, if `pipeline` wrote it. Snapshots other engines
    /// committed since (a GDPR delete, a backfill) are part of the table the run resumes on.
    pub fn committed(&self, pipeline: &str) -> Result<Committed, IcebergError> {
        let Some(current) = self.metadata.current_snapshot() else {
            return Ok(Committed::default());
        };
        let mut others = 0;
        let mut next = Some(current);
        let snapshot = loop {
            let Some(snapshot) = next else {
                return Err(IcebergError::Config(format!(
                    "table {} has no snapshot that Tributary wrote among its current one and \
                     the ancestors it keeps, so there is no position to resume from; write to a \
                     new table",
                    self.ident
                )));
            };
            if snapshot
                .summary()
                .additional_properties
                .contains_key(SUMMARY_PIPELINE)
            {
                break snapshot;
            }
            others += 1;
            next = snapshot
                .parent_snapshot_id()
                .and_then(|id| self.metadata.snapshot_by_id(id));
        };
        let summary = &snapshot.summary().additional_properties;
        match summary.get(SUMMARY_PIPELINE) {
            Some(writer) if writer == pipeline => {}
            writer => {
                return Err(IcebergError::Config(format!(
                    "table {} is written by pipeline `{}`; give `{pipeline}` its own table",
                    self.ident,
                    writer.map_or("", String::as_str)
                )))
            }
        }
        if others > 0 {
            tracing::info!(table = %self.ident, snapshot = snapshot.snapshot_id(), other_writers_snapshots = others, "resuming from the newest snapshot Tributary wrote; the changes other writers committed since stay");
        }
        let epoch = summary
            .get(SUMMARY_EPOCH)
            .and_then(|e| e.parse::<Time>().ok());
        let positions = match summary.get(SUMMARY_POSITIONS) {
            Some(json) => serde_json::from_str(json).map_err(|e| {
                IcebergError::Config(format!(
                    "table {}: unreadable {SUMMARY_POSITIONS}: {e}",
                    self.ident
                ))
            })?,
            None => StreamPositions::new(),
        };
        let progress = match summary.get(SUMMARY_PROGRESS) {
            Some(json) => serde_json::from_str(json).map_err(|e| {
                IcebergError::Config(format!(
                    "table {}: unreadable {SUMMARY_PROGRESS}: {e}",
                    self.ident
                ))
            })?,
            None => StreamProgress::new(),
        };
        Ok(Committed {
            epoch,
            positions,
            progress,
        })
    }

    pub(super) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

pub(super) fn io_runtime() -> Result<tokio::runtime::Runtime, IcebergError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| IcebergError::Io(format!("cannot start the I/O runtime: {e}")))
}

/// Writes `metadata` at `location`, its snapshots in sequence order (as Java writes them;
/// the library keeps them unordered), unless the table compresses its metadata.
async fn write_metadata(
    io: &FileIO,
    metadata: &TableMetadata,
    location: &MetadataLocation,
) -> iceberg::Result<()> {
    let codec = metadata
        .properties()
        .get("write.metadata.compression-codec");
    if codec.is_some_and(|c| !c.eq_ignore_ascii_case("none")) {
        return metadata.write_to(io, location).await;
    }
    let mut json = serde_json::to_value(metadata)?;
    if let Some(serde_json::Value::Array(snapshots)) = json.get_mut("snapshots") {
        snapshots.sort_by_key(|s| s.get("sequence-number").and_then(|n| n.as_i64()));
    }
    io.new_output(location.to_string())?
        .write(serde_json::to_vec(&json)?.into())
        .await
}

/// Commits `next` as the table's metadata after `current` (at `location`) through the catalog
/// (a SQL catalog swaps its pointer to a metadata file written here; a REST catalog applies the
/// change and writes the file itself); returns the new metadata's location, and whether this
/// writer wrote the file.
fn swap(
    catalog: &mut dyn Catalog,
    (io, runtime): (&FileIO, &tokio::runtime::Runtime),
    ident: &TableIdent,
    (location, current): (&str, &TableMetadata),
    next: &TableMetadata,
) -> Result<(String, bool), IcebergError> {
    let mut written_here = false;
    let mut write = || {
        written_here = true;
        let next_location = MetadataLocation::from_str(location)
            .map_err(|e| IcebergError::iceberg(location, e))?
            .with_next_version()
            .with_new_metadata(next);
        let written = next_location.to_string();
        runtime
            .block_on(write_metadata(io, next, &next_location))
            .map_err(|e| IcebergError::iceberg(&written, e))?;
        Ok(written)
    };
    let committed = catalog.commit(ident, location, current, next, &mut write)?;
    let location = committed.ok_or_else(|| IcebergError::Conflict(ident.to_string()))?;
    Ok((location, written_here))
}
