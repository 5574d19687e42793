//! In-memory source: records prepared beforehand (e.g. pre-encoded JSON for `tributary bench`),
//! so that reading costs nothing and the dataflow is what gets measured.

use std::sync::Arc;

use tributary_operators::RawRecord;

use super::{single_stream_resume, Poll, Source, StreamPositions};
use crate::error::SourceError;

/// Serves a shared slice of records once.
#[derive(Debug)]
pub struct MemorySource {
    records: Arc<[RawRecord]>,
    next: usize,
}

impl MemorySource {
    /// A source over `records`.
    pub fn new(records: Arc<[RawRecord]>) -> Self {
        MemorySource { records, next: 0 }
    }
}

impl Source for MemorySource {
    fn describe(&self) -> String {
        format!("memory:{}", self.records.len())
    }

    fn stream_names(&self) -> Vec<String> {
        vec![self.describe()]
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Result<Poll, SourceError> {
        let end = (self.next + max).min(self.records.len());
        out.extend_from_slice(&self.records[self.next..end]);
        self.next = end;
        Ok(if end == self.records.len() {
            Poll::Finished
        } else {
            Poll::Ready
        })
    }

    fn resume_after(&mut self, after: &StreamPositions) -> Result<(), SourceError> {
        let through = single_stream_resume(&self.describe(), after)?;
        self.next = self
            .records
            .partition_point(|r| r.position.offset <= through)
            .max(self.next);
        Ok(())
    }
}
