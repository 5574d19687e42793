//! Source positions: per stream, the last offset a result includes; and the ledger of closed
//! epochs that readers write and durable sinks commit by: each epoch's positions, and which
//! epochs are commit points (every table of a run commits at the same epochs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tributary_operators::dataflow::Time;

/// Source positions by stream name (as sources name their streams): the last offset included.
/// This is what durable sinks record with each commit.
pub type StreamPositions = BTreeMap<String, u64>;

/// Closed epochs and the source positions each covers, by stream name, and the commit points;
/// written by the reading workers before an epoch's close reaches any sink.
#[derive(Debug, Clone)]
pub struct EpochLedger(Arc<Mutex<Ledger>>);

#[derive(Debug)]
struct Ledger {
    epochs: BTreeMap<Time, StreamPositions>,
    /// Epochs that durable sinks commit through: one per commit interval, so that all of a
    /// run's tables have snapshots at the same epochs.
    commit_points: BTreeSet<Time>,
    interval: Duration,
    last_point: Instant,
}

impl Default for EpochLedger {
    /// A ledger where every epoch is a commit point.
    fn default() -> Self {
        EpochLedger::with_commit_interval(Duration::ZERO)
    }
}

impl EpochLedger {
    /// A ledger that makes an epoch a commit point when it closes at least `interval` after
    /// the last one.
    pub fn with_commit_interval(interval: Duration) -> Self {
        EpochLedger(Arc::new(Mutex::new(Ledger {
            epochs: BTreeMap::new(),
            commit_points: BTreeSet::new(),
            interval,
            last_point: Instant::now(),
        })))
    }

    /// Records that a reader closed `epoch` at `positions` (its streams only; readers of
    /// disjoint streams record the same epoch side by side).
    pub fn record(&self, epoch: Time, positions: StreamPositions) {
        let Ok(mut ledger) = self.0.lock() else {
            return;
        };
        let first = !ledger.epochs.contains_key(&epoch);
        if first && ledger.last_point.elapsed() >= ledger.interval {
            ledger.commit_points.insert(epoch);
            ledger.last_point = Instant::now();
        }
        let recorded = ledger.epochs.entry(epoch).or_default();
        for (stream, offset) in positions {
            let last = recorded.entry(stream).or_insert(offset);
            *last = (*last).max(offset);
        }
    }

    /// Every stream's last offset in the closed epochs at or before `epoch` (a reader that
    /// had nothing in an epoch records nothing for it).
    pub(crate) fn positions_through(&self, epoch: Time) -> Option<StreamPositions> {
        let ledger = self.0.lock().ok()?;
        let mut through: Option<StreamPositions> = None;
        for positions in ledger.epochs.range(..=epoch).map(|(_, p)| p) {
            let through = through.get_or_insert_with(StreamPositions::new);
            for (stream, offset) in positions {
                let last = through.entry(stream.clone()).or_insert(*offset);
                *last = (*last).max(*offset);
            }
        }
        through
    }

    /// Makes `epoch` a commit point if it is the newest closed epoch (so no sink has taken a
    /// later one) and a commit interval has passed since the last point: a quiet source
    /// closes no more epochs, and its last changes still get committed.
    pub(crate) fn propose_commit_point(&self, epoch: Time) {
        let Ok(mut ledger) = self.0.lock() else {
            return;
        };
        let newest = ledger.epochs.keys().next_back() == Some(&epoch);
        let newer = ledger.commit_points.last().is_none_or(|last| *last < epoch);
        if newest && newer && ledger.last_point.elapsed() >= ledger.interval {
            ledger.commit_points.insert(epoch);
            ledger.last_point = Instant::now();
        }
    }

    /// The newest commit point before `bound`.
    pub(crate) fn commit_point_before(&self, bound: Time) -> Option<Time> {
        let ledger = self.0.lock().ok()?;
        ledger.commit_points.range(..bound).next_back().copied()
    }

    /// The latest closed epoch.
    pub(crate) fn last(&self) -> Option<Time> {
        self.0.lock().ok()?.epochs.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_points_come_one_per_interval_whoever_records_first() {
        let ledger = EpochLedger::with_commit_interval(Duration::from_millis(30));
        let at = |offset| StreamPositions::from([("s".to_owned(), offset)]);
        ledger.record(0, at(1));
        assert_eq!(
            ledger.commit_point_before(10),
            None,
            "not before an interval"
        );
        std::thread::sleep(Duration::from_millis(40));
        ledger.record(1, at(2));
        ledger.record(1, at(3));
        ledger.record(2, at(4));
        assert_eq!(ledger.commit_point_before(10), Some(1));
        assert_eq!(ledger.commit_point_before(1), None);
        assert_eq!(ledger.positions_through(1), Some(at(3)));
        let every = EpochLedger::default();
        every.record(5, at(1));
        every.record(6, at(2));
        assert_eq!(every.commit_point_before(7), Some(6));
    }

    #[test]
    fn a_quiet_source_gets_a_commit_point_only_at_its_newest_epoch() {
        let ledger = EpochLedger::with_commit_interval(Duration::from_millis(20));
        let at = |offset| StreamPositions::from([("s".to_owned(), offset)]);
        ledger.record(0, at(1));
        ledger.record(1, at(2));
        std::thread::sleep(Duration::from_millis(30));
        ledger.propose_commit_point(0);
        assert_eq!(
            ledger.commit_point_before(10),
            None,
            "a sink may have taken epoch 1"
        );
        ledger.propose_commit_point(1);
        assert_eq!(ledger.commit_point_before(10), Some(1));
    }
}
