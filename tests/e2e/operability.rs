//! Operating a running pipeline: Prometheus metrics scraped over HTTP while it runs, and a
//! SIGTERM that finishes the open epoch so the output is exactly the result of the records read.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::metrics::{free_port, sample, scrape};
use crate::support::{parse_console, table_at, table_of, tributary_bin};
use tributary_engine::sources::generator::{GeneratorConfig, OrdersWorkload};

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Collects a child's stdout lines on a thread.
fn collect_stdout(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1 << 16];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    });
    out
}

#[test]
fn metrics_are_served_over_http_during_a_run() {
    let port = free_port();
    let mut child = Command::new(tributary_bin())
        .args([
            "run",
            "op-counts",
            "--source",
            "generator",
            "--epoch-ms",
            "50",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first = None;
    while Instant::now() < deadline {
        if let Some(text) = scrape(port) {
            if sample(&text, "tributary_epochs_done_total").unwrap_or(0.0) >= 2.0 {
                first = Some(text);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = first.expect("metrics endpoint answered with progress");
    for name in [
        "tributary_records_in_total",
        "tributary_events_total{pipeline=\"op-counts\",table=\"dbserver1.public.orders\"}",
        "tributary_tombstones_total",
        "tributary_epochs_closed_total",
        "tributary_frontier_lag_seconds",
        "tributary_output_rows_total{pipeline=\"op-counts\",output=\"op_counts\"}",
        "tributary_epoch_commit_latency_seconds_bucket",
        "tributary_epoch_commit_latency_seconds_count",
    ] {
        assert!(first.contains(name), "missing {name} in:\n{first}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let second = scrape(port).expect("second scrape");
    let records = |text: &str| sample(text, "tributary_records_in_total").unwrap();
    assert!(
        records(&second) > records(&first),
        "counters advance while running"
    );

    terminate(&child);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{stderr}");
}

#[test]
fn sigterm_finishes_the_open_epoch_and_output_matches_the_records_read() {
    let mut child = Command::new(tributary_bin())
        .args([
            "run",
            "op-counts",
            "--source",
            "generator",
            "--epoch-ms",
            "20",
            "--console-format",
            "jsonl",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect_stdout(&mut child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while stdout
        .lock()
        .unwrap()
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        < 50
    {
        assert!(Instant::now() < deadline, "no output from the pipeline");
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate(&child);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}\n{stderr}");
    // Give the reader thread a moment to drain the pipe after exit.
    std::thread::sleep(Duration::from_millis(200));

    let finished = stderr
        .lines()
        .find(|l| l.contains("finished"))
        .expect("a finished line");
    let records: usize = finished
        .split_whitespace()
        .find_map(|field| field.strip_prefix("records="))
        .and_then(|n| n.parse().ok())
        .expect("records=N in the finished line");
    assert!(records > 0);

    // Recompute op counts over exactly the first `records` records of the same workload.
    let mut workload = OrdersWorkload::new(GeneratorConfig::default());
    let mut counts: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    let mut line = String::new();
    for _ in 0..records {
        assert!(workload.next_line(&mut line));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let Some(op) = json["op"].as_str() else {
            continue;
        };
        let entry = counts.entry(op.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += json["after"]["quantity"].as_i64().unwrap_or(0);
    }
    let expected: Vec<serde_json::Value> = counts
        .into_iter()
        .map(|(op, (n, q))| {
            let quantity = if op == "d" {
                serde_json::Value::Null
            } else {
                q.into()
            };
            serde_json::json!({"op": op, "event_count": n, "total_quantity": quantity})
        })
        .collect();
    let lines = parse_console(&stdout.lock().unwrap());
    assert_eq!(table_at(&lines, "op_counts", u64::MAX), table_of(&expected));
}
