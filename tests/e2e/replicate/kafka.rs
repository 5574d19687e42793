//! `replicate` over schema-wrapped Debezium JSON from the Kafka topics a pattern matches, on
//! the real broker: tables learnt from their records, a column added mid-stream, a topic
//! created later, and `kill -9` at random moments.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{connect_message, current, normalized, Followed};
use crate::support::iceberg::pyiceberg_available;
use crate::support::kafka::Outgoing;

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
