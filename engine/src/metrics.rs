//! Run counters shared by the ingest loop and the sinks: cheap atomics, read for progress
//! lines and the final summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use std::sync::Arc;

use tributary_operators::dataflow::decode::DecodeStats;
use tributary_operators::DeadLetterKind;

/// Counters of one pipeline run.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records read from the source.
    pub records_in: AtomicU64,
    /// What decoding saw (events, tombstones, skipped tables), counted by all workers.
    pub decode: Arc<DecodeStats>,
    /// Epochs closed by the source.
    pub epochs_closed: AtomicU64,
    /// Batches written by sinks.
    pub batches_written: AtomicU64,
    dead_letters: Mutex<BTreeMap<DeadLetterKind, u64>>,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts a dead letter of `kind` (called by the dead-letter sink, once per letter).
    pub fn dead_letter(&self, kind: DeadLetterKind) {
        if let Ok(mut map) = self.dead_letters.lock() {
            *map.entry(kind).or_insert(0) += 1;
        }
    }

    /// Dead letters by kind.
    pub fn dead_letters(&self) -> BTreeMap<DeadLetterKind, u64> {
        self.dead_letters
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// All dead letters.
    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters().values().sum()
    }
}
