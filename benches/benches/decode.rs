//! Debezium decoding throughput: plain and schema-wrapped envelopes of the orders workload, and
//! reading Kafka message keys (what routes each record to its key's worker).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tributary_benches::{orders_catalog, workload_lines};
use tributary_engine::sources::generator::{kafka_key, ORDERS_TOPIC};
use tributary_operators::debezium::{decode_with, kafka_record_key, Decoded, SchemaCache};
use tributary_operators::{Position, RawRecord, TopicName};

fn bench_decode(c: &mut Criterion) {
    let catalog = orders_catalog();
    let mut group = c.benchmark_group("decode");
    for (name, schema) in [("plain", false), ("schema_wrapped", true)] {
        let records: Vec<RawRecord> = workload_lines(10_000, schema)
            .into_iter()
            .enumerate()
            .map(|(i, line)| RawRecord::line(line.as_bytes(), Position::new(0, i as u64 + 1)))
            .collect();
        let bytes: usize = records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len()))
            .sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| {
            let mut cache = SchemaCache::default();
            b.iter(|| {
                let mut events = 0usize;
                for record in &records {
                    if matches!(decode_with(record, &catalog, &mut cache), Decoded::Event(_)) {
                        events += 1;
                    }
                }
                events
            })
        });
    }
    group.finish();
}

fn bench_kafka_keys(c: &mut Criterion) {
    let catalog = orders_catalog();
    let mut group = c.benchmark_group("kafka_key");
    for (name, schema) in [("plain", false), ("schema_wrapped", true)] {
        let records: Vec<RawRecord> = (0..10_000u64)
            .map(|i| RawRecord {
                key: Some(Arc::from(kafka_key(100_000 + i * 7, schema).as_bytes())),
                value: None,
                topic: Some(TopicName::new(ORDERS_TOPIC)),
                position: Position::new(0, i),
                line: false,
            })
            .collect();
        group.throughput(Throughput::Elements(records.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                records
                    .iter()
                    .filter(|record| kafka_record_key(record, &catalog).is_some())
                    .count()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_kafka_keys);
criterion_main!(benches);
