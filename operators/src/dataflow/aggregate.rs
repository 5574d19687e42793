//! Group-by aggregates (`count`, `sum`, `avg`) maintained incrementally: each row becomes a
//! difference in an accumulator semigroup, so an update costs O(1) regardless of group size.

use std::hash::{Hash, Hasher};

use differential_dataflow::difference::{IsZero, Multiply, Semigroup};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::AsCollection;
use hashbrown::hash_table::HashTable;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::expr::{BoundExpr, Expr};
use super::relation::{PlanError, Relation};
use super::{Collection, Time};
use crate::row::{prefetched, Key, Row};
use crate::schema::{Column, ColumnType, Schema};
use crate::value::{Decimal, Float, Value};

/// An aggregate function with an optional output name.
#[derive(Clone, Debug, PartialEq)]
pub struct Agg {
    func: AggFn,
    name: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum AggFn {
    CountRows,
    Sum(Expr),
    Avg(Expr),
}

/// `count(*)`: rows in the group.
pub fn count() -> Agg {
    Agg {
        func: AggFn::CountRows,
        name: None,
    }
}

/// `sum(expr)`: NULLs ignored; NULL when the group has no non-null value.
pub fn sum(expr: Expr) -> Agg {
    Agg {
        func: AggFn::Sum(expr),
        name: None,
    }
}

/// `avg(expr)` as a double; NULLs ignored.
pub fn avg(expr: Expr) -> Agg {
    Agg {
        func: AggFn::Avg(expr),
        name: None,
    }
}

impl Agg {
    /// Names the output column.
    pub fn alias(mut self, name: &str) -> Agg {
        self.name = Some(name.to_owned());
        self
    }

    fn output_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match &self.func {
            AggFn::CountRows => "count".to_owned(),
            AggFn::Sum(e) => format!("sum({})", e.output_name()),
            AggFn::Avg(e) => format!("avg({})", e.output_name()),
        })
    }
}

/// A relation with its grouping columns chosen; finish with [`Grouped::agg`].
#[derive(Debug)]
pub struct Grouped<'s> {
    relation: Relation<'s>,
    groups: Vec<usize>,
}

impl<'s> Relation<'s> {
    /// `GROUP BY columns`.
    pub fn group_by<'a>(
        &self,
        columns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Grouped<'s>, PlanError> {
        Ok(Grouped {
            groups: self.columns(columns)?,
            relation: self.clone(),
        })
    }

    /// Aggregates over the whole relation (one output row while it is non-empty).
    pub fn agg(&self, aggs: impl IntoIterator<Item = Agg>) -> Result<Relation<'s>, PlanError> {
        Grouped {
            relation: self.clone(),
            groups: Vec::new(),
        }
        .agg(aggs)
    }
}

#[derive(Clone, Debug)]
enum Bound {
    CountRows,
    Sum(BoundExpr, SumKind),
    Avg(BoundExpr, SumKind),
}

#[derive(Clone, Copy, Debug)]
enum SumKind {
    Int,
    Decimal(u8),
    Float,
}

impl<'s> Grouped<'s> {
    /// `SELECT groups…, aggs… GROUP BY groups`. The output's key is the group columns.
    pub fn agg(self, aggs: impl IntoIterator<Item = Agg>) -> Result<Relation<'s>, PlanError> {
        let input = self.relation.schema().clone();
        let mut columns: Vec<Column> = self
            .groups
            .iter()
            .map(|&g| input.columns[g].clone())
            .collect();
        let mut bound = Vec::new();
        for agg in aggs {
            let name = agg.output_name();
            let (b, ty) = match &agg.func {
                AggFn::CountRows => (Bound::CountRows, ColumnType::Int64),
                AggFn::Sum(e) | AggFn::Avg(e) => {
                    let expr = e.bind(&input).map_err(PlanError)?;
                    let (kind, sum_ty) = match expr.ty() {
                        ColumnType::Int32 | ColumnType::Int64 => (SumKind::Int, ColumnType::Int64),
                        ColumnType::Decimal { scale, .. } => (
                            SumKind::Decimal(scale),
                            ColumnType::Decimal {
                                precision: 38,
                                scale,
                            },
                        ),
                        ColumnType::Float64 => (SumKind::Float, ColumnType::Float64),
                        other => {
                            return Err(PlanError(format!(
                                "cannot sum `{}` of type {other}",
                                e.output_name()
                            )))
                        }
                    };
                    match agg.func {
                        AggFn::Sum(_) => (Bound::Sum(expr, kind), sum_ty),
                        _ => (Bound::Avg(expr, kind), ColumnType::Float64),
                    }
                }
            };
            columns.push(Column::new(&name, ty));
            bound.push(b);
        }
        let groups = self.groups.clone();
        let group_count = groups.len();
        let read = groups
            .iter()
            .copied()
            .chain(bound.iter().flat_map(|b| match b {
                Bound::CountRows => Vec::new(),
                Bound::Sum(e, _) | Bound::Avg(e, _) => e.columns(),
            }));
        let input_rows = self.relation.reading(read);
        let origins: Vec<_> = (groups.iter().map(|&g| self.relation.origin(g).cloned()))
            .chain(bound.iter().map(|_| None))
            .collect();
        let finish = bound.clone();
        let rows = combine_by_group(input_rows, groups, bound)
            .count_total_core::<i64>()
            .flat_map(move |(group, acc): (Key, Accumulators)| {
                (acc.rows != 0).then(|| {
                    let finished = finish
                        .iter()
                        .zip(&acc.cells)
                        .map(|(b, c)| c.finish(b, acc.rows));
                    group.iter().cloned().chain(finished).collect::<Row>()
                })
            });
        let key = Some((0..group_count).collect());
        Ok(self
            .relation
            .derive(Schema::new(columns), key, rows)
            .with_origins(origins))
    }
}

/// Each row's contribution to its group (the values at `groups`) under `bounds`, summed per
/// group and time within every batch before it reaches differential's arrangement: a batch of
/// N rows over G groups sends G updates instead of N. A row of a group already in the batch is
/// added to the group's totals in place.
fn combine_by_group<'s>(
    rows: &Collection<'s, Row>,
    groups: Vec<usize>,
    bounds: Vec<Bound>,
) -> Collection<'s, Key, Accumulators> {
    fn group_hash<'a>(time: Time, values: impl Iterator<Item = &'a Value>) -> u64 {
        let mut hasher = rustc_hash::FxHasher::default();
        time.hash(&mut hasher);
        values.for_each(|value| value.hash(&mut hasher));
        hasher.finish()
    }
    rows.inner
        .clone()
        .unary(Pipeline, "combine-by-group", move |_, _| {
            let mut totals: HashTable<(Time, Key, Accumulators)> = HashTable::new();
            move |input, output| {
                input.for_each(|capability, data| {
                    // Rows often come from a state far larger than the caches (retracted ones
                    // above all).
                    for (row, time, diff) in prefetched(data.drain(..), |(row, _, _)| row) {
                        let hash = group_hash(time, groups.iter().map(|&g| &row[g]));
                        let same_group = |(t, key, _): &(Time, Key, Accumulators)| {
                            *t == time && groups.iter().zip(key.iter()).all(|(&g, v)| row[g] == *v)
                        };
                        match totals.find_mut(hash, same_group) {
                            Some((_, _, total)) => total.add_row(&bounds, &row, diff),
                            None => {
                                let mut contribution = Accumulators::of(&bounds, &row);
                                if diff != 1 {
                                    contribution = contribution.multiply(&diff);
                                }
                                let entry = (time, Key::of(&row, &groups), contribution);
                                totals.insert_unique(hash, entry, |(t, key, _)| {
                                    group_hash(*t, key.iter())
                                });
                            }
                        }
                    }
                    let mut session = output.session(&capability);
                    for (time, key, total) in totals.drain() {
                        if !total.is_zero() {
                            session.give((key, time, total));
                        }
                    }
                });
            }
        })
        .as_collection()
}

/// Per-group running totals; a difference type, so retractions subtract.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Accumulators {
    rows: i64,
    cells: smallvec::SmallVec<[Cell; 2]>,
}

impl Accumulators {
    /// One row's contribution under `bounds`.
    fn of(bounds: &[Bound], row: &[Value]) -> Accumulators {
        Accumulators {
            rows: 1,
            cells: bounds.iter().map(|b| Cell::of(b, row)).collect(),
        }
    }

    /// Adds `diff` times `row`'s contribution: `plus_equals(of(bounds, row) × diff)`, without
    /// making it.
    fn add_row(&mut self, bounds: &[Bound], row: &[Value], diff: i64) {
        self.rows += diff;
        if self.cells.len() < bounds.len() {
            self.cells.resize(bounds.len(), Cell::default());
        }
        for (cell, bound) in self.cells.iter_mut().zip(bounds) {
            let of = Cell::of(bound, row);
            cell.count += of.count * diff;
            cell.exact += of.exact * i128::from(diff);
            cell.float.0 += of.float.0 * diff as f64;
        }
    }
}

/// One aggregate's totals: non-null inputs, exact sum (ints, unscaled decimals), float sum.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
struct Cell {
    count: i64,
    exact: i128,
    float: Float,
}

impl Cell {
    fn of(bound: &Bound, row: &[Value]) -> Cell {
        let (expr, kind) = match bound {
            Bound::CountRows => return Cell::default(),
            Bound::Sum(e, k) | Bound::Avg(e, k) => (e, *k),
        };
        let value = expr.eval(row);
        let mut cell = Cell {
            count: 1,
            ..Cell::default()
        };
        match (value, kind) {
            (Value::Null, _) => cell.count = 0,
            (Value::Int(i), SumKind::Int) => cell.exact = i128::from(i),
            (Value::Decimal(d), SumKind::Decimal(scale)) => {
                cell.exact = d.rescale(scale).map_or(0, |d| d.unscaled)
            }
            (Value::Float(f), _) => cell.float = f,
            (Value::Int(i), _) => cell.float = Float(i as f64),
            (Value::Decimal(d), _) => cell.float = Float(d.to_f64()),
            _ => cell.count = 0,
        }
        cell
    }

    fn finish(&self, bound: &Bound, rows: i64) -> Value {
        let kind = match bound {
            Bound::CountRows => return Value::Int(rows),
            Bound::Sum(_, kind) | Bound::Avg(_, kind) => *kind,
        };
        if self.count == 0 {
            return Value::Null;
        }
        let total = match kind {
            SumKind::Int => Value::Int(i64::try_from(self.exact).unwrap_or(i64::MAX)),
            SumKind::Decimal(scale) => {
                Decimal::new(self.exact, scale).map_or(Value::Null, Value::Decimal)
            }
            SumKind::Float => Value::Float(self.float),
        };
        match bound {
            Bound::Avg(..) => {
                let total = match total {
                    Value::Int(i) => i as f64,
                    Value::Decimal(d) => d.to_f64(),
                    Value::Float(f) => f.0,
                    _ => return Value::Null,
                };
                Value::Float(Float(total / self.count as f64))
            }
            _ => total,
        }
    }
}

impl IsZero for Accumulators {
    fn is_zero(&self) -> bool {
        self.rows == 0
            && self
                .cells
                .iter()
                .all(|c| c.count == 0 && c.exact == 0 && c.float.0 == 0.0)
    }
}

impl Semigroup for Accumulators {
    fn plus_equals(&mut self, rhs: &Self) {
        self.rows += rhs.rows;
        if self.cells.len() < rhs.cells.len() {
            self.cells.resize(rhs.cells.len(), Cell::default());
        }
        for (mine, theirs) in self.cells.iter_mut().zip(&rhs.cells) {
            mine.count += theirs.count;
            mine.exact += theirs.exact;
            mine.float.0 += theirs.float.0;
        }
    }
}

impl Multiply<i64> for Accumulators {
    type Output = Accumulators;
    fn multiply(mut self, rhs: &i64) -> Accumulators {
        self.rows *= rhs;
        for cell in &mut self.cells {
            cell.count *= rhs;
            cell.exact *= i128::from(*rhs);
            cell.float.0 *= *rhs as f64;
        }
        self
    }
}
