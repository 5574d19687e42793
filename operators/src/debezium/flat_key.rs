//! The fast path for Kafka message keys: Debezium's key without a schema wrapper is a flat JSON
//! object of the primary-key columns, most often integers or plain strings
//! (`{"order_id":42}`). Such a key is read here in one pass, without the general scanner; any
//! other key is left to it.

use smallvec::SmallVec;

use crate::row::Key;
use crate::schema::{ColumnType, TableSpec};
use crate::value::Value;

/// The key `text` holds, when it is a flat object naming each of `spec`'s key columns once, with
/// an integer for an integer column or an escape-free string for a string column; `None`
/// otherwise (the general reader then decides, and words any error). Works on bytes: only the
/// strings kept as values need to be valid UTF-8, and they are checked.
pub(super) fn flat_key(text: &[u8], spec: &TableSpec) -> Option<Key> {
    let mut rest = skip_space(skip_space(text).strip_prefix(b"{")?);
    if let Some(after) = rest.strip_prefix(b"}") {
        return (skip_space(after).is_empty() && spec.key.is_empty()).then(Key::default);
    }
    if spec.key.len() == 1 {
        // The usual key, one column: nothing to collect.
        let (_, value, after) = field(rest, spec)?;
        let after = skip_space(after).strip_prefix(b"}")?;
        return skip_space(after)
            .is_empty()
            .then(|| std::iter::once(value).collect());
    }
    // Inline for keys of up to two columns, as `Key` is.
    let mut values: SmallVec<[Option<Value>; 2]> = SmallVec::new();
    values.resize_with(spec.key.len(), || None);
    loop {
        let (slot, value, after_value) = field(rest, spec)?;
        if values[slot].replace(value).is_some() {
            return None;
        }
        rest = skip_space(after_value);
        if let Some(more) = rest.strip_prefix(b",") {
            rest = skip_space(more);
        } else {
            rest = rest.strip_prefix(b"}")?;
            break;
        }
    }
    if !skip_space(rest).is_empty() || values.iter().any(Option::is_none) {
        return None;
    }
    Some(values.into_iter().flatten().collect())
}

/// The `"name": value` pair at the start of `rest`, naming one of `spec`'s key columns: its
/// place in the key, its value, and what follows.
fn field<'a>(rest: &'a [u8], spec: &TableSpec) -> Option<(usize, Value, &'a [u8])> {
    let (name, after_name) = string(rest)?;
    let slot = spec
        .key
        .iter()
        .position(|&column| spec.schema.columns[column].name.as_bytes() == name)?;
    let value_text = skip_space(skip_space(after_name).strip_prefix(b":")?);
    let column = &spec.schema.columns[spec.key[slot]];
    let (value, after) = match column.ty {
        ColumnType::Int64 | ColumnType::Int32 => {
            let (number, after) = integer(value_text)?;
            if column.ty == ColumnType::Int32 && i32::try_from(number).is_err() {
                return None;
            }
            (Value::Int(number), after)
        }
        ColumnType::String => {
            let (text, after) = string(value_text)?;
            (Value::str(std::str::from_utf8(text).ok()?), after)
        }
        _ => return None,
    };
    Some((slot, value, after))
}

/// `text` after its leading JSON whitespace.
fn skip_space(text: &[u8]) -> &[u8] {
    let space = text
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &text[space..]
}

/// A JSON integer at the start of `text` that fits an `i64`, and what follows it; `None` for
/// a leading zero (not JSON), `-0` (left to the general reader) or an overflow.
fn integer(text: &[u8]) -> Option<(i64, &[u8])> {
    let negative = text.first() == Some(&b'-');
    let digits = &text[usize::from(negative)..];
    let count = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    match digits.first() {
        Some(b'1'..=b'9') => {}
        Some(b'0') if count == 1 && !negative => {}
        _ => return None,
    }
    // Accumulated negative, so that i64::MIN fits.
    let mut number: i64 = 0;
    for &digit in &digits[..count] {
        number = number
            .checked_mul(10)?
            .checked_sub(i64::from(digit - b'0'))?;
    }
    if !negative {
        number = number.checked_neg()?;
    }
    Some((number, &digits[count..]))
}

/// A JSON string without escapes or control characters at the start of `text` (its bytes),
/// and what follows it.
fn string(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = text.strip_prefix(b"\"")?;
    let end = body
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    (body[end] == b'"').then(|| (&body[..end], &body[end + 1..]))
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
        assert_eq!(
            flat_key(br#"{"id":42}"#, &single),
            key(vec![Value::Int(42)])
        );
        assert_eq!(
            flat_key(br#" { "id" : -7 } "#, &single),
            key(vec![Value::Int(-7)])
        );
        let pair = spec(&[("region", ColumnType::String), ("n", ColumnType::Int32)]);
        assert_eq!(
            flat_key(br#"{"n":3,"region":"eu"}"#, &pair),
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
            assert_eq!(flat_key(text.as_bytes(), &single), None, "{text}");
        }
        for text in [
            r#"{"id":-}"#,
            r#"{"id":--1}"#,
            r#"{"id":1-2}"#,
            r#"{"id":00}"#,
            r#"{"id":9223372036854775808}"#,
            r#"{"id":-9223372036854775809}"#,
        ] {
            assert_eq!(flat_key(text.as_bytes(), &single), None, "{text}");
        }
        for (text, value) in [
            (r#"{"id":0}"#, 0),
            (r#"{"id":9223372036854775807}"#, i64::MAX),
            (r#"{"id":-9223372036854775808}"#, i64::MIN),
        ] {
            assert_eq!(
                flat_key(text.as_bytes(), &single),
                Some(Key::new(vec![Value::Int(value)])),
                "{text}"
            );
        }
        let small = spec(&[("n", ColumnType::Int32)]);
        assert_eq!(flat_key(br#"{"n":4294967296}"#, &small), None);
        let text = spec(&[("s", ColumnType::String)]);
        assert_eq!(flat_key(br#"{"s":"a\"b"}"#, &text), None);
        assert_eq!(
            flat_key(b"{\"s\":\"a\x01\"}", &text),
            None,
            "a control character"
        );
        assert_eq!(flat_key(b"{\"s\":\"\xff\"}", &text), None, "not UTF-8");
        assert_eq!(
            flat_key(b"{\"s\":\"x\"}\x0c", &text),
            None,
            "form feed is no JSON space"
        );
        assert_eq!(
            flat_key("{\"s\":\"é\"}\r\n".as_bytes(), &text),
            Some(Key::new(vec![Value::str("é")]))
        );
        let pair = spec(&[("a", ColumnType::Int64), ("b", ColumnType::Int64)]);
        assert_eq!(flat_key(br#"{"a":1}"#, &pair), None, "a key column missing");
    }
}
