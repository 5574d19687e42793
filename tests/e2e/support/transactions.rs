//! Debezium streams made to test whole transactions: the orders workload's multi-event
//! transactions and tombstones, with malformed records and schema-wrapped envelopes at random
//! places; and the checks that a result at a recorded position holds whole transactions only.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use tributary_engine::sources::generator::{GeneratorConfig, OrdersWorkload};

use crate::support::iceberg::ReplicaOracle;
use crate::support::OrdersOracle;

/// One record of a stream.
#[derive(Debug, Clone)]
pub struct TxRecord {
    /// The order id the record is about (its Kafka key), if it has one.
    pub key: Option<i64>,
    /// The record's text: a JSONL line, or a Kafka value (`None`: a tombstone message).
    pub value: Option<String>,
    /// The transaction of a valid change event; `None` for tombstones and malformed records.
    pub tx: Option<u64>,
}

/// A stream of records (a file, or one Kafka partition).
pub type TxStream = Vec<TxRecord>;

/// A small deterministic generator (xorshift), so fixtures need no extra crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; the same seed gives the same numbers.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// `events` orders change events over `keys` keys (seeded): transactions of 1–4 events, a
/// tombstone after each delete, about one malformed record per `malformed_every` events, and
/// each envelope schema-wrapped or plain at random. Tombstones are JSONL message wrappers
/// (`{"key":…,"value":null}`); [`for_kafka`] turns them into null-valued messages.
pub fn transaction_fixture(events: u64, keys: u64, seed: u64, malformed_every: u64) -> TxStream {
    let workload = |schema| {
        OrdersWorkload::new(GeneratorConfig {
            events: Some(events),
            keys,
            seed,
            schema,
            ..GeneratorConfig::default()
        })
    };
    let (mut plain, mut wrapped) = (workload(false), workload(true));
    let mut rng = Rng::new(seed);
    let (mut line, mut wrapped_line) = (String::new(), String::new());
    let mut stream = Vec::new();
    while plain.next_line(&mut line) && wrapped.next_line(&mut wrapped_line) {
        let json: Json = serde_json::from_str(&line).expect("workload line is JSON");
        let key = plain.last_key() as i64;
        if rng.below(malformed_every) == 0 {
            stream.push(malformed(&line, key, &mut rng));
        }
        if json.get("op").is_none() {
            stream.push(TxRecord {
                key: Some(key),
                value: Some(line.clone()),
                tx: None,
            });
            continue;
        }
        let tx = json["source"]["txId"].as_u64().expect("txId");
        let value = if rng.below(3) == 0 {
            wrapped_line.clone()
        } else {
            line.clone()
        };
        stream.push(TxRecord {
            key: Some(key),
            value: Some(value),
            tx: Some(tx),
        });
    }
    stream
}

/// A record that must become a dead letter without a transaction of its own.
fn malformed(line: &str, key: i64, rng: &mut Rng) -> TxRecord {
    let value = match rng.below(3) {
        0 => "not json at all {".to_owned(),
        1 => line[..line.len() / 2].to_owned(),
        _ => r#"{"op":"c","after":null,"source":{"name":"dbserver1","schema":"public","table":"orders"}}"#.to_owned(),
    };
    TxRecord {
        key: Some(key),
        value: Some(value),
        tx: None,
    }
}

/// The fixture as Kafka partitions (by order id, as Debezium keys them): tombstones become
/// messages without a value.
pub fn for_kafka(stream: &TxStream, partitions: usize) -> Vec<TxStream> {
    let mut out = vec![Vec::new(); partitions];
    for record in stream {
        let key = record.key.unwrap_or(0);
        let mut record = record.clone();
        let tombstone = record
            .value
            .as_deref()
            .and_then(|v| serde_json::from_str::<Json>(v).ok())
            .is_some_and(|json| json.get("value") == Some(&Json::Null));
        if tombstone {
            record.value = None;
        }
        out[key.rem_euclid(partitions as i64) as usize].push(record);
    }
    out
}

/// Checks one result recorded at `included[s]` records of each stream `s`: no transaction has
/// changes on both sides of any stream's position; returns the valid change events included,
/// in stream order (to replay into an oracle).
pub fn whole_transactions_through<'a>(
    streams: &'a [TxStream],
    included: &[usize],
    what: &str,
) -> Vec<&'a str> {
    let mut changes = Vec::new();
    for (s, (stream, count)) in streams.iter().zip(included).enumerate() {
        let before: BTreeSet<u64> = stream[..*count].iter().filter_map(|r| r.tx).collect();
        let split: Vec<u64> = stream[*count..]
            .iter()
            .filter_map(|r| r.tx)
            .filter(|tx| before.contains(tx))
            .collect();
        assert!(
            split.is_empty(),
            "{what}: stream {s} is cut after record {count}, inside transaction(s) {split:?}"
        );
        changes.extend(
            stream[..*count]
                .iter()
                .filter(|r| r.tx.is_some())
                .filter_map(|r| r.value.as_deref()),
        );
    }
    changes
}

/// The replica and status results of `changes`, recomputed from scratch.
pub fn oracles(changes: &[&str]) -> (ReplicaOracle, BTreeMap<String, i64>) {
    let mut replica = ReplicaOracle::default();
    let mut orders = OrdersOracle::default();
    for change in changes {
        replica.apply(change);
        orders.apply(change);
    }
    (replica, orders.status_table())
}
