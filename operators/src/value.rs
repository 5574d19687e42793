//! `Value`: one typed cell of a row, cheap to clone, compare and hash.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time;

/// A single column value. Strings and bytes are reference counted so rows clone cheaply.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum Value {
    /// SQL NULL; sorts first.
    #[default]
    Null,
    /// Boolean.
    Bool(bool),
    /// Any integer column (int16/int32/int64).
    Int(i64),
    /// 64-bit float with a total order (NaN sorts last).
    Float(Float),
    /// Exact decimal.
    Decimal(Decimal),
    /// UTF-8 text.
    Str(Arc<str>),
    /// Raw bytes.
    Bytes(Arc<[u8]>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// A JSON document kept as its text.
    Json(Arc<str>),
}

impl Value {
    /// Builds a string value.
    pub fn str(s: &str) -> Self {
        Value::Str(Arc::from(s))
    }

    /// True for values that hold a reference count (strings, bytes, JSON): cloning one is an
    /// atomic operation, cloning any other is a copy.
    pub fn is_counted(&self) -> bool {
        matches!(self, Value::Str(_) | Value::Bytes(_) | Value::Json(_))
    }

    /// True for `Value::Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Writes the value as a JSON literal: decimals as exact numbers, dates and timestamps as
    /// ISO-8601 strings, bytes as base64, JSON documents inline.
    pub fn write_json(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) if f.0.is_finite() => {
                let _ = write!(out, "{}", f.0);
            }
            // Not JSON numbers: written as Debezium writes them (and the decoder reads them).
            Value::Float(f) if f.0.is_nan() => out.push_str("\"NaN\""),
            Value::Float(f) if f.0 > 0.0 => out.push_str("\"Infinity\""),
            Value::Float(_) => out.push_str("\"-Infinity\""),
            Value::Decimal(d) => {
                let _ = write!(out, "{d}");
            }
            Value::Str(s) => write_json_string(s, out),
            Value::Bytes(b) => {
                use base64::Engine;
                write_json_string(&base64::engine::general_purpose::STANDARD.encode(b), out)
            }
            Value::Date(_) | Value::Timestamp(_) => write_json_string(&self.to_string(), out),
            Value::Json(j) => out.push_str(j),
        }
    }
}

/// Appends `s` as a quoted, escaped JSON string.
pub fn write_json_string(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    // Runs of bytes that need no escape are copied whole (the bytes that do are all ASCII, so
    // a run never ends inside a multi-byte character).
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", x.0),
            Value::Decimal(d) => write!(f, "{d}"),
            Value::Str(s) => f.write_str(s),
            Value::Bytes(b) => {
                use base64::Engine;
                f.write_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            Value::Date(d) => f.write_str(&time::format_date(*d)),
            Value::Timestamp(us) => f.write_str(&time::format_timestamp_micros(*us)),
            Value::Json(j) => f.write_str(j),
        }
    }
}

/// An `f64` with a total order and bitwise hashing, so it can live in keys and collections.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, Default)]
pub struct Float(pub f64);

impl PartialEq for Float {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Float {}
impl PartialOrd for Float {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Float {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl Hash for Float {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

/// An exact decimal: `unscaled × 10^-scale`, at most [`Decimal::MAX_SCALE`] digits after the
/// point (an `i128` holds 38 digits). Values of one column share the column's scale, so
/// equality and order are those of `(unscaled, scale)`. Packed to 8-byte alignment, and its
/// scale leaves most values of its word unused, which [`Value`] keeps its variant in: a value
/// takes 24 bytes instead of 48.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(C, packed(8))]
pub struct Decimal {
    /// The unscaled integer.
    pub unscaled: i128,
    scale: Scale,
}

/// Digits after a decimal's point, 0 to 38: an enum so that the other values are free. It takes
/// a whole word, the one [`Value`] keeps its variant in: a value then moves as three words,
/// whereas a one-byte variant left seven bytes to move in overlapping pieces, which stalled
/// every value moved through the stack (18 % of an op-counts worker's time, building rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
#[repr(u64)]
#[rustfmt::skip]
enum Scale {
    S0, S1, S2, S3, S4, S5, S6, S7, S8, S9, S10, S11, S12, S13, S14, S15, S16, S17, S18, S19,
    S20, S21, S22, S23, S24, S25, S26, S27, S28, S29, S30, S31, S32, S33, S34, S35, S36, S37, S38,
}

#[rustfmt::skip]
const SCALES: [Scale; Decimal::MAX_SCALE as usize + 1] = {
    use Scale::*;
    [
        S0, S1, S2, S3, S4, S5, S6, S7, S8, S9, S10, S11, S12, S13, S14, S15, S16, S17, S18, S19,
        S20, S21, S22, S23, S24, S25, S26, S27, S28, S29, S30, S31, S32, S33, S34, S35, S36, S37, S38,
    ]
};

impl From<Scale> for u8 {
    fn from(scale: Scale) -> u8 {
        scale as u8
    }
}

impl TryFrom<u8> for Scale {
    type Error = String;
    fn try_from(scale: u8) -> Result<Scale, String> {
        SCALES
            .get(usize::from(scale))
            .copied()
            .ok_or_else(|| format!("decimal scale {scale} is above {}", Decimal::MAX_SCALE))
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.scale == other.scale {
            return { self.unscaled }.cmp(&{ other.unscaled });
        }
        let scale = self.scale().max(other.scale());
        match (self.rescale(scale), other.rescale(scale)) {
            (Some(a), Some(b)) => { a.unscaled }.cmp(&{ b.unscaled }),
            _ => self.to_f64().total_cmp(&other.to_f64()),
        }
    }
}

const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

impl Decimal {
    /// The most digits after the point.
    pub const MAX_SCALE: u8 = 38;

    /// Builds a decimal from its unscaled integer and scale; `None` when the scale is above
    /// [`Decimal::MAX_SCALE`].
    pub fn new(unscaled: i128, scale: u8) -> Option<Self> {
        Some(Decimal {
            unscaled,
            scale: Scale::try_from(scale).ok()?,
        })
    }

    /// `unscaled × 10^-scale` at `to` digits after the point, for a scale that may be above
    /// [`Decimal::MAX_SCALE`] (a product's); `None` on overflow or when digits would be lost.
    pub fn from_scaled(unscaled: i128, scale: u32, to: u8) -> Option<Self> {
        let to_wide = u32::from(to);
        let unscaled = if to_wide >= scale {
            unscaled.checked_mul(Self::pow10(to_wide - scale)?)?
        } else {
            let factor = Self::pow10(scale - to_wide)?;
            (unscaled % factor == 0).then_some(unscaled / factor)?
        };
        Decimal::new(unscaled, to)
    }

    /// Digits after the point.
    pub fn scale(self) -> u8 {
        self.scale.into()
    }

    /// `10^exp` as an i128, if it fits.
    pub fn pow10(exp: u32) -> Option<i128> {
        POW10.get(exp as usize).copied()
    }

    /// The same number at another scale; `None` on overflow or when digits would be lost.
    pub fn rescale(self, scale: u8) -> Option<Decimal> {
        Self::from_scaled(self.unscaled, u32::from(self.scale()), scale)
    }

    /// The same number at a smaller scale, rounded half away from zero.
    pub fn round_to(self, scale: u8) -> Option<Decimal> {
        if scale >= self.scale() {
            return self.rescale(scale);
        }
        let factor = Self::pow10(u32::from(self.scale() - scale))?;
        let quotient = self.unscaled / factor;
        let remainder = self.unscaled % factor;
        let rounded = if remainder.abs() * 2 >= factor {
            quotient + self.unscaled.signum()
        } else {
            quotient
        };
        Decimal::new(rounded, scale)
    }

    /// Parses a plain decimal literal such as `-12.50` or `3`, or an exponent form `1.5e2`.
    pub fn parse(text: &str) -> Option<Decimal> {
        let text = text.trim();
        // Every literal starts so; anything else (base64, say) is turned away at once.
        if !matches!(
            text.as_bytes().first(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.')
        ) {
            return None;
        }
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
            None => (text, 0),
        };
        let (negative, digits) = match mantissa.as_bytes().first()? {
            b'-' => (true, &mantissa[1..]),
            b'+' => (false, &mantissa[1..]),
            _ => (false, mantissa),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let mut unscaled: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            if !b.is_ascii_digit() {
                return None;
            }
            unscaled = unscaled
                .checked_mul(10)?
                .checked_add(i128::from(b - b'0'))?;
        }
        if negative {
            unscaled = -unscaled;
        }
        let scale = frac_part.len() as i32 - exponent;
        if scale >= 0 {
            Decimal::new(unscaled, u8::try_from(scale).ok()?)
        } else {
            let factor = Self::pow10(u32::try_from(-scale).ok()?)?;
            Decimal::new(unscaled.checked_mul(factor)?, 0)
        }
    }

    /// Lossy conversion to f64.
    pub fn to_f64(self) -> f64 {
        self.unscaled as f64 / 10f64.powi(i32::from(self.scale()))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.unscaled.unsigned_abs().to_string();
        let scale = usize::from(self.scale());
        if self.unscaled < 0 {
            f.write_str("-")?;
        }
        if scale == 0 {
            return f.write_str(&digits);
        }
        if digits.len() <= scale {
            write!(f, "0.{}{}", "0".repeat(scale - digits.len()), digits)
        } else {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{int}.{frac}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_parse_and_display_round_trip() {
        for text in ["0", "12.50", "-0.05", "123456789012345678901234.5", "-7"] {
            let d = Decimal::parse(text).unwrap();
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(Decimal::parse("1.5e2").unwrap().to_string(), "150");
        assert_eq!(Decimal::parse("1.25e-1").unwrap().to_string(), "0.125");
        assert_eq!(Decimal::parse(" .5 ").unwrap().to_string(), "0.5");
        assert_eq!(Decimal::parse("+3.").unwrap().to_string(), "3");
        assert!(Decimal::parse("AIeb").is_none(), "base64");
        assert!(Decimal::parse("1.2.3").is_none());
        assert!(Decimal::parse("abc").is_none());
        assert!(Decimal::parse("").is_none());
    }

    #[test]
    fn decimal_rescale_and_round() {
        let d = Decimal::parse("19.99").unwrap();
        assert_eq!(d.rescale(4).unwrap().to_string(), "19.9900");
        assert!(d.rescale(1).is_none());
        assert_eq!(d.round_to(1).unwrap().to_string(), "20.0");
        assert_eq!(
            Decimal::parse("-2.25")
                .unwrap()
                .round_to(1)
                .unwrap()
                .to_string(),
            "-2.3"
        );
        assert_eq!(
            Decimal::parse("1.0")
                .unwrap()
                .cmp(&Decimal::parse("1").unwrap()),
            Ordering::Equal
        );
    }

    #[test]
    fn a_value_takes_24_bytes_and_a_decimal_keeps_38_digits_after_the_point() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
        assert_eq!(Decimal::new(1, 38).unwrap().scale(), 38);
        assert!(Decimal::new(1, 39).is_none());
        let tiny = Decimal::parse(&format!("0.{}1", "0".repeat(37))).unwrap();
        assert_eq!(tiny.scale(), 38);
        assert!(Decimal::parse(&format!("0.{}1", "0".repeat(38))).is_none());
        // A product's scale may pass 38 on the way to the result's.
        let product = Decimal::from_scaled(25 * 10i128.pow(36), 40, 4).unwrap();
        assert_eq!(product.to_string(), "0.0025");
        assert!(Decimal::from_scaled(1, 40, 2).is_none());
        let d = Decimal::new(-1999, 2).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"unscaled":-1999,"scale":2}"#);
        assert_eq!(serde_json::from_str::<Decimal>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Decimal>(r#"{"unscaled":1,"scale":39}"#).is_err());
    }

    #[test]
    fn json_strings_escape_what_json_needs_and_keep_the_rest() {
        let text = "plain ünïcode ✓ \"quoted\" back\\slash\nline\ttab\r\u{1}end";
        let mut out = String::new();
        write_json_string(text, &mut out);
        assert_eq!(
            out,
            "\"plain ünïcode ✓ \\\"quoted\\\" back\\\\slash\\nline\\ttab\\r\\u0001end\""
        );
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
    }

    #[test]
    fn json_rendering_is_valid_json() {
        let mut out = String::new();
        for v in [
            Value::Null,
            Value::Int(-3),
            Value::Decimal(Decimal::new(1050, 2).unwrap()),
            Value::str("a\"b\n"),
            Value::Date(19_000),
            Value::Timestamp(1_700_000_000_123_456),
            Value::Float(Float(f64::NAN)),
        ] {
            out.clear();
            v.write_json(&mut out);
            serde_json::from_str::<serde_json::Value>(&out).unwrap();
        }
    }
}
