//! Helpers for the end-to-end tests: running the `tributary` binary, folding its JSONL console
//! output into tables, and an independent oracle for the orders workload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use serde_json::Value as Json;
use tributary_engine::sources::generator::GeneratorConfig;

pub mod iceberg;
pub mod iceberg_rust;
pub mod kafka;
pub mod kafka_workload;
pub mod metrics;
pub mod postgres;
pub mod rest;
pub mod s3;
pub mod transactions;

/// A console writer that keeps what it is given, for in-process runs.
#[derive(Clone, Default)]
pub struct Capture(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Path of the `tributary` binary (cargo builds it for this test target).
pub fn tributary_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tributary"))
}

/// A file or folder under the repository's `tests/` (golden files, Python readers).
pub fn tests_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests")
        .join(relative)
}

/// The first `events` lines of the orders workload (`keys` orders, `seed`), as JSONL lines.
pub fn orders_lines(events: u64, keys: u64, seed: u64) -> Vec<String> {
    let mut workload = tributary_engine::sources::generator::OrdersWorkload::new(GeneratorConfig {
        events: Some(events),
        keys,
        seed,
        ..GeneratorConfig::default()
    });
    let mut lines = Vec::new();
    let mut line = String::new();
    while workload.next_line(&mut line) {
        lines.push(line.clone());
    }
    lines
}

/// Writes `lines` to `path`, one per line.
pub fn write_lines(path: &std::path::Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("write the workload file");
}

/// `tributary run orders-replica --source SOURCE --warehouse WAREHOUSE` with small epochs and
/// commit intervals (so kills land between commits), `--until-idle`, JSONL console output
/// discarded and only warnings logged; tests add their own options.
pub fn replica_run(source: &str, warehouse: impl AsRef<std::ffi::OsStr>) -> Command {
    pipeline_run("orders-replica", source, warehouse, 100)
}

/// [`replica_run`] for any pipeline and commit interval.
pub fn pipeline_run(
    pipeline: &str,
    source: &str,
    warehouse: impl AsRef<std::ffi::OsStr>,
    commit_ms: u64,
) -> Command {
    let mut command = Command::new(tributary_bin());
    command
        .args(["run", pipeline, "--source", source, "--warehouse"])
        .arg(warehouse)
        .args(["--until-idle", "--epoch-ms", "20", "--commit-ms"])
        .arg(commit_ms.to_string())
        .args(["--console-format", "jsonl"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    command
}

/// Kills `command()` twice mid-run (after 0.25 s and 0.6 s; at least one kill must land while
/// it runs: a debug build takes about half a second for 60 k events on a fast 2-core VM), then
/// runs it to the end and asserts that final run succeeded.
pub fn kill_twice_then_finish(command: impl Fn() -> Command) {
    let killed_mid_run = kill_after(&command, &[250, 600]);
    assert!(
        killed_mid_run > 0,
        "the runs finished before they could be killed"
    );
    let output = command().output().expect("run tributary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `command()` once per delay and kills it (`kill -9`) after that many milliseconds;
/// returns how many runs were still going when killed.
pub fn kill_after(command: impl Fn() -> Command, delays_ms: &[u64]) -> usize {
    let mut killed_mid_run = 0;
    for delay in delays_ms {
        let mut child = command()
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn tributary");
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(*delay);
        while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
    }
    killed_mid_run
}

/// Runs `tributary ARGS…`, quiet logs, and returns its output.
pub fn run_tributary(args: &[&str]) -> Output {
    run_tributary_logging(args, "warn")
}

/// Runs `tributary ARGS…` with `RUST_LOG=filter` and returns its output.
pub fn run_tributary_logging(args: &[&str], filter: &str) -> Output {
    Command::new(tributary_bin())
        .args(args)
        .env("RUST_LOG", filter)
        .output()
        .expect("spawn tributary")
}

/// Runs `tributary ARGS…`, asserts it succeeded (showing its stderr if not), returns stdout.
pub fn run_tributary_ok(args: &[&str]) -> String {
    let output = run_tributary(args);
    assert!(
        output.status.success(),
        "tributary {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One parsed console JSONL line.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleLine {
    /// Batch (epoch).
    pub batch: u64,
    /// Output name.
    pub output: String,
    /// +1 or -1.
    pub diff: i64,
    /// The row as JSON text with keys in schema order.
    pub row: String,
}

/// Parses `--console-format jsonl` output, checking every line's shape.
pub fn parse_console(stdout: &[u8]) -> Vec<ConsoleLine> {
    let text = std::str::from_utf8(stdout).expect("utf-8 stdout");
    text.lines()
        .map(|line| {
            let json: Json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let diff = json["diff"].as_i64().expect("diff");
            assert!(diff == 1 || diff == -1, "diff must be ±1: {line}");
            assert!(json["row"].is_object(), "row must be an object: {line}");
            ConsoleLine {
                batch: json["batch"].as_u64().expect("batch"),
                output: json["output"].as_str().expect("output").to_owned(),
                diff,
                row: json["row"].to_string(),
            }
        })
        .collect()
}

/// The result of `output` after all batches `≤ through`: row text → multiplicity.
pub fn table_at(lines: &[ConsoleLine], output: &str, through: u64) -> BTreeMap<String, i64> {
    let mut table = BTreeMap::new();
    for line in lines
        .iter()
        .filter(|l| l.output == output && l.batch <= through)
    {
        *table.entry(line.row.clone()).or_insert(0) += line.diff;
    }
    table.retain(|_, n| *n != 0);
    table
}

/// A set of JSON rows as a table (each once).
pub fn table_of(rows: &[Json]) -> BTreeMap<String, i64> {
    rows.iter().map(|r| (r.to_string(), 1)).collect()
}

/// Replays orders-workload lines independently of the engine: `order_id → (status, quantity,
/// price in cents)`.
#[derive(Debug, Default)]
pub struct OrdersOracle {
    /// Current rows.
    pub rows: BTreeMap<i64, (String, i64, i128)>,
}

impl OrdersOracle {
    /// Applies one JSONL line of the orders workload.
    pub fn apply(&mut self, line: &str) {
        let json: Json = serde_json::from_str(line).expect("workload line is JSON");
        let payload = if json.get("payload").is_some() {
            &json["payload"]
        } else {
            &json
        };
        let Some(op) = payload["op"].as_str() else {
            return;
        }; // tombstone wrapper
        match op {
            "c" | "u" | "r" => {
                let after = &payload["after"];
                let id = after["order_id"].as_i64().expect("order_id");
                let status = after["status"].as_str().expect("status").to_owned();
                let quantity = after["quantity"].as_i64().expect("quantity");
                self.rows
                    .insert(id, (status, quantity, price_cents(&after["price"])));
            }
            "d" => {
                self.rows.remove(
                    &payload["before"]["order_id"]
                        .as_i64()
                        .expect("before.order_id"),
                );
            }
            other => panic!("unexpected op {other}"),
        }
    }

    /// `status, order_count, total_revenue` recomputed from scratch.
    pub fn status_table(&self) -> BTreeMap<String, i64> {
        let mut groups: BTreeMap<&str, (i64, i128)> = BTreeMap::new();
        for (status, quantity, cents) in self.rows.values() {
            let group = groups.entry(status).or_default();
            group.0 += 1;
            group.1 += i128::from(*quantity) * cents;
        }
        let rows: Vec<Json> = groups
            .into_iter()
            .map(|(status, (count, cents))| {
                let revenue: Json = serde_json::from_str(&format!("{}.{:02}", cents / 100, cents % 100))
                    .expect("revenue");
                serde_json::json!({"status": status, "order_count": count, "total_revenue": revenue})
            })
            .collect();
        table_of(&rows)
    }
}

/// Price in cents from any decimal encoding the generator uses.
pub(crate) fn price_cents(price: &Json) -> i128 {
    match price {
        Json::String(s) if s.contains('.') => {
            let (int, frac) = s.split_once('.').expect("decimal");
            int.parse::<i128>().expect("int") * 100 + frac.parse::<i128>().expect("frac")
        }
        Json::String(s) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64");
            bytes
                .iter()
                .fold(if bytes[0] & 0x80 != 0 { -1i128 } else { 0 }, |acc, b| {
                    (acc << 8) | i128::from(*b)
                })
        }
        Json::Number(n) => (n.as_f64().expect("number") * 100.0).round() as i128,
        other => panic!("price {other}"),
    }
}
