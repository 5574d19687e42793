//! In-memory source: records prepared beforehand (e.g. pre-encoded JSON for `tributary bench`),
//! so that reading costs nothing and the dataflow is what gets measured. The records come in
//! one or more streams (the partitions of a Kafka topic, say), which split over the workers as
//! a Kafka source's partitions do.

use std::sync::Arc;

use tributary_operators::RawRecord;

use super::{Poll, Source};
use crate::error::SourceError;
use crate::positions::StreamPositions;

/// Serves shared slices of records once, one slice per stream.
#[derive(Debug)]
pub struct MemorySource {
    streams: Vec<Arc<[RawRecord]>>,
    /// The streams this part reads and has not finished, by index.
    owned: Vec<usize>,
    /// Per stream: the index of the next record to serve.
    next: Vec<usize>,
    /// Which of `owned` the next poll reads from.
    turn: usize,
}

impl MemorySource {
    /// A source over `streams`; the records of stream `i` must carry positions in stream `i`.
    pub fn new(streams: Vec<Arc<[RawRecord]>>) -> Self {
        MemorySource {
            owned: (0..streams.len()).collect(),
            next: vec![0; streams.len()],
            streams,
            turn: 0,
        }
    }

    fn records(&self) -> usize {
        self.streams.iter().map(|s| s.len()).sum()
    }
}

impl Source for MemorySource {
    fn describe(&self) -> String {
        format!("memory:{}", self.records())
    }

    fn stream_names(&self) -> Vec<String> {
        (0..self.streams.len())
            .map(|stream| format!("memory/{stream}"))
            .collect()
    }

    /// Reads up to `max` records of one owned stream, taking the streams in turn.
    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Result<Poll, SourceError> {
        let streams = &self.streams;
        let next = &self.next;
        self.owned.retain(|&s| next[s] < streams[s].len());
        let Some(&stream) = self.owned.get(self.turn % self.owned.len().max(1)) else {
            return Ok(Poll::Finished);
        };
        self.turn = self.turn.wrapping_add(1);
        let records = &self.streams[stream];
        let end = (self.next[stream] + max).min(records.len());
        out.extend_from_slice(&records[self.next[stream]..end]);
        self.next[stream] = end;
        Ok(if self.owned.len() == 1 && end == records.len() {
            Poll::Finished
        } else {
            Poll::Ready
        })
    }

    fn split_off(&mut self, parts: usize) -> Result<Vec<Box<dyn Source>>, SourceError> {
        let parts = parts.clamp(1, self.streams.len().max(1));
        let part = |index: usize| MemorySource {
            streams: self.streams.clone(),
            owned: self
                .owned
                .iter()
                .copied()
                .filter(|s| s % parts == index)
                .collect(),
            next: self.next.clone(),
            turn: 0,
        };
        let others = (1..parts)
            .map(|index| Box::new(part(index)) as Box<dyn Source>)
            .collect();
        *self = part(0);
        Ok(others)
    }

    fn resume_after(&mut self, after: &StreamPositions) -> Result<(), SourceError> {
        let names = self.stream_names();
        for (name, &through) in after {
            let Some(stream) = names.iter().position(|n| n == name) else {
                return Err(SourceError::Resume {
                    source_name: self.describe(),
                    reason: format!("the sinks last committed positions of `{name}`"),
                });
            };
            self.next[stream] = self.streams[stream]
                .partition_point(|r| r.position.offset <= through)
                .max(self.next[stream]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_operators::Position;

    fn stream(index: u32, len: u64) -> Arc<[RawRecord]> {
        (1..=len)
            .map(|offset| {
                let position = Position::new(index, offset);
                RawRecord::line(format!("{index}:{offset}").as_bytes(), position)
            })
            .collect()
    }

    fn drain(source: &mut dyn Source) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        while source.poll(&mut out, 2).unwrap() != Poll::Finished {}
        out.iter()
            .map(|r| (r.position.stream, r.position.offset))
            .collect()
    }

    #[test]
    fn parts_read_disjoint_streams_in_order_and_resume() {
        let mut source = MemorySource::new(vec![stream(0, 5), stream(1, 3), stream(2, 0)]);
        let after = StreamPositions::from([("memory/0".to_owned(), 2)]);
        source.resume_after(&after).unwrap();
        let mut other = source.split_off(2).unwrap();
        assert_eq!(other.len(), 1);
        let first = drain(&mut source);
        assert_eq!(first, [(0, 3), (0, 4), (0, 5)]);
        assert_eq!(drain(&mut *other[0]), [(1, 1), (1, 2), (1, 3)]);
        assert_eq!(source.stream_names().len(), 3);

        let mut whole = MemorySource::new(vec![stream(0, 3), stream(1, 3)]);
        let read = drain(&mut whole);
        assert_eq!(read.len(), 6);
        for s in 0..2 {
            let offsets: Vec<u64> = read.iter().filter(|r| r.0 == s).map(|r| r.1).collect();
            assert_eq!(offsets, [1, 2, 3]);
        }
        let unknown = StreamPositions::from([("file:x".to_owned(), 1)]);
        assert!(whole.resume_after(&unknown).is_err());
    }
}
