//! Run counters and timings shared by the reading loop, the dataflow and the sinks: cheap
//! atomics, read by the progress line, the final summary and the Prometheus endpoint.

pub mod http;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tributary_operators::dataflow::decode::DecodeStats;
use tributary_operators::dataflow::upsert::StateSize;
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
    /// What the upsert operators hold, per table (all workers).
    state: Mutex<BTreeMap<String, Arc<StateSize>>>,
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
    /// Time from an epoch's close until every sink has handled it.
    epoch_latency: Histogram,
    /// Time of each Iceberg commit (one table's snapshot).
    pub iceberg_commit_latency: Histogram,
    /// Snapshots Iceberg maintenance expired.
    pub iceberg_snapshots_expired: AtomicU64,
    /// Files Iceberg maintenance deleted (of expired snapshots, old metadata, orphans).
    pub iceberg_files_deleted: AtomicU64,
    /// Data and delete files compaction rewrote.
    pub iceberg_files_compacted: AtomicU64,
    dead_letters: Mutex<BTreeMap<DeadLetterKind, u64>>,
    output_rows: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// The state counters of `table` (made on first use).
    pub fn state_of(&self, table: &str) -> Arc<StateSize> {
        let Ok(mut state) = self.state.lock() else {
            return Arc::default();
        };
        Arc::clone(state.entry(table.to_owned()).or_default())
    }

    /// Per table, the rows its state holds and about how many bytes they take.
    pub fn state_sizes(&self) -> BTreeMap<String, (i64, i64)> {
        let Ok(state) = self.state.lock() else {
            return BTreeMap::new();
        };
        state
            .iter()
            .map(|(table, size)| {
                let rows = size.rows.load(Ordering::Relaxed);
                (table.clone(), (rows, size.bytes.load(Ordering::Relaxed)))
            })
            .filter(|(_, (rows, _))| *rows != 0)
            .collect()
    }

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
        self.epoch_latency.record(latency);
        Self::add(&self.epochs_done, 1);
        self.last_epoch_done_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// The epoch latencies (see [`Histogram::read`]).
    pub fn epoch_latency(&self) -> (Vec<(f64, u64)>, u64, f64) {
        self.epoch_latency.read()
    }

    /// Seconds since the last epoch was handled by every sink (0 before the first).
    pub fn frontier_lag_seconds(&self) -> f64 {
        match self.last_epoch_done_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            done => unix_ms().saturating_sub(done) as f64 / 1e3,
        }
    }
}

/// A latency histogram: counts per bucket of [`LATENCY_BUCKETS`], and the first
/// [`Histogram::KEPT`] values themselves (for exact percentiles in run summaries).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
    values: Mutex<Vec<Duration>>,
}

impl Histogram {
    /// Values kept for percentiles (a long run keeps counting in the buckets).
    pub const KEPT: usize = 1 << 20;

    /// Records one value.
    pub fn record(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        Metrics::add(&self.count, 1);
        Metrics::add(
            &self.sum_us,
            u64::try_from(value.as_micros()).unwrap_or(u64::MAX),
        );
        if let Ok(mut values) = self.values.lock() {
            if values.len() < Self::KEPT {
                values.push(value);
            }
        }
    }

    /// Cumulative counts per bucket bound, the total count, and the sum in seconds.
    pub fn read(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect();
        let sum = Metrics::get(&self.sum_us) as f64 / 1e6;
        (buckets, Metrics::get(&self.count), sum)
    }

    /// The values recorded (the first [`Histogram::KEPT`]), in order.
    pub fn values(&self) -> Vec<Duration> {
        self.values.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
