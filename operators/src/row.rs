//! `Row` and `Key`: immutable, reference-counted tuples of values; and prefetching rows ahead of
//! a pass over them that would otherwise wait for memory row by row.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::schema::Schema;
use crate::value::{write_json_string, Value};

/// Values of a row that [`Row::prefetch`] loads: every other one (24 bytes each), so every
/// cache line of a row's first 200-odd bytes.
const PREFETCHED_VALUES: usize = 8;

/// Asks the CPU to start loading the cache line that holds `value` (a hint: it changes no
/// result, and does nothing where it is not supported).
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    safe_arch::prefetch_t0(value);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Items a pass over rows prefetches ahead of the one it yields (see [`prefetched`]); enough
/// for a row to arrive from memory while the items before it are handled.
pub(crate) const PREFETCH_AHEAD: usize = 8;

/// `items` in order, each one's row prefetched (see [`Row::prefetch`]) a few items before it is
/// yielded: for a pass over rows that have likely left the caches (a state's retracted rows,
/// an epoch's rows read when it closes), which would otherwise wait for memory one by one.
pub fn prefetched<T>(
    items: impl IntoIterator<Item = T>,
    row: impl Fn(&T) -> &Row,
) -> impl Iterator<Item = T> {
    let mut items = items.into_iter();
    let mut ahead = std::collections::VecDeque::with_capacity(PREFETCH_AHEAD + 1);
    std::iter::from_fn(move || {
        while ahead.len() <= PREFETCH_AHEAD {
            let Some(item) = items.next() else { break };
            row(&item).prefetch();
            ahead.push_back(item);
        }
        ahead.pop_front()
    })
}

/// A tuple of values in schema order. Cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Row(Arc<[Value]>);

impl Row {
    /// Appends the row as a JSON object, `{"column":value,…}` in `schema` order.
    pub fn write_json_object(&self, schema: &Schema, out: &mut String) {
        out.push('{');
        self.write_json_fields(schema, out);
        out.push('}');
    }

    /// Appends the row's `"column":value` pairs, comma-separated, without braces.
    pub fn write_json_fields(&self, schema: &Schema, out: &mut String) {
        for (i, (column, value)) in schema.columns.iter().zip(self.iter()).enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_string(&column.name, out);
            out.push(':');
            value.write_json(out);
        }
    }

    /// Builds a row from its values.
    pub fn new(values: Vec<Value>) -> Self {
        Row(values.into())
    }

    /// Builds a row by copying values from a slice (one allocation).
    pub fn from_slice(values: &[Value]) -> Self {
        Row(Arc::from(values))
    }

    /// A row of `width` NULLs, to be filled in place (see [`Row::values_mut`]) before it is
    /// shared: one allocation and no copy.
    pub fn nulls(width: usize) -> Self {
        Row(std::iter::repeat_n(Value::Null, width).collect())
    }

    /// `head` then `tail`, then NULLs up to `width` values, in one allocation, the values
    /// cloned straight into place (change, windowed and replica rows).
    pub fn concat(head: &[Value], tail: &[Value], width: usize) -> Self {
        let mut row = Row::nulls(width.max(head.len() + tail.len()));
        if let Some(values) = row.values_mut() {
            let (start, rest) = values.split_at_mut(head.len());
            start.clone_from_slice(head);
            if let Some(rest) = rest.get_mut(..tail.len()) {
                rest.clone_from_slice(tail);
            }
        }
        row
    }

    /// `head`, then this row's values, then `tail`, in one allocation (change and replica
    /// rows). The row's values are moved while this handle is its only one, so that no
    /// reference count is touched; when none of them has one, they are copied without that
    /// check (an atomic operation of its own).
    pub fn framed(mut self, head: &[Value], tail: &[Value]) -> Self {
        let counted = self.values().iter().any(Value::is_counted);
        let values: Arc<[Value]> = match self.values_mut().filter(|_| counted) {
            Some(values) => head
                .iter()
                .cloned()
                .chain(values.iter_mut().map(std::mem::take))
                .chain(tail.iter().cloned())
                .collect(),
            None => head
                .iter()
                .chain(self.values())
                .chain(tail)
                .cloned()
                .collect(),
        };
        Row(values)
    }

    /// Asks the CPU to load the row's first cache lines (those of its first eight values),
    /// for a row about to be read that is likely not in the caches.
    pub fn prefetch(&self) {
        for value in self.0.iter().take(PREFETCHED_VALUES).step_by(2) {
            prefetch(value);
        }
    }

    /// About how many bytes the row takes on the heap: its values (with the reference count)
    /// and the text and bytes they point to (shared ones counted in full).
    pub fn heap_bytes(&self) -> usize {
        let shared = |len: usize| 2 * std::mem::size_of::<usize>() + len;
        2 * std::mem::size_of::<usize>()
            + std::mem::size_of_val(&*self.0)
            + self
                .0
                .iter()
                .map(|value| match value {
                    Value::Str(text) | Value::Json(text) => shared(text.len()),
                    Value::Bytes(bytes) => shared(bytes.len()),
                    _ => 0,
                })
                .sum::<usize>()
    }

    /// The values, in schema order.
    pub fn values(&self) -> &[Value] {
        &self.0
    }

    /// The values to change in place, while this handle is the row's only one (`None` once the
    /// row is shared).
    pub fn values_mut(&mut self) -> Option<&mut [Value]> {
        Arc::get_mut(&mut self.0)
    }

    /// A new row made of the values at `indices`.
    pub fn project(&self, indices: &[usize]) -> Row {
        Row(indices
            .iter()
            .map(|&i| self.0.get(i).cloned().unwrap_or_default())
            .collect())
    }
}

impl Deref for Row {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.0
    }
}

impl FromIterator<Value> for Row {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Self {
        Row(iter.into_iter().collect())
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

/// The values that identify a row (its primary key) or a group, in key-column order. Up to two
/// values are stored inline, so keys of one or two columns cost no allocation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug, Default)]
pub struct Key(SmallVec<[Value; 2]>);

impl Key {
    /// Builds a key from its values.
    pub fn new(values: Vec<Value>) -> Self {
        Key(SmallVec::from_vec(values))
    }

    /// A key of one value (the usual primary key).
    pub fn single(value: Value) -> Self {
        let mut values = SmallVec::new();
        values.push(value);
        Key(values)
    }

    /// The values of `row` at `indices`.
    pub fn of(row: &[Value], indices: &[usize]) -> Self {
        Key(indices
            .iter()
            .map(|&i| row.get(i).cloned().unwrap_or_default())
            .collect())
    }
}

impl FromIterator<Value> for Key {
    fn from_iter<I: IntoIterator<Item = Value>>(values: I) -> Self {
        Key(values.into_iter().collect())
    }
}

impl Deref for Key {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetched_items_come_in_order() {
        let rows: Vec<(Row, i64)> = (0..20)
            .map(|i| (Row::new(vec![Value::Int(i)]), i))
            .collect();
        let again: Vec<(Row, i64)> = prefetched(rows.clone(), |(row, _)| row).collect();
        assert_eq!(again, rows);
        assert_eq!(prefetched(Vec::<Row>::new(), |row| row).count(), 0);
    }

    #[test]
    fn a_framed_row_has_head_values_tail_whether_moved_or_shared() {
        let row = Row::new(vec![Value::Int(1), Value::str("a")]);
        let expected = Row::new(vec![
            Value::Int(0),
            Value::Int(1),
            Value::str("a"),
            Value::Bool(true),
        ]);
        let shared = row.clone();
        assert_eq!(row.framed(&[Value::Int(0)], &[Value::Bool(true)]), expected);
        // The shared handle still sees its own values.
        assert_eq!(shared.values(), &[Value::Int(1), Value::str("a")]);
        assert_eq!(
            shared.framed(&[Value::Int(0)], &[Value::Bool(true)]),
            expected
        );
        // Values without a reference count are copied.
        let plain = Row::new(vec![Value::Int(1), Value::Null]);
        assert_eq!(
            plain.framed(&[], &[Value::Int(2)]).values(),
            &[Value::Int(1), Value::Null, Value::Int(2)]
        );
    }
}
