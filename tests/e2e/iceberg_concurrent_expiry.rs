//! `tributary maintain expire` while `orders-replica` keeps committing to the same table: the
//! two race for the catalog's compare-and-swap again and again, and the loser re-reads the
//! table and tries again instead of failing — the pipeline keeps running, every expiry
//! succeeds, and the table still equals the oracle at its recorded position (pyiceberg).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::iceberg::{check_snapshots, pyiceberg_available, read_table};
use crate::support::{orders_lines, run_tributary_ok, tributary_bin};

const TABLE: &str = "demo.orders_realtime_replica";

#[test]
fn expiry_races_with_commits_and_both_go_on() {
    if !pyiceberg_available() {
        return;
    }
    let lines = orders_lines(40_000, 2_000, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.jsonl");
    let warehouse = dir.path().join("warehouse");
    let warehouse = warehouse.to_str().unwrap();
    let source = format!("file:{}", path.display());
    let mut file = std::fs::File::create(&path).unwrap();
    // Start with a table to expire from.
    for line in &lines[..2000] {
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
    let pipeline_log = dir.path().join("pipeline.log");
    let mut pipeline = Command::new(tributary_bin())
        .args([
            "run",
            "orders-replica",
            "--source",
            &source,
            "--warehouse",
            warehouse,
        ])
        .args([
            "--epoch-ms",
            "5",
            "--commit-ms",
            "10",
            "--console-format",
            "jsonl",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&pipeline_log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&pipeline_log)
        .unwrap()
        .contains("committed iceberg snapshot")
    {
        assert!(Instant::now() < deadline, "no first commit");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Append the rest in small pieces the whole time, so the pipeline is committing again and
    // again (a burst would be committed at once and leave the expiries nothing to race), while
    // expiring in a tight loop.
    let rest: Vec<String> = lines[2000..].to_vec();
    let appender = std::thread::spawn(move || {
        for piece in rest.chunks(40) {
            for line in piece {
                writeln!(file, "{line}").unwrap();
            }
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(4));
        }
    });
    let (mut expiries, mut expiry_retries) = (0, 0);
    while !appender.is_finished() {
        let output = Command::new(tributary_bin())
            .args([
                "maintain",
                "expire",
                TABLE,
                "--older-than",
                "0s",
                "--warehouse",
                warehouse,
            ])
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "expire failed: {stderr}");
        expiries += 1;
        expiry_retries += stderr.matches("a concurrent commit won").count();
        assert!(
            pipeline.try_wait().unwrap().is_none(),
            "the pipeline died: {}",
            std::fs::read_to_string(&pipeline_log).unwrap()
        );
    }
    appender.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-TERM", &pipeline.id().to_string()])
        .status();
    let status = pipeline.wait().unwrap();
    let log = std::fs::read_to_string(&pipeline_log).unwrap();
    assert!(status.success(), "the pipeline failed: {log}");
    let commit_retries = log.matches("re-applying the snapshot on top of it").count();
    eprintln!(
        "{expiries} expiries ({expiry_retries} retried), {commit_retries} commits re-applied"
    );
    assert!(
        expiry_retries + commit_retries > 0,
        "no race happened, so nothing was tested"
    );

    // Whatever was read, then the rest: the table equals the oracle at its position.
    run_tributary_ok(&[
        "run",
        "orders-replica",
        "--source",
        &source,
        "--warehouse",
        warehouse,
        "--until-idle",
        "--console-format",
        "jsonl",
    ]);
    let (snapshots, _) = read_table(std::path::Path::new(warehouse), TABLE, false);
    let last = check_snapshots(&snapshots, &source, &lines);
    assert_eq!(last, lines.len() as u64);
}
