//! The sink's moving parts: a dataflow operator on the sink worker hands each closed epoch's
//! changes to a committer thread, which commits at the ledger's commit points (one per commit
//! interval, the same epochs for every table) and at the end, with the source positions of the
//! last epoch it covers, then reports how far the table is durable.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use timely::dataflow::ProbeHandle;

use tributary_operators::dataflow::{Collection, Time};
use tributary_operators::{Diff, Row};

use super::{IcebergError, OpenedTable, TableWriter};
use crate::metrics::Metrics;
use crate::positions::EpochLedger;
use crate::sinks::{on_closed_epochs, record_failure, Durability, EpochSink, FailureSlot};

/// What the committer thread needs besides the writer.
#[derive(Debug, Clone)]
pub struct CommitterContext {
    /// The sink's name (for durability, logs and errors).
    pub name: String,
    /// Epoch positions.
    pub ledger: EpochLedger,
    /// Where to report committed epochs.
    pub durability: Durability,
    /// Where to report a failure.
    pub failure: FailureSlot,
    /// Run counters.
    pub metrics: Arc<Metrics>,
    /// Commit at most this often.
    pub interval: Duration,
    /// Epoch 0 carries the state recovered from the table: already stored, not written again.
    pub skip_epoch_zero: bool,
    /// The run was abandoned: commit nothing more.
    pub abandoned: Arc<std::sync::atomic::AtomicBool>,
}

enum Message {
    Epoch(Time, Vec<(Row, Diff)>),
    /// Every epoch before this one is complete.
    Frontier(Time),
}

/// Attaches the sink for `rows` to the dataflow; the worker that hosts it runs the committer.
pub fn attach<'s>(
    rows: &Collection<'s, Row>,
    probe: &ProbeHandle<Time>,
    table: Arc<OpenedTable>,
    context: CommitterContext,
) {
    context.durability.register(&context.name);
    let name = format!("iceberg/{}", context.name);
    let sink = IcebergSink {
        table,
        context,
        committer: None,
    };
    on_closed_epochs(rows, &name, probe, sink);
}

/// The operator side: forwards closed epochs and frontier progress to the committer thread.
struct IcebergSink {
    table: Arc<OpenedTable>,
    context: CommitterContext,
    committer: Option<Committer>,
}

impl IcebergSink {
    fn committer(&mut self) -> &mut Committer {
        self.committer
            .get_or_insert_with(|| Committer::start(self.table.take_writer(), self.context.clone()))
    }
}

impl EpochSink<Row> for IcebergSink {
    /// The table writer consolidates by key, on the committer thread.
    const CONSOLIDATES: bool = true;

    fn write(&mut self, epoch: Time, updates: Vec<(Row, Diff)>) {
        self.committer().send(Message::Epoch(epoch, updates));
    }

    fn progress(&mut self, frontier: Option<Time>) {
        match frontier {
            Some(frontier) => self.committer().send(Message::Frontier(frontier)),
            None => self.committer().finish(),
        }
    }
}

/// The handle of a running committer thread.
struct Committer {
    sender: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    fn start(writer: Option<TableWriter>, context: CommitterContext) -> Self {
        let (sender, receiver) = sync_channel(8);
        let failure = Arc::clone(&context.failure);
        let name = context.name.clone();
        let thread = writer.and_then(|writer| {
            std::thread::Builder::new()
                .name(format!("iceberg:{name}"))
                .spawn(move || {
                    if let Err(error) = run(writer, receiver, &context) {
                        tracing::error!(sink = %context.name, %error, "iceberg sink failed");
                        record_failure(
                            &context.failure,
                            crate::error::RunError::Sink {
                                sink: format!("iceberg table `{}`", context.name),
                                cause: error.into(),
                            },
                        );
                    }
                })
                .map_err(|e| {
                    record_failure(
                        &failure,
                        crate::error::RunError::Workers(format!("iceberg thread: {e}")),
                    )
                })
                .ok()
        });
        Committer {
            sender: Some(sender),
            thread,
        }
    }

    fn send(&mut self, message: Message) {
        if let Some(sender) = &self.sender {
            if sender.send(message).is_err() {
                // The thread stopped after a failure, which it recorded.
                self.sender = None;
            }
        }
    }

    /// Lets the thread commit what is left and waits for it.
    fn finish(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An idle table (nothing to commit) still records how far the source is this often (at
/// least), in a snapshot without files.
const IDLE_REFRESH: Duration = Duration::from_secs(30);

/// The committer thread: applies each closed epoch's changes in order and commits at the
/// ledger's commit points (the same epochs for every table of the run), and at the end.
fn run(
    mut writer: TableWriter,
    messages: Receiver<Message>,
    context: &CommitterContext,
) -> Result<(), IcebergError> {
    let mut state = CommitState {
        committed: None,
        first_changed: None,
        last_snapshot: Instant::now(),
        refresh: IDLE_REFRESH.max(context.interval),
    };
    // The newest epoch known complete.
    let mut complete: Option<Time> = None;
    loop {
        match messages.recv_timeout(context.interval.max(Duration::from_millis(10))) {
            Ok(Message::Epoch(0, _)) if context.skip_epoch_zero => {}
            Ok(Message::Epoch(epoch, updates)) => {
                // Every epoch before this one is complete: commit points among them first.
                state.commit_before(&mut writer, epoch, context)?;
                let started = Instant::now();
                writer.apply(updates)?;
                add_busy(context, started);
                state.first_changed.get_or_insert(epoch);
                complete = complete.max(Some(epoch));
            }
            Ok(Message::Frontier(frontier)) => {
                state.commit_before(&mut writer, frontier, context)?;
                complete = complete.max(frontier.checked_sub(1));
            }
            Err(RecvTimeoutError::Timeout) => {
                // Nothing new for an interval (a quiet source): commit what is complete.
                if let Some(epoch) = complete {
                    context.ledger.propose_commit_point(epoch);
                    state.commit_before(&mut writer, epoch + 1, context)?;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(last) = context.ledger.last() {
                    state.commit(&mut writer, last, true, context)?;
                }
                return Ok(());
            }
        }
    }
}

/// What the committer thread knows between messages.
struct CommitState {
    /// The last commit point committed in this run.
    committed: Option<Time>,
    /// The first epoch with changes since the last snapshot.
    first_changed: Option<Time>,
    last_snapshot: Instant,
    refresh: Duration,
}

impl CommitState {
    /// Commits through the newest commit point before `bound`, if not done yet.
    fn commit_before(
        &mut self,
        writer: &mut TableWriter,
        bound: Time,
        context: &CommitterContext,
    ) -> Result<(), IcebergError> {
        match context.ledger.commit_point_before(bound) {
            Some(point) if self.committed < Some(point) => {
                let idle_long = self.last_snapshot.elapsed() >= self.refresh;
                self.commit(writer, point, idle_long, context)
            }
            _ => Ok(()),
        }
    }

    fn commit(
        &mut self,
        writer: &mut TableWriter,
        through: Time,
        even_if_unchanged: bool,
        context: &CommitterContext,
    ) -> Result<(), IcebergError> {
        self.committed = Some(through);
        if commit(
            writer,
            through,
            self.first_changed,
            even_if_unchanged,
            context,
        )? {
            self.first_changed = None;
            self.last_snapshot = Instant::now();
        }
        Ok(())
    }
}

fn add_busy(context: &CommitterContext, since: Instant) {
    let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
    Metrics::add(&context.metrics.iceberg_busy_us, micros);
}

/// Commits the epochs through `through`, whose changes start at `first_changed` (see
/// [`TableWriter::commit`] for `even_if_unchanged`);
/// true if a snapshot was written. The table counts as durable only as far as its snapshots
/// record: sources are acknowledged no further than any table's recorded positions.
fn commit(
    writer: &mut TableWriter,
    through: Time,
    first_changed: Option<Time>,
    even_if_unchanged: bool,
    context: &CommitterContext,
) -> Result<bool, IcebergError> {
    if context.abandoned.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(false);
    }
    let Some(positions) = context.ledger.positions_through(through) else {
        return Ok(false);
    };
    let started = Instant::now();
    let progress = context.ledger.progress_through(through);
    let committed = writer.commit(
        through,
        (&positions, &progress),
        first_changed,
        even_if_unchanged,
    )?;
    add_busy(context, started);
    let written = committed.is_some();
    if let Some(stats) = committed {
        let latency = started.elapsed();
        context.metrics.iceberg_commit_latency.record(latency);
        let maintained = Instant::now();
        writer.maintain(&context.metrics)?;
        add_busy(context, maintained);
        Metrics::add(&context.metrics.iceberg_commits, 1);
        Metrics::add(&context.metrics.iceberg_rows_written, stats.rows);
        Metrics::add(&context.metrics.iceberg_rows_deleted, stats.deletes);
        tracing::info!(
            table = %writer.table().ident,
            epoch = through,
            rows = stats.rows,
            deletes = stats.deletes,
            latency_ms = latency.as_millis() as u64,
            "committed iceberg snapshot"
        );
    }
    if let Some(recorded) = writer.committed().epoch {
        context.durability.committed(&context.name, recorded);
    }
    Ok(written)
}
