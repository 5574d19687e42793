//! Kafka misconfigurations fail with one clear `error:` line after bounded retries: an
//! unreachable broker, a missing source or sink topic (named, with how to create it), a bad
//! option. A broker that goes away mid-run is waited for, and shutdown stays prompt.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::kafka::Broker;
use crate::support::kafka_workload::{orders_workload, ORDERS};
use crate::support::{parse_console, run_tributary, table_at, tributary_bin};

fn error_line(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "the run should fail");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
    errors[0].to_owned()
}

#[test]
fn unreachable_broker_fails_after_bounded_retries() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again: nothing listens there
    let started = Instant::now();
    let output = run_tributary(&[
        "run",
        "op-counts",
        "--source",
        &format!("kafka://127.0.0.1:{port}/dbserver1.public.orders"),
        "--until-idle",
        "--kafka-connect-timeout-ms",
        "3000",
    ]);
    let line = error_line(&output);
    assert!(line.contains("cannot reach Kafka at 127.0.0.1"), "{line}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(20),
        "retried for about the connect timeout, took {elapsed:?}"
    );
}

#[test]
fn bad_kafka_options_and_specs_fail_with_one_line() {
    for args in [
        &["--source", "kafka://localhost:9092", "--until-idle"][..],
        &["--source", "kafka://localhost/t", "--until-idle"][..],
        &[
            "--source",
            "kafka://localhost:9092/t",
            "--kafka-option",
            "no-equals-sign",
        ][..],
        &["--kafka-sink", "kafka:/x", "--source", "generator:10"][..],
    ] {
        let mut all = vec!["run", "op-counts"];
        all.extend_from_slice(args);
        let line = error_line(&run_tributary(&all));
        assert!(
            line.contains("kafka") || line.contains("KEY=VALUE"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn missing_sink_topic_fails_the_run_with_one_line() {
    let Some(broker) = Broker::start_or_skip("kafka_errors::missing_sink_topic") else {
        return;
    };
    let output = run_tributary(&[
        "run",
        "op-counts",
        "--source",
        "generator:2000",
        "--until-idle",
        "--kafka-sink",
        &format!("kafka://{}/nowhere", broker.addr),
        "--kafka-connect-timeout-ms",
        "1500",
    ]);
    assert!(!output.status.success(), "the run should fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
    assert!(
        errors[0].contains("nowhere.op_counts") && errors[0].contains("--create"),
        "{}",
        errors[0]
    );
}

#[test]
fn missing_topic_is_named_with_how_to_create_it() {
    let Some(broker) = Broker::start_or_skip("kafka_errors::missing_topic") else {
        return;
    };
    broker.create_topic("dbserver1.public.orders", 1);
    let output = run_tributary(&[
        "run",
        "op-counts",
        "--source",
        &format!(
            "kafka://{}/dbserver1.public.orders,dbserver1.public.missing",
            broker.addr
        ),
        "--until-idle",
        "--kafka-connect-timeout-ms",
        "2000",
    ]);
    let line = error_line(&output);
    assert!(
        line.contains("dbserver1.public.missing") && !line.contains("orders,"),
        "names only the missing topic: {line}"
    );
    assert!(line.contains("--create"), "says how to create it: {line}");
}

#[test]
fn a_broker_that_goes_away_is_waited_for_and_shutdown_stays_prompt() {
    let Some(broker) = Broker::start_or_skip("kafka_errors::broker_goes_away") else {
        return;
    };
    broker.create_topic(ORDERS, 2);
    let workload = orders_workload(2_000, 300, 3, 2, 1);
    let orders: Vec<_> = workload
        .messages
        .iter()
        .filter(|m| m.topic == ORDERS)
        .cloned()
        .collect();
    broker.produce(&orders);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let mut child = Command::new(tributary_bin())
        .args([
            "run",
            "op-counts",
            "--source",
            &format!("kafka://{}/{ORDERS}", broker.addr),
            "--epoch-ms",
            "100",
            "--console-format",
            "jsonl",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let counted = || {
        let text = std::fs::read(&out).unwrap();
        let end = text.iter().rposition(|b| *b == b'\n').map_or(0, |e| e + 1);
        table_at(&parse_console(&text[..end]), "op_counts", u64::MAX)
    };
    let started = Instant::now();
    while counted() != workload.op_counts {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never caught up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(broker);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run keeps waiting for the broker instead of exiting"
    );
    let stopping = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "shutdown took {:?} with the broker gone",
        stopping.elapsed()
    );
    assert_eq!(counted(), workload.op_counts, "the results stand");
}
