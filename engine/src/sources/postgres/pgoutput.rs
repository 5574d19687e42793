//! Parser for the row messages of PostgreSQL's `pgoutput` logical decoding plugin (protocol
//! version 1): Relation, Insert, Update, Delete, Truncate. Begin, Commit and logical messages
//! arrive already parsed from the replication client; Type and Origin are ignored.

use bytes::Bytes;

/// One column of a relation as the Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Column name.
    pub name: String,
    /// Type OID (`pg_type.oid`).
    pub type_oid: u32,
    /// `atttypmod` (numeric: precision and scale; -1: none).
    pub type_modifier: i32,
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
}

/// A table's shape, sent before its first change in a session and again after a schema change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation OID changes refer to.
    pub oid: u32,
    /// Schema (namespace) name; `public` when the server sends an empty one.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// REPLICA IDENTITY setting: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// Columns in table order.
    pub columns: Vec<RelationColumn>,
}

/// One column value of a tuple, in text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// A TOASTed value that did not change (not sent).
    UnchangedToast,
    /// The value's text representation.
    Text(Bytes),
}

/// A decoded row message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowMessage {
    /// A relation's shape.
    Relation(Relation),
    /// A new row.
    Insert {
        /// The relation.
        oid: u32,
        /// The row.
        new: Vec<Datum>,
    },
    /// A changed row; `old` is the old key (`K`) or the whole old row (`O`, REPLICA IDENTITY
    /// FULL) when the server sends one.
    Update {
        /// The relation.
        oid: u32,
        /// The old key or row, if sent.
        old: Option<Vec<Datum>>,
        /// The new row.
        new: Vec<Datum>,
    },
    /// A deleted row: its key (or whole row with REPLICA IDENTITY FULL).
    Delete {
        /// The relation.
        oid: u32,
        /// The old key or row.
        old: Vec<Datum>,
    },
    /// `TRUNCATE` of these relations.
    Truncate {
        /// The relations.
        oids: Vec<u32>,
    },
    /// Type, Origin and other messages Tributary does not need.
    Ignored,
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message `{tag}`: {reason}")]
pub struct ParseError {
    /// The message tag.
    pub tag: char,
    /// What was wrong.
    pub reason: String,
}

/// Parses one pgoutput message (the payload of an XLogData frame).
pub fn parse(data: &Bytes) -> Result<RowMessage, ParseError> {
    let tag = data.first().copied().unwrap_or(b'?');
    let mut reader = Reader {
        data,
        at: 1,
        tag: char::from(tag),
    };
    let message = match tag {
        b'R' => RowMessage::Relation(reader.relation()?),
        b'I' => {
            let oid = reader.u32()?;
            reader.expect(b'N')?;
            RowMessage::Insert {
                oid,
                new: reader.tuple()?,
            }
        }
        b'U' => {
            let oid = reader.u32()?;
            let mut old = None;
            let mut marker = reader.u8()?;
            if marker == b'K' || marker == b'O' {
                old = Some(reader.tuple()?);
                marker = reader.u8()?;
            }
            if marker != b'N' {
                return Err(reader.error(format!("expected `N`, found {marker:#x}")));
            }
            RowMessage::Update {
                oid,
                old,
                new: reader.tuple()?,
            }
        }
        b'D' => {
            let oid = reader.u32()?;
            let marker = reader.u8()?;
            if marker != b'K' && marker != b'O' {
                return Err(reader.error(format!("expected `K` or `O`, found {marker:#x}")));
            }
            RowMessage::Delete {
                oid,
                old: reader.tuple()?,
            }
        }
        b'T' => {
            let count = reader.u32()?;
            let _options = reader.u8()?;
            let oids = (0..count).map(|_| reader.u32()).collect::<Result<_, _>>()?;
            RowMessage::Truncate { oids }
        }
        _ => RowMessage::Ignored,
    };
    Ok(message)
}

struct Reader<'a> {
    data: &'a Bytes,
    at: usize,
    tag: char,
}

impl Reader<'_> {
    fn error(&self, reason: impl Into<String>) -> ParseError {
        ParseError {
            tag: self.tag,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ParseError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.data.len());
        let Some(end) = end else {
            return Err(self.error(format!("truncated at byte {}", self.at)));
        };
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }

    fn expect(&mut self, want: u8) -> Result<(), ParseError> {
        match self.u8()? {
            got if got == want => Ok(()),
            got => Err(self.error(format!("expected {:?}, found {got:#x}", char::from(want)))),
        }
    }

    fn i16(&mut self) -> Result<i16, ParseError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let rest = &self.data[self.at.min(self.data.len())..];
        let Some(len) = rest.iter().position(|b| *b == 0) else {
            return Err(self.error("unterminated string"));
        };
        let text = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(text)
    }

    fn relation(&mut self) -> Result<Relation, ParseError> {
        let oid = self.u32()?;
        let schema = self.string()?;
        let table = self.string()?;
        let replica_identity = self.u8()?;
        let count = self.i16()?;
        let mut columns = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for _ in 0..count {
            let flags = self.u8()?;
            let name = self.string()?;
            let type_oid = self.u32()?;
            let type_modifier = self.u32()? as i32;
            columns.push(RelationColumn {
                name,
                type_oid,
                type_modifier,
                key: flags & 1 == 1,
            });
        }
        Ok(Relation {
            oid,
            schema: if schema.is_empty() {
                "public".to_owned()
            } else {
                schema
            },
            table,
            replica_identity,
            columns,
        })
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, ParseError> {
        let count = self.i16()?;
        let mut datums = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for _ in 0..count {
            datums.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    let start = self.at;
                    self.take(len)?;
                    Datum::Text(self.data.slice(start..start + len))
                }
                other => return Err(self.error(format!("unknown column kind {other:#x}"))),
            });
        }
        Ok(datums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut out = (values.len() as i16).to_be_bytes().to_vec();
        for value in values {
            match value {
                None => out.push(b'n'),
                Some(text) => {
                    out.push(b't');
                    out.extend((text.len() as u32).to_be_bytes());
                    out.extend(text.as_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn parses_relation_and_row_changes() {
        let mut relation = b"R".to_vec();
        relation.extend(16384u32.to_be_bytes());
        relation.extend(b"public\0orders\0d");
        relation.extend(2i16.to_be_bytes());
        relation.extend(b"\x01order_id\0");
        relation.extend(20u32.to_be_bytes());
        relation.extend((-1i32).to_be_bytes());
        relation.extend(b"\x00status\0");
        relation.extend(25u32.to_be_bytes());
        relation.extend((-1i32).to_be_bytes());
        let RowMessage::Relation(parsed) = parse(&Bytes::from(relation)).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(parsed.table, "orders");
        assert_eq!(parsed.columns.len(), 2);
        assert!(parsed.columns[0].key && !parsed.columns[1].key);
        assert_eq!(parsed.columns[1].type_oid, 25);

        let mut update = b"U".to_vec();
        update.extend(16384u32.to_be_bytes());
        update.push(b'K');
        update.extend(tuple(&[Some("7"), None]));
        update.push(b'N');
        update.extend(tuple(&[Some("8"), Some("paid")]));
        assert_eq!(
            parse(&Bytes::from(update)).unwrap(),
            RowMessage::Update {
                oid: 16384,
                old: Some(vec![Datum::Text(Bytes::from("7")), Datum::Null]),
                new: vec![
                    Datum::Text(Bytes::from("8")),
                    Datum::Text(Bytes::from("paid"))
                ],
            }
        );

        let mut delete = b"D".to_vec();
        delete.extend(16384u32.to_be_bytes());
        delete.push(b'K');
        delete.extend(tuple(&[Some("8"), None]));
        assert!(matches!(
            parse(&Bytes::from(delete)).unwrap(),
            RowMessage::Delete { oid: 16384, .. }
        ));
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        let mut insert = b"I".to_vec();
        insert.extend(1u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some("hello")]));
        for cut in 0..insert.len() {
            let _ = parse(&Bytes::copy_from_slice(&insert[..cut]));
        }
        assert!(parse(&Bytes::copy_from_slice(&insert[..insert.len() - 1])).is_err());
        assert!(parse(&Bytes::from(insert)).is_ok());
    }
}
