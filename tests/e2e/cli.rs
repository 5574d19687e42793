//! The binary's basic contract: it lists pipelines and rejects unknown commands. (Also makes
//! `cargo test --workspace` build the binary that the end-to-end tests in `tests/` run.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

#[test]
fn lists_every_pipeline_one_per_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("pipelines")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let pipelines = tributary::pipelines();
    let expected: Vec<&str> = pipelines.iter().map(|p| p.name()).collect();
    assert_eq!(names, expected);
}

#[test]
fn unknown_subcommand_fails() {
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!output.status.success());
}
