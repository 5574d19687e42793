//! PostgreSQL rows (text-format column values) → Debezium change-event JSON, the shape the
//! Debezium PostgreSQL connector produces with `decimal.handling.mode=string`, so the one
//! decoder serves Kafka, files and direct replication alike.

use std::fmt::Write as _;

use base64::Engine;

use tributary_operators::value::write_json_string;

use super::pgoutput::Datum;

pub use tributary_operators::debezium::UNAVAILABLE_VALUE;

/// Type OIDs (`pg_type.oid`) whose text needs more than quoting.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
}

/// A column as the encoder needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
}

/// Where a change comes from, for the envelope's `source` block.
#[derive(Debug, Clone, Copy)]
pub struct ChangeSource<'a> {
    /// Debezium's `topic.prefix` (the `name` field).
    pub server: &'a str,
    /// Database name.
    pub db: &'a str,
    /// Schema name.
    pub schema: &'a str,
    /// Table name.
    pub table: &'a str,
    /// Transaction id (`txId`).
    pub tx_id: u64,
    /// LSN of the change (or of the snapshot's consistent point).
    pub lsn: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Part of the initial snapshot.
    pub snapshot: bool,
}

/// A row: its columns and their values; `UnchangedToast` values are taken from `fallback`
/// (the old row, when the server sent it) or become [`UNAVAILABLE_VALUE`].
#[derive(Debug, Clone, Copy)]
pub struct RowImage<'a> {
    /// Columns in table order.
    pub columns: &'a [ColumnInfo],
    /// Values, one per column.
    pub values: &'a [Datum],
    /// The old row, for unchanged TOASTed values.
    pub fallback: Option<&'a [Datum]>,
}

/// Encodes one change event; `op` is `c`, `u`, `d`, `r` or `t`.
pub fn change_event(
    op: char,
    before: Option<RowImage<'_>>,
    after: Option<RowImage<'_>>,
    source: &ChangeSource<'_>,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"before\":");
    row(&mut out, before);
    out.push_str(",\"after\":");
    row(&mut out, after);
    out.push_str(&envelope_tail(op, source));
    out
}

/// Encodes a read (`r`) event of a row selected as text (`None`: NULL), ending with `tail`
/// ([`envelope_tail`] of `r`, shared by every row of a chunk).
pub fn read_event(columns: &[ColumnInfo], values: &[Option<&str>], tail: &str) -> String {
    let mut out = String::with_capacity(64 + tail.len() + 24 * columns.len());
    out.push_str("{\"before\":null,\"after\":{");
    for (index, (column, text)) in columns.iter().zip(values).enumerate() {
        if index > 0 {
            out.push(',');
        }
        quoted(&mut out, &column.name);
        out.push(':');
        match text {
            Some(text) => value(&mut out, column.type_oid, text),
            None => out.push_str("null"),
        }
    }
    out.push('}');
    out.push_str(tail);
    out
}

/// What follows the `before` and `after` images: the `source` block, `op` and `ts_ms`.
pub fn envelope_tail(op: char, source: &ChangeSource<'_>) -> String {
    let mut out = String::with_capacity(160);
    out.push_str(",\"source\":{\"connector\":\"postgresql\",\"name\":");
    quoted(&mut out, source.server);
    out.push_str(",\"db\":");
    quoted(&mut out, source.db);
    out.push_str(",\"schema\":");
    quoted(&mut out, source.schema);
    out.push_str(",\"table\":");
    quoted(&mut out, source.table);
    let _ = write!(
        out,
        ",\"snapshot\":\"{}\",\"txId\":{},\"lsn\":{},\"ts_ms\":{}}},\"op\":\"{op}\",\"ts_ms\":{}}}",
        source.snapshot, source.tx_id, source.lsn, source.ts_ms, source.ts_ms
    );
    out
}

fn row(out: &mut String, image: Option<RowImage<'_>>) {
    let Some(image) = image else {
        out.push_str("null");
        return;
    };
    out.push('{');
    for (index, (column, datum)) in image.columns.iter().zip(image.values).enumerate() {
        if index > 0 {
            out.push(',');
        }
        quoted(out, &column.name);
        out.push(':');
        let datum = match datum {
            Datum::UnchangedToast => image
                .fallback
                .and_then(|old| old.get(index))
                .filter(|old| matches!(old, Datum::Text(_)))
                .unwrap_or(datum),
            other => other,
        };
        match datum {
            Datum::Null => out.push_str("null"),
            Datum::UnchangedToast => quoted(out, UNAVAILABLE_VALUE),
            Datum::Text(text) => value(out, column.type_oid, &String::from_utf8_lossy(text)),
        }
    }
    out.push('}');
}

/// Appends the JSON for one text-format value of type `type_oid`.
pub fn value(out: &mut String, type_oid: u32, text: &str) {
    match type_oid {
        oid::BOOL => out.push_str(if text == "t" { "true" } else { "false" }),
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => out.push_str(text),
        // NaN and ±Infinity are not JSON numbers; Debezium writes them as strings.
        oid::FLOAT4 | oid::FLOAT8 if text.parse::<f64>().is_ok_and(f64::is_finite) => {
            out.push_str(text)
        }
        oid::BYTEA => {
            let bytes = text
                .strip_prefix("\\x")
                .and_then(hex)
                .unwrap_or_else(|| text.as_bytes().to_vec());
            quoted(
                out,
                &base64::engine::general_purpose::STANDARD.encode(bytes),
            );
        }
        // numeric, dates, times, json(b), text, uuid…: the text itself, as Debezium's string
        // modes write it (json/jsonb as io.debezium.data.Json, a string holding the document).
        _ => quoted(out, text),
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

fn quoted(out: &mut String, text: &str) {
    write_json_string(text, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(s: &str) -> Datum {
        Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn encodes_a_debezium_update() {
        let columns = [
            ColumnInfo {
                name: "id".into(),
                type_oid: oid::INT8,
            },
            ColumnInfo {
                name: "ok".into(),
                type_oid: oid::BOOL,
            },
            ColumnInfo {
                name: "note".into(),
                type_oid: 25,
            },
            ColumnInfo {
                name: "blob".into(),
                type_oid: oid::BYTEA,
            },
            ColumnInfo {
                name: "ratio".into(),
                type_oid: oid::FLOAT8,
            },
        ];
        let old = [
            text("1"),
            text("f"),
            text("long \"text\""),
            Datum::Null,
            text("1"),
        ];
        let new = [
            text("1"),
            text("t"),
            Datum::UnchangedToast,
            text("\\x00ff"),
            text("NaN"),
        ];
        let source = ChangeSource {
            server: "dbserver1",
            db: "shop",
            schema: "public",
            table: "orders",
            tx_id: 42,
            lsn: 99,
            ts_ms: 1_700_000_000_000,
            snapshot: false,
        };
        let json = change_event(
            'u',
            None,
            Some(RowImage {
                columns: &columns,
                values: &new,
                fallback: Some(&old),
            }),
            &source,
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["op"], "u");
        assert_eq!(parsed["after"]["ok"], true);
        assert_eq!(parsed["after"]["note"], "long \"text\"");
        assert_eq!(parsed["after"]["blob"], "AP8=");
        assert_eq!(parsed["after"]["ratio"], "NaN");
        assert_eq!(parsed["source"]["txId"], 42);
        assert_eq!(parsed["source"]["table"], "orders");
        assert!(parsed["before"].is_null());

        let without_old = change_event(
            'u',
            None,
            Some(RowImage {
                columns: &columns,
                values: &new,
                fallback: None,
            }),
            &source,
        );
        assert!(without_old.contains(UNAVAILABLE_VALUE));
    }
}
