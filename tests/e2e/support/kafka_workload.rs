//! The orders workload as Kafka messages: Debezium values keyed by primary key (one key's
//! events stay in one partition), tombstones, a second topic the pipelines skip, and malformed
//! messages; with oracles for the final state and the op counts.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use tributary_engine::sources::generator::{GeneratorConfig, OrdersWorkload};

use crate::support::iceberg::ReplicaOracle;
use crate::support::kafka::Outgoing;
use crate::support::{table_of, OrdersOracle};

/// The orders topic (Debezium `server.schema.table`).
pub const ORDERS: &str = "dbserver1.public.orders";
/// A second table's topic, which the seed pipelines do not read.
pub const CUSTOMERS: &str = "dbserver1.public.customers";

/// Messages to produce and what the pipelines must compute from them.
#[derive(Debug)]
pub struct KafkaWorkload {
    /// In production order.
    pub messages: Vec<Outgoing>,
    /// Per message: whether it is an orders change event (counted by `op-counts`).
    pub counted: Vec<bool>,
    /// Final state of `orders`.
    pub orders: OrdersOracle,
    /// Final rows of `orders-replica`'s Iceberg replica.
    pub replica: ReplicaOracle,
    /// `op, event_count, total_quantity` as a table.
    pub op_counts: BTreeMap<String, i64>,
    /// Malformed messages included (each must become one dead letter).
    pub malformed: usize,
    /// Tombstones included.
    pub tombstones: usize,
}

/// `events` orders change events over `keys` keys in `order_partitions` partitions, plus
/// customers events (one per 20 orders events) in `customer_partitions` partitions and one
/// malformed orders message per 5,000 events.
pub fn orders_workload(
    events: u64,
    keys: u64,
    seed: u64,
    order_partitions: i32,
    customer_partitions: i32,
) -> KafkaWorkload {
    let mut workload = OrdersWorkload::new(GeneratorConfig {
        events: Some(events),
        keys,
        seed,
        ..GeneratorConfig::default()
    });
    let mut out = KafkaWorkload {
        messages: Vec::new(),
        counted: Vec::new(),
        orders: OrdersOracle::default(),
        replica: ReplicaOracle::default(),
        op_counts: BTreeMap::new(),
        malformed: 0,
        tombstones: 0,
    };
    let mut counts: BTreeMap<String, (i64, Option<i64>)> = BTreeMap::new();
    let mut line = String::new();
    let mut produced = 0u64;
    while workload.next_line(&mut line) {
        let json: Json = serde_json::from_str(&line).unwrap();
        out.orders.apply(&line);
        out.replica.apply(&line);
        if json.get("op").is_none() {
            // {"key":{"order_id":K},"value":null,"topic":…}: a tombstone.
            let id = json["key"]["order_id"].as_i64().unwrap();
            push(
                &mut out,
                ORDERS,
                partition_of(id, order_partitions),
                key(id),
                None,
                false,
            );
            out.tombstones += 1;
            continue;
        }
        let op = json["op"].as_str().unwrap().to_owned();
        let row = if json["after"].is_null() {
            &json["before"]
        } else {
            &json["after"]
        };
        let id = row["order_id"].as_i64().unwrap();
        let entry = counts.entry(op).or_default();
        entry.0 += 1;
        if let Some(q) = json["after"]["quantity"].as_i64() {
            *entry.1.get_or_insert(0) += q;
        }
        let partition = partition_of(id, order_partitions);
        push(
            &mut out,
            ORDERS,
            partition,
            key(id),
            Some(line.clone()),
            true,
        );
        produced += 1;
        if produced.is_multiple_of(20) {
            let customer = (produced / 20) as i64;
            let value = format!(
                r#"{{"before":null,"after":{{"id":{customer},"name":"c{customer}"}},"source":{{"name":"dbserver1","schema":"public","table":"customers","ts_ms":1704067200000}},"op":"c","ts_ms":1704067200001}}"#
            );
            let key = format!(r#"{{"id":{customer}}}"#);
            let p = partition_of(customer, customer_partitions);
            push(&mut out, CUSTOMERS, p, key, Some(value), false);
        }
        if produced.is_multiple_of(5000) {
            let bad = match (produced / 5000) % 3 {
                0 => "not json at all {".to_owned(),
                1 => r#"{"op":"c","after":null,"source":{"name":"dbserver1","schema":"public","table":"orders"}}"#.to_owned(),
                _ => line.replace(&format!(r#""order_id":{id}"#), r#""order_id":"x""#),
            };
            push(&mut out, ORDERS, partition, key(id), Some(bad), false);
            out.malformed += 1;
        }
    }
    let rows: Vec<Json> = counts
        .into_iter()
        .map(|(op, (n, q))| serde_json::json!({"op": op, "event_count": n, "total_quantity": q}))
        .collect();
    out.op_counts = table_of(&rows);
    out
}

fn key(id: i64) -> String {
    format!(r#"{{"order_id":{id}}}"#)
}

fn partition_of(id: i64, partitions: i32) -> i32 {
    (id.rem_euclid(i64::from(partitions))) as i32
}

fn push(
    out: &mut KafkaWorkload,
    topic: &str,
    partition: i32,
    key: String,
    value: Option<String>,
    counted: bool,
) {
    out.messages.push(Outgoing {
        topic: topic.to_owned(),
        partition,
        key: Some(key.into_bytes()),
        value: value.map(String::into_bytes),
    });
    out.counted.push(counted);
}
