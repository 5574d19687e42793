//! Kafka client settings shared by the source and the sink: bootstrap servers, pass-through
//! librdkafka options (flags and `TRIBUTARY_KAFKA_*` environment variables), secret redaction,
//! a quiet client context, and connecting with bounded retries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::TopicPartitionList;

use crate::error::{OptionError, SourceError};

/// Prefix of environment variables passed to every Kafka client as options:
/// `TRIBUTARY_KAFKA_SASL_PASSWORD=…` sets `sasl.password`.
pub const ENV_PREFIX: &str = "TRIBUTARY_KAFKA_";

/// How long opening a source or sink keeps retrying an unreachable broker or a missing topic.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Client settings common to the Kafka source and sink.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaClientOptions {
    /// librdkafka options (`security.protocol`, `sasl.mechanism`, …); later entries win.
    pub options: Vec<(String, String)>,
    /// How long to retry an unreachable broker or a missing topic before failing.
    pub connect_timeout: Duration,
}

impl Default for KafkaClientOptions {
    fn default() -> Self {
        KafkaClientOptions {
            options: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for KafkaClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaClientOptions")
            .field("options", &redacted(&self.options))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl KafkaClientOptions {
    /// Options from `TRIBUTARY_KAFKA_*` environment variables, then `flags` (`KEY=VALUE`, which
    /// win). A flag without `=` is an error that says what is expected.
    pub fn from_env_and_flags(
        flags: &[String],
        connect_timeout: Duration,
    ) -> Result<Self, OptionError> {
        let mut options = options_from_env(std::env::vars());
        for flag in flags {
            let Some((key, value)) = flag.split_once('=') else {
                return Err(OptionError {
                    option: "--kafka-option".into(),
                    value: flag.clone(),
                    reason: "expected KEY=VALUE, e.g. security.protocol=SASL_SSL".into(),
                });
            };
            options.push((key.trim().to_owned(), value.to_owned()));
        }
        Ok(KafkaClientOptions {
            options,
            connect_timeout,
        })
    }

    /// A librdkafka config for `brokers` with the built-in `defaults` overridden by the user's
    /// options.
    pub fn config(&self, brokers: &str, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.options {
            config.set(key, value);
        }
        // librdkafka's own `debug=…` option asks for its debug lines (logged at debug level).
        let debugging = self.options.iter().any(|(key, _)| key == "debug");
        config.set_log_level(if debugging {
            RDKafkaLogLevel::Debug
        } else {
            RDKafkaLogLevel::Warning
        });
        config
    }

    /// The options with secret values replaced, for logs.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        redacted(&self.options)
    }
}

/// Options named by `TRIBUTARY_KAFKA_<KEY>` variables: the key lower-cased, `_` → `.`.
pub fn options_from_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = vars
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(ENV_PREFIX)?;
            (!key.is_empty()).then(|| (key.to_lowercase().replace('_', "."), value))
        })
        .collect();
    options.sort();
    options
}

/// Checks `HOST:PORT[,HOST:PORT]`.
pub fn parse_brokers(brokers: &str) -> Result<(), String> {
    for broker in brokers.split(',') {
        let ok = broker
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(format!("`{broker}` is not HOST:PORT"));
        }
    }
    Ok(())
}

/// Whether an option's value must never be logged.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_lowercase();
    ["password", "secret", "jaas", "token"]
        .iter()
        .any(|word| key.contains(word))
}

fn redacted(options: &[(String, String)]) -> BTreeMap<String, String> {
    options
        .iter()
        .map(|(key, value)| {
            let shown = if is_secret(key) {
                "<redacted>".to_owned()
            } else {
                value.clone()
            };
            (key.clone(), shown)
        })
        .collect()
}

/// A client context that keeps librdkafka quiet: its log lines go to `tracing` at debug level
/// and its errors are counted, the latest kept for the one-line error a failed open reports;
/// the owner logs them rate-limited.
#[derive(Debug, Default)]
pub struct QuietContext {
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    failed_deliveries: AtomicU64,
    last_delivery_error: Mutex<Option<String>>,
}

impl QuietContext {
    /// Errors reported so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The latest error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Messages the producer gave up on so far, and the latest reason.
    pub fn failed_deliveries(&self) -> (u64, Option<String>) {
        let reason = self.last_delivery_error.lock().ok().and_then(|e| e.clone());
        (self.failed_deliveries.load(Ordering::Relaxed), reason)
    }

    fn note(&self, text: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(text);
        }
    }
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, facility = fac, message = log_message, "librdkafka");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for QuietContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                tracing::debug!(partitions = offsets.count(), "kafka offsets committed");
            }
            Err(error) => self.note(format!("offset commit failed: {error}")),
        }
    }
}

impl ProducerContext for QuietContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, _message)) = result {
            self.failed_deliveries.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_delivery_error.lock() {
                *last = Some(error.to_string());
            }
        }
    }
}

/// Logs a recurring client error at most every `every`, with how many were seen since.
#[derive(Debug)]
pub struct ErrorLog {
    every: Duration,
    last_logged: Option<Instant>,
    seen: u64,
}

impl ErrorLog {
    /// Logs at most once per `every`.
    pub fn new(every: Duration) -> Self {
        ErrorLog {
            every,
            last_logged: None,
            seen: 0,
        }
    }

    /// `error` happened while `what`; log it unless one was logged recently.
    pub fn note(&mut self, what: &str, error: &str) {
        self.seen += 1;
        if self.last_logged.is_none_or(|at| at.elapsed() >= self.every) {
            tracing::warn!(
                errors = self.seen,
                error,
                "kafka {what}: retrying (the client reconnects by itself)"
            );
            self.last_logged = Some(Instant::now());
            self.seen = 0;
        }
    }
}

/// Why a metadata request did not give what was needed.
#[derive(Debug)]
pub enum MetadataProblem {
    /// The broker did not answer.
    Unreachable(String),
    /// These topics do not exist (or have no partitions).
    MissingTopics(Vec<String>),
}

/// Fetches metadata for `topics` with retries and exponential backoff (250 ms doubling to 2 s)
/// until `timeout` has passed; `fetch` does one attempt with the given per-attempt timeout.
pub fn fetch_with_retries<F>(
    brokers: &str,
    topics: &[String],
    timeout: Duration,
    mut fetch: F,
) -> Result<Metadata, SourceError>
where
    F: FnMut(Duration) -> Result<Metadata, String>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(250);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = timeout.saturating_sub(started.elapsed());
        let attempt = left.clamp(Duration::from_millis(500), Duration::from_secs(5));
        let problem = match fetch(attempt) {
            Ok(metadata) => {
                let missing = missing_topics(&metadata, topics);
                if missing.is_empty() {
                    return Ok(metadata);
                }
                MetadataProblem::MissingTopics(missing)
            }
            Err(cause) => MetadataProblem::Unreachable(cause),
        };
        if started.elapsed() + backoff >= timeout {
            return Err(match problem {
                MetadataProblem::Unreachable(cause) => SourceError::KafkaUnreachable {
                    brokers: brokers.to_owned(),
                    attempts,
                    seconds: started.elapsed().as_secs(),
                    cause,
                },
                MetadataProblem::MissingTopics(missing) => SourceError::KafkaTopicMissing {
                    brokers: brokers.to_owned(),
                    topics: missing.join(","),
                },
            });
        }
        match &problem {
            MetadataProblem::Unreachable(cause) => {
                tracing::warn!(brokers, attempts, cause = %cause, "kafka broker unreachable; retrying")
            }
            MetadataProblem::MissingTopics(missing) => {
                tracing::warn!(brokers, topics = ?missing, "kafka topics missing; retrying")
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn missing_topics(metadata: &Metadata, topics: &[String]) -> Vec<String> {
    topics
        .iter()
        .filter(|name| {
            !metadata.topics().iter().any(|t| {
                t.name() == name.as_str() && t.error().is_none() && !t.partitions().is_empty()
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_become_options() {
        let vars = [
            ("TRIBUTARY_KAFKA_SASL_PASSWORD", "hunter2"),
            ("TRIBUTARY_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("HOME", "/root"),
            ("TRIBUTARY_KAFKA_", "ignored"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(
            options_from_env(vars.into_iter()),
            vec![
                ("sasl.password".to_owned(), "hunter2".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
            ]
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let options = KafkaClientOptions {
            options: vec![
                ("sasl.password".into(), "hunter2".into()),
                ("sasl.oauthbearer.client.secret".into(), "s3".into()),
                ("sasl.jaas.config".into(), "j".into()),
                ("sasl.username".into(), "alice".into()),
            ],
            ..Default::default()
        };
        let shown = format!("{options:?} {:?}", options.redacted());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3\""),
            "{shown}"
        );
        assert!(shown.contains("alice"), "{shown}");
    }

    #[test]
    fn flags_need_key_value() {
        let error = KafkaClientOptions::from_env_and_flags(&["nope".into()], Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(error.contains("KEY=VALUE"), "{error}");
        let ok = KafkaClientOptions::from_env_and_flags(
            &["session.timeout.ms=2000".into()],
            Duration::ZERO,
        )
        .unwrap();
        assert!(ok
            .options
            .contains(&("session.timeout.ms".into(), "2000".into())));
    }
}
