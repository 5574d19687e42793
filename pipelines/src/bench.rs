//! `tributary bench`: runs a pipeline on the orders workload pre-encoded in memory (so reading
//! is free) and reports events/s, MB/s, epoch latency percentiles, memory and state size.

use std::sync::Arc;
use std::time::Duration;

use tributary_engine::sources::generator::{
    kafka_key, GeneratorConfig, OrdersWorkload, ORDERS_TOPIC,
};
use tributary_engine::sources::{SourceSpec, SourceTable};
use tributary_engine::{
    run, shared_writer, ConsoleFormat, ConsoleMode, ConsoleOptions, IcebergOptions, Pipeline,
    RunError, RunOptions,
};
use tributary_operators::{Position, RawRecord, TopicName};

use crate::tables::orders_schema;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Change events.
    pub events: u64,
    /// Distinct keys of the workload.
    pub keys: u64,
    /// Worker threads.
    pub workers: usize,
    /// Streams the input is split into by order id, as Debezium's Kafka topic is partitioned
    /// by key; the workers share them out, so up to this many workers read side by side.
    pub partitions: usize,
    /// Epoch interval.
    pub epoch: Duration,
    /// Schema-wrapped envelopes instead of plain ones.
    pub schema: bool,
    /// Write the pipeline's Iceberg tables (false: compute them only).
    pub iceberg: bool,
    /// Iceberg commit interval.
    pub commit: Duration,
    /// Feed records as the Kafka source delivers Debezium's messages (key, value, topic)
    /// instead of JSONL lines.
    pub kafka_records: bool,
    /// Source tables the orders are spread over by id (`orders_00`, `orders_01`, … when more
    /// than one), each declared with the orders schema for pipelines that take their tables
    /// from the source (`replicate`).
    pub tables: usize,
    /// Further declared tables that get no events (to measure what an idle table costs).
    pub idle_tables: usize,
}

impl Default for BenchConfig {
    /// A million events over 100,000 keys, one worker and partition, 100 ms epochs, plain JSON
    /// lines, Iceberg written (commits every 10 s), one table.
    fn default() -> Self {
        BenchConfig {
            events: 1_000_000,
            keys: 100_000,
            workers: 1,
            partitions: 1,
            epoch: Duration::from_millis(100),
            schema: false,
            iceberg: true,
            commit: Duration::from_secs(10),
            kafka_records: false,
            tables: 1,
            idle_tables: 0,
        }
    }
}

/// The orders table split `tables` ways: the name of the one `order_id` goes to.
fn table_of(order_id: u64, tables: usize) -> Option<String> {
    (tables > 1).then(|| format!("orders_{:02}", (order_id * 7919) % tables as u64))
}

/// The orders tables a bench run declares: those that get events, then the idle ones.
fn declared_tables(config: &BenchConfig) -> Vec<SourceTable> {
    let names = (0..config.tables as u64)
        .map(|i| table_of(i, config.tables).unwrap_or_else(|| "orders".to_owned()))
        .chain((0..config.idle_tables).map(|i| format!("idle_{i:03}")));
    names
        .map(|table| SourceTable {
            name: format!("dbserver1.public.{table}"),
            namespace: "public".to_owned(),
            table,
            schema: orders_schema(),
            key: vec!["order_id".to_owned()],
        })
        .collect()
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Pipeline name.
    pub pipeline: String,
    /// Settings.
    pub config: BenchConfig,
    /// Records fed (events plus tombstones).
    pub records: u64,
    /// Change events the dataflow decoded (equals the events fed when nothing is lost).
    pub decoded: u64,
    /// Records that became dead letters (none for the generator's workload).
    pub dead_letters: u64,
    /// Bytes of JSON fed.
    pub bytes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Epoch close → all sinks done, 50th percentile.
    pub latency_p50: Duration,
    /// Same, 99th percentile.
    pub latency_p99: Duration,
    /// Closed epochs.
    pub epochs: usize,
    /// Resident memory before the run (includes the pre-encoded input).
    pub rss_before: u64,
    /// Peak resident memory.
    pub rss_peak: u64,
    /// Live keys at the end of the workload.
    pub live_keys: u64,
    /// Rows appended to Iceberg tables.
    pub iceberg_rows: u64,
    /// Iceberg snapshots committed.
    pub iceberg_commits: u64,
    /// Time the Iceberg sinks spent encoding and committing.
    pub iceberg_busy: Duration,
    /// Commit latency percentiles (50th, 99th, the maximum) and the median of the first and
    /// the last tenth of the commits (whether commits slow down as a table ages).
    pub commit_latency: CommitLatency,
    /// CPU time of the run, all threads: (user, system). System time is mostly the kernel
    /// mapping new memory; on some virtual machines it swings from run to run.
    pub cpu: (Duration, Duration),
}

/// How long Iceberg commits took over a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitLatency {
    /// 50th percentile.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
    /// Median of the first tenth of the commits.
    pub first_tenth: Duration,
    /// Median of the last tenth.
    pub last_tenth: Duration,
}

impl CommitLatency {
    /// The figures of `latencies`, in commit order.
    pub fn of(latencies: &[Duration]) -> Self {
        let tenth = (latencies.len() / 10).max(1).min(latencies.len());
        CommitLatency {
            p50: percentile(latencies, 0.5),
            p99: percentile(latencies, 0.99),
            max: latencies.iter().max().copied().unwrap_or_default(),
            first_tenth: percentile(&latencies[..tenth], 0.5),
            last_tenth: percentile(&latencies[latencies.len() - tenth..], 0.5),
        }
    }
}

/// The `p` quantile of `values` (unsorted).
fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

impl BenchReport {
    /// Change events per second.
    pub fn events_per_second(&self) -> f64 {
        self.config.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Rows the Iceberg sinks wrote and committed per second of their own busy time.
    pub fn iceberg_rows_per_second(&self) -> f64 {
        self.iceberg_rows as f64 / self.iceberg_busy.as_secs_f64().max(1e-9)
    }

    /// JSON megabytes (10^6) per second.
    pub fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Human-readable report.
    pub fn text(&self) -> String {
        let envelope = match (self.config.schema, self.config.kafka_records) {
            (true, false) => "schema-wrapped JSON lines",
            (false, false) => "plain JSON lines",
            (true, true) => "schema-wrapped JSON Kafka records",
            (false, true) => "plain JSON Kafka records",
        };
        let dataflow_memory = self.rss_peak.saturating_sub(self.rss_before);
        format!(
            "pipeline        {}\nworkers         {}, reading {} input partition(s)\nevents          {} ({} records, {:.1} MB of {envelope}, {} keys)\n\
             decoded         {} events, {} dead letters\n\
             throughput      {:.0} events/s, {:.1} MB/s ({:.2} s)\n\
             epoch latency   p50 {:.1} ms, p99 {:.1} ms over {} epochs\n\
             memory          peak RSS {:.1} MB; dataflow {:.1} MB above the {:.1} MB input\n\
             state           {} live keys, {:.0} bytes per live key (dataflow memory / keys)\n\
             cpu             {:.2} s user, {:.2} s system (all threads)\n\
             iceberg         {}\n",
            self.pipeline,
            self.config.workers,
            self.config.partitions,
            self.config.events,
            self.records,
            self.bytes as f64 / 1e6,
            self.config.keys,
            self.decoded,
            self.dead_letters,
            self.events_per_second(),
            self.megabytes_per_second(),
            self.elapsed.as_secs_f64(),
            self.latency_p50.as_secs_f64() * 1e3,
            self.latency_p99.as_secs_f64() * 1e3,
            self.epochs,
            self.rss_peak as f64 / 1e6,
            dataflow_memory as f64 / 1e6,
            self.rss_before as f64 / 1e6,
            self.live_keys,
            dataflow_memory as f64 / self.live_keys.max(1) as f64,
            self.cpu.0.as_secs_f64(),
            self.cpu.1.as_secs_f64(),
            if self.config.iceberg {
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                let c = &self.commit_latency;
                format!(
                    "{} rows written in {} commits; sink busy {:.2} s, {:.0} rows/s written and committed\ncommits         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; median {:.1} ms over the first tenth, {:.1} ms over the last",
                    self.iceberg_rows,
                    self.iceberg_commits,
                    self.iceberg_busy.as_secs_f64(),
                    self.iceberg_rows_per_second(),
                    ms(c.p50),
                    ms(c.p99),
                    ms(c.max),
                    ms(c.first_tenth),
                    ms(c.last_tenth),
                )
            } else {
                "not written (--no-iceberg)".to_owned()
            },
        )
    }

    /// One JSON object, for scripts.
    pub fn json(&self) -> String {
        serde_json::json!({
            "pipeline": self.pipeline,
            "workers": self.config.workers,
            "partitions": self.config.partitions,
            "kafka_records": self.config.kafka_records,
            "events": self.config.events,
            "keys": self.config.keys,
            "schema_wrapped": self.config.schema,
            "iceberg_written": self.config.iceberg,
            "records": self.records,
            "decoded_events": self.decoded,
            "dead_letters": self.dead_letters,
            "bytes": self.bytes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events_per_s": self.events_per_second(),
            "mb_per_s": self.megabytes_per_second(),
            "epoch_latency_ms": {
                "p50": self.latency_p50.as_secs_f64() * 1e3,
                "p99": self.latency_p99.as_secs_f64() * 1e3,
            },
            "epochs": self.epochs,
            "rss_before_bytes": self.rss_before,
            "rss_peak_bytes": self.rss_peak,
            "live_keys": self.live_keys,
            "cpu_user_s": self.cpu.0.as_secs_f64(),
            "cpu_system_s": self.cpu.1.as_secs_f64(),
            "iceberg_rows_written": self.iceberg_rows,
            "iceberg_commits": self.iceberg_commits,
            "iceberg_busy_s": self.iceberg_busy.as_secs_f64(),
            "iceberg_rows_per_s": self.iceberg_rows_per_second(),
            "iceberg_commit_ms": {
                "p50": self.commit_latency.p50.as_secs_f64() * 1e3,
                "p99": self.commit_latency.p99.as_secs_f64() * 1e3,
                "max": self.commit_latency.max.as_secs_f64() * 1e3,
                "first_tenth_median": self.commit_latency.first_tenth.as_secs_f64() * 1e3,
                "last_tenth_median": self.commit_latency.last_tenth.as_secs_f64() * 1e3,
            },
        })
        .to_string()
    }
}

/// The stream an order's events go to: a hash of its id (the key), so that a key's events keep
/// their order within one stream, as in a Kafka topic partitioned by key.
fn partition_of(order_id: u64, partitions: usize) -> usize {
    ((order_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % partitions as u64) as usize
}

/// Encodes the workload, runs `pipeline` over it, and measures.
pub fn bench(pipeline: &Pipeline, config: BenchConfig) -> Result<BenchReport, RunError> {
    let mut workload = OrdersWorkload::new(GeneratorConfig {
        events: Some(config.events),
        keys: config.keys,
        schema: config.schema,
        ..GeneratorConfig::default()
    });
    let partitions = config.partitions.max(1);
    let mut streams: Vec<Vec<RawRecord>> = vec![Vec::new(); partitions];
    let topic = TopicName::new(ORDERS_TOPIC);
    let mut line = String::new();
    let mut bytes = 0u64;
    while workload.next_line(&mut line) {
        if let Some(table) = table_of(workload.last_key(), config.tables) {
            line = line
                .replace("\"table\":\"orders\"", &format!("\"table\":\"{table}\""))
                .replace(ORDERS_TOPIC, &format!("dbserver1.public.{table}"));
        }
        let stream = partition_of(workload.last_key(), partitions);
        let records = &mut streams[stream];
        let position = Position::new(stream as u32, records.len() as u64 + 1);
        let record = if config.kafka_records {
            // What the Kafka source delivers for Debezium's message: a tombstone's value is null.
            let key = kafka_key(workload.last_key(), config.schema);
            RawRecord {
                key: Some(Arc::from(key.as_bytes())),
                value: (!workload.last_was_tombstone()).then(|| Arc::from(line.as_bytes())),
                topic: Some(topic),
                position,
                line: false,
            }
        } else {
            RawRecord::line(line.as_bytes(), position)
        };
        bytes += [&record.key, &record.value]
            .into_iter()
            .flatten()
            .map(|bytes| bytes.len() as u64)
            .sum::<u64>();
        records.push(record);
    }
    let record_count = streams.iter().map(Vec::len).sum::<usize>() as u64;
    // Kept here until the CPU time is read: freeing a million records is not part of the run.
    let streams: Vec<Arc<[RawRecord]>> = streams.into_iter().map(Arc::from).collect();
    let live_keys = workload.live_keys();
    // The generator's state stays allocated until the run is over: freed before, its memory
    // would be kept by the allocator and reused by the dataflow unseen, understating it.
    let rss_before = process::resident_bytes();
    let sampler = process::PeakSampler::start();
    let cpu_before = process::cpu_time();
    let warehouse = std::env::temp_dir().join(format!("tributary-bench-{}", std::process::id()));
    let summary = run(
        pipeline,
        RunOptions {
            source: SourceSpec::Memory(streams.clone()),
            workers: config.workers,
            epoch: config.epoch,
            until_idle: true,
            console: ConsoleOptions {
                format: ConsoleFormat::Table,
                mode: ConsoleMode::Update,
                max_rows: 20,
                writer: shared_writer(std::io::sink()),
            },
            iceberg: IcebergOptions {
                write: config.iceberg,
                commit_interval: config.commit,
                ..IcebergOptions::new(&warehouse)
            },
            declared_tables: declared_tables(&config),
            ..RunOptions::default()
        },
    );
    let cpu_after = process::cpu_time();
    drop(streams);
    let _ = std::fs::remove_dir_all(&warehouse);
    drop(workload);
    let summary = summary?;
    let iceberg = summary.sinks.get("iceberg").cloned().unwrap_or_default();
    let latencies = &summary.epoch_latencies;
    Ok(BenchReport {
        pipeline: pipeline.name().to_owned(),
        records: record_count,
        decoded: summary.events,
        dead_letters: summary.dead_letters.values().sum(),
        bytes,
        elapsed: summary.elapsed,
        latency_p50: percentile(latencies, 0.5),
        latency_p99: percentile(latencies, 0.99),
        epochs: summary.epochs.len(),
        rss_before,
        rss_peak: sampler.stop().max(rss_before),
        live_keys,
        iceberg_rows: iceberg.rows_written,
        iceberg_commits: iceberg.commits,
        iceberg_busy: iceberg.busy,
        commit_latency: CommitLatency::of(&iceberg.commit_latencies),
        cpu: (
            cpu_after.0.saturating_sub(cpu_before.0),
            cpu_after.1.saturating_sub(cpu_before.1),
        ),
        config,
    })
}

/// Resident-memory and CPU-time readings from `/proc/self` (zero where unavailable).
mod process {
    use std::time::Duration;

    /// The process's CPU time so far: (user, system), from `/proc/self/stat` (in the kernel's
    /// fixed 100 ticks per second).
    pub fn cpu_time() -> (Duration, Duration) {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // `utime` and `stime` are the 14th and 15th fields; the first after the name is the 3rd.
        let ticks = |field: usize| {
            fields
                .get(field - 3)
                .and_then(|ticks| ticks.parse::<u64>().ok())
                .map_or(Duration::ZERO, |ticks| Duration::from_millis(ticks * 10))
        };
        (ticks(14), ticks(15))
    }

    fn status_kib(field: &str) -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status.lines().find(|l| l.starts_with(field)).and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kib| kib.parse::<u64>().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Current resident set size.
    pub fn resident_bytes() -> u64 {
        status_kib("VmRSS:") * 1024
    }

    /// The peak resident set size over a span of the run. Where the kernel lets the peak be
    /// reset (`/proc/self/clear_refs`), it reads the peak the kernel kept (`VmHWM`): no thread
    /// competes with the workers. Elsewhere a thread samples the resident size every 5 ms.
    pub struct PeakSampler {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<u64>>,
    }

    impl PeakSampler {
        /// Starts measuring.
        pub fn start() -> Self {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            if std::fs::write("/proc/self/clear_refs", "5").is_ok() {
                return PeakSampler { stop, thread: None };
            }
            let flag = std::sync::Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                let mut peak = 0;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(resident_bytes());
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                peak.max(resident_bytes())
            });
            PeakSampler {
                stop,
                thread: Some(thread),
            }
        }

        /// Stops measuring and returns the peak.
        pub fn stop(mut self) -> u64 {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            match self.thread.take() {
                Some(thread) => thread.join().unwrap_or(0),
                None => status_kib("VmHWM:") * 1024,
            }
        }
    }
}
