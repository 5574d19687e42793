//! PostgreSQL → `orders-replica` → Iceberg, end to end against a real server: a few thousand
//! inserts, updates (some moving a primary key), deletes and a TRUNCATE in multi-row
//! transactions run while Tributary streams them; Tributary is killed (`kill -9`) twice
//! mid-stream and restarted (once with 2 workers), then finishes with `--until-idle`. The
//! backfill reads the table in small chunks while the workload runs. pyiceberg then reads
//! every snapshot: each one whose backfill is complete equals the source's state at the LSN
//! its summary records, each one still backfilling holds only rows the source had then, the
//! final one equals `SELECT * FROM orders`, no key twice, and the slot ends confirmed up to
//! what was committed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::support::iceberg::{pyiceberg_available, read_table};
use crate::support::postgres::{parse_lsn, Postgres};
use crate::support::tributary_bin;

const TABLE: &str = "demo.orders_realtime_replica";
const STREAM: &str = "postgres/tributary_orders_replica";
const INITIAL_ROWS: i64 = 2000;
const TRANSACTIONS: usize = 360;
const STATUSES: [&str; 5] = ["pending", "paid", "shipped", "delivered", "cancelled"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Order {
    customer_id: i64,
    status: &'static str,
    quantity: i32,
    price_cents: i64,
    created_at_micros: i64,
}

impl Order {
    fn sql(&self, id: i64) -> String {
        format!(
            "({id}, {}, '{}', {}, {}.{:02}, TIMESTAMP 'epoch' + {} * INTERVAL '1 microsecond')",
            self.customer_id,
            self.status,
            self.quantity,
            self.price_cents / 100,
            self.price_cents % 100,
            self.created_at_micros
        )
    }

    fn json(&self, id: i64) -> Json {
        json!({
            "order_id": id,
            "customer_id": self.customer_id,
            "status": self.status,
            "quantity": self.quantity,
            "price": format!("{}.{:02}", self.price_cents / 100, self.price_cents % 100),
            "created_at": self.created_at_micros,
        })
    }
}

type State = BTreeMap<i64, Order>;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn order(&mut self) -> Order {
        Order {
            customer_id: self.below(500) as i64,
            status: STATUSES[self.below(STATUSES.len() as u64) as usize],
            quantity: 1 + self.below(9) as i32,
            price_cents: 100 + self.below(99_900) as i64,
            created_at_micros: 1_700_000_000_000_000 + self.below(10_000_000_000_000) as i64,
        }
    }

    fn existing(&mut self, state: &State) -> Option<i64> {
        if state.is_empty() {
            return None;
        }
        let index = self.below(state.len() as u64) as usize;
        state.keys().nth(index).copied()
    }
}

/// One transaction of mixed statements; applies it to `state` and returns its SQL.
fn transaction(rng: &mut Rng, state: &mut State, next_id: &mut i64, truncate: bool) -> String {
    let mut sql = String::from("BEGIN;");
    if truncate {
        sql.push_str("TRUNCATE orders;");
        state.clear();
        let rows: Vec<String> = (0..50)
            .map(|_| {
                let order = rng.order();
                let id = *next_id;
                *next_id += 1;
                let text = order.sql(id);
                state.insert(id, order);
                text
            })
            .collect();
        sql.push_str(&format!("INSERT INTO orders VALUES {};", rows.join(",")));
    }
    for _ in 0..(4 + rng.below(14)) {
        match rng.below(10) {
            // a multi-row insert, sometimes updated again in the same transaction
            0..=2 => {
                let count = 1 + rng.below(4);
                let mut rows = Vec::new();
                for _ in 0..count {
                    let order = rng.order();
                    let id = *next_id;
                    *next_id += 1;
                    rows.push(order.sql(id));
                    state.insert(id, order);
                }
                sql.push_str(&format!("INSERT INTO orders VALUES {};", rows.join(",")));
                if rng.below(3) == 0 {
                    let id = *next_id - 1;
                    let status = STATUSES[rng.below(5) as usize];
                    sql.push_str(&format!(
                        "UPDATE orders SET status = '{status}' WHERE order_id = {id};"
                    ));
                    state.get_mut(&id).unwrap().status = status;
                }
            }
            // single-row updates of several columns
            3..=5 => {
                let Some(id) = rng.existing(state) else {
                    continue;
                };
                let status = STATUSES[rng.below(5) as usize];
                let price = 100 + rng.below(99_900) as i64;
                sql.push_str(&format!(
                    "UPDATE orders SET status = '{status}', price = {}.{:02}, quantity = quantity + 1 \
                     WHERE order_id = {id};",
                    price / 100,
                    price % 100
                ));
                let order = state.get_mut(&id).unwrap();
                order.status = status;
                order.price_cents = price;
                order.quantity += 1;
            }
            // a multi-row update
            6 => {
                let ids: Vec<i64> = (0..3).filter_map(|_| rng.existing(state)).collect();
                if ids.is_empty() {
                    continue;
                }
                let list: Vec<String> = ids.iter().map(i64::to_string).collect();
                sql.push_str(&format!(
                    "UPDATE orders SET status = 'shipped' WHERE order_id IN ({});",
                    list.join(",")
                ));
                for id in ids {
                    state.get_mut(&id).unwrap().status = "shipped";
                }
            }
            // deletes
            7 | 8 => {
                let Some(id) = rng.existing(state) else {
                    continue;
                };
                sql.push_str(&format!("DELETE FROM orders WHERE order_id = {id};"));
                state.remove(&id);
            }
            // a primary key change
            _ => {
                let Some(id) = rng.existing(state) else {
                    continue;
                };
                let new_id = *next_id;
                *next_id += 1;
                sql.push_str(&format!(
                    "UPDATE orders SET order_id = {new_id} WHERE order_id = {id};"
                ));
                let order = state.remove(&id).unwrap();
                state.insert(new_id, order);
            }
        }
    }
    sql.push_str("COMMIT;");
    sql
}

fn rows_of(state: &State) -> Vec<Json> {
    let mut rows: Vec<Json> = state.iter().map(|(id, o)| o.json(*id)).collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// A snapshot's rows without the `cdc_*` columns, sorted; panics on a duplicate key.
fn data_rows(rows: &[Json]) -> Vec<Json> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<Json> = rows
        .iter()
        .map(|row| {
            let mut row = row.as_object().unwrap().clone();
            let op = row.remove("cdc_operation").unwrap();
            assert!(
                ["r", "c", "u"].contains(&op.as_str().unwrap()),
                "cdc_operation {op}"
            );
            row.remove("cdc_timestamp").unwrap();
            assert!(
                seen.insert(row["order_id"].as_i64().unwrap()),
                "order {} twice in one snapshot",
                row["order_id"]
            );
            Json::Object(row)
        })
        .collect();
    out.sort_by_key(|r| r.to_string());
    out
}

/// Database `shop` with `orders`, then `more` (publications, other tables).
fn create_shop(pg: &Postgres, more: &str) {
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        &format!(
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id bigint, \
             status text, quantity int, price numeric(10,2), created_at timestamp); {more}"
        ),
    );
}

/// The table as PostgreSQL has it now.
fn select_orders(pg: &Postgres) -> Vec<Json> {
    let text = pg.psql(
        "shop",
        "SELECT json_build_object('order_id', order_id, 'customer_id', customer_id, \
         'status', status, 'quantity', quantity, 'price', price::text, 'created_at', \
         (extract(epoch FROM created_at) * 1000000)::bigint) FROM orders",
    );
    let mut rows: Vec<Json> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    fn start(source: &str, warehouse: &Path, workers: &str, log: PathBuf, until_idle: bool) -> Run {
        let mut command = Command::new(tributary_bin());
        command
            .args(["run", "orders-replica", "--source", source, "--warehouse"])
            .arg(warehouse)
            .args([
                "--workers",
                workers,
                "--commit-ms",
                "150",
                "--epoch-ms",
                "50",
            ])
            .args(["--console-format", "jsonl"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if until_idle {
            command.arg("--until-idle");
        }
        Run {
            child: command.spawn().unwrap(),
            log,
        }
    }

    fn commits(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("committed iceberg snapshot")
            .count()
    }

    /// Waits until this run has committed at least `count` snapshots, then kills it hard.
    fn kill_after_commits(mut self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.commits() < count {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "tributary exited early: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "no commit within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

#[test]
fn replica_equals_the_source_at_every_snapshot_across_kills() {
    let Some(pg) = Postgres::start_or_skip("postgres_replica") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    create_shop(
        &pg,
        "CREATE TABLE audit (id bigserial PRIMARY KEY, note text); \
         CREATE PUBLICATION tributary FOR TABLE orders, audit;",
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut state = State::new();
    let initial: Vec<String> = (1..=INITIAL_ROWS)
        .map(|id| {
            let order = rng.order();
            let text = order.sql(id);
            state.insert(id, order);
            text
        })
        .collect();
    let mut states = vec![(
        pg.commit_and_lsn(
            "shop",
            &format!("INSERT INTO orders VALUES {};", initial.join(",")),
        ),
        state.clone(),
    )];
    let mut next_id = INITIAL_ROWS + 1;

    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = format!("{}?chunk_rows=150", pg.url("postgres", "shop"));
    // The workload starts right away, so the backfill races with it.
    let mut run = Some(Run::start(
        &source,
        &warehouse,
        "1",
        dir.path().join("run-1.log"),
        false,
    ));
    let mut restarts = 0;
    for i in 0..TRANSACTIONS {
        let sql = transaction(&mut rng, &mut state, &mut next_id, i == TRANSACTIONS / 2);
        let lsn = pg.commit_and_lsn("shop", &sql);
        states.push((lsn, state.clone()));
        if i % 40 == 0 {
            // A published table the pipeline does not read: its commits are positions too.
            let lsn = pg.commit_and_lsn(
                "shop",
                "INSERT INTO audit (note) VALUES ('not read by orders-replica');",
            );
            states.push((lsn, state.clone()));
        }
        if i == TRANSACTIONS / 3 || i == 2 * TRANSACTIONS / 3 {
            run.take().unwrap().kill_after_commits(2);
            restarts += 1;
            let workers = if restarts == 1 { "2" } else { "1" };
            let log = dir.path().join(format!("run-{}.log", restarts + 1));
            run = Some(Run::start(&source, &warehouse, workers, log, false));
        }
    }
    run.take().unwrap().kill_after_commits(1);
    let last = Run::start(&source, &warehouse, "2", dir.path().join("final.log"), true);
    let status = {
        let mut child = last.child;
        child.wait().unwrap()
    };
    let final_log = std::fs::read_to_string(&last.log).unwrap();
    assert!(status.success(), "final run failed: {final_log}");

    let expected = rows_of(&state);
    assert_eq!(
        select_orders(&pg),
        expected,
        "the model drifted from PostgreSQL"
    );

    let (snapshots, _) = read_table(&warehouse, TABLE, false);
    assert!(snapshots.len() >= 6, "only {} snapshots", snapshots.len());
    let mut previous = 0;
    let mut backfilling = 0;
    for (index, snapshot) in snapshots.iter().enumerate() {
        let lsn = snapshot.position(STREAM);
        assert!(
            lsn >= previous,
            "positions went back: {previous} then {lsn}"
        );
        previous = lsn;
        // The source's state at `lsn`: after the first transaction whose after-commit WAL
        // position reaches it (a snapshot's consistent point may also fall just before).
        let k = states
            .iter()
            .position(|(after, _)| *after >= lsn)
            .unwrap_or_else(|| panic!("snapshot {index} is at {lsn}, past the workload"));
        let rows = data_rows(&snapshot.rows);
        if snapshot
            .summary
            .get("tributary.backfill")
            .map(String::as_str)
            == Some("in-progress")
        {
            // Still backfilling: every row it holds is the source's row then (the chunks read
            // so far, and every key changed since the backfill began).
            let want = rows_of(&states[k].1);
            let before = rows_of(&states[k.saturating_sub(1)].1);
            let stale: Vec<&Json> = rows
                .iter()
                .filter(|r| !(want.contains(r) || index == 0 && before.contains(r)))
                .take(5)
                .collect();
            assert!(stale.is_empty(), "backfilling snapshot {index} (lsn {lsn}) holds rows the source did not have: {stale:?}");
            backfilling += 1;
            continue;
        }
        let matches_k = rows == rows_of(&states[k].1);
        let matches_before = index == 0 && k > 0 && rows == rows_of(&states[k - 1].1);
        if !(matches_k || matches_before) {
            let want = rows_of(&states[k].1);
            let missing: Vec<&Json> = want.iter().filter(|r| !rows.contains(r)).take(5).collect();
            let extra: Vec<&Json> = rows.iter().filter(|r| !want.contains(r)).take(5).collect();
            panic!(
                "snapshot {index} (lsn {lsn}, {} rows) differs from the source after transaction \
                 {k} ({} rows): missing {missing:?}, unexpected {extra:?}",
                rows.len(),
                want.len()
            );
        }
    }
    let current = snapshots.last().unwrap();
    assert_eq!(data_rows(&current.rows), expected);
    assert!(
        snapshots
            .iter()
            .any(|s| s.rows.iter().any(|r| r["cdc_operation"] == "r")),
        "the backfill's rows reached the table"
    );
    assert_eq!(
        current
            .summary
            .get("tributary.backfill")
            .map(String::as_str),
        Some("complete")
    );

    let confirmed = pg.psql(
        "shop",
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'tributary_orders_replica'",
    );
    // Everything was committed, so the slot was moved up to (at least) the last commit; past
    // it only by WAL that changed no published table (here: the `--until-idle` marker).
    let confirmed = parse_lsn(confirmed.trim());
    let committed = current.position(STREAM);
    let last_change = states.last().unwrap().0;
    assert!(
        confirmed >= committed && committed <= last_change,
        "confirmed flush {confirmed}, committed {committed}, last change {last_change}"
    );
    eprintln!(
        "postgres_replica: {} transactions, {} snapshots ({backfilling} while backfilling), {} rows at the end",
        TRANSACTIONS,
        snapshots.len(),
        expected.len()
    );
}

/// A PostgreSQL restart while Tributary streams: the run keeps going (reconnecting with
/// backoff, resuming after the last transaction it handed on), commits what came after the
/// restart, stops cleanly on SIGTERM, and the table ends equal to `SELECT * FROM orders`.
#[test]
fn a_server_restart_mid_stream_is_ridden_out() {
    let Some(mut pg) = Postgres::start_or_skip("postgres_replica") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    create_shop(&pg, "CREATE PUBLICATION tributary FOR TABLE orders;");
    let mut rng = Rng(0x51f1_5eed);
    let mut state = State::new();
    let mut next_id = 1;
    for _ in 0..5 {
        pg.commit_and_lsn(
            "shop",
            &transaction(&mut rng, &mut state, &mut next_id, false),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = pg.url("postgres", "shop");
    let log = dir.path().join("run.log");
    let run = Run::start(&source, &warehouse, "1", log.clone(), false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.commits() == 0 {
        assert!(Instant::now() < deadline, "no first commit");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..20 {
        pg.commit_and_lsn(
            "shop",
            &transaction(&mut rng, &mut state, &mut next_id, false),
        );
    }
    pg.restart(Duration::from_secs(2));
    for _ in 0..20 {
        pg.commit_and_lsn(
            "shop",
            &transaction(&mut rng, &mut state, &mut next_id, false),
        );
    }
    let mut child = run.child;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        let after = text.split("reconnected; streaming changes").nth(1);
        if after.is_some_and(|rest| rest.contains("committed iceberg snapshot")) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "tributary exited on the restart: {text}"
        );
        assert!(
            Instant::now() < deadline,
            "no commit after reconnecting: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("lost the replication connection"), "{text}");

    let last = Run::start(&source, &warehouse, "1", dir.path().join("final.log"), true);
    let mut last_child = last.child;
    assert!(last_child.wait().unwrap().success());
    let expected = rows_of(&state);
    assert_eq!(
        select_orders(&pg),
        expected,
        "the model drifted from PostgreSQL"
    );
    let (snapshots, _) = read_table(&warehouse, TABLE, true);
    assert_eq!(data_rows(&snapshots.last().unwrap().rows), expected);
}
