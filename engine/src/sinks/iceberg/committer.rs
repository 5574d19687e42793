//! The sink's moving parts: a dataflow operator on the sink worker hands each closed epoch's
//! changes to a committer thread, which commits every commit interval (and at the end), with
//! the source positions of the last epoch it covers, then reports the epoch durable.

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

fn run(
    mut writer: TableWriter,
    messages: Receiver<Message>,
    context: &CommitterContext,
) -> Result<(), IcebergError> {
    // The newest epoch known complete: every epoch handed over is complete, and so is every
    // epoch before a reported frontier.
    let mut through: Option<Time> = None;
    let mut last_commit = Instant::now();
    let mut last_snapshot = Instant::now();
    let refresh = IDLE_REFRESH.max(context.interval);
    loop {
        let wait = context.interval.saturating_sub(last_commit.elapsed());
        match messages.recv_timeout(wait) {
            Ok(Message::Epoch(0, _)) if context.skip_epoch_zero => {}
            Ok(Message::Epoch(epoch, updates)) => {
                let started = Instant::now();
                writer.apply(updates)?;
                add_busy(context, started);
                through = through.max(Some(epoch));
            }
            Ok(Message::Frontier(frontier)) => {
                through = through.max(frontier.checked_sub(1));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(last) = context.ledger.last() {
                    commit(&mut writer, last, true, context)?;
                }
                return Ok(());
            }
        }
        if last_commit.elapsed() >= context.interval {
            if let Some(through) = through {
                let idle_long = last_snapshot.elapsed() >= refresh;
                if commit(&mut writer, through, idle_long, context)? {
                    last_snapshot = Instant::now();
                }
            }
            last_commit = Instant::now();
        }
    }
}

fn add_busy(context: &CommitterContext, since: Instant) {
    let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
    Metrics::add(&context.metrics.iceberg_busy_us, micros);
}

/// Commits the epochs through `through` (see [`TableWriter::commit`] for `even_if_unchanged`);
/// true if a snapshot was written. The table counts as durable only as far as its snapshots
/// record: sources are acknowledged no further than any table's recorded positions.
fn commit(
    writer: &mut TableWriter,
    through: Time,
    even_if_unchanged: bool,
    context: &CommitterContext,
) -> Result<bool, IcebergError> {
    let Some(positions) = context.ledger.positions_through(through) else {
        return Ok(false);
    };
    let started = Instant::now();
    let committed = writer.commit(through, &positions, even_if_unchanged)?;
    add_busy(context, started);
    let written = committed.is_some();
    if let Some(stats) = committed {
        let latency = started.elapsed();
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
