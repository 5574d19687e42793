//! `tributary run op-counts` as a user runs it: the real binary on JSONL files, final counts
//! checked against a hand-computed golden file and against an independent recomputation, with
//! 1 and 4 workers; malformed lines become dead letters with their line numbers.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::{parse_console, run_tributary, run_tributary_ok, table_at, table_of};
use serde_json::Value as Json;

fn golden_dir() -> PathBuf {
    crate::support::tests_path("golden")
}

#[test]
fn mixed_file_matches_hand_computed_counts_and_reports_dead_letters() {
    let input = golden_dir().join("mixed_events.jsonl");
    let expected: Json = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("mixed_events.expected.json")).unwrap(),
    )
    .unwrap();
    for workers in ["1", "4"] {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("dead.jsonl");
        let output = run_tributary(&[
            "run",
            "op-counts",
            "--source",
            &format!("file:{}", input.display()),
            "--until-idle",
            "--epoch-ms",
            "0",
            "--workers",
            workers,
            "--console-format",
            "jsonl",
            "--dead-letter",
            dead.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let lines = parse_console(&output.stdout);
        for name in ["op_counts", "op_counts_10s"] {
            let expected_rows: Vec<Json> = expected[name].as_array().unwrap().clone();
            assert_eq!(
                table_at(&lines, name, u64::MAX),
                table_of(&expected_rows),
                "{name}, workers={workers}"
            );
        }
        let mut letters: Vec<(Json, String)> = std::fs::read_to_string(&dead)
            .unwrap()
            .lines()
            .map(|l| {
                let letter: Json = serde_json::from_str(l).unwrap();
                assert!(!letter["reason"].as_str().unwrap().is_empty());
                assert!(letter["raw"].is_string());
                (
                    letter["offset"].clone(),
                    letter["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        letters.sort_by_key(|(offset, _)| offset.as_u64().unwrap_or(u64::MAX));
        let wanted: Vec<(Json, String)> = expected["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["offset"].clone(), d["kind"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(letters, wanted, "workers={workers}");
    }
}

/// Counts ops and sums `after.quantity` straight from the JSON, no engine code involved.
fn recompute_op_counts(path: &Path) -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<String, (i64, Option<i64>)> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let json: Json = serde_json::from_str(line).unwrap();
        let payload = if json.get("payload").is_some() {
            &json["payload"]
        } else {
            &json
        };
        let Some(op) = payload["op"].as_str() else {
            continue;
        };
        let entry = counts.entry(op.to_owned()).or_default();
        entry.0 += 1;
        if let Some(q) = payload["after"]["quantity"].as_i64() {
            *entry.1.get_or_insert(0) += q;
        }
    }
    let rows: Vec<Json> = counts
        .into_iter()
        .map(|(op, (n, q))| serde_json::json!({"op": op, "event_count": n, "total_quantity": q}))
        .collect();
    table_of(&rows)
}

#[test]
fn generated_files_match_recomputation_plain_and_schema_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("plain", &[][..]),
        ("wrapped", &["--schema"][..]),
        ("strings", &["--decimal-mode", "string"][..]),
    ] {
        let path = dir.path().join(format!("{name}.jsonl"));
        let mut args = vec![
            "generate",
            "--events",
            "30000",
            "--keys",
            "2000",
            "--seed",
            "7",
            "--out",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let generated = run_tributary(&args);
        assert!(
            generated.status.success(),
            "{}",
            String::from_utf8_lossy(&generated.stderr)
        );
        let oracle = recompute_op_counts(&path);
        assert_eq!(
            oracle.len(),
            3,
            "the workload has creates, updates and deletes"
        );
        for workers in ["1", "4"] {
            let output = run_tributary(&[
                "run",
                "op-counts",
                "--source",
                &format!("file:{}", path.display()),
                "--until-idle",
                "--epoch-ms",
                "5",
                "--workers",
                workers,
                "--console-format",
                "jsonl",
            ]);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let lines = parse_console(&output.stdout);
            assert_eq!(
                table_at(&lines, "op_counts", u64::MAX),
                oracle,
                "{name}, workers={workers}"
            );
        }
    }
}

#[test]
fn bad_arguments_fail_with_one_line() {
    for args in [
        &["run", "no-such-pipeline", "--until-idle"][..],
        &[
            "run",
            "op-counts",
            "--source",
            "file:/definitely/missing.jsonl",
            "--until-idle",
        ][..],
        &["run", "op-counts", "--source", "ftp://x", "--until-idle"][..],
        &["run", "op-counts", "--workers", "0"][..],
    ] {
        let output = run_tributary(args);
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(error_lines.len(), 1, "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "nothing on stdout for {args:?}");
    }
}

#[test]
fn config_file_runs_the_same_as_flags_and_rejects_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let input = golden_dir().join("mixed_events.jsonl");
    let config = dir.path().join("tributary.toml");
    std::fs::write(
        &config,
        format!(
            "pipeline = \"op-counts\"\nsource = \"file:{}\"\nuntil-idle = true\nepoch-ms = 0\nconsole-format = \"jsonl\"\nworkers = 2\n",
            input.display()
        ),
    )
    .unwrap();
    let from_file = run_tributary(&["run", "--config", config.to_str().unwrap()]);
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let from_flags = run_tributary(&[
        "run",
        "op-counts",
        "--source",
        &format!("file:{}", input.display()),
        "--until-idle",
        "--epoch-ms",
        "0",
        "--console-format",
        "jsonl",
    ]);
    let tables = |out: &[u8]| {
        let lines = parse_console(out);
        (
            table_at(&lines, "op_counts", u64::MAX),
            table_at(&lines, "op_counts_10s", u64::MAX),
        )
    };
    assert_eq!(tables(&from_file.stdout), tables(&from_flags.stdout));

    std::fs::write(&config, "pipeline = \"op-counts\"\nepoch_millis = 5\n").unwrap();
    let rejected = run_tributary(&["run", "--config", config.to_str().unwrap()]);
    assert!(!rejected.status.success());
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        stderr.contains("unknown field `epoch_millis`") && stderr.contains("epoch-ms"),
        "{stderr}"
    );
}

/// The kinds of the dead letters in a `--dead-letter` file, with their offsets.
fn dead_letter_kinds(path: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let letter: Json = serde_json::from_str(l).unwrap();
            let kind = letter["kind"].as_str().unwrap().to_owned();
            (letter["offset"].as_u64().unwrap(), kind)
        })
        .collect()
}

/// op-counts reads only `quantity` (and the key) of `orders`, so the decoder converts only
/// those: a value of the wrong type in a column nothing reads does not dead-letter the event.
/// orders-replica keeps every column, so it dead-letters the same line.
#[test]
fn columns_nothing_reads_are_not_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("odd.jsonl");
    let source = r#""source":{"name":"dbserver1","schema":"public","table":"orders","ts_ms":1704067200000,"txId":1}"#;
    let lines = [
        r#"{"order_id":1,"customer_id":7,"status":"new","quantity":2,"price":"1.50","created_at":1704067200000000}"#,
        r#"{"order_id":2,"customer_id":"seven","status":5,"quantity":3,"price":"cheap","created_at":"noon"}"#,
    ]
    .map(|after| format!(r#"{{"before":null,"after":{after},{source},"op":"c","ts_ms":1}}"#));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let file = format!("file:{}", input.display());

    let dead = dir.path().join("op-counts-dead.jsonl");
    let stdout = run_tributary_ok(&[
        "run",
        "op-counts",
        "--source",
        &file,
        "--until-idle",
        "--console-format",
        "jsonl",
        "--dead-letter",
        dead.to_str().unwrap(),
    ]);
    let counts = table_at(&parse_console(stdout.as_bytes()), "op_counts", u64::MAX);
    let both = serde_json::json!({"op": "c", "event_count": 2, "total_quantity": 5});
    assert_eq!(counts, table_of(&[both]));
    assert_eq!(dead_letter_kinds(&dead), vec![]);

    let dead = dir.path().join("replica-dead.jsonl");
    run_tributary_ok(&[
        "run",
        "orders-replica",
        "--source",
        &file,
        "--until-idle",
        "--console-format",
        "jsonl",
        "--warehouse",
        dir.path().join("warehouse").to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
    ]);
    assert_eq!(
        dead_letter_kinds(&dead),
        vec![(2, "type-mismatch".to_owned())]
    );
}
