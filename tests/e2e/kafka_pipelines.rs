//! `op-counts` and `orders-replica` reading a real Kafka-protocol broker (tansu): a few hundred
//! thousand Debezium events over two topics and several partitions, with tombstones and
//! malformed messages, with 1 and 2 workers; results equal the oracle, and the Kafka sink's
//! topics (upsert and Debezium format) read back to the same tables.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::kafka::{Broker, Received};
use crate::support::kafka_workload::{orders_workload, CUSTOMERS, ORDERS};
use crate::support::{parse_console, run_tributary, run_tributary_logging, table_at, table_of};
use serde_json::Value as Json;

/// Orders change events produced (tombstones, customers events and malformed messages come on
/// top). Debug builds on 2 cores read about 40k events/s, so this keeps the test near a minute.
const EVENTS: u64 = 250_000;

#[test]
fn pipelines_over_kafka_match_the_oracle_and_the_sink_reads_back() {
    let Some(broker) = Broker::start_or_skip("kafka_pipelines") else {
        return;
    };
    broker.create_topic(ORDERS, 4);
    broker.create_topic(CUSTOMERS, 2);
    let workload = orders_workload(EVENTS, 20_000, 11, 4, 2);
    let started = Instant::now();
    broker.produce(&workload.messages);
    eprintln!(
        "produced {} messages ({} tombstones, {} malformed) in {:.1}s",
        workload.messages.len(),
        workload.tombstones,
        workload.malformed,
        started.elapsed().as_secs_f64()
    );
    let source = format!("kafka://{}/{ORDERS},{CUSTOMERS}", broker.addr);
    let dir = tempfile::tempdir().unwrap();

    for workers in ["1", "2"] {
        let started = Instant::now();
        let dead = dir.path().join(format!("dead-{workers}.jsonl"));
        let output = run_tributary_logging(
            &[
                "run",
                "op-counts",
                "--source",
                &source,
                "--until-idle",
                "--workers",
                workers,
                "--epoch-ms",
                "200",
                "--console-format",
                "jsonl",
                "--dead-letter",
                dead.to_str().unwrap(),
            ],
            "warn,tributary_engine::sources::kafka=info",
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The partitions are spread over the workers: each reads 3 of the 6.
        let assigned: Vec<&str> = std::str::from_utf8(&output.stderr)
            .unwrap()
            .lines()
            .filter(|l| l.contains("kafka partitions assigned"))
            .collect();
        for part in 0..workers.parse::<usize>().unwrap() {
            let expected = format!(
                "part={part} parts={workers} partitions={}",
                6 / workers.parse::<usize>().unwrap()
            );
            assert!(
                assigned.iter().any(|l| l.contains(&expected)),
                "{expected} in {assigned:#?}"
            );
        }
        let lines = parse_console(&output.stdout);
        assert_eq!(
            table_at(&lines, "op_counts", u64::MAX),
            workload.op_counts,
            "op-counts, workers={workers}"
        );
        let letters = std::fs::read_to_string(&dead)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("\"kind\":\"late-event\""))
            .count();
        assert_eq!(
            letters, workload.malformed,
            "one dead letter per malformed message"
        );
        eprintln!(
            "op-counts workers={workers}: {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }

    let formats = [("1", "upsert"), ("2", "debezium")];
    for (workers, format) in formats {
        let prefix = format!("replica-{format}");
        broker.create_topic(&format!("{prefix}.status"), 3);
        let started = Instant::now();
        let warehouse = dir.path().join(format!("warehouse-{format}"));
        let output = run_tributary(&[
            "run",
            "orders-replica",
            "--warehouse",
            warehouse.to_str().unwrap(),
            "--source",
            &source,
            "--until-idle",
            "--workers",
            workers,
            "--epoch-ms",
            "200",
            "--console-format",
            "jsonl",
            "--kafka-sink",
            &format!("kafka://{}/{prefix}", broker.addr),
            "--kafka-sink-format",
            format,
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let lines = parse_console(&output.stdout);
        let expected = workload.orders.status_table();
        assert_eq!(
            table_at(&lines, "status", u64::MAX),
            expected,
            "orders-replica, workers={workers}"
        );
        eprintln!(
            "orders-replica workers={workers}: {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let topic = broker.read_all(&format!("{prefix}.status"), Duration::from_secs(2));
        assert!(!topic.is_empty(), "the sink wrote {prefix}.status");
        let read_back = match format {
            "upsert" => fold_upsert(&topic),
            _ => fold_debezium(&topic),
        };
        assert_eq!(read_back, expected, "{format} topic read back");
    }
}

/// Last value per key; tombstones delete.
fn fold_upsert(messages: &[Received]) -> BTreeMap<String, i64> {
    let mut latest: BTreeMap<Vec<u8>, Option<Json>> = BTreeMap::new();
    for m in messages {
        let value = m
            .value
            .as_ref()
            .map(|v| serde_json::from_slice::<Json>(v).unwrap());
        latest.insert(m.key.clone().expect("upsert messages have keys"), value);
    }
    let rows: Vec<Json> = latest.into_values().flatten().collect();
    table_of(&rows)
}

/// `c` adds `after`, `d` removes `before`.
fn fold_debezium(messages: &[Received]) -> BTreeMap<String, i64> {
    let mut table = BTreeMap::new();
    for m in messages {
        let value: Json = serde_json::from_slice(m.value.as_ref().unwrap()).unwrap();
        let (row, diff) = match value["op"].as_str().unwrap() {
            "c" => (&value["after"], 1),
            "d" => (&value["before"], -1),
            other => panic!("unexpected op {other}"),
        };
        *table.entry(row.to_string()).or_insert(0) += diff;
    }
    table.retain(|_, n| *n != 0);
    table
}
