//! Debezium JSON codec: envelopes (with or without the `schema`/`payload` wrapper), ops c/u/d/r/t,
//! tombstones, the `source` block, keys, and logical types, into typed [`ChangeEvent`]s. Parsing
//! borrows from the input and reads declared columns straight into rows.

#[cfg(any(test, feature = "fuzzing"))]
mod agreement;
mod connect;
mod convert;
mod describe;
mod envelope;
mod flat_key;
mod order;
mod row;
mod scan;

use std::sync::Arc;

use serde::de::DeserializeSeed;

use crate::event::{ChangeEvent, DeadLetterKind, Op, Position, RawRecord};
use crate::row::{Key, Row};
use crate::schema::{TableCatalog, TableId, TableSpec};
use crate::value::Value;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use agreement::scanner_agrees_with_serde;
pub use connect::FieldSchemas;
pub use describe::{describe, DescribedTable};
use envelope::Record;
pub use envelope::{transaction_role, TxRole, UNAVAILABLE_VALUE};

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
    fn new(kind: DeadLetterKind, message: impl Into<String>) -> Self {
        DecodeError {
            kind,
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// Parsed Connect schemas, by the schema's text: schema-wrapped streams repeat one schema per
/// table, so each is parsed once.
#[derive(Debug, Default)]
pub struct SchemaCache {
    parsed: rustc_hash::FxHashMap<Box<str>, Arc<FieldSchemas>>,
    /// The schema text seen last, to recognise the next record's schema by comparing bytes
    /// instead of parsing it.
    last: Option<(Arc<str>, Arc<FieldSchemas>)>,
    /// The table of the record decoded last: the next record's `after` is read as its row in
    /// the same pass that scans the record (checked against the record's own table).
    last_table: Option<TableId>,
    /// The order of fields in the records decoded so far, to recognise the next ones' fields.
    orders: scan::FieldOrders,
    /// A schema not seen before was parsed since [`SchemaCache::take_fresh`] was last asked.
    fresh: bool,
}

/// Most distinct schemas kept; beyond that the cache starts over.
const SCHEMA_CACHE_LIMIT: usize = 256;

impl SchemaCache {
    fn get(&mut self, schema: &str) -> Arc<FieldSchemas> {
        if let Some(found) = self.parsed.get(schema) {
            return Arc::clone(found);
        }
        if self.parsed.len() >= SCHEMA_CACHE_LIMIT {
            self.parsed.clear();
        }
        let parsed = Arc::new(
            serde_json::from_str::<serde_json::Value>(schema)
                .map(|s| FieldSchemas::from_envelope_schema(&s))
                .unwrap_or_default(),
        );
        self.parsed.insert(schema.into(), Arc::clone(&parsed));
        self.last = Some((Arc::from(schema), Arc::clone(&parsed)));
        self.fresh = true;
        parsed
    }

    /// True (once) when a record decoded since the last call carried a Connect schema not
    /// seen before (so the table it describes may have changed).
    pub fn take_fresh(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }

    /// Fast path for `{"schema":<the last schema>,"payload":{…}}` as Kafka's JsonConverter
    /// writes it: the schema is matched byte for byte and the payload parsed directly into
    /// `record`. `None` sends the record down the general path.
    fn split_known<'a>(
        &mut self,
        text: &'a str,
        catalog: &TableCatalog,
        record: &mut Record<'a>,
    ) -> Option<Arc<FieldSchemas>> {
        let (schema, parsed) = self.last.as_ref()?;
        let rest = text.strip_prefix("{\"schema\":")?.strip_prefix(&**schema)?;
        let payload = rest
            .strip_prefix(",\"payload\":")?
            .trim_end()
            .strip_suffix('}')?;
        let guess = guess(self.last_table, catalog, parsed);
        if scan::record_into(payload, &mut self.orders, scan::Level::Inner, guess, record).is_none()
        {
            *record = serde_json::from_str(payload).ok()?;
        }
        Some(Arc::clone(parsed))
    }

    /// Parses a record into `record`, guessing that its `after` is a row of the last record's
    /// table and recognising its fields by the orders learnt so far.
    fn parse<'a>(
        &mut self,
        text: &'a str,
        what: &str,
        level: scan::Level,
        (catalog, schemas): (&TableCatalog, &FieldSchemas),
        record: &mut Record<'a>,
    ) -> Result<()> {
        let guess = guess(self.last_table, catalog, schemas);
        if scan::record_into(text, &mut self.orders, level, guess, record).is_none() {
            *record = parse(text, what)?;
        }
        Ok(())
    }
}

/// The table the next `after` probably belongs to (the last record's), with its Connect schemas.
fn guess<'c>(
    last_table: Option<TableId>,
    catalog: &'c TableCatalog,
    schemas: &'c FieldSchemas,
) -> Option<scan::AfterGuess<'c>> {
    let table = last_table?;
    let spec = catalog.get(table)?;
    Some(scan::AfterGuess {
        table,
        spec,
        seed: row::RowSeed {
            schema: &spec.schema,
            only: spec.decoded.as_deref(),
            logical: schemas.after(),
        },
    })
}

/// Decodes one raw record against the declared tables (without a schema cache).
pub fn decode(raw: &RawRecord, catalog: &TableCatalog) -> Decoded {
    decode_with(raw, catalog, &mut SchemaCache::default())
}

/// Decodes one raw record against the declared tables, reusing parsed Connect schemas.
pub fn decode_with(raw: &RawRecord, catalog: &TableCatalog, cache: &mut SchemaCache) -> Decoded {
    match decode_inner(raw, catalog, cache) {
        Ok(decoded) => {
            if let Decoded::Event(event) = &decoded {
                cache.last_table = Some(event.table);
            }
            decoded
        }
        Err(error) => Decoded::Error(error),
    }
}

/// The primary key that a Kafka record's message key holds, read without its value and
/// cheaply: so that the record can be decoded on the worker that keeps its key's state. `None`
/// for a record without key or topic, or a topic that is no table of `catalog`; see
/// [`kafka_message_key`] for the keys read.
pub fn kafka_record_key(raw: &RawRecord, catalog: &TableCatalog) -> Option<Key> {
    let spec = catalog.get(catalog.lookup(raw.topic.as_deref()?)?)?;
    kafka_message_key(raw.key.as_deref()?, spec)
}

/// The primary key of table `spec` that a Kafka message key holds. Only flat keys
/// (`{"order_id":42}`: integers and plain strings) are read, plain or as the `payload` after a
/// Connect schema; `None` for any other key (decoding then reads the key, or says why it
/// cannot).
pub fn kafka_message_key(key: &[u8], spec: &TableSpec) -> Option<Key> {
    const SCHEMA: &[u8] = br#"{"schema":"#;
    const PAYLOAD: &[u8] = br#""payload":"#;
    let flat = if key.trim_ascii_start().starts_with(SCHEMA) {
        // The JSON converter writes the schema first and the payload last.
        let start = key.windows(PAYLOAD.len()).rposition(|w| w == PAYLOAD)? + PAYLOAD.len();
        key[start..].trim_ascii_end().strip_suffix(b"}")?
    } else {
        key
    };
    flat_key::flat_key(flat, spec)
}

/// The bytes as text. Checked with SIMD where the CPU has it (a record's first touch, so a
/// plain byte loop cost about 4 % of a worker); the standard library words the error.
fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    simdutf8::basic::from_utf8(bytes).or_else(|_| {
        std::str::from_utf8(bytes).map_err(|e| {
            DecodeError::new(DeadLetterKind::BadJson, format!("{what} is not UTF-8: {e}"))
        })
    })
}

fn parse<'a, T: serde::Deserialize<'a>>(text: &'a str, what: &str) -> Result<T> {
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => DecodeError::new(
                DeadLetterKind::BadEnvelope,
                format!("{what} is not a JSON object"),
            ),
            Err(e) => DecodeError::new(DeadLetterKind::BadJson, format!("{what} is not JSON: {e}")),
        });
    }
    serde_json::from_str(text).map_err(|e| {
        let kind = if e.is_data() {
            DeadLetterKind::BadEnvelope
        } else {
            DeadLetterKind::BadJson
        };
        let message = if e.is_data() {
            format!("{what} is not a Debezium record: {e}")
        } else {
            format!("{what} is not JSON: {e}")
        };
        DecodeError::new(kind, message)
    })
}

fn decode_inner(
    raw: &RawRecord,
    catalog: &TableCatalog,
    cache: &mut SchemaCache,
) -> Result<Decoded> {
    let key_text = raw.key.as_deref().map(|k| utf8(k, "the key")).transpose()?;
    let Some(value) = raw.value.as_deref() else {
        return decode_tombstone(key_text, raw.topic.as_deref(), raw.position, catalog, cache);
    };
    let text = utf8(value, if raw.line { "the line" } else { "the value" })?;
    if text.trim() == "null" {
        return decode_tombstone(key_text, raw.topic.as_deref(), raw.position, catalog, cache);
    }
    let mut record = Record::default();
    if let Some(schemas) = cache.split_known(text, catalog, &mut record) {
        return decode_envelope(
            key_text,
            &mut record,
            raw.topic.as_deref(),
            raw.position,
            catalog,
            (&schemas, &mut cache.orders),
        );
    }
    let what = if raw.line { "the line" } else { "the value" };
    let plain = FieldSchemas::default();
    let unwrapped = (catalog, &plain);
    cache.parse(text, what, scan::Level::Outer, unwrapped, &mut record)?;
    let mut key_text = key_text;
    let mut topic = raw.topic.as_deref().map(std::borrow::Cow::Borrowed);
    if raw.line && record.is_message_wrapper() {
        // {"key":…,"value":…[,"topic":…]} carries a Kafka message in one line.
        key_text = record.key.filter(|k| *k != "null");
        topic = record.topic.take().or(topic);
        match record.value {
            None | Some("null") => {
                return decode_tombstone(key_text, topic.as_deref(), raw.position, catalog, cache)
            }
            Some(inner) => {
                let what = "the `value`";
                cache.parse(inner, what, scan::Level::Inner, unwrapped, &mut record)?
            }
        }
    }
    // Plain envelopes (most records) share `plain` instead of allocating empty schemas.
    let schemas = match (record.is_schema_wrapper(), record.schema, record.payload) {
        (true, schema, Some(payload)) => {
            let schemas = schema.map(|s| cache.get(s)).unwrap_or_default();
            let wrapped = (catalog, &*schemas);
            cache.parse(
                payload,
                "the `payload`",
                scan::Level::Inner,
                wrapped,
                &mut record,
            )?;
            Some(schemas)
        }
        _ => None,
    };
    decode_envelope(
        key_text,
        &mut record,
        topic.as_deref(),
        raw.position,
        catalog,
        (schemas.as_deref().unwrap_or(&plain), &mut cache.orders),
    )
}

fn decode_tombstone(
    key: Option<&str>,
    topic: Option<&str>,
    position: Position,
    catalog: &TableCatalog,
    cache: &mut SchemaCache,
) -> Result<Decoded> {
    let (Some(key), Some(topic)) = (key.filter(|k| *k != "null"), topic) else {
        return Ok(Decoded::BareTombstone);
    };
    let Some(table) = catalog.lookup(topic) else {
        return Ok(Decoded::Skipped {
            table: topic.to_owned(),
        });
    };
    let key = key_from_kafka_key(key, table_spec(catalog, table)?, &mut cache.orders)?;
    Ok(Decoded::Event(ChangeEvent {
        table,
        op: Op::Tombstone,
        key,
        before: None,
        after: None,
        position,
        event_time_ms: 0,
        tx: None,
        source_lsn: None,
    }))
}

fn table_spec(catalog: &TableCatalog, id: TableId) -> Result<&Arc<TableSpec>> {
    catalog
        .get(id)
        .ok_or_else(|| DecodeError::new(DeadLetterKind::UnknownTable, "table id out of range"))
}

fn decode_envelope(
    kafka_key: Option<&str>,
    record: &mut Record<'_>,
    topic: Option<&str>,
    position: Position,
    catalog: &TableCatalog,
    (schemas, orders): (&FieldSchemas, &mut scan::FieldOrders),
) -> Result<Decoded> {
    let op = match record.op {
        Some(code) => code
            .strip_prefix('"')
            .and_then(|c| c.strip_suffix('"'))
            .and_then(Op::from_code)
            .ok_or_else(|| {
                DecodeError::new(
                    DeadLetterKind::UnknownOp,
                    format!("unknown op {code}; Debezium ops are c, u, d, r and t"),
                )
            })?,
        None => {
            return Err(DecodeError::new(
                DeadLetterKind::BadEnvelope,
                "no `op` field; is this a Debezium change event (and not an unwrapped row)?",
            ))
        }
    };
    let source = record.source.as_ref();
    let parts = source.and_then(|s| {
        let namespace = s.schema.as_deref().or(s.db.as_deref())?;
        Some([s.name.as_deref()?, namespace, s.table.as_deref()?])
    });
    let table = match (parts, topic) {
        (Some(parts), _) => catalog.lookup_parts(&parts).ok_or_else(|| parts.join(".")),
        (None, Some(topic)) => catalog.lookup(topic).ok_or_else(|| topic.to_owned()),
        (None, None) => {
            return Err(DecodeError::new(
                DeadLetterKind::UnknownTable,
                "cannot tell the table: the `source` block has no name/schema/table and there is no topic",
            ))
        }
    };
    let table = match table {
        Ok(table) => table,
        Err(name) => return Ok(Decoded::Skipped { table: name }),
    };
    let spec = table_spec(catalog, table)?;
    let event_time_ms = source.and_then(|s| s.ts_ms).or(record.ts_ms).unwrap_or(0);
    let tx = envelope::transaction_id(source, record.transaction.as_ref());

    let after = match record.after_read.take() {
        Some((guessed, row)) if guessed == table => Some(checked_row(row, spec, "after")?),
        _ => read_row(
            record.after,
            (table, spec),
            schemas.after(),
            "after",
            orders,
        )?,
    };
    if matches!(op, Op::Create | Op::Update | Op::Read) && after.is_none() {
        return Err(DecodeError::new(
            DeadLetterKind::MissingAfter,
            format!(
                "op={} needs `after`; is the connector's column filter or `after` handling dropping it?",
                op.code()
            ),
        ));
    }
    // `before` is needed for a delete (it carries the key) and for change logs; it is never
    // trusted for state.
    let wants_before = match op {
        Op::Delete => true,
        Op::Update => spec.keep_before,
        _ => false,
    };
    let before = if wants_before {
        read_row(
            record.before,
            (table, spec),
            schemas.before(),
            "before",
            orders,
        )?
    } else {
        None
    };
    let key = if op == Op::Truncate {
        Key::new(Vec::new())
    } else if let Some(kafka_key) = kafka_key {
        let key = key_from_kafka_key(kafka_key, spec, orders)?;
        if let Some(after) = &after {
            if Key::of(after, &spec.key) != key {
                return Err(DecodeError::new(
                    DeadLetterKind::KeyMismatch,
                    format!(
                        "the Kafka key {:?} does not match the primary key ({}) of `after`; is the \
                         topic keyed by another column?",
                        &*key,
                        spec.key_names().join(", ")
                    ),
                ));
            }
        }
        key
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
        source_lsn: source.and_then(envelope::Source::lsn),
    }))
}

/// Reads an image (`before`, or an `after` not read with the envelope) as a row of `table`,
/// recognising its fields by the order the table's rows taught (both images have the same
/// fields), else by `serde_json`.
fn read_row(
    raw: Option<&str>,
    (table, spec): (TableId, &Arc<TableSpec>),
    logical: Option<&connect::StructSchema>,
    field: &str,
    orders: &mut scan::FieldOrders,
) -> Result<Option<Row>> {
    let Some(raw) = raw.filter(|r| *r != "null") else {
        return Ok(None);
    };
    let seed = row::RowSeed {
        schema: &spec.schema,
        only: spec.decoded.as_deref(),
        logical,
    };
    let read = match scan::row_in_order(raw, orders, scan::AfterGuess { table, spec, seed }) {
        Some(read) => read,
        None => read_fields(raw, seed, field)?,
    };
    checked_row(read, spec, field).map(Some)
}

/// A row read from `field`, or why it does not fit the table: a value of the wrong type, or a
/// NOT NULL column without one (among the columns decoded).
fn checked_row(read: row::FieldResult, spec: &TableSpec, field: &str) -> Result<Row> {
    let values = read.map_err(|(index, why)| {
        let column = &spec.schema.columns[index];
        DecodeError::new(
            DeadLetterKind::TypeMismatch,
            format!("`{field}.{}` ({}): {why}", column.name, column.ty),
        )
    })?;
    for (index, (column, value)) in spec.schema.columns.iter().zip(values.iter()).enumerate() {
        if value.is_null() && !column.nullable && spec.decodes(index) {
            return Err(DecodeError::new(
                DeadLetterKind::TypeMismatch,
                format!(
                    "`{field}.{}` is null or missing but declared NOT NULL",
                    column.name
                ),
            ));
        }
    }
    Ok(values)
}

fn read_fields(text: &str, seed: row::RowSeed<'_>, field: &str) -> Result<row::FieldResult> {
    if let Some(result) = seed.scan(text) {
        return Ok(result);
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    seed.deserialize(&mut deserializer).map_err(|e| {
        DecodeError::new(
            DeadLetterKind::BadEnvelope,
            format!("`{field}` is not an object: {e}"),
        )
    })
}

fn key_from_row(row: &Row, spec: &TableSpec) -> Result<Key> {
    let key = Key::of(row, &spec.key);
    if key.iter().any(Value::is_null) {
        return Err(DecodeError::new(
            DeadLetterKind::MissingKey,
            format!(
                "primary key ({}) is null or missing",
                spec.key_names().join(", ")
            ),
        ));
    }
    Ok(key)
}

/// The Kafka key is `{"col":…}` or `{"schema":…,"payload":{"col":…}}`.
fn key_from_kafka_key(text: &str, spec: &TableSpec, orders: &mut scan::FieldOrders) -> Result<Key> {
    if let Some(key) = flat_key::flat_key(text.as_bytes(), spec) {
        return Ok(key);
    }
    let mut wrapped = Record::default();
    if scan::record_into(text, orders, scan::Level::Key, None, &mut wrapped).is_none() {
        wrapped = parse(text, "the key")?;
    }
    let (object, logical) = match (wrapped.schema, wrapped.payload) {
        (Some(schema), Some(payload)) => (
            payload,
            serde_json::from_str(schema)
                .ok()
                .map(|s| connect::StructSchema::from_schema(&s)),
        ),
        _ => (text, None),
    };
    let seed = row::RowSeed {
        schema: &spec.schema,
        only: Some(&spec.key),
        logical: logical.as_ref(),
    };
    let values = read_fields(object, seed, "key")?.map_err(|(index, why)| {
        DecodeError::new(
            DeadLetterKind::TypeMismatch,
            format!("key `{}`: {why}", spec.schema.columns[index].name),
        )
    })?;
    let key = Key::of(&values, &spec.key);
    if let Some(missing) = spec.key.iter().zip(key.iter()).find(|(_, v)| v.is_null()) {
        return Err(DecodeError::new(
            DeadLetterKind::MissingKey,
            format!(
                "the Kafka key lacks key column `{}`",
                spec.schema.columns[*missing.0].name
            ),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests;
