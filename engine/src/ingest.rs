//! Ingest: each reading worker assigns raw records to epochs. An epoch closes every `--epoch-ms`
//! but only between source transactions; transaction ids are peeked only when a close is due,
//! so decoding itself happens in parallel on all workers. Readers of one source share an
//! [`EpochClock`]: when one closes an epoch, the others close theirs at their next transaction
//! boundary (or at once when they have nothing open), so no reader holds the others' epochs back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_operators::dataflow::Time;
use tributary_operators::debezium::peek_transaction;
use tributary_operators::RawRecord;

use crate::metrics::Metrics;
use crate::sinks::iceberg::EpochLedger;

/// An open epoch closes (at the next transaction boundary) once it holds this many records,
/// whatever the interval: with at most a few epochs in flight, this bounds buffered memory.
pub const MAX_RECORDS_PER_EPOCH: u64 = 100_000;

/// While ingesting, the interval is checked every this many records, not at every record.
const CLOCK_EVERY: u64 = 64;

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

/// Assigns records to epochs and remembers the positions each closed epoch covers.
#[derive(Debug)]
pub struct Ingestor {
    metrics: Arc<Metrics>,
    epoch: Time,
    opened: Instant,
    interval: Duration,
    records_in_epoch: u64,
    /// Whether the interval had passed when last looked at (every [`CLOCK_EVERY`] records).
    interval_passed: bool,
    /// The last record's transaction, if it was peeked: it is whenever the epoch was due, or
    /// about to be, when that record came.
    last_tx: Option<Option<u64>>,
    positions: BTreeMap<u32, u64>,
    epochs: Vec<EpochRecord>,
    ledger: Option<(EpochLedger, Vec<String>)>,
    clock: EpochClock,
}

impl Ingestor {
    /// An ingestor closing epochs at most every `interval`.
    pub fn new(metrics: Arc<Metrics>, interval: Duration) -> Self {
        Ingestor {
            metrics,
            epoch: 0,
            opened: Instant::now(),
            interval,
            records_in_epoch: 0,
            interval_passed: interval.is_zero(),
            last_tx: None,
            positions: BTreeMap::new(),
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

    /// The open epoch.
    pub fn epoch(&self) -> Time {
        self.epoch
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

    /// [`Ingestor::due`] as `ingest` sees it: the clock is read every [`CLOCK_EVERY`] records.
    fn due_while_ingesting(&mut self) -> bool {
        if self.records_in_epoch.is_multiple_of(CLOCK_EVERY) {
            self.interval_passed = self.opened.elapsed() >= self.interval;
        }
        self.clock.newest() > self.epoch
            || (self.records_in_epoch > 0
                && (self.records_in_epoch >= MAX_RECORDS_PER_EPOCH || self.interval_passed))
    }

    /// Assigns `records` to epochs, closing the open one before a record that starts a new
    /// transaction once the interval has passed.
    pub fn ingest(
        &mut self,
        records: impl IntoIterator<Item = RawRecord>,
        mut emit: impl FnMut(Emit),
    ) {
        // Counted once per call: the counter is shared by every worker.
        let mut ingested = 0;
        self.interval_passed = self.opened.elapsed() >= self.interval;
        for raw in records {
            let due = self.due_while_ingesting();
            if due {
                let next = transaction_of(&raw);
                let boundary = match self.last_tx {
                    _ if self.records_in_epoch == 0 => true,
                    Some(previous) => previous.is_none() || next.is_none() || previous != next,
                    // The epoch became due after the last record went: this one decides.
                    None => false,
                };
                if boundary {
                    emit(Emit::Advance(self.close_epoch()));
                }
                self.last_tx = Some(next);
            }
            let last = self.positions.entry(raw.position.stream).or_insert(0);
            *last = (*last).max(raw.position.offset);
            self.records_in_epoch += 1;
            if !due {
                // Peeked only when the next record may close the epoch.
                self.last_tx = self.due_while_ingesting().then(|| transaction_of(&raw));
            }
            ingested += 1;
            emit(Emit::Record(raw));
        }
        Metrics::add(&self.metrics.records_in, ingested);
    }

    /// Closes the open epoch (if it has records), catches up with the other readers' newest
    /// epoch, and returns the epoch now open.
    pub fn close_epoch(&mut self) -> Time {
        if self.records_in_epoch > 0 {
            if let Some((ledger, names)) = &self.ledger {
                let positions = self
                    .positions
                    .iter()
                    .filter_map(|(stream, offset)| {
                        Some((names.get(*stream as usize)?.clone(), *offset))
                    })
                    .collect();
                ledger.record(self.epoch, positions);
            }
            self.epochs.push(EpochRecord {
                epoch: self.epoch,
                positions: self.positions.clone(),
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
        self.epoch
    }
}

fn transaction_of(raw: &RawRecord) -> Option<u64> {
    let text = std::str::from_utf8(raw.value.as_deref()?).ok()?;
    peek_transaction(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::StreamPositions;
    use tributary_operators::Position;

    fn record(offset: u64, tx: Option<u64>) -> RawRecord {
        let source = match tx {
            Some(tx) => format!(r#"{{"txId":{tx}}}"#),
            None => "{}".to_owned(),
        };
        RawRecord {
            key: None,
            value: Some(Arc::from(
                format!(r#"{{"op":"c","source":{source}}}"#).as_bytes(),
            )),
            topic: None,
            position: Position { stream: 0, offset },
            line: true,
        }
    }

    fn epochs_of(records: Vec<RawRecord>) -> Vec<(Time, u64)> {
        let mut ingestor = Ingestor::new(Arc::default(), Duration::ZERO);
        let mut epoch = 0;
        let mut assigned = Vec::new();
        ingestor.ingest(records, |emit| match emit {
            Emit::Advance(e) => epoch = e,
            Emit::Record(r) => assigned.push((epoch, r.position.offset)),
        });
        assigned
    }

    #[test]
    fn epochs_close_only_between_transactions() {
        let records = vec![
            record(1, Some(7)),
            record(2, Some(7)),
            record(3, Some(8)),
            record(4, None),
            record(5, None),
            record(6, Some(9)),
            record(7, Some(9)),
        ];
        assert_eq!(
            epochs_of(records),
            vec![(0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (4, 7)]
        );
    }

    #[test]
    fn an_epoch_that_falls_due_between_batches_still_closes_between_transactions() {
        let mut ingestor = Ingestor::new(Arc::default(), Duration::from_millis(20));
        let mut epoch = 0;
        let mut assigned = Vec::new();
        let mut take = |emit| match emit {
            Emit::Advance(e) => epoch = e,
            Emit::Record(r) => assigned.push((epoch, r.position.offset)),
        };
        ingestor.ingest(vec![record(1, Some(7))], &mut take);
        std::thread::sleep(Duration::from_millis(30));
        let batch = vec![
            record(2, Some(7)),
            record(3, Some(7)),
            record(4, Some(8)),
            record(5, Some(8)),
        ];
        ingestor.ingest(batch, &mut take);
        assert_eq!(assigned, vec![(0, 1), (0, 2), (0, 3), (1, 4), (1, 5)]);
    }

    #[test]
    fn closed_epochs_record_positions() {
        let mut ingestor = Ingestor::new(Arc::default(), Duration::from_secs(3600));
        ingestor.ingest(vec![record(1, None), record(2, None)], |_| {});
        assert_eq!(ingestor.close_epoch(), 1);
        assert_eq!(ingestor.close_epoch(), 1, "an empty epoch does not close");
        assert_eq!(
            ingestor.epochs(),
            &[EpochRecord {
                epoch: 0,
                positions: BTreeMap::from([(0, 2)])
            }]
        );
    }

    #[test]
    fn readers_on_one_clock_close_epochs_in_step() {
        let clock = EpochClock::default();
        let ledger = EpochLedger::default();
        let names = vec!["a".to_owned(), "b".to_owned()];
        let reader = || {
            Ingestor::new(Arc::default(), Duration::from_secs(3600))
                .with_ledger(ledger.clone(), names.clone())
                .with_clock(clock.clone())
        };
        let (mut first, mut second) = (reader(), reader());
        let stream_b = |offset| {
            let mut r = record(offset, None);
            r.position.stream = 1;
            r
        };
        first.ingest(vec![record(1, None)], |_| {});
        second.ingest(vec![stream_b(5)], |_| {});
        assert!(!second.due());
        assert_eq!(first.close_epoch(), 1);
        assert!(second.due(), "the other reader opened epoch 1");
        assert_eq!(first.close_epoch(), 1, "nothing new: no further epoch");
        let mut advanced = Vec::new();
        second.ingest(vec![stream_b(6), stream_b(7)], |emit| {
            if let Emit::Advance(epoch) = emit {
                advanced.push(epoch);
            }
        });
        assert_eq!(
            advanced,
            [1],
            "closes at the first transaction boundary it sees: record 6 is peeked then, and \
             closes its own transaction"
        );
        assert_eq!(second.close_epoch(), 2);
        assert!(first.due());
        assert_eq!(
            first.close_epoch(),
            2,
            "an empty reader jumps to the newest epoch"
        );
        assert_eq!(
            ledger.positions_through(0),
            Some(StreamPositions::from([("a".into(), 1), ("b".into(), 6)]))
        );
        assert_eq!(
            ledger.positions_through(1),
            Some(StreamPositions::from([("a".into(), 1), ("b".into(), 7)]))
        );
    }
}
