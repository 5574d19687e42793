//! `tributary run`: its options are one struct, [`RunConfig`], that is both the command line
//! (clap) and `tributary.toml` (serde, keys named like the flags without `--`). A new option is
//! one field here, and where the run uses it.

// The fields' doc comments are the `--help` text, written as the command line spells values
// (`[default: …]`, `http[s]://HOST[:PORT]`, `<warehouse>`), not as rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use tributary_engine::kafka_client::{KafkaClientOptions, DEFAULT_CONNECT_TIMEOUT};
use tributary_engine::sinks::kafka::encode::KafkaSinkFormat;
use tributary_engine::sinks::kafka::KafkaSinkSpec;
use tributary_engine::sources::kafka::StartFrom;
use tributary_engine::sources::{SourceSpec, SourceTable, TableFilter};
use tributary_engine::{
    shared_writer, ConsoleFormat, ConsoleMode, ConsoleOptions, DeleteMode, IcebergOptions,
    Pipeline, RunOptions,
};
use tributary_engine::{Column, Partition, Schema, TableOptions};

/// Settings for `tributary run`, from flags, from a file, or both (flags win).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunConfig {
    /// Pipeline name (see `tributary pipelines`); may come from --config instead.
    pub pipeline: Option<String>,
    /// Where records come from: file:PATH | generator[:EVENTS] |
    /// kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC|,~REGEX] |
    /// postgres://USER@HOST[:PORT]/DB?publication=P&slot=S.  [default: generator]
    #[arg(long)]
    pub source: Option<String>,
    /// Source tables to read, a regular expression matched whole against `schema.table`
    /// (e.g. 'public\.(orders|customers)'); for pipelines that take their tables from the
    /// source (`replicate`).  [default: every published table]
    #[arg(long, value_name = "REGEX")]
    pub tables: Option<String>,
    /// Iceberg namespace for the tables `replicate` writes.  [default: the source schema]
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Source tables declared in the file (`[[table]]`: name, key, columns), for sources
    /// whose events carry no types; they win over what a source describes.
    #[arg(skip)]
    #[serde(default)]
    pub table: Vec<TableDeclaration>,
    /// Timely worker threads.  [default: 1]
    #[arg(long)]
    pub workers: Option<usize>,
    /// Close epochs at most this often, in milliseconds (only where every stream is between
    /// transactions).  [default: 1000]
    #[arg(long)]
    pub epoch_ms: Option<u64>,
    /// Stop once the source is drained and every sink has written.
    #[arg(long)]
    #[serde(default)]
    pub until_idle: bool,
    /// How the console prints: table or jsonl.  [default: table]
    #[arg(long)]
    pub console_format: Option<ConsoleFormat>,
    /// update (changed rows per batch) or complete (the whole result).  [default: update]
    #[arg(long)]
    pub console_mode: Option<ConsoleMode>,
    /// Most rows a console table shows per batch.  [default: 20]
    #[arg(long)]
    pub console_rows: Option<usize>,
    /// Write dead letters (reason, source position, raw payload) to this JSONL file.
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Where the Iceberg tables live: a directory or s3://BUCKET/PREFIX.  [default: ./warehouse]
    #[arg(long)]
    pub warehouse: Option<String>,
    /// Iceberg catalog: sqlite:PATH | postgres://USER@HOST[:PORT]/DB |
    /// http[s]://HOST[:PORT][/PATH] (REST).  [default: sqlite:<warehouse>/catalog.db]
    #[arg(long)]
    pub catalog: Option<String>,
    /// Commit Iceberg snapshots at most this often, in milliseconds (each covers whole
    /// epochs).  [default: 10000]
    #[arg(long)]
    pub commit_ms: Option<u64>,
    /// How upserting Iceberg tables delete replaced rows: position (read by every reader,
    /// pyiceberg included) or equality (by key; no per-key index in memory; readers must support
    /// equality deletes).  [default: position]
    #[arg(long)]
    pub iceberg_deletes: Option<DeleteMode>,
    /// An Iceberg table property, KEY=VALUE (repeatable; later ones win): set on the tables
    /// the run creates, and over existing tables' own for what the run does (snapshot expiry,
    /// manifest merging, compaction), e.g. history.expire.max-snapshot-age-ms=86400000.
    #[arg(long, value_name = "KEY=VALUE")]
    #[serde(default)]
    pub iceberg_property: Vec<String>,
    /// Kafka consumer group whose offsets are committed once every sink has handled an epoch
    /// (for monitoring, and for --kafka-start committed).  [default: tributary-PIPELINE]
    #[arg(long)]
    pub kafka_group: Option<String>,
    /// Where Kafka partitions start: earliest, latest or committed (the group's offsets).
    /// [default: earliest]
    #[arg(long)]
    pub kafka_start: Option<StartFrom>,
    /// A librdkafka option for the Kafka source and sink, KEY=VALUE (repeatable; a file's come
    /// first), e.g. security.protocol=SASL_SSL. Secrets go in environment variables instead:
    /// TRIBUTARY_KAFKA_SASL_PASSWORD sets sasl.password.
    #[arg(long, value_name = "KEY=VALUE")]
    #[serde(default)]
    pub kafka_option: Vec<String>,
    /// How long to retry an unreachable broker or a missing topic at start, in milliseconds.
    /// [default: 30000]
    #[arg(long)]
    pub kafka_connect_timeout_ms: Option<u64>,
    /// With --until-idle: how long no Kafka message may arrive, once the high watermarks seen
    /// at start are reached, before the source counts as drained, in milliseconds.
    /// [default: 2000]
    #[arg(long)]
    pub kafka_idle_ms: Option<u64>,
    /// Also write every output to Kafka topic PREFIX.OUTPUT: kafka://HOST:PORT[/PREFIX]
    /// (PREFIX defaults to the pipeline name).
    #[arg(long)]
    pub kafka_sink: Option<String>,
    /// Kafka sink messages: debezium ({"op","before","after"} per changed row) or upsert
    /// (key → row, tombstone on delete).  [default: debezium]
    #[arg(long)]
    pub kafka_sink_format: Option<KafkaSinkFormat>,
}

/// A source table as `tributary.toml` declares it, or (without `columns`) how to write a
/// table the source describes:
///
/// ```toml
/// [[table]]
/// name = "dbserver1.public.orders"       # server.schema.table, as its events name it
/// key = ["order_id"]                      # none: an append-only change log
/// columns = ["order_id bigint not null", "status text", "price numeric(10,2)"]
/// partition = ["month(created_at)"]       # when the Iceberg table is created
/// deletes = "equality"                    # default: --iceberg-deletes
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDeclaration {
    /// `server.schema.table` (or `schema.table`).
    pub name: String,
    /// Primary key columns (without `columns`: instead of the source's key).
    #[serde(default)]
    pub key: Vec<String>,
    /// `NAME TYPE [NOT NULL]`, in order; none: the source describes the table.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Partition fields of the Iceberg table: `COLUMN`, `year|month|day|hour(COLUMN)`,
    /// `bucket[N](COLUMN)`.
    #[serde(default)]
    pub partition: Vec<String>,
    /// How replaced rows are deleted: position or equality.
    #[serde(default)]
    pub deletes: Option<DeleteMode>,
}

impl TableDeclaration {
    fn options(&self) -> anyhow::Result<TableOptions> {
        let partitions = self
            .partition
            .iter()
            .map(|p| Partition::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("[[table]] `{}`: {e}", self.name))?;
        Ok(TableOptions {
            key: (self.columns.is_empty() && !self.key.is_empty()).then(|| self.key.clone()),
            partitions,
            deletes: self.deletes,
        })
    }

    fn source_table(&self) -> anyhow::Result<SourceTable> {
        let parts: Vec<&str> = self.name.split('.').collect();
        let (namespace, table) = match parts[..] {
            [.., namespace, table] if !namespace.is_empty() && !table.is_empty() => {
                (namespace, table)
            }
            _ => bail!(
                "[[table]] `{}`: name it server.schema.table (or schema.table)",
                self.name
            ),
        };
        let columns = self
            .columns
            .iter()
            .map(|c| Column::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("[[table]] `{}`: {e}", self.name))?;
        let schema = Schema::new(columns);
        if let Some(missing) = self.key.iter().find(|k| schema.index_of(k).is_none()) {
            bail!(
                "[[table]] `{}`: key column `{missing}` is not among its columns",
                self.name
            );
        }
        Ok(SourceTable {
            name: self.name.clone(),
            namespace: namespace.to_owned(),
            table: table.to_owned(),
            schema,
            key: self.key.clone(),
        })
    }
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

    /// These settings over `file`'s: a value set here wins, a list adds to the file's (later
    /// entries win), a flag left off keeps the file's. Field by field through serde, so a new
    /// option needs nothing here.
    pub fn over(self, file: RunConfig) -> anyhow::Result<RunConfig> {
        let (Json::Object(mut merged), Json::Object(flags)) =
            (serde_json::to_value(file)?, serde_json::to_value(self)?)
        else {
            bail!("run settings are not a table");
        };
        for (key, value) in flags {
            match value {
                Json::Null | Json::Bool(false) => {}
                Json::Array(items) => {
                    if let Some(Json::Array(first)) = merged.get_mut(&key) {
                        first.extend(items);
                    } else {
                        merged.insert(key, Json::Array(items));
                    }
                }
                value => {
                    merged.insert(key, value);
                }
            }
        }
        Ok(serde_json::from_value(Json::Object(merged))?)
    }

    /// The engine's options for running `pipeline` with these settings; SIGINT/SIGTERM stop it.
    pub fn options(&self, pipeline: &Pipeline) -> anyhow::Result<RunOptions> {
        let workers = self.workers.unwrap_or(1);
        if workers == 0 {
            bail!("--workers must be at least 1");
        }
        let dead_letter = match &self.dead_letter {
            Some(path) => Some(shared_writer(BufWriter::new(
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
            ))),
            None => None,
        };
        let warehouse = self.warehouse.as_deref().unwrap_or("warehouse");
        let mut iceberg = IcebergOptions::parse(warehouse, self.catalog.as_deref())?;
        if let Some(ms) = self.commit_ms {
            iceberg.commit_interval = Duration::from_millis(ms);
        }
        iceberg.deletes = self.iceberg_deletes.unwrap_or_default();
        for property in &self.iceberg_property {
            let (key, value) = property
                .split_once('=')
                .filter(|(key, _)| !key.trim().is_empty())
                .with_context(|| format!("--iceberg-property {property}: expected KEY=VALUE"))?;
            iceberg
                .properties
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
        let client = KafkaClientOptions::from_env_and_flags(
            &self.kafka_option,
            self.kafka_connect_timeout_ms
                .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis),
        )?;
        Ok(RunOptions {
            source: self.source(pipeline.name(), &client)?,
            kafka_sink: self.kafka_sink(pipeline.name(), client)?,
            iceberg,
            workers,
            epoch: Duration::from_millis(self.epoch_ms.unwrap_or(1000)),
            until_idle: self.until_idle,
            console: ConsoleOptions {
                format: self.console_format.unwrap_or_default(),
                mode: self.console_mode.unwrap_or_default(),
                max_rows: self.console_rows.unwrap_or(20),
                writer: shared_writer(std::io::stdout()),
            },
            dead_letter,
            metrics_addr: self.metrics_addr,
            shutdown: Some(shutdown_on_signals()?),
            tables: self
                .tables
                .as_deref()
                .map(TableFilter::new)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            namespace: self.namespace.clone(),
            declared_tables: self
                .table
                .iter()
                .filter(|t| !t.columns.is_empty())
                .map(TableDeclaration::source_table)
                .collect::<anyhow::Result<_>>()?,
            table_options: self
                .table
                .iter()
                .map(|t| Ok((t.name.clone(), t.options()?)))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// The source, with its Kafka client settings or replication slot filled in.
    fn source(&self, pipeline: &str, client: &KafkaClientOptions) -> anyhow::Result<SourceSpec> {
        let mut source = SourceSpec::parse(self.source.as_deref().unwrap_or("generator"))?;
        if let SourceSpec::Kafka(kafka) = &mut source {
            kafka.group = self
                .kafka_group
                .clone()
                .unwrap_or_else(|| format!("tributary-{pipeline}"));
            kafka.start = self.kafka_start.unwrap_or_default();
            kafka.idle_quiet = self
                .kafka_idle_ms
                .map_or(kafka.idle_quiet, Duration::from_millis);
            kafka.client = client.clone();
        }
        if let SourceSpec::Postgres(postgres) = &mut source {
            // One slot per pipeline unless the URL names one: slots must not be shared.
            postgres.default_slot_for(pipeline);
        }
        Ok(source)
    }

    fn kafka_sink(
        &self,
        pipeline: &str,
        client: KafkaClientOptions,
    ) -> anyhow::Result<Option<KafkaSinkSpec>> {
        let Some(spec) = &self.kafka_sink else {
            return Ok(None);
        };
        let mut sink = KafkaSinkSpec::parse(spec)?;
        sink.prefix.get_or_insert_with(|| pipeline.to_owned());
        sink.format = self.kafka_sink_format.unwrap_or_default();
        sink.client = client;
        Ok(Some(sink))
    }
}

/// SIGINT/SIGTERM set the returned flag: the run closes its open epoch at the next transaction
/// boundary, every sink writes it, and the process exits 0. A second signal exits at once with
/// status 130.
fn shutdown_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
    }
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flag_named_keys_and_rejects_unknown_ones() {
        let config = RunConfig::from_toml(
            "pipeline = \"op-counts\"\nworkers = 2\nepoch-ms = 50\nmetrics-addr = \"127.0.0.1:9464\"\nconsole-format = \"jsonl\"\n",
        )
        .unwrap();
        assert_eq!(config.workers, Some(2));
        assert_eq!(config.epoch_ms, Some(50));
        assert_eq!(config.console_format, Some(ConsoleFormat::Jsonl));
        let error = RunConfig::from_toml("wokers = 2\n").unwrap_err();
        assert!(error.contains("unknown field `wokers`"), "{error}");
        assert!(
            error.contains("workers"),
            "the message lists the known keys: {error}"
        );
        let error = RunConfig::from_toml("kafka-start = \"newest\"\n").unwrap_err();
        assert!(error.contains("`committed`"), "names the values: {error}");
    }

    #[test]
    fn flags_win_and_lists_add_to_the_file() {
        let file = RunConfig::from_toml(
            "source = \"kafka://k:9092/db.public.orders\"\nworkers = 2\nepoch-ms = 10\nuntil-idle = true\nkafka-group = \"g\"\nkafka-start = \"committed\"\nkafka-option = [\"security.protocol=SASL_PLAINTEXT\"]\nkafka-sink-format = \"upsert\"\n",
        )
        .unwrap();
        let flags = RunConfig {
            workers: Some(4),
            kafka_option: vec!["security.protocol=PLAINTEXT".into()],
            ..RunConfig::default()
        };
        let merged = flags.over(file).unwrap();
        assert_eq!((merged.workers, merged.epoch_ms), (Some(4), Some(10)));
        assert!(merged.until_idle, "a flag left off keeps the file's");
        assert_eq!(merged.kafka_start, Some(StartFrom::Committed));
        assert_eq!(merged.kafka_sink_format, Some(KafkaSinkFormat::Upsert));
        assert_eq!(
            merged.kafka_option,
            [
                "security.protocol=SASL_PLAINTEXT",
                "security.protocol=PLAINTEXT"
            ],
            "later options win, so flags go last"
        );
    }

    #[test]
    fn the_command_line_and_the_file_name_options_alike() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: RunConfig,
        }
        let flags = Cli::try_parse_from([
            "run",
            "orders-replica",
            "--console-format",
            "jsonl",
            "--kafka-start",
            "latest",
            "--iceberg-deletes",
            "equality",
            "--until-idle",
        ])
        .unwrap()
        .config;
        let file = RunConfig::from_toml(
            "pipeline = \"orders-replica\"\nconsole-format = \"jsonl\"\nkafka-start = \"latest\"\niceberg-deletes = \"equality\"\nuntil-idle = true\n",
        )
        .unwrap();
        assert_eq!(flags, file);
        assert!(Cli::try_parse_from(["run", "--console-format", "xml"]).is_err());
    }
}
