//! Fuzzes the JSONL reader and decoder together: arbitrary bytes as a whole file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_engine::sources::file::read_all_lines;

fuzz_target!(|data: &[u8]| {
    read_all_lines(data);
});
