//! Unit tests of the scanner: string and digit runs, validation, field orders.

use std::sync::Arc;

use super::*;
use crate::debezium::envelope::Record;
use crate::debezium::order::FIELDS_LEARNT;
use crate::debezium::row::RowSeed;
use crate::schema::TableSpec;

fn valid(text: &str) -> bool {
    let mut scanner = Scanner::new(text);
    // `value` starts at the value: its callers have skipped the whitespace before it.
    scanner.skip_whitespace();
    scanner.value().is_some() && scanner.end().is_some()
}

#[test]
fn accepts_what_json_accepts() {
    for text in [
        r#"{"a":[1,-2.5e+3,0,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"],"b":{}}"#,
        " [ ] ",
        "-0.0",
        r#""é""#,
    ] {
        assert!(valid(text), "{text}");
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
    }
}

#[test]
fn leaves_the_rest_to_serde_json() {
    for text in [
        "01",
        "1.",
        "-",
        "1e",
        "+1",
        "tru",
        r#""\x""#,
        r#""\ud800""#,
        "\"\u{1}\"",
        "[1,]",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        "{} x",
        "",
        "[",
    ] {
        assert!(!valid(text), "{text}");
    }
    let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
    assert!(!valid(&deep));
}

#[test]
fn string_stops_are_found_in_every_lane() {
    // Fillers around the bounds of a stop: a space (0x20), DEL (0x7f) and UTF-8 bytes (0x80 and
    // up), in sixteen-byte lanes, eight-byte words and the bytes after them.
    for stop in ['"', '\\', '\u{1}', '\u{1f}', '\n'] {
        for at in 0..44 {
            let text: String = (0..48)
                .map(|i| {
                    if i == at {
                        stop
                    } else {
                        ['a', '~', 'é', ' ', '\u{7f}'][i % 5]
                    }
                })
                .collect();
            for from in 0..3 {
                let expected = text.as_bytes()[from..]
                    .iter()
                    .position(|&b| b == stop as u8)
                    .map(|i| from + i);
                assert_eq!(
                    string_stop(text.as_bytes(), from),
                    expected,
                    "{text:?} {from}"
                );
            }
        }
    }
    assert_eq!(string_stop("abc".as_bytes(), 0), None);
}

#[test]
fn digit_runs_end_at_every_byte_value_in_every_lane() {
    for byte in 0..=u8::MAX {
        for lane in 0..12 {
            let mut text = [b'7'; 12];
            text[lane] = byte;
            let expected = if byte.is_ascii_digit() { 12 } else { lane };
            assert_eq!(digits_end(&text, 0), expected, "{byte:#x} at {lane}");
        }
    }
    assert_eq!(digits_end(b"12", 2), 2);
}

#[test]
fn reads_records_like_serde() {
    let text = r#"{"before":null,"after":{"id":1},"source":{"name":"db","schema":"public",
        "table":"t","ts_ms":5,"txId":7,"lsn":9,"other":[1]},"op":"c","ts_ms":6,
        "transaction":null,"extra":{"x":1}}"#;
    let scanned = read(text, &mut FieldOrders::default()).expect("scanned");
    let parsed: Record<'_> = serde_json::from_str(text).expect("parsed");
    assert_eq!(format!("{scanned:?}"), format!("{parsed:?}"));
    for bad in [r#"{"op":"c","op":"u"}"#, r#"{"op":"c", "op":"u"}"#] {
        let mut orders = FieldOrders::default();
        assert!(read(bad, &mut orders).is_none(), "duplicate field {bad}");
        assert!(
            read(bad, &mut orders).is_none(),
            "duplicate field {bad}, again"
        );
    }
    let mut orders = FieldOrders::default();
    assert!(
        read(r#"{"ts_ms":1.5}"#, &mut orders).is_none(),
        "not an integer"
    );
    assert!(
        read(r#"{"source":{"table":"a\"b"}}"#, &mut orders).is_none(),
        "escaped name"
    );
}

#[test]
fn integers_are_read_like_serde() {
    let in_range = [
        "0",
        "7",
        "-7",
        "1704067200015",
        "9223372036854775807",
        "-9223372036854775808",
        "null",
    ];
    let others = [
        "9223372036854775808",
        "-9223372036854775809",
        "12345678901234567890",
        "-0",
        "01",
        "-01",
        "1.5",
        "0.0",
        "1e3",
        "1E3",
        "-",
        "\"5\"",
        "nul",
    ];
    for number in in_range.iter().chain(&others) {
        let text = format!(r#"{{"ts_ms":{number},"source":{{"ts_ms":{number}}}}}"#);
        let scanned = read(&text, &mut FieldOrders::default());
        assert_eq!(scanned.is_some(), in_range.contains(number), "{text}");
        if let Some(scanned) = scanned {
            let parsed: Record<'_> = serde_json::from_str(&text).expect("parsed");
            assert_eq!(format!("{scanned:?}"), format!("{parsed:?}"), "{text}");
        }
    }
}

fn read<'a>(text: &'a str, orders: &mut FieldOrders) -> Option<Record<'a>> {
    record(text, orders, Level::Outer, None)
}

#[test]
fn only_the_first_fields_of_a_huge_object_are_remembered() {
    let fields: Vec<String> = (0..FIELDS_LEARNT + 50)
        .map(|i| format!(r#""f{i}":{i}"#))
        .collect();
    let text = format!(r#"{{{},"op":"c","ts_ms":3}}"#, fields.join(","));
    let mut orders = FieldOrders::default();
    for _ in 0..2 {
        let scanned = read(&text, &mut orders).expect("scanned");
        assert_eq!(scanned.op, Some(r#""c""#));
        assert_eq!(scanned.ts_ms, Some(3));
    }
    assert_eq!(orders.longest_record_shape(), FIELDS_LEARNT);
}

#[test]
fn a_learnt_field_order_never_changes_what_is_read() {
    let records = [
        r#"{"before":null,"after":{"id":1},"source":{"name":"db","table":"t","ts_ms":5},"op":"c","ts_ms":6}"#,
        r#"{"before":null,"after":{"id":2},"source":{"name":"db","table":"t","ts_ms":7},"op":"u","ts_ms":8}"#,
        r#"{"op":"d","before":{"id":2},"source":{"table":"u","name":"db","lsn":3},"after":null}"#,
        r#"{ "before" : null , "after":{"id":3},"source":{"name" :"db","table":"t"},"op":"c"}"#,
        r#"{"before":null,"after":{"id":4},"extra":[1,{"op":"x"}],"source":{"name":"db"},"op":"r"}"#,
        r#"{"before":null,"after":{"id":5},"source":{"name":"db","table":"t","ts_ms":9}}"#,
        r#"{"before":null,"afterwards":1,"source":{"nam":"db"},"op":"c"}"#,
        r#"{"before":null,"after":{"id":6},"source":{"name":"db","table":"t","ts_ms":5},"op":"c","ts_ms":6}"#,
        r#"{"before":{"id":6,"name":"a"},"after":{"id":6,"name":"b"},"op":"u"}"#,
        r#"{"before":{"name":"a","id":6},"after":null,"op":"d"}"#,
        r#"{"before":{"id":6,"name":"a\"q","x":[1,{"y":2}]},"op":"u"}"#,
        r#"{"before":{ "id" :6},"op":"u"}"#,
        r#"{"before":{},"op":"u"}"#,
    ];
    // Every record after every other (the one before it taught the order).
    for first in records {
        for second in records {
            let mut orders = FieldOrders::default();
            read(first, &mut orders).expect("first");
            let scanned = read(second, &mut orders).expect("scanned");
            let parsed: Record<'_> = serde_json::from_str(second).expect("parsed");
            assert_eq!(
                format!("{scanned:?}"),
                format!("{parsed:?}"),
                "{second} after {first}"
            );
        }
    }
}

#[test]
fn a_before_image_passed_over_is_still_checked() {
    let mut orders = FieldOrders::default();
    let good = r#"{"before":{"id":1,"name":"a"},"op":"u"}"#;
    read(good, &mut orders).expect("learnt");
    for bad in [
        r#"{"before":{"id":1,"name":},"op":"u"}"#,
        r#"{"before":{"id":1,"name":"a",},"op":"u"}"#,
        r#"{"before":{"id":1,"name":"a\x"},"op":"u"}"#,
        r#"{"before":{"id":01,"name":"a"},"op":"u"}"#,
        r#"{"before":{"id":1,"name":"a"],"op":"u"}"#,
    ] {
        assert!(read(bad, &mut orders).is_none(), "{bad}");
        assert!(serde_json::from_str::<Record<'_>>(bad).is_err(), "{bad}");
    }
    assert!(read(good, &mut orders).is_some());
}

#[test]
fn a_row_order_is_learnt_again_for_other_columns_read() {
    use crate::schema::{Column, ColumnType, Schema};
    let spec = Arc::new(TableSpec {
        name: "t".into(),
        schema: Schema::new(vec![
            Column::new("id", ColumnType::Int64),
            Column::new("n", ColumnType::Int64),
        ]),
        key: vec![0],
        keep_before: false,
        decoded: None,
    });
    let after = r#"{"id":1,"n":2}"#;
    let text = format!(r#"{{"after":{after},"op":"c"}}"#);
    let mut orders = FieldOrders::default();
    for only in [Some(&[0][..]), None, Some(&[1][..]), Some(&[1][..])] {
        let seed = RowSeed {
            schema: &spec.schema,
            only,
            logical: None,
        };
        let guess = AfterGuess {
            table: 0,
            spec: &spec,
            seed,
        };
        let scanned = record(&text, &mut orders, Level::Outer, Some(guess)).expect("scanned");
        let (_, row) = scanned.after_read.expect("after read");
        assert_eq!(row, seed.scan(after).expect("alone"), "{only:?}");
    }
}
