//! Source positions: per stream, the last offset a result includes; and the ledger of closed
//! epochs that readers write and durable sinks commit by: each epoch's positions, the
//! sources' progress notes at those positions, and which epochs are commit points (every
//! table of a run commits at the same epochs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tributary_operators::dataflow::Time;

/// Source positions by stream name (as sources name their streams): the last offset included.
/// This is what durable sinks record with each commit.
pub type StreamPositions = BTreeMap<String, u64>;

/// What a source needs besides its offsets to resume, by stream name, as the source wrote it
/// (a PostgreSQL backfill's finished tables and chunks). Durable sinks commit it with the
/// positions it belongs to.
pub type StreamProgress = BTreeMap<String, serde_json::Value>;

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
    /// Per stream, the progress notes by the offset from which each holds.
    notes: BTreeMap<String, BTreeMap<u64, serde_json::Value>>,
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
            notes: BTreeMap::new(),
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

    /// Records that `stream`'s progress is `note` from `offset` on (once the records up to
    /// `offset` are in an epoch, that epoch's commit carries it).
    pub fn note_progress(&self, stream: &str, offset: u64, note: serde_json::Value) {
        if let Ok(mut ledger) = self.0.lock() {
            ledger
                .notes
                .entry(stream.to_owned())
                .or_default()
                .insert(offset, note);
        }
    }

    /// The progress each stream had reached through `epoch`: the newest note at or before the
    /// stream's position then.
    pub(crate) fn progress_through(&self, epoch: Time) -> StreamProgress {
        let Some(positions) = self.positions_through(epoch) else {
            return StreamProgress::new();
        };
        let Ok(ledger) = self.0.lock() else {
            return StreamProgress::new();
        };
        positions
            .iter()
            .filter_map(|(stream, offset)| {
                let (_, note) = ledger.notes.get(stream)?.range(..=offset).next_back()?;
                Some((stream.clone(), note.clone()))
            })
            .collect()
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
    fn progress_is_the_newest_note_at_or_before_an_epochs_position() {
        let ledger = EpochLedger::default();
        let at = |offset| StreamPositions::from([("s".to_owned(), offset)]);
        ledger.note_progress("s", 5, serde_json::json!("five"));
        ledger.record(0, at(3));
        ledger.record(1, at(6));
        ledger.note_progress("s", 9, serde_json::json!("nine"));
        ledger.record(2, at(8));
        assert!(ledger.progress_through(0).is_empty(), "no note yet at 3");
        assert_eq!(ledger.progress_through(1)["s"], "five");
        assert_eq!(ledger.progress_through(2)["s"], "five", "9 is past 8");
        ledger.record(3, at(9));
        assert_eq!(ledger.progress_through(3)["s"], "nine");
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
