//! Iceberg tables that stay healthy: a long streaming run (thousands of commits) keeps its
//! metadata, manifests and live files bounded while it expires, merges and compacts, and still
//! equals the oracle; every manifest passes a spec check by an independent reader (pyiceberg
//! and pyarrow: metrics recomputed from the Parquet files, DELETED entries for what compaction
//! replaced, `referenced_data_file`); another engine's deletes and appends between two runs
//! stay; a tagged snapshot and its files outlive expiry.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::support::iceberg::{check_snapshots, pyiceberg_available, read_table, ReplicaOracle};
use crate::support::metrics::{free_port, sample, scrape};
use crate::support::{
    orders_lines, pipeline_run, replica_run, run_tributary_ok, tests_path, tributary_bin,
};

const TABLE: &str = "demo.orders_realtime_replica";

/// Runs the health helper (`tests/py/iceberg_health.py`) and parses its JSON answer.
fn health(warehouse: &Path, args: &[&str]) -> Json {
    let output = Command::new("python3")
        .arg(tests_path("py/iceberg_health.py"))
        .arg(warehouse)
        .arg(TABLE)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "iceberg_health.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `tributary_iceberg_commits_total` of a running pipeline.
fn commits(port: u16) -> Option<u64> {
    sample(&scrape(port)?, "tributary_iceberg_commits_total").map(|v| v as u64)
}

/// A workload file of which the first half is written, with where its table goes.
struct HalfWritten {
    /// Removed when the test ends.
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    source: String,
    warehouse: std::path::PathBuf,
    lines: Vec<String>,
    half: usize,
}

impl HalfWritten {
    fn new(keys: u64, seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.jsonl");
        let lines = orders_lines(20_000, keys, seed);
        let half = lines.len() / 2;
        std::fs::write(&path, lines[..half].join("\n") + "\n").unwrap();
        HalfWritten {
            source: format!("file:{}", path.display()),
            warehouse: dir.path().join("warehouse"),
            _dir: dir,
            path,
            lines,
            half,
        }
    }

    /// Writes the rest of the lines.
    fn write_all(&self) {
        std::fs::write(&self.path, self.lines.join("\n") + "\n").unwrap();
    }
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

#[test]
fn a_long_run_keeps_its_table_bounded_and_equal_to_the_oracle() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.jsonl");
    std::fs::write(&path, "").unwrap();
    let source = format!("file:{}", path.display());
    let warehouse = dir.path().join("warehouse");
    // A growing key space: most events are new orders.
    let lines = orders_lines(100_000, 10_000_000, 17);
    let port = free_port();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(tributary_bin())
        .args(["run", "orders-replica", "--source", &source, "--warehouse"])
        .arg(&warehouse)
        .args(["--epoch-ms", "2", "--commit-ms", "2", "--console-rows", "0"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args([
            "--iceberg-property",
            "history.expire.max-snapshot-age-ms=500",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let mut written = 0;
    let mut midway = None;
    let started = Instant::now();
    let target = 3_000;
    loop {
        let done = commits(port).unwrap_or(0);
        if done >= target {
            break;
        }
        if midway.is_none() && done >= target / 3 {
            midway = Some(health(&warehouse, &["stats"]));
        }
        assert!(
            started.elapsed() < Duration::from_secs(900) && written < lines.len(),
            "{done} commits after {written} lines in {:?}",
            started.elapsed()
        );
        let next = (written + 4).min(lines.len());
        file.write_all((lines[written..next].join("\n") + "\n").as_bytes())
            .unwrap();
        file.flush().unwrap();
        written = next;
        std::thread::sleep(Duration::from_millis(3));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "the run stops cleanly");

    let end = health(&warehouse, &["stats"]);
    let midway = midway.unwrap();
    eprintln!("after ~{} commits: {midway}; at the end: {end}", target / 3);
    let figure = |stats: &Json, key: &str| stats[key].as_u64().unwrap();
    assert_eq!(end["snapshots_in_sequence_order"], true, "{end}");
    assert!(
        figure(&end, "metadata_bytes") < 200_000,
        "the current metadata file stays small: {end}"
    );
    assert!(
        figure(&end, "metadata_files") <= 101,
        "old metadata files are deleted (write.metadata.previous-versions-max = 100): {end}"
    );
    assert!(
        figure(&end, "manifests") <= 2 * 102,
        "data and delete manifests are merged (commit.manifest.min-count-to-merge = 100 each): {end}"
    );
    assert!(
        figure(&end, "live_data_files") <= 60 && figure(&end, "live_delete_files") <= 200,
        "small files are compacted: {end}"
    );
    assert!(
        figure(&end, "data_files_on_disk")
            <= 4 * (figure(&end, "live_data_files") + figure(&end, "live_delete_files")) + 100,
        "files of expired snapshots are deleted: {end}"
    );

    // What the table holds is the oracle at the position it records.
    let (snapshots, _) = read_table(&warehouse, TABLE, true);
    let lines_written = &lines[..written];
    let through = check_snapshots(&snapshots, &source, lines_written);
    assert!(through > 0);
    health(&warehouse, &["check"]);

    // Commit latency at the start and at the end, for the record (no timing assertion).
    let latencies: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("committed iceberg snapshot"))
        .filter_map(|l| {
            l.split("latency_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let window = (latencies.len() / 5).max(1);
    eprintln!(
        "{} commits; median commit latency: first {window} {} ms, last {window} {} ms",
        latencies.len(),
        median(&latencies[..window]),
        median(&latencies[latencies.len() - window..])
    );
}

#[test]
fn another_engines_deletes_and_appends_between_runs_stay() {
    if !pyiceberg_available() {
        return;
    }
    let run = HalfWritten::new(3_000, 23);
    let (source, warehouse, lines, half) = (&run.source, &run.warehouse, &run.lines, run.half);
    assert!(replica_run(source, warehouse).status().unwrap().success());

    // Another engine deletes three orders (two the source never touches again, one it
    // updates or deletes later), appends one the source never had, and partitions the table
    // from then on.
    let touched: std::collections::BTreeSet<i64> =
        lines[half..].iter().filter_map(|l| order_id(l)).collect();
    let (current, _) = read_table(warehouse, TABLE, true);
    let ids = current[0]
        .rows
        .iter()
        .map(|r| r["order_id"].as_i64().unwrap());
    let mut deleted: Vec<i64> = ids
        .clone()
        .filter(|id| !touched.contains(id))
        .take(2)
        .collect();
    deleted.extend(ids.filter(|id| touched.contains(id)).take(1));
    assert_eq!(deleted.len(), 3);
    let foreign = json!({
        "order_id": 999_999_999, "customer_id": 7, "status": "imported", "quantity": 1,
        "price": "1.00", "created_at": 1_700_000_000_000_000i64,
        "cdc_operation": "r", "cdc_timestamp": 1_700_000_000_000_000i64
    });
    let ids: Vec<String> = deleted.iter().map(i64::to_string).collect();
    health(
        warehouse,
        &["other-writer", &ids.join(","), &foreign.to_string()],
    );

    run.write_all();
    let output = replica_run(source, warehouse)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "resumes after another engine's commits: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Both writers' changes: the source's, over the rows the other engine left.
    let mut oracle = ReplicaOracle::default();
    lines[..half].iter().for_each(|l| oracle.apply(l));
    let mut expected: Vec<Json> = oracle.rows();
    expected.retain(|r| !deleted.contains(&r["order_id"].as_i64().unwrap()));
    let mut rest = ReplicaOracle::default();
    // Orders the second half touches are as the source says at the end.
    lines.iter().for_each(|l| rest.apply(l));
    expected.retain(|r| !touched.contains(&r["order_id"].as_i64().unwrap()));
    expected.extend(
        rest.rows()
            .into_iter()
            .filter(|r| touched.contains(&r["order_id"].as_i64().unwrap())),
    );
    expected.push(foreign);
    expected.sort_by_key(|r| r.to_string());
    let (current, _) = read_table(warehouse, TABLE, true);
    assert_eq!(current[0].rows.len(), expected.len());
    assert!(
        current[0].rows == expected,
        "the table is what both writers' changes say"
    );
    health(warehouse, &["check"]);
}

/// The order a workload line changes.
fn order_id(line: &str) -> Option<i64> {
    let json: Json = serde_json::from_str(line).ok()?;
    let payload = json.get("payload").unwrap_or(&json);
    match payload["op"].as_str()? {
        "d" => payload["before"]["order_id"].as_i64(),
        _ => payload["after"]["order_id"].as_i64(),
    }
}

#[test]
fn a_tagged_snapshot_and_its_files_outlive_expiry() {
    if !pyiceberg_available() {
        return;
    }
    let run = HalfWritten::new(2_000, 29);
    let (source, warehouse, lines) = (&run.source, &run.warehouse, &run.lines);
    let many_commits = || pipeline_run("orders-replica", source, warehouse, 5);
    assert!(many_commits().status().unwrap().success());
    let (before, _) = read_table(warehouse, TABLE, false);
    assert!(before.len() > 3, "{} snapshots", before.len());

    let tagged = health(warehouse, &["tag", "audit", "1"]);
    let tagged_id = tagged["snapshot_id"].as_i64().unwrap();
    let files: Vec<String> = serde_json::from_value(tagged["files"].clone()).unwrap();

    // The rest arrives with expiry of everything but the newest snapshot, while running and
    // by hand afterwards.
    run.write_all();
    let status = many_commits()
        .args(["--iceberg-property", "history.expire.max-snapshot-age-ms=0"])
        .status()
        .unwrap();
    assert!(status.success());
    let warehouse_text = warehouse.to_str().unwrap();
    let expired = run_tributary_ok(&[
        "maintain",
        "--warehouse",
        warehouse_text,
        "expire",
        TABLE,
        "--older-than",
        "0s",
    ]);
    assert!(expired.starts_with("expired "), "{expired}");

    let (after, _) = read_table(warehouse, TABLE, false);
    let ids: Vec<i64> = after.iter().map(|s| s.id).collect();
    assert!(
        ids.contains(&tagged_id),
        "the tagged snapshot is kept: {ids:?}"
    );
    assert_eq!(
        after.len(),
        2,
        "only the tagged and the current snapshot are left: {ids:?}"
    );
    for file in &files {
        assert!(
            Path::new(file).exists(),
            "{file} of the tagged snapshot is gone"
        );
    }
    // The tagged snapshot still reads as it did, and the table as the oracle says.
    let tagged_read = after.iter().find(|s| s.id == tagged_id).unwrap();
    let tagged_before = before.iter().find(|s| s.id == tagged_id).unwrap();
    assert!(tagged_read.rows == tagged_before.rows);
    let current = after
        .iter()
        .filter(|s| s.id != tagged_id)
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(check_snapshots(&current, source, lines), lines.len() as u64);
    health(warehouse, &["check"]);

    // Files nothing references (a killed commit's): old ones go, young ones stay.
    let data = warehouse.join("demo.db/orders_realtime_replica/data");
    let (old, young) = (
        data.join("killed-commit-0.parquet"),
        data.join("in-flight-0.parquet"),
    );
    for orphan in [&old, &young] {
        std::fs::write(orphan, b"PAR1").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let removed = run_tributary_ok(&[
        "maintain",
        "--warehouse",
        warehouse_text,
        "remove-orphans",
        TABLE,
        "--older-than",
        "1h",
    ]);
    assert!(removed.starts_with("deleted 1 orphan files"), "{removed}");
    assert!(!old.exists() && young.exists());
    let (reread, _) = read_table(warehouse, TABLE, false);
    assert_eq!(reread.len(), 2, "both snapshots still read");
    health(warehouse, &["check"]);
}
