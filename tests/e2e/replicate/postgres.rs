//! `tributary run replicate`, no code: every published table of a real PostgreSQL database
//! (thirteen in `public`, covering every mapped type, NULLs in every column, a composite key,
//! a uuid key, a table without a key) becomes an Iceberg table of its own with the schema the
//! catalog describes; `--tables` leaves out a schema, and tables added to the pipeline later
//! are backfilled while the others go on. Killed (`kill -9`) ten times while
//! transactions keep coming and restarted, every table read back by pyiceberg equals `SELECT`
//! of its source table, and the keyless table's change log holds each insert once.
//!
//! Schema changes (ADD/DROP COLUMN, ALTER TYPE, a new table, an incompatible change) follow.

use serde_json::Value as Json;

use super::{current, normalized, Followed};
use crate::support::iceberg::{pyiceberg_available, read_table};
use crate::support::postgres::{parse_lsn, Postgres};

const DDL: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SCHEMA audit;
CREATE TABLE ints (id int PRIMARY KEY, a smallint, b int, c bigint);
CREATE TABLE decimals (id bigint PRIMARY KEY, d numeric(12,3), u numeric, w numeric(50,5));
CREATE TABLE floats (id int PRIMARY KEY, r real, dp double precision);
CREATE TABLE flags (id int PRIMARY KEY, flag boolean NOT NULL, maybe boolean);
CREATE TABLE texts (id int PRIMARY KEY, t text, v varchar(20), c char(5));
CREATE TABLE times (id int PRIMARY KEY, d date, t time, ts timestamp, tz timestamptz);
CREATE TABLE uuids (id uuid PRIMARY KEY, note text);
CREATE TABLE docs (id int PRIMARY KEY, j json, jb jsonb);
CREATE TABLE blobs (id int PRIMARY KEY, b bytea);
CREATE TABLE moods (id int PRIMARY KEY, m mood);
CREATE TABLE arrays (id int PRIMARY KEY, tags text[], nums int[]);
CREATE TABLE composite (region text, seq int, amount numeric(10,2), PRIMARY KEY (region, seq));
CREATE TABLE events (at timestamp, what text);
CREATE TABLE audit.secrets (id int PRIMARY KEY, s text);
INSERT INTO ints VALUES (1, NULL, NULL, NULL);
INSERT INTO decimals VALUES (1, NULL, NULL, NULL);
INSERT INTO floats VALUES (1, NULL, NULL);
INSERT INTO flags VALUES (1, true, NULL);
INSERT INTO texts VALUES (1, NULL, NULL, NULL);
INSERT INTO times VALUES (1, NULL, NULL, NULL, NULL);
INSERT INTO uuids VALUES ('00000000-0000-0000-0000-000000000001', NULL);
INSERT INTO docs VALUES (1, NULL, NULL);
INSERT INTO blobs VALUES (1, NULL);
INSERT INTO moods VALUES (1, NULL);
INSERT INTO arrays VALUES (1, NULL, NULL);
INSERT INTO composite VALUES ('eu', 0, NULL);
INSERT INTO events VALUES (NULL, NULL);
CREATE PUBLICATION tributary FOR ALL TABLES;
";

/// Round `k` of changes, one transaction touching every table.
fn changes(k: u64) -> String {
    format!(
        "BEGIN;
INSERT INTO ints VALUES (100 + {k}, {k}, {k} * 1000, {k}::bigint * 1000000000);
UPDATE ints SET b = coalesce(b, 0) + 1 WHERE id = 1;
DELETE FROM ints WHERE id = 100 + {k} - 3;
INSERT INTO decimals VALUES (100 + {k}, {k} * 1.125, 123456789012345678901234567890.123456789 + {k},
  99999.12345);
UPDATE decimals SET u = NULL WHERE id = 100 + {k} - 1;
INSERT INTO floats VALUES (100 + {k}, {k} * 0.5, {k} * 1e10);
UPDATE flags SET maybe = NOT coalesce(maybe, false) WHERE id = 1;
INSERT INTO texts VALUES (100 + {k}, 'row ' || {k}, 'v' || {k}, 'c' || ({k} % 10));
UPDATE texts SET t = 'ünïcode ✓ \"quoted\" ' || {k} WHERE id = 100 + {k} - 1;
INSERT INTO times VALUES (100 + {k}, DATE '2024-01-01' + {k}, TIME '12:00:00' + {k} * INTERVAL '1 minute',
  TIMESTAMP '2024-01-01 00:00:00.123456' + {k} * INTERVAL '1 hour',
  TIMESTAMPTZ '2024-01-01 00:00:00+02' + {k} * INTERVAL '1 day');
INSERT INTO uuids VALUES (md5({k}::text)::uuid, 'n' || {k});
INSERT INTO docs VALUES (100 + {k}, '{{\"k\": {k},  \"a\": [1, 2]}}',
  jsonb_build_object('k', {k}, 'nested', jsonb_build_object('x', true)));
INSERT INTO blobs VALUES (100 + {k}, decode(md5({k}::text), 'hex'));
INSERT INTO moods VALUES (100 + {k}, (ARRAY['sad', 'ok', 'happy'])[1 + {k} % 3]::mood);
INSERT INTO arrays VALUES (100 + {k}, ARRAY['a' || {k}, 'b,c', NULL], ARRAY[{k}, {k} + 1]);
INSERT INTO composite VALUES ('eu', {k}, {k} * 2.5), ('us', {k}, NULL);
UPDATE composite SET amount = coalesce(amount, 0) + 1 WHERE region = 'eu' AND seq = {k} - 1;
DELETE FROM composite WHERE region = 'us' AND seq = {k} - 2;
INSERT INTO events VALUES (TIMESTAMP '2024-01-01' + {k} * INTERVAL '1 second', 'event ' || {k});
INSERT INTO audit.secrets VALUES (100 + {k}, 'hidden');
COMMIT;"
    )
}

/// Per table: the `SELECT` that prints its rows as the Iceberg reader does (decimals and
/// text-mapped types as text, timestamps as microseconds, dates as YYYY-MM-DD, bytes as hex).
const EXPECTED: [(&str, &str); 12] = [
    ("ints", "SELECT row_to_json(t) FROM ints t"),
    (
        "decimals",
        "SELECT json_build_object('id', id, 'd', d::text, 'u', u::text, 'w', w::text) FROM decimals",
    ),
    ("floats", "SELECT json_build_object('id', id, 'r', r::float8, 'dp', dp) FROM floats"),
    ("flags", "SELECT row_to_json(t) FROM flags t"),
    ("texts", "SELECT json_build_object('id', id, 't', t, 'v', v, 'c', c::text || repeat(' ', 5 - length(c))) FROM texts"),
    (
        "times",
        "SELECT json_build_object('id', id, 'd', d::text, 't', t::text, \
         'ts', (extract(epoch FROM ts) * 1000000)::bigint, \
         'tz', (extract(epoch FROM tz) * 1000000)::bigint) FROM times",
    ),
    ("uuids", "SELECT json_build_object('id', id::text, 'note', note) FROM uuids"),
    ("docs", "SELECT json_build_object('id', id, 'j', j::text, 'jb', jb::text) FROM docs"),
    ("blobs", "SELECT json_build_object('id', id, 'b', encode(b, 'hex')) FROM blobs"),
    ("moods", "SELECT json_build_object('id', id, 'm', m::text) FROM moods"),
    (
        "arrays",
        "SELECT json_build_object('id', id, 'tags', tags::text, 'nums', nums::text) FROM arrays",
    ),
    (
        "composite",
        "SELECT json_build_object('region', region, 'seq', seq, 'amount', amount::text) \
         FROM composite",
    ),
];

fn select(pg: &Postgres, sql: &str) -> Vec<Json> {
    normalized(
        pg.psql("shop", sql)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect(),
    )
}

#[test]
fn every_published_table_is_replicated_exactly_across_kills() {
    let Some(pg) = Postgres::start_or_skip("replicate") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", DDL);
    // `composite`'s state after each transaction, with the WAL position right before it: a
    // position (a commit's, or a snapshot's consistent point) shows the state of the last
    // transaction that began before it.
    let composite = EXPECTED.iter().find(|(t, _)| *t == "composite").unwrap().1;
    let wal_now = || parse_lsn(pg.psql("shop", "SELECT pg_current_wal_insert_lsn()").trim());
    let mut states = vec![(0, select(&pg, composite))];
    let mut commit = |sql: &str| {
        let before = wal_now();
        pg.psql("shop", sql);
        states.push((before, select(&pg, composite)));
    };
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = pg.url("postgres", "shop");
    let command = |tables: &str, until_idle: bool| {
        let mut command = std::process::Command::new(crate::support::tributary_bin());
        command
            .args(["run", "replicate", "--source", &source, "--tables", tables])
            .arg("--warehouse")
            .arg(&warehouse)
            .args(["--epoch-ms", "20", "--commit-ms", "100"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null());
        if until_idle {
            command.arg("--until-idle");
        }
        command
    };
    let run_ok = |tables: &str| {
        let output = command(tables, true).output().unwrap();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{log}");
        log
    };
    let every_table = "public\\..*";
    // Two tables first.
    run_ok("public\\.(ints|flags)");
    // Then all of them: the tables added to the pipeline are backfilled (ints and flags are
    // not read again); the keyless table is announced.
    commit(&changes(1));
    let log = run_ok(every_table);
    assert!(
        log.contains("tables without a snapshot yet: the source backfills them"),
        "added tables are backfilled: {log}"
    );
    assert!(
        !log.contains("backfilling table=public.ints"),
        "ints was read by the first run: {log}"
    );
    assert!(
        log.contains("no primary key") && log.contains("dbserver1.public.events"),
        "the keyless table is announced: {log}"
    );
    // Ten rounds of changes, each followed by a run that follows the slot and is killed after
    // a while (while it starts, streams or commits).
    for k in 2..=11u64 {
        commit(&changes(k));
        commit(&changes(k + 100));
        let killed =
            crate::support::kill_after(|| command(every_table, false), &[150 + (k * 137) % 900]);
        assert_eq!(killed, 1, "a followed run ends only when killed");
    }
    run_ok(every_table);

    // Every snapshot of `composite` is the source's state at the position it records.
    let (snapshots, _) = read_table(&warehouse, "public.composite", false);
    assert!(snapshots.len() >= 3, "{} snapshots", snapshots.len());
    for (i, snapshot) in snapshots.iter().enumerate() {
        let lsn = snapshot.position("postgres/tributary_replicate");
        let k = states
            .iter()
            .rposition(|(before, _)| *before < lsn)
            .unwrap_or_default();
        let rows = normalized(snapshot.rows.clone());
        if snapshot
            .summary
            .get("tributary.backfill")
            .map(String::as_str)
            == Some("in-progress")
        {
            // Still backfilling: it holds only rows the source had then.
            assert!(
                rows.iter().all(|r| states[k].1.contains(r)),
                "backfilling snapshot {i} of public.composite (lsn {lsn}) holds rows the source \
                 did not have after transaction {k}"
            );
            continue;
        }
        assert_eq!(
            rows, states[k].1,
            "snapshot {i} of public.composite (lsn {lsn}) against the source after transaction {k}"
        );
    }
    for (table, sql) in EXPECTED {
        assert_eq!(
            current(&warehouse, &format!("public.{table}")),
            select(&pg, sql),
            "public.{table} equals the source"
        );
    }
    // The table without a key: a change log with every insert once.
    let mut logged: Vec<Json> = current(&warehouse, "public.events")
        .into_iter()
        .map(|row| {
            assert!(matches!(row["op"].as_str(), Some("r" | "c")), "{row}");
            serde_json::json!({"at": row["at"], "what": row["what"]})
        })
        .collect();
    logged.sort_by_key(|r| r.to_string());
    assert_eq!(
        logged,
        select(
            &pg,
            "SELECT json_build_object('at', (extract(epoch FROM at) * 1000000)::bigint, \
             'what', what) FROM events"
        ),
        "public.events holds each insert once"
    );
    // `--tables` left the audit schema out.
    let listing = crate::support::run_tributary_ok(&[
        "tables",
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let listing: Json = serde_json::from_str(&listing).unwrap();
    let names: Vec<&str> = listing["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["table"].as_str())
        .collect();
    assert_eq!(names.len(), 13, "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("audit.")), "{names:?}");
}

/// Schema changes: ADD COLUMN while a run follows the slot stops the stream before the first
/// change that carries it, evolves the Iceberg table (a new optional field) and goes on, and a
/// table created meanwhile gets an Iceberg table of its own the same way; DROP
/// COLUMN and `ALTER COLUMN … TYPE bigint` between runs evolve it at start (the dropped column
/// stays, NULL from then on; int widened to long), and the older changes replayed with the
/// old shape still fit; pyiceberg reads the evolved table, older snapshots included. An incompatible change
/// (text → integer) stops the run with one error line and the committed data intact.
#[test]
fn schema_changes_evolve_the_tables_and_an_incompatible_one_stops_cleanly() {
    let Some(pg) = Postgres::start_or_skip("replicate_evolution") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int, note text);
         CREATE TABLE other (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT i, 'item ' || i, i, 'note ' || i FROM generate_series(1, 20) i;
         INSERT INTO other VALUES (1, 'a');
         CREATE PUBLICATION tributary FOR ALL TABLES;",
    );
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = pg.url("postgres", "shop");
    let run = || {
        std::process::Command::new(crate::support::tributary_bin())
            .args(["run", "replicate", "--source", &source, "--warehouse"])
            .arg(&warehouse)
            .args(["--until-idle", "--epoch-ms", "20", "--commit-ms", "100"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let run_ok = || {
        let output = run();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{log}");
        log
    };
    let items_now = || select(&pg, "SELECT row_to_json(t) FROM (SELECT * FROM items) t");
    // Iceberg's items without the columns PostgreSQL no longer has.
    let items_in_iceberg = |dropped: &[&str]| -> Vec<Json> {
        let mut rows = current(&warehouse, "public.items");
        for row in &mut rows {
            for column in dropped {
                row.as_object_mut().unwrap().remove(*column);
            }
        }
        rows.sort_by_key(|r| r.to_string());
        rows
    };
    run_ok();
    assert_eq!(items_in_iceberg(&[]), items_now());

    // ADD COLUMN while a run follows the slot: the stream stops before the first change that
    // carries the new column, the table evolves, and the run goes on.
    let follow = Followed::start(&source, &warehouse, dir.path());
    follow.wait_for(
        &|| follow.log().contains("streaming changes"),
        "the run streams",
    );
    pg.psql(
        "shop",
        "UPDATE items SET qty = qty + 1 WHERE id <= 5;
         ALTER TABLE items ADD COLUMN color text;
         INSERT INTO items VALUES (21, 'item 21', 21, 'note 21', 'red');
         UPDATE items SET color = 'blue' WHERE id = 2;
         INSERT INTO other VALUES (2, 'b');",
    );
    follow.wait_for(
        &|| follow.log().contains("building the pipeline again"),
        "the run restarts for the new column",
    );
    assert!(
        follow.log().contains("column `color` (string) was added"),
        "{}",
        follow.log()
    );
    follow.wait_for(
        &|| items_in_iceberg(&[]) == items_now(),
        "items reaches the source",
    );
    // A table created (FOR ALL TABLES publishes it) while the run follows: picked up.
    pg.psql(
        "shop",
        "CREATE TABLE late (id int PRIMARY KEY, v text);
         INSERT INTO late VALUES (1, 'x'), (2, 'y');
         UPDATE late SET v = 'z' WHERE id = 1;",
    );
    follow.wait_for(
        &|| follow.log().contains("table dbserver1.public.late is new"),
        "the run restarts for the new table",
    );
    let listed = || {
        let warehouse = warehouse.to_str().unwrap();
        crate::support::run_tributary_ok(&["tables", "--warehouse", warehouse])
    };
    follow.wait_for(
        &|| {
            listed().contains("public.late")
                && current(&warehouse, "public.late")
                    == select(&pg, "SELECT row_to_json(t) FROM late t")
        },
        "late reaches the source",
    );
    drop(follow);

    // DROP COLUMN, then widen qty to bigint and use the room.
    pg.psql(
        "shop",
        "ALTER TABLE items DROP COLUMN note;
         UPDATE items SET name = 'renamed' WHERE id = 3;
         ALTER TABLE items ALTER COLUMN qty TYPE bigint;
         INSERT INTO items VALUES (22, 'item 22', 5000000000, 'green');",
    );
    run_ok();
    assert_eq!(items_in_iceberg(&["note"]), items_now());
    let rows = current(&warehouse, "public.items");
    let note = |id: i64| rows.iter().find(|r| r["id"] == id).unwrap()["note"].clone();
    assert_eq!(
        note(1),
        "note 1",
        "an untouched row keeps the dropped column's value"
    );
    assert_eq!(note(3), Json::Null, "a row changed after the drop has none");
    // Every snapshot reads under the evolved schema: new columns NULL in older ones.
    let (snapshots, _) = read_table(&warehouse, "public.items", false);
    assert!(snapshots.len() >= 3);
    assert!(snapshots[0].rows.iter().all(|r| r["color"].is_null()));
    // Each schema change went in with a snapshot: one metadata file per snapshot, plus the
    // table's creation.
    let metadata_files = std::fs::read_dir(warehouse.join("public.db/items/metadata"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".metadata.json")
        })
        .count();
    assert_eq!(metadata_files, snapshots.len() + 1);
    assert_eq!(
        current(&warehouse, "public.other"),
        select(&pg, "SELECT row_to_json(t) FROM other t"),
    );

    // An incompatible change: the run stops with one line; what was committed stays.
    let before = current(&warehouse, "public.items");
    pg.psql(
        "shop",
        "ALTER TABLE items ALTER COLUMN name TYPE int USING length(name);
         INSERT INTO items VALUES (23, 7, 1, NULL);",
    );
    let output = run();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    for needle in ["public.items", "`name`", "string", "int"] {
        assert!(errors[0].contains(needle), "`{needle}` in: {}", errors[0]);
    }
    assert_eq!(current(&warehouse, "public.items"), before);
}
