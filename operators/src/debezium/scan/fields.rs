//! Which fields of a record, its `source` block and its `transaction` block the decoder reads,
//! and reading them with the scanner (the field orders it remembers from record to record).

use std::sync::Arc;

use super::super::envelope::{Record, Source, Transaction};
use super::super::order::FieldOrder;
use super::super::row::{FieldResult, RowField, RowSeed};
use super::Scanner;
use crate::schema::{TableId, TableSpec};

/// The field orders a decoder remembers from one record to the next.
#[derive(Debug, Default)]
pub(in crate::debezium) struct FieldOrders {
    /// Records as given, the envelopes inside wrappers (message or schema), and Kafka keys.
    records: [FieldOrder<Option<RecordField>>; 3],
    source: FieldOrder<Option<SourceField>>,
    /// The `before` images passed over, whose fields are not read: recognising their names
    /// (a table's columns, in order) is cheaper than scanning them.
    images: FieldOrder<()>,
    /// Each table's `after` rows (by table id): the column each field fills.
    rows: Vec<RowOrder>,
}

#[cfg(test)]
impl FieldOrders {
    /// The most fields the order of records as given remembers.
    pub(super) fn longest_record_shape(&self) -> usize {
        self.records[0].longest_shape()
    }
}

/// The order of a table's rows' fields (each resolved to the column it fills, if that column
/// is read), with the table's declaration and the columns read that it was learnt with.
type RowOrder = (
    Option<(Arc<TableSpec>, Option<Box<[usize]>>)>,
    FieldOrder<Option<RowField>>,
);

/// The order of the `after` rows of `guess`'s table, made on first use and again whenever the
/// table's declaration or the columns read are other ones (the fields resolve differently).
fn row_order<'o>(
    rows: &'o mut Vec<RowOrder>,
    guess: &AfterGuess<'_>,
) -> &'o mut FieldOrder<Option<RowField>> {
    let index = guess.table as usize;
    if rows.len() <= index {
        rows.resize_with(index + 1, Default::default);
    }
    let (learnt_with, order) = &mut rows[index];
    let same = learnt_with.as_ref().is_some_and(|(spec, only)| {
        Arc::ptr_eq(spec, guess.spec) && only.as_deref() == guess.seed.only
    });
    if !same {
        *learnt_with = Some((Arc::clone(guess.spec), guess.seed.only.map(Box::from)));
        *order = FieldOrder::default();
    }
    order
}

/// Which record a scan reads: the text as given, an envelope found inside a wrapper, or a Kafka
/// key (their fields differ, so each kind keeps its own order).
#[derive(Clone, Copy, Debug)]
pub(in crate::debezium) enum Level {
    Outer,
    Inner,
    Key,
}

/// The fields of a record that the decoder reads.
#[derive(Clone, Copy, Debug)]
enum RecordField {
    Key,
    Value,
    Topic,
    Schema,
    Payload,
    Before,
    After,
    Source,
    Op,
    TsMs,
    Transaction,
}

impl RecordField {
    fn of(name: &str) -> Option<Self> {
        use RecordField::*;
        Some(match name {
            "key" => Key,
            "value" => Value,
            "topic" => Topic,
            "schema" => Schema,
            "payload" => Payload,
            "before" => Before,
            "after" => After,
            "source" => Source,
            "op" => Op,
            "ts_ms" => TsMs,
            "transaction" => Transaction,
            _ => return None,
        })
    }
}

/// The fields of a `source` block that the decoder reads.
#[derive(Clone, Copy, Debug)]
enum SourceField {
    Name,
    Schema,
    Db,
    Table,
    TsMs,
    TxId,
    Lsn,
}

impl SourceField {
    fn of(name: &str) -> Option<Self> {
        use SourceField::*;
        Some(match name {
            "name" => Name,
            "schema" => Schema,
            "db" => Db,
            "table" => Table,
            "ts_ms" => TsMs,
            "txId" => TxId,
            "lsn" => Lsn,
            _ => return None,
        })
    }
}

/// Marks field `bit` seen; `None` when it was seen before (`serde` rejects duplicate fields).
fn first_time(seen: &mut u32, bit: u32) -> Option<()> {
    let mask = 1 << bit;
    (*seen & mask == 0).then(|| *seen |= mask)
}

/// The table a record's `after` probably belongs to (the one of the record before), so that it
/// is read into a row in the same pass instead of being walked twice.
#[derive(Clone, Copy)]
pub(in crate::debezium) struct AfterGuess<'s> {
    pub table: TableId,
    /// The table's declaration, which the remembered order of its rows' fields belongs to.
    pub spec: &'s Arc<TableSpec>,
    pub seed: RowSeed<'s>,
}

/// A whole record (wrapper or envelope), as `serde_json` would read it into [`Record`]; with a
/// guess, an `after` object is also read as a row of the guessed table (`Record::after_read`).
/// (The decoder reads into a reused record with `record_into`; this is for the agreement
/// check of the fuzzers and tests.)
#[cfg(any(test, feature = "fuzzing"))]
pub(in crate::debezium) fn record<'a>(
    text: &'a str,
    orders: &mut FieldOrders,
    level: Level,
    guess: Option<AfterGuess<'_>>,
) -> Option<Record<'a>> {
    let mut record = Record::default();
    record_into(text, orders, level, guess, &mut record).map(|()| record)
}

/// Reads a record like [`record`] into `record` (a record is large to move); when it answers
/// `None`, `record` holds what was read before the scanner gave up.
pub(in crate::debezium) fn record_into<'a>(
    text: &'a str,
    orders: &mut FieldOrders,
    level: Level,
    guess: Option<AfterGuess<'_>>,
    record: &mut Record<'a>,
) -> Option<()> {
    let mut scanner = Scanner::new(text);
    *record = Record::default();
    let mut seen = 0;
    let FieldOrders {
        records,
        source: source_order,
        images,
        rows,
    } = orders;
    let order = &mut records[level as usize];
    scanner.object_in_order(order, RecordField::of, |field, _, s| {
        let Some(field) = field else {
            return s.skip();
        };
        first_time(&mut seen, field as u32)?;
        match field {
            RecordField::Key => record.key = s.nullable()?,
            RecordField::Value => record.value = Some(s.value()?),
            RecordField::Topic => record.topic = s.nullable_plain_string()?,
            RecordField::Schema => record.schema = s.nullable()?,
            RecordField::Payload => record.payload = s.nullable()?,
            RecordField::Before => record.before = s.nullable_in_order(images)?,
            RecordField::After => match guess.filter(|_| s.peek() == Some(b'{')) {
                Some(guess) => {
                    let start = s.at;
                    let order = row_order(rows, &guess);
                    let row = guess.seed.scan_object_in_order(s, order)?;
                    record.after = Some(&s.text[start..s.at]);
                    record.after_read = Some((guess.table, row));
                }
                None => record.after = s.nullable()?,
            },
            // Read in place: a `Source` is large to move.
            RecordField::Source if s.peek() == Some(b'n') => {
                s.literal(b"null")?;
                record.source = None;
            }
            RecordField::Source => {
                source(s, source_order, record.source.insert(Source::default()))?
            }
            RecordField::Op => record.op = s.nullable()?,
            RecordField::TsMs => record.ts_ms = s.nullable_i64()?,
            RecordField::Transaction => record.transaction = nullable_object(s, transaction)?,
        }
        Some(())
    })?;
    scanner.end()
}

/// Reads `text`, one object, as a row of `guess`'s table, recognising its fields by the
/// order the table's rows taught; `None` when the scanner does not handle it.
pub(in crate::debezium) fn row_in_order(
    text: &str,
    orders: &mut FieldOrders,
    guess: AfterGuess<'_>,
) -> Option<FieldResult> {
    let mut scanner = Scanner::new(text);
    let order = row_order(&mut orders.rows, &guess);
    let row = guess.seed.scan_object_in_order(&mut scanner, order)?;
    scanner.end()?;
    Some(row)
}

fn nullable_object<'a, T>(
    scanner: &mut Scanner<'a>,
    read: impl FnOnce(&mut Scanner<'a>) -> Option<T>,
) -> Option<Option<T>> {
    if scanner.peek()? == b'n' {
        scanner.literal(b"null")?;
        return Some(None);
    }
    read(scanner).map(Some)
}

fn source<'a>(
    scanner: &mut Scanner<'a>,
    order: &mut FieldOrder<Option<SourceField>>,
    source: &mut Source<'a>,
) -> Option<()> {
    let mut seen = 0;
    scanner.object_in_order(order, SourceField::of, |field, _, s| {
        let Some(field) = field else {
            return s.skip();
        };
        first_time(&mut seen, field as u32)?;
        match field {
            SourceField::Name => source.name = s.nullable_plain_string()?,
            SourceField::Schema => source.schema = s.nullable_plain_string()?,
            SourceField::Db => source.db = s.nullable_plain_string()?,
            SourceField::Table => source.table = s.nullable_plain_string()?,
            SourceField::TsMs => source.ts_ms = s.nullable_i64()?,
            SourceField::TxId => source.tx_id = s.nullable()?,
            SourceField::Lsn => source.lsn = s.nullable()?,
        }
        Some(())
    })
}

fn transaction<'a>(scanner: &mut Scanner<'a>) -> Option<Transaction<'a>> {
    let mut transaction = Transaction::default();
    let mut seen = 0;
    scanner.object(|name, s| {
        if name == "id" {
            first_time(&mut seen, 0)?;
            transaction.id = s.nullable()?;
        } else {
            s.skip()?;
        }
        Some(())
    })?;
    Some(transaction)
}
