//! When a Kafka source under `--until-idle` is caught up: every partition has reached the high
//! watermark read at start, and then the partitions stayed quiet (no message, no client error)
//! for a while.
//!
//! Why both: on Apache Kafka the start watermark alone is exact, and the quiet period only adds
//! a short wait. Some Kafka-protocol brokers (tansu) report a high watermark that is too low
//! (about the first offset of the last batch + 1), so reaching it does not mean the log is
//! drained. librdkafka keeps fetching ahead of the application (`fetch.wait.max.ms`, 500 ms by
//! default, bounds how long a fetch waits when there is nothing new), so a quiet period of several
//! fetch rounds after the watermarks were reached means the broker had nothing more to give. A
//! client error (broker down) restarts the quiet period: silence from a dead broker is not
//! idleness.

use std::time::{Duration, Instant};

/// Quiet time required after every partition reached its start watermark.
pub const DEFAULT_QUIET: Duration = Duration::from_millis(2000);

/// Tracks whether the source is caught up.
#[derive(Debug, Clone)]
pub struct CatchUp {
    /// Per position stream: the high watermark read at start (the offset after the last
    /// message then).
    targets: Vec<i64>,
    quiet: Duration,
    last_activity: Instant,
}

impl CatchUp {
    /// Caught up once every stream's next offset reaches `targets` and nothing happened for
    /// `quiet`.
    pub fn new(targets: Vec<i64>, quiet: Duration, now: Instant) -> Self {
        CatchUp {
            targets,
            quiet,
            last_activity: now,
        }
    }

    /// A message or a client error arrived at `now`.
    pub fn activity(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// Every stream's next offset (`next[i]`) is at or past its start watermark.
    pub fn reached(&self, next: &[i64]) -> bool {
        self.targets
            .iter()
            .zip(next)
            .all(|(target, next)| next >= target)
    }

    /// Caught up: watermarks reached and quiet since.
    pub fn finished(&self, next: &[i64], now: Instant) -> bool {
        self.reached(next) && now.saturating_duration_since(self.last_activity) >= self.quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_watermarks_and_quiet() {
        let t0 = Instant::now();
        let mut c = CatchUp::new(vec![10, 0], Duration::from_secs(2), t0);
        let later = t0 + Duration::from_secs(5);
        assert!(!c.finished(&[9, 0], later), "partition 0 is behind");
        assert!(c.finished(&[10, 0], later));
        c.activity(later);
        assert!(
            !c.finished(&[10, 0], later + Duration::from_secs(1)),
            "a message restarts the quiet period (watermark may be too low)"
        );
        assert!(c.finished(&[12, 0], later + Duration::from_secs(2)));
    }

    #[test]
    fn empty_partitions_are_caught_up_after_quiet() {
        let t0 = Instant::now();
        let c = CatchUp::new(vec![0, 0, 0], Duration::from_millis(100), t0);
        assert!(!c.finished(&[0, 0, 0], t0));
        assert!(c.finished(&[0, 0, 0], t0 + Duration::from_millis(100)));
    }
}
