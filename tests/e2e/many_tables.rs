//! One pipeline, three Iceberg tables, exactly once: `shop-replica` keeps `orders`, `customers`
//! and `products` in tables of their own, where `products` changes only at the start and the
//! end of the source, so for most of the run it commits nothing and its recorded position
//! lags. Killed (`kill -9`) and restarted over a source that grew, the source replays from
//! the earliest position any table needs and each table skips what it holds: pyiceberg then
//! reads every snapshot of every table equal to the source replayed to the position it
//! records.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use crate::support::iceberg::{pyiceberg_available, read_table, ReplicaOracle, SnapshotRead};
use crate::support::{orders_lines, pipeline_run, write_lines};

const ORDERS: &str = "public.orders";
const CUSTOMERS: &str = "public.customers";
const PRODUCTS: &str = "public.products";

/// A customers or products change as Debezium writes it, a transaction of its own.
fn change(table: &str, key: &str, id: u64, after: Option<Json>, i: usize) -> String {
    let ts_ms = 1_700_000_000_000 + i as i64;
    let op = if after.is_some() { "u" } else { "d" };
    json!({
        "before": {key: id}, "after": after, "op": op, "ts_ms": ts_ms,
        "source": {"ts_ms": ts_ms, "name": "dbserver1", "schema": "public", "table": table,
                   "txId": 50_000_000 + i},
    })
    .to_string()
}

/// The orders workload with customers changes between its transactions, and products
/// changes only in the first and last tenth.
fn workload() -> Vec<String> {
    let orders = orders_lines(40_000, 2_000, 17);
    let mut lines = Vec::new();
    let mut last_tx = None;
    for (i, line) in orders.iter().enumerate() {
        let tx = serde_json::from_str::<Json>(line).unwrap()["source"]["txId"].as_u64();
        if tx.is_some() && tx != last_tx {
            if i % 3 == 0 {
                let id = (i as u64 * 7919) % 300;
                let after = (i % 11 != 0).then(|| {
                    json!({"id": id, "first_name": format!("F{id}"), "last_name": "L",
                           "email": format!("c{id}.{i}@example.com"), "city": "Porto",
                           "country": "PT"})
                });
                lines.push(change("customers", "id", id, after, i));
            }
            let edge = i < orders.len() / 10 || i > orders.len() * 9 / 10;
            if edge && i % 5 == 0 {
                let id = (i as u64 * 104_729) % 50;
                let after = (i % 7 != 0).then(|| {
                    json!({"product_id": id, "name": format!("product {id}"),
                           "category": "tools", "price": format!("{}.{:02}", i % 300, i % 100),
                           "created_at": 1_672_531_200_000_000i64 + i as i64})
                });
                lines.push(change("products", "product_id", id, after, i));
            }
            last_tx = tx;
        }
        lines.push(line.clone());
    }
    lines
}

/// `table`'s replica after the first `through` lines: key → the last `after` with its
/// `cdc_operation` and `cdc_timestamp`.
fn replica_of(lines: &[String], through: u64, table: &str, key: &str) -> Vec<Json> {
    let mut rows: BTreeMap<i64, Json> = BTreeMap::new();
    for line in &lines[..through as usize] {
        let event: Json = serde_json::from_str(line).unwrap();
        if event["source"]["table"] != table {
            continue;
        }
        let id = event["before"][key].as_i64().unwrap();
        match event["op"].as_str().unwrap() {
            "d" => {
                rows.remove(&id);
            }
            op => {
                let mut row = event["after"].clone();
                row["cdc_operation"] = json!(op);
                row["cdc_timestamp"] = json!(event["source"]["ts_ms"].as_i64().unwrap() * 1000);
                rows.insert(id, row);
            }
        }
    }
    let mut rows: Vec<Json> = rows.into_values().collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

fn orders_at(lines: &[String], through: u64) -> Vec<Json> {
    let mut oracle = ReplicaOracle::default();
    for line in &lines[..through as usize] {
        let table = serde_json::from_str::<Json>(line).unwrap()["source"]["table"].clone();
        if table != "customers" && table != "products" {
            oracle.apply(line);
        }
    }
    oracle.rows()
}

/// Every snapshot of `table` equals `oracle` at the position it records; returns the current
/// snapshot's position.
fn check_every_snapshot(
    snapshots: &[SnapshotRead],
    stream: &str,
    table: &str,
    oracle: impl Fn(u64) -> Vec<Json>,
) -> u64 {
    let mut previous = 0;
    for (i, snapshot) in snapshots.iter().enumerate() {
        let position = snapshot.position(stream);
        assert!(position >= previous, "{table}: snapshot {i} goes back");
        previous = position;
        let expected = oracle(position);
        assert!(
            snapshot.rows == expected,
            "{table}: snapshot {i} (line {position}) has {} rows, the replay {}",
            snapshot.rows.len(),
            expected.len()
        );
    }
    previous
}

/// `tributary tables --consistent` names, per table, a snapshot; together they must be the
/// source replayed to one position (the furthest of theirs).
fn check_consistent_cut(warehouse: &std::path::Path, stream: &str, lines: &[String]) {
    let output = crate::support::run_tributary_ok(&[
        "tables",
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--consistent",
        "--format",
        "json",
    ]);
    let listing: Json = serde_json::from_str(&output).unwrap();
    let cut = listing["consistent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["pipeline"] == "shop-replica")
        .expect("a consistent cut of shop-replica")
        .clone();
    let newest = listing["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["epoch"].as_u64());
    assert!(
        newest.max().flatten() > cut["epoch"].as_u64(),
        "the cut lies behind some table's current snapshot: {listing}"
    );
    let chosen = |table: &str| -> Option<SnapshotRead> {
        let id = cut["snapshots"][table].as_i64()?;
        let (snapshots, _) = read_table(warehouse, table, false);
        Some(
            snapshots
                .into_iter()
                .find(|s| s.id == id)
                .expect("the chosen snapshot"),
        )
    };
    let picked: Vec<(&str, Option<SnapshotRead>)> =
        [ORDERS, CUSTOMERS, PRODUCTS].map(|t| (t, chosen(t))).into();
    let at = picked
        .iter()
        .filter_map(|(_, s)| s.as_ref().map(|s| s.position(stream)))
        .max()
        .expect("some table has a snapshot in the cut");
    for (table, snapshot) in picked {
        let rows = snapshot.map(|s| s.rows).unwrap_or_default();
        let expected = match table {
            ORDERS => orders_at(lines, at),
            CUSTOMERS => replica_of(lines, at, "customers", "id"),
            _ => replica_of(lines, at, "products", "product_id"),
        };
        assert!(
            rows == expected,
            "{table} in the cut at epoch {} differs from the source at line {at}",
            cut["epoch"]
        );
    }
}

/// The position of `table`'s current snapshot.
fn current_position(warehouse: &std::path::Path, table: &str, stream: &str) -> u64 {
    let (current, _) = read_table(warehouse, table, true);
    current.last().map_or(0, |s| s.position(stream))
}

#[test]
fn three_tables_one_mostly_idle_come_back_exact_after_kills() {
    if !pyiceberg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lines = workload();
    let path = dir.path().join("shop.jsonl");
    let source = format!("file:{}", path.display());
    let stream = source.as_str();
    let warehouse = dir.path().join("warehouse");
    let command = || pipeline_run("shop-replica", &source, &warehouse, 250);

    // 1. Most of the source, followed, then killed (a run that ends cleanly records every
    //    table's position): products changes only in the first tenth, so it lags. The source
    //    grows in two steps, so that products' last change is not in the first commit.
    let first = lines.len() * 6 / 10;
    write_lines(&path, &lines[..first / 12]);
    let log = dir.path().join("followed.log");
    let mut follow = std::process::Command::new(crate::support::tributary_bin());
    let mut child = follow
        .args(["run", "shop-replica", "--source", &source, "--warehouse"])
        .arg(&warehouse)
        .args(["--epoch-ms", "20", "--commit-ms", "250"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let orders_commits = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("committed iceberg snapshot") && l.contains(ORDERS))
            .count()
    };
    let await_commits = |count: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while orders_commits() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "orders did not commit {count} times: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    await_commits(1);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(
        &mut file,
        (lines[first / 12..first].join("\n") + "\n").as_bytes(),
    )
    .unwrap();
    await_commits(3);
    child.kill().unwrap();
    child.wait().unwrap();
    let (orders_line, products_line) = (
        current_position(&warehouse, ORDERS, stream),
        current_position(&warehouse, PRODUCTS, stream),
    );
    assert!(
        products_line < orders_line,
        "products lags (at line {products_line}, orders at {orders_line})"
    );

    // The tables' snapshots now stand at different positions; `tributary tables --consistent`
    // picks one of each that together are the source at one point.
    check_consistent_cut(&warehouse, stream, &lines);

    // 2. All of it: the source replays from where products left off, and the other tables
    //    drop what they hold.
    write_lines(&path, &lines);
    let output = command().env("RUST_LOG", "info").output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let held: u64 = log
        .split_whitespace()
        .find_map(|field| field.strip_prefix("already_held="))
        .and_then(|n| n.parse().ok())
        .expect("already_held=N in the finished line");
    assert!(held > 0, "the replay reached tables that held it: {log}");

    let total = lines.len() as u64;
    let (orders, _) = read_table(&warehouse, ORDERS, false);
    let at = check_every_snapshot(&orders, stream, ORDERS, |p| orders_at(&lines, p));
    assert_eq!(at, total);
    for (table, source_table, key) in [
        (CUSTOMERS, "customers", "id"),
        (PRODUCTS, "products", "product_id"),
    ] {
        let (snapshots, _) = read_table(&warehouse, table, false);
        check_every_snapshot(&snapshots, stream, table, |p| {
            replica_of(&lines, p, source_table, key)
        });
        assert_eq!(
            snapshots.last().map(|s| s.rows.clone()),
            Some(replica_of(&lines, total, source_table, key)),
            "{table} ends equal to the source"
        );
    }
}

/// A table as PostgreSQL has it now, as the Iceberg reader prints rows (`cdc_*` aside).
fn select_json(pg: &crate::support::postgres::Postgres, sql: &str) -> Vec<Json> {
    let mut rows: Vec<Json> = pg
        .psql("shop", sql)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// The current snapshot's rows without the `cdc_*` columns, sorted.
fn current_rows(warehouse: &std::path::Path, table: &str) -> Vec<Json> {
    let (current, _) = read_table(warehouse, table, true);
    let mut rows: Vec<Json> = current
        .last()
        .map(|s| s.rows.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut row| {
            let object = row.as_object_mut().unwrap();
            object.remove("cdc_operation");
            object.remove("cdc_timestamp");
            row
        })
        .collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// The same over PostgreSQL's own replication: `products` changes only in the initial
/// snapshot, so its table stays at the snapshot's position while the others move on; after a
/// `kill -9` the slot replays every transaction since, and each table keeps only what it
/// lacks. Transactions interleave in the WAL (a change's own LSN can lie below an earlier
/// commit), which is why positions are commit LSNs.
#[test]
fn postgres_tables_committed_at_different_positions_resume_exactly() {
    let Some(pg) = crate::support::postgres::Postgres::start_or_skip("many_tables") else {
        return;
    };
    if !pyiceberg_available() {
        return;
    }
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id bigint, status text, \
         quantity int, price numeric(10,2), created_at timestamp); \
         CREATE TABLE customers (id bigint PRIMARY KEY, first_name text, last_name text, \
         email text, city text, country text); \
         CREATE TABLE products (product_id bigint PRIMARY KEY, name text, category text, \
         price numeric(10,2), created_at timestamp); \
         INSERT INTO products SELECT i, 'p' || i, 'tools', i * 1.25, \
         TIMESTAMP '2024-01-01' + i * INTERVAL '1 day' FROM generate_series(1, 20) i; \
         CREATE PUBLICATION tributary FOR TABLE orders, customers, products;",
    );
    let transaction = |i: u64| {
        format!(
            "BEGIN; INSERT INTO orders VALUES ({i}, {c}, 'pending', 1, 9.99, \
             TIMESTAMP '2024-01-01'); UPDATE orders SET status = 'paid' WHERE order_id = {p}; \
             INSERT INTO customers VALUES ({i}, 'F', 'L', 'c{i}@example.com', 'Porto', 'PT') \
             ON CONFLICT (id) DO UPDATE SET email = 'again{i}@example.com'; \
             DELETE FROM customers WHERE id = {d}; COMMIT;",
            c = i % 7,
            p = i.saturating_sub(3),
            d = i.saturating_sub(5),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let source = pg.url("postgres", "shop");
    let run = |until_idle: bool| {
        let mut command = std::process::Command::new(crate::support::tributary_bin());
        command
            .args(["run", "shop-replica", "--source", &source, "--warehouse"])
            .arg(&warehouse)
            .args(["--epoch-ms", "20", "--commit-ms", "100"])
            .env("RUST_LOG", "info");
        if until_idle {
            command.arg("--until-idle");
        }
        command
    };
    for i in 1..=40 {
        pg.psql("shop", &transaction(i));
    }
    // 1. Follow the slot for a while, then kill it hard.
    let log = dir.path().join("follow.log");
    let mut child = run(false)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let commits = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("committed iceberg snapshot")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut i = 40;
    while commits() < 8 {
        assert!(std::time::Instant::now() < deadline, "too few commits");
        i += 1;
        pg.psql("shop", &transaction(i));
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stream = "postgres/tributary_shop_replica";
    let products_at = current_position(&warehouse, PRODUCTS, stream);
    let orders_at = current_position(&warehouse, ORDERS, stream);
    assert!(
        products_at < orders_at,
        "products stays at the snapshot ({products_at}), orders moved on ({orders_at})"
    );
    // 2. More transactions, then a run to the end.
    for j in i + 1..=i + 30 {
        pg.psql("shop", &transaction(j));
    }
    let output = run(true).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        !log.contains("already_held=0 "),
        "the replay reached tables that held it: {log}"
    );
    for (table, sql) in [
        (
            ORDERS,
            "SELECT json_build_object('order_id', order_id, 'customer_id', customer_id, \
             'status', status, 'quantity', quantity, 'price', price::text, 'created_at', \
             (extract(epoch FROM created_at) * 1000000)::bigint) FROM orders",
        ),
        (CUSTOMERS, "SELECT row_to_json(c) FROM customers c"),
        (
            PRODUCTS,
            "SELECT json_build_object('product_id', product_id, 'name', name, 'category', \
             category, 'price', price::text, 'created_at', \
             (extract(epoch FROM created_at) * 1000000)::bigint) FROM products",
        ),
    ] {
        assert_eq!(
            current_rows(&warehouse, table),
            select_json(&pg, sql),
            "{table} equals the source"
        );
    }
}
