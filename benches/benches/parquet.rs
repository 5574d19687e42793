//! Parquet encoding for the Iceberg sink: a 100k-row batch of replica rows (the `orders` columns
//! plus `cdc_operation` and `cdc_timestamp`) to Arrow, then to a zstd Parquet file in memory.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tributary_engine::sinks::iceberg::{encode_parquet, iceberg_schema, ColumnMap};
use tributary_operators::{Column, ColumnType, Decimal, Row, Value};

const ROWS: i64 = 100_000;

fn bench_parquet(c: &mut Criterion) {
    let mut schema = tributary::tables::orders_schema();
    schema
        .columns
        .push(Column::new("cdc_operation", ColumnType::String).not_null());
    schema
        .columns
        .push(Column::new("cdc_timestamp", ColumnType::Timestamp).not_null());
    let statuses = ["pending", "paid", "shipped", "delivered", "cancelled"].map(Value::str);
    let rows: Vec<Row> = (0..ROWS)
        .map(|i| {
            Row::new(vec![
                Value::Int(i),
                Value::Int(i % 5_000),
                statuses[(i % 5) as usize].clone(),
                Value::Int(1 + i % 10),
                Decimal::new(i128::from(i % 50_000) + 100, 2).map_or(Value::Null, Value::Decimal),
                Value::Timestamp(1_704_067_200_000_000 + i * 1_000),
                Value::str("u"),
                Value::Timestamp(1_704_067_200_000_000 + i * 1_000),
            ])
        })
        .collect();
    let table = iceberg_schema(&schema, &[0]).expect("schema");
    let columns = ColumnMap::new(&schema, &table).expect("column map");
    let mut group = c.benchmark_group("parquet");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    group.bench_function("to_arrow_100k_rows", |b| {
        b.iter(|| columns.to_batch(rows.iter()).expect("batch"))
    });
    let batch = columns.to_batch(rows.iter()).expect("batch");
    group.bench_function("encode_zstd_100k_rows", |b| {
        b.iter(|| encode_parquet(batch.schema(), &batch).expect("parquet"))
    });
    group.finish();
}

criterion_group!(benches, bench_parquet);
criterion_main!(benches);
