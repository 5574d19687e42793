//! `tributary.toml`: the `run` flags as a file. Keys are the flag names without `--`; unknown
//! keys are rejected. Flags given on the command line win over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Settings for `tributary run`, from a file, from flags, or both merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunConfig {
    /// Pipeline name.
    pub pipeline: Option<String>,
    /// `file:PATH`, `generator[:EVENTS]`, `kafka://HOST:PORT/TOPIC[,TOPIC]` or `postgres://…`.
    pub source: Option<String>,
    /// Timely worker threads.
    pub workers: Option<usize>,
    /// Epoch interval in milliseconds.
    pub epoch_ms: Option<u64>,
    /// Stop once the source is drained and every sink has written.
    pub until_idle: Option<bool>,
    /// `table` or `jsonl`.
    pub console_format: Option<String>,
    /// `update` or `complete`.
    pub console_mode: Option<String>,
    /// Most rows a console table shows per batch.
    pub console_rows: Option<usize>,
    /// Dead-letter JSONL file.
    pub dead_letter: Option<PathBuf>,
    /// Address for the Prometheus endpoint, e.g. `127.0.0.1:9464`.
    pub metrics_addr: Option<SocketAddr>,
    /// Directory of the Iceberg tables.
    pub warehouse: Option<PathBuf>,
    /// Iceberg catalog, `sqlite:PATH`, `postgres://USER@HOST[:PORT]/DB` or
    /// `http[s]://HOST[:PORT][/PATH]` (REST).
    pub catalog: Option<String>,
    /// Iceberg commit interval in milliseconds.
    pub commit_ms: Option<u64>,
    /// How upserting Iceberg tables delete replaced rows: `position` or `equality`.
    pub iceberg_deletes: Option<String>,
    /// Kafka consumer group for committed offsets (default `tributary-<pipeline>`).
    pub kafka_group: Option<String>,
    /// Where Kafka partitions start without a resume position: `earliest`, `latest`,
    /// `committed`.
    pub kafka_start: Option<String>,
    /// librdkafka options as `KEY=VALUE` (`security.protocol=SASL_SSL`, …); secrets belong in
    /// `TRIBUTARY_KAFKA_*` environment variables instead.
    #[serde(default)]
    pub kafka_option: Vec<String>,
    /// How long to retry an unreachable broker or a missing topic at start, in milliseconds.
    pub kafka_connect_timeout_ms: Option<u64>,
    /// Also write every output to Kafka: `kafka://HOST:PORT[/PREFIX]`.
    pub kafka_sink: Option<String>,
    /// `debezium` or `upsert`.
    pub kafka_sink_format: Option<String>,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// Bad TOML or an unknown key.
    #[error("{path}: {message}(keys are the `tributary run` flag names without `--`, e.g. `epoch-ms = 500`)")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, which names the unknown key and the known ones.
        message: String,
    },
}

impl RunConfig {
    /// Reads a `tributary.toml`.
    pub fn from_file(path: &Path) -> Result<RunConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.display().to_string(),
            cause,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<RunConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Fills what `self` leaves unset from `fallback`.
    pub fn or(self, fallback: RunConfig) -> RunConfig {
        RunConfig {
            pipeline: self.pipeline.or(fallback.pipeline),
            source: self.source.or(fallback.source),
            workers: self.workers.or(fallback.workers),
            epoch_ms: self.epoch_ms.or(fallback.epoch_ms),
            until_idle: self.until_idle.or(fallback.until_idle),
            console_format: self.console_format.or(fallback.console_format),
            console_mode: self.console_mode.or(fallback.console_mode),
            console_rows: self.console_rows.or(fallback.console_rows),
            dead_letter: self.dead_letter.or(fallback.dead_letter),
            metrics_addr: self.metrics_addr.or(fallback.metrics_addr),
            warehouse: self.warehouse.or(fallback.warehouse),
            catalog: self.catalog.or(fallback.catalog),
            commit_ms: self.commit_ms.or(fallback.commit_ms),
            iceberg_deletes: self.iceberg_deletes.or(fallback.iceberg_deletes),
            kafka_group: self.kafka_group.or(fallback.kafka_group),
            kafka_start: self.kafka_start.or(fallback.kafka_start),
            kafka_option: fallback
                .kafka_option
                .into_iter()
                .chain(self.kafka_option)
                .collect(),
            kafka_connect_timeout_ms: self
                .kafka_connect_timeout_ms
                .or(fallback.kafka_connect_timeout_ms),
            kafka_sink: self.kafka_sink.or(fallback.kafka_sink),
            kafka_sink_format: self.kafka_sink_format.or(fallback.kafka_sink_format),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flag_named_keys_and_rejects_unknown_ones() {
        let config = RunConfig::from_toml("pipeline = \"op-counts\"\nworkers = 2\nepoch-ms = 50\nmetrics-addr = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(config.workers, Some(2));
        assert_eq!(config.epoch_ms, Some(50));
        let error = RunConfig::from_toml("wokers = 2\n").unwrap_err();
        assert!(error.contains("unknown field `wokers`"), "{error}");
        assert!(
            error.contains("workers"),
            "the message lists the known keys: {error}"
        );
    }

    #[test]
    fn reads_kafka_keys_and_appends_flag_options_after_the_file_ones() {
        let file = RunConfig::from_toml(
            "source = \"kafka://k:9092/db.public.orders\"\nkafka-group = \"g\"\nkafka-start = \"committed\"\nkafka-option = [\"security.protocol=SASL_PLAINTEXT\"]\nkafka-sink = \"kafka://k:9092/out\"\nkafka-sink-format = \"upsert\"\nkafka-connect-timeout-ms = 500\n",
        )
        .unwrap();
        assert_eq!(file.kafka_group.as_deref(), Some("g"));
        assert_eq!(file.kafka_connect_timeout_ms, Some(500));
        let flags = RunConfig {
            kafka_option: vec!["security.protocol=PLAINTEXT".into()],
            ..RunConfig::default()
        };
        let merged = flags.or(file);
        assert_eq!(
            merged.kafka_option,
            [
                "security.protocol=SASL_PLAINTEXT",
                "security.protocol=PLAINTEXT"
            ],
            "later options win, so flags go last"
        );
        assert_eq!(merged.kafka_sink_format.as_deref(), Some("upsert"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let flags = RunConfig {
            workers: Some(4),
            ..RunConfig::default()
        };
        let file = RunConfig {
            workers: Some(2),
            epoch_ms: Some(10),
            ..RunConfig::default()
        };
        let merged = flags.or(file);
        assert_eq!((merged.workers, merged.epoch_ms), (Some(4), Some(10)));
    }
}
