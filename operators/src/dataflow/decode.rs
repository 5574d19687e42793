//! Decode and route: raw records are sent to the workers (a record with a Kafka key to the
//! worker that keeps its key's state, others spread), decoded there against the pipeline's
//! tables, and routed into one change-event collection per table plus a dead-letter
//! collection. Tables can be added while the dataflow is being built.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::{Exchange, ParallelizationContract};
use timely::dataflow::channels::pushers::Output;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::InputHandleCore;
use timely::dataflow::operators::InputCapability;
use timely::progress::operate::FrontierInterest;

use differential_dataflow::AsCollection;

use super::{route_hash, Collection, Diff, Stream, Time};
use crate::debezium::{
    decode_with, describe, kafka_message_key, Decoded, DescribedTable, SchemaCache,
};
use crate::event::{ChangeEvent, DeadLetter, DeadLetterKind, Op, RawRecord};
use crate::schema::{TableCatalog, TableId, TableSpec};
use crate::topic::TopicName;

/// Counts of what decoding saw, shared by all workers.
#[derive(Debug, Default)]
pub struct DecodeStats {
    /// Change events of declared tables (tombstones excluded).
    pub events: AtomicU64,
    /// Tombstones, including bare `null` lines.
    pub tombstones: AtomicU64,
    /// Events of tables the pipeline does not read.
    pub skipped: AtomicU64,
    /// Names of the tables skipped.
    pub skipped_tables: Mutex<BTreeSet<String>>,
    /// Events replayed from the source that a durable sink of their table already holds.
    pub already_held: AtomicU64,
    by_table: Mutex<BTreeMap<String, u64>>,
}

impl DecodeStats {
    /// Change events decoded per table name.
    pub fn events_by_table(&self) -> BTreeMap<String, u64> {
        self.by_table.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn count_table(&self, table: &str, n: u64) {
        if let Ok(mut map) = self.by_table.lock() {
            match map.get_mut(table) {
                Some(count) => *count += n,
                None => {
                    map.insert(table.to_owned(), n);
                }
            }
        }
    }

    fn count(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

type Update<D> = (D, Time, Diff);
type RawRoute = Box<dyn FnMut(&RawRecord) -> u64>;
type RawPact = Exchange<RawRecord, RawRoute>;
type RawPuller = <RawPact as ParallelizationContract<Time, Vec<RawRecord>>>::Puller;
type RouteOutput<D> = Output<Time, Vec<Update<D>>>;

/// Most events a table's buffer is sized for before it is sent downstream.
const MESSAGE_EVENTS: usize = 8192;

/// For pipelines that take their tables from the source: which tables not in the catalog
/// they would read, and what learns a table a record describes.
#[derive(Clone)]
pub struct SourceSchemas {
    /// Whether the pipeline would read table `server.schema.table`.
    pub wanted: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// Learns a table that a schema-wrapped record describes: one the catalog lacks, or one
    /// whose new Connect schema its declaration does not hold. `None`: events of tables the
    /// catalog lacks are `no-schema` dead letters.
    pub learn: Option<Arc<dyn Fn(DescribedTable) + Send + Sync>>,
}

impl std::fmt::Debug for SourceSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSchemas")
            .field("learns", &self.learn.is_some())
            .finish_non_exhaustive()
    }
}

/// Builder of the decode-and-route operator: call [`DecodeRouter::table`] for each table, then
/// [`DecodeRouter::build`] with the finished catalog.
pub struct DecodeRouter<'s> {
    builder: OperatorBuilder<'s, Time>,
    input: InputHandleCore<Time, Vec<RawRecord>, RawPuller>,
    dead_output: RouteOutput<DeadLetter>,
    dead: Collection<'s, DeadLetter>,
    tables: Vec<RouteOutput<ChangeEvent>>,
    /// The finished catalog, for routing records by their Kafka keys.
    routing_catalog: Rc<OnceCell<Arc<TableCatalog>>>,
}

impl std::fmt::Debug for DecodeRouter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeRouter")
            .field("tables", &self.tables.len())
            .finish()
    }
}

/// Records of a stream go to the workers in runs of 2^`RUN_BITS` consecutive offsets, so that
/// each worker reads adjacent records (often adjacent memory) rather than every other one.
const RUN_BITS: u32 = 6;

fn spread(record: &RawRecord) -> u64 {
    let offset = record
        .position
        .offset
        .wrapping_add(u64::from(record.position.seq));
    (offset >> RUN_BITS) ^ u64::from(record.position.stream).rotate_left(32)
}

/// Where each raw record is decoded. With several workers, a record whose Kafka key reads as
/// a table's primary key goes to the worker that keeps that key's state (the hash is the one
/// the upsert routes by), so its event and rows never cross to another core; others are spread.
fn route_records(catalog: Rc<OnceCell<Arc<TableCatalog>>>, peers: usize) -> RawRoute {
    if peers == 1 {
        return Box::new(spread);
    }
    // The table of the topic seen last: a stream's records share their topic.
    let mut last: Option<(TopicName, Option<Arc<TableSpec>>)> = None;
    Box::new(move |record| {
        let (Some(key), Some(topic), Some(catalog)) =
            (record.key.as_deref(), record.topic, catalog.get())
        else {
            return spread(record);
        };
        let spec = match &last {
            Some((seen, spec)) if seen.is(topic) => spec,
            _ => {
                let spec = catalog.lookup(&topic).and_then(|id| catalog.get(id));
                &last.insert((topic, spec.cloned())).1
            }
        };
        spec.as_deref()
            .and_then(|spec| kafka_message_key(key, spec))
            .map_or_else(|| spread(record), |key| route_hash(&key))
    })
}

impl<'s> DecodeRouter<'s> {
    /// Starts the operator over the raw stream.
    pub fn new(raw: Stream<'s, RawRecord>, name: &str) -> Self {
        let mut builder = OperatorBuilder::new(name.to_owned(), raw.scope());
        let routing_catalog = Rc::default();
        let peers = raw.scope().peers();
        let pact: RawPact = Exchange::new(route_records(Rc::clone(&routing_catalog), peers));
        let input = builder.new_input(raw, pact);
        builder.set_notify_for(0, FrontierInterest::Never);
        let (dead_output, dead) = builder.new_output();
        DecodeRouter {
            builder,
            input,
            dead_output,
            dead: dead.as_collection(),
            tables: Vec::new(),
            routing_catalog,
        }
    }

    /// The change events of table `id`; ids must be requested in order 0, 1, 2, …
    pub fn table(&mut self, id: TableId) -> Collection<'s, ChangeEvent> {
        debug_assert_eq!(
            id as usize,
            self.tables.len(),
            "tables are routed in id order"
        );
        let (output, stream) = self.builder.new_output();
        self.tables.push(output);
        stream.as_collection()
    }

    /// Records that failed to decode.
    pub fn dead_letters(&self) -> Collection<'s, DeadLetter> {
        self.dead.clone()
    }

    /// Finishes the operator: it decodes against `catalog` and counts into `stats`. `held[t][s]`
    /// is the last offset of stream `s` that a durable sink of table `t` already holds: those
    /// events are dropped (a restart replays them for another table's sake). Events of tables
    /// not in `catalog` are skipped, or, where `source_schemas` says the pipeline would read
    /// them, learnt from the record's schema or made `no-schema` dead letters.
    pub fn build(
        self,
        catalog: Arc<TableCatalog>,
        stats: Arc<DecodeStats>,
        held: Vec<Vec<Option<u64>>>,
        source_schemas: Option<SourceSchemas>,
    ) {
        let DecodeRouter {
            builder,
            mut input,
            mut dead_output,
            mut tables,
            routing_catalog,
            ..
        } = self;
        let _ = routing_catalog.set(Arc::clone(&catalog));
        let any_held = held
            .iter()
            .any(|streams| streams.iter().any(Option::is_some));
        builder.build(move |_capabilities| {
            let mut cache = SchemaCache::default();
            let mut per_table: Vec<Vec<Update<ChangeEvent>>> = Vec::new();
            let mut dead_letters: Vec<Update<DeadLetter>> = Vec::new();
            let stage: Arc<str> = Arc::from("decode");
            move |_frontiers| {
                per_table.resize_with(tables.len(), Vec::new);
                input.for_each_stamp(|capability, containers| {
                    let Some(&time) = capability.least() else {
                        return;
                    };
                    let (mut events, mut tombstones, mut skipped, mut replayed) = (0, 0, 0, 0);
                    // Records of this stamp not decoded yet: a table's buffer is sized for
                    // them (up to a cap) when it starts, so it is not regrown (which copies
                    // every event) and one message carries many events.
                    let mut remaining: usize = containers.as_slice().iter().map(Vec::len).sum();
                    for container in containers {
                        for raw in container.drain(..) {
                            remaining -= 1;
                            let decoded = decode_with(&raw, &catalog, &mut cache);
                            if let (Some(learn), Decoded::Event(event)) = (
                                source_schemas.as_ref().and_then(|s| s.learn.as_ref()),
                                &decoded,
                            ) {
                                if cache.take_fresh() {
                                    learn_if_changed(&raw, &catalog, event.table, learn);
                                }
                            }
                            match decoded {
                                Decoded::Event(event) => {
                                    if any_held && is_held(&held, &event) {
                                        replayed += 1;
                                        continue;
                                    }
                                    if event.op == Op::Tombstone {
                                        tombstones += 1;
                                    } else {
                                        events += 1;
                                    }
                                    let table = event.table as usize;
                                    if let (Some(output), Some(buffer)) =
                                        (tables.get_mut(table), per_table.get_mut(table))
                                    {
                                        if buffer.len() == buffer.capacity() {
                                            send(output, buffer, &capability, &catalog, &stats);
                                            buffer.reserve((remaining + 1).min(MESSAGE_EVENTS));
                                        }
                                        buffer.push((event, time, 1));
                                    }
                                }
                                Decoded::Error(error) => {
                                    let payload = raw
                                        .value
                                        .as_deref()
                                        .or(raw.key.as_deref())
                                        .unwrap_or_default();
                                    let letter = DeadLetter {
                                        stage: Arc::clone(&stage),
                                        kind: error.kind,
                                        reason: error.message,
                                        position: Some(raw.position),
                                        raw: Arc::from(String::from_utf8_lossy(payload).as_ref()),
                                    };
                                    dead_letters.push((letter, time, 1));
                                }
                                Decoded::Skipped { table }
                                    if source_schemas
                                        .as_ref()
                                        .is_some_and(|s| (s.wanted)(&table)) =>
                                {
                                    let learn =
                                        source_schemas.as_ref().and_then(|s| s.learn.as_ref());
                                    if let (Some(learn), Some(described)) = (learn, describe(&raw))
                                    {
                                        learn(described);
                                        continue;
                                    }
                                    let payload = raw.value.as_deref().unwrap_or_default();
                                    dead_letters.push((
                                        DeadLetter {
                                            stage: Arc::clone(&stage),
                                            kind: DeadLetterKind::NoSchema,
                                            reason: format!(
                                                "table `{table}` has no schema: its events carry \
                                                 none; declare it ([[table]] in tributary.toml: \
                                                 name, key, columns)"
                                            ),
                                            position: Some(raw.position),
                                            raw: Arc::from(
                                                String::from_utf8_lossy(payload).as_ref(),
                                            ),
                                        },
                                        time,
                                        1,
                                    ));
                                }
                                Decoded::Skipped { table } => {
                                    skipped += 1;
                                    if let Ok(mut names) = stats.skipped_tables.lock() {
                                        if !names.contains(&table) {
                                            names.insert(table);
                                        }
                                    }
                                }
                                Decoded::BareTombstone => tombstones += 1,
                            }
                        }
                    }
                    DecodeStats::count(&stats.events, events);
                    DecodeStats::count(&stats.tombstones, tombstones);
                    DecodeStats::count(&stats.skipped, skipped);
                    DecodeStats::count(&stats.already_held, replayed);
                    for (output, buffer) in tables.iter_mut().zip(per_table.iter_mut()) {
                        send(output, buffer, &capability, &catalog, &stats);
                    }
                    if !dead_letters.is_empty() {
                        dead_output.activate().give(&capability, &mut dead_letters);
                        dead_letters.clear();
                    }
                });
            }
        });
    }
}

/// Whether a durable sink of the event's table already holds it.
fn is_held(held: &[Vec<Option<u64>>], event: &ChangeEvent) -> bool {
    held.get(event.table as usize)
        .and_then(|streams| streams.get(event.position.stream as usize))
        .copied()
        .flatten()
        .is_some_and(|last| event.position.offset <= last)
}

/// Sends a table's buffered events (if any) and counts its changes; leaves the buffer empty.
fn send(
    output: &mut RouteOutput<ChangeEvent>,
    buffer: &mut Vec<Update<ChangeEvent>>,
    capability: &InputCapability<Time>,
    catalog: &TableCatalog,
    stats: &DecodeStats,
) {
    let Some((first, _, _)) = buffer.first() else {
        return;
    };
    let changes = buffer
        .iter()
        .filter(|(e, _, _)| e.op != Op::Tombstone)
        .count();
    if let Some(spec) = catalog.get(first.table) {
        stats.count_table(&spec.name, changes as u64);
    }
    output.activate().give(capability, buffer);
    buffer.clear();
}

/// Hands `learn` the table `raw` describes if its columns no longer fit `table`'s declaration.
fn learn_if_changed(
    raw: &RawRecord,
    catalog: &TableCatalog,
    table: TableId,
    learn: &Arc<dyn Fn(DescribedTable) + Send + Sync>,
) {
    let (Some(spec), Some(described)) = (catalog.get(table), describe(raw)) else {
        return;
    };
    if spec.schema.holds(&described.schema).is_err() {
        learn(described);
    }
}
