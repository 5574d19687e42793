//! The decoder never panics, and its fast scanner reads what `serde_json` reads: on random bytes, on random JSON shaped like Debezium records, and
//! on every input in the fuzzers' regression corpus (`fuzz/corpus/decode`).

use crate::fuzzing::decode_all_ways;
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-zA-Z0-9+/=:.\\- ]{0,12}".prop_map(|s| format!("\"{s}\"")),
        prop_oneof![
            Just("1e400"),
            Just("-0"),
            Just("\"\\u0000\""),
            Just("\"\\ud800\""),
            Just("99999999999999999999999"),
            Just("\"a\\\"b\""),
            Just("\"\\u00e9\\n\""),
            Just(" 1.5e-3 "),
            Just("\"2024-01-01T00:00:00Z\"")
        ]
        .prop_map(str::to_owned),
    ];
    let keys = prop_oneof![
        Just("op"),
        Just("before"),
        Just("after"),
        Just("source"),
        Just("payload"),
        Just("schema"),
        Just("key"),
        Just("value"),
        Just("topic"),
        Just("ts_ms"),
        Just("txId"),
        Just("name"),
        Just("table"),
        Just("order_id"),
        Just("price"),
        Just("scale"),
        Just("fields"),
        Just("field"),
        Just("parameters"),
        Just("created_at"),
        Just("meta"),
        Just("blob"),
        Just("line"),
        Just("db"),
        Just("lsn"),
        Just("transaction"),
        Just("id"),
        Just("status"),
        Just("quantity"),
        Just("we\\\"ird"),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|fields| {
                let body: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all_ways(&bytes);
    }

    #[test]
    fn random_debezium_shaped_json_never_panics(json in json_value()) {
        decode_all_ways(json.as_bytes());
    }
}

#[test]
fn regression_corpus_replays_without_panics() {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/decode"
    ));
    let mut replayed = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        decode_all_ways(&bytes);
        replayed += 1;
    }
    assert!(replayed > 0, "the corpus is not empty");
}
