//! Reading a JSON object straight into a row of declared columns: one pass, no intermediate
//! map; undeclared fields are skipped unparsed.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::connect::StructSchema;
use super::convert;
use crate::row::Row;
use crate::schema::Schema;
use crate::value::Value;

/// Reads the object's fields into `schema`'s column order. The outer `Result` is malformed
/// JSON; the inner one a value that does not fit its column (`(column, why)`).
pub(super) struct RowSeed<'s> {
    pub schema: &'s Schema,
    /// Only these columns (indices into `schema`) are read; `None` reads all.
    pub only: Option<&'s [usize]>,
    pub logical: Option<&'s StructSchema>,
}

/// Row values on the stack until the row is allocated once.
type Values = smallvec::SmallVec<[Value; 16]>;

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
        let columns = &self.schema.columns;
        let mut values: Values = smallvec::smallvec![Value::Null; columns.len()];
        let mut failure = None;
        let mut guess = 0;
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            // Fields usually arrive in schema order: try the next column first.
            let index = if columns.get(guess).is_some_and(|c| *c.name == *name) {
                Some(guess)
            } else {
                self.schema.index_of(&name)
            }
            .filter(|i| self.only.is_none_or(|only| only.contains(i)));
            let Some(index) = index else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            guess = index + 1;
            let raw: &RawValue = map.next_value()?;
            if failure.is_some() {
                continue;
            }
            let logical = self.logical.and_then(|s| s.field(&name));
            match convert::to_value(raw.get(), columns[index].ty, logical) {
                Ok(value) => values[index] = value,
                Err(why) => failure = Some((index, why)),
            }
        }
        Ok(match failure {
            Some(failure) => Err(failure),
            None => Ok(Row::from_slice(&values)),
        })
    }
}
