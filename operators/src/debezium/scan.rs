//! The decoder's fast path: a validating single-pass JSON scanner that walks an object's fields
//! and hands out their raw text (building nothing but, given a guessed table, the `after` row,
//! so that it is walked once). It only takes the common road — keys and
//! needed strings without escapes, no duplicate fields, shallow nesting — and answers `None`
//! for anything else (including malformed JSON), so the caller falls back to `serde_json`, which
//! stays the reference for what is accepted and words every error. Whatever it accepts,
//! `serde_json` accepts too, with the same meaning.

use std::borrow::Cow;

use super::envelope::{Record, Source, Transaction};
use super::row::RowSeed;
use crate::schema::TableId;

/// Deepest nesting the scanner walks; deeper documents go to `serde_json` (limit 128).
const MAX_DEPTH: usize = 64;

/// A cursor over JSON text.
pub(super) struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        Scanner { text, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        let bytes = self.text.as_bytes();
        while matches!(bytes.get(self.at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Only whitespace is left.
    pub fn end(mut self) -> Option<()> {
        self.skip_whitespace();
        (self.at == self.text.len()).then_some(())
    }

    /// Walks an object, calling `field(name, self)` for every field; `field` must consume the
    /// value. Names with escapes are not handled.
    pub fn object(
        &mut self,
        mut field: impl FnMut(&'a str, &mut Self) -> Option<()>,
    ) -> Option<()> {
        self.skip_whitespace();
        self.eat(b'{')?;
        self.skip_whitespace();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let name = self.plain_string()?;
            self.skip_whitespace();
            self.eat(b':')?;
            self.skip_whitespace();
            field(name, self)?;
            self.skip_whitespace();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.skip_whitespace();
                }
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Skips one value, checking it is valid JSON, and returns its text.
    pub fn value(&mut self) -> Option<&'a str> {
        self.skip_whitespace();
        let start = self.at;
        self.skip_value(0)?;
        Some(&self.text[start..self.at])
    }

    /// A value's text, `None` inside when it is `null`.
    fn nullable(&mut self) -> Option<Option<&'a str>> {
        self.value().map(|text| (text != "null").then_some(text))
    }

    /// A string without escapes (its contents) or `null`.
    fn nullable_plain_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        self.plain_string().map(|s| Some(Cow::Borrowed(s)))
    }

    /// An integer that fits `i64`, or `null`.
    fn nullable_i64(&mut self) -> Option<Option<i64>> {
        let text = self.nullable()?;
        match text {
            None => Some(None),
            Some(text) if text.starts_with("-0") => None,
            Some(text) => text.parse().ok().map(Some),
        }
    }

    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => self.object(|_, scanner| {
                scanner.skip_whitespace();
                scanner.skip_value(depth + 1)
            }),
            b'[' => {
                self.at += 1;
                self.skip_whitespace();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip_whitespace();
                    self.skip_value(depth + 1)?;
                    self.skip_whitespace();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.text[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn skip_number(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        let digits = |at: &mut usize| {
            let start = *at;
            *at = digits_end(bytes, start);
            *at > start
        };
        let mut at = self.at;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        match bytes.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => {
                digits(&mut at);
            }
            _ => return None,
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            digits(&mut at).then_some(())?;
        }
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            at += 1;
            if matches!(bytes.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            digits(&mut at).then_some(())?;
        }
        self.at = at;
        Some(())
    }

    /// A string's contents when it has no escapes.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let stop = string_stop(self.text.as_bytes(), start)?;
        self.at = stop;
        self.eat(b'"')?;
        Some(&self.text[start..stop])
    }

    /// Skips a string, checking its escapes (surrogate escapes are left to `serde_json`).
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        loop {
            self.at = string_stop(bytes, self.at)?;
            match bytes[self.at] {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => match bytes.get(self.at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                    b'u' => {
                        let hex = self.text.get(self.at + 2..self.at + 6)?;
                        let unit = u16::from_str_radix(hex, 16).ok()?;
                        if !hex.bytes().all(|b| b.is_ascii_hexdigit())
                            || (0xD800..0xE000).contains(&unit)
                        {
                            return None;
                        }
                        self.at += 6;
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
    }
}

/// The first byte at or after `from` that ends a run of plain string characters: a quote, a
/// backslash or a control character. Eight bytes at a time: a byte's flag is exact for the
/// lowest flagged byte of a word, which is the one taken.
fn string_stop(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut at = from;
    while let Some(v) = word_at(bytes, at) {
        let flags = zero_byte(v ^ (ONES * u64::from(b'"')))
            | zero_byte(v ^ (ONES * u64::from(b'\\')))
            | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = bytes.get(at..)?;
    rest.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

/// The first byte at or after `from` that is not an ASCII digit (or the end), eight bytes at a
/// time: a digit is `0x3_` with a low nibble that adding 6 does not carry out of.
fn digits_end(bytes: &[u8], from: usize) -> usize {
    const LOW: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    let mut at = from;
    while let Some(v) = word_at(bytes, at) {
        let not_digit =
            ((v & !LOW) ^ 0x3030_3030_3030_3030) | (((v & LOW) + 0x0606_0606_0606_0606) & !LOW);
        if not_digit != 0 {
            return at + (not_digit.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while bytes.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

/// The eight bytes at `at` as a little-endian word, if there are eight.
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at.checked_add(8)?)?;
    let mut word = [0; 8];
    word.copy_from_slice(chunk);
    Some(u64::from_le_bytes(word))
}

/// Marks field `bit` seen; `None` when it was seen before (`serde` rejects duplicate fields).
fn first_time(seen: &mut u32, bit: u32) -> Option<()> {
    let mask = 1 << bit;
    (*seen & mask == 0).then(|| *seen |= mask)
}

/// The table a record's `after` probably belongs to (the one of the record before), so that it
/// is read into a row in the same pass instead of being walked twice.
#[derive(Clone, Copy)]
pub(super) struct AfterGuess<'s> {
    pub table: TableId,
    pub seed: RowSeed<'s>,
}

/// A whole record (wrapper or envelope), as `serde_json` would read it into [`Record`]; with a
/// guess, an `after` object is also read as a row of the guessed table (`Record::after_read`).
pub(super) fn record<'a>(text: &'a str, guess: Option<AfterGuess<'_>>) -> Option<Record<'a>> {
    let mut scanner = Scanner::new(text);
    let mut record = Record::default();
    let mut seen = 0;
    scanner.object(|name, s| {
        match name {
            "key" => {
                first_time(&mut seen, 0)?;
                record.key = s.nullable()?;
            }
            "value" => {
                first_time(&mut seen, 1)?;
                record.value = Some(s.value()?);
            }
            "topic" => {
                first_time(&mut seen, 2)?;
                record.topic = s.nullable_plain_string()?;
            }
            "schema" => {
                first_time(&mut seen, 3)?;
                record.schema = s.nullable()?;
            }
            "payload" => {
                first_time(&mut seen, 4)?;
                record.payload = s.nullable()?;
            }
            "before" => {
                first_time(&mut seen, 5)?;
                record.before = s.nullable()?;
            }
            "after" => {
                first_time(&mut seen, 6)?;
                match guess.filter(|_| s.peek() == Some(b'{')) {
                    Some(guess) => {
                        let start = s.at;
                        let row = guess.seed.scan_object(s)?;
                        record.after = Some(&s.text[start..s.at]);
                        record.after_read = Some((guess.table, row));
                    }
                    None => record.after = s.nullable()?,
                }
            }
            "source" => {
                first_time(&mut seen, 7)?;
                record.source = nullable_object(s, source)?;
            }
            "op" => {
                first_time(&mut seen, 8)?;
                record.op = s.nullable()?;
            }
            "ts_ms" => {
                first_time(&mut seen, 9)?;
                record.ts_ms = s.nullable_i64()?;
            }
            "transaction" => {
                first_time(&mut seen, 10)?;
                record.transaction = nullable_object(s, transaction)?;
            }
            _ => {
                s.value()?;
            }
        }
        Some(())
    })?;
    scanner.end()?;
    Some(record)
}

fn nullable_object<'a, T>(
    scanner: &mut Scanner<'a>,
    read: impl FnOnce(&mut Scanner<'a>) -> Option<T>,
) -> Option<Option<T>> {
    if scanner.peek()? == b'n' {
        scanner.literal("null")?;
        return Some(None);
    }
    read(scanner).map(Some)
}

fn source<'a>(scanner: &mut Scanner<'a>) -> Option<Source<'a>> {
    let mut source = Source::default();
    let mut seen = 0;
    scanner.object(|name, s| {
        match name {
            "name" => {
                first_time(&mut seen, 0)?;
                source.name = s.nullable_plain_string()?;
            }
            "schema" => {
                first_time(&mut seen, 1)?;
                source.schema = s.nullable_plain_string()?;
            }
            "db" => {
                first_time(&mut seen, 2)?;
                source.db = s.nullable_plain_string()?;
            }
            "table" => {
                first_time(&mut seen, 3)?;
                source.table = s.nullable_plain_string()?;
            }
            "ts_ms" => {
                first_time(&mut seen, 4)?;
                source.ts_ms = s.nullable_i64()?;
            }
            "txId" => {
                first_time(&mut seen, 5)?;
                source.tx_id = s.nullable()?;
            }
            "lsn" => {
                first_time(&mut seen, 6)?;
                source.lsn = s.nullable()?;
            }
            _ => {
                s.value()?;
            }
        }
        Some(())
    })?;
    Some(source)
}

fn transaction<'a>(scanner: &mut Scanner<'a>) -> Option<Transaction<'a>> {
    let mut transaction = Transaction::default();
    let mut seen = 0;
    scanner.object(|name, s| {
        if name == "id" {
            first_time(&mut seen, 0)?;
            transaction.id = s.nullable()?;
        } else {
            s.value()?;
        }
        Some(())
    })?;
    Some(transaction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(text: &str) -> bool {
        let mut scanner = Scanner::new(text);
        scanner.value().is_some() && scanner.end().is_some()
    }

    #[test]
    fn accepts_what_json_accepts() {
        for text in [
            r#"{"a":[1,-2.5e+3,0,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"],"b":{}}"#,
            " [ ] ",
            "-0.0",
            r#""é""#,
        ] {
            assert!(valid(text), "{text}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
        }
    }

    #[test]
    fn leaves_the_rest_to_serde_json() {
        for text in [
            "01",
            "1.",
            "-",
            "1e",
            "+1",
            "tru",
            r#""\x""#,
            r#""\ud800""#,
            "\"\u{1}\"",
            "[1,]",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "{} x",
            "",
            "[",
        ] {
            assert!(!valid(text), "{text}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(!valid(&deep));
    }

    #[test]
    fn string_stops_are_found_in_every_lane() {
        for stop in ['"', '\\', '\u{1}', '\u{1f}', '\n'] {
            for at in 0..20 {
                let text: String = (0..24)
                    .map(|i| {
                        if i == at {
                            stop
                        } else {
                            ['a', '~', 'é', ' '][i % 4]
                        }
                    })
                    .collect();
                let expected = text.find(stop);
                assert_eq!(string_stop(text.as_bytes(), 0), expected, "{text:?}");
            }
        }
        assert_eq!(string_stop("abc".as_bytes(), 0), None);
    }

    #[test]
    fn digit_runs_end_at_every_byte_value_in_every_lane() {
        for byte in 0..=u8::MAX {
            for lane in 0..12 {
                let mut text = [b'7'; 12];
                text[lane] = byte;
                let expected = if byte.is_ascii_digit() { 12 } else { lane };
                assert_eq!(digits_end(&text, 0), expected, "{byte:#x} at {lane}");
            }
        }
        assert_eq!(digits_end(b"12", 2), 2);
    }

    #[test]
    fn reads_records_like_serde() {
        let text = r#"{"before":null,"after":{"id":1},"source":{"name":"db","schema":"public",
            "table":"t","ts_ms":5,"txId":7,"lsn":9,"other":[1]},"op":"c","ts_ms":6,
            "transaction":null,"extra":{"x":1}}"#;
        let scanned = record(text, None).expect("scanned");
        let parsed: Record<'_> = serde_json::from_str(text).expect("parsed");
        assert_eq!(format!("{scanned:?}"), format!("{parsed:?}"));
        assert!(
            record(r#"{"op":"c","op":"u"}"#, None).is_none(),
            "duplicate field"
        );
        assert!(record(r#"{"ts_ms":1.5}"#, None).is_none(), "not an integer");
        assert!(
            record(r#"{"source":{"table":"a\"b"}}"#, None).is_none(),
            "escaped name"
        );
    }
}
