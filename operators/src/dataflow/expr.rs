//! Scalar expressions over a row: columns, literals, arithmetic, `concat_ws`, value mapping and
//! timestamp → epoch milliseconds; resolved against a schema once, then evaluated per row
//! without lookups.

use std::ops::{Add, Mul, Sub};
use std::sync::Arc;

use crate::schema::{Column, ColumnType, Schema};
use crate::value::{Decimal, Float, Value};

/// An expression over the columns of a relation, e.g. `col("quantity") * col("price")`.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A column by name.
    Column(String),
    /// A constant.
    Literal(Value),
    /// Arithmetic on two expressions.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// An expression with an output name.
    Alias(Box<Expr>, String),
    /// Strings joined with a separator, NULLs skipped (Spark's `concat_ws`).
    ConcatWs(String, Vec<Expr>),
    /// The value paired with the input's value; NULL when none is (`CASE x WHEN … THEN …`).
    Case(Box<Expr>, Vec<(Value, Value)>),
    /// A timestamp as milliseconds since the epoch.
    EpochMillis(Box<Expr>),
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
}

/// A column reference.
pub fn col(name: &str) -> Expr {
    Expr::Column(name.to_owned())
}

/// A constant.
pub fn lit(value: impl Into<Value>) -> Expr {
    Expr::Literal(value.into())
}

/// `concat_ws(separator, parts)`: the non-NULL string parts joined by `separator`.
pub fn concat_ws(separator: &str, parts: impl IntoIterator<Item = Expr>) -> Expr {
    Expr::ConcatWs(separator.to_owned(), parts.into_iter().collect())
}

/// `CASE input WHEN from THEN to … END`: the `to` of the first pair whose `from` equals the
/// input, else NULL. Every `to` has one type.
pub fn case<V: Into<Value>>(input: Expr, pairs: impl IntoIterator<Item = (V, V)>) -> Expr {
    Expr::Case(
        Box::new(input),
        pairs
            .into_iter()
            .map(|(from, to)| (from.into(), to.into()))
            .collect(),
    )
}

/// A timestamp column as milliseconds since the Unix epoch (`Int64`).
pub fn epoch_millis(timestamp: Expr) -> Expr {
    Expr::EpochMillis(Box::new(timestamp))
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::str(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(Float(v))
    }
}

impl Expr {
    /// Names the expression's output column.
    pub fn alias(self, name: &str) -> Expr {
        Expr::Alias(Box::new(self), name.to_owned())
    }

    /// The output column name: the alias, the column's own name, or a rendering of the expression.
    pub fn output_name(&self) -> String {
        match self {
            Expr::Column(name) | Expr::Alias(_, name) => name.clone(),
            Expr::Literal(value) => value.to_string(),
            Expr::Binary(op, left, right) => {
                let symbol = match op {
                    BinaryOp::Add => "+",
                    BinaryOp::Sub => "-",
                    BinaryOp::Mul => "*",
                };
                format!("{} {symbol} {}", left.output_name(), right.output_name())
            }
            Expr::ConcatWs(separator, parts) => format!(
                "concat_ws({separator:?}, {})",
                parts
                    .iter()
                    .map(Expr::output_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Expr::Case(input, _) => format!("case({})", input.output_name()),
            Expr::EpochMillis(inner) => format!("epoch_millis({})", inner.output_name()),
        }
    }

    /// Resolves column names against `schema`.
    pub fn bind(&self, schema: &Schema) -> Result<BoundExpr, String> {
        Ok(match self {
            Expr::Column(name) => {
                let index = schema.index_of(name).ok_or_else(|| {
                    format!("no column `{name}`; the relation has: {}", schema.names())
                })?;
                BoundExpr::Column(index, schema.columns[index].ty)
            }
            Expr::Literal(value) => BoundExpr::Literal(value.clone(), literal_type(value)),
            Expr::Binary(op, left, right) => {
                let (left, right) = (left.bind(schema)?, right.bind(schema)?);
                let ty = arithmetic_type(*op, left.ty(), right.ty())?;
                BoundExpr::Binary(*op, Box::new(left), Box::new(right), ty)
            }
            Expr::Alias(inner, _) => inner.bind(schema)?,
            Expr::ConcatWs(separator, parts) => {
                let parts = parts
                    .iter()
                    .map(|part| {
                        let bound = part.bind(schema)?;
                        match bound.ty() {
                            ColumnType::String => Ok(bound),
                            other => Err(format!(
                                "concat_ws joins strings; `{}` is {other}",
                                part.output_name()
                            )),
                        }
                    })
                    .collect::<Result<_, String>>()?;
                BoundExpr::ConcatWs(separator.as_str().into(), parts)
            }
            Expr::Case(input, pairs) => {
                let ty = pairs
                    .first()
                    .map_or(ColumnType::String, |(_, to)| literal_type(to));
                if let Some((_, odd)) = pairs.iter().find(|(_, to)| literal_type(to) != ty) {
                    return Err(format!(
                        "case results must have one type: {odd} is not {ty}"
                    ));
                }
                BoundExpr::Case(Box::new(input.bind(schema)?), pairs.clone(), ty)
            }
            Expr::EpochMillis(inner) => {
                let bound = inner.bind(schema)?;
                if bound.ty() != ColumnType::Timestamp {
                    return Err(format!(
                        "epoch_millis needs a timestamp; `{}` is {}",
                        inner.output_name(),
                        bound.ty()
                    ));
                }
                BoundExpr::EpochMillis(Box::new(bound))
            }
        })
    }
}

impl Mul for Expr {
    type Output = Expr;
    fn mul(self, rhs: Expr) -> Expr {
        Expr::Binary(BinaryOp::Mul, Box::new(self), Box::new(rhs))
    }
}
impl Add for Expr {
    type Output = Expr;
    fn add(self, rhs: Expr) -> Expr {
        Expr::Binary(BinaryOp::Add, Box::new(self), Box::new(rhs))
    }
}
impl Sub for Expr {
    type Output = Expr;
    fn sub(self, rhs: Expr) -> Expr {
        Expr::Binary(BinaryOp::Sub, Box::new(self), Box::new(rhs))
    }
}

/// An expression with column indices and a result type.
#[derive(Clone, Debug, PartialEq)]
pub enum BoundExpr {
    /// Column at an index.
    Column(usize, ColumnType),
    /// A constant.
    Literal(Value, ColumnType),
    /// Arithmetic.
    Binary(BinaryOp, Box<BoundExpr>, Box<BoundExpr>, ColumnType),
    /// Strings joined with a separator, NULLs skipped.
    ConcatWs(Arc<str>, Vec<BoundExpr>),
    /// Value mapping, with the result type.
    Case(Box<BoundExpr>, Vec<(Value, Value)>, ColumnType),
    /// Timestamp → milliseconds.
    EpochMillis(Box<BoundExpr>),
}

impl BoundExpr {
    /// The result type.
    pub fn ty(&self) -> ColumnType {
        match self {
            BoundExpr::Column(_, ty)
            | BoundExpr::Literal(_, ty)
            | BoundExpr::Binary(.., ty)
            | BoundExpr::Case(.., ty) => *ty,
            BoundExpr::ConcatWs(..) => ColumnType::String,
            BoundExpr::EpochMillis(_) => ColumnType::Int64,
        }
    }

    /// The indices of the columns it reads.
    pub fn columns(&self) -> Vec<usize> {
        let mut columns = Vec::new();
        self.collect_columns(&mut columns);
        columns
    }

    fn collect_columns(&self, columns: &mut Vec<usize>) {
        match self {
            BoundExpr::Column(index, _) => columns.push(*index),
            BoundExpr::Literal(..) => {}
            BoundExpr::Binary(_, left, right, _) => {
                left.collect_columns(columns);
                right.collect_columns(columns);
            }
            BoundExpr::ConcatWs(_, parts) => {
                parts.iter().for_each(|part| part.collect_columns(columns));
            }
            BoundExpr::Case(input, ..) | BoundExpr::EpochMillis(input) => {
                input.collect_columns(columns);
            }
        }
    }

    /// The result column, named `name`.
    pub fn column(&self, name: &str) -> Column {
        Column::new(name, self.ty())
    }

    /// Evaluates on a row; NULL in, NULL out; overflow yields NULL.
    pub fn eval(&self, row: &[Value]) -> Value {
        match self {
            BoundExpr::Column(index, _) => row.get(*index).cloned().unwrap_or_default(),
            BoundExpr::Literal(value, _) => value.clone(),
            BoundExpr::Binary(op, left, right, ty) => {
                arithmetic(*op, &left.eval(row), &right.eval(row), *ty).unwrap_or_default()
            }
            BoundExpr::ConcatWs(separator, parts) => {
                let mut joined = String::new();
                let mut first = true;
                for part in parts {
                    if let Value::Str(text) = part.eval(row) {
                        if !first {
                            joined.push_str(separator);
                        }
                        joined.push_str(&text);
                        first = false;
                    }
                }
                Value::str(&joined)
            }
            BoundExpr::Case(input, pairs, _) => {
                let value = input.eval(row);
                pairs
                    .iter()
                    .find(|(from, _)| *from == value)
                    .map(|(_, to)| to.clone())
                    .unwrap_or_default()
            }
            BoundExpr::EpochMillis(inner) => match inner.eval(row) {
                Value::Timestamp(micros) => Value::Int(micros.div_euclid(1000)),
                _ => Value::Null,
            },
        }
    }
}

fn literal_type(value: &Value) -> ColumnType {
    match value {
        Value::Bool(_) => ColumnType::Bool,
        Value::Int(_) | Value::Null => ColumnType::Int64,
        Value::Float(_) => ColumnType::Float64,
        Value::Decimal(d) => ColumnType::Decimal {
            precision: 38,
            scale: d.scale(),
        },
        Value::Str(_) => ColumnType::String,
        Value::Bytes(_) => ColumnType::Bytes,
        Value::Date(_) => ColumnType::Date,
        Value::Timestamp(_) => ColumnType::Timestamp,
        Value::Json(_) => ColumnType::Json,
    }
}

/// Result type of arithmetic: ints stay ints, decimals stay exact, floats win.
fn arithmetic_type(
    op: BinaryOp,
    left: ColumnType,
    right: ColumnType,
) -> Result<ColumnType, String> {
    use ColumnType::*;
    let scale_of = |ty: ColumnType| match ty {
        Decimal { scale, .. } => Some(scale),
        Int32 | Int64 => Some(0),
        _ => None,
    };
    Ok(match (left, right) {
        (Int32 | Int64, Int32 | Int64) => Int64,
        (Float64, Int32 | Int64 | Float64 | Decimal { .. })
        | (Int32 | Int64 | Decimal { .. }, Float64) => Float64,
        (Decimal { .. }, _) | (_, Decimal { .. }) => {
            let (Some(a), Some(b)) = (scale_of(left), scale_of(right)) else {
                return Err(format!("cannot apply {op:?} to {left} and {right}"));
            };
            let scale = if op == BinaryOp::Mul {
                a.saturating_add(b)
            } else {
                a.max(b)
            };
            Decimal {
                precision: 38,
                scale: scale.min(38),
            }
        }
        _ => return Err(format!("cannot apply {op:?} to {left} and {right}")),
    })
}

fn arithmetic(op: BinaryOp, left: &Value, right: &Value, ty: ColumnType) -> Option<Value> {
    match ty {
        ColumnType::Int64 => {
            let (a, b) = (as_int(left)?, as_int(right)?);
            Some(Value::Int(match op {
                BinaryOp::Add => a.checked_add(b)?,
                BinaryOp::Sub => a.checked_sub(b)?,
                BinaryOp::Mul => a.checked_mul(b)?,
            }))
        }
        ColumnType::Float64 => {
            let (a, b) = (as_f64(left)?, as_f64(right)?);
            Some(Value::Float(Float(match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
            })))
        }
        ColumnType::Decimal { scale, .. } => {
            let (a, b) = (as_decimal(left)?, as_decimal(right)?);
            let unscaled = match op {
                BinaryOp::Mul => a.unscaled.checked_mul(b.unscaled)?,
                BinaryOp::Add => a
                    .rescale(scale)?
                    .unscaled
                    .checked_add(b.rescale(scale)?.unscaled)?,
                BinaryOp::Sub => a
                    .rescale(scale)?
                    .unscaled
                    .checked_sub(b.rescale(scale)?.unscaled)?,
            };
            let result_scale = if op == BinaryOp::Mul {
                u32::from(a.scale()) + u32::from(b.scale())
            } else {
                u32::from(scale)
            };
            Decimal::from_scaled(unscaled, result_scale, scale).map(Value::Decimal)
        }
        _ => None,
    }
}

fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(f.0),
        Value::Decimal(d) => Some(d.to_f64()),
        _ => None,
    }
}

fn as_decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::Int(i) => Decimal::new(i128::from(*i), 0),
        Value::Decimal(d) => Some(*d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revenue_is_exact() {
        let schema = Schema::new(vec![
            Column::new("quantity", ColumnType::Int32),
            Column::new(
                "price",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
        ]);
        let bound = (col("quantity") * col("price")).bind(&schema).unwrap();
        assert_eq!(
            bound.ty(),
            ColumnType::Decimal {
                precision: 38,
                scale: 2
            }
        );
        let row = [
            Value::Int(3),
            Value::Decimal(Decimal::new(1999, 2).unwrap()),
        ];
        assert_eq!(
            bound.eval(&row),
            Value::Decimal(Decimal::new(5997, 2).unwrap())
        );
        assert_eq!(bound.eval(&[Value::Null, Value::Null]), Value::Null);
        assert!(col("nope")
            .bind(&schema)
            .unwrap_err()
            .contains("quantity, price"));
    }

    #[test]
    fn strings_case_and_millis() {
        let schema = Schema::new(vec![
            Column::new("first", ColumnType::String),
            Column::new("last", ColumnType::String),
            Column::new("op", ColumnType::String),
            Column::new("at", ColumnType::Timestamp),
        ]);
        let name = concat_ws(" ", [col("first"), col("last")])
            .bind(&schema)
            .unwrap();
        let row = |first: Value, last: Value| [first, last, Value::str("u"), Value::Timestamp(-1)];
        assert_eq!(
            name.eval(&row(Value::str("Ada"), Value::str("L"))),
            Value::str("Ada L")
        );
        assert_eq!(
            name.eval(&row(Value::Null, Value::str("L"))),
            Value::str("L")
        );
        assert_eq!(
            name.eval(&row(Value::str(""), Value::str("L"))),
            Value::str(" L")
        );
        assert_eq!(name.eval(&row(Value::Null, Value::Null)), Value::str(""));
        let op = case(col("op"), [("c", "INSERT"), ("u", "UPDATE")])
            .bind(&schema)
            .unwrap();
        assert_eq!(op.ty(), ColumnType::String);
        assert_eq!(
            op.eval(&row(Value::Null, Value::Null)),
            Value::str("UPDATE")
        );
        let millis = epoch_millis(col("at")).bind(&schema).unwrap();
        assert_eq!(millis.eval(&row(Value::Null, Value::Null)), Value::Int(-1));
        assert!(concat_ws(",", [col("at")]).bind(&schema).is_err());
        assert!(epoch_millis(col("op")).bind(&schema).is_err());
    }
}
