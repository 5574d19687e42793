//! Every PostgreSQL column type the source maps, through the real runtime with 1 and 2
//! workers: rows from the initial snapshot and rows streamed afterwards (insert, update,
//! delete) arrive with the same values as PostgreSQL's own text for them, NULLs and awkward
//! values (NaN, ±Infinity, negative decimals, pre-1970 dates, non-UTC offsets, quotes,
//! newlines and non-ASCII text, bytes with zeros, JSON) included.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::support::postgres::Postgres;
use crate::support::Capture;
use crate::support::{parse_console, table_at};
use tributary_engine::sources::SourceSpec;
use tributary_engine::{
    run, shared_writer, BuildError, Column, ColumnType, ConsoleFormat, ConsoleMode, ConsoleOptions,
    IcebergOptions, Pipeline, PipelineBuilder, RunOptions, Schema,
};

fn kinds_schema() -> Schema {
    Schema::new(vec![
        Column::new("id", ColumnType::Int64).not_null(),
        Column::new("flag", ColumnType::Bool),
        Column::new("small", ColumnType::Int32),
        Column::new("ratio", ColumnType::Float64),
        Column::new(
            "amount",
            ColumnType::Decimal {
                precision: 12,
                scale: 4,
            },
        ),
        Column::new("day", ColumnType::Date),
        Column::new("at", ColumnType::Timestamp),
        Column::new("at_tz", ColumnType::TimestampTz),
        Column::new("note", ColumnType::String),
        Column::new("blob", ColumnType::Bytes),
        Column::new("doc", ColumnType::Json),
        Column::new("tag", ColumnType::String),
    ])
}

fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let kinds = p.table("dbserver1.public.kinds", kinds_schema(), &["id"])?;
    p.output("kinds", &kinds.state())
}

const DDL: &str = "CREATE TABLE kinds (id bigint PRIMARY KEY, flag boolean, small smallint, \
    ratio double precision, amount numeric(12,4), day date, at timestamp, at_tz timestamptz, \
    note text, blob bytea, doc jsonb, tag uuid); CREATE PUBLICATION tributary FOR TABLE kinds";

const SNAPSHOT_ROWS: &str = "INSERT INTO kinds VALUES \
    (1, true, -32768, 1.5, -12345678.1234, '1969-07-20', '1969-07-20 20:17:40.000001', \
     '2024-03-10 12:00:00+05:30', 'quote \" backslash \\ newline \n tab \t ünïcødé ✓', \
     '\\x00ff10', '{\"a\": [1, 2.5, null], \"b\": \"x\"}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), \
    (2, false, 7, 'NaN', 0.0001, '2000-02-29', '2000-02-29 00:00:00', '2000-02-29 23:59:59.999999-08', \
     '', '\\x', '[]', NULL), \
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";

const STREAMED: &str = "BEGIN; \
    INSERT INTO kinds VALUES (4, true, 1, '-Infinity', 99999999.9999, '2038-01-19', \
      '2038-01-19 03:14:08', '2038-01-19 03:14:08Z', 'streamed', '\\xdeadbeef', '{\"n\": 4}', \
      'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12'); \
    UPDATE kinds SET note = 'updated', ratio = 'Infinity', amount = -0.5 WHERE id = 2; \
    DELETE FROM kinds WHERE id = 3; \
    COMMIT";

/// What PostgreSQL itself says the rows are, in the console's JSON shapes (timestamps as
/// ISO-8601 UTC with `Z`): the expected output, computed by the server rather than by hand.
fn expected(pg: &Postgres) -> BTreeMap<i64, Json> {
    let text = pg.psql(
        "postgres",
        "SET TimeZone = 'UTC'; SELECT json_build_object('id', id, 'flag', flag, 'small', small, \
         'ratio', ratio::text, 'amount', amount::text, 'day', day::text, \
         'at', to_char(at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         'at_tz', to_char(at_tz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         'note', note, 'blob', encode(blob, 'base64'), 'doc', doc::text, 'tag', tag::text) \
         FROM kinds",
    );
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|line| {
            let row: Json = serde_json::from_str(line).unwrap();
            (row["id"].as_i64().unwrap(), row)
        })
        .collect()
}

/// The console's row, normalised to the shapes of [`expected`].
fn normalised(row: &Json) -> Json {
    let mut row = row.as_object().unwrap().clone();
    for (name, value) in row.iter_mut() {
        let text = match &*value {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        *value = match name.as_str() {
            "amount" if !value.is_null() => Json::String(decimal_text(&text)),
            "ratio" | "day" if !value.is_null() => Json::String(text),
            "doc" if !value.is_null() => {
                // jsonb's own text; the console may print the document itself
                let doc: Json = serde_json::from_str(&text).unwrap();
                Json::String(doc.to_string())
            }
            _ => value.clone(),
        };
    }
    Json::Object(row)
}

/// PostgreSQL's row in the same normal form (JSON documents re-serialised, decimals without
/// trailing zeros).
fn doc_normalised(mut row: Json) -> Json {
    if let Some(Json::String(doc)) = row.get("doc").cloned() {
        let doc: Json = serde_json::from_str(&doc).unwrap();
        row["doc"] = Json::String(doc.to_string());
    }
    if let Some(Json::String(amount)) = row.get("amount").cloned() {
        row["amount"] = Json::String(decimal_text(&amount));
    }
    row
}

/// `-0.5000` → `-0.5`: the same number whatever scale it is printed at.
fn decimal_text(text: &str) -> String {
    if !text.contains('.') {
        return text.to_owned();
    }
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn console_rows(capture: &Capture) -> BTreeMap<i64, Json> {
    let lines = parse_console(&capture.0.lock().unwrap());
    let latest = lines.iter().map(|l| l.batch).max().unwrap_or(0);
    table_at(&lines, "kinds", latest)
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(row, _)| {
            let row: Json = serde_json::from_str(&row).unwrap();
            (row["id"].as_i64().unwrap(), normalised(&row))
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_type_arrives_as_postgres_has_it() {
    let Some(pg) = Postgres::start_or_skip("postgres_types") else {
        return;
    };
    pg.psql("postgres", DDL);
    pg.psql("postgres", SNAPSHOT_ROWS);
    let snapshot = expected(&pg);
    assert_eq!(snapshot.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    for workers in [1, 2] {
        let capture = Capture::default();
        let shutdown = Arc::new(AtomicBool::new(false));
        let options = RunOptions {
            source: SourceSpec::parse(&pg.url("postgres", "postgres")).unwrap(),
            workers,
            epoch: Duration::from_millis(20),
            until_idle: false,
            console: ConsoleOptions {
                format: ConsoleFormat::Jsonl,
                mode: ConsoleMode::Update,
                max_rows: 100,
                writer: shared_writer(capture.clone()),
            },
            shutdown: Some(Arc::clone(&shutdown)),
            iceberg: IcebergOptions::new(dir.path().join(format!("warehouse-{workers}"))),
            ..RunOptions::default()
        };
        let running = std::thread::spawn(move || {
            run(
                &Pipeline::new("kinds", "every column type, as state", build),
                options,
            )
        });

        wait_for("the snapshot rows", || console_rows(&capture).len() == 3);
        let got = console_rows(&capture);
        for (id, want) in &snapshot {
            assert_eq!(
                got[id],
                doc_normalised(want.clone()),
                "snapshot row {id}, workers={workers}"
            );
        }

        pg.psql("postgres", STREAMED);
        let after = expected(&pg);
        wait_for("the streamed transaction", || {
            let rows = console_rows(&capture);
            rows.len() == 3 && rows.contains_key(&4)
        });
        let got = console_rows(&capture);
        for (id, want) in &after {
            assert_eq!(
                got[id],
                doc_normalised(want.clone()),
                "streamed row {id}, workers={workers}"
            );
        }
        assert!(!got.contains_key(&3), "row 3 was deleted");

        shutdown.store(true, Ordering::Relaxed);
        let summary = running.join().unwrap().unwrap();
        assert!(
            summary.dead_letters.is_empty(),
            "{:?}",
            summary.dead_letters
        );
        // Put the table back for the next round (which starts from a new snapshot).
        pg.psql("postgres", "BEGIN; DELETE FROM kinds; COMMIT;");
        pg.psql("postgres", SNAPSHOT_ROWS);
    }
}
