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
    if let Some(key) = compact_integer_key(text, spec) {
        return Some(key);
    }
    let mut rest = skip_space(skip_space(text).strip_prefix(b"{")?);
    if let Some(after) = rest.strip_prefix(b"}") {
        return (skip_space(after).is_empty() && spec.key.is_empty()).then(Key::default);
    }
    if spec.key.len() == 1 {
        // The usual key, one column: nothing to collect.
        let (_, value, after) = field(rest, spec)?;
        let after = skip_space(after).strip_prefix(b"}")?;
        return skip_space(after).is_empty().then(|| Key::single(value));
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

/// The key as Debezium's JSON converter writes a one-integer-column key, `{"order_id":42}`
/// (compact, the name first), read in a single pass; `None` for any other shape.
fn compact_integer_key(text: &[u8], spec: &TableSpec) -> Option<Key> {
    let [index] = spec.key[..] else {
        return None;
    };
    let column = &spec.schema.columns[index];
    if !matches!(column.ty, ColumnType::Int64 | ColumnType::Int32) {
        return None;
    }
    let value_text = text
        .strip_prefix(b"{\"")?
        .strip_prefix(column.name.as_bytes())?
        .strip_prefix(b"\":")?;
    let (number, b"}") = integer(value_text)? else {
        return None;
    };
    if column.ty == ColumnType::Int32 && i32::try_from(number).is_err()
        || column.name.bytes().any(needs_escape)
    {
        return None;
    }
    Some(Key::single(Value::Int(number)))
}

/// The `"name": value` pair at the start of `rest`, naming one of `spec`'s key columns: its
/// place in the key, its value, and what follows.
fn field<'a>(rest: &'a [u8], spec: &TableSpec) -> Option<(usize, Value, &'a [u8])> {
    let quoted = rest.strip_prefix(b"\"")?;
    let (slot, column, after_name) = spec.key.iter().enumerate().find_map(|(slot, &index)| {
        let column = &spec.schema.columns[index];
        let after = quoted
            .strip_prefix(column.name.as_bytes())?
            .strip_prefix(b"\"")?;
        Some((slot, column, after))
    })?;
    // A name with a quote, backslash or control character is written escaped, so the bytes
    // above matched no JSON string of that name.
    if column.name.bytes().any(needs_escape) {
        return None;
    }
    let value_text = skip_space(skip_space(after_name).strip_prefix(b":")?);
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

/// Whether JSON writes `byte` escaped in a string.
fn needs_escape(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// `text` after its leading JSON whitespace.
fn skip_space(mut text: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\n' | b'\r', rest @ ..] = text {
        text = rest;
    }
    text
}

/// A JSON integer at the start of `text` that fits an `i64`, and what follows it; `None` for
/// a leading zero (not JSON), `-0` (left to the general reader) or an overflow.
fn integer(text: &[u8]) -> Option<(i64, &[u8])> {
    let negative = text.first() == Some(&b'-');
    let digits = &text[usize::from(negative)..];
    let mut magnitude: u64 = 0;
    let mut count = 0;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        // Twenty digits are out of range; nineteen fit a `u64`.
        if count == 19 {
            return None;
        }
        magnitude = magnitude * 10 + u64::from(digit);
        count += 1;
    }
    match digits.first() {
        Some(b'1'..=b'9') => {}
        Some(b'0') if count == 1 && !negative => {}
        _ => return None,
    }
    let number = if negative {
        0i64.checked_sub_unsigned(magnitude)?
    } else {
        i64::try_from(magnitude).ok()?
    };
    Some((number, &digits[count..]))
}

/// A JSON string without escapes or control characters at the start of `text` (its bytes),
/// and what follows it.
fn string(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = text.strip_prefix(b"\"")?;
    let end = body.iter().position(|&b| needs_escape(b))?;
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
        for text in [
            r#"{"id":10000000000000000000}"#,
            r#"{"id":-99999999999999999999}"#,
        ] {
            assert_eq!(flat_key(text.as_bytes(), &single), None, "{text}");
        }
    }

    #[test]
    fn a_key_column_named_with_a_quote_is_matched_only_as_json_writes_it() {
        let quoted = spec(&[("a\"b", ColumnType::Int64)]);
        // Not JSON: the name would be written `"a\"b"`, which the general reader decodes.
        assert_eq!(flat_key(br#"{"a"b":1}"#, &quoted), None);
        assert_eq!(flat_key(br#"{"a\"b":1}"#, &quoted), None);
    }

    #[test]
    fn compact_and_spaced_keys_read_alike() {
        let single = spec(&[("id", ColumnType::Int64)]);
        for id in [0, 7, -7, 123_456_789, i64::MAX, i64::MIN] {
            let compact = format!(r#"{{"id":{id}}}"#);
            let spaced = format!(r#"{{ "id": {id} }}"#);
            let expected = Some(Key::single(Value::Int(id)));
            assert_eq!(flat_key(compact.as_bytes(), &single), expected, "{compact}");
            assert_eq!(flat_key(spaced.as_bytes(), &single), expected, "{spaced}");
        }
    }
}
