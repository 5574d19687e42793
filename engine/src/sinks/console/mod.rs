//! Console sink: Spark-like `Batch: N` tables (update or complete mode) or JSONL, one block per
//! closed epoch with changes.

mod format;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use tributary_operators::dataflow::Time;
use tributary_operators::{Row, Schema};

use super::{record_failure, FailureSlot, SharedWriter};
use crate::metrics::Metrics;

pub use format::{render_jsonl, render_table};

/// How rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleFormat {
    /// Spark-like boxed tables.
    #[default]
    Table,
    /// One JSON object per changed row: `{"batch":N,"output":…,"diff":±1,"row":{…}}`.
    Jsonl,
}

/// Which rows each batch prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleMode {
    /// The rows that changed in the epoch.
    #[default]
    Update,
    /// The whole result after the epoch.
    Complete,
}

/// Console settings shared by every console output of a run.
#[derive(Clone)]
pub struct ConsoleOptions {
    /// Output format.
    pub format: ConsoleFormat,
    /// Update or complete mode.
    pub mode: ConsoleMode,
    /// Most rows a table shows per batch (JSONL prints all).
    pub max_rows: usize,
    /// Where to print.
    pub writer: SharedWriter,
}

impl Default for ConsoleOptions {
    /// Tables of changed rows (at most 20 per batch) on stdout.
    fn default() -> Self {
        ConsoleOptions {
            format: ConsoleFormat::default(),
            mode: ConsoleMode::default(),
            max_rows: 20,
            writer: super::shared_writer(std::io::stdout()),
        }
    }
}

impl std::fmt::Debug for ConsoleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOptions")
            .field("format", &self.format)
            .field("mode", &self.mode)
            .finish()
    }
}

impl super::OutputWriter for ConsoleOutput {
    fn write(&mut self, epoch: Time, changes: Vec<(Row, i64)>) {
        self.write_batch(epoch, changes);
    }
}

impl std::fmt::Debug for ConsoleOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOutput")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One console output: renders each closed epoch's changes.
pub struct ConsoleOutput {
    name: String,
    schema: Arc<Schema>,
    key: Option<Vec<usize>>,
    options: ConsoleOptions,
    complete: BTreeMap<Row, i64>,
    metrics: Arc<Metrics>,
    failure: FailureSlot,
}

impl ConsoleOutput {
    /// A console output named `name` for rows of `schema`.
    pub fn new(
        name: &str,
        schema: Arc<Schema>,
        key: Option<Vec<usize>>,
        options: ConsoleOptions,
        metrics: Arc<Metrics>,
        failure: FailureSlot,
    ) -> Self {
        ConsoleOutput {
            name: name.to_owned(),
            schema,
            key,
            options,
            complete: BTreeMap::new(),
            metrics,
            failure,
        }
    }

    /// Prints one epoch's consolidated changes.
    fn write_batch(&mut self, batch: Time, changes: Vec<(Row, i64)>) {
        let changed: u64 = changes.iter().map(|(_, d)| d.unsigned_abs()).sum();
        let text = match self.options.mode {
            ConsoleMode::Update => self.render(batch, &changes),
            ConsoleMode::Complete => {
                for (row, diff) in changes {
                    let count = self.complete.entry(row.clone()).or_insert(0);
                    *count += diff;
                    if *count == 0 {
                        self.complete.remove(&row);
                    }
                }
                let all: Vec<(Row, i64)> =
                    self.complete.iter().map(|(r, d)| (r.clone(), *d)).collect();
                self.render(batch, &all)
            }
        };
        let result = self
            .options
            .writer
            .lock()
            .map_err(|_| std::io::Error::other("writer poisoned"))
            .and_then(|mut w| {
                w.write_all(text.as_bytes())?;
                w.flush()
            });
        match result {
            Ok(()) => self.metrics.output_rows(&self.name, changed),
            Err(cause) => record_failure(
                &self.failure,
                crate::error::RunError::Sink {
                    sink: format!("console `{}`", self.name),
                    cause: cause.into(),
                },
            ),
        }
    }

    fn render(&self, batch: Time, rows: &[(Row, i64)]) -> String {
        match self.options.format {
            ConsoleFormat::Jsonl => render_jsonl(batch, &self.name, &self.schema, rows),
            ConsoleFormat::Table => {
                let removed = match (self.options.mode, &self.key) {
                    (ConsoleMode::Update, Some(key)) => removed_keys(rows, key),
                    _ => 0,
                };
                let shown: Vec<&Row> = rows
                    .iter()
                    .filter(|(_, d)| *d > 0 || self.key.is_none())
                    .map(|(r, _)| r)
                    .collect();
                let mut text = render_table(
                    batch,
                    &self.name,
                    &self.schema,
                    &shown,
                    self.options.max_rows,
                );
                if removed > 0 {
                    text.push_str(&format!("{removed} row(s) removed\n"));
                }
                text.push('\n');
                text
            }
        }
    }
}

/// Keys that were retracted and not re-inserted in this batch.
fn removed_keys(rows: &[(Row, i64)], key: &[usize]) -> usize {
    let inserted: std::collections::BTreeSet<Row> = rows
        .iter()
        .filter(|(_, d)| *d > 0)
        .map(|(r, _)| r.project(key))
        .collect();
    let retracted: std::collections::BTreeSet<Row> = rows
        .iter()
        .filter(|(_, d)| *d < 0)
        .map(|(r, _)| r.project(key))
        .collect();
    retracted.difference(&inserted).count()
}
