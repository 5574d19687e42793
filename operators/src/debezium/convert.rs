//! One JSON field (raw text) → typed [`Value`] for a declared column, honouring Debezium logical
//! types (`Decimal`, `VariableScaleDecimal`, `Date`, `Timestamp`, `MicroTimestamp`,
//! `NanoTimestamp`, `ZonedTimestamp`) and the three `decimal.handling.mode`s. Numbers are read
//! from their text, so decimals are exact.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;

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

/// A JSON value seen from its raw text, without building a tree.
enum Json<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    Str(Cow<'a, str>),
    Composite(&'a str),
}

fn classify(text: &str) -> Result<Json<'_>> {
    Ok(match text.as_bytes().first() {
        Some(b'n') => Json::Null,
        Some(b't') => Json::Bool(true),
        Some(b'f') => Json::Bool(false),
        Some(b'"') if !text.contains('\\') => Json::Str(Cow::Borrowed(&text[1..text.len() - 1])),
        Some(b'"') => Json::Str(Cow::Owned(
            serde_json::from_str(text).map_err(|e| e.to_string())?,
        )),
        Some(b'{' | b'[') => Json::Composite(text),
        Some(_) => Json::Number(text),
        None => return Err("empty value".to_owned()),
    })
}

/// Converts one JSON field to the column's type; `Err` says why it does not fit.
pub fn to_value(text: &str, ty: ColumnType, field: Option<&FieldSchema>) -> Result<Value> {
    let json = classify(text)?;
    if let Json::Null = json {
        return Ok(Value::Null);
    }
    // A logical type from the embedded schema fixes the wire encoding.
    if let Some(logical) = field.and_then(|f| f.logical.as_deref()) {
        if let Some(value) = from_logical(&json, logical, field.and_then(|f| f.scale))? {
            return fit(value, ty);
        }
    }
    match ty {
        ColumnType::Bool => match json {
            Json::Bool(b) => Ok(Value::Bool(b)),
            other => Err(mismatch(&other)),
        },
        ColumnType::Int32 | ColumnType::Int64 => int(&json).map(Value::Int),
        ColumnType::Float64 => match &json {
            Json::Number(n) => n
                .parse()
                .map(|f| Value::Float(Float(f)))
                .map_err(|_| mismatch(&json)),
            Json::Str(s) => special_float(s).map(|f| Value::Float(Float(f))),
            other => Err(mismatch(other)),
        },
        ColumnType::Decimal { precision, scale } => {
            let decimal = match &json {
                Json::Number(n) => Decimal::parse(n).ok_or_else(|| mismatch(&json))?,
                Json::Str(s) => match Decimal::parse(s) {
                    Some(d) => d,
                    // precise mode without a schema: base64 unscaled bytes at the column's scale
                    None => with_scale(unscaled_from_base64(s)?, scale)?,
                },
                Json::Composite(text) => variable_scale_decimal(text)?,
                other => return Err(mismatch(other)),
            };
            fit_decimal(decimal, precision, scale).map(Value::Decimal)
        }
        ColumnType::String => match json {
            Json::Str(s) => Ok(Value::Str(intern(&s))),
            other => Err(mismatch(&other)),
        },
        ColumnType::Bytes => match json {
            Json::Str(s) => base64_bytes(&s).map(|b| Value::Bytes(b.into())),
            other => Err(mismatch(&other)),
        },
        ColumnType::Date => match json {
            Json::Number(_) => {
                let days = int(&json)?;
                i32::try_from(days)
                    .map(Value::Date)
                    .map_err(|_| "date out of range".to_owned())
            }
            Json::Str(s) => time::parse_date(&s)
                .map(Value::Date)
                .ok_or_else(|| format!("`{s}` is not a YYYY-MM-DD date")),
            other => Err(mismatch(&other)),
        },
        ColumnType::Timestamp | ColumnType::TimestampTz => match json {
            // Without a schema an integer is read as Debezium's default MicroTimestamp.
            Json::Number(_) => int(&json).map(Value::Timestamp),
            Json::Str(s) => time::parse_timestamp_micros(&s)
                .map(Value::Timestamp)
                .ok_or_else(|| format!("`{s}` is not an ISO-8601 timestamp")),
            other => Err(mismatch(&other)),
        },
        ColumnType::Json => match json {
            Json::Str(s) if serde_json::from_str::<serde::de::IgnoredAny>(&s).is_ok() => {
                Ok(Value::Json(Arc::from(s.as_ref())))
            }
            Json::Str(_) => Err("string is not a JSON document".to_owned()),
            _ => Ok(Value::Json(Arc::from(text))),
        },
    }
}

/// Strings up to this length are shared between rows (statuses, codes, country names…).
const INTERN_MAX_LEN: usize = 32;
/// Most distinct strings kept per thread; beyond that the table starts over.
const INTERN_MAX_ENTRIES: usize = 4096;

thread_local! {
    static INTERNED: std::cell::RefCell<rustc_hash::FxHashMap<Box<str>, Arc<str>>> =
        std::cell::RefCell::default();
}

/// A shared `Arc<str>` for short, repeated strings (one allocation per distinct value per
/// worker instead of one per row); longer strings get their own.
fn intern(s: &str) -> Arc<str> {
    if s.len() > INTERN_MAX_LEN {
        return Arc::from(s);
    }
    INTERNED.with(|table| {
        let mut table = table.borrow_mut();
        if let Some(shared) = table.get(s) {
            return Arc::clone(shared);
        }
        if table.len() >= INTERN_MAX_ENTRIES {
            table.clear();
        }
        let shared: Arc<str> = Arc::from(s);
        table.insert(s.into(), Arc::clone(&shared));
        shared
    })
}

/// Decodes a value by its logical type; `Ok(None)` for logical types with no special encoding.
fn from_logical(json: &Json<'_>, logical: &str, scale: Option<u8>) -> Result<Option<Value>> {
    Ok(Some(match logical {
        DECIMAL => match json {
            Json::Str(s) => match (unscaled_from_base64(s), scale) {
                (Ok(unscaled), Some(scale)) => Value::Decimal(with_scale(unscaled, scale)?),
                (Ok(_), None) => return Err("Decimal schema lacks its `scale` parameter".into()),
                // decimal.handling.mode=string keeps the logical name on some connectors
                (Err(_), _) => Value::Decimal(Decimal::parse(s).ok_or_else(|| mismatch(json))?),
            },
            _ => return Ok(None),
        },
        VARIABLE_DECIMAL => match json {
            Json::Composite(text) => Value::Decimal(variable_scale_decimal(text)?),
            other => return Err(mismatch(other)),
        },
        DATE | CONNECT_DATE => {
            Value::Date(i32::try_from(int(json)?).map_err(|_| "date out of range".to_owned())?)
        }
        TIMESTAMP_MS | CONNECT_TIMESTAMP => Value::Timestamp(
            int(json)?
                .checked_mul(1000)
                .ok_or_else(|| "timestamp out of range".to_owned())?,
        ),
        TIMESTAMP_US => Value::Timestamp(int(json)?),
        TIMESTAMP_NS => Value::Timestamp(int(json)?.div_euclid(1000)),
        ZONED_TIMESTAMP => match json {
            Json::Str(s) => Value::Timestamp(
                time::parse_timestamp_micros(s)
                    .ok_or_else(|| format!("`{s}` is not an ISO-8601 timestamp"))?,
            ),
            other => return Err(mismatch(other)),
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
        (value, ty) => Err(format!(
            "a {} value does not fit a {ty} column",
            kind_name(&value)
        )),
    }
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Decimal(_) => "decimal",
        Value::Date(_) => "date",
        Value::Timestamp(_) => "timestamp",
        _ => "logical",
    }
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

fn int(json: &Json<'_>) -> Result<i64> {
    match json {
        Json::Number(n) => n
            .parse()
            .map_err(|_| format!("{n} is not a 64-bit integer")),
        other => Err(mismatch(other)),
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
    let mut wide = [0u8; 16];
    let mut buffer = [0u8; 24];
    let len = base64::engine::general_purpose::STANDARD
        .decode_slice(s, &mut buffer)
        .map_err(|_| format!("`{s}` is neither a number nor base64"))?;
    if len == 0 || len > 16 {
        return Err(format!("decimal of {len} bytes is out of range"));
    }
    if buffer[0] & 0x80 != 0 {
        wide = [0xff; 16];
    }
    wide[16 - len..].copy_from_slice(&buffer[..len]);
    Ok(i128::from_be_bytes(wide))
}

/// `{"scale": 2, "value": "<base64>"}`.
fn variable_scale_decimal(text: &str) -> Result<Decimal> {
    #[derive(Deserialize)]
    struct VariableScale<'a> {
        scale: u8,
        #[serde(borrow)]
        value: Cow<'a, str>,
    }
    let parsed: VariableScale<'_> = serde_json::from_str(text)
        .map_err(|_| "VariableScaleDecimal needs `scale` and `value`".to_owned())?;
    with_scale(unscaled_from_base64(&parsed.value)?, parsed.scale)
}

fn with_scale(unscaled: i128, scale: u8) -> Result<Decimal> {
    Decimal::new(unscaled, scale).ok_or_else(|| {
        format!(
            "a decimal with {scale} digits after the point; at most {} are kept",
            Decimal::MAX_SCALE
        )
    })
}

fn mismatch(json: &Json<'_>) -> String {
    let kind = match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::Str(_) => "a string",
        Json::Composite(_) => "an object or array",
    };
    format!("got {kind}")
}
