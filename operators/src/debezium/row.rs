//! Reading a JSON object straight into a row of declared columns: one pass, no intermediate
//! map; undeclared fields are skipped unparsed. The scanner reads it when it can, `serde_json`
//! otherwise, both through [`RowFields`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::connect::{FieldSchema, StructSchema};
use super::convert;
use super::scan;
use crate::row::Row;
use crate::schema::{ColumnType, Schema};
use crate::value::Value;

/// Reads the object's fields into `schema`'s column order. The outer `Result` is malformed
/// JSON; the inner one a value that does not fit its column (`(column, why)`).
#[derive(Clone, Copy)]
pub(super) struct RowSeed<'s> {
    pub schema: &'s Schema,
    /// Only these columns (indices into `schema`) are read; `None` reads all.
    pub only: Option<&'s [usize]>,
    pub logical: Option<&'s StructSchema>,
}

/// The row (allocated once, returned as a pointer), or the column that did not fit and why.
pub(super) type FieldResult = Result<Row, (usize, String)>;

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = FieldResult;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<FieldResult, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = FieldResult;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of column values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldResult, A::Error> {
        let mut fields = RowFields::new(self);
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            match fields.column(&name) {
                Some(index) => {
                    let raw: &RawValue = map.next_value()?;
                    fields.set(index, &name, raw.get());
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields.finish())
    }
}

impl RowSeed<'_> {
    /// The fast path: reads the object with the scanner; `None` sends it to `serde_json`.
    pub fn scan(self, text: &str) -> Option<FieldResult> {
        let mut scanner = scan::Scanner::new(text);
        let row = self.scan_object(&mut scanner)?;
        scanner.end()?;
        Some(row)
    }

    /// Reads the object at the scanner's position like [`RowSeed::scan_object`], recognising
    /// its fields by the order of the table's last row (learnt with the same columns read).
    /// Integer and timestamp columns without a logical type are read as the scanner walks
    /// their digits; anything but a plain integer or `null` there is left to `serde_json`
    /// (which reads the row through [`convert`] and words the error).
    pub fn scan_object_in_order(
        self,
        scanner: &mut scan::Scanner<'_>,
        order: &mut super::order::FieldOrder<Option<RowField>>,
    ) -> Option<FieldResult> {
        let mut fields = RowFields::new(self);
        scanner.object_in_order(
            order,
            |name| self.field(name),
            |field, name, s| match field {
                Some(RowField { index, integer }) => {
                    // Only a Connect schema (looked up by name) needs the name.
                    let schema = self.logical.and_then(|l| l.field(name.get()));
                    match integer.filter(|_| schema.is_none_or(|f| f.logical.is_none())) {
                        Some(make) => {
                            fields.put(index, s.nullable_i64()?.map_or(Value::Null, make))
                        }
                        None => fields.convert(index, schema, s.value()?),
                    }
                    Some(())
                }
                None => s.skip(),
            },
        )?;
        Some(fields.finish())
    }

    /// The column a field named `name` fills, if it is read.
    fn field(self, name: &str) -> Option<RowField> {
        let index = self
            .schema
            .index_of(name)
            .filter(|&index| self.reads(index))?;
        let integer: Option<fn(i64) -> Value> = match self.schema.columns[index].ty {
            ColumnType::Int32 | ColumnType::Int64 => Some(Value::Int),
            ColumnType::Timestamp | ColumnType::TimestampTz => Some(Value::Timestamp),
            _ => None,
        };
        Some(RowField { index, integer })
    }

    /// Whether column `index` is read.
    fn reads(self, index: usize) -> bool {
        self.only.is_none_or(|only| only.contains(&index))
    }

    /// Reads the object at the scanner's position, consuming it; `None` when the scanner does
    /// not handle it.
    pub fn scan_object(self, scanner: &mut scan::Scanner<'_>) -> Option<FieldResult> {
        let mut fields = RowFields::new(self);
        scanner.object(|name, s| {
            let raw = s.value()?;
            if let Some(index) = fields.column(name) {
                fields.set(index, name, raw);
            }
            Some(())
        })?;
        Some(fields.finish())
    }
}

/// Columns a row is decoded in without a heap buffer of its own (wider tables use one).
const INLINE_COLUMNS: usize = 16;

/// A field of a row that fills a column that is read, as the scanner remembers it.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowField {
    index: usize,
    /// The column's value from a plain integer, for integer and timestamp columns.
    integer: Option<fn(i64) -> Value>,
}

/// A row being filled field by field, whichever parser walks the object. A field named twice
/// keeps its last value; the first value that does not fit is the one reported.
struct RowFields<'s> {
    seed: RowSeed<'s>,
    /// The values so far, NULLs until set: filled in place (on the stack for tables of up to
    /// [`INLINE_COLUMNS`] columns) and moved into the row's one allocation at the end.
    values: SmallVec<[Value; INLINE_COLUMNS]>,
    failure: Option<(usize, String)>,
    /// Fields usually arrive in schema order: the column tried first for the next name.
    guess: usize,
}

impl<'s> RowFields<'s> {
    fn new(seed: RowSeed<'s>) -> Self {
        RowFields {
            values: smallvec::smallvec![Value::Null; seed.schema.columns.len()],
            seed,
            failure: None,
            guess: 0,
        }
    }

    /// The column a field fills, if it is read.
    fn column(&mut self, name: &str) -> Option<usize> {
        let columns = &self.seed.schema.columns;
        let index = if columns.get(self.guess).is_some_and(|c| *c.name == *name) {
            self.guess
        } else {
            self.seed.schema.index_of(name)?
        };
        self.guess = index + 1;
        self.seed.reads(index).then_some(index)
    }

    fn set(&mut self, index: usize, name: &str, raw: &str) {
        let schema = self.seed.logical.and_then(|s| s.field(name));
        self.convert(index, schema, raw);
    }

    /// Converts `raw` for column `index`, by the field's Connect schema when there is one.
    fn convert(&mut self, index: usize, schema: Option<&FieldSchema>, raw: &str) {
        if self.failure.is_some() {
            return;
        }
        match convert::to_value(raw, self.seed.schema.columns[index].ty, schema) {
            Ok(value) => self.put(index, value),
            Err(why) => self.failure = Some((index, why)),
        }
    }

    fn put(&mut self, index: usize, value: Value) {
        // Always there: indices come from the schema the values were sized by.
        if let Some(slot) = self.values.get_mut(index) {
            *slot = value;
        }
    }

    fn finish(mut self) -> FieldResult {
        match self.failure {
            Some(failure) => Err(failure),
            None => Ok(self.values.iter_mut().map(std::mem::take).collect()),
        }
    }
}
