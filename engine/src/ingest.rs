//! Ingest: decodes raw records on the reading worker, closes epochs every `--epoch-ms` but only
//! at source-transaction boundaries, and records the source positions each epoch covers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_operators::dataflow::route::Ingested;
use tributary_operators::dataflow::Time;
use tributary_operators::debezium::{decode, Decoded};
use tributary_operators::{DeadLetter, Op, RawRecord, TableCatalog};

use crate::metrics::Metrics;

/// The source positions an epoch covers: per stream, the last offset included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    /// The epoch.
    pub epoch: Time,
    /// Stream index → last offset read (cumulative over all epochs up to this one).
    pub positions: BTreeMap<u32, u64>,
}

/// What ingesting produces, in order.
#[derive(Debug)]
pub enum Emit {
    /// A record for the open epoch.
    Record(Ingested),
    /// The open epoch closed; this epoch is now open.
    Advance(Time),
}

/// Decides when the open epoch closes.
#[derive(Debug)]
pub struct EpochClock {
    epoch: Time,
    opened: Instant,
    interval: Duration,
    last_tx: Option<Arc<str>>,
    records: u64,
}

impl EpochClock {
    /// A clock closing epochs at most every `interval`.
    pub fn new(interval: Duration) -> Self {
        EpochClock {
            epoch: 0,
            opened: Instant::now(),
            interval,
            last_tx: None,
            records: 0,
        }
    }

    /// The open epoch.
    pub fn epoch(&self) -> Time {
        self.epoch
    }

    /// The interval has passed and the open epoch has records.
    pub fn due(&self) -> bool {
        self.records > 0 && self.opened.elapsed() >= self.interval
    }

    /// Whether an event of transaction `tx` may start a new epoch: not while the previous event's
    /// transaction continues.
    pub fn at_boundary(&self, tx: Option<&Arc<str>>) -> bool {
        match (&self.last_tx, tx) {
            (Some(previous), Some(next)) => previous != next,
            _ => true,
        }
    }

    fn note(&mut self, tx: Option<Arc<str>>) {
        self.records += 1;
        self.last_tx = tx;
    }

    fn advance(&mut self) {
        self.epoch += 1;
        self.records = 0;
        self.opened = Instant::now();
    }
}

/// Turns raw records into dataflow input and epoch closings.
#[derive(Debug)]
pub struct Ingestor {
    catalog: TableCatalog,
    metrics: Arc<Metrics>,
    clock: EpochClock,
    positions: BTreeMap<u32, u64>,
    epochs: Vec<EpochRecord>,
    skipped_tables: BTreeSet<String>,
    decode_stage: Arc<str>,
}

impl Ingestor {
    /// An ingestor for `catalog`'s tables.
    pub fn new(catalog: TableCatalog, metrics: Arc<Metrics>, epoch_interval: Duration) -> Self {
        Ingestor {
            catalog,
            metrics,
            clock: EpochClock::new(epoch_interval),
            positions: BTreeMap::new(),
            epochs: Vec::new(),
            skipped_tables: BTreeSet::new(),
            decode_stage: Arc::from("decode"),
        }
    }

    /// The open epoch.
    pub fn epoch(&self) -> Time {
        self.clock.epoch()
    }

    /// The run's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Closed epochs so far.
    pub fn epochs(&self) -> &[EpochRecord] {
        &self.epochs
    }

    /// The open epoch may close now (interval passed; call at a point with no open transaction).
    pub fn due(&self) -> bool {
        self.clock.due()
    }

    /// Decodes `records` into dataflow input, closing epochs between them when due.
    pub fn ingest(
        &mut self,
        records: impl IntoIterator<Item = RawRecord>,
        mut emit: impl FnMut(Emit),
    ) {
        for raw in records {
            Metrics::add(&self.metrics.records_in, 1);
            let position = raw.position;
            match decode(&raw, &self.catalog) {
                Decoded::Event(event) => {
                    if self.clock.due() && self.clock.at_boundary(event.tx.as_ref()) {
                        emit(Emit::Advance(self.close_epoch()));
                    }
                    if event.op == Op::Tombstone {
                        Metrics::add(&self.metrics.tombstones, 1);
                    } else {
                        Metrics::add(&self.metrics.events, 1);
                    }
                    self.clock.note(event.tx.clone());
                    emit(Emit::Record(Ingested::Event(event)));
                }
                Decoded::Error(error) => {
                    let payload = raw
                        .value
                        .as_deref()
                        .or(raw.key.as_deref())
                        .unwrap_or_default();
                    self.clock.records += 1;
                    emit(Emit::Record(Ingested::Dead(DeadLetter {
                        stage: Arc::clone(&self.decode_stage),
                        kind: error.kind,
                        reason: error.message,
                        position: Some(position),
                        raw: Arc::from(String::from_utf8_lossy(payload).as_ref()),
                    })));
                }
                Decoded::Skipped { table } => {
                    Metrics::add(&self.metrics.skipped, 1);
                    if self.skipped_tables.insert(table.clone()) {
                        tracing::info!(table = %table, "skipping events of a table this pipeline does not read");
                    }
                }
                Decoded::BareTombstone => Metrics::add(&self.metrics.tombstones, 1),
            }
            let last = self.positions.entry(position.stream).or_insert(0);
            *last = (*last).max(position.offset);
        }
    }

    /// Closes the open epoch (if it has records) and returns the epoch now open.
    pub fn close_epoch(&mut self) -> Time {
        if self.clock.records > 0 {
            self.epochs.push(EpochRecord {
                epoch: self.clock.epoch(),
                positions: self.positions.clone(),
            });
            Metrics::add(&self.metrics.epochs_closed, 1);
            self.clock.advance();
        }
        self.clock.epoch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_wait_for_transaction_boundaries() {
        let mut clock = EpochClock::new(Duration::ZERO);
        let tx = |s: &str| Some(Arc::from(s));
        clock.note(tx("1"));
        assert!(clock.due());
        assert!(!clock.at_boundary(tx("1").as_ref()));
        assert!(clock.at_boundary(tx("2").as_ref()));
        assert!(clock.at_boundary(None));
    }
}
