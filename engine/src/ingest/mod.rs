//! Ingest: each reading worker assigns raw records to epochs. An epoch closes every `--epoch-ms`,
//! but only where every stream it has records of is between two transactions: a record
//! without a transaction id (a tombstone, a malformed line, a heartbeat) belongs to the
//! transaction around it and never ends one. Transaction ids are peeked only when a close is
//! due, so decoding itself happens in parallel on all workers. Readers of one source share an
//! [`EpochClock`]: when one closes an epoch, the others close theirs at their next boundary
//! (or at once when they have nothing open), so no reader holds the others' epochs back.
//!
//! A stream that goes quiet inside a transaction is taken as complete after [`quiet_after`]:
//! the rest of that transaction, if it ever comes, lands in a later epoch. Sources that know
//! their transactions are whole ([`crate::sources::Source::at_transaction_end`]) close at once.

mod closing;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_operators::dataflow::Time;
use tributary_operators::debezium::{transaction_role, TxRole};
use tributary_operators::RawRecord;

use self::closing::{Closing, Open, Route};
use crate::metrics::Metrics;
use crate::positions::EpochLedger;

/// An open epoch closes (at the next transaction boundary) once it holds this many records,
/// whatever the interval: with at most a few epochs in flight, this bounds buffered memory.
pub const MAX_RECORDS_PER_EPOCH: u64 = 100_000;

/// While ingesting, the interval is checked every this many records, not at every record.
const CLOCK_EVERY: u64 = 64;

/// The shortest wait for a quiet stream's transaction to go on (see [`quiet_after`]).
const MIN_QUIET: Duration = Duration::from_millis(200);

/// How long a stream must be quiet, inside a transaction, before a due epoch closes without
/// the rest of it: one epoch interval, and at least 200 ms.
pub fn quiet_after(interval: Duration) -> Duration {
    interval.max(MIN_QUIET)
}

/// The source positions an epoch covers: per stream, the last offset included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    /// The epoch.
    pub epoch: Time,
    /// Stream index → last offset read (cumulative over all epochs up to this one).
    pub positions: BTreeMap<u32, u64>,
}

/// The newest epoch any reader of a source has opened.
#[derive(Debug, Clone, Default)]
pub struct EpochClock(Arc<AtomicU64>);

impl EpochClock {
    fn newest(&self) -> Time {
        self.0.load(Ordering::Acquire)
    }

    /// `epoch` is open; true if no reader had opened it before.
    fn opened(&self, epoch: Time) -> bool {
        self.0.fetch_max(epoch, Ordering::AcqRel) < epoch
    }
}

/// What ingesting produces, in order.
#[derive(Debug)]
pub enum Emit {
    /// A record for the open epoch.
    Record(RawRecord),
    /// The open epoch closed; this epoch is now open.
    Advance(Time),
}

/// What the ingestor knows of one stream.
#[derive(Debug, Clone, Copy)]
struct StreamState {
    /// The last offset assigned to an epoch, if any.
    offset: Option<u64>,
    /// The epoch of that record.
    epoch: Time,
    /// When a record of the stream last arrived (to the precision of the ingestor's clock).
    last_seen: Instant,
    /// Whether its change events carry transaction ids: then one without is not a transaction
    /// of its own (it is a malformed event inside the transaction around it).
    carries_tx_ids: bool,
}

/// How the run is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Running,
    /// Stop at the next boundary of every stream; records past it are not assigned.
    Stopping,
    /// Stopped: records are dropped (a restart reads them again from the sinks' positions).
    Stopped,
    /// The source is drained: everything read is assigned, with no more waiting.
    Draining,
}

/// Assigns records to epochs and remembers the positions each closed epoch covers.
#[derive(Debug)]
pub struct Ingestor {
    metrics: Arc<Metrics>,
    epoch: Time,
    opened: Instant,
    interval: Duration,
    quiet: Duration,
    /// Read every [`CLOCK_EVERY`] records and at every call.
    now: Instant,
    records_in_epoch: u64,
    /// Records assigned since the shared counter was last told (it is told once per call).
    unreported: u64,
    /// Records dropped after a stop (read past its boundary).
    dropped: u64,
    /// Whether the interval had passed when last looked at.
    interval_passed: bool,
    streams: Vec<StreamState>,
    /// The last record assigned, when it was peeked: it is when the epoch became due with it.
    last_peek: Option<(u32, TxRole)>,
    closing: Option<Closing>,
    /// Records held during a close, assigned again (before new ones) once it is done.
    backlog: VecDeque<RawRecord>,
    ending: Ending,
    epochs: Vec<EpochRecord>,
    ledger: Option<(EpochLedger, Vec<String>)>,
    clock: EpochClock,
}

impl Ingestor {
    /// An ingestor closing epochs at most every `interval`.
    pub fn new(metrics: Arc<Metrics>, interval: Duration) -> Self {
        let now = Instant::now();
        Ingestor {
            metrics,
            epoch: 0,
            opened: now,
            interval,
            quiet: quiet_after(interval),
            now,
            records_in_epoch: 0,
            unreported: 0,
            dropped: 0,
            interval_passed: interval.is_zero(),
            streams: Vec::new(),
            last_peek: None,
            closing: None,
            backlog: VecDeque::new(),
            ending: Ending::Running,
            epochs: Vec::new(),
            ledger: None,
            clock: EpochClock::default(),
        }
    }

    /// Numbers epochs from `epoch` on (a resumed run continues the committed numbering).
    pub fn starting_at(mut self, epoch: Time) -> Self {
        self.epoch = epoch;
        self.clock.opened(epoch);
        self
    }

    /// Takes a stream that is quiet this long inside a transaction as complete (default:
    /// [`quiet_after`] the interval).
    #[cfg(test)]
    pub fn with_quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// Keeps in step with the other readers of the source on `clock`.
    pub fn with_clock(mut self, clock: EpochClock) -> Self {
        clock.opened(self.epoch);
        self.clock = clock;
        self
    }

    /// Also records each closed epoch's positions, by stream name, in `ledger` (for sinks that
    /// commit them).
    pub fn with_ledger(mut self, ledger: EpochLedger, stream_names: Vec<String>) -> Self {
        self.ledger = Some((ledger, stream_names));
        self
    }

    /// Passes a source's progress note on to the ledger (see [`crate::sources::Source::take_progress`]).
    pub fn note_progress(&self, stream: u32, offset: u64, note: serde_json::Value) {
        if let Some((ledger, names)) = &self.ledger {
            if let Some(name) = names.get(stream as usize) {
                ledger.note_progress(name, offset, note);
            }
        }
    }

    /// The open epoch.
    pub fn epoch(&self) -> Time {
        self.epoch
    }

    /// The epoch interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The run's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Closed epochs so far.
    pub fn epochs(&self) -> &[EpochRecord] {
        &self.epochs
    }

    /// Another reader opened a later epoch, or the open epoch has records and either the
    /// interval has passed or it is full.
    pub fn due(&self) -> bool {
        self.clock.newest() > self.epoch
            || (self.records_in_epoch > 0
                && (self.records_in_epoch >= MAX_RECORDS_PER_EPOCH
                    || self.opened.elapsed() >= self.interval))
    }

    /// True once a requested stop has reached its boundary: nothing more is assigned.
    pub fn stopped(&self) -> bool {
        self.ending == Ending::Stopped
    }

    /// [`Ingestor::due`] as `ingest` sees it: the clock is read every [`CLOCK_EVERY`] records.
    fn due_while_ingesting(&mut self) -> bool {
        if self.records_in_epoch.is_multiple_of(CLOCK_EVERY) {
            self.tick();
        }
        self.clock.newest() > self.epoch
            || (self.records_in_epoch > 0
                && (self.records_in_epoch >= MAX_RECORDS_PER_EPOCH || self.interval_passed))
    }

    fn tick(&mut self) {
        self.now = Instant::now();
        self.interval_passed = self.now.saturating_duration_since(self.opened) >= self.interval;
    }

    /// Assigns `records` to epochs, closing the open one where every stream is between
    /// transactions once the interval has passed.
    pub fn ingest(
        &mut self,
        records: impl IntoIterator<Item = RawRecord>,
        mut emit: impl FnMut(Emit),
    ) {
        self.tick();
        for raw in records {
            self.take(raw, &mut emit);
            self.take_backlog(&mut emit);
        }
        self.report();
    }

    /// Counts the records assigned since the last call, once per call: the counter is shared
    /// by every worker.
    fn report(&mut self) {
        Metrics::add(
            &self.metrics.records_in,
            std::mem::take(&mut self.unreported),
        );
    }

    /// After each poll: starts a due close, and finishes it where the streams still inside a
    /// transaction are complete after all: `at_transaction_end` (the source says every
    /// record it gave ends a whole transaction) or quiet for [`quiet_after`] the interval.
    pub fn settle(&mut self, at_transaction_end: bool, mut emit: impl FnMut(Emit)) {
        self.tick();
        if self.closing.is_none() && self.ending != Ending::Stopped && self.due() {
            self.start_closing(&mut emit);
        }
        let quiet: Vec<u32> = match &self.closing {
            Some(closing) if !at_transaction_end => closing
                .pending_streams()
                .filter(|stream| self.is_quiet(*stream))
                .collect(),
            _ => Vec::new(),
        };
        if let Some(closing) = &mut self.closing {
            if at_transaction_end {
                closing.complete_all();
            }
            for stream in quiet {
                closing.complete(stream);
            }
            if closing.done() {
                self.finish_closing(&mut emit);
            }
        }
        self.take_backlog(&mut emit);
        self.report();
    }

    /// Closes the open epoch now, wherever its streams stand (the source says what it gave so
    /// far is a unit of its own, e.g. a database snapshot).
    pub fn close_now(&mut self, mut emit: impl FnMut(Emit)) {
        match &mut self.closing {
            Some(closing) => {
                closing.complete_all();
                self.finish_closing(&mut emit);
            }
            None => emit(Emit::Advance(self.close_epoch())),
        }
        self.take_backlog(&mut emit);
        self.report();
    }

    /// Stops at the next transaction boundary of every stream: the run keeps polling until
    /// [`Ingestor::stopped`]; records past the boundary are not assigned.
    pub fn request_stop(&mut self, mut emit: impl FnMut(Emit)) {
        if self.ending != Ending::Running {
            return;
        }
        self.ending = Ending::Stopping;
        if self.closing.is_none() {
            self.start_closing(&mut emit);
        }
    }

    /// The source is drained (or the run ends): assigns everything held and closes the last
    /// epoch; returns the epoch now open.
    pub fn finish(&mut self, mut emit: impl FnMut(Emit)) -> Time {
        if self.ending != Ending::Stopped {
            self.ending = Ending::Draining;
        }
        if let Some(closing) = &mut self.closing {
            closing.complete_all();
            self.finish_closing(&mut emit);
        }
        self.take_backlog(&mut emit);
        self.report();
        if self.dropped > 0 {
            tracing::info!(
                records = self.dropped,
                "stopped at a transaction boundary; the records read past it are left for the \
                 next run"
            );
        }
        let last = self.close_epoch();
        emit(Emit::Advance(last));
        last
    }

    /// Closes the open epoch (if it has records), catches up with the other readers' newest
    /// epoch, and returns the epoch now open. Records held by a close in progress are dropped
    /// (a source error ends the run).
    pub fn close_epoch(&mut self) -> Time {
        self.closing = None;
        if self.records_in_epoch > 0 {
            let positions: BTreeMap<u32, u64> = self
                .streams
                .iter()
                .enumerate()
                .filter_map(|(stream, state)| Some((stream as u32, state.offset?)))
                .collect();
            if let Some((ledger, names)) = &self.ledger {
                let named = positions
                    .iter()
                    .filter_map(|(stream, offset)| {
                        Some((names.get(*stream as usize)?.clone(), *offset))
                    })
                    .collect();
                ledger.record(self.epoch, named);
            }
            self.epochs.push(EpochRecord {
                epoch: self.epoch,
                positions,
            });
            self.epoch += 1;
            self.records_in_epoch = 0;
            if self.clock.opened(self.epoch) {
                Metrics::add(&self.metrics.epochs_closed, 1);
            }
        }
        self.epoch = self.epoch.max(self.clock.newest());
        self.opened = Instant::now();
        self.interval_passed = self.interval.is_zero();
        self.last_peek = None;
        self.epoch
    }

    /// Assigns one record: to the open epoch, or (during a close) to the closing epoch or the
    /// held ones.
    fn take(&mut self, raw: RawRecord, emit: &mut impl FnMut(Emit)) {
        match self.ending {
            Ending::Stopped => {
                self.dropped += 1;
                return;
            }
            Ending::Draining => return self.assign(raw, emit, false),
            Ending::Running | Ending::Stopping => {}
        }
        if self.closing.is_none() {
            if !self.due_while_ingesting() {
                return self.assign(raw, emit, true);
            }
            self.start_closing(emit);
            if self.closing.is_none() {
                // Nothing was open, or every stream was already at a boundary.
                return self.take(raw, emit);
            }
        }
        let stream = raw.position.stream;
        let route = match self.closing.as_ref().map(|c| c.open(stream)) {
            Some(Open::Complete) | None => Route::Hold,
            Some(_) => {
                let role = self.role(&raw);
                self.closing
                    .as_mut()
                    .map_or(Route::Hold, |c| c.route(stream, role))
            }
        };
        match route {
            Route::Emit => self.assign(raw, emit, false),
            Route::Hold => {
                let Some(closing) = &mut self.closing else {
                    return;
                };
                closing.held.push(raw);
                if closing.done() {
                    self.finish_closing(emit);
                }
            }
        }
    }

    /// Assigns `raw` to the open epoch; `peek` reads its transaction when that makes the
    /// epoch due (so the close knows where its stream stands).
    fn assign(&mut self, raw: RawRecord, emit: &mut impl FnMut(Emit), peek: bool) {
        let (stream, offset, epoch) = (raw.position.stream, raw.position.offset, self.epoch);
        let state = self.stream_mut(stream);
        state.offset = Some(state.offset.map_or(offset, |o| o.max(offset)));
        state.epoch = epoch;
        self.records_in_epoch += 1;
        self.unreported += 1;
        self.last_peek = None;
        if peek && self.due_while_ingesting() {
            self.last_peek = Some((stream, self.role(&raw)));
        }
        emit(Emit::Record(raw));
    }

    fn stream_mut(&mut self, stream: u32) -> &mut StreamState {
        let index = stream as usize;
        if index >= self.streams.len() {
            let fresh = StreamState {
                offset: None,
                epoch: 0,
                last_seen: self.now,
                carries_tx_ids: false,
            };
            self.streams.resize(index + 1, fresh);
        }
        let state = &mut self.streams[index];
        state.last_seen = self.now;
        state
    }

    /// The record's transaction role; a change event without an id on a stream whose events
    /// carry ids is taken as part of the transaction around it.
    fn role(&mut self, raw: &RawRecord) -> TxRole {
        let role = raw
            .value
            .as_deref()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .map_or(TxRole::Attached, transaction_role);
        let state = self.stream_mut(raw.position.stream);
        match role {
            TxRole::In(_) => state.carries_tx_ids = true,
            TxRole::Alone if state.carries_tx_ids => return TxRole::Attached,
            _ => {}
        }
        role
    }

    fn is_quiet(&self, stream: u32) -> bool {
        self.streams
            .get(stream as usize)
            .is_none_or(|state| self.now.saturating_duration_since(state.last_seen) >= self.quiet)
    }

    /// Begins closing the open epoch: every stream with records in it must reach a boundary.
    fn start_closing(&mut self, emit: &mut impl FnMut(Emit)) {
        if self.records_in_epoch == 0 {
            emit(Emit::Advance(self.close_epoch()));
            if self.ending == Ending::Stopping {
                self.ending = Ending::Stopped;
            }
            return;
        }
        let open = (0..self.streams.len() as u32)
            .map(|stream| {
                let state = self.streams[stream as usize];
                if state.offset.is_none() || state.epoch != self.epoch || self.is_quiet(stream) {
                    return Open::Complete;
                }
                match self.last_peek {
                    Some((peeked, TxRole::In(id))) if peeked == stream => Open::In(id),
                    // After a transaction of its own, only its tombstone may still follow.
                    _ => Open::Unknown,
                }
            })
            .collect();
        self.closing = Some(Closing::new(open));
        if self.closing.as_ref().is_some_and(Closing::done) {
            self.finish_closing(emit);
        }
    }

    /// Every stream is at a boundary: closes the epoch and queues the held records for the
    /// next one (or drops them when stopping).
    fn finish_closing(&mut self, emit: &mut impl FnMut(Emit)) {
        let held = self.closing.take().map(|c| c.held).unwrap_or_default();
        emit(Emit::Advance(self.close_epoch()));
        if self.ending == Ending::Stopping {
            self.ending = Ending::Stopped;
            self.dropped += (held.len() + self.backlog.len()) as u64;
            self.backlog.clear();
            return;
        }
        for raw in held.into_iter().rev() {
            self.backlog.push_front(raw);
        }
    }

    fn take_backlog(&mut self, emit: &mut impl FnMut(Emit)) {
        while let Some(raw) = self.backlog.pop_front() {
            self.take(raw, emit);
        }
    }
}

#[cfg(test)]
mod tests;
