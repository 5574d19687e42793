//! A second independent reader: iceberg-rust's own table scan (the `iceberg` crate's
//! `TableScan`, which — unlike pyiceberg 0.12 — applies equality deletes), over a table in a
//! warehouse's SQLite catalog. Rows come out in the same JSON form as `read_iceberg.py` gives
//! (timestamps as integer microseconds, decimals as text), sorted the same way.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use futures::TryStreamExt;
use iceberg::io::FileIO;
use iceberg::table::StaticTable;
use iceberg::TableIdent;
use serde_json::{json, Value as Json};

use crate::support::iceberg::SnapshotRead;

/// Every snapshot of `table` (`namespace.name`), oldest first, with its rows.
pub fn read_table_iceberg_rust(warehouse: &Path, table: &str) -> Vec<SnapshotRead> {
    let (namespace, name) = table.rsplit_once('.').expect("namespace.table");
    let catalog = rusqlite::Connection::open(warehouse.join("catalog.db")).expect("catalog.db");
    let location: String = catalog
        .query_row(
            "SELECT metadata_location FROM iceberg_tables WHERE table_namespace = ?1 AND table_name = ?2",
            [namespace, name],
            |row| row.get(0),
        )
        .expect("the table is in the catalog");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ident = TableIdent::from_strs([namespace, name]).expect("table name");
        let table = StaticTable::from_metadata_file(&location, ident, FileIO::new_with_fs())
            .await
            .expect("metadata")
            .into_table();
        let mut snapshots: Vec<_> = table.metadata().snapshots().cloned().collect();
        snapshots.sort_by_key(|s| s.sequence_number());
        let mut read = Vec::new();
        for snapshot in snapshots {
            let batches: Vec<RecordBatch> = table
                .scan()
                .snapshot_id(snapshot.snapshot_id())
                .build()
                .expect("scan")
                .to_arrow()
                .await
                .expect("arrow stream")
                .try_collect()
                .await
                .expect("rows");
            let mut rows: Vec<Json> = batches.iter().flat_map(rows_of).collect();
            rows.sort_by_key(|r| r.to_string());
            read.push(SnapshotRead {
                id: snapshot.snapshot_id(),
                summary: snapshot
                    .summary()
                    .additional_properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>(),
                operation: snapshot.summary().operation.as_str().to_owned(),
                rows,
            });
        }
        read
    })
}

fn rows_of(batch: &RecordBatch) -> Vec<Json> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|i| {
            let mut row = serde_json::Map::new();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                row.insert(field.name().clone(), value(column.as_ref(), i));
            }
            Json::Object(row)
        })
        .collect()
}

fn value(column: &dyn Array, i: usize) -> Json {
    if column.is_null(i) {
        return Json::Null;
    }
    match column.data_type() {
        DataType::Int32 => json!(column.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(i)),
        DataType::Utf8 => json!(column.as_string::<i32>().value(i)),
        DataType::Timestamp(..) => {
            json!(column.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Decimal128(_, scale) => {
            let unscaled = column.as_primitive::<Decimal128Type>().value(i);
            json!(decimal_text(unscaled, *scale))
        }
        other => panic!("read_table_iceberg_rust: no conversion for {other}"),
    }
}

/// `unscaled × 10^-scale` as Python's `str(Decimal)` writes it (e.g. `19.90`, `-0.05`).
fn decimal_text(unscaled: i128, scale: i8) -> String {
    let negative = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale.max(0) as usize;
    let text = if scale == 0 {
        digits
    } else if digits.len() > scale {
        format!(
            "{}.{}",
            &digits[..digits.len() - scale],
            &digits[digits.len() - scale..]
        )
    } else {
        format!("0.{}{digits}", "0".repeat(scale - digits.len()))
    };
    if negative {
        format!("-{text}")
    } else {
        text
    }
}
