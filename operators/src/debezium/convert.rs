//! JSON field → typed [`Value`] for a declared column, honouring Debezium logical types
//! (`Decimal`, `VariableScaleDecimal`, `Date`, `Timestamp`, `MicroTimestamp`, `NanoTimestamp`,
//! `ZonedTimestamp`, `Json`) and the three `decimal.handling.mode`s (precise, double, string).

use std::sync::Arc;

use base64::Engine;
use serde_json::Value as Json;

use super::connect::FieldSchema;
use crate::schema::ColumnType;
use crate::time;
use crate::value::{Decimal, Float, Value};

const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
const VARIABLE_DECIMAL: &str = "io.debezium.data.VariableScaleDecimal";
const DATE: &str = "io.debezium.time.Date";
const CONNECT_DATE: &str = "org.apache.kafka.connect.data.Date";
const TIMESTAMP_MS: &str = "io.debezium.time.Timestamp";
const CONNECT_TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";
const TIMESTAMP_US: &str = "io.debezium.time.MicroTimestamp";
const TIMESTAMP_NS: &str = "io.debezium.time.NanoTimestamp";
const ZONED_TIMESTAMP: &str = "io.debezium.time.ZonedTimestamp";

type Result<T> = std::result::Result<T, String>;

/// Converts one JSON field to the column's type; `Err` says why it does not fit.
pub fn to_value(json: &Json, ty: ColumnType, field: Option<&FieldSchema>) -> Result<Value> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    // A logical type from the embedded schema fixes the wire encoding.
    if let Some(logical) = field.and_then(|f| f.logical.as_deref()) {
        if let Some(value) = from_logical(json, logical, field.and_then(|f| f.scale))? {
            return fit(value, ty);
        }
    }
    match ty {
        ColumnType::Bool => json
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| mismatch(json)),
        ColumnType::Int32 | ColumnType::Int64 => json_int(json).map(Value::Int),
        ColumnType::Float64 => match json {
            Json::Number(n) => n
                .as_f64()
                .map(|f| Value::Float(Float(f)))
                .ok_or_else(|| mismatch(json)),
            Json::String(s) => special_float(s).map(|f| Value::Float(Float(f))),
            _ => Err(mismatch(json)),
        },
        ColumnType::Decimal { precision, scale } => {
            let decimal = match json {
                Json::Number(n) => Decimal::parse(&n.to_string()).ok_or_else(|| mismatch(json))?,
                Json::String(s) => match Decimal::parse(s) {
                    Some(d) => d,
                    // precise mode without a schema: base64 unscaled bytes at the column's scale
                    None => Decimal::new(unscaled_from_base64(s)?, scale),
                },
                Json::Object(_) => variable_scale_decimal(json)?,
                _ => return Err(mismatch(json)),
            };
            fit_decimal(decimal, precision, scale).map(Value::Decimal)
        }
        ColumnType::String => match json {
            Json::String(s) => Ok(Value::Str(Arc::from(s.as_str()))),
            _ => Err(mismatch(json)),
        },
        ColumnType::Bytes => match json {
            Json::String(s) => base64_bytes(s).map(|b| Value::Bytes(b.into())),
            _ => Err(mismatch(json)),
        },
        ColumnType::Date => match json {
            Json::Number(_) => {
                let days = json_int(json)?;
                i32::try_from(days)
                    .map(Value::Date)
                    .map_err(|_| "date out of range".to_owned())
            }
            Json::String(s) => time::parse_date(s)
                .map(Value::Date)
                .ok_or_else(|| format!("`{s}` is not a YYYY-MM-DD date")),
            _ => Err(mismatch(json)),
        },
        ColumnType::Timestamp | ColumnType::TimestampTz => match json {
            // Without a schema an integer is read as Debezium's default MicroTimestamp.
            Json::Number(_) => json_int(json).map(Value::Timestamp),
            Json::String(s) => time::parse_timestamp_micros(s)
                .map(Value::Timestamp)
                .ok_or_else(|| format!("`{s}` is not an ISO-8601 timestamp")),
            _ => Err(mismatch(json)),
        },
        ColumnType::Json => match json {
            Json::String(s) if serde_json::from_str::<Json>(s).is_ok() => {
                Ok(Value::Json(Arc::from(s.as_str())))
            }
            Json::String(_) => Err("string is not a JSON document".to_owned()),
            other => Ok(Value::Json(Arc::from(other.to_string().as_str()))),
        },
    }
}

/// Decodes a value by its logical type; `Ok(None)` for logical types with no special encoding.
fn from_logical(json: &Json, logical: &str, scale: Option<u8>) -> Result<Option<Value>> {
    Ok(Some(match logical {
        DECIMAL => match json {
            Json::String(s) => match (unscaled_from_base64(s), scale) {
                (Ok(unscaled), Some(scale)) => Value::Decimal(Decimal::new(unscaled, scale)),
                (Ok(_), None) => return Err("Decimal schema lacks its `scale` parameter".into()),
                // decimal.handling.mode=string keeps the logical name on some connectors
                (Err(_), _) => Value::Decimal(Decimal::parse(s).ok_or_else(|| mismatch(json))?),
            },
            _ => return Ok(None),
        },
        VARIABLE_DECIMAL => Value::Decimal(variable_scale_decimal(json)?),
        DATE | CONNECT_DATE => {
            Value::Date(i32::try_from(json_int(json)?).map_err(|_| "date out of range".to_owned())?)
        }
        TIMESTAMP_MS | CONNECT_TIMESTAMP => Value::Timestamp(
            json_int(json)?
                .checked_mul(1000)
                .ok_or_else(|| "timestamp out of range".to_owned())?,
        ),
        TIMESTAMP_US => Value::Timestamp(json_int(json)?),
        TIMESTAMP_NS => Value::Timestamp(json_int(json)?.div_euclid(1000)),
        ZONED_TIMESTAMP => match json {
            Json::String(s) => Value::Timestamp(
                time::parse_timestamp_micros(s)
                    .ok_or_else(|| format!("`{s}` is not an ISO-8601 timestamp"))?,
            ),
            _ => return Err(mismatch(json)),
        },
        _ => return Ok(None),
    }))
}

/// Converts an already-decoded value to the declared column type.
fn fit(value: Value, ty: ColumnType) -> Result<Value> {
    match (value, ty) {
        (Value::Decimal(d), ColumnType::Decimal { precision, scale }) => {
            fit_decimal(d, precision, scale).map(Value::Decimal)
        }
        (Value::Decimal(d), ColumnType::Float64) => Ok(Value::Float(Float(d.to_f64()))),
        (Value::Decimal(d), ColumnType::String) => {
            Ok(Value::Str(Arc::from(d.to_string().as_str())))
        }
        (Value::Date(d), ColumnType::Date) => Ok(Value::Date(d)),
        (Value::Date(d), ColumnType::Timestamp | ColumnType::TimestampTz) => {
            Ok(Value::Timestamp(i64::from(d) * 86_400_000_000))
        }
        (Value::Timestamp(t), ColumnType::Timestamp | ColumnType::TimestampTz) => {
            Ok(Value::Timestamp(t))
        }
        (Value::Timestamp(t), ColumnType::Date) => Ok(Value::Date(
            i32::try_from(t.div_euclid(86_400_000_000)).map_err(|_| "date out of range")?,
        )),
        (value, ty) => Err(format!("a {} value does not fit", kind_name(&value, ty))),
    }
}

fn kind_name(value: &Value, ty: ColumnType) -> String {
    let kind = match value {
        Value::Decimal(_) => "decimal",
        Value::Date(_) => "date",
        Value::Timestamp(_) => "timestamp",
        _ => "logical",
    };
    format!("{kind} value for a {ty} column:")
}

/// Rescales to the column's scale (rounding half away from zero) and checks the precision.
fn fit_decimal(decimal: Decimal, precision: u8, scale: u8) -> Result<Decimal> {
    let fitted = decimal
        .round_to(scale)
        .ok_or_else(|| format!("{decimal} does not fit decimal({precision},{scale})"))?;
    let limit = Decimal::pow10(u32::from(precision)).unwrap_or(i128::MAX);
    if fitted.unscaled.abs() >= limit {
        return Err(format!("{decimal} exceeds decimal({precision},{scale})"));
    }
    Ok(fitted)
}

fn json_int(json: &Json) -> Result<i64> {
    match json {
        Json::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{n} is not a 64-bit integer")),
        _ => Err(mismatch(json)),
    }
}

fn special_float(s: &str) -> Result<f64> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        other => other
            .parse()
            .map_err(|_| format!("`{other}` is not a number")),
    }
}

fn base64_bytes(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| format!("`{s}` is neither a number nor base64"))
}

/// Big-endian two's-complement bytes (Connect's Decimal encoding) → i128.
fn unscaled_from_base64(s: &str) -> Result<i128> {
    let bytes = base64_bytes(s)?;
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!("decimal of {} bytes is out of range", bytes.len()));
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut wide = [fill; 16];
    wide[16 - bytes.len()..].copy_from_slice(&bytes);
    Ok(i128::from_be_bytes(wide))
}

/// `{"scale": 2, "value": "<base64>"}`.
fn variable_scale_decimal(json: &Json) -> Result<Decimal> {
    let scale = json
        .get("scale")
        .and_then(Json::as_u64)
        .and_then(|s| u8::try_from(s).ok())
        .ok_or_else(|| "VariableScaleDecimal lacks `scale`".to_owned())?;
    let value = json
        .get("value")
        .and_then(Json::as_str)
        .ok_or_else(|| "VariableScaleDecimal lacks `value`".to_owned())?;
    Ok(Decimal::new(unscaled_from_base64(value)?, scale))
}

fn mismatch(json: &Json) -> String {
    let kind = match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    };
    format!("got {kind}")
}
