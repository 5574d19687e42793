//! The fast path for Kafka message keys: Debezium's key without a schema wrapper is a flat JSON
//! object of the primary-key columns, most often integers or plain strings
//! (`{"order_id":42}`). Such a key is read here in one pass, without the general scanner; any
//! other key is left to it.

use crate::row::Key;
use crate::schema::{ColumnType, TableSpec};
use crate::value::Value;

/// The key `text` holds, when it is a flat object naming each of `spec`'s key columns once, with
/// an integer for an integer column or an escape-free string for a string column; `None`
/// otherwise (the general reader then decides, and words any error).
pub(super) fn flat_key(text: &str, spec: &TableSpec) -> Option<Key> {
    let mut values: Vec<Option<Value>> = vec![None; spec.key.len()];
    let mut rest = text.trim().strip_prefix('{')?.trim_start();
    if let Some(after) = rest.strip_prefix('}') {
        return (after.is_empty() && spec.key.is_empty()).then(|| Key::new(Vec::new()));
    }
    loop {
        let (name, after_name) = string(rest)?;
        let slot = spec
            .key
            .iter()
            .position(|&column| &*spec.schema.columns[column].name == name)?;
        let value_text = after_name.trim_start().strip_prefix(':')?.trim_start();
        let column = &spec.schema.columns[spec.key[slot]];
        let (value, after_value) = match column.ty {
            ColumnType::Int64 | ColumnType::Int32 => {
                let end = value_text
                    .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                    .unwrap_or(value_text.len());
                let digits = &value_text[..end];
                if digits.trim_start_matches('-').starts_with("0") && digits.len() > 1 {
                    return None; // JSON has no leading zeros; -0 is left to the general reader
                }
                let number: i64 = digits.parse().ok()?;
                if column.ty == ColumnType::Int32 && i32::try_from(number).is_err() {
                    return None;
                }
                (Value::Int(number), &value_text[end..])
            }
            ColumnType::String => {
                let (text, after) = string(value_text)?;
                (Value::str(text), after)
            }
            _ => return None,
        };
        if values[slot].replace(value).is_some() {
            return None;
        }
        rest = after_value.trim_start();
        if let Some(more) = rest.strip_prefix(',') {
            rest = more.trim_start();
        } else {
            rest = rest.strip_prefix('}')?;
            break;
        }
    }
    if !rest.trim().is_empty() {
        return None;
    }
    values.into_iter().collect::<Option<Vec<_>>>().map(Key::new)
}

/// A JSON string without escapes at the start of `text`, and what follows it.
fn string(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_prefix('"')?;
    let end = body.find(['"', '\\'])?;
    (body.as_bytes()[end] == b'"').then(|| (&body[..end], &body[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, Schema};

    fn spec(key: &[(&str, ColumnType)]) -> TableSpec {
        let mut columns: Vec<Column> = key
            .iter()
            .map(|(name, ty)| Column::new(name, *ty).not_null())
            .collect();
        columns.push(Column::new("note", ColumnType::String));
        TableSpec {
            name: "db.public.t".into(),
            schema: Schema::new(columns),
            key: (0..key.len()).collect(),
            keep_before: false,
            decoded: None,
        }
    }

    #[test]
    fn reads_flat_keys_of_integers_and_plain_strings() {
        let single = spec(&[("id", ColumnType::Int64)]);
        let key = |values: Vec<Value>| Some(Key::new(values));
        assert_eq!(flat_key(r#"{"id":42}"#, &single), key(vec![Value::Int(42)]));
        assert_eq!(
            flat_key(r#" { "id" : -7 } "#, &single),
            key(vec![Value::Int(-7)])
        );
        let pair = spec(&[("region", ColumnType::String), ("n", ColumnType::Int32)]);
        assert_eq!(
            flat_key(r#"{"n":3,"region":"eu"}"#, &pair),
            key(vec![Value::str("eu"), Value::Int(3)])
        );
    }

    #[test]
    fn leaves_anything_else_to_the_general_reader() {
        let single = spec(&[("id", ColumnType::Int64)]);
        for text in [
            r#"{"schema":{},"payload":{"id":1}}"#,
            r#"{"id":1.5}"#,
            r#"{"id":"1"}"#,
            r#"{"id":null}"#,
            r#"{"id":1,"id":2}"#,
            r#"{"id":1,"other":2}"#,
            r#"{"id":1} x"#,
            r#"{"id":01}"#,
            r#"{"id":-0}"#,
            r#"{"id":1"#,
            r#"{}"#,
            "null",
        ] {
            assert_eq!(flat_key(text, &single), None, "{text}");
        }
        let small = spec(&[("n", ColumnType::Int32)]);
        assert_eq!(flat_key(r#"{"n":4294967296}"#, &small), None);
        let text = spec(&[("s", ColumnType::String)]);
        assert_eq!(flat_key(r#"{"s":"a\"b"}"#, &text), None);
        let pair = spec(&[("a", ColumnType::Int64), ("b", ColumnType::Int64)]);
        assert_eq!(flat_key(r#"{"a":1}"#, &pair), None, "a key column missing");
    }
}
