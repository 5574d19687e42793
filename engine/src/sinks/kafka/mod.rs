//! Kafka sink: every named output also goes to topic `PREFIX.<output>`, one batch of messages
//! per closed epoch, with an idempotent producer flushed before the epoch counts as handled.

pub mod encode;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use tributary_operators::dataflow::Time;
use tributary_operators::{Row, Schema};

use self::encode::{Encoder, KafkaSinkFormat};
use super::{record_failure, FailureSlot};
use crate::error::{OptionError, RunError};
use crate::kafka_client::{
    fetch_with_retries, parse_brokers, ErrorLog, KafkaClientOptions, QuietContext,
};

/// A parsed `--kafka-sink kafka://HOST:PORT[,HOST:PORT][/PREFIX]` with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSinkSpec {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Topic prefix: output `status` goes to `PREFIX.status` (the caller defaults it to the
    /// pipeline name).
    pub prefix: Option<String>,
    /// Message format.
    pub format: KafkaSinkFormat,
    /// Pass-through client options.
    pub client: KafkaClientOptions,
}

impl KafkaSinkSpec {
    /// Parses `kafka://HOST:PORT[,HOST:PORT][/PREFIX]`.
    pub fn parse(spec: &str) -> Result<Self, OptionError> {
        let bad = |reason: String| OptionError {
            option: "--kafka-sink".into(),
            value: spec.to_owned(),
            reason,
        };
        let rest = spec.strip_prefix("kafka://").ok_or_else(|| {
            bad("expected kafka://HOST:PORT[/PREFIX], e.g. kafka://localhost:9092".into())
        })?;
        let (brokers, prefix) = match rest.split_once('/') {
            Some((brokers, prefix)) => (brokers, Some(prefix.trim_end_matches('.'))),
            None => (rest, None),
        };
        parse_brokers(brokers).map_err(bad)?;
        let prefix = prefix.filter(|p| !p.is_empty()).map(str::to_owned);
        Ok(KafkaSinkSpec {
            brokers: brokers.to_owned(),
            prefix,
            format: KafkaSinkFormat::default(),
            client: KafkaClientOptions::default(),
        })
    }

    /// The topic an output is written to.
    pub fn topic(&self, output: &str) -> String {
        format!("{}.{output}", self.prefix.as_deref().unwrap_or("tributary"))
    }
}

/// How long a flush may wait on an unreachable broker before the epoch fails (librdkafka's
/// own `message.timeout.ms` fails undeliverable messages first).
const FLUSH_LIMIT: Duration = Duration::from_secs(600);

/// One output's Kafka topic: encodes and produces each closed epoch's changes.
pub struct KafkaOutput {
    spec: Arc<KafkaSinkSpec>,
    name: String,
    topic: String,
    encoder: Encoder,
    producer: Option<ThreadedProducer<QuietContext>>,
    failure: FailureSlot,
    failed: bool,
    errors: ErrorLog,
}

impl std::fmt::Debug for KafkaOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOutput")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl super::OutputWriter for KafkaOutput {
    fn write(&mut self, epoch: Time, changes: Vec<(Row, i64)>) {
        self.write_batch(epoch, changes);
    }
}

impl KafkaOutput {
    /// The output `name` with rows of `schema` keyed by `key`; connects on the first batch.
    pub fn new(
        spec: Arc<KafkaSinkSpec>,
        name: &str,
        schema: Schema,
        key: Option<Vec<usize>>,
        failure: FailureSlot,
    ) -> Self {
        KafkaOutput {
            topic: spec.topic(name),
            encoder: Encoder::new(spec.format, schema, key),
            spec,
            name: name.to_owned(),
            producer: None,
            failure,
            failed: false,
            errors: ErrorLog::new(Duration::from_secs(10)),
        }
    }

    fn fail(&mut self, cause: String) {
        self.failed = true;
        record_failure(
            &self.failure,
            RunError::Sink {
                sink: format!("kafka `{}` (topic {})", self.name, self.topic),
                cause: cause.into(),
            },
        );
    }

    fn connect(&self) -> Result<ThreadedProducer<QuietContext>, String> {
        let config = self.spec.client.config(
            &self.spec.brokers,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("compression.type", "lz4"),
                // Output topics are created on purpose (partitions, retention); a typo in the
                // prefix should fail, not create topics. `--kafka-option
                // allow.auto.create.topics=true` lets the broker's policy decide instead.
                ("allow.auto.create.topics", "false"),
            ],
        );
        tracing::info!(
            brokers = %self.spec.brokers,
            topic = %self.topic,
            format = ?self.spec.format,
            options = ?self.spec.client.redacted(),
            "opening kafka sink"
        );
        let producer: ThreadedProducer<QuietContext> = config
            .create_with_context(QuietContext::default())
            .map_err(|e| format!("bad producer configuration: {e}; check --kafka-option"))?;
        fetch_with_retries(
            &self.spec.brokers,
            std::slice::from_ref(&self.topic),
            self.spec.client.connect_timeout,
            |timeout| {
                producer
                    .client()
                    .fetch_metadata(Some(&self.topic), timeout)
                    .map_err(|e| {
                        producer
                            .context()
                            .last_error()
                            .unwrap_or_else(|| e.to_string())
                    })
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(producer)
    }

    /// Produces one epoch's consolidated changes and waits until the broker has them all.
    fn write_batch(&mut self, batch: Time, changes: Vec<(Row, i64)>) {
        // After any failure of the run, stop writing (the run is ending with that error).
        if self.failed || self.failure.lock().map_or(true, |f| f.is_some()) {
            return;
        }
        if self.producer.is_none() {
            match self.connect() {
                Ok(producer) => self.producer = Some(producer),
                Err(cause) => return self.fail(cause),
            }
        }
        let messages = self.encoder.encode(batch, &changes);
        let Some(producer) = &self.producer else {
            return;
        };
        let (failed_before, _) = producer.context().failed_deliveries();
        for message in &messages {
            let mut record = BaseRecord::to(&self.topic).key(message.key.as_bytes());
            if let Some(value) = &message.value {
                record = record.payload(value.as_bytes());
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((error, _)) => {
                        return self.fail(format!("cannot queue a message: {error}"));
                    }
                }
            }
        }
        let started = Instant::now();
        while producer.in_flight_count() > 0 {
            if let Err(error) = producer.flush(Duration::from_secs(1)) {
                self.errors.note("producer flush", &error.to_string());
            }
            if started.elapsed() > FLUSH_LIMIT {
                let cause = format!(
                    "{} message(s) still undelivered after {}s; is the broker up?",
                    producer.in_flight_count(),
                    FLUSH_LIMIT.as_secs()
                );
                return self.fail(cause);
            }
        }
        let (failed_after, reason) = producer.context().failed_deliveries();
        if failed_after > failed_before {
            let cause = format!(
                "{} message(s) of epoch {batch} were not delivered: {}; is the topic writable?",
                failed_after - failed_before,
                reason.unwrap_or_default()
            );
            return self.fail(cause);
        }
        tracing::debug!(topic = %self.topic, epoch = batch, messages = messages.len(), "kafka sink flushed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sink_specs() {
        let spec = KafkaSinkSpec::parse("kafka://localhost:9092/shop").unwrap();
        assert_eq!(spec.topic("status"), "shop.status");
        let spec = KafkaSinkSpec::parse("kafka://a:1,b:2").unwrap();
        assert_eq!(spec.brokers, "a:1,b:2");
        assert_eq!(spec.prefix, None);
        assert!(KafkaSinkSpec::parse("kafka:/a:1").is_err());
        assert!(KafkaSinkSpec::parse("kafka://a/p").is_err());
    }
}
