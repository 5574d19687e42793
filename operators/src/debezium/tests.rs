//! Codec tests: envelope shapes, ops, keys, tombstones, logical types, and every malformed case.

use std::sync::Arc;

use super::*;
use crate::schema::{Column, ColumnType, Schema};
use crate::value::Decimal;

fn catalog() -> TableCatalog {
    let mut catalog = TableCatalog::default();
    catalog
        .add(TableSpec {
            name: "dbserver1.public.orders".into(),
            schema: Schema::new(vec![
                Column::new("order_id", ColumnType::Int64).not_null(),
                Column::new("status", ColumnType::String),
                Column::new(
                    "price",
                    ColumnType::Decimal {
                        precision: 10,
                        scale: 2,
                    },
                ),
                Column::new("created_at", ColumnType::Timestamp),
                Column::new("ship_date", ColumnType::Date),
            ]),
            key: vec![0],
            keep_before: false,
            decoded: None,
        })
        .unwrap();
    catalog
}

fn line(text: &str) -> RawRecord {
    RawRecord::line(text.as_bytes(), Position::new(0, 7))
}

fn event(text: &str) -> ChangeEvent {
    match decode(&line(text), &catalog()) {
        Decoded::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn error(text: &str) -> DecodeError {
    match decode(&line(text), &catalog()) {
        Decoded::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

const SOURCE: &str = r#""source":{"name":"dbserver1","schema":"public","table":"orders","ts_ms":1700000000000,"txId":42}"#;

#[test]
fn plain_create() {
    let e = event(&format!(
        r#"{{"before":null,"after":{{"order_id":1,"status":"new","price":"19.99","created_at":1700000000000000,"ship_date":"2024-01-02"}},{SOURCE},"op":"c","ts_ms":1}}"#
    ));
    assert_eq!(e.op, Op::Create);
    assert_eq!(e.key, Key::new(vec![Value::Int(1)]));
    assert_eq!(e.event_time_ms, 1_700_000_000_000);
    assert_eq!(e.tx, Some(42));
    assert_eq!(e.position.offset, 7);
    let after = e.after.unwrap();
    assert_eq!(after[2], Value::Decimal(Decimal::new(1999, 2).unwrap()));
    assert_eq!(after[3], Value::Timestamp(1_700_000_000_000_000));
    assert_eq!(after[4], Value::Date(19_724));
}

#[test]
fn schema_wrapped_with_logical_types() {
    let schema = r#"{"type":"struct","fields":[{"type":"struct","field":"after","fields":[
        {"type":"int64","field":"order_id"},
        {"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"price"},
        {"type":"int64","name":"io.debezium.time.Timestamp","field":"created_at"},
        {"type":"int32","name":"io.debezium.time.Date","field":"ship_date"}]}]}"#;
    let e = event(&format!(
        r#"{{"schema":{schema},"payload":{{"before":null,"after":{{"order_id":2,"status":null,"price":"B88=","created_at":1700000000000,"ship_date":19724}},{SOURCE},"op":"r"}}}}"#
    ));
    assert_eq!(e.op, Op::Read);
    let after = e.after.unwrap();
    assert_eq!(after[1], Value::Null);
    assert_eq!(
        after[2],
        Value::Decimal(Decimal::new(1999, 2).unwrap()),
        "base64 B88= is 1999"
    );
    assert_eq!(
        after[3],
        Value::Timestamp(1_700_000_000_000_000),
        "Timestamp is milliseconds"
    );
    assert_eq!(after[4], Value::Date(19_724));
}

#[test]
fn decimal_modes_and_zoned_timestamps() {
    for price in [
        r#""19.99""#,
        "19.99",
        r#""B88=""#,
        r#"{"scale":2,"value":"B88="}"#,
    ] {
        let e = event(&format!(
            r#"{{"after":{{"order_id":3,"price":{price}}},{SOURCE},"op":"c"}}"#
        ));
        assert_eq!(
            e.after.unwrap()[2],
            Value::Decimal(Decimal::new(1999, 2).unwrap()),
            "price {price}"
        );
    }
    let negative = event(&format!(
        r#"{{"after":{{"order_id":3,"price":"/w=="}},{SOURCE},"op":"c"}}"#
    ));
    assert_eq!(
        negative.after.unwrap()[2],
        Value::Decimal(Decimal::new(-1, 2).unwrap())
    );
    let zoned = event(&format!(
        r#"{{"after":{{"order_id":3,"created_at":"2023-11-14T22:13:20+00:00"}},{SOURCE},"op":"c"}}"#
    ));
    assert_eq!(
        zoned.after.unwrap()[3],
        Value::Timestamp(1_700_000_000_000_000)
    );
}

#[test]
fn deletes_take_the_key_from_before_and_keep_no_after() {
    let e = event(&format!(
        r#"{{"before":{{"order_id":9}},"after":null,{SOURCE},"op":"d"}}"#
    ));
    assert_eq!(e.op, Op::Delete);
    assert_eq!(e.key, Key::new(vec![Value::Int(9)]));
    assert!(e.after.is_none());
}

#[test]
fn kafka_key_wins_and_tombstones_need_a_topic() {
    let wrapped = format!(
        r#"{{"key":{{"schema":{{"type":"struct"}},"payload":{{"order_id":5}}}},"value":{{"before":null,"after":{{"order_id":5}},{SOURCE},"op":"c"}}}}"#
    );
    assert_eq!(event(&wrapped).key, Key::new(vec![Value::Int(5)]));
    let mismatched = wrapped.replace(r#""after":{"order_id":5}"#, r#""after":{"order_id":6}"#);
    assert_eq!(error(&mismatched).kind, DeadLetterKind::KeyMismatch);

    let tombstone = r#"{"key":{"order_id":5},"value":null,"topic":"dbserver1.public.orders"}"#;
    let e = event(tombstone);
    assert_eq!(
        (e.op, e.key),
        (Op::Tombstone, Key::new(vec![Value::Int(5)]))
    );
    assert_eq!(decode(&line("null"), &catalog()), Decoded::BareTombstone);
    let kafka = RawRecord {
        key: Some(Arc::from(&b"{\"order_id\":8}"[..])),
        value: None,
        topic: Some(crate::topic::TopicName::new("dbserver1.public.orders")),
        position: Position::new(1, 3),
        line: false,
    };
    match decode(&kafka, &catalog()) {
        Decoded::Event(e) => assert_eq!(e.op, Op::Tombstone),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_kafka_records_key_is_read_without_its_value_as_decoding_reads_it() {
    let record = |key: &str, topic: Option<&str>| RawRecord {
        key: Some(Arc::from(key.as_bytes())),
        value: Some(Arc::from(
            format!(r#"{{"before":null,"after":{{"order_id":8}},{SOURCE},"op":"c"}}"#).as_bytes(),
        )),
        topic: topic.map(crate::topic::TopicName::new),
        position: Position::new(0, 1),
        line: false,
    };
    let orders = Some("dbserver1.public.orders");
    let wrapped = r#"{"schema":{"type":"struct"},"payload":{"order_id":8}}"#;
    for key in [r#"{"order_id":8}"#, r#" {"order_id": 8} "#, wrapped] {
        let raw = record(key, orders);
        let Decoded::Event(event) = decode(&raw, &catalog()) else {
            panic!("{key} does not decode")
        };
        assert_eq!(kafka_record_key(&raw, &catalog()), Some(event.key), "{key}");
    }
    for (key, topic) in [
        (r#"{"order_id":8}"#, None),
        (r#"{"order_id":8}"#, Some("dbserver1.public.other")),
        ("null", orders),
        (r#"{"order_id":"x"}"#, orders),
        (
            r#"{"payload":{"order_id":8},"schema":{"type":"struct"}}"#,
            orders,
        ),
    ] {
        let raw = record(key, topic);
        assert_eq!(kafka_record_key(&raw, &catalog()), None, "{key}");
    }
}

#[test]
fn other_tables_are_skipped_and_topic_names_the_table() {
    let other = r#"{"after":{"id":1},"source":{"name":"dbserver1","schema":"public","table":"customers"},"op":"c"}"#;
    assert_eq!(
        decode(&line(other), &catalog()),
        Decoded::Skipped {
            table: "dbserver1.public.customers".into()
        }
    );
    let no_source = r#"{"key":null,"value":{"after":{"order_id":4},"op":"c"},"topic":"dbserver1.public.orders"}"#;
    assert_eq!(event(no_source).key, Key::new(vec![Value::Int(4)]));
}

#[test]
fn transaction_block_id_is_used_without_tx_id() {
    let e = event(
        r#"{"after":{"order_id":1},"source":{"name":"dbserver1","schema":"public","table":"orders"},"op":"c","transaction":{"id":"571:53195829","total_order":1}}"#,
    );
    let same = event(
        r#"{"after":{"order_id":2},"source":{"name":"dbserver1","schema":"public","table":"orders"},"op":"c","transaction":{"id":"571:53195829"}}"#,
    );
    assert!(e.tx.is_some());
    assert_eq!(e.tx, same.tx, "one transaction id, one value");
}

#[test]
fn source_lsn_is_kept_when_it_is_a_number() {
    let with = |lsn: &str| {
        event(&format!(
            r#"{{"after":{{"order_id":1}},"source":{{"name":"dbserver1","schema":"public","table":"orders","lsn":{lsn}}},"op":"c"}}"#
        ))
        .source_lsn
    };
    assert_eq!(with("24023128"), Some(24_023_128));
    assert_eq!(with("null"), None);
    assert_eq!(
        with(r#""0/16B3748""#),
        None,
        "not a number: no LSN, not an error"
    );
    assert_eq!(
        event(&format!(
            r#"{{"after":{{"order_id":1}},{SOURCE},"op":"c"}}"#
        ))
        .source_lsn,
        None
    );
}

#[test]
fn transactions_are_peeked_through_wrappers() {
    let plain = format!(r#"{{"after":{{"order_id":1}},{SOURCE},"op":"c"}}"#);
    assert_eq!(transaction_role(&plain), TxRole::In(42));
    assert_eq!(
        transaction_role(&format!(r#"{{"schema":{{}},"payload":{plain}}}"#)),
        TxRole::In(42)
    );
    assert_eq!(
        transaction_role(&format!(r#"{{"key":null,"value":{plain}}}"#)),
        TxRole::In(42)
    );
    assert_eq!(
        transaction_role(r#"{"after":{"order_id":1},"source":{"txId":null},"op":"c"}"#),
        TxRole::Alone
    );
    assert_eq!(
        transaction_role(r#"{"after":{"order_id":1},"op":"r","transaction":{"id":"a:7"}}"#),
        transaction_role(r#"{"op":"u","transaction":{"id":"a:7"}}"#),
        "string ids compare by equality"
    );
    for not_a_change in [
        "{oops",
        "null",
        r#"{"key":{"order_id":1},"value":null}"#,
        r#"{"schema":{},"payload":null}"#,
        r#"{"ts_ms":1700000000000}"#,
        r#"{"source":{"txId":42},"ddl":"ALTER TABLE t ADD COLUMN c int"}"#,
        "[1,2]",
    ] {
        assert_eq!(
            transaction_role(not_a_change),
            TxRole::Attached,
            "{not_a_change}"
        );
    }
}

#[test]
fn malformed_records_say_why() {
    let cases = [
        ("{not json", DeadLetterKind::BadJson),
        ("[1,2]", DeadLetterKind::BadEnvelope),
        (r#"{"after":{"order_id":1}}"#, DeadLetterKind::BadEnvelope),
        (
            &format!(r#"{{"after":{{"order_id":1}},{SOURCE},"op":"x"}}"#),
            DeadLetterKind::UnknownOp,
        ),
        (
            &format!(r#"{{"after":null,{SOURCE},"op":"u"}}"#),
            DeadLetterKind::MissingAfter,
        ),
        (
            &format!(r#"{{"after":{{"status":"x"}},{SOURCE},"op":"c"}}"#),
            DeadLetterKind::TypeMismatch,
        ),
        (
            &format!(r#"{{"before":null,"after":null,{SOURCE},"op":"d"}}"#),
            DeadLetterKind::MissingKey,
        ),
        (
            &format!(r#"{{"after":{{"order_id":"one"}},{SOURCE},"op":"c"}}"#),
            DeadLetterKind::TypeMismatch,
        ),
        (
            &format!(r#"{{"after":{{"order_id":1,"price":"abc!"}},{SOURCE},"op":"c"}}"#),
            DeadLetterKind::TypeMismatch,
        ),
        (
            &format!(r#"{{"after":{{"order_id":1,"price":123456789.5}},{SOURCE},"op":"c"}}"#),
            DeadLetterKind::TypeMismatch,
        ),
        (
            r#"{"after":{"order_id":1},"op":"c"}"#,
            DeadLetterKind::UnknownTable,
        ),
    ];
    for (text, kind) in cases {
        let e = error(text);
        assert_eq!(e.kind, kind, "{text}: {}", e.message);
        assert!(!e.message.is_empty());
    }
    assert!(error(&format!(r#"{{"after":null,{SOURCE},"op":"u"}}"#))
        .message
        .contains("op=u needs `after`"));
}

#[test]
fn a_repeated_schema_is_recognised_and_anything_unusual_takes_the_general_path() {
    let schema = r#"{"type":"struct","fields":[{"type":"struct","field":"after","fields":[
        {"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"price"}]}]}"#;
    let payload = format!(r#"{{"after":{{"order_id":2,"price":"B88="}},{SOURCE},"op":"c"}}"#);
    let mut cache = SchemaCache::default();
    let catalog = catalog();
    let price =
        |text: String, cache: &mut SchemaCache| match decode_with(&line(&text), &catalog, cache) {
            Decoded::Event(e) => e.after.unwrap()[2].clone(),
            other => panic!("{other:?}"),
        };
    let expected = Value::Decimal(Decimal::new(1999, 2).unwrap());
    let first = format!(r#"{{"schema":{schema},"payload":{payload}}}"#);
    assert_eq!(
        price(first.clone(), &mut cache),
        expected,
        "parsed, then cached"
    );
    assert_eq!(
        price(first, &mut cache),
        expected,
        "recognised byte for byte"
    );
    let trailing = format!(r#"{{"schema":{schema},"payload":{payload},"extra":{{"op":"x"}}}}"#);
    assert_eq!(
        price(trailing, &mut cache),
        expected,
        "a field after the payload"
    );
    let broken = format!(r#"{{"schema":{schema},"payload":{{"after":null,{SOURCE},"op":"u"}}}}"#);
    match decode_with(&line(&broken), &catalog, &mut cache) {
        Decoded::Error(e) => assert_eq!(e.kind, DeadLetterKind::MissingAfter),
        other => panic!("{other:?}"),
    }
}

#[test]
fn after_read_for_a_guessed_table_is_used_only_when_the_guess_was_right() {
    let mut catalog = catalog();
    catalog
        .add(TableSpec {
            name: "dbserver1.public.customers".into(),
            schema: Schema::new(vec![
                Column::new("id", ColumnType::Int64).not_null(),
                Column::new("status", ColumnType::Int64),
            ]),
            key: vec![0],
            keep_before: false,
            decoded: None,
        })
        .unwrap();
    let customers = r#""source":{"name":"dbserver1","schema":"public","table":"customers"}"#;
    let records = [
        format!(r#"{{"after":{{"order_id":1,"status":"new"}},{SOURCE},"op":"c"}}"#),
        format!(r#"{{"after":{{"id":7,"status":3}},{customers},"op":"c"}}"#),
        format!(r#"{{"after":{{"id":8,"status":"x"}},{customers},"op":"c"}}"#),
        format!(r#"{{"after":{{"order_id":2,"status":"paid"}},{SOURCE},"op":"u"}}"#),
        format!(r#"{{"after":{{"order_id":3,"status":4}},{SOURCE},"op":"u"}}"#),
        format!(r#"{{"after":{{"order_id":4}},{SOURCE},"op":"c"}}"#),
        format!(r#"{{"after":{{"status":"x","order_id":5}},{SOURCE},"op":"c"}}"#),
        format!(r#"{{"after":{{"status":"y","order_id":6,"price":"1.5"}},{SOURCE},"op":"c"}}"#),
        format!(r#"{{"after":{{"status" : "z","order_id":7}},"op":"c",{SOURCE}}}"#),
        format!(r#"{{"op":"c","after":{{"status":"w","order_id":8,"status":"v"}},{SOURCE}}}"#),
        format!(r#"{{"after":{{"status":"x","order_id":9,"price":1}},{SOURCE},"op":"c"}}"#),
        // Deletes: `before` is read through the order the table's rows taught.
        format!(r#"{{"before":{{"order_id":10,"status":"x"}},"after":null,{SOURCE},"op":"d"}}"#),
        format!(r#"{{"before":{{"status":"y","order_id":11}},"after":null,{SOURCE},"op":"d"}}"#),
        format!(r#"{{"before":{{"order_id":12,"status":7}},"after":null,{SOURCE},"op":"d"}}"#),
        format!(r#"{{"op":"d","before":{{"order_id":-0,"price":"1.5"}},{SOURCE}}}"#),
        format!(r#"{{"op":"d","before":{{"order_id":13,"status":nul}},{SOURCE}}}"#),
        format!(r#"{{"before":{{"id":1,"status":"z"}},"after":null,{customers},"op":"d"}}"#),
    ];
    // One cache across tables and field orders (each record's `after` is first read as the
    // previous record's table, its fields recognised in the previous order) decodes exactly as
    // a fresh cache per record does.
    let mut cache = SchemaCache::default();
    for text in &records {
        let alone = decode(&line(text), &catalog);
        assert_eq!(
            decode_with(&line(text), &catalog, &mut cache),
            alone,
            "{text}"
        );
    }
}

#[test]
fn only_the_decoded_columns_are_converted_and_checked() {
    let mut catalog = catalog();
    catalog.decode_only(0, vec![0, 2]);
    let mut cache = SchemaCache::default();
    let mut decode_text = |text: &str| decode_with(&line(text), &catalog, &mut cache);
    let create = |after: &str| format!(r#"{{"before":null,"after":{after},{SOURCE},"op":"c"}}"#);

    // `status` (a number) and `ship_date` (not a date) are not read: no dead letter, NULLs.
    let odd_unread = create(r#"{"order_id":1,"status":5,"price":"1.50","ship_date":"soon"}"#);
    for _ in 0..2 {
        // (The second time the row is read in the same pass as the envelope.)
        let Decoded::Event(e) = decode_text(&odd_unread) else {
            panic!("an unread column's value must not dead-letter the event");
        };
        let expected = [
            Value::Int(1),
            Value::Null,
            Value::Decimal(Decimal::new(150, 2).unwrap()),
        ];
        assert_eq!(&e.after.unwrap()[..3], &expected);
    }
    // A read column is still checked, and so is the key.
    let odd_read = create(r#"{"order_id":1,"status":"new","price":true}"#);
    let Decoded::Error(e) = decode_text(&odd_read) else {
        panic!("a read column's bad value is a dead letter");
    };
    assert_eq!(e.kind, DeadLetterKind::TypeMismatch);
    assert!(e.message.contains("after.price"), "{}", e.message);
    let Decoded::Error(e) = decode_text(&create(r#"{"status":"new"}"#)) else {
        panic!("the key is always read");
    };
    assert_eq!(e.kind, DeadLetterKind::TypeMismatch);
    // Malformed JSON anywhere in the record is still malformed.
    let Decoded::Error(e) = decode_text(&create(r#"{"order_id":1,"status":nul}"#)) else {
        panic!("malformed JSON is a dead letter");
    };
    assert_eq!(e.kind, DeadLetterKind::BadJson);
}

#[test]
fn a_field_order_is_relearnt_for_another_declaration_of_the_table() {
    let columns = |names: [&str; 2]| {
        let mut catalog = TableCatalog::default();
        catalog
            .add(TableSpec {
                name: "dbserver1.public.orders".into(),
                schema: Schema::new(
                    names
                        .iter()
                        .map(|name| Column::new(name, ColumnType::Int64))
                        .collect(),
                ),
                key: vec![0],
                keep_before: false,
                decoded: None,
            })
            .unwrap();
        catalog
    };
    let (first, swapped) = (columns(["a", "b"]), columns(["b", "a"]));
    let text = |a: i64| format!(r#"{{"after":{{"a":{a},"b":2}},{SOURCE},"op":"c"}}"#);
    // One cache, the same table id declared two ways: each record reads as a fresh cache does.
    let mut cache = SchemaCache::default();
    for (catalog, a) in [
        (&first, 1),
        (&first, 3),
        (&swapped, 5),
        (&swapped, 7),
        (&first, 9),
    ] {
        let record = line(&text(a));
        assert_eq!(
            decode_with(&record, catalog, &mut cache),
            decode(&record, catalog),
            "a={a}"
        );
    }
}

#[test]
fn integers_read_while_walking_decode_as_converted_ones() {
    let catalog = catalog();
    let create = |order_id: &str, created_at: &str| {
        format!(
            r#"{{"before":null,"after":{{"order_id":{order_id},"status":"new","created_at":{created_at}}},{SOURCE},"op":"c"}}"#
        )
    };
    let first = create("1", "2");
    let mut texts = Vec::new();
    for number in [
        "0",
        "-7",
        "-0",
        "007",
        "1.0",
        "1e3",
        "\"12\"",
        "null",
        "true",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "123456789012345678901",
    ] {
        texts.push(create(number, "1704067200008000"));
        texts.push(create("5", number));
    }
    // With a Connect schema: `order_id` has no logical type (read while walking), while
    // `created_at` is a millisecond `Timestamp` (converted by its logical type).
    let schema = r#"{"type":"struct","fields":[{"type":"struct","field":"after","fields":[
        {"type":"int64","field":"order_id"},
        {"type":"int64","name":"io.debezium.time.Timestamp","field":"created_at"}]}]}"#;
    let wrapped = |payload: &str| format!(r#"{{"schema":{schema},"payload":{payload}}}"#);
    let plain = texts.clone();
    texts.extend(plain.iter().map(|payload| wrapped(payload)));
    let schema_first = wrapped(&first);
    for text in &texts {
        // A fresh cache reads `after` on its own, converting each value from its text; after
        // `first`, the same cache reads it while walking the envelope.
        let alone = decode(&line(text), &catalog);
        let mut cache = SchemaCache::default();
        decode_with(&line(&first), &catalog, &mut cache);
        decode_with(&line(&schema_first), &catalog, &mut cache);
        assert_eq!(
            decode_with(&line(text), &catalog, &mut cache),
            alone,
            "{text}"
        );
    }
    let mut cache = SchemaCache::default();
    decode_with(&line(&first), &catalog, &mut cache);
    let Decoded::Event(event) = decode_with(&line(&texts[0]), &catalog, &mut cache) else {
        panic!("an integer and a timestamp read while walking");
    };
    let after = event.after.expect("after");
    assert_eq!(after[0], Value::Int(0));
    assert_eq!(after[3], Value::Timestamp(1_704_067_200_008_000));
    decode_with(&line(&schema_first), &catalog, &mut cache);
    let Decoded::Event(event) = decode_with(&line(&wrapped(&texts[0])), &catalog, &mut cache)
    else {
        panic!("a schema-wrapped record read while walking");
    };
    let after = event.after.expect("after");
    assert_eq!(after[0], Value::Int(0));
    assert_eq!(
        after[3],
        Value::Timestamp(1_704_067_200_008_000_000),
        "milliseconds"
    );
}
