//! End-to-end tests: the real `tributary` binary and runtime on real files, a real
//! Kafka-protocol broker, PostgreSQL and S3 servers and independent Iceberg readers, compared
//! with oracles recomputed from scratch. One test binary (the engine is linked once); one
//! module per area; shared helpers in `support`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

mod backpressure;
mod bench_cli;
mod build_errors;
mod cli;
mod customers_analytics;
mod customers_changelog;
mod iceberg_concurrent_expiry;
mod iceberg_equality_deletes;
mod iceberg_health;
mod iceberg_partitioned;
mod iceberg_postgres_catalog;
mod iceberg_replica;
mod iceberg_rest_catalog;
mod iceberg_s3;
mod jsonl_never_panics;
mod kafka_errors;
mod kafka_pipelines;
mod kafka_restart;
mod kafka_throughput;
mod many_tables;
mod op_counts_cli;
mod operability;
mod postgres_backfill;
mod postgres_by_key;
mod postgres_errors;
mod postgres_replica;
mod postgres_types;
mod products_lake;
mod replicate;
mod sink_contract;
mod status_per_epoch;
mod whole_transactions;
