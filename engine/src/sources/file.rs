//! JSONL file source: one Debezium value per line (`null` = tombstone; a line may also be
//! `{"key":…,"value":…}`). Positions are 1-based line numbers.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tributary_operators::{Position, RawRecord};

use super::{Poll, Source};
use crate::error::SourceError;

/// Reads a JSONL file, optionally following it for appended lines.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    follow: bool,
    line_number: u64,
    partial: Vec<u8>,
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
            reader: BufReader::with_capacity(1 << 20, file),
            follow,
            line_number: 0,
            partial: Vec::new(),
        })
    }

    fn emit(&mut self, out: &mut Vec<RawRecord>) {
        self.line_number += 1;
        let mut line = std::mem::take(&mut self.partial);
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        out.push(RawRecord {
            key: None,
            value: Some(Arc::from(line.as_slice())),
            topic: None,
            position: Position {
                stream: 0,
                offset: self.line_number,
            },
            line: true,
        });
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
        let start = out.len();
        while out.len() - start < max {
            let read = self
                .reader
                .read_until(b'\n', &mut self.partial)
                .map_err(|cause| SourceError::Io {
                    path: self.path.display().to_string(),
                    cause,
                })?;
            if read == 0 {
                // End of file. A last line without a newline counts unless we follow the file,
                // in which case its writer may still be finishing it.
                if self.follow {
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
}
