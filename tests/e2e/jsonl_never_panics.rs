//! The JSONL reader and decoder never panic on any file in the fuzzers' regression corpus
//! (`fuzz/corpus/jsonl`), nor on random multi-line byte strings.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use tributary_engine::sources::file::read_all_lines;

#[test]
fn regression_corpus_replays_without_panics() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/jsonl"));
    let mut replayed = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        read_all_lines(&bytes);
        replayed += 1;
    }
    assert!(replayed > 0, "the corpus is not empty");
}

#[test]
fn golden_files_read_through() {
    let golden = std::fs::read(crate::support::tests_path("golden/mixed_events.jsonl")).unwrap();
    // 9 change events and 1 keyed tombstone of the orders table; the rest is malformed or skipped.
    assert_eq!(read_all_lines(&golden), 10);
}
