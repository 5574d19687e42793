//! Kafka source: the partitions of every topic are spread over the timely workers (stream `i` to
//! part `i % parts`), each part with its own manually assigned consumer; each topic-partition is
//! one position stream (`TOPIC/PARTITION`, offset = Kafka offset). Group offsets are committed
//! only for acknowledged (durably handled) epochs.

pub mod idle;
mod spec;

pub use spec::{KafkaSourceSpec, StartFrom};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use tributary_operators::{Position, RawRecord, TopicName};

use self::idle::CatchUp;
use super::{Poll, Source};
use crate::error::SourceError;
use crate::kafka_client::{fetch_with_retries, ErrorLog, QuietContext};
use crate::positions::StreamPositions;

/// A consumer with the spec's client settings; offsets are only ever committed explicitly.
fn new_consumer(spec: &KafkaSourceSpec) -> Result<BaseConsumer<QuietContext>, SourceError> {
    let config = spec.client.config(
        &spec.brokers,
        &[
            ("group.id", spec.group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ],
    );
    config
        .create_with_context(QuietContext::default())
        .map_err(|e| SourceError::Kafka {
            what: "consumer configuration".into(),
            cause: e.to_string(),
        })
}

/// One topic-partition: a position stream.
#[derive(Debug, Clone)]
struct Partition {
    topic: usize,
    partition: i32,
    /// Low and high watermarks read at open.
    low: i64,
    high: i64,
}

/// Reads its share of the partitions of the given topics with one manually assigned consumer.
pub struct KafkaSource {
    spec: KafkaSourceSpec,
    /// Shared only so that closing can happen on a thread of its own (see `Drop`).
    consumer: Arc<BaseConsumer<QuietContext>>,
    topics: Vec<TopicName>,
    partitions: Vec<Partition>,
    /// Per stream: whether this part reads it (every part knows every stream, so positions
    /// and dead letters name streams alike on all workers).
    owned: Vec<bool>,
    /// This part's index and the number of parts.
    part: (usize, usize),
    follow: bool,
    /// `stream_of[topic][partition]` → stream index.
    stream_of: Vec<Vec<Option<u32>>>,
    /// Per stream: the next offset to read.
    next: Vec<i64>,
    /// Per stream: where an earlier run's durable sinks left off (next offset).
    resume: Vec<Option<i64>>,
    assigned: bool,
    catch_up: Option<CatchUp>,
    errors: ErrorLog,
    errors_seen: u64,
    /// The newest acknowledged positions, committed once more when closing.
    unsynced: Option<TopicPartitionList>,
    /// When the topics were last listed to find new ones matching a pattern.
    topics_checked: Instant,
    /// A new topic matches a pattern (which): the run rebuilds to read it.
    new_topic: Option<String>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("spec", &self.spec)
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

/// How often a source that follows topic patterns looks for new topics.
const TOPIC_CHECK_INTERVAL: Duration = Duration::from_secs(2);

impl KafkaSource {
    /// Connects (retrying with backoff up to the connect timeout), checks every topic exists,
    /// and reads the partitions' watermarks. `follow = false` finishes once caught up.
    pub fn open(spec: &KafkaSourceSpec, follow: bool) -> Result<Self, SourceError> {
        let kafka = |what: &str| {
            let what = what.to_owned();
            move |e: rdkafka::error::KafkaError| SourceError::Kafka {
                what,
                cause: e.to_string(),
            }
        };
        tracing::info!(
            brokers = %spec.brokers,
            topics = ?spec.topics,
            group = %spec.group,
            start = ?spec.start,
            options = ?spec.client.redacted(),
            "opening kafka source"
        );
        let consumer = new_consumer(spec)?;
        let metadata = fetch_with_retries(
            &spec.brokers,
            &spec.topics,
            spec.client.connect_timeout,
            |timeout| {
                consumer.fetch_metadata(None, timeout).map_err(|e| {
                    consumer
                        .context()
                        .last_error()
                        .unwrap_or_else(|| e.to_string())
                })
            },
        )?;
        // The topics named, then those the patterns match, in name order.
        let mut spec = spec.clone();
        let mut matched: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|t| !spec.topics.contains(t) && spec.matches(t))
            .collect();
        matched.sort();
        spec.topics.extend(matched);
        if spec.topics.is_empty() {
            return Err(SourceError::KafkaTopicMissing {
                brokers: spec.brokers.clone(),
                topics: spec
                    .patterns
                    .iter()
                    .map(|p| format!("~{p}"))
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        let topics: Vec<TopicName> = spec.topics.iter().map(|t| TopicName::new(t)).collect();
        let mut partitions = Vec::new();
        let mut stream_of = Vec::new();
        for (index, name) in spec.topics.iter().enumerate() {
            let mut ids: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == name)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            ids.sort_unstable();
            let mut lookup = vec![None; ids.iter().max().map_or(0, |m| *m as usize + 1)];
            for id in ids {
                let (low, high) = consumer
                    .fetch_watermarks(name, id, Duration::from_secs(10))
                    .map_err(kafka(&format!("reading watermarks of {name}/{id}")))?;
                lookup[id as usize] = Some(partitions.len() as u32);
                partitions.push(Partition {
                    topic: index,
                    partition: id,
                    low,
                    high,
                });
            }
            stream_of.push(lookup);
        }
        tracing::info!(
            partitions = partitions.len(),
            messages_at_start = partitions.iter().map(|p| p.high - p.low).sum::<i64>(),
            "kafka source ready"
        );
        let mut source = KafkaSource {
            spec,
            next: partitions.iter().map(|p| p.low).collect(),
            resume: vec![None; partitions.len()],
            consumer: Arc::new(consumer),
            topics,
            owned: vec![true; partitions.len()],
            part: (0, 1),
            follow,
            partitions,
            stream_of,
            assigned: false,
            catch_up: None,
            errors: ErrorLog::new(Duration::from_secs(10)),
            errors_seen: 0,
            unsynced: None,
            topics_checked: Instant::now(),
            new_topic: None,
        };
        source.own_part(0, 1);
        Ok(source)
    }

    /// Keeps only the streams of part `index` of `parts` (stream `i` belongs to part
    /// `i % parts`).
    fn own_part(&mut self, index: usize, parts: usize) {
        self.part = (index, parts);
        self.owned = (0..self.partitions.len())
            .map(|stream| stream % parts == index)
            .collect();
        // Streams of other parts count as caught up.
        let targets = self
            .partitions
            .iter()
            .zip(&self.owned)
            .map(|(p, owned)| if *owned { p.high } else { i64::MIN })
            .collect();
        self.catch_up =
            (!self.follow).then(|| CatchUp::new(targets, self.spec.idle_quiet, Instant::now()));
    }

    /// Part `index` of `parts`: the same topics and streams, a consumer of its own.
    fn part(&self, index: usize, parts: usize) -> Result<KafkaSource, SourceError> {
        let mut part = KafkaSource {
            spec: self.spec.clone(),
            consumer: Arc::new(new_consumer(&self.spec)?),
            topics: self.topics.clone(),
            partitions: self.partitions.clone(),
            owned: Vec::new(),
            part: (index, parts),
            follow: self.follow,
            stream_of: self.stream_of.clone(),
            next: self.next.clone(),
            resume: self.resume.clone(),
            assigned: false,
            catch_up: None,
            errors: ErrorLog::new(Duration::from_secs(10)),
            errors_seen: 0,
            unsynced: None,
            topics_checked: Instant::now(),
            new_topic: None,
        };
        part.own_part(index, parts);
        Ok(part)
    }

    /// Following a pattern, lists the topics now and then (part 0 only); a new one that
    /// matches is reported through [`Source::schema_changed`].
    fn look_for_new_topics(&mut self, now: Instant) {
        if !self.follow
            || self.spec.patterns.is_empty()
            || self.part.0 != 0
            || self.new_topic.is_some()
            || now.duration_since(self.topics_checked) < TOPIC_CHECK_INTERVAL
        {
            return;
        }
        self.topics_checked = now;
        let Ok(metadata) = self.consumer.fetch_metadata(None, Duration::from_secs(2)) else {
            return;
        };
        let spec = &self.spec;
        self.new_topic = metadata
            .topics()
            .iter()
            .map(|t| t.name())
            .find(|t| !spec.topics.iter().any(|known| known == t) && spec.matches(t))
            .map(|t| format!("topic {t} is new"));
    }

    fn stream_name(&self, p: &Partition) -> String {
        format!("{}/{}", self.topics[p.topic], p.partition)
    }

    fn list(&self, offsets: impl Fn(usize) -> Option<Offset>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (i, p) in self.partitions.iter().enumerate() {
            if !self.owned[i] {
                continue;
            }
            if let Some(offset) = offsets(i) {
                // Only fails for an invalid offset value, which these are not.
                let _ = list.add_partition_offset(&self.topics[p.topic], p.partition, offset);
            }
        }
        list
    }

    /// Assigns every partition at its start offset: the resume position, else `--kafka-start`.
    fn assign(&mut self) -> Result<(), SourceError> {
        let committed = if self.spec.start == StartFrom::Committed {
            let wanted = self.list(|_| Some(Offset::Invalid));
            let found = self
                .consumer
                .committed_offsets(wanted, self.spec.client.connect_timeout)
                .map_err(|e| SourceError::Kafka {
                    what: format!("reading group `{}`'s committed offsets", self.spec.group),
                    cause: e.to_string(),
                })?;
            let mut by_stream = vec![None; self.partitions.len()];
            for element in found.elements() {
                if let (Offset::Offset(offset), Some(stream)) = (
                    element.offset(),
                    self.stream(element.topic(), element.partition()),
                ) {
                    by_stream[stream as usize] = Some(offset);
                }
            }
            by_stream
        } else {
            vec![None; self.partitions.len()]
        };
        for (i, p) in self.partitions.iter().enumerate() {
            self.next[i] = match (self.resume[i], self.spec.start, committed[i]) {
                (Some(resume), _, _) => resume,
                (None, StartFrom::Latest, _) => p.high,
                (None, StartFrom::Committed, Some(offset)) => offset,
                (None, _, _) => p.low,
            };
        }
        let next = self.next.clone();
        let assignment = self.list(|i| Some(Offset::Offset(next[i])));
        self.consumer
            .assign(&assignment)
            .map_err(|e| SourceError::Kafka {
                what: "assigning partitions".into(),
                cause: e.to_string(),
            })?;
        tracing::info!(
            part = self.part.0,
            parts = self.part.1,
            partitions = assignment.count(),
            resumed = self
                .resume
                .iter()
                .zip(&self.owned)
                .filter(|(resume, owned)| **owned && resume.is_some())
                .count(),
            "kafka partitions assigned"
        );
        self.assigned = true;
        Ok(())
    }

    fn stream(&self, topic: &str, partition: i32) -> Option<u32> {
        let t = self.topics.iter().position(|t| &**t == topic)?;
        *self.stream_of[t].get(usize::try_from(partition).ok()?)?
    }
}

impl Source for KafkaSource {
    fn describe(&self) -> String {
        format!(
            "kafka://{}/{}",
            self.spec.brokers,
            self.spec.topics.join(",")
        )
    }

    fn stream_names(&self) -> Vec<String> {
        self.partitions
            .iter()
            .map(|p| self.stream_name(p))
            .collect()
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Result<Poll, SourceError> {
        if !self.assigned {
            self.assign()?;
        }
        let now = Instant::now();
        self.look_for_new_topics(now);
        let errors = self.consumer.context().errors();
        if errors > self.errors_seen {
            self.errors_seen = errors;
            let last = self.consumer.context().last_error().unwrap_or_default();
            self.errors.note("consumer", &last);
            if let Some(c) = &mut self.catch_up {
                c.activity(now);
            }
        }
        let mut got = 0;
        let mut wait = Duration::from_millis(10);
        while got < max {
            let message = match self.consumer.poll(wait) {
                None => break,
                Some(Err(error)) => {
                    self.errors.note("fetch", &error.to_string());
                    if let Some(c) = &mut self.catch_up {
                        c.activity(now);
                    }
                    break;
                }
                Some(Ok(message)) => message,
            };
            wait = Duration::ZERO;
            let Some(topic) = self.topics.iter().position(|t| &**t == message.topic()) else {
                continue;
            };
            let stream = usize::try_from(message.partition())
                .ok()
                .and_then(|p| self.stream_of[topic].get(p).copied().flatten());
            let (Some(stream), Ok(offset)) = (stream, u64::try_from(message.offset())) else {
                continue;
            };
            self.next[stream as usize] = message.offset() + 1;
            out.push(RawRecord {
                key: message.key().map(Arc::from),
                value: message.payload().map(Arc::from),
                topic: Some(self.topics[topic]),
                position: Position::new(stream, offset),
                line: false,
            });
            got += 1;
        }
        if got > 0 {
            if let Some(c) = &mut self.catch_up {
                c.activity(now);
            }
            return Ok(Poll::Ready);
        }
        match &self.catch_up {
            Some(c) if c.finished(&self.next, Instant::now()) => {
                tracing::info!(
                    part = self.part.0,
                    partitions = self.owned.iter().filter(|o| **o).count(),
                    "kafka source caught up with the watermarks seen at start"
                );
                Ok(Poll::Finished)
            }
            _ => Ok(Poll::Idle),
        }
    }

    fn schema_changed(&self) -> Option<&str> {
        self.new_topic.as_deref()
    }

    fn split_off(&mut self, parts: usize) -> Result<Vec<Box<dyn Source>>, SourceError> {
        let parts = parts.clamp(1, self.partitions.len().max(1));
        let others = (1..parts)
            .map(|index| Ok(Box::new(self.part(index, parts)?) as Box<dyn Source>))
            .collect::<Result<_, SourceError>>()?;
        self.own_part(0, parts);
        Ok(others)
    }

    fn resume_after(&mut self, after: &StreamPositions) -> Result<(), SourceError> {
        let names = self.stream_names();
        for (name, offset) in after {
            let Some(stream) = names.iter().position(|n| n == name) else {
                return Err(SourceError::Resume {
                    source_name: self.describe(),
                    reason: format!(
                        "the sinks last committed a position in `{name}`, which this source \
                         does not read; run with the topics the sinks were fed from, or write \
                         to new tables"
                    ),
                });
            };
            let next = i64::try_from(*offset).unwrap_or(i64::MAX).saturating_add(1);
            self.resume[stream] = Some(next);
        }
        Ok(())
    }

    fn acknowledge(&mut self, positions: &BTreeMap<u32, u64>) -> Result<(), SourceError> {
        let list = self.list(|i| {
            let last = positions.get(&(i as u32))?;
            let next = i64::try_from(*last).ok()?.saturating_add(1);
            Some(Offset::Offset(next))
        });
        if list.count() == 0 {
            return Ok(());
        }
        match self.consumer.commit(&list, CommitMode::Async) {
            Ok(()) => {}
            // Committed offsets are for monitoring only; the sinks' positions are the truth.
            Err(error) => self.errors.note("offset commit", &error.to_string()),
        }
        self.unsynced = Some(list);
        Ok(())
    }
}

/// How long closing waits for the final offset commit (a broker that is down must not hold up
/// shutdown; the offsets are for monitoring only).
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(5);

impl Drop for KafkaSource {
    /// Makes the last acknowledged offsets visible before the process exits, waiting at most
    /// 5 s (`FINAL_COMMIT_WAIT`) for the broker's answer. The client itself is closed on a thread
    /// of its own: rdkafka's close waits for the group coordinator without a limit, which would
    /// hang shutdown while the broker is down.
    fn drop(&mut self) {
        self.commit_final();
        let consumer = Arc::clone(&self.consumer);
        let closing = std::thread::Builder::new()
            .name("kafka-close".into())
            .spawn(move || {
                // Wait until this is the last handle, so the close never runs on the caller.
                while Arc::strong_count(&consumer) > 1 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                drop(consumer);
            });
        if let Err(error) = closing {
            tracing::warn!(error = %error, "cannot close the kafka consumer on its own thread");
        }
    }
}

impl KafkaSource {
    fn commit_final(&mut self) {
        let Some(list) = self.unsynced.take() else {
            return;
        };
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::warn!(error = %error, "could not commit the final kafka offsets");
            return;
        }
        // Not a synchronous commit: librdkafka waits for that without a limit. Instead, read the
        // group's offsets back (each request bounded) until they show the final ones.
        let wanted: Vec<(String, i32, Offset)> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        let started = Instant::now();
        loop {
            // Serves commit callbacks; messages that arrive now are not read.
            let _ = self.consumer.poll(Duration::ZERO);
            let left = FINAL_COMMIT_WAIT.saturating_sub(started.elapsed());
            if left.is_zero() {
                tracing::warn!(
                    waited_s = FINAL_COMMIT_WAIT.as_secs(),
                    "the broker did not confirm the final kafka offsets; the group may lag"
                );
                return;
            }
            let query = self.list(|_| Some(Offset::Invalid));
            if let Ok(found) = self
                .consumer
                .committed_offsets(query, left.min(Duration::from_secs(1)))
            {
                let done = wanted.iter().all(|(topic, partition, offset)| {
                    found
                        .find_partition(topic, *partition)
                        .is_some_and(|e| e.offset() == *offset)
                });
                if done {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
