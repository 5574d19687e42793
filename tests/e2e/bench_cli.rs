//! `tributary bench` as a script runs it: the JSON report accounts for every event fed (all
//! decoded, no dead letters), with 1 and 2 workers, with the input in one partition and in
//! several, as JSONL lines and as Kafka records, with the Iceberg replica written and not.
//! Throughput figures are only checked to be present, never timed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use crate::support::run_tributary_ok;
use serde_json::Value as Json;

fn bench(args: &[&str]) -> Json {
    let mut all = vec![
        "bench", "--events", "20000", "--keys", "3000", "--format", "json",
    ];
    all.extend_from_slice(args);
    serde_json::from_str(&run_tributary_ok(&all)).unwrap()
}

fn number(report: &Json, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{field}` in {report}"))
}

#[test]
fn every_event_is_decoded_and_the_report_is_complete() {
    for workers in ["1", "2"] {
        for pipeline in ["op-counts", "orders-replica"] {
            let report = bench(&["--pipeline", pipeline, "--workers", workers]);
            assert_eq!(report["pipeline"], pipeline);
            assert_eq!(number(&report, "events"), 20000.0);
            assert_eq!(number(&report, "decoded_events"), 20000.0, "{report}");
            assert_eq!(number(&report, "dead_letters"), 0.0, "{report}");
            assert!(
                number(&report, "records") >= 20000.0,
                "tombstones come on top"
            );
            let live = number(&report, "live_keys");
            assert!(live > 0.0 && live <= 3000.0, "{report}");
            assert!(number(&report, "epochs") >= 1.0);
            assert!(number(&report, "events_per_s") > 0.0);
            assert!(number(&report, "rss_peak_bytes") >= number(&report, "rss_before_bytes"));
            // The run decodes 20 k events: it takes some CPU time (read in 10 ms ticks).
            let cpu = number(&report, "cpu_user_s") + number(&report, "cpu_system_s");
            assert!(cpu > 0.0, "{report}");
            if pipeline == "orders-replica" {
                // Every live key is in the table, plus earlier versions of updated rows.
                assert!(number(&report, "iceberg_rows_written") >= live, "{report}");
                assert!(number(&report, "iceberg_commits") >= 1.0, "{report}");
            }
        }
    }
    let computed_only = bench(&["--pipeline", "orders-replica", "--no-iceberg"]);
    assert_eq!(computed_only["iceberg_written"], false);
    assert_eq!(number(&computed_only, "iceberg_rows_written"), 0.0);
    assert_eq!(number(&computed_only, "decoded_events"), 20000.0);

    // Partitions split the input by key; workers share them out (3 over 2 workers: one reads
    // two). Every event still arrives once.
    for partitions in ["2", "3"] {
        let args = [
            "--pipeline",
            "orders-replica",
            "--no-iceberg",
            "--workers",
            "2",
        ];
        let report = bench(&[&args[..], &["--partitions", partitions]].concat());
        assert_eq!(report["partitions"].to_string(), partitions);
        assert_eq!(number(&report, "decoded_events"), 20000.0, "{report}");
        assert_eq!(number(&report, "dead_letters"), 0.0, "{report}");
        assert_eq!(report["live_keys"], computed_only["live_keys"]);
    }
    // Kafka records (key, value, topic; plain and schema-wrapped keys) decode as the lines do,
    // on the key's worker with two.
    for (workers, schema) in [("1", None), ("2", None), ("2", Some("--schema"))] {
        let args = [
            "--pipeline",
            "orders-replica",
            "--kafka-records",
            "--workers",
            workers,
        ];
        let report = bench(&[&args[..], schema.as_slice()].concat());
        assert_eq!(report["kafka_records"], true);
        assert_eq!(number(&report, "decoded_events"), 20000.0, "{report}");
        assert_eq!(number(&report, "dead_letters"), 0.0, "{report}");
        assert!(number(&report, "iceberg_rows_written") >= number(&report, "live_keys"));
    }
}
