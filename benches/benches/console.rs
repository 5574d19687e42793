//! Console sink formatting: a Spark-style table and JSONL lines for 1,000 changed rows.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tributary_engine::sinks::console::{render_jsonl, render_table};
use tributary_operators::{Column, ColumnType, Decimal, Row, Schema, Value};

fn bench_console(c: &mut Criterion) {
    let schema = Schema::new(vec![
        Column::new("window_start", ColumnType::Timestamp),
        Column::new("status", ColumnType::String),
        Column::new("order_count", ColumnType::Int64),
        Column::new(
            "total_revenue",
            ColumnType::Decimal {
                precision: 38,
                scale: 2,
            },
        ),
    ]);
    let rows: Vec<(Row, i64)> = (0..1000i64)
        .map(|i| {
            let row = Row::new(vec![
                Value::Timestamp(1_704_067_200_000_000 + i * 10_000_000),
                Value::str(["pending", "paid", "shipped"][(i % 3) as usize]),
                Value::Int(i * 7),
                Decimal::new(i128::from(i) * 12_345, 2).map_or(Value::Null, Value::Decimal),
            ]);
            (row, if i % 2 == 0 { 1 } else { -1 })
        })
        .collect();
    let refs: Vec<&Row> = rows.iter().map(|(r, _)| r).collect();
    let mut group = c.benchmark_group("console");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("table_1000_rows", |b| {
        b.iter(|| render_table(7, "status", &schema, &refs, 1000))
    });
    group.bench_function("jsonl_1000_rows", |b| {
        b.iter(|| render_jsonl(7, "status", &schema, &rows))
    });
    group.finish();
}

criterion_group!(benches, bench_console);
criterion_main!(benches);
