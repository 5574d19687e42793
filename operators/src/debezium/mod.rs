//! Debezium JSON codec: envelopes (with or without the `schema`/`payload` wrapper), ops c/u/d/r/t,
//! tombstones, the `source` block, keys, and logical types, into typed [`ChangeEvent`]s.

mod connect;
mod convert;

use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::event::{ChangeEvent, DeadLetterKind, Op, Position, RawRecord};
use crate::row::{Key, Row};
use crate::schema::{TableCatalog, TableSpec};
use crate::value::Value;

pub use connect::FieldSchemas;

/// The outcome of decoding one raw record.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A change to a declared table.
    Event(ChangeEvent),
    /// A valid event for a table this pipeline does not read.
    Skipped {
        /// The event's table name.
        table: String,
    },
    /// A tombstone whose table or key cannot be told (e.g. a bare `null` line); nothing to do.
    BareTombstone,
    /// A malformed record.
    Error(DecodeError),
}

/// Why a record could not be decoded. The message says what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The reason class.
    pub kind: DeadLetterKind,
    /// What went wrong and what to check.
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(kind: DeadLetterKind, message: impl Into<String>) -> Self {
        DecodeError {
            kind,
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// Decodes one raw record against the declared tables.
pub fn decode(raw: &RawRecord, catalog: &TableCatalog) -> Decoded {
    match decode_inner(raw, catalog) {
        Ok(decoded) => decoded,
        Err(error) => Decoded::Error(error),
    }
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Json> {
    serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::new(DeadLetterKind::BadJson, format!("{what} is not JSON: {e}")))
}

fn decode_inner(raw: &RawRecord, catalog: &TableCatalog) -> Result<Decoded> {
    let mut topic = raw.topic.as_deref().map(str::to_owned);
    let (key, value) = match (&raw.value, raw.line) {
        (None, _) => (
            raw.key
                .as_deref()
                .map(|k| parse_json(k, "the key"))
                .transpose()?,
            None,
        ),
        (Some(bytes), false) => (
            raw.key
                .as_deref()
                .map(|k| parse_json(k, "the key"))
                .transpose()?,
            Some(parse_json(bytes, "the value")?),
        ),
        (Some(bytes), true) => {
            let line = parse_json(bytes, "the line")?;
            match unwrap_line(line) {
                LineShape::Wrapped {
                    key,
                    value,
                    topic: line_topic,
                } => {
                    if line_topic.is_some() {
                        topic = line_topic;
                    }
                    (key, value)
                }
                LineShape::Plain(value) => (None, value),
            }
        }
    };
    let key = key.filter(|k| !k.is_null());
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return decode_tombstone(key, topic.as_deref(), raw.position, catalog);
    };
    decode_envelope(key, value, topic.as_deref(), raw.position, catalog)
}

enum LineShape {
    Wrapped {
        key: Option<Json>,
        value: Option<Json>,
        topic: Option<String>,
    },
    Plain(Option<Json>),
}

/// A JSONL line is either a Debezium value, `null`, or `{"key":…,"value":…[,"topic":…]}`.
fn unwrap_line(line: Json) -> LineShape {
    match line {
        Json::Object(mut map)
            if map.contains_key("value")
                && map
                    .keys()
                    .all(|k| matches!(k.as_str(), "key" | "value" | "topic")) =>
        {
            let topic = match map.remove("topic") {
                Some(Json::String(t)) => Some(t),
                _ => None,
            };
            LineShape::Wrapped {
                key: map.remove("key"),
                value: map.remove("value"),
                topic,
            }
        }
        Json::Null => LineShape::Plain(None),
        other => LineShape::Plain(Some(other)),
    }
}

fn decode_tombstone(
    key: Option<Json>,
    topic: Option<&str>,
    position: Position,
    catalog: &TableCatalog,
) -> Result<Decoded> {
    let (Some(key), Some(topic)) = (key, topic) else {
        return Ok(Decoded::BareTombstone);
    };
    let Some(table) = catalog.lookup(topic) else {
        return Ok(Decoded::Skipped {
            table: topic.to_owned(),
        });
    };
    let spec = table_spec(catalog, table)?;
    let key = key_from_kafka_key(&key, spec)?;
    Ok(Decoded::Event(ChangeEvent {
        table,
        op: Op::Tombstone,
        key,
        before: None,
        after: None,
        position,
        event_time_ms: 0,
        tx: None,
    }))
}

fn table_spec(catalog: &TableCatalog, id: u32) -> Result<&TableSpec> {
    catalog
        .get(id)
        .map(|s| &**s)
        .ok_or_else(|| DecodeError::new(DeadLetterKind::UnknownTable, "table id out of range"))
}

fn decode_envelope(
    key: Option<Json>,
    value: Json,
    topic: Option<&str>,
    position: Position,
    catalog: &TableCatalog,
) -> Result<Decoded> {
    let Json::Object(mut outer) = value else {
        return Err(DecodeError::new(
            DeadLetterKind::BadEnvelope,
            "the value is not a JSON object",
        ));
    };
    // `{"schema":…,"payload":…}` (JsonConverter with schemas.enable=true) or the bare payload.
    let (mut payload, fields) = if outer.contains_key("payload") && !outer.contains_key("op") {
        let schema = outer.remove("schema");
        let Some(Json::Object(payload)) = outer.remove("payload") else {
            return Err(DecodeError::new(
                DeadLetterKind::BadEnvelope,
                "`payload` is not an object",
            ));
        };
        (
            payload,
            schema
                .as_ref()
                .map(FieldSchemas::from_envelope_schema)
                .unwrap_or_default(),
        )
    } else {
        (outer, FieldSchemas::default())
    };

    let op = match payload.get("op") {
        Some(Json::String(code)) => Op::from_code(code).ok_or_else(|| {
            DecodeError::new(
                DeadLetterKind::UnknownOp,
                format!("unknown op `{code}`; Debezium ops are c, u, d, r and t"),
            )
        })?,
        Some(_) => {
            return Err(DecodeError::new(
                DeadLetterKind::UnknownOp,
                "`op` is not a string",
            ))
        }
        None => {
            return Err(DecodeError::new(
                DeadLetterKind::BadEnvelope,
                "no `op` field; is this a Debezium change event (and not an unwrapped row)?",
            ))
        }
    };
    let source = match payload.remove("source") {
        Some(Json::Object(source)) => source,
        _ => Map::new(),
    };
    let table_name = table_name(&source).or_else(|| topic.map(str::to_owned)).ok_or_else(|| {
        DecodeError::new(
            DeadLetterKind::UnknownTable,
            "cannot tell the table: the `source` block has no name/schema/table and there is no topic",
        )
    })?;
    let Some(table) = catalog.lookup(&table_name) else {
        return Ok(Decoded::Skipped { table: table_name });
    };
    let spec = table_spec(catalog, table)?;

    let event_time_ms = source
        .get("ts_ms")
        .and_then(Json::as_i64)
        .or_else(|| payload.get("ts_ms").and_then(Json::as_i64))
        .unwrap_or(0);
    let tx = transaction_id(&source, &payload);

    let before = take_row(&mut payload, "before", spec, fields.before())?;
    let after = take_row(&mut payload, "after", spec, fields.after())?;

    if matches!(op, Op::Create | Op::Update | Op::Read) && after.is_none() {
        return Err(DecodeError::new(
            DeadLetterKind::MissingAfter,
            format!(
                "op={} needs `after`; is the connector's column filter or `after` handling dropping it?",
                op.code()
            ),
        ));
    }
    let key = if op == Op::Truncate {
        Key::new(Vec::new())
    } else if let Some(kafka_key) = key {
        key_from_kafka_key(&kafka_key, spec)?
    } else {
        let row = after.as_ref().or(before.as_ref()).ok_or_else(|| {
            DecodeError::new(
                DeadLetterKind::MissingKey,
                "op=d without a Kafka key needs `before` to find the key; set REPLICA IDENTITY \
                 or keep the message key",
            )
        })?;
        key_from_row(row, spec)?
    };
    Ok(Decoded::Event(ChangeEvent {
        table,
        op,
        key,
        before,
        after,
        position,
        event_time_ms,
        tx,
    }))
}

/// Debezium's topic naming: `source.name` + `.` + (`schema` or `db`) + `.` + `table`.
fn table_name(source: &Map<String, Json>) -> Option<String> {
    let name = source.get("name")?.as_str()?;
    let table = source.get("table")?.as_str()?;
    let namespace = source
        .get("schema")
        .and_then(Json::as_str)
        .or_else(|| source.get("db").and_then(Json::as_str))?;
    Some(format!("{name}.{namespace}.{table}"))
}

fn transaction_id(source: &Map<String, Json>, payload: &Map<String, Json>) -> Option<Arc<str>> {
    let from_tx_block = payload.get("transaction").and_then(|t| t.get("id"));
    let id = source.get("txId").or(from_tx_block)?;
    match id {
        Json::String(s) => Some(Arc::from(s.as_str())),
        Json::Number(n) => Some(Arc::from(n.to_string().as_str())),
        _ => None,
    }
}

fn take_row(
    payload: &mut Map<String, Json>,
    field: &str,
    spec: &TableSpec,
    schemas: Option<&connect::StructSchema>,
) -> Result<Option<Row>> {
    match payload.remove(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(object)) => row_from_object(&object, spec, schemas, field).map(Some),
        Some(_) => Err(DecodeError::new(
            DeadLetterKind::BadEnvelope,
            format!("`{field}` is neither an object nor null"),
        )),
    }
}

fn row_from_object(
    object: &Map<String, Json>,
    spec: &TableSpec,
    schemas: Option<&connect::StructSchema>,
    field: &str,
) -> Result<Row> {
    let mut values = Vec::with_capacity(spec.schema.len());
    for column in &spec.schema.columns {
        let json = object.get(&*column.name).unwrap_or(&Json::Null);
        let logical = schemas.and_then(|s| s.field(&column.name));
        let value = convert::to_value(json, column.ty, logical).map_err(|why| {
            DecodeError::new(
                DeadLetterKind::TypeMismatch,
                format!("`{field}.{}` ({}): {why}", column.name, column.ty),
            )
        })?;
        if value.is_null() && !column.nullable {
            return Err(DecodeError::new(
                DeadLetterKind::TypeMismatch,
                format!(
                    "`{field}.{}` is null or missing but declared NOT NULL",
                    column.name
                ),
            ));
        }
        values.push(value);
    }
    Ok(Row::new(values))
}

fn key_from_row(row: &Row, spec: &TableSpec) -> Result<Key> {
    let key = row.project(&spec.key);
    if key.iter().any(Value::is_null) {
        return Err(DecodeError::new(
            DeadLetterKind::MissingKey,
            format!(
                "primary key ({}) is null or missing",
                spec.key_names().join(", ")
            ),
        ));
    }
    Ok(Key(key))
}

/// The Kafka key is `{"col":…}` or `{"schema":…,"payload":{"col":…}}`.
fn key_from_kafka_key(key: &Json, spec: &TableSpec) -> Result<Key> {
    let (object, schemas) = match key {
        Json::Object(map) if map.contains_key("payload") && map.contains_key("schema") => (
            map.get("payload").and_then(Json::as_object),
            map.get("schema").map(connect::StructSchema::from_schema),
        ),
        Json::Object(map) => (Some(map), None),
        _ => (None, None),
    };
    let object = object.ok_or_else(|| {
        DecodeError::new(
            DeadLetterKind::MissingKey,
            "the Kafka key is not a JSON object",
        )
    })?;
    let mut values = Vec::with_capacity(spec.key.len());
    for &index in &spec.key {
        let column = &spec.schema.columns[index];
        let json = object.get(&*column.name).unwrap_or(&Json::Null);
        let logical = schemas.as_ref().and_then(|s| s.field(&column.name));
        let value = convert::to_value(json, column.ty, logical).map_err(|why| {
            DecodeError::new(
                DeadLetterKind::TypeMismatch,
                format!("key `{}`: {why}", column.name),
            )
        })?;
        if value.is_null() {
            return Err(DecodeError::new(
                DeadLetterKind::MissingKey,
                format!("the Kafka key lacks key column `{}`", column.name),
            ));
        }
        values.push(value);
    }
    Ok(Key::new(values))
}

#[cfg(test)]
mod tests;
