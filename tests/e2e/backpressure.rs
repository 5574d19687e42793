//! A source much faster than its sink: the source pauses instead of buffering, so memory stays
//! bounded well below the size of the input. (RSS is per process, so the test runs itself
//! again, alone, in a process of its own.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tributary_engine::sources::SourceSpec;
use tributary_engine::{
    run, shared_writer, ConsoleFormat, ConsoleMode, ConsoleOptions, IcebergOptions, RunOptions,
};

/// A console that takes 20 ms per batch.
struct SlowSink;

impl Write for SlowSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(20));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Set in the process that runs the measurement.
const ALONE: &str = "TRIBUTARY_TEST_ALONE";

#[test]
fn slow_sink_keeps_memory_bounded() {
    if std::env::var_os(ALONE).is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "backpressure::slow_sink_keeps_memory_bounded"])
            .args(["--nocapture", "--test-threads=1"])
            .env(ALONE, "1")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the measurement in its own process failed"
        );
        return;
    }
    const EVENTS: u64 = 600_000;
    let baseline = resident_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let warehouse = tempfile::tempdir().unwrap();
    let summary = run(
        &tributary::find("orders-replica").unwrap(),
        RunOptions {
            source: SourceSpec::Generator(Some(EVENTS)),
            workers: 2,
            epoch: Duration::from_millis(1),
            until_idle: true,
            console: ConsoleOptions {
                format: ConsoleFormat::Jsonl,
                mode: ConsoleMode::Update,
                max_rows: 20,
                writer: shared_writer(SlowSink),
            },
            iceberg: IcebergOptions::new(warehouse.path()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(summary.events, EVENTS);
    assert!(
        summary.epochs.len() > 20,
        "many slow epochs: {}",
        summary.epochs.len()
    );
    // The input is ~520 bytes a record, over 300 MB in all. With the sink on worker 1 and the
    // reader on worker 0, an unpaced source buffers ~230 MB here; paced, it stays near 25 MB.
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(growth < 100 << 20, "memory grew by {} MB", growth >> 20);
}
