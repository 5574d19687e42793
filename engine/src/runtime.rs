//! Runs a pipeline on timely workers: the source's parts (one for most sources, partitions
//! spread over the workers for Kafka) are read by workers 0, 1, …, which drive epochs in step
//! through a shared [`EpochClock`]; every worker steps the dataflow until all sinks have handled
//! every closed epoch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::operators::Input;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use tributary_operators::dataflow::Time;
use tributary_operators::{DeadLetterKind, RawRecord};

use crate::builder::{Learning, Pipeline, PipelineBuilder, SourceCatalog};
use crate::error::RunError;
use crate::ingest::{Emit, EpochClock, EpochRecord, Ingestor};
use crate::metrics::Metrics;
use crate::options::RunOptions;
use crate::progress::Progress;
use crate::sinks::{Durability, FailureSlot, SinkContext, SinkStats};
use crate::sources::{Poll, Source, SourceTable, TableFilter};

/// Epochs that may be closed but not yet handled by every sink before the source pauses.
const MAX_EPOCHS_IN_FLIGHT: Time = 4;
/// Records read per source poll, and so decoded per worker step: few enough that their events
/// are still in the caches when the next operators take them in the same step (8,192 cost
/// orders-replica about a tenth more CPU time).
const POLL_BATCH: usize = 1024;

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Change events ingested (tombstones excluded).
    pub events: u64,
    /// Records assigned to epochs: read from the source, less those read past a stop.
    pub records: u64,
    /// Dead letters by kind.
    pub dead_letters: BTreeMap<DeadLetterKind, u64>,
    /// Closed epochs and the source positions each covers.
    pub epochs: Vec<EpochRecord>,
    /// Names of the source streams, by position stream index.
    pub streams: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
    /// Per closed epoch: time from its close until every sink had handled it.
    pub epoch_latencies: Vec<Duration>,
    /// What each kind of durable sink did (`iceberg`: snapshots, rows, time).
    pub sinks: BTreeMap<String, SinkStats>,
    /// Per table whose current state the run keeps: its rows and about how many bytes they
    /// take in memory, at the end.
    pub state: BTreeMap<String, (i64, i64)>,
    /// Why the run stopped early to be built again (what changed): a followed table's schema
    /// changed (everything before the change is committed), or a record described a table
    /// the run did not have (nothing was committed since the last commit). [`run`] builds it
    /// again itself; this is set only when a stop was requested meanwhile.
    pub schema_changed: Option<String>,
}

/// Builds `pipeline` on `options.workers` timely workers and runs it. When a table whose schema
/// the pipeline took from the source changes it, or a record describes a table the run does
/// not have, the run builds the pipeline again with it and goes on from its last commit.
pub fn run(pipeline: &Pipeline, options: RunOptions) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = options.metrics_addr {
        crate::metrics::http::serve(addr, Arc::clone(&metrics), pipeline.name())
            .map_err(|cause| RunError::Metrics { addr, cause })?;
    }
    let stopping = options.shutdown.clone().unwrap_or_default();
    let learnt = Arc::default();
    loop {
        let mut summary = run_once(pipeline, &options, &metrics, &stopping, &learnt)?;
        match &summary.schema_changed {
            Some(change) if !stopping.load(Ordering::Relaxed) => {
                tracing::info!(%change, "building the pipeline again");
            }
            _ => {
                summary.elapsed = started.elapsed();
                return Ok(summary);
            }
        }
    }
}

/// One build and run of `pipeline`, until the source is drained, a stop, or a schema change.
fn run_once(
    pipeline: &Pipeline,
    options: &RunOptions,
    metrics: &Arc<Metrics>,
    stopping: &Arc<AtomicBool>,
    learnt: &Arc<Mutex<BTreeMap<String, SourceTable>>>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let discovered = options.source.discover(options.tables.as_ref())?;
    // Sources that describe no tables ahead of their data: learn them from their records.
    let learning = discovered.is_none().then(|| Learning {
        learnt: Arc::clone(learnt),
        declared: Arc::new(
            options
                .declared_tables
                .iter()
                .map(|t| t.name.clone())
                .collect(),
        ),
        abort: Arc::default(),
    });
    let tables = SourceCatalog::tables_for_run(options, discovered, learning.as_ref());
    let mut source = options.source.open(!options.until_idle)?;
    let abandoned = learning
        .as_ref()
        .map_or_else(Arc::default, |l| Arc::clone(&l.abort));
    let described = source.describe();
    let catalog = Arc::new(SourceCatalog {
        source: described.clone(),
        tables,
        namespace: options.namespace.clone(),
        followed: Default::default(),
        listed: Default::default(),
        filter: options.tables.clone(),
        table_options: options.table_options.clone(),
        learning,
    });
    let schema_changed: Arc<Mutex<Option<String>>> = Arc::default();
    let new_tables = options
        .tables
        .clone()
        .or_else(|| TableFilter::new(".*").ok());
    let streams = source.stream_names();
    let failure: FailureSlot = Arc::default();
    let mut sinks = SinkContext::for_run(
        options.sink_settings(pipeline.name(), &streams),
        metrics,
        &failure,
    );
    sinks.abandoned = Arc::clone(&abandoned);
    let sink_stats = sinks.clone();
    let workers = options.workers.max(1);
    let others = source.split_off(workers)?;
    let readers: Vec<Option<Box<dyn Source>>> =
        std::iter::once(source).chain(others).map(Some).collect();
    tracing::info!(pipeline = pipeline.name(), source = %described, workers, readers = readers.len(), "starting");
    let readers = Arc::new(Mutex::new(readers));
    let pipeline = pipeline.clone();
    let epoch = options.epoch;
    let clock = EpochClock::default();
    let worker_metrics = Arc::clone(metrics);
    let controls = Controls {
        failure: Arc::clone(&failure),
        shutdown: Arc::clone(stopping),
        durability: sinks.durability.clone(),
        schema_changed: Arc::clone(&schema_changed),
        abandoned: Arc::clone(&abandoned),
    };

    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let sinks = sinks.clone();
        let (input, probe, built) = build(worker, &pipeline, sinks.clone(), &catalog);
        let reader = readers
            .lock()
            .ok()
            .and_then(|mut r| r.get_mut(worker.index()).and_then(Option::take));
        let outcome = match (built, reader) {
            (Ok(()), Some(mut reader)) => {
                if let Ok(followed) = catalog.followed.lock() {
                    let listed = catalog.listed.load(Ordering::Relaxed);
                    if !followed.is_empty() || listed {
                        let new_tables = new_tables.clone().filter(|_| listed);
                        reader.follow_schemas(&followed, new_tables);
                    }
                }
                resume(reader, &sinks, &worker_metrics, epoch).and_then(|(reader, ingestor)| {
                    let ingestor = ingestor.with_clock(clock.clone());
                    drive(worker, input, &probe, reader, ingestor, &controls)
                })
            }
            (built, _) => {
                drop(input);
                built.map(|()| Default::default())
            }
        };
        if outcome.is_err() {
            // The other readers finish their open epoch and stop, so that the run ends.
            controls.shutdown.store(true, Ordering::Relaxed);
        }
        drain(worker, &probe);
        outcome
    })
    .map_err(RunError::Workers)?;

    let mut epochs = Vec::new();
    let mut epoch_latencies = Vec::new();
    for result in guards.join() {
        match result {
            Ok(Ok((worker_epochs, latencies))) => {
                epochs.extend(worker_epochs);
                epoch_latencies.extend(latencies);
            }
            Ok(Err(error)) => return Err(error),
            Err(panic) => return Err(RunError::Workers(panic)),
        }
    }
    if let Some(error) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(error);
    }
    let summary = RunSummary {
        events: Metrics::get(&metrics.decode.events),
        records: Metrics::get(&metrics.records_in),
        dead_letters: metrics.dead_letters(),
        epochs: merge_epochs(epochs),
        streams,
        elapsed: started.elapsed(),
        epoch_latencies,
        sinks: sink_stats.stats(),
        state: metrics.state_sizes(),
        schema_changed: schema_changed
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .or_else(|| {
                abandoned
                    .load(Ordering::Relaxed)
                    .then(|| "a record described a table the run did not have".to_owned())
            }),
    };
    let skipped = metrics
        .decode
        .skipped_tables
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default();
    if !skipped.is_empty() {
        tracing::info!(
            tables = ?skipped,
            events = Metrics::get(&metrics.decode.skipped),
            "skipped events of tables this pipeline does not read"
        );
    }
    for (table, (rows, bytes)) in &summary.state {
        tracing::info!(
            %table,
            rows,
            bytes,
            bytes_per_row = bytes / (*rows).max(1),
            "state kept in memory"
        );
    }
    let seconds = summary.elapsed.as_secs_f64().max(1e-9);
    tracing::info!(
        records = summary.records,
        events = summary.events,
        dead_letters = metrics.dead_letter_total(),
        already_held = Metrics::get(&metrics.decode.already_held),
        epochs = summary.epochs.len(),
        elapsed_s = format!("{seconds:.2}"),
        events_per_s = (summary.events as f64 / seconds) as u64,
        "finished"
    );
    Ok(summary)
}

/// One record per closed epoch from the readers' own (each covers only its streams): the
/// positions every stream had reached by then.
fn merge_epochs(mut closed: Vec<EpochRecord>) -> Vec<EpochRecord> {
    closed.sort_by_key(|record| record.epoch);
    let mut merged: Vec<EpochRecord> = Vec::new();
    let mut reached = BTreeMap::new();
    for record in closed {
        for (stream, offset) in record.positions {
            let last = reached.entry(stream).or_insert(offset);
            *last = (*last).max(offset);
        }
        match merged.last_mut() {
            Some(last) if last.epoch == record.epoch => last.positions = reached.clone(),
            _ => merged.push(EpochRecord {
                epoch: record.epoch,
                positions: reached.clone(),
            }),
        }
    }
    merged
}

/// Positions the source after what durable sinks already committed, and numbers epochs on
/// from their last one (epoch 0 then carries only the state they recovered).
fn resume(
    mut reader: Box<dyn Source>,
    sinks: &SinkContext,
    metrics: &Arc<Metrics>,
    interval: Duration,
) -> Result<(Box<dyn Source>, Ingestor), RunError> {
    let ingestor = Ingestor::new(Arc::clone(metrics), interval)
        .with_ledger(sinks.ledger.clone(), reader.stream_names());
    let point = sinks.resume_point().map_err(|cause| RunError::Sink {
        sink: "resume".into(),
        cause: cause.into(),
    })?;
    let Some(point) = point else {
        return Ok((reader, ingestor));
    };
    let ingestor = ingestor.starting_at(point.epoch + 1);
    let backfills = reader.resume_progress(&point.progress, &point.unstarted);
    if !point.unstarted.is_empty() {
        if backfills {
            tracing::info!(tables = ?point.unstarted, source = %reader.describe(), "tables without a snapshot yet: the source backfills them");
        } else if reader.reload() {
            tracing::info!(tables = ?point.unstarted, source = %reader.describe(), "tables without a snapshot yet: reading the source's whole state again, replacing what every table holds");
            if !point.appended.is_empty() {
                tracing::warn!(tables = ?point.appended, "append-only tables that hold rows get the source's current rows appended again (they have no key to replace them by)");
            }
            return Ok((reader, ingestor));
        } else {
            tracing::warn!(tables = ?point.unstarted, "tables without a snapshot yet while the pipeline's other tables resume: they start from the resume point, without the source's earlier rows");
        }
    }
    tracing::info!(source = %reader.describe(), positions = ?point.positions, epoch = point.epoch, "resuming after the last commit");
    reader.resume_after(&point.positions)?;
    Ok((reader, ingestor))
}

/// What the reading worker watches besides the source.
struct Controls {
    failure: FailureSlot,
    shutdown: Arc<AtomicBool>,
    durability: Durability,
    /// A source stopped before a change of a followed table's schema (what changed).
    schema_changed: Arc<Mutex<Option<String>>>,
    /// The run is abandoned (a table was learnt): stop now, close no more epochs.
    abandoned: Arc<AtomicBool>,
}

type RawInput = InputHandle<Time, timely::container::CapacityContainerBuilder<Vec<RawRecord>>>;

fn build(
    worker: &mut Worker,
    pipeline: &Pipeline,
    sinks: SinkContext,
    catalog: &Arc<SourceCatalog>,
) -> (RawInput, ProbeHandle<Time>, Result<(), RunError>) {
    worker.dataflow::<Time, _, _>(|scope| {
        let (input, raw) = scope.new_input::<Vec<RawRecord>>();
        let mut builder = PipelineBuilder::new(raw, sinks, Arc::clone(catalog));
        let built = pipeline
            .build(&mut builder)
            .map_err(|cause| RunError::Build {
                pipeline: pipeline.name().to_owned(),
                cause,
            });
        let probe = builder.finish();
        (input, probe, built)
    })
}

/// A reading worker's loop: poll, assign epochs, send, respect backpressure, report progress.
/// (Never inlined: `benches/instructions.sh` counts the instructions run inside it.)
/// The longest a worker waits on a source with nothing new.
const IDLE_WAIT: Duration = Duration::from_millis(20);

#[inline(never)]
fn drive(
    worker: &mut Worker,
    mut input: RawInput,
    probe: &ProbeHandle<Time>,
    mut source: Box<dyn Source>,
    mut ingestor: Ingestor,
    controls: &Controls,
) -> Result<(Vec<EpochRecord>, Vec<Duration>), RunError> {
    let Controls {
        failure,
        shutdown,
        durability,
        schema_changed,
        abandoned,
    } = controls;
    // A resumed run starts past epoch 0, which carries only the state sinks recovered.
    input.advance_to(ingestor.epoch());
    let mut batch = Vec::with_capacity(POLL_BATCH);
    let metrics = ingestor.metrics();
    let mut feed = Feed {
        input: Some(input),
        latency: EpochLatency {
            metrics: Arc::clone(&metrics),
            ..EpochLatency::default()
        },
    };
    // The counters are shared, so one reader reports for all.
    let mut progress = (worker.index() == 0).then(Progress::new);
    let mut acknowledged = 0;
    let mut stop_requested = false;
    loop {
        if failed(failure) || abandoned.load(Ordering::Relaxed) {
            break;
        }
        if shutdown.load(Ordering::Relaxed) && !stop_requested {
            tracing::info!(
                epoch = ingestor.epoch(),
                "shutdown requested: finishing the open epoch at the next transaction boundary"
            );
            stop_requested = true;
            ingestor.request_stop(|e| feed.take(e));
        }
        if ingestor.stopped() {
            progress.as_mut().map(Progress::finish);
            break;
        }
        batch.clear();
        let poll = match source.poll(&mut batch, POLL_BATCH) {
            Ok(poll) => poll,
            Err(error) => {
                ingestor.close_epoch();
                return Err(error.into());
            }
        };
        for (stream, offset, note) in source.take_progress() {
            ingestor.note_progress(stream, offset, note);
        }
        ingestor.ingest(batch.drain(..), |e| feed.take(e));
        if source.take_epoch_boundary() {
            ingestor.close_now(|e| feed.take(e));
        }
        // A quiet source: a due epoch closes once its streams' transactions are complete.
        ingestor.settle(source.at_transaction_end(), |e| feed.take(e));
        if let (false, Some(change)) = (stop_requested, source.schema_changed()) {
            // Finish at the next boundary of every stream; the run is built again after.
            if let Ok(mut slot) = schema_changed.lock() {
                slot.get_or_insert_with(|| change.to_owned());
            }
            stop_requested = true;
            ingestor.request_stop(|e| feed.take(e));
        }
        match poll {
            Poll::Ready => {}
            Poll::Idle => {
                // Waits for more (up to 20 ms), but never past the epoch interval.
                let wait = IDLE_WAIT
                    .min(ingestor.interval())
                    .max(Duration::from_millis(1));
                worker.step_or_park(Some(wait));
            }
            Poll::Finished => break,
        }
        worker.step();
        while probe.less_than(&ingestor.epoch().saturating_sub(MAX_EPOCHS_IN_FLIGHT))
            && !failed(failure)
        {
            worker.step_or_park(Some(Duration::from_millis(1)));
            feed.latency.observe(probe);
        }
        feed.latency.observe(probe);
        acknowledge(
            &mut *source,
            &ingestor,
            probe,
            durability,
            failure,
            &mut acknowledged,
        )?;
        if let Some(progress) = &mut progress {
            progress.tick(&metrics, ingestor.epoch());
        }
    }
    progress.as_mut().map(Progress::finish);
    if !abandoned.load(Ordering::Relaxed) {
        ingestor.finish(|e| feed.take(e));
    }
    feed.input = None;
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(1)));
        feed.latency.observe(probe);
    }
    feed.latency.observe(probe);
    acknowledge(
        &mut *source,
        &ingestor,
        probe,
        durability,
        failure,
        &mut acknowledged,
    )?;
    Ok((ingestor.epochs().to_vec(), feed.latency.done))
}

/// Where a reading worker's records and epoch advances go: the dataflow's input (dropped
/// once the source is done) and the epoch latency clock.
struct Feed {
    input: Option<RawInput>,
    latency: EpochLatency,
}

impl Feed {
    fn take(&mut self, emit: Emit) {
        let Some(input) = &mut self.input else {
            return;
        };
        match emit {
            Emit::Record(record) => input.send(record),
            Emit::Advance(epoch) => {
                input.advance_to(epoch);
                self.latency.closed(epoch);
            }
        }
    }
}

/// Tells the source about closed epochs that every sink has handled and every durable sink
/// has committed; `acknowledged` counts the epochs already told.
fn acknowledge(
    source: &mut dyn Source,
    ingestor: &Ingestor,
    probe: &ProbeHandle<Time>,
    durability: &Durability,
    failure: &FailureSlot,
    acknowledged: &mut usize,
) -> Result<(), RunError> {
    if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
        // A sink failed: what it "handled" may not have reached it.
        return Ok(());
    }
    let mut newest = None;
    for closed in &ingestor.epochs()[*acknowledged..] {
        if probe.less_equal(&closed.epoch) || !durability.holds(closed.epoch) {
            break;
        }
        newest = Some(closed);
        *acknowledged += 1;
    }
    if let Some(closed) = newest {
        source.acknowledge(&closed.positions)?;
    }
    Ok(())
}

fn failed(failure: &FailureSlot) -> bool {
    failure.lock().map(|f| f.is_some()).unwrap_or(true)
}

/// Times each epoch from its close until the probe (every sink) has passed it.
#[derive(Debug, Default)]
struct EpochLatency {
    /// Epoch boundaries not yet passed: the epoch *before* this one is closed.
    open: std::collections::VecDeque<(Time, Instant)>,
    done: Vec<Duration>,
    metrics: Arc<Metrics>,
}

impl EpochLatency {
    /// `next` is now open, so `next - 1` just closed.
    fn closed(&mut self, next: Time) {
        if self.open.back().is_none_or(|(e, _)| *e < next) {
            self.open.push_back((next, Instant::now()));
        }
    }

    fn observe(&mut self, probe: &ProbeHandle<Time>) {
        while let Some((next, at)) = self.open.front() {
            if probe.less_than(next) {
                break;
            }
            let latency = at.elapsed();
            self.metrics.epoch_done(latency);
            self.done.push(latency);
            self.open.pop_front();
        }
    }
}

/// Steps until every sink has handled every epoch.
fn drain(worker: &mut Worker, probe: &ProbeHandle<Time>) {
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
}
