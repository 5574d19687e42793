//! Source positions: per stream, the last offset a result includes, and the ledger of closed
//! epochs' positions that readers write and durable sinks commit with their snapshots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tributary_operators::dataflow::Time;

/// Source positions by stream name (as sources name their streams): the last offset included.
/// This is what durable sinks record with each commit.
pub type StreamPositions = BTreeMap<String, u64>;

/// Closed epochs and the source positions each covers, by stream name; written by the reading
/// workers before an epoch's close reaches any sink.
#[derive(Debug, Clone, Default)]
pub struct EpochLedger {
    epochs: Arc<Mutex<BTreeMap<Time, StreamPositions>>>,
}

impl EpochLedger {
    /// Records that a reader closed `epoch` at `positions` (its streams only; readers of
    /// disjoint streams record the same epoch side by side).
    pub fn record(&self, epoch: Time, positions: StreamPositions) {
        if let Ok(mut epochs) = self.epochs.lock() {
            let recorded = epochs.entry(epoch).or_default();
            for (stream, offset) in positions {
                let last = recorded.entry(stream).or_insert(offset);
                *last = (*last).max(offset);
            }
        }
    }

    /// Every stream's last offset in the closed epochs at or before `epoch` (a reader that
    /// had nothing in an epoch records nothing for it).
    pub(crate) fn positions_through(&self, epoch: Time) -> Option<StreamPositions> {
        let epochs = self.epochs.lock().ok()?;
        let mut through: Option<StreamPositions> = None;
        for positions in epochs.range(..=epoch).map(|(_, p)| p) {
            let through = through.get_or_insert_with(StreamPositions::new);
            for (stream, offset) in positions {
                let last = through.entry(stream.clone()).or_insert(*offset);
                *last = (*last).max(*offset);
            }
        }
        through
    }

    /// The latest closed epoch.
    pub(crate) fn last(&self) -> Option<Time> {
        self.epochs.lock().ok()?.keys().next_back().copied()
    }
}
