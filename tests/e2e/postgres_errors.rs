//! PostgreSQL set-up mistakes give one clear error line that says what to do (`wal_level`,
//! missing publication, a role without REPLICATION, an unreachable server), and a published
//! table without primary key or REPLICA IDENTITY a warning; `create_publication=true` creates
//! the missing publication; a schema change mid-stream (ADD and DROP COLUMN) is reported and
//! the rows that follow arrive with the new shape, checked with pyiceberg; `sslmode=` gives
//! TLS on both connections against a TLS-only server.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use serde_json::Value as Json;

use crate::support::iceberg::{pyiceberg_available, read_table};
use crate::support::postgres::Postgres;
use crate::support::run_tributary;

const ORDERS_DDL: &str = "CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id bigint, \
    status text, quantity int, price numeric(10,2), created_at timestamp)";

/// Runs `orders-replica` to idle and returns (success, stderr).
fn replica(source: &str, warehouse: &std::path::Path) -> (bool, String) {
    let output = run_tributary(&[
        "run",
        "orders-replica",
        "--source",
        source,
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--until-idle",
        "--console-format",
        "jsonl",
    ]);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_fails_with(source: &str, warehouse: &std::path::Path, needles: &[&str]) {
    let (ok, stderr) = replica(source, warehouse);
    assert!(!ok, "expected a failure for {source}");
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error_lines.len(), 1, "one error line, got: {stderr}");
    for needle in needles {
        assert!(
            error_lines[0].contains(needle),
            "`{needle}` missing from: {}",
            error_lines[0]
        );
    }
}

#[test]
fn wal_level_other_than_logical_is_explained() {
    let Some(pg) = Postgres::start_with_or_skip("postgres_errors", &[("wal_level", "replica")])
    else {
        return;
    };
    pg.psql("postgres", ORDERS_DDL);
    let dir = tempfile::tempdir().unwrap();
    assert_fails_with(
        &pg.url("postgres", "postgres"),
        dir.path(),
        &[
            "wal_level is `replica`",
            "ALTER SYSTEM SET wal_level = logical",
        ],
    );
}

#[test]
fn setup_mistakes_are_explained_and_a_schema_change_is_reported() {
    let Some(pg) = Postgres::start_or_skip("postgres_errors") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    pg.psql("postgres", ORDERS_DDL);
    pg.psql(
        "postgres",
        "INSERT INTO orders VALUES (1, 10, 'pending', 2, 9.99, '2024-01-02 03:04:05.678901'), \
         (2, 11, 'paid', 1, 5.00, '2024-02-03 04:05:06')",
    );
    let url = pg.url("postgres", "postgres");

    // Nothing listens on port 1.
    assert_fails_with(
        "postgres://postgres@127.0.0.1:1/postgres",
        &warehouse,
        &["connect to 127.0.0.1:1", "is the server running"],
    );
    // No publication yet.
    assert_fails_with(
        &url,
        &warehouse,
        &[
            "publication `tributary` does not exist",
            "CREATE PUBLICATION",
        ],
    );
    // A published table without a primary key: its inserts replicate, with a warning that
    // PostgreSQL rejects its updates and deletes.
    pg.psql(
        "postgres",
        "CREATE TABLE events (at timestamp, what text); \
         CREATE PUBLICATION keyless FOR TABLE orders, events",
    );
    let keyless_warehouse = dir.path().join("keyless");
    let (ok, stderr) = replica(
        &format!("{url}?publication=keyless&slot=keyless"),
        &keyless_warehouse,
    );
    assert!(ok, "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains("\"public\".\"events\""))
        .unwrap_or_else(|| panic!("a warning naming events: {stderr}"));
    assert!(warning.contains("REPLICA IDENTITY FULL"), "{warning}");
    // A role that may log in but not replicate.
    pg.psql(
        "postgres",
        "CREATE ROLE reader LOGIN; GRANT SELECT ON orders TO reader",
    );
    assert_fails_with(
        &format!("{}?create_publication=true", pg.url("reader", "postgres")),
        &warehouse,
        &[
            "may not replicate",
            "ALTER ROLE \"reader\" WITH REPLICATION",
        ],
    );

    // create_publication=true makes it work (FOR ALL TABLES would include `events`, so give
    // it a key first).
    pg.psql("postgres", "ALTER TABLE events REPLICA IDENTITY FULL");
    let (ok, stderr) = replica(&format!("{url}?create_publication=true"), &warehouse);
    assert!(ok, "{stderr}");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT puballtables FROM pg_publication WHERE pubname = 'tributary'"
        )
        .trim(),
        "t"
    );

    // Schema changes mid-stream: a new column is ignored, a dropped one arrives as null.
    pg.psql(
        "postgres",
        "ALTER TABLE orders ADD COLUMN note text; \
         INSERT INTO orders VALUES (3, 12, 'paid', 4, 1.25, '2024-03-04 05:06:07', 'gift'); \
         ALTER TABLE orders DROP COLUMN quantity; \
         INSERT INTO orders VALUES (4, 13, 'shipped', 2.50, '2024-04-05 06:07:08', 'rush'); \
         UPDATE orders SET status = 'delivered' WHERE order_id = 1",
    );
    let (ok, stderr) = replica(&url, &warehouse);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("schema change in the source table"),
        "the schema change is reported: {stderr}"
    );
    assert!(stderr.contains("dropped=[\"quantity\"]"), "{stderr}");

    if !pyiceberg_available() {
        return;
    }
    let (snapshots, _) = read_table(&warehouse, "demo.orders_realtime_replica", true);
    let rows = &snapshots.last().unwrap().rows;
    let by_id = |id: i64| -> &Json { rows.iter().find(|r| r["order_id"] == id).unwrap() };
    assert_eq!(rows.len(), 4);
    assert_eq!(by_id(1)["status"], "delivered");
    assert_eq!(by_id(1)["quantity"], Json::Null, "updated after the drop");
    assert_eq!(by_id(1)["created_at"], 1_704_164_645_678_901i64);
    assert_eq!(by_id(2)["quantity"], 1, "untouched since the snapshot");
    assert_eq!(by_id(2)["cdc_operation"], "r");
    assert_eq!(by_id(3)["quantity"], 4);
    assert_eq!(by_id(3)["price"], "1.25");
    assert_eq!(by_id(4)["quantity"], Json::Null);
    assert_eq!(by_id(4)["status"], "shipped");
    assert_eq!(by_id(4)["cdc_operation"], "c");
}

/// `sslmode=` in the source URL: against a server that accepts only TLS (`hostssl`), `require`
/// and `verify-full` (with the server's certificate as `sslrootcert`) stream over TLS — the
/// server logs both the control and the replication connection as SSL — and `disable` is
/// refused with the server's reason.
#[test]
fn tls_is_used_when_asked_and_verified_in_verify_full() {
    if crate::support::postgres::postgres_bindir().is_none() {
        let _ = Postgres::start_or_skip("postgres_errors"); // says why (or fails under CI)
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (crt, key, hba) = (
        certs.path().join("server.crt"),
        certs.path().join("server.key"),
        certs.path().join("pg_hba.conf"),
    );
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req");
    std::fs::write(
        &hba,
        "hostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    for (path, mode) in [(&key, "600"), (&crt, "644"), (&hba, "644")] {
        let _ = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(path)
            .status();
        let _ = std::process::Command::new("chmod")
            .arg(mode)
            .arg(path)
            .status();
    }
    let _ = std::process::Command::new("chmod")
        .args(["755"])
        .arg(certs.path())
        .status();
    let settings = [
        ("ssl", "on".to_owned()),
        ("ssl_cert_file", crt.display().to_string()),
        ("ssl_key_file", key.display().to_string()),
        ("hba_file", hba.display().to_string()),
        ("log_connections", "on".to_owned()),
    ];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Some(pg) = Postgres::start_with_or_skip("postgres_errors", &settings) else {
        return;
    };
    pg.psql("postgres", ORDERS_DDL);
    pg.psql(
        "postgres",
        "INSERT INTO orders VALUES (1, 10, 'paid', 2, 9.99, '2024-01-02 03:04:05'); \
         CREATE PUBLICATION tributary FOR TABLE orders",
    );
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres", "postgres");

    let (ok, stderr) = replica(&format!("{url}?sslmode=require"), &dir.path().join("a"));
    assert!(ok, "{stderr}");
    let log = pg.log();
    assert!(
        log.lines()
            .any(|l| l.contains("replication connection authorized") && l.contains("SSL enabled")),
        "the replication connection used TLS: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("connection authorized")
            && l.contains("application_name=tributary")
            && l.contains("SSL enabled")),
        "the control connection used TLS: {log}"
    );

    let verified = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        crt.display()
    );
    let (ok, stderr) = replica(&verified, &dir.path().join("b"));
    assert!(
        ok,
        "verify-full against the server's own certificate: {stderr}"
    );

    assert_fails_with(
        &format!("{url}?sslmode=disable"),
        &dir.path().join("c"),
        &["no encryption"],
    );
}
