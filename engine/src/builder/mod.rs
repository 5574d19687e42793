//! `PipelineBuilder`: what pipeline modules use to declare tables, derive relations and attach
//! sinks, without naming timely or differential types; `source_tables` has what a pipeline
//! takes from the source's own tables.

mod declared;
mod source_tables;

pub use declared::{KeylessTable, Table};
pub(crate) use source_tables::{Learning, SourceCatalog};

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::ProbeHandle;

use differential_dataflow::AsCollection;
use timely::dataflow::operators::ToStream;
use tributary_operators::dataflow::decode::DecodeRouter;
use tributary_operators::dataflow::lineage::ColumnsRead;
use tributary_operators::dataflow::relation::SideOutputs;

use tributary_operators::dataflow::{table, Stream, Time};
use tributary_operators::{
    ChangeEvent, ColumnType, RawRecord, Relation, Row, Schema, TableCatalog, TableId, TableSpec,
};

use crate::error::BuildError;
use crate::positions::StreamPositions;
use crate::sinks::iceberg::{
    self, Committed, CommitterContext, DeleteMode, Partition, TableIdent, WriteMode,
};
use crate::sinks::{on_closed_epochs, OutputContext, OutputSpec, SinkContext};

/// What builds a pipeline: declares its tables, relations and outputs (called once per worker).
pub type BuildFn = dyn for<'s> Fn(&mut PipelineBuilder<'s>) -> Result<(), BuildError> + Send + Sync;

/// A named pipeline: a function (or a closure over its parameters) that declares tables,
/// relations and outputs. This one is run whole, on the built-in generator's orders:
///
/// ```
/// use std::time::Duration;
/// use tributary_engine::sources::SourceSpec;
/// use tributary_engine::{col, count, sum, run, shared_writer, BuildError, Column};
/// use tributary_engine::{ColumnType, ConsoleFormat, ConsoleOptions, IcebergOptions};
/// use tributary_engine::{Pipeline, PipelineBuilder, RunOptions, Schema, Window};
///
/// fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
///     // A source table: its Debezium name (the Kafka topic), its columns, its primary key.
///     let schema = Schema::new(vec![
///         Column::new("order_id", ColumnType::Int64).not_null(),
///         Column::new("status", ColumnType::String),
///         Column::new("quantity", ColumnType::Int32),
///         Column::new("price", ColumnType::Decimal { precision: 10, scale: 2 }),
///     ]);
///     let orders = p.table("dbserver1.public.orders", schema, &["order_id"])?;
///     // Current state, a projection, an aggregate over it.
///     let lines = orders.state().select([
///         col("status"),
///         (col("quantity") * col("price")).alias("amount"),
///     ])?;
///     let by_status = lines
///         .group_by(["status"])?
///         .agg([count().alias("orders"), sum(col("amount")).alias("revenue")])?;
///     p.output("status", &by_status)?;
///     // Every change, counted per 10 s tumbling window of event time.
///     let per_window = orders
///         .changes()
///         .window("changes/10s", "event_time", Window::tumbling(Duration::from_secs(10)))?
///         .group_by(["window_start", "op"])?
///         .agg([count().alias("changes")])?;
///     p.output("changes_10s", &per_window)
/// }
///
/// let console = shared_writer(Vec::new());
/// let summary = run(
///     &Pipeline::new("example", "orders by status and changes per window", build),
///     RunOptions {
///         source: SourceSpec::Generator(Some(500)),
///         until_idle: true,
///         console: ConsoleOptions {
///             format: ConsoleFormat::Jsonl,
///             writer: console,
///             ..ConsoleOptions::default()
///         },
///         iceberg: IcebergOptions::new(std::env::temp_dir().join("tributary-doctest")),
///         ..RunOptions::default()
///     },
/// )?;
/// assert_eq!(summary.events, 500);
/// # Ok::<(), tributary_engine::RunError>(())
/// ```
#[derive(Clone)]
pub struct Pipeline {
    name: String,
    about: String,
    build: std::sync::Arc<BuildFn>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline called `name` (as the command line names it), described by `about` (one
    /// line), built by `build`.
    pub fn new(
        name: impl Into<String>,
        about: impl Into<String>,
        build: impl for<'s> Fn(&mut PipelineBuilder<'s>) -> Result<(), BuildError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Pipeline {
            name: name.into(),
            about: about.into(),
            build: std::sync::Arc::new(build),
        }
    }

    /// The name used on the command line.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One line saying what it does.
    pub fn about(&self) -> &str {
        &self.about
    }

    /// Declares the pipeline's tables, relations and outputs on `builder`.
    pub fn build(&self, builder: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
        (self.build)(builder)
    }
}

/// Declares a pipeline's tables and outputs.
pub struct PipelineBuilder<'s> {
    router: DecodeRouter<'s>,
    catalog: TableCatalog,
    /// Per table (by id), the columns the pipeline reads.
    columns_read: Vec<ColumnsRead>,
    side: SideOutputs<'s>,
    outputs: BTreeSet<String>,
    /// Per source table, what a durable sink already holds of it (the sink and its committed
    /// positions): the decoder drops those events when the source replays them.
    held: BTreeMap<TableId, (String, StreamPositions)>,
    probe: ProbeHandle<Time>,
    sinks: SinkContext,
    source: Arc<SourceCatalog>,
}

impl std::fmt::Debug for PipelineBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("tables", &self.catalog.len())
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl<'s> PipelineBuilder<'s> {
    pub(crate) fn new(
        raw: Stream<'s, RawRecord>,
        sinks: SinkContext,
        source: Arc<SourceCatalog>,
    ) -> Self {
        PipelineBuilder {
            router: DecodeRouter::new(raw, "decode"),
            catalog: TableCatalog::default(),
            columns_read: Vec::new(),
            side: Rc::default(),
            outputs: BTreeSet::new(),
            held: BTreeMap::new(),
            probe: ProbeHandle::new(),
            sinks,
            source,
        }
    }

    /// Declares a source table by its Debezium name (`server.schema.table`, also its Kafka
    /// topic), its columns, and its primary key.
    pub fn table(
        &mut self,
        name: &str,
        schema: Schema,
        key: &[&str],
    ) -> Result<Table<'s>, BuildError> {
        let table_error = |reason: String| BuildError::Table {
            table: name.to_owned(),
            reason,
        };
        if key.is_empty() {
            return Err(table_error(
                "needs a primary key (a table without one: `keyless_table`, for its changes)"
                    .into(),
            ));
        }
        let key = key
            .iter()
            .map(|k| {
                schema.index_of(k).ok_or_else(|| {
                    table_error(format!("key column `{k}` is not among: {}", schema.names()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.declare(name, schema, key)
    }

    fn declare(
        &mut self,
        name: &str,
        schema: Schema,
        key: Vec<usize>,
    ) -> Result<Table<'s>, BuildError> {
        let table_error = |reason: String| BuildError::Table {
            table: name.to_owned(),
            reason,
        };
        for column in &schema.columns {
            if let ColumnType::Decimal { precision, scale } = column.ty {
                if precision > 38 || scale > precision {
                    return Err(table_error(format!(
                        "column `{}` is decimal({precision},{scale}): the precision must be at \
                         most 38 and the scale at most the precision",
                        column.name
                    )));
                }
            }
        }
        let spec = TableSpec {
            name: name.to_owned(),
            schema,
            key,
            keep_before: false,
            decoded: None,
        };
        let id = self.catalog.add(spec.clone()).map_err(table_error)?;
        let read = ColumnsRead::new(spec.schema.len(), &spec.key);
        self.columns_read.push(read.clone());
        let state_size = self.sinks.metrics.state_of(&spec.name);
        Ok(Table {
            id,
            read,
            spec: Arc::new(spec),
            state_size,
            events: RefCell::new(self.router.table(id)),
            side: Rc::clone(&self.side),
            state: OnceCell::new(),
            replica: OnceCell::new(),
        })
    }

    /// Keeps `table`'s replica (its current state plus `cdc_operation` and `cdc_timestamp`)
    /// in the Iceberg table `name` (`namespace.table`): one snapshot per commit interval, updates
    /// and deletes as position deletes. On restart the replica's state is read back from the
    /// table and the source resumes where the last snapshot ended. Returns the replica.
    pub fn iceberg_replica(
        &mut self,
        name: &str,
        table: &Table<'s>,
    ) -> Result<Relation<'s>, BuildError> {
        self.iceberg_replica_partitioned(name, table, &[])
    }

    /// [`iceberg_replica`](Self::iceberg_replica) into a table partitioned by `partitions`
    /// (applies when the table is created).
    pub fn iceberg_replica_partitioned(
        &mut self,
        name: &str,
        table: &Table<'s>,
        partitions: &[Partition],
    ) -> Result<Relation<'s>, BuildError> {
        self.iceberg_replica_with(name, table, partitions, (None, false))
    }

    /// [`iceberg_replica_partitioned`](Self::iceberg_replica_partitioned), deleting replaced
    /// rows as `deletes` says rather than as the run's `--iceberg-deletes`. `by_key`: without
    /// state, each change deletes its key's row by an equality delete and writes the new row,
    /// so memory does not grow with the table; truncates and unchanged TOASTed values become
    /// dead letters (they need the previous rows), and partitions must be of key columns (an
    /// equality delete finds its rows in its own partition).
    pub(crate) fn iceberg_replica_with(
        &mut self,
        name: &str,
        table: &Table<'s>,
        partitions: &[Partition],
        (deletes, by_key): (Option<DeleteMode>, bool),
    ) -> Result<Relation<'s>, BuildError> {
        let iceberg_error = |cause: iceberg::IcebergError| BuildError::Sink {
            sink: format!("iceberg table `{name}`"),
            cause: cause.into(),
        };
        let spec = table.spec();
        if by_key {
            check_partitions_by_key(spec, partitions)?;
        }
        self.claim_output(name)?;
        let ident = TableIdent::parse(name).map_err(iceberg_error)?;
        let replica = || {
            if by_key {
                table.replica_by_key()
            } else {
                table.replica()
            }
        };
        if !self.sinks.iceberg.writes() {
            // Computed whole, as if written, so that `--no-iceberg` measures the same work.
            let replica = replica();
            replica.rows();
            return Ok(replica);
        }
        let key = spec.key.clone();
        let (mode, deletes) = if by_key {
            (WriteMode::ByKey { key }, Some(DeleteMode::Equality))
        } else {
            (WriteMode::Upsert { key }, deletes)
        };
        let opened = self
            .sinks
            .iceberg
            .open(
                &ident,
                &table::replica_schema(spec),
                mode,
                (partitions, deletes),
            )
            .map_err(iceberg_error)?;
        self.hold(table.id, name, &opened.committed)?;
        let recovered = opened.committed.epoch.is_some();
        if !by_key {
            let scope = table.events.borrow().inner.scope();
            let seed: Vec<(ChangeEvent, Time, i64)> = opened
                .seed_share(scope.index(), scope.peers())
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    let event = table::replica_seed_event(table.id, spec, row, i as u64);
                    (event, 0, 1)
                })
                .collect();
            table.seed(seed.to_stream(scope).as_collection())?;
        }
        let replica = replica();
        iceberg::attach(
            replica.rows(),
            &self.probe,
            opened,
            self.committer_context(name, recovered),
        );
        Ok(replica)
    }

    /// `table`'s change log: every change as one flat row, `op`, `event_time`, then
    /// `before_<column>` and `after_<column>` (the decoder keeps `before` of updates for it;
    /// Debezium sends it with `REPLICA IDENTITY FULL`).
    pub fn changelog(&mut self, table: &Table<'s>) -> Relation<'s> {
        self.catalog.keep_before(table.id);
        table::changelog(
            table.events.borrow().clone(),
            &table.spec,
            Rc::clone(&table.side),
        )
        .with_origins(
            table
                .carrying(table::CHANGE_COLUMNS.len(), 0)
                .chain(table.read.origins()),
        )
        .with_tables([table.id])
    }

    /// Appends every row of `relation` (e.g. a table's `changes()`) to the Iceberg table `name`
    /// (`namespace.table`), one snapshot per commit interval; on restart the source resumes
    /// where the last snapshot ended.
    pub fn iceberg_append(
        &mut self,
        name: &str,
        relation: &Relation<'s>,
    ) -> Result<(), BuildError> {
        let iceberg_error = |cause: iceberg::IcebergError| BuildError::Sink {
            sink: format!("iceberg table `{name}`"),
            cause: cause.into(),
        };
        self.claim_output(name)?;
        let ident = TableIdent::parse(name).map_err(iceberg_error)?;
        if !self.sinks.iceberg.writes() {
            relation.rows(); // (computed whole, as if written)
            return Ok(());
        }
        let opened = self
            .sinks
            .iceberg
            .open(&ident, relation.schema(), WriteMode::Append, (&[], None))
            .map_err(iceberg_error)?;
        for &source in relation.tables() {
            self.hold(source, name, &opened.committed)?;
        }
        iceberg::attach(
            relation.rows(),
            &self.probe,
            opened,
            self.committer_context(name, false),
        );
        Ok(())
    }

    /// Source table `table` feeds the durable sink `sink`, which holds it up to `committed`:
    /// a restart that replays from earlier (for another table's sake) drops those events.
    fn hold(
        &mut self,
        table: TableId,
        sink: &str,
        committed: &Committed,
    ) -> Result<(), BuildError> {
        if committed.epoch.is_none() {
            return Ok(());
        }
        match self.held.get(&table) {
            Some((other, positions)) if *positions != committed.positions => {
                Err(BuildError::Sink {
                    sink: format!("iceberg table `{sink}`"),
                    cause: format!(
                        "it and `{other}` are both fed by `{}` but were last committed at \
                         different source positions ({:?} and {positions:?}); run them as \
                         separate pipelines until one catches up",
                        self.catalog
                            .get(table)
                            .map_or("?", |spec| spec.name.as_str()),
                        committed.positions
                    )
                    .into(),
                })
            }
            Some(_) => Ok(()),
            None => {
                self.held
                    .insert(table, (sink.to_owned(), committed.positions.clone()));
                Ok(())
            }
        }
    }

    fn committer_context(&self, name: &str, skip_epoch_zero: bool) -> CommitterContext {
        let s = &self.sinks;
        CommitterContext {
            name: name.to_owned(),
            ledger: s.ledger.clone(),
            durability: s.durability.clone(),
            failure: Arc::clone(&s.failure),
            metrics: Arc::clone(&s.metrics),
            interval: s.iceberg.commit_interval(),
            skip_epoch_zero,
            abandoned: Arc::clone(&s.abandoned),
        }
    }

    fn claim_output(&mut self, name: &str) -> Result<(), BuildError> {
        if self.outputs.insert(name.to_owned()) {
            Ok(())
        } else {
            Err(BuildError::DuplicateOutput(name.to_owned()))
        }
    }

    /// Declares `relation` as the output `name`: the run writes it to every output sink it
    /// has (the console; Kafka with `--kafka-sink`), one batch per closed epoch.
    ///
    /// ```
    /// # use tributary_engine::{col, count, sum, BuildError, PipelineBuilder, Table};
    /// fn outputs<'s>(p: &mut PipelineBuilder<'s>, orders: &Table<'s>) -> Result<(), BuildError> {
    ///     let by_status = orders.state().group_by(["status"])?.agg([
    ///         count().alias("order_count"),
    ///         sum(col("quantity") * col("price")).alias("total_revenue"),
    ///     ])?;
    ///     p.output("status", &by_status)
    /// }
    /// ```
    pub fn output(&mut self, name: &str, relation: &Relation<'s>) -> Result<(), BuildError> {
        self.claim_output(name)?;
        let spec = OutputSpec {
            name: name.to_owned(),
            schema: Arc::clone(relation.schema()),
            key: relation.key().map(<[usize]>::to_vec),
        };
        let context = OutputContext {
            metrics: Arc::clone(&self.sinks.metrics),
            failure: Arc::clone(&self.sinks.failure),
        };
        for sink in &self.sinks.outputs {
            let mut writer = sink.open(&spec, &context);
            on_closed_epochs(
                relation.rows(),
                &format!("{}/{name}", sink.kind()),
                &self.probe,
                move |epoch, rows: Vec<(Row, i64)>| writer.write(epoch, rows),
            );
        }
        Ok(())
    }

    /// Finishes the dataflow: decodes against the declared tables, attaches the dead-letter
    /// sink, and returns the probe that tracks every sink.
    pub(crate) fn finish(self) -> ProbeHandle<Time> {
        let PipelineBuilder {
            router,
            mut catalog,
            columns_read,
            side,
            probe,
            sinks,
            held,
            source: self_source,
            ..
        } = self;
        let dead = side
            .borrow()
            .iter()
            .fold(router.dead_letters(), |all, more| all.concat(more.clone()));
        for (id, read) in columns_read.iter().enumerate() {
            if let Some(columns) = read.projection() {
                catalog.decode_only(id as TableId, columns);
            }
        }
        // Only what a table holds beyond where the source resumes is replayed to it.
        let resume = sinks
            .resume_point()
            .ok()
            .flatten()
            .map(|point| point.positions)
            .unwrap_or_default();
        let held = (0..catalog.len() as TableId)
            .map(|id| match held.get(&id) {
                Some((_, positions)) => sinks
                    .streams
                    .iter()
                    .map(|stream| {
                        let last = positions.get(stream).copied();
                        last.filter(|last| resume.get(stream).is_none_or(|r| last > r))
                    })
                    .collect(),
                None => Vec::new(),
            })
            .collect();
        let source_schemas = self_source
            .listed
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| self_source.decoder_schemas());
        router.build(
            Arc::new(catalog),
            Arc::clone(&sinks.metrics.decode),
            held,
            source_schemas,
        );
        let sink = sinks.dead_letters;
        on_closed_epochs(&dead, "dead-letters", &probe, move |_epoch, letters| {
            sink.write(letters)
        });
        probe
    }
}

/// A replica deleting by key may be partitioned by key columns only: an equality delete finds
/// its rows in its own partition.
fn check_partitions_by_key(spec: &TableSpec, partitions: &[Partition]) -> Result<(), BuildError> {
    let key_names: Vec<&str> = spec
        .key
        .iter()
        .filter_map(|&i| spec.schema.columns.get(i).map(|c| c.name.as_ref()))
        .collect();
    match partitions
        .iter()
        .find(|p| !key_names.contains(&p.column.as_str()))
    {
        Some(outside) => Err(BuildError::Table {
            table: spec.name.clone(),
            reason: format!(
                "equality deletes find rows by key in their own partition, so a table \
                 replicated with them is partitioned by key columns only; `{}` is not one \
                 (partition by a key column, or use position deletes)",
                outside.column
            ),
        }),
        None => Ok(()),
    }
}
