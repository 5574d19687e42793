//! Fair reading of a Kafka source: one librdkafka queue per partition, drained round-robin a
//! slice at a time, so a partition with a large backlog neither starves the others nor lets
//! their event times drift far apart (which would make windowed outputs see late events).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use tributary_operators::{Position, RawRecord};

use super::client::QuietContext;

/// Messages taken from one partition before moving to the next.
pub const SLICE: usize = 32;

/// Per-partition queues of one consumer, read in turn.
pub struct FairReader {
    /// By stream index: the partition's topic and queue.
    queues: Vec<(Arc<str>, PartitionQueue<QuietContext>)>,
    /// The stream read first in the next round.
    cursor: usize,
}

impl std::fmt::Debug for FairReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairReader")
            .field("partitions", &self.queues.len())
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl FairReader {
    /// Splits each `(topic, partition)` (by stream index) off the consumer's queue; call right
    /// after `assign` and before the first poll. `None` if librdkafka refuses a split.
    pub fn split(
        consumer: &Arc<BaseConsumer<QuietContext>>,
        streams: &[(Arc<str>, i32)],
    ) -> Option<Self> {
        let queues = streams
            .iter()
            .map(|(topic, partition)| {
                let queue = consumer.split_partition_queue(topic, *partition)?;
                Some((Arc::clone(topic), queue))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(FairReader { queues, cursor: 0 })
    }

    /// Appends up to `max` records, at most [`SLICE`] per partition per round, starting each
    /// call where the last one stopped; `next[stream]` becomes the offset after the last one
    /// read. Returns how many were read and the fetch errors seen.
    pub fn read(
        &mut self,
        next: &mut [i64],
        out: &mut Vec<RawRecord>,
        max: usize,
    ) -> (usize, Vec<String>) {
        let mut got = 0;
        let mut errors = Vec::new();
        let count = self.queues.len();
        if count == 0 {
            return (0, errors);
        }
        loop {
            let before = got;
            for step in 0..count {
                let stream = (self.cursor + step) % count;
                let (topic, queue) = &self.queues[stream];
                for _ in 0..SLICE.min(max - got) {
                    let message = match queue.poll(Duration::ZERO) {
                        None => break,
                        Some(Err(error)) => {
                            errors.push(error.to_string());
                            break;
                        }
                        Some(Ok(message)) => message,
                    };
                    let Ok(offset) = u64::try_from(message.offset()) else {
                        continue;
                    };
                    next[stream] = message.offset() + 1;
                    out.push(RawRecord {
                        key: message.key().map(Arc::from),
                        value: message.payload().map(Arc::from),
                        topic: Some(Arc::clone(topic)),
                        position: Position {
                            stream: stream as u32,
                            offset,
                        },
                        line: false,
                    });
                    got += 1;
                }
                if got >= max {
                    self.cursor = (stream + 1) % count;
                    return (got, errors);
                }
            }
            if got == before {
                return (got, errors);
            }
        }
    }
}
