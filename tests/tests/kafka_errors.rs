//! Kafka misconfigurations fail with one clear `error:` line after bounded retries: an
//! unreachable broker, a missing topic (named, with how to create it), a bad option.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::TcpListener;
use std::time::{Duration, Instant};

use tributary_tests::kafka::Broker;
use tributary_tests::run_tributary;

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
