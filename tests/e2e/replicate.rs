//! `tributary run replicate`, no code: every published table of a real PostgreSQL database
//! (thirteen in `public`, covering every mapped type, NULLs in every column, a composite key,
//! a uuid key, a table without a key) becomes an Iceberg table of its own with the schema the
//! catalog describes; `--tables` leaves out a schema, and tables added to the pipeline later
//! bring a new snapshot that replaces what the others hold. Killed (`kill -9`) ten times while
//! transactions keep coming and restarted, every table read back by pyiceberg equals `SELECT`
//! of its source table, and the keyless table's change log holds each insert once.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::support::kafka::Outgoing;

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

/// Rows with JSON documents (strings in both) parsed, so that spacing does not matter, floats
/// as floats, and without the replica's `cdc_*` columns; sorted.
fn normalized(mut rows: Vec<Json>) -> Vec<Json> {
    for row in &mut rows {
        for column in ["j", "jb"] {
            if let Some(Json::String(text)) = row.get(column).cloned() {
                row[column] = serde_json::from_str(&text).unwrap();
            }
        }
        for column in ["r", "dp"] {
            if let Some(number) = row.get(column).and_then(Json::as_f64) {
                row[column] = serde_json::json!(number);
            }
        }
        if let Some(object) = row.as_object_mut() {
            object.remove("cdc_operation");
            object.remove("cdc_timestamp");
        }
    }
    rows.sort_by_key(|r| r.to_string());
    rows
}

fn select(pg: &Postgres, sql: &str) -> Vec<Json> {
    normalized(
        pg.psql("shop", sql)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect(),
    )
}

fn current(warehouse: &std::path::Path, table: &str) -> Vec<Json> {
    let (snapshots, _) = read_table(warehouse, table, true);
    normalized(snapshots.last().map(|s| s.rows.clone()).unwrap_or_default())
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
    // Then all of them: the tables added to the pipeline have no snapshot, so the source is
    // read whole again (a new snapshot that replaces what ints and flags hold); the keyless
    // table is announced.
    commit(&changes(1));
    let log = run_ok(every_table);
    assert!(
        log.contains("reading the source's whole state again"),
        "added tables bring a new snapshot: {log}"
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
        assert_eq!(
            normalized(snapshot.rows.clone()),
            states[k].1,
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

/// `tributary run replicate` following its source (no `--until-idle`), logging to a file;
/// killed when dropped.
struct Followed {
    child: std::process::Child,
    log_path: std::path::PathBuf,
}

impl Followed {
    fn start(source: &str, warehouse: &std::path::Path, dir: &std::path::Path) -> Followed {
        let log_path = dir.join("follow.log");
        let child = std::process::Command::new(crate::support::tributary_bin())
            .args(["run", "replicate", "--source", source, "--warehouse"])
            .arg(warehouse)
            .args(["--epoch-ms", "20", "--commit-ms", "100"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        Followed { child, log_path }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (up to 90 s) until `done`, else fails saying `why` with the run's log.
    fn wait_for(&self, done: &dyn Fn() -> bool, why: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{why}: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Events without types (plain Debezium JSON in a file): `replicate` takes the schemas that
/// `tributary.toml` declares (`[[table]]`), and the events of a table it would read but nobody
/// declared become `no-schema` dead letters that say how to declare it; tables `--tables`
/// leaves out are skipped.
#[test]
fn declared_tables_replicate_plain_events_and_undeclared_ones_are_dead_letters() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lines = crate::support::orders_lines(3_000, 300, 11);
    let other = |table: &str, i: usize| {
        serde_json::json!({
            "before": null, "after": {"id": i, "amount": "1.00"}, "op": "c", "ts_ms": 1,
            "source": {"name": "dbserver1", "schema": table.split('.').next().unwrap(),
                       "table": table.split('.').nth(1).unwrap(), "ts_ms": 1,
                       "txId": 900_000 + i},
        })
        .to_string()
    };
    for i in 0..7 {
        lines.insert(i * 300, other("public.refunds", i));
        lines.insert(i * 300 + 1, other("audit.log", i));
    }
    let path = dir.path().join("shop.jsonl");
    crate::support::write_lines(&path, &lines);
    let config = dir.path().join("tributary.toml");
    std::fs::write(
        &config,
        format!(
            r#"pipeline = "replicate"
source = "file:{}"
tables = 'public\..*'

[[table]]
name = "dbserver1.public.orders"
key = ["order_id"]
columns = ["order_id bigint not null", "customer_id bigint", "status text", "quantity int",
           "price numeric(10,2)", "created_at timestamp"]
"#,
            path.display()
        ),
    )
    .unwrap();
    let warehouse = dir.path().join("warehouse");
    let dead = dir.path().join("dead.jsonl");
    let output = crate::support::run_tributary(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--until-idle",
        "--dead-letter",
        dead.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut oracle = crate::support::iceberg::ReplicaOracle::default();
    for line in &lines {
        if line.contains("\"table\":\"orders\"") {
            oracle.apply(line);
        }
    }
    let (snapshots, _) = read_table(&warehouse, "public.orders", true);
    assert_eq!(snapshots.last().unwrap().rows, oracle.rows());
    let letters: Vec<Json> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 7, "one per refunds event: {letters:?}");
    for letter in &letters {
        assert_eq!(letter["kind"], "no-schema");
        let reason = letter["reason"].as_str().unwrap();
        assert!(
            reason.contains("dbserver1.public.refunds") && reason.contains("[[table]]"),
            "{reason}"
        );
    }
}

/// A schema-wrapped Debezium change event (Kafka's JsonConverter with schemas) of table
/// `pg1.public.<table>`, with `fields` (Connect field schemas of the row) and its message key.
fn connect_message(
    table: &str,
    fields: &Json,
    key: (&str, i64),
    after: Option<Json>,
    tx: u64,
) -> Outgoing {
    let (key_field, id) = key;
    let row = serde_json::json!({"type": "struct", "optional": true, "fields": fields});
    let op = if after.is_some() { "c" } else { "d" };
    let before = if after.is_none() {
        serde_json::json!({key_field: id})
    } else {
        Json::Null
    };
    let value = serde_json::json!({
        "schema": {"type": "struct", "fields": [
            {"field": "before", "type": "struct", "optional": true, "fields": fields},
            {"field": "after", "type": "struct", "optional": true, "fields": row["fields"]},
            {"field": "source", "type": "struct", "fields": []},
            {"field": "op", "type": "string"}]},
        "payload": {"before": before, "after": after, "op": op,
                    "source": {"name": "pg1", "schema": "public", "table": table,
                               "ts_ms": 1_700_000_000_000u64 + tx, "txId": tx}},
    });
    let key = serde_json::json!({
        "schema": {"type": "struct", "fields": [{"field": key_field, "type": "int64", "optional": false}]},
        "payload": {key_field: id},
    });
    Outgoing {
        topic: format!("pg1.public.{table}"),
        partition: (id % 2) as i32,
        key: Some(key.to_string().into_bytes()),
        value: Some(value.to_string().into_bytes()),
    }
}

/// The schema-wrapped Kafka workload: `items` (whose schema gains `color` in phase 2) and
/// `people`, with what each table holds at the end.
struct KafkaWorkload {
    /// Messages before the column is added, and after.
    phases: [Vec<Outgoing>; 2],
    /// `items` at the end, by id (`color` NULL where never set).
    items: BTreeMap<i64, Json>,
    /// `items` after phase 1 (with `color` NULL).
    items_before_color: Vec<Json>,
    /// `people`'s names at the end, by id.
    persons: BTreeMap<i64, String>,
    /// `people`'s Connect fields.
    people: Json,
}

fn kafka_workload() -> KafkaWorkload {
    let items_v1 = serde_json::json!([
        {"field": "id", "type": "int64", "optional": false},
        {"field": "name", "type": "string", "optional": true},
        {"field": "weight", "type": "double", "optional": true}]);
    let mut items_v2 = items_v1.clone();
    items_v2
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"field": "color", "type": "string", "optional": true}));
    let people = serde_json::json!([
        {"field": "pid", "type": "int64", "optional": false},
        {"field": "name", "type": "string", "optional": true},
        {"field": "born", "type": "int32", "optional": true, "name": "io.debezium.time.Date"}]);
    // Phase 1 (before the column) and phase 2 (with it).
    let mut phases = [Vec::new(), Vec::new()];
    let mut items: BTreeMap<i64, Json> = BTreeMap::new();
    let mut items_before_color = Vec::new();
    let mut persons: BTreeMap<i64, String> = BTreeMap::new();
    for i in 0..120i64 {
        if i == 70 {
            items_before_color = items.values().cloned().collect();
        }
        let messages = &mut phases[usize::from(i >= 70)];
        let tx = i as u64 + 1;
        let id = i % 25;
        let v2 = i >= 70;
        let mut after =
            serde_json::json!({"id": id, "name": format!("item {i}"), "weight": i as f64 / 4.0});
        if v2 {
            after["color"] = serde_json::json!(format!("c{}", i % 3));
        }
        let fields = if v2 { &items_v2 } else { &items_v1 };
        if i % 9 == 8 {
            messages.push(connect_message("items", fields, ("id", id), None, tx));
            items.remove(&id);
        } else {
            messages.push(connect_message(
                "items",
                fields,
                ("id", id),
                Some(after.clone()),
                tx,
            ));
            after
                .as_object_mut()
                .unwrap()
                .entry("color")
                .or_insert(Json::Null);
            items.insert(id, after);
        }
        if i % 4 == 0 {
            let pid = i % 10;
            let row =
                serde_json::json!({"pid": pid, "name": format!("person {i}"), "born": 19_000 + i});
            messages.push(connect_message(
                "people",
                &people,
                ("pid", pid),
                Some(row),
                tx + 10_000,
            ));
            persons.insert(pid, format!("person {i}"));
        }
    }
    KafkaWorkload {
        phases,
        items,
        items_before_color,
        persons,
        people,
    }
}

/// Schema-wrapped Debezium JSON from the Kafka topics a pattern matches on the real broker, no
/// declaration: each topic's first record describes its table (the run rebuilds the pipeline
/// with it), a topic whose schema gains a column mid-stream evolves its Iceberg table, and a
/// topic created later is picked up.
#[test]
fn schema_wrapped_kafka_topics_are_learnt_and_a_new_column_evolves_the_table() {
    let Some(broker) = crate::support::kafka::Broker::start_or_skip("replicate_kafka") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    broker.create_topic("pg1.public.items", 2);
    broker.create_topic("pg1.public.people", 2);
    let KafkaWorkload {
        phases,
        items,
        items_before_color,
        persons,
        people,
    } = kafka_workload();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = format!(r"kafka://{}/~pg1\.public\..*", broker.addr);
    broker.produce(&phases[0]);
    let run = Followed::start(&source, &warehouse, dir.path());
    let rows = |table: &str| -> Vec<Json> {
        let warehouse_arg = warehouse.to_str().unwrap();
        let listed = crate::support::run_tributary(&["tables", "--warehouse", warehouse_arg]);
        if !String::from_utf8_lossy(&listed.stdout).contains(table) {
            return Vec::new();
        }
        let mut rows = current(&warehouse, table);
        rows.sort_by_key(|r| r.to_string());
        rows
    };
    let before_color = normalized(
        items_before_color
            .into_iter()
            .map(|mut row| {
                row.as_object_mut().unwrap().remove("color");
                row
            })
            .collect(),
    );
    run.wait_for(
        &|| rows("public.items") == before_color,
        "items reaches phase 1",
    );
    // The column arrives while the run reads the topics.
    broker.produce(&phases[1]);
    let expected_items: Vec<Json> = normalized(items.into_values().collect());
    run.wait_for(
        &|| rows("public.items") == expected_items,
        "items reaches phase 2",
    );
    let log = run.log();
    for learnt in ["pg1.public.items", "pg1.public.people"] {
        assert!(
            log.lines()
                .any(|l| l.contains("a record describes a table") && l.contains(learnt)),
            "{learnt} was learnt: {log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("a record describes a table") && l.contains("color")),
        "the new column was learnt: {log}"
    );
    // A topic created while the run follows the pattern: the run is rebuilt to read it.
    broker.create_topic("pg1.public.late", 1);
    let late: Vec<Outgoing> = (0..5)
        .map(|i| {
            let row = serde_json::json!({"pid": i, "name": format!("late {i}"), "born": 19_500});
            let mut message =
                connect_message("late", &people, ("pid", i), Some(row), 50_000 + i as u64);
            message.partition = 0;
            message
        })
        .collect();
    broker.produce(&late);
    run.wait_for(
        &|| rows("public.late").len() == 5,
        "the new topic's table is replicated",
    );
    assert!(
        run.log().contains("topic pg1.public.late is new"),
        "{}",
        run.log()
    );
    // People: names by id; `born` (Debezium's Date) arrives as an Iceberg date.
    let people = rows("public.people");
    let got: BTreeMap<i64, String> = people
        .iter()
        .map(|r| {
            (
                r["pid"].as_i64().unwrap(),
                r["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, persons);
    assert!(people.iter().all(|r| r["born"]
        .as_str()
        .is_some_and(|d| d.len() == 10 && d.starts_with("202"))));
}

/// Bad input in schema-wrapped events is data: a payload that contradicts its schema and a
/// Connect type without a mapping (taken as text, with a warning) give dead letters naming
/// the field; the good rows replicate.
#[test]
fn schema_wrapped_bad_input_becomes_dead_letters() {
    if !pyiceberg_available() {
        return;
    }
    let fields = serde_json::json!([
        {"field": "id", "type": "int64", "optional": false},
        {"field": "w", "type": "double", "optional": true},
        {"field": "x", "type": "int128", "optional": true}]);
    // Lines that carry the Kafka message whole (`{"key":…,"value":…}`), so the key is known.
    let line = |after: Json, tx: u64| {
        let id = after["id"].as_i64().unwrap();
        let message = connect_message("t", &fields, ("id", id), Some(after), tx);
        let json = |bytes: Vec<u8>| serde_json::from_slice::<Json>(&bytes).unwrap();
        serde_json::json!({"key": json(message.key.unwrap()), "value": json(message.value.unwrap())})
            .to_string()
    };
    let lines = [
        line(serde_json::json!({"id": 1, "w": 1.5, "x": "a"}), 1),
        line(serde_json::json!({"id": 2, "w": "heavy", "x": "b"}), 2),
        line(serde_json::json!({"id": 3, "w": 2.0, "x": 7}), 3),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    crate::support::write_lines(&path, &lines);
    let warehouse = dir.path().join("warehouse");
    let dead = dir.path().join("dead.jsonl");
    let output = crate::support::run_tributary(&[
        "run",
        "replicate",
        "--source",
        &format!("file:{}", path.display()),
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--until-idle",
        "--dead-letter",
        dead.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("no mapping for these Connect types") && log.contains("x: int128"),
        "{log}"
    );
    let letters: Vec<Json> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|(kind, _)| *kind == "type-mismatch"),
        "{reasons:?}"
    );
    assert!(
        reasons[0].1.contains("`after.w`") && reasons[1].1.contains("`after.x`"),
        "{reasons:?}"
    );
    let rows = current(&warehouse, "public.t");
    assert_eq!(
        rows,
        normalized(vec![serde_json::json!({"id": 1, "w": 1.5, "x": "a"})])
    );
}

/// Per-table options in `tributary.toml` for tables the source describes (`[[table]]`
/// without columns): a key for tables whose events carry none (upserted, not logged), a
/// partition spec for one, and equality deletes for the other (read back by iceberg-rust,
/// as pyiceberg 0.12 reads no equality deletes).
#[test]
fn table_options_set_the_key_the_partition_spec_and_the_delete_mode() {
    if !pyiceberg_available() {
        return;
    }
    let fields = serde_json::json!([
        {"field": "id", "type": "int64", "optional": false},
        {"field": "v", "type": "string", "optional": true}]);
    let lines: Vec<String> = (0..80u64)
        .map(|i| {
            let table = if i % 2 == 0 { "t" } else { "u" };
            let after = serde_json::json!({"id": i % 8, "v": format!("v{i}")});
            let message =
                connect_message(table, &fields, ("id", (i % 8) as i64), Some(after), i + 1);
            String::from_utf8(message.value.unwrap()).unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let config = dir.path().join("tributary.toml");
    std::fs::write(
        &config,
        format!(
            "pipeline = \"replicate\"\nsource = \"file:{}\"\n\n\
             [[table]]\nname = \"pg1.public.t\"\nkey = [\"id\"]\npartition = [\"bucket[4](id)\"]\n\n\
             [[table]]\nname = \"pg1.public.u\"\nkey = [\"id\"]\ndeletes = \"equality\"\n",
            path.display()
        ),
    )
    .unwrap();
    let warehouse = dir.path().join("warehouse");
    // Two runs, so that the second replaces rows the first committed.
    for end in [40, 80] {
        crate::support::write_lines(&path, &lines[..end]);
        let output = crate::support::run_tributary(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--warehouse",
            warehouse.to_str().unwrap(),
            "--until-idle",
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let expected = |parity: u64| -> Vec<Json> {
        let rows = (72..80u64)
            .filter(|i| i % 2 == parity)
            .map(|i| serde_json::json!({"id": i % 8, "v": format!("v{i}")}));
        normalized(rows.collect())
    };
    assert_eq!(current(&warehouse, "public.t"), expected(0));
    let u = crate::support::iceberg_rust::read_table_iceberg_rust(&warehouse, "public.u");
    let last = u.last().unwrap();
    assert_eq!(normalized(last.rows.clone()), expected(1));
    let equality_deletes: u64 = u
        .iter()
        .filter_map(|s| s.summary.get("added-equality-deletes")?.parse::<u64>().ok())
        .sum();
    assert!(equality_deletes > 0, "u deletes by key");
    let t = read_table(&warehouse, "public.t", false).0;
    assert!(
        t.iter().all(|s| s
            .summary
            .get("added-equality-deletes")
            .is_none_or(|n| n == "0")),
        "t deletes by position"
    );
    let metadata_dir = warehouse.join("public.db/t/metadata");
    let mut files: Vec<_> = std::fs::read_dir(&metadata_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
        .collect();
    files.sort();
    let metadata: Json =
        serde_json::from_slice(&std::fs::read(files.last().unwrap()).unwrap()).unwrap();
    let specs = metadata["partition-specs"].to_string();
    assert!(specs.contains("bucket[4]"), "{specs}");
}

/// `replicate` over schema-wrapped Kafka topics killed (`kill -9`) ten times at random
/// moments while it learns the tables, evolves `items` and commits, then run to the end:
/// every table equals the workload's result.
#[test]
fn schema_wrapped_kafka_replicate_survives_kills() {
    let Some(broker) = crate::support::kafka::Broker::start_or_skip("replicate_kafka_kills") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    broker.create_topic("pg1.public.items", 2);
    broker.create_topic("pg1.public.people", 2);
    let workload = kafka_workload();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = format!(r"kafka://{}/~pg1\.public\..*", broker.addr);
    let command = |until_idle: bool| {
        let mut command = std::process::Command::new(crate::support::tributary_bin());
        command
            .args(["run", "replicate", "--source", &source, "--warehouse"])
            .arg(&warehouse)
            .args([
                "--epoch-ms",
                "20",
                "--commit-ms",
                "50",
                "--kafka-idle-ms",
                "500",
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null());
        if until_idle {
            command.arg("--until-idle");
        }
        command
    };
    for (k, phase) in workload.phases.iter().enumerate() {
        broker.produce(phase);
        for round in 0..5u64 {
            let delay = 100 + ((k as u64 * 5 + round) * 173) % 700;
            let killed = crate::support::kill_after(|| command(false), &[delay]);
            assert_eq!(killed, 1, "a followed run ends only when killed");
        }
    }
    let output = command(true).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        current(&warehouse, "public.items"),
        normalized(workload.items.into_values().collect())
    );
    let got: BTreeMap<i64, String> = current(&warehouse, "public.people")
        .iter()
        .map(|r| {
            (
                r["pid"].as_i64().unwrap(),
                r["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, workload.persons);
}
