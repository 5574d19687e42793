//! `replicate` over files: tables declared in `tributary.toml` for plain events (undeclared
//! ones are `no-schema` dead letters), bad input in schema-wrapped events, and per-table
//! options (key, partition spec, delete mode).

use serde_json::Value as Json;

use super::{connect_message, current, normalized};
use crate::support::iceberg::{pyiceberg_available, read_table};

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
