//! Helpers for measuring by hand (ignored in `cargo test`): fill a running broker with the
//! orders workload, to time `tributary run … --source kafka://…` against it.
//!
//! ```sh
//! TRIBUTARY_BENCH_BROKER=127.0.0.1:19092 TRIBUTARY_BENCH_EVENTS=1000000 \
//!     cargo test --release -p tributary --test e2e kafka_throughput -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Instant;

use crate::support::kafka::Broker;
use crate::support::kafka_workload::{orders_workload, CUSTOMERS, ORDERS};

#[test]
#[ignore = "fills an external broker for measurements; see the file header"]
fn fill_broker_with_orders() {
    let addr = std::env::var("TRIBUTARY_BENCH_BROKER").expect("TRIBUTARY_BENCH_BROKER=HOST:PORT");
    let events: u64 =
        std::env::var("TRIBUTARY_BENCH_EVENTS").map_or(1_000_000, |n| n.parse().unwrap());
    let partitions: i32 =
        std::env::var("TRIBUTARY_BENCH_PARTITIONS").map_or(4, |n| n.parse().unwrap());
    let broker = Broker::external(&addr);
    broker.create_topic(ORDERS, partitions as u32);
    broker.create_topic(CUSTOMERS, 2);
    let workload = orders_workload(events, 100_000, 42, partitions, 2);
    let started = Instant::now();
    broker.produce(&workload.messages);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} messages in {seconds:.1}s ({:.0}/s)",
        workload.messages.len(),
        workload.messages.len() as f64 / seconds
    );
}

/// Prints the consumer group's lag (messages in the topics not yet covered by its committed
/// offsets) every 500 ms: `TRIBUTARY_BENCH_GROUP`, `TRIBUTARY_BENCH_TOTAL` (messages produced),
/// `TRIBUTARY_BENCH_SECONDS`.
#[test]
#[ignore = "watches an external broker for measurements; see the file header"]
fn watch_group_lag() {
    let addr = std::env::var("TRIBUTARY_BENCH_BROKER").expect("TRIBUTARY_BENCH_BROKER=HOST:PORT");
    let group = std::env::var("TRIBUTARY_BENCH_GROUP").expect("TRIBUTARY_BENCH_GROUP");
    let total: i64 = std::env::var("TRIBUTARY_BENCH_TOTAL")
        .expect("TRIBUTARY_BENCH_TOTAL")
        .parse()
        .unwrap();
    let seconds: u64 = std::env::var("TRIBUTARY_BENCH_SECONDS").map_or(30, |n| n.parse().unwrap());
    let partitions: i32 =
        std::env::var("TRIBUTARY_BENCH_PARTITIONS").map_or(4, |n| n.parse().unwrap());
    let broker = Broker::external(&addr);
    let started = Instant::now();
    while started.elapsed().as_secs() < seconds {
        let committed: i64 = [(ORDERS, partitions), (CUSTOMERS, 2)]
            .iter()
            .flat_map(|(topic, n)| broker.committed(&group, topic, *n))
            .map(|o| o.unwrap_or(0))
            .sum();
        eprintln!(
            "t={:5.1}s committed={committed} lag={}",
            started.elapsed().as_secs_f64(),
            total - committed
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// How fast one plain consumer drains the orders and customers topics (no decoding): the
/// ceiling for the source. `TRIBUTARY_BENCH_BROKER`, `TRIBUTARY_BENCH_TOTAL`.
#[test]
#[ignore = "reads an external broker for measurements; see the file header"]
fn raw_consume_speed() {
    let addr = std::env::var("TRIBUTARY_BENCH_BROKER").expect("TRIBUTARY_BENCH_BROKER=HOST:PORT");
    let total: usize = std::env::var("TRIBUTARY_BENCH_TOTAL")
        .expect("TRIBUTARY_BENCH_TOTAL")
        .parse()
        .unwrap();
    let broker = Broker::external(&addr);
    let started = Instant::now();
    let read: usize = [ORDERS, CUSTOMERS]
        .iter()
        .map(|t| {
            broker
                .read_all(t, std::time::Duration::from_millis(500))
                .len()
        })
        .sum();
    let seconds = started.elapsed().as_secs_f64() - 1.0;
    eprintln!(
        "read {read} of {total} messages in {seconds:.1}s ({:.0}/s)",
        read as f64 / seconds
    );
}
