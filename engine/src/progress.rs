//! Progress reporting for long runs: a live status line on an interactive stderr (rate, lag,
//! last commit), or a structured log line every few seconds when stderr is not a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tributary_operators::dataflow::Time;

use crate::metrics::Metrics;

/// How often the status line is redrawn.
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// How often a progress log line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Reports progress of one run.
#[derive(Debug)]
pub struct Progress {
    interactive: bool,
    last: Instant,
    records_at_last: u64,
    drawn: bool,
}

impl Progress {
    /// A reporter that draws a status line only if stderr is a terminal.
    pub fn new() -> Self {
        Progress {
            interactive: std::io::stderr().is_terminal(),
            last: Instant::now(),
            records_at_last: 0,
            drawn: false,
        }
    }

    /// Reports if it is time to.
    pub fn tick(&mut self, metrics: &Metrics, epoch: Time) {
        let every = if self.interactive {
            STATUS_EVERY
        } else {
            LOG_EVERY
        };
        let elapsed = self.last.elapsed();
        if elapsed < every {
            return;
        }
        let records = Metrics::get(&metrics.records_in);
        let rate = (records - self.records_at_last) as f64 / elapsed.as_secs_f64();
        let events = Metrics::get(&metrics.decode.events);
        let dead = metrics.dead_letter_total();
        let lag = metrics.frontier_lag_seconds();
        if self.interactive {
            let line = format!(
                "\r\x1b[2K{events} events · {:.0} records/s · epoch {epoch} · lag {lag:.1}s · {dead} dead letters",
                rate
            );
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(line.as_bytes());
            let _ = stderr.flush();
            self.drawn = true;
        } else {
            tracing::info!(
                events,
                records,
                records_per_s = rate as u64,
                epoch,
                lag_s = lag,
                dead_letters = dead,
                "progress"
            );
        }
        self.last = Instant::now();
        self.records_at_last = records;
    }

    /// Clears the status line before other output.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
            self.drawn = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
