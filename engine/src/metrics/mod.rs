//! Run counters and timings shared by the reading loop, the dataflow and the sinks: cheap
//! atomics, read by the progress line, the final summary and the Prometheus endpoint.

pub mod http;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tributary_operators::dataflow::decode::DecodeStats;
use tributary_operators::DeadLetterKind;

/// Upper bounds (seconds) of the epoch-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters of one pipeline run.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records read from the source.
    pub records_in: AtomicU64,
    /// What decoding saw (events per table, tombstones, skipped tables), counted by all workers.
    pub decode: Arc<DecodeStats>,
    /// Epochs closed by the source.
    pub epochs_closed: AtomicU64,
    /// Epochs every sink has handled.
    pub epochs_done: AtomicU64,
    /// Rows of current state held by upsert operators (all tables, all workers).
    pub state_rows: Arc<AtomicI64>,
    /// Iceberg snapshots committed.
    pub iceberg_commits: AtomicU64,
    /// Rows appended to Iceberg tables.
    pub iceberg_rows_written: AtomicU64,
    /// Rows deleted (by position) from Iceberg tables.
    pub iceberg_rows_deleted: AtomicU64,
    /// Microseconds Iceberg sinks spent encoding rows and committing (all sinks).
    pub iceberg_busy_us: AtomicU64,
    /// Unix time (ms) at which the last epoch was handled by every sink.
    pub last_epoch_done_ms: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    dead_letters: Mutex<BTreeMap<DeadLetterKind, u64>>,
    output_rows: Mutex<BTreeMap<String, u64>>,
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

    /// Counts rows an output wrote.
    pub fn output_rows(&self, output: &str, rows: u64) {
        if let Ok(mut map) = self.output_rows.lock() {
            *map.entry(output.to_owned()).or_insert(0) += rows;
        }
    }

    /// Rows written per output.
    pub fn outputs(&self) -> BTreeMap<String, u64> {
        self.output_rows
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Records that an epoch was handled by every sink `latency` after it closed.
    pub fn epoch_done(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        Self::add(&self.latency_count, 1);
        Self::add(
            &self.latency_sum_us,
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        );
        Self::add(&self.epochs_done, 1);
        self.last_epoch_done_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Cumulative histogram counts (per bucket bound), total count, and sum in seconds.
    pub fn epoch_latency(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect();
        let sum = Self::get(&self.latency_sum_us) as f64 / 1e6;
        (buckets, Self::get(&self.latency_count), sum)
    }

    /// Seconds since the last epoch was handled by every sink (0 before the first).
    pub fn frontier_lag_seconds(&self) -> f64 {
        match self.last_epoch_done_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            done => unix_ms().saturating_sub(done) as f64 / 1e3,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
