//! Fuzzes the Debezium decoder: arbitrary bytes as a JSONL line, as a Kafka value, and split
//! into a Kafka key and value. Decoding must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_operators::fuzzing::decode_all_ways;

fuzz_target!(|data: &[u8]| {
    decode_all_ways(data);
});
