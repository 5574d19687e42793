//! Kafka sink message encoding: an epoch's consolidated changes as Debezium-style
//! `{"op","batch","before","after"}` values, or as upsert key/value pairs with tombstones.

use std::collections::BTreeMap;

use tributary_operators::dataflow::Time;
use tributary_operators::{Row, Schema};

/// How output changes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaSinkFormat {
    /// One message per changed row: `{"op":"c"|"d","batch":N,"before":…,"after":…}`.
    #[default]
    Debezium,
    /// Key → latest row; a tombstone (null value) for a key removed in the epoch.
    Upsert,
}

/// One message to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The key: the relation's key columns as a JSON object, else the whole row.
    pub key: String,
    /// The value; `None` is a tombstone.
    pub value: Option<String>,
}

/// Encodes rows of one output: knows its schema and key columns.
#[derive(Debug, Clone)]
pub struct Encoder {
    format: KafkaSinkFormat,
    schema: Schema,
    key: Option<(Vec<usize>, Schema)>,
}

impl Encoder {
    /// An encoder for rows of `schema` keyed by the columns `key` (if the relation has one).
    pub fn new(format: KafkaSinkFormat, schema: Schema, key: Option<Vec<usize>>) -> Self {
        let key = key.map(|indices| {
            let columns = indices.iter().map(|&i| schema.columns[i].clone()).collect();
            (indices, Schema::new(columns))
        });
        Encoder {
            format,
            schema,
            key,
        }
    }

    fn key_of(&self, row: &Row) -> String {
        let mut out = String::new();
        match &self.key {
            Some((indices, schema)) => row.project(indices).write_json_object(schema, &mut out),
            None => row.write_json_object(&self.schema, &mut out),
        }
        out
    }

    fn row_json(&self, row: &Row) -> String {
        let mut out = String::new();
        row.write_json_object(&self.schema, &mut out);
        out
    }

    /// The messages for one epoch's consolidated changes, deterministic in order: retractions
    /// before insertions, rows sorted (Debezium); keys sorted (upsert).
    pub fn encode(&self, batch: Time, changes: &[(Row, i64)]) -> Vec<Outgoing> {
        match self.format {
            KafkaSinkFormat::Debezium => self.debezium(batch, changes),
            KafkaSinkFormat::Upsert => self.upsert(changes),
        }
    }

    fn debezium(&self, batch: Time, changes: &[(Row, i64)]) -> Vec<Outgoing> {
        let mut ordered: Vec<&(Row, i64)> = changes.iter().collect();
        ordered.sort_by(|a, b| (a.1 > 0, &a.0).cmp(&(b.1 > 0, &b.0)));
        let mut out = Vec::new();
        for (row, diff) in ordered {
            let row_json = self.row_json(row);
            let value = if *diff > 0 {
                format!(r#"{{"op":"c","batch":{batch},"before":null,"after":{row_json}}}"#)
            } else {
                format!(r#"{{"op":"d","batch":{batch},"before":{row_json},"after":null}}"#)
            };
            let key = self.key_of(row);
            for _ in 0..diff.unsigned_abs() {
                out.push(Outgoing {
                    key: key.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        out
    }

    fn upsert(&self, changes: &[(Row, i64)]) -> Vec<Outgoing> {
        let mut latest: BTreeMap<String, Option<&Row>> = BTreeMap::new();
        for (row, _) in changes.iter().filter(|(_, d)| *d < 0) {
            latest.entry(self.key_of(row)).or_insert(None);
        }
        for (row, _) in changes.iter().filter(|(_, d)| *d > 0) {
            latest.insert(self.key_of(row), Some(row));
        }
        latest
            .into_iter()
            .map(|(key, row)| Outgoing {
                key,
                value: row.map(|r| self.row_json(r)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_operators::{Column, ColumnType, Value};

    fn schema() -> Schema {
        Schema::new(vec![
            Column::new("id", ColumnType::Int64),
            Column::new("status", ColumnType::String),
        ])
    }

    fn row(id: i64, status: &str) -> Row {
        Row::new(vec![Value::Int(id), Value::str(status)])
    }

    #[test]
    fn debezium_retractions_first() {
        let encoder = Encoder::new(KafkaSinkFormat::Debezium, schema(), Some(vec![0]));
        let out = encoder.encode(4, &[(row(1, "paid"), 1), (row(1, "new"), -1)]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].key, r#"{"id":1}"#);
        assert_eq!(
            out[0].value.as_deref(),
            Some(r#"{"op":"d","batch":4,"before":{"id":1,"status":"new"},"after":null}"#)
        );
        assert_eq!(
            out[1].value.as_deref(),
            Some(r#"{"op":"c","batch":4,"before":null,"after":{"id":1,"status":"paid"}}"#)
        );
    }

    #[test]
    fn upsert_keeps_latest_and_tombstones_removed_keys() {
        let encoder = Encoder::new(KafkaSinkFormat::Upsert, schema(), Some(vec![0]));
        let out = encoder.encode(
            1,
            &[
                (row(1, "new"), -1),
                (row(1, "paid"), 1),
                (row(2, "new"), -1),
            ],
        );
        assert_eq!(
            out,
            vec![
                Outgoing {
                    key: r#"{"id":1}"#.into(),
                    value: Some(r#"{"id":1,"status":"paid"}"#.into())
                },
                Outgoing {
                    key: r#"{"id":2}"#.into(),
                    value: None
                },
            ]
        );
    }

    #[test]
    fn unkeyed_rows_are_their_own_keys() {
        let encoder = Encoder::new(KafkaSinkFormat::Upsert, schema(), None);
        let out = encoder.encode(1, &[(row(3, "x"), -1)]);
        assert_eq!(out[0].key, r#"{"id":3,"status":"x"}"#);
        assert_eq!(out[0].value, None);
        assert_eq!("upsert".parse(), Ok(KafkaSinkFormat::Upsert));
    }
}
