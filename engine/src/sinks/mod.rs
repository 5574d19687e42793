//! Sinks: act on an epoch only once every worker's input frontier has passed it, on one worker,
//! in epoch order, with the epoch's updates consolidated (or as they are, for sinks that
//! consolidate them on a thread of their own).

pub mod console;
pub mod dead_letter;
pub mod iceberg;
pub mod kafka;
mod outputs;

pub use outputs::{OutputContext, OutputSink, OutputSpec, OutputWriter, SinkStats};
pub(crate) use outputs::{SinkContext, SinkSettings};

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;

use tributary_operators::dataflow::{Collection, Diff, PendingEpochs, Time};

use crate::error::RunError;

/// An output stream shared by sinks (stdout, a file, or a test buffer).
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// Wraps any writer for sharing.
pub fn shared_writer(writer: impl Write + Send + 'static) -> SharedWriter {
    Arc::new(Mutex::new(Box::new(writer)))
}

/// The first sink failure of a run; the runtime stops and reports it.
pub type FailureSlot = Arc<Mutex<Option<RunError>>>;

/// Records `error` unless an earlier failure is already recorded.
pub fn record_failure(slot: &FailureSlot, error: RunError) {
    if let Ok(mut first) = slot.lock() {
        first.get_or_insert(error);
    }
}

/// Where durable sinks (Iceberg, Kafka) report how far they have committed, so that sources
/// are acknowledged only for what every durable sink holds. Console-like sinks do not register.
#[derive(Clone, Debug, Default)]
pub struct Durability {
    committed: Arc<Mutex<BTreeMap<String, Option<Time>>>>,
}

impl Durability {
    /// Registers a durable sink that has committed nothing in this run yet.
    pub fn register(&self, sink: &str) {
        if let Ok(mut committed) = self.committed.lock() {
            committed.entry(sink.to_owned()).or_insert(None);
        }
    }

    /// `sink` has durably committed every epoch up to and including `epoch`.
    pub fn committed(&self, sink: &str, epoch: Time) {
        if let Ok(mut committed) = self.committed.lock() {
            let entry = committed.entry(sink.to_owned()).or_insert(None);
            *entry = Some(entry.map_or(epoch, |e| e.max(epoch)));
        }
    }

    /// Whether every durable sink has committed `epoch` (true when there are none).
    pub fn holds(&self, epoch: Time) -> bool {
        self.committed.lock().is_ok_and(|committed| {
            committed
                .values()
                .all(|through| through.is_some_and(|t| t >= epoch))
        })
    }
}

/// What a sink does with closed epochs (closures `FnMut(epoch, updates)` are sinks too).
pub trait EpochSink<D>: 'static {
    /// Whether the sink takes an epoch's updates as they are and consolidates them itself, off
    /// the worker (consolidating sorts the updates, which reads every row many times).
    const CONSOLIDATES: bool = false;

    /// An epoch's updates (consolidated unless the sink `CONSOLIDATES`); called only for epochs
    /// with updates, in epoch order.
    fn write(&mut self, epoch: Time, updates: Vec<(D, Diff)>);

    /// Every epoch before `frontier` has been written; `None` once the input is finished.
    fn progress(&mut self, _frontier: Option<Time>) {}
}

impl<D, F: FnMut(Time, Vec<(D, Diff)>) + 'static> EpochSink<D> for F {
    fn write(&mut self, epoch: Time, updates: Vec<(D, Diff)>) {
        self(epoch, updates)
    }
}

/// Hands each epoch with changes to `sink` on the last worker, once the frontier has passed
/// it, in epoch order, then reports the frontier. `probe` passes an epoch only after the sink
/// returned for it.
pub fn on_closed_epochs<'s, D, S>(
    collection: &Collection<'s, D>,
    name: &str,
    probe: &ProbeHandle<Time>,
    mut sink: S,
) where
    D: differential_dataflow::ExchangeData,
    S: EpochSink<D>,
{
    // Sinks gather on the last worker, so that with several workers their I/O does not stall
    // the reading loop on worker 0 (backpressure then paces the source).
    let scope = collection.inner.scope();
    let sink_worker = scope.peers() as u64 - 1;
    let hosts_sink = scope.index() as u64 == sink_worker;
    collection
        .inner
        .clone()
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(move |_: &(D, Time, Diff)| sink_worker),
            name,
            |capability, _| {
                // Held at the input frontier until the sink has seen the input finish, so the
                // probe is done only after the sink's last `progress` (e.g. a final commit).
                let mut held = Some(capability);
                let mut pending: PendingEpochs<(D, Diff)> = BTreeMap::new();
                let mut reported = Some(Time::MIN);
                move |(input, frontier), _output| {
                    input.for_each(|capability, data| {
                        for (datum, time, diff) in data.drain(..) {
                            pending
                                .entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                .1
                                .push((datum, diff));
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (_capability, mut updates)) = entry.remove_entry();
                        if !S::CONSOLIDATES {
                            differential_dataflow::consolidation::consolidate(&mut updates);
                        }
                        if !updates.is_empty() {
                            sink.write(time, updates);
                        }
                    }
                    let lower = frontier.frontier().first().copied();
                    if hosts_sink && lower != reported {
                        reported = lower;
                        sink.progress(lower);
                    }
                    match (lower, held.as_mut()) {
                        (Some(lower), Some(capability)) if *capability.time() < lower => {
                            capability.downgrade(&lower)
                        }
                        (None, _) => held = None,
                        _ => {}
                    }
                }
            },
        )
        .probe_with(probe);
}
