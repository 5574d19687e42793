//! Entry points for fuzzers and no-panic tests: decode arbitrary bytes every way a source can
//! deliver them, against a catalog that exercises every column type.

use std::sync::Arc;

use crate::debezium::{
    decode_with, scanner_agrees_with_serde, transaction_role, Decoded, SchemaCache,
};
use crate::event::{Position, RawRecord};
use crate::schema::{Column, ColumnType, Schema, TableCatalog, TableSpec};

/// A catalog with `dbserver1.public.orders` (every column type) and a two-column-key table.
pub fn catalog() -> TableCatalog {
    let mut catalog = TableCatalog::default();
    let orders = TableSpec {
        name: "dbserver1.public.orders".into(),
        schema: Schema::new(vec![
            Column::new("order_id", ColumnType::Int64).not_null(),
            Column::new("customer_id", ColumnType::Int32),
            Column::new("status", ColumnType::String),
            Column::new("quantity", ColumnType::Int32),
            Column::new(
                "price",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            Column::new("created_at", ColumnType::Timestamp),
            Column::new("shipped_at", ColumnType::TimestampTz),
            Column::new("ship_date", ColumnType::Date),
            Column::new("weight", ColumnType::Float64),
            Column::new("gift", ColumnType::Bool),
            Column::new("blob", ColumnType::Bytes),
            Column::new("meta", ColumnType::Json),
        ]),
        key: vec![0],
        keep_before: false,
        decoded: None,
    };
    let lines = TableSpec {
        name: "dbserver1.public.order_lines".into(),
        schema: Schema::new(vec![
            Column::new("order_id", ColumnType::Int64).not_null(),
            Column::new("line", ColumnType::Int32).not_null(),
            Column::new("sku", ColumnType::String),
        ]),
        key: vec![0, 1],
        keep_before: false,
        decoded: None,
    };
    for spec in [orders, lines] {
        // The two names differ, so adding cannot fail.
        let _ = catalog.add(spec);
    }
    catalog
}

/// Decodes `data` as a JSONL line, as a Kafka value with a topic, and split at its first
/// newline into a Kafka key and value; also peeks its transaction, and panics if the decoder's
/// fast scanner reads `data` differently from `serde_json`. Returns how many decoded
/// to events (so the work is not optimized away).
pub fn decode_all_ways(data: &[u8]) -> usize {
    let catalog = catalog();
    let mut cache = SchemaCache::default();
    let bytes: Arc<[u8]> = Arc::from(data);
    let position = Position::new(0, 1);
    let topic = Some(crate::topic::TopicName::new("dbserver1.public.orders"));
    let mut records = vec![
        RawRecord::line(data, position),
        RawRecord {
            key: None,
            value: Some(Arc::clone(&bytes)),
            topic,
            position,
            line: false,
        },
    ];
    if let Some(split) = data.iter().position(|b| *b == b'\n') {
        records.push(RawRecord {
            key: Some(Arc::from(&data[..split])),
            value: (split + 1 < data.len()).then(|| Arc::from(&data[split + 1..])),
            topic,
            position,
            line: false,
        });
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = transaction_role(text);
        if let Err(disagreement) = scanner_agrees_with_serde(text, &catalog) {
            panic!("the fast scanner disagrees with serde_json: {disagreement}");
        }
    }
    records
        .iter()
        .filter(|record| matches!(decode_with(record, &catalog, &mut cache), Decoded::Event(_)))
        .count()
}
