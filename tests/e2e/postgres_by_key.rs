//! The replica that deletes by key (`replicate --iceberg-deletes equality`) over a real
//! PostgreSQL: it keeps no rows in memory and survives kills mid-backfill; and memory that does
//! not grow with the backfilled table, for it and for `op-counts`.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value as Json;

use crate::postgres_backfill::{kill_after_commits, log_of, replicate, shop, Writer};
use crate::support::postgres::Postgres;
use crate::support::tributary_bin;

fn items_transaction(n: u64) -> String {
    format!(
        "BEGIN;
UPDATE items SET v = v + 1, note = 'updated {n}' WHERE id IN ({a}, {b}, {c});
DELETE FROM items WHERE id = {d};
INSERT INTO items VALUES (100000 + {n}, {n}, 'new {n}');
UPDATE items SET id = -id WHERE id = {e} AND NOT EXISTS (SELECT 1 FROM items WHERE id = -{e});
COMMIT;
",
        a = (n * 7) % 20_000,
        b = (n * 7919) % 20_000,
        c = 100_000 + n / 2,
        d = (n * 104_729) % 20_000,
        e = (n * 31) % 20_000,
    )
}

/// `--iceberg-deletes equality`: `replicate` keeps no rows in memory, each change deletes its
/// key's row by an equality delete; killed twice mid-backfill while a writer runs, the table
/// read back by iceberg-rust's scan (pyiceberg 0.12 cannot read equality deletes) equals
/// `SELECT *`.
#[test]
fn equality_deletes_replicate_without_state_across_kills() {
    let Some(pg) = shop(
        "postgres_backfill_by_key",
        "CREATE TABLE items (id int PRIMARY KEY, v int, note text);
         INSERT INTO items SELECT i, i, 'item ' || i FROM generate_series(0, 19999) i;
         CREATE PUBLICATION tributary FOR TABLE items;",
        false,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = format!("{}?chunk_rows=500", pg.url("postgres", "shop"));
    let run = |name: &str, until_idle: bool| {
        let mut command = replicate(&source, &warehouse, &dir.path().join(name), until_idle);
        command.args(["--iceberg-deletes", "equality", "--workers", "2"]);
        command
    };
    let writer = Writer::start(&pg, "shop", items_transaction);
    for round in 0..2 {
        let log = format!("run-{round}.log");
        kill_after_commits(run(&log, false), &dir.path().join(&log), 3);
    }
    writer.stop();
    let status = run("final.log", true).status().unwrap();
    assert!(
        status.success(),
        "{}",
        log_of(&dir.path().join("final.log"))
    );
    let log = log_of(&dir.path().join("final.log"));
    let resumed = log
        .lines()
        .find(|l| l.contains("resuming from the table's last snapshot"))
        .unwrap_or_else(|| panic!("the final run resumes: {log}"));
    assert!(
        resumed.contains("rows=0"),
        "nothing is read back into memory: {resumed}"
    );

    let snapshots =
        crate::support::iceberg_rust::read_table_iceberg_rust(&warehouse, "public.items");
    let current = snapshots.last().unwrap();
    assert_eq!(current.summary["tributary.backfill"], "complete");
    let mut rows: Vec<Json> = current
        .rows
        .iter()
        .map(|row| serde_json::json!({"id": row["id"], "v": row["v"], "note": row["note"]}))
        .collect();
    rows.sort_by_key(|r| r.to_string());
    let mut want: Vec<Json> = pg
        .psql("shop", "SELECT row_to_json(t) FROM items t")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    want.sort_by_key(|r| r.to_string());
    assert_eq!(rows.len(), want.len());
    assert_eq!(rows, want, "the table deleted by key equals its source");
    assert!(
        current.summary["total-equality-deletes"]
            .parse::<u64>()
            .unwrap()
            > 0,
        "{:?}",
        current.summary
    );
}

/// Peak RSS (VmHWM) of `command`'s run, sampled until it exits; panics if it fails.
fn peak_rss_mb(mut command: Command) -> f64 {
    let mut child = command.spawn().unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            peak_kib = peak_kib.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the measured run failed");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak_kib as f64 / 1024.0
}

/// Memory that does not grow with the table where no rows need keeping: `op-counts` and the
/// replica that deletes by key over a 2 M-row backfill peak within 1.3× of the same over
/// 0.5 M rows.
#[test]
fn memory_stays_flat_as_the_backfilled_table_grows() {
    let Some(pg) = Postgres::start_or_skip("postgres_backfill_memory") else {
        return;
    };
    let mut peaks = Vec::new();
    for (db, rows) in [("small", 500_000), ("large", 2_000_000)] {
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        pg.psql(
            db,
            &format!(
                "CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id bigint, \
                   status text, quantity int, price numeric(10,2), created_at timestamp);
                 INSERT INTO orders SELECT i, i % 9973, \
                   (ARRAY['pending','paid','shipped','delivered'])[1 + i % 4], 1 + i % 7, \
                   (i % 10000) / 100.0, TIMESTAMP '2024-01-01' + i * INTERVAL '1 second' \
                   FROM generate_series(1, {rows}) i;
                 CREATE PUBLICATION tributary FOR TABLE orders;"
            ),
        );
        let dir = tempfile::tempdir().unwrap();
        let source = pg.url("postgres", db);
        let mut counts = Command::new(tributary_bin());
        counts
            .args(["run", "op-counts", "--source", &source, "--until-idle"])
            .args(["--console-format", "jsonl"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let op_counts = peak_rss_mb(counts);
        let mut by_key = replicate(
            &source,
            &dir.path().join("w"),
            &dir.path().join("log"),
            true,
        );
        by_key.args(["--iceberg-deletes", "equality"]);
        let replica = peak_rss_mb(by_key);
        peaks.push((rows, op_counts, replica));
    }
    eprintln!("postgres_backfill_memory (rows, op-counts MB, replica by key MB): {peaks:?}");
    let (small, large) = (peaks[0], peaks[1]);
    assert!(
        large.1 <= 1.3 * small.1,
        "op-counts: {:.0} MB over 2 M rows, {:.0} MB over 0.5 M",
        large.1,
        small.1
    );
    assert!(
        large.2 <= 1.3 * small.2,
        "replica by key: {:.0} MB over 2 M rows, {:.0} MB over 0.5 M",
        large.2,
        small.2
    );
}
