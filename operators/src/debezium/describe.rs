//! A table as a schema-wrapped Debezium record describes it: its name (`server.schema.table`,
//! as decoding names it), its columns in order with Connect types mapped to Tributary's, and
//! its primary key from the record's key (its schema's fields, or a plain key's fields).
//! Only read when a pipeline meets a table or a schema it does not know, so it parses with
//! `serde_json` and keeps nothing.

use serde_json::Value as Json;

use crate::event::RawRecord;
use crate::schema::{Column, ColumnType, Schema};

/// A table a record describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedTable {
    /// `server.schema.table` (or the topic, when the `source` block does not name it).
    pub name: String,
    /// The columns of `after` (or `before`), in order.
    pub schema: Schema,
    /// Primary key columns (empty: the record has no key to tell them).
    pub key: Vec<String>,
    /// Columns whose Connect type has no mapping (`column: type`), taken as text.
    pub unmapped: Vec<String>,
}

/// The table `raw` describes, if it is a schema-wrapped Debezium change event.
pub fn describe(raw: &RawRecord) -> Option<DescribedTable> {
    let text = std::str::from_utf8(raw.value.as_deref()?).ok()?;
    let mut value: Json = serde_json::from_str(text).ok()?;
    let mut key = raw
        .key
        .as_deref()
        .and_then(|k| serde_json::from_slice::<Json>(k).ok());
    let mut topic = raw.topic.as_deref().map(str::to_owned);
    if raw.line && value.get("value").is_some() && value.get("payload").is_none() {
        // {"key":…,"value":…[,"topic":…]}: a Kafka message in one line.
        key = value.get("key").cloned().filter(|k| !k.is_null());
        topic = value
            .get("topic")
            .and_then(Json::as_str)
            .map(str::to_owned)
            .or(topic);
        value = value.get("value").cloned()?;
        if let Json::String(inner) = &value {
            value = serde_json::from_str(inner).ok()?;
        }
    }
    let schema = value.get("schema")?;
    let payload = value.get("payload")?;
    let source = payload.get("source");
    let text_of = |field: &str| source.and_then(|s| s.get(field)).and_then(Json::as_str);
    let name = match (
        text_of("name"),
        text_of("schema").or(text_of("db")),
        text_of("table"),
    ) {
        (Some(server), Some(namespace), Some(table)) => format!("{server}.{namespace}.{table}"),
        _ => topic?,
    };
    let row = ["after", "before"].iter().find_map(|image| {
        schema
            .get("fields")?
            .as_array()?
            .iter()
            .find(|f| f.get("field").and_then(Json::as_str) == Some(image))
    })?;
    let mut unmapped = Vec::new();
    let mut columns = Vec::new();
    for field in row.get("fields")?.as_array()? {
        let (column, mapped) = column(field)?;
        if !mapped {
            let physical = field.get("type").and_then(Json::as_str).unwrap_or("?");
            unmapped.push(format!("{}: {physical}", column.name));
        }
        columns.push(column);
    }
    Some(DescribedTable {
        name,
        schema: Schema::new(columns),
        key: key.as_ref().map(key_columns).unwrap_or_default(),
        unmapped,
    })
}

/// A Connect field as a column (its logical type decides where it has one), and whether its
/// type has a mapping (else it is taken as text).
fn column(field: &Json) -> Option<(Column, bool)> {
    let name = field.get("field")?.as_str()?;
    let physical = field.get("type").and_then(Json::as_str).unwrap_or("");
    let logical = field.get("name").and_then(Json::as_str).unwrap_or("");
    let parameter = |p: &str| {
        let value = field.get("parameters")?.get(p)?;
        value
            .as_str()
            .and_then(|s| s.parse::<u8>().ok())
            .or_else(|| value.as_u64().and_then(|n| u8::try_from(n).ok()))
    };
    let ty = match logical {
        "org.apache.kafka.connect.data.Decimal" => {
            let scale = parameter("scale").unwrap_or(0);
            match parameter("connect.decimal.precision") {
                Some(precision) if precision <= 38 && scale <= precision => {
                    ColumnType::Decimal { precision, scale }
                }
                // Unknown or wider than Iceberg's 38 digits: exact, as text.
                _ => ColumnType::String,
            }
        }
        "io.debezium.data.VariableScaleDecimal" => ColumnType::String,
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => ColumnType::Date,
        "io.debezium.time.Timestamp"
        | "io.debezium.time.MicroTimestamp"
        | "io.debezium.time.NanoTimestamp"
        | "org.apache.kafka.connect.data.Timestamp" => ColumnType::Timestamp,
        "io.debezium.time.ZonedTimestamp" => ColumnType::TimestampTz,
        "io.debezium.data.Json" => ColumnType::Json,
        _ => match physical {
            "boolean" => ColumnType::Bool,
            "int8" | "int16" | "int32" => ColumnType::Int32,
            "int64" => ColumnType::Int64,
            "float32" | "float64" | "float" | "double" => ColumnType::Float64,
            "bytes" => ColumnType::Bytes,
            "struct" | "array" | "map" => ColumnType::Json,
            "string" => ColumnType::String,
            _ => return Some((text_column(name, field), false)),
        },
    };
    Some((with_nullability(Column::new(name, ty), field), true))
}

fn text_column(name: &str, field: &Json) -> Column {
    with_nullability(Column::new(name, ColumnType::String), field)
}

/// `column`, NOT NULL unless the field is optional.
fn with_nullability(column: Column, field: &Json) -> Column {
    let optional = field
        .get("optional")
        .and_then(Json::as_bool)
        .unwrap_or(true);
    if optional {
        column
    } else {
        column.not_null()
    }
}

/// The key's columns: a schema-wrapped key's fields, or a plain key object's.
fn key_columns(key: &Json) -> Vec<String> {
    let names = |fields: &Json, field: &str| -> Vec<String> {
        fields
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.get(field).and_then(Json::as_str).map(str::to_owned))
            .collect()
    };
    match (key.get("schema"), key.get("payload")) {
        (Some(schema), Some(_)) => schema
            .get("fields")
            .map_or(Vec::new(), |f| names(f, "field")),
        _ => key
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Position;

    #[test]
    fn a_schema_wrapped_record_describes_its_table_and_key() {
        let value = r#"{"schema":{"type":"struct","fields":[
            {"field":"before","type":"struct","optional":true,"fields":[]},
            {"field":"after","type":"struct","optional":true,"fields":[
              {"field":"id","type":"int32","optional":false},
              {"field":"price","type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"10"}},
              {"field":"at","type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp"},
              {"field":"tags","type":"array","optional":true},
              {"field":"note","type":"string","optional":true}]}]},
          "payload":{"before":null,"after":{"id":1,"price":"AMs=","at":5,"tags":[],"note":"x"},
            "op":"c","source":{"name":"pg","schema":"public","table":"items"}}}"#;
        let key = r#"{"schema":{"type":"struct","fields":[{"field":"id","type":"int32","optional":false}]},"payload":{"id":1}}"#;
        let raw = RawRecord {
            key: Some(key.as_bytes().into()),
            value: Some(value.as_bytes().into()),
            topic: None,
            position: Position::new(0, 1),
            line: false,
        };
        let described = describe(&raw).unwrap();
        assert_eq!(described.name, "pg.public.items");
        assert_eq!(described.key, ["id"]);
        assert_eq!(
            described.schema,
            Schema::new(vec![
                Column::new("id", ColumnType::Int32).not_null(),
                Column::new(
                    "price",
                    ColumnType::Decimal {
                        precision: 10,
                        scale: 2
                    }
                ),
                Column::new("at", ColumnType::Timestamp),
                Column::new("tags", ColumnType::Json),
                Column::new("note", ColumnType::String),
            ])
        );
        assert!(described.unmapped.is_empty());
        let plain = RawRecord::line(br#"{"op":"c","after":{"id":1}}"#, Position::new(0, 1));
        assert_eq!(describe(&plain), None, "a plain envelope describes nothing");
    }
}
