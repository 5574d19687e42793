//! The built-in generator source: the orders workload as JSONL records, in memory.

mod orders;

use tributary_operators::{Position, RawRecord};

pub use orders::{
    base64_unscaled, kafka_key, DecimalMode, GeneratorConfig, OrdersWorkload, ORDERS_TOPIC,
    STATUSES,
};

use super::{single_stream_resume, Poll, Source};
use crate::error::SourceError;
use crate::positions::StreamPositions;

/// Serves the orders workload; positions are the record numbers a generated file would have
/// as line numbers.
#[derive(Debug)]
pub struct GeneratorSource {
    workload: OrdersWorkload,
    line: String,
    offset: u64,
}

impl GeneratorSource {
    /// Starts the generator.
    pub fn new(config: GeneratorConfig) -> Self {
        GeneratorSource {
            workload: OrdersWorkload::new(config),
            line: String::new(),
            offset: 0,
        }
    }
}

impl Source for GeneratorSource {
    fn describe(&self) -> String {
        "generator".to_owned()
    }

    fn stream_names(&self) -> Vec<String> {
        vec![self.describe()]
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Result<Poll, SourceError> {
        for _ in 0..max {
            if !self.workload.next_line(&mut self.line) {
                return Ok(Poll::Finished);
            }
            self.offset += 1;
            out.push(RawRecord::line(
                self.line.as_bytes(),
                Position::new(0, self.offset),
            ));
        }
        Ok(Poll::Ready)
    }

    fn resume_after(&mut self, after: &StreamPositions) -> Result<(), SourceError> {
        let through = single_stream_resume(&self.describe(), after)?;
        while self.offset < through && self.workload.next_line(&mut self.line) {
            self.offset += 1;
        }
        Ok(())
    }
}
