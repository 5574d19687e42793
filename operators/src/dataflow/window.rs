//! Event-time windows (tumbling and hopping) with a watermark: the largest event time seen in
//! earlier epochs, minus the allowed lateness. A row whose windows have all closed is late and
//! becomes a dead letter. Because the watermark only depends on earlier epochs, results are the
//! same for any number of workers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Capability, OkErr};

use differential_dataflow::AsCollection;

use super::lineage::Origin;
use super::relation::{PlanError, Relation};
use super::{Diff, PendingEpochs, Stream, Time};
use crate::event::{DeadLetter, DeadLetterKind};
use crate::row::Row;
use crate::schema::{Column, ColumnType, Schema};
use crate::time::format_timestamp_micros;
use crate::value::Value;

/// A window shape: size, slide (= size for tumbling) and allowed lateness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    size_us: i64,
    slide_us: i64,
    lateness_us: i64,
}

impl Window {
    /// Non-overlapping windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        let size_us = micros(size);
        Window {
            size_us,
            slide_us: size_us,
            lateness_us: 0,
        }
    }

    /// Windows of `size` starting every `slide`.
    pub fn hopping(size: Duration, slide: Duration) -> Self {
        Window {
            size_us: micros(size),
            slide_us: micros(slide),
            lateness_us: 0,
        }
    }

    /// How far behind the largest event time seen a row may arrive and still count.
    pub fn lateness(mut self, lateness: Duration) -> Self {
        self.lateness_us = micros(lateness);
        self
    }

    /// Starts of the windows containing `ts`, oldest first.
    pub fn starts(&self, ts: i64) -> impl Iterator<Item = i64> + use<> {
        let window = *self;
        let last = ts.div_euclid(window.slide_us) * window.slide_us;
        let first = last - ((window.size_us - 1) / window.slide_us) * window.slide_us;
        let size = window.size_us;
        (0..)
            .map(move |i| first + i * window.slide_us)
            .take_while(move |start| *start <= last)
            .filter(move |start| ts < start + size)
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

impl<'s> Relation<'s> {
    /// Assigns each row to the event-time windows of `time_column` (a timestamp column) and
    /// prepends `window_start`, `window_end`. Late rows go to the pipeline's dead letters.
    pub fn window(
        &self,
        name: &str,
        time_column: &str,
        window: Window,
    ) -> Result<Relation<'s>, PlanError> {
        let index = self.columns([time_column])?[0];
        let ty = self.schema().columns[index].ty;
        if !matches!(ty, ColumnType::Timestamp | ColumnType::TimestampTz) {
            return Err(PlanError(format!(
                "window `{name}`: `{time_column}` is {ty}, windows need a timestamp column"
            )));
        }
        if window.slide_us > window.size_us {
            return Err(PlanError(format!(
                "window `{name}`: the slide is longer than the size"
            )));
        }
        let event_time = move |row: &Row| match row.get(index) {
            Some(Value::Timestamp(ts)) => Some(*ts),
            _ => None,
        };

        // Each worker's largest event time per epoch, sent to every worker.
        let maxima = self
            .reading([index])
            .inner
            .clone()
            .flat_map(move |(row, time, _diff)| event_time(&row).map(|ts| (time, ts)))
            .unary_frontier(Pipeline, &format!("{name}/local-max"), |_, _| {
                let mut pending: BTreeMap<Time, (Capability<Time>, i64)> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (time, ts) in data.drain(..) {
                            let entry = pending
                                .entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), i64::MIN));
                            entry.1 = entry.1.max(ts);
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (capability, max)) = entry.remove_entry();
                        output.session(&capability).give((time, max));
                    }
                }
            })
            .broadcast();

        let stage: Arc<str> = Arc::from(name);
        let schema = self.schema().clone();
        let origins: Vec<Option<Origin>> = (0..schema.len())
            .map(|column| self.origin(column).cloned())
            .collect();
        let late_origins = origins.clone();
        let assigned: Stream<'s, (Result<Row, DeadLetter>, Time, Diff)> = self
            .reading([index])
            .inner
            .clone()
            .binary_frontier(maxima, Pipeline, Pipeline, name, move |_, _| {
                let mut rows: PendingEpochs<(Row, Diff)> = BTreeMap::new();
                let mut epoch_maxima: BTreeMap<Time, i64> = BTreeMap::new();
                let mut seen_max = i64::MIN;
                move |(input, frontier), (maxima, maxima_frontier), output| {
                    input.for_each(|capability, data| {
                        for (row, time, diff) in data.drain(..) {
                            rows.entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                .1
                                .push((row, diff));
                        }
                    });
                    maxima.for_each(|_, data| {
                        for (time, max) in data.drain(..) {
                            let entry = epoch_maxima.entry(time).or_insert(i64::MIN);
                            *entry = (*entry).max(max);
                        }
                    });
                    // Rows of epoch `next` are assigned as soon as every earlier epoch's
                    // maximum is in (their watermark is then known), while they are still in
                    // the cache; `next`'s own maximum is folded in once it is final.
                    loop {
                        let next = match (rows.keys().next(), epoch_maxima.keys().next()) {
                            (Some(a), Some(b)) => *a.min(b),
                            (Some(a), None) => *a,
                            (None, Some(b)) => *b,
                            (None, None) => break,
                        };
                        if maxima_frontier.less_than(&next) {
                            break;
                        }
                        let watermark = seen_max.saturating_sub(window.lateness_us);
                        if let Some((capability, batch)) = rows.get_mut(&next) {
                            let mut session = output.session(capability);
                            for (row, diff) in batch.drain(..) {
                                let Some(ts) = event_time(&row) else { continue };
                                let mut open = window
                                    .starts(ts)
                                    .filter(|start| start + window.size_us > watermark)
                                    .peekable();
                                if open.peek().is_none() {
                                    let letter = late_letter(
                                        &stage,
                                        &schema,
                                        &late_origins,
                                        &row,
                                        ts,
                                        watermark,
                                    );
                                    session.give((Err(letter), next, diff.abs()));
                                }
                                for start in open {
                                    let bounds = [
                                        Value::Timestamp(start),
                                        Value::Timestamp(start + window.size_us),
                                    ];
                                    let windowed = Row::concat(&bounds, &row, 0);
                                    session.give((Ok(windowed), next, diff));
                                }
                            }
                        }
                        // More rows of `next` may come, or its maximum is not final yet.
                        if frontier.less_equal(&next) || maxima_frontier.less_equal(&next) {
                            break;
                        }
                        rows.remove(&next);
                        if let Some(max) = epoch_maxima.remove(&next) {
                            seen_max = seen_max.max(max);
                        }
                    }
                }
            });
        let windowed: Stream<'s, (Row, Time, Diff)>;
        let late: Stream<'s, (DeadLetter, Time, Diff)>;
        (windowed, late) = assigned.ok_err(|(result, time, diff)| match result {
            Ok(row) => Ok((row, time, diff)),
            Err(letter) => Err((letter, time, diff)),
        });
        self.side_outputs().borrow_mut().push(late.as_collection());

        let mut columns = vec![
            Column::new("window_start", ColumnType::Timestamp).not_null(),
            Column::new("window_end", ColumnType::Timestamp).not_null(),
        ];
        columns.extend(self.schema().columns.iter().cloned());
        Ok(self
            .derive(Schema::new(columns), None, windowed.as_collection())
            .with_origins([None, None].into_iter().chain(origins)))
    }
}

/// The late row as a JSON object of the columns the pipeline reads (the others were never
/// decoded).
fn late_letter(
    stage: &Arc<str>,
    schema: &Schema,
    origins: &[Option<Origin>],
    row: &Row,
    ts: i64,
    watermark: i64,
) -> DeadLetter {
    let mut raw = String::from("{");
    let read = |i: usize| {
        origins
            .get(i)
            .and_then(Option::as_ref)
            .is_none_or(Origin::is_read)
    };
    for (i, (column, value)) in schema.columns.iter().zip(row.iter()).enumerate() {
        if !read(i) {
            continue;
        }
        if raw.len() > 1 {
            raw.push(',');
        }
        crate::value::write_json_string(&column.name, &mut raw);
        raw.push(':');
        value.write_json(&mut raw);
    }
    raw.push('}');
    DeadLetter {
        stage: Arc::clone(stage),
        kind: DeadLetterKind::LateEvent,
        reason: format!(
            "event time {} is older than the watermark {}: its windows are closed; raise the \
             allowed lateness to keep such events",
            format_timestamp_micros(ts),
            format_timestamp_micros(watermark)
        ),
        position: None,
        raw: Arc::from(raw.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts() {
        let tumbling = Window::tumbling(Duration::from_secs(10));
        assert_eq!(
            tumbling.starts(15_000_000).collect::<Vec<_>>(),
            vec![10_000_000]
        );
        assert_eq!(tumbling.starts(-1).collect::<Vec<_>>(), vec![-10_000_000]);
        let hopping = Window::hopping(Duration::from_secs(10), Duration::from_secs(5));
        assert_eq!(
            hopping.starts(12_000_000).collect::<Vec<_>>(),
            vec![5_000_000, 10_000_000]
        );
        assert_eq!(
            hopping.starts(10_000_000).collect::<Vec<_>>(),
            vec![5_000_000, 10_000_000]
        );
    }
}
