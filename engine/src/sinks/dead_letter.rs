//! Dead-letter sink: every rejected record as a JSONL line (stage, kind, reason, source,
//! offset, raw payload) to `--dead-letter PATH`, the first few also as warnings on stderr, all
//! of them counted by kind.

use std::io::Write;
use std::sync::Arc;

use tributary_operators::value::write_json_string;
use tributary_operators::DeadLetter;

use super::{record_failure, FailureSlot, SharedWriter};
use crate::metrics::Metrics;

/// How many dead letters are echoed to stderr before only counting.
pub const STDERR_ECHO_LIMIT: u64 = 10;

/// Where dead letters go.
#[derive(Clone)]
pub struct DeadLetterSink {
    /// The JSONL file, if any.
    pub file: Option<SharedWriter>,
    /// Names of the source streams, by position stream index.
    pub stream_names: Arc<Vec<String>>,
    /// Run counters.
    pub metrics: Arc<Metrics>,
    /// Where a write failure is reported.
    pub failure: FailureSlot,
}

impl std::fmt::Debug for DeadLetterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterSink")
            .field("file", &self.file.is_some())
            .finish()
    }
}

impl DeadLetterSink {
    /// Writes one epoch's dead letters.
    pub fn write(&self, letters: Vec<(DeadLetter, i64)>) {
        let mut text = String::new();
        for (letter, diff) in letters {
            for _ in 0..diff.max(0) {
                self.metrics.dead_letter(letter.kind);
                if self.metrics.dead_letter_total() <= STDERR_ECHO_LIMIT {
                    tracing::warn!(
                        source = %self.source_of(&letter),
                        offset = letter.position.map(|p| p.offset),
                        kind = %letter.kind,
                        "dead letter: {}",
                        letter.reason
                    );
                }
                if self.file.is_some() {
                    self.render(&letter, &mut text);
                }
            }
        }
        if let Some(file) = &self.file {
            let result = file
                .lock()
                .map_err(|_| std::io::Error::other("writer poisoned"))
                .and_then(|mut w| {
                    w.write_all(text.as_bytes())?;
                    w.flush()
                });
            if let Err(cause) = result {
                record_failure(
                    &self.failure,
                    crate::error::RunError::Sink {
                        sink: "dead-letter file".into(),
                        cause: cause.into(),
                    },
                );
            }
        }
    }

    fn source_of(&self, letter: &DeadLetter) -> String {
        match letter.position {
            Some(p) => self
                .stream_names
                .get(p.stream as usize)
                .cloned()
                .unwrap_or_default(),
            None => format!("dataflow:{}", letter.stage),
        }
    }

    /// `{"stage":…,"kind":…,"reason":…,"source":…,"offset":…,"raw":…}` + newline.
    fn render(&self, letter: &DeadLetter, out: &mut String) {
        out.push_str("{\"stage\":");
        write_json_string(&letter.stage, out);
        out.push_str(",\"kind\":");
        write_json_string(letter.kind.as_str(), out);
        out.push_str(",\"reason\":");
        write_json_string(&letter.reason, out);
        out.push_str(",\"source\":");
        write_json_string(&self.source_of(letter), out);
        out.push_str(",\"offset\":");
        match letter.position {
            Some(p) => out.push_str(&p.offset.to_string()),
            None => out.push_str("null"),
        }
        out.push_str(",\"raw\":");
        write_json_string(&letter.raw, out);
        out.push_str("}\n");
    }
}
