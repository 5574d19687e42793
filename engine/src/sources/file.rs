//! JSONL file source: one Debezium value per line (`null` = tombstone; a line may also be
//! `{"key":…,"value":…}`). Positions are 1-based line numbers.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use tributary_operators::{Position, RawRecord};

use super::{single_stream_resume, Poll, Source};
use crate::error::SourceError;
use crate::positions::StreamPositions;

/// Splits a byte stream into numbered, non-blank lines.
#[derive(Debug)]
pub struct LineSplitter<R> {
    reader: R,
    line_number: u64,
    skip_through: u64,
    partial: Vec<u8>,
}

impl<R: BufRead> LineSplitter<R> {
    /// Splits `reader`.
    pub fn new(reader: R) -> Self {
        LineSplitter {
            reader,
            line_number: 0,
            skip_through: 0,
            partial: Vec::new(),
        }
    }

    /// Appends up to `max` lines. At the end of the input, an unterminated last line counts
    /// unless `follow` (its writer may still be finishing it).
    pub fn poll(
        &mut self,
        out: &mut Vec<RawRecord>,
        max: usize,
        follow: bool,
    ) -> std::io::Result<Poll> {
        let start = out.len();
        while out.len() - start < max {
            if self.reader.read_until(b'\n', &mut self.partial)? == 0 {
                if follow {
                    return Ok(if out.len() > start {
                        Poll::Ready
                    } else {
                        Poll::Idle
                    });
                }
                if !self.partial.is_empty() {
                    self.emit(out);
                }
                return Ok(Poll::Finished);
            }
            if self.partial.last() == Some(&b'\n') {
                self.emit(out);
            }
        }
        Ok(Poll::Ready)
    }

    /// Lines numbered up to `line` are read but not emitted (resuming after a commit).
    pub fn skip_through(&mut self, line: u64) {
        self.skip_through = line;
    }

    fn emit(&mut self, out: &mut Vec<RawRecord>) {
        self.line_number += 1;
        if self.line_number <= self.skip_through {
            self.partial.clear();
            return;
        }
        let mut end = self.partial.len();
        while end > 0 && matches!(self.partial[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let line = &self.partial[..end];
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(RawRecord::line(line, Position::new(0, self.line_number)));
        }
        self.partial.clear();
    }
}

/// Splits `data` as the file source would and decodes every line against the fuzzing catalog;
/// returns the number of events (for fuzzers and no-panic tests).
#[cfg(feature = "fuzzing")]
pub fn read_all_lines(data: &[u8]) -> usize {
    let catalog = tributary_operators::fuzzing::catalog();
    let mut splitter = LineSplitter::new(data);
    let mut lines = Vec::new();
    while let Ok(Poll::Ready) = splitter.poll(&mut lines, 1024, false) {}
    lines
        .iter()
        .filter(|raw| {
            matches!(
                tributary_operators::debezium::decode(raw, &catalog),
                tributary_operators::debezium::Decoded::Event(_)
            )
        })
        .count()
}

/// Reads a JSONL file, optionally following it for appended lines.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    lines: LineSplitter<BufReader<File>>,
    follow: bool,
}

impl FileSource {
    /// Opens `path`.
    pub fn open(path: &Path, follow: bool) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|cause| SourceError::Io {
            path: path.display().to_string(),
            cause,
        })?;
        Ok(FileSource {
            path: path.to_owned(),
            lines: LineSplitter::new(BufReader::with_capacity(1 << 20, file)),
            follow,
        })
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn stream_names(&self) -> Vec<String> {
        vec![self.describe()]
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Result<Poll, SourceError> {
        self.lines
            .poll(out, max, self.follow)
            .map_err(|cause| SourceError::Io {
                path: self.path.display().to_string(),
                cause,
            })
    }

    fn resume_after(&mut self, after: &StreamPositions) -> Result<(), SourceError> {
        let line = single_stream_resume(&self.describe(), after)?;
        self.lines.skip_through(line);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_lines_with_numbers_and_skips_blank_ones() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "{{\"a\":1}}\n\n  \nnull\r\n{{\"b\":2}}").unwrap();
        let mut source = FileSource::open(file.path(), false).unwrap();
        let mut out = Vec::new();
        assert_eq!(source.poll(&mut out, 100).unwrap(), Poll::Finished);
        let lines: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.position.offset,
                    String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                (1, "{\"a\":1}".to_owned()),
                (4, "null".to_owned()),
                (5, "{\"b\":2}".to_owned())
            ]
        );
    }

    #[test]
    fn a_followed_file_waits_for_the_end_of_a_line() {
        let mut splitter = LineSplitter::new(&b"{\"a\":1}\n{\"b\""[..]);
        let mut out = Vec::new();
        assert_eq!(splitter.poll(&mut out, 10, true).unwrap(), Poll::Ready);
        assert_eq!(splitter.poll(&mut out, 10, true).unwrap(), Poll::Idle);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn resumes_after_a_committed_line() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "{{\"a\":1}}\n{{\"a\":2}}\n{{\"a\":3}}\n").unwrap();
        let mut source = FileSource::open(file.path(), false).unwrap();
        let name = source.describe();
        assert!(source
            .resume_after(&StreamPositions::from([("file:other".to_owned(), 1)]))
            .is_err());
        source
            .resume_after(&StreamPositions::from([(name, 2)]))
            .unwrap();
        let mut out = Vec::new();
        source.poll(&mut out, 100).unwrap();
        let offsets: Vec<u64> = out.iter().map(|r| r.position.offset).collect();
        assert_eq!(offsets, vec![3]);
    }
}
