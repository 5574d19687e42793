//! The PostgreSQL backfill on a real server: a table of two million rows is read in chunks
//! while a writer updates, deletes, inserts and moves keys across its whole key range, and the
//! run is killed (`kill -9`) again and again mid-backfill; every restart goes on after the
//! chunk its sinks last committed, and the final Iceberg table equals `SELECT *` (pyiceberg).
//! A server restart mid-backfill is ridden out. A table added to the publication mid-run is
//! backfilled while the first keeps streaming; an update that leaves a TOASTed value unchanged
//! keeps the real value. (The replica that deletes by key, and memory as the table grows, are
//! in `postgres_by_key.rs`.)

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::support::iceberg::{current_rows, pyiceberg_available, tables_json};
use crate::support::postgres::Postgres;
use crate::support::{tests_path, tributary_bin};

const STREAM: &str = "postgres/tributary_replicate";

/// A server with database `shop` made by `sql`, or `None` (the test is skipped) without
/// PostgreSQL or, if `pyiceberg`, without pyiceberg.
pub(crate) fn shop(test: &str, sql: &str, pyiceberg: bool) -> Option<Postgres> {
    let pg = Postgres::start_or_skip(test)?;
    if pyiceberg && !pyiceberg_available() {
        return None;
    }
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", sql);
    Some(pg)
}

/// `tributary run replicate` over `source` into `warehouse`, following the slot unless
/// `until_idle`, logging to `log`.
pub(crate) fn replicate(source: &str, warehouse: &Path, log: &Path, until_idle: bool) -> Command {
    let mut command = Command::new(tributary_bin());
    command
        .args(["run", "replicate", "--source", source, "--warehouse"])
        .arg(warehouse)
        .args(["--epoch-ms", "50", "--commit-ms", "200"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if until_idle {
        command.arg("--until-idle");
    }
    command
}

pub(crate) fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `log` says `what` at least `count` times (the run must keep going).
pub(crate) fn wait_for(child: &mut Child, log: &Path, what: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while log_of(log).matches(what).count() < count {
        assert!(
            child.try_wait().unwrap().is_none(),
            "tributary exited early: {}",
            log_of(log)
        );
        assert!(Instant::now() < deadline, "no `{what}` within 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` (logging to `log`) until it has committed `commits` snapshots, then kills it
/// (`kill -9`); returns what it logged.
pub(crate) fn kill_after_commits(mut command: Command, log: &Path, commits: usize) -> String {
    let mut child = command.spawn().unwrap();
    wait_for(&mut child, log, "committed iceberg snapshot", commits);
    child.kill().unwrap();
    child.wait().unwrap();
    log_of(log)
}

/// Database `shop` with `big` of `rows` rows, published.
fn big_table(rows: u64) -> String {
    format!(
        "CREATE TABLE big (id bigint PRIMARY KEY, grp int NOT NULL, amount bigint, note text);
         INSERT INTO big SELECT i, i % 100, i * 7, 'row ' || i FROM generate_series(1, {rows}) i;
         CREATE PUBLICATION tributary FOR TABLE big;"
    )
}

/// A writer that runs `transaction(n)` for n = 1, 2, … on its own `psql` session until
/// stopped; returns how many it ran.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Writer {
    pub(crate) fn start(pg: &Postgres, db: &str, transaction: fn(u64) -> String) -> Writer {
        let mut session = pg.psql_session(db);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut stdin = session.stdin.take().unwrap();
            let mut n = 0;
            while !stopped.load(Ordering::Relaxed) {
                n += 1;
                stdin.write_all(transaction(n).as_bytes()).unwrap();
                stdin.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(stdin);
            assert!(
                session.wait().unwrap().success(),
                "the writer's psql failed"
            );
            n
        });
        Writer { stop, thread }
    }

    pub(crate) fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The digest `tests/py/table_digest.py` computes, of `columns` of `table` in PostgreSQL.
fn digest_in_postgres(pg: &Postgres, db: &str, table: &str, columns: &[&str]) -> Json {
    let text = columns
        .iter()
        .map(|c| format!("coalesce({c}::text, 'NULL')"))
        .collect::<Vec<_>>()
        .join(", ");
    let out = pg.psql(
        db,
        &format!(
            "SELECT json_build_object('rows', count(*), 'digest', \
               coalesce(sum(('x' || substr(md5(concat_ws('|', {text})), 1, 8))::bit(32)::bigint), 0), \
               'keys', count(DISTINCT {first})) FROM {table}",
            first = columns[0]
        ),
    );
    serde_json::from_str(out.trim()).unwrap()
}

fn digest_in_iceberg(warehouse: &Path, table: &str, columns: &[&str]) -> Json {
    let output = Command::new("python3")
        .arg(tests_path("py/table_digest.py"))
        .arg(warehouse)
        .arg(table)
        .args(columns)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "table_digest.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The committed backfill progress of `table` (`schema.table`) in Iceberg table `ident`.
fn committed_progress(warehouse: &Path, ident: &str, table: &str) -> Json {
    let listing = tables_json(warehouse);
    let entry = listing["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == ident)
        .cloned()
        .unwrap_or(Json::Null);
    entry["source_progress"][STREAM]["tables"][table].clone()
}

fn big_transaction(n: u64) -> String {
    format!(
        "BEGIN;
UPDATE big SET amount = amount + 1, note = 'updated {n}'
  WHERE id IN (SELECT 1 + (random() * 1999999)::bigint FROM generate_series(1, 20));
DELETE FROM big WHERE id IN (SELECT 1 + (random() * 1999999)::bigint FROM generate_series(1, 5));
INSERT INTO big SELECT 1 + (random() * 1999999)::bigint, 7, {n}, 'refilled {n}'
  FROM generate_series(1, 5) ON CONFLICT (id) DO UPDATE SET note = 'conflict {n}';
INSERT INTO big VALUES (2000000 + {n}, 1, {n}, 'new {n}');
UPDATE big SET id = -id WHERE id = 1 + ({n} * 7919) % 2000000
  AND NOT EXISTS (SELECT 1 FROM big WHERE id = -(1 + ({n} * 7919) % 2000000));
COMMIT;
"
    )
}

#[test]
fn two_million_rows_backfill_in_chunks_across_kills_while_a_writer_changes_them() {
    let Some(pg) = shop("postgres_backfill", &big_table(2_000_000), true) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = format!("{}?chunk_rows=20000", pg.url("postgres", "shop"));
    let writer = Writer::start(&pg, "shop", big_transaction);

    // Killed six times mid-backfill, each after a few commits.
    let mut resumed_after: Vec<i64> = Vec::new();
    for run in 0..6 {
        let log = dir.path().join(format!("run-{run}.log"));
        let text = kill_after_commits(replicate(&source, &warehouse, &log, false), &log, 3);
        assert!(
            !text.contains("backfilled table=public.big"),
            "run {run} finished the backfill before it was killed"
        );
        if let Some(previous) = resumed_after.last() {
            assert!(
                text.contains(&format!("after=[\"{previous}\"]")),
                "run {run} resumes after the committed chunk (id {previous}): {text}"
            );
        }
        let progress = committed_progress(&warehouse, "public.big", "public.big");
        let after: i64 = progress["after"][0]
            .as_str()
            .unwrap_or_else(|| panic!("run {run} committed no chunk: {progress}"))
            .parse()
            .unwrap();
        if let Some(previous) = resumed_after.last() {
            assert!(
                after >= *previous,
                "progress went back: {previous} then {after}"
            );
        }
        resumed_after.push(after);
    }
    assert!(
        resumed_after.first() < resumed_after.last(),
        "the backfill made progress across restarts: {resumed_after:?}"
    );
    let transactions = writer.stop();

    let log = dir.path().join("final.log");
    let status = replicate(&source, &warehouse, &log, true).status().unwrap();
    let text = log_of(&log);
    assert!(status.success(), "final run failed: {text}");
    assert!(
        text.contains(&format!("after=[\"{}\"]", resumed_after.last().unwrap())),
        "the final run resumes after the last committed chunk: {text}"
    );
    let columns = ["id", "grp", "amount", "note"];
    let expected = digest_in_postgres(&pg, "shop", "big", &columns);
    assert!(expected["rows"].as_i64().unwrap() > 1_990_000, "{expected}");
    assert_eq!(
        digest_in_iceberg(&warehouse, "public.big", &columns),
        expected,
        "the Iceberg table equals SELECT * FROM big"
    );
    let listing = tables_json(&warehouse);
    assert_eq!(listing["tables"][0]["backfill"], "complete", "{listing}");
    eprintln!(
        "postgres_backfill: {} rows, {transactions} writer transactions, resumed after {resumed_after:?}",
        expected["rows"]
    );
}

fn streamed_transaction(n: u64) -> String {
    format!(
        "BEGIN; UPDATE first SET v = v + 1 WHERE id = {n} % 100;
         INSERT INTO first VALUES (1000 + {n}, {n});
         UPDATE second SET v = -v WHERE id = ({n} * 37) % 30000;
         DELETE FROM second WHERE id = ({n} * 101) % 30000; COMMIT;\n"
    )
}

#[test]
fn a_table_added_to_the_publication_mid_run_is_backfilled_while_the_first_streams() {
    let Some(pg) = shop(
        "postgres_backfill_added",
        "CREATE TABLE first (id int PRIMARY KEY, v int);
         INSERT INTO first SELECT i, 0 FROM generate_series(0, 99) i;
         CREATE TABLE second (id int PRIMARY KEY, v int, note text);
         INSERT INTO second SELECT i, i, 'second ' || i FROM generate_series(0, 29999) i;
         CREATE PUBLICATION tributary FOR TABLE first;",
        true,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = format!("{}?chunk_rows=1000", pg.url("postgres", "shop"));
    let writer = Writer::start(&pg, "shop", streamed_transaction);
    let log = dir.path().join("run.log");
    let mut child = replicate(&source, &warehouse, &log, false).spawn().unwrap();
    wait_for(&mut child, &log, "backfilled table=public.first", 1);
    wait_for(&mut child, &log, "committed iceberg snapshot", 2);
    pg.psql("shop", "ALTER PUBLICATION tributary ADD TABLE second");
    wait_for(&mut child, &log, "backfilled table=public.second", 1);
    wait_for(&mut child, &log, "table=public.second", 3);
    let transactions = writer.stop();
    // Let the run catch up, then stop it cleanly and finish with `--until-idle`.
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", log_of(&log));
    let text = log_of(&log);
    assert!(
        text.contains("table dbserver1.public.second is new"),
        "the new table was noticed: {text}"
    );
    assert_eq!(
        text.matches("backfilling").count(),
        2,
        "first is read once, second once: {text}"
    );
    let last = dir.path().join("last.log");
    let status = replicate(&source, &warehouse, &last, true)
        .status()
        .unwrap();
    assert!(status.success(), "{}", log_of(&last));

    // While second was backfilled, first kept streaming: it committed changes in snapshots
    // that record the backfill in progress.
    let (first_snapshots, _) =
        crate::support::iceberg::read_table(&warehouse, "public.first", false);
    let streamed_while_backfilling = first_snapshots
        .iter()
        .filter(|s| {
            s.summary.get("tributary.backfill").map(String::as_str) == Some("in-progress")
                && s.summary
                    .get("added-records")
                    .is_some_and(|n| n.as_str() != "0")
        })
        .count();
    assert!(
        streamed_while_backfilling >= 1,
        "first committed changes while second was backfilled"
    );
    for (ident, sql) in [
        ("public.first", "SELECT row_to_json(t) FROM first t"),
        ("public.second", "SELECT row_to_json(t) FROM second t"),
    ] {
        let mut want: Vec<Json> = pg
            .psql("shop", sql)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        want.sort_by_key(|r| r.to_string());
        assert_eq!(
            current_rows(&warehouse, ident),
            want,
            "{ident} equals its source"
        );
    }
    eprintln!("postgres_backfill_added: {transactions} writer transactions");
}

#[test]
fn an_update_that_leaves_a_toasted_value_unchanged_keeps_it() {
    // Stored out of line, uncompressed: an update of `n` alone does not send `doc` again.
    let Some(pg) = shop(
        "postgres_toast",
        "CREATE TABLE docs (id int PRIMARY KEY, doc text, n int);
         ALTER TABLE docs ALTER COLUMN doc SET STORAGE EXTERNAL;
         INSERT INTO docs SELECT 1, string_agg(md5(i::text), ''), 0 FROM generate_series(1, 3000) i;
         CREATE PUBLICATION tributary FOR TABLE docs;",
        true,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = pg.url("postgres", "shop");
    let run = |name: &str| {
        let log = dir.path().join(name);
        let status = replicate(&source, &warehouse, &log, true).status().unwrap();
        assert!(status.success(), "{}", log_of(&log));
    };
    run("first.log");
    // Between runs: the value comes from the state the restart rebuilt from the table.
    pg.psql("shop", "UPDATE docs SET n = 1 WHERE id = 1");
    // In one transaction: a new row, then an update of it that leaves its document alone.
    pg.psql(
        "shop",
        "BEGIN; INSERT INTO docs SELECT 2, string_agg(md5((-i)::text), ''), 0
           FROM generate_series(1, 3000) i;
         UPDATE docs SET n = 2 WHERE id = 2; COMMIT;",
    );
    run("second.log");
    let mut want: Vec<Json> = pg
        .psql("shop", "SELECT row_to_json(t) FROM docs t")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    want.sort_by_key(|r| r.to_string());
    assert_eq!(want.len(), 2);
    let rows = current_rows(&warehouse, "public.docs");
    assert_eq!(rows.len(), want.len());
    for expected in &want {
        let row = rows.iter().find(|r| r["id"] == expected["id"]).unwrap();
        assert_eq!(row["n"], expected["n"]);
        assert!(
            row["doc"] == expected["doc"],
            "row {} keeps its document (got {} bytes starting {:?})",
            expected["id"],
            row["doc"].as_str().map_or(0, str::len),
            row["doc"].as_str().map(|d| &d[..d.len().min(40)])
        );
    }
}

/// A server restart mid-backfill: the stream and the backfill reconnect, the chunk cut short
/// is read again, and the table ends equal to its source.
#[test]
fn a_server_restart_mid_backfill_is_ridden_out() {
    let Some(mut pg) = shop("postgres_backfill_restart", &big_table(200_000), true) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = format!("{}?chunk_rows=1000", pg.url("postgres", "shop"));
    let log = dir.path().join("run.log");
    let mut child = replicate(&source, &warehouse, &log, true).spawn().unwrap();
    wait_for(&mut child, &log, "committed iceberg snapshot", 3);
    pg.restart(Duration::from_millis(800));
    pg.psql(
        "shop",
        "UPDATE big SET note = 'after the restart' WHERE id % 1000 = 0",
    );
    let status = child.wait().unwrap();
    let text = log_of(&log);
    assert!(status.success(), "{text}");
    assert!(
        text.contains("lost the backfill's connection"),
        "the restart hit the backfill: {text}"
    );
    let columns = ["id", "grp", "amount", "note"];
    assert_eq!(
        digest_in_iceberg(&warehouse, "public.big", &columns),
        digest_in_postgres(&pg, "shop", "big", &columns),
        "the Iceberg table equals SELECT * FROM big"
    );
}
