//! The decoder's fast path: a validating single-pass JSON scanner that walks an object's fields
//! and hands out their raw text (building nothing but, given a guessed table, the `after` row,
//! so that it is walked once). It only takes the common road — keys and
//! needed strings without escapes, no duplicate fields, shallow nesting — and answers `None`
//! for anything else (including malformed JSON), so the caller falls back to `serde_json`, which
//! stays the reference for what is accepted and words every error. Whatever it accepts,
//! `serde_json` accepts too, with the same meaning.

use std::borrow::Cow;

use super::order::FieldOrder;
#[cfg(any(test, feature = "fuzzing"))]
pub(super) use fields::record;
pub(super) use fields::{record_into, row_in_order, AfterGuess, FieldOrders, Level};
use runs::{digits_end, string_stop};

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
        let mut more = self.open_object()?;
        while more {
            self.skip_whitespace();
            let name = self.plain_string()?;
            self.skip_whitespace();
            self.eat(b':')?;
            self.skip_whitespace();
            field(name, self)?;
            more = self.after_field()?;
        }
        Some(())
    }

    /// Enters an object: whether it has fields.
    fn open_object(&mut self) -> Option<bool> {
        self.skip_whitespace();
        self.eat(b'{')?;
        self.skip_whitespace();
        Some(self.eat(b'}').is_none())
    }

    /// Past a field's value: whether another field follows (`,`, past which whitespace is
    /// left to the caller) or the object ends (`}`).
    fn after_field(&mut self) -> Option<bool> {
        self.skip_whitespace();
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            b'}' => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Walks an object like [`Scanner::object`], calling `field(what, name, self)` with what
    /// `resolve` made of each name (the name itself is sliced only when asked for). The
    /// fields' order is remembered in `order`: when the next object of its kind has the same
    /// fields in the same order, as connectors write them, each name is recognised by
    /// comparing its bytes with the last one's instead of being scanned and resolved again.
    pub fn object_in_order<F: Copy>(
        &mut self,
        order: &mut FieldOrder<F>,
        resolve: impl Fn(&str) -> F,
        mut field: impl FnMut(F, Name<'a>, &mut Self) -> Option<()>,
    ) -> Option<()> {
        if !self.open_object()? {
            return Some(());
        }
        let shape = order.shape(self.text.as_bytes().get(self.at..)?);
        let mut index = 0;
        loop {
            // Compact JSON has no whitespace before a name: it is skipped only when the name is
            // not recognised where it would start.
            let mut recognised = shape.recognise(index, self.text.as_bytes().get(self.at..)?);
            if recognised.is_none() {
                self.skip_whitespace();
                recognised = shape.recognise(index, self.text.as_bytes().get(self.at..)?);
            }
            let (what, name) = match recognised {
                Some((what, token)) => {
                    let name = Name {
                        text: self.text,
                        start: self.at + 1,
                        end: self.at + token - 2,
                    };
                    self.at += token;
                    (what, name)
                }
                None => {
                    let start = self.at + 1;
                    let name = self.plain_string()?;
                    let end = self.at - 1;
                    self.skip_whitespace();
                    self.eat(b':')?;
                    let what = resolve(name);
                    shape.learn(index, name, what);
                    let name = Name {
                        text: self.text,
                        start,
                        end,
                    };
                    (what, name)
                }
            };
            index += 1;
            self.skip_whitespace();
            field(what, name, self)?;
            if !self.after_field()? {
                return Some(());
            }
        }
    }

    /// Skips the value that starts exactly here (callers skip the whitespace before it),
    /// checking it is valid JSON, and returns its text.
    pub fn value(&mut self) -> Option<&'a str> {
        let start = self.at;
        self.skip_value(0)?;
        Some(&self.text[start..self.at])
    }

    /// Skips the value that starts exactly here, checking it is valid JSON.
    pub fn skip(&mut self) -> Option<()> {
        self.skip_value(0)
    }

    /// A value's text, `None` inside when it is `null`.
    fn nullable(&mut self) -> Option<Option<&'a str>> {
        self.value().map(|text| (text != "null").then_some(text))
    }

    /// Like [`Scanner::nullable`], recognising an object's field names by the order of the
    /// last object passed over with `order`.
    fn nullable_in_order(&mut self, order: &mut FieldOrder<()>) -> Option<Option<&'a str>> {
        if self.peek()? != b'{' {
            return self.nullable();
        }
        let start = self.at;
        self.object_in_order(order, |_| (), |(), _, s| s.skip_value(1))?;
        Some(Some(&self.text[start..self.at]))
    }

    /// A string without escapes (its contents) or `null`.
    fn nullable_plain_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        self.plain_string().map(|s| Some(Cow::Borrowed(s)))
    }

    /// An integer that fits `i64`, or `null`, read as its digits are walked. Anything else
    /// (fractions, exponents, `-0`, leading zeros, too many digits) is left to `serde_json`.
    pub fn nullable_i64(&mut self) -> Option<Option<i64>> {
        let bytes = self.text.as_bytes();
        let negative = match *bytes.get(self.at)? {
            b'n' => {
                self.literal(b"null")?;
                return Some(None);
            }
            b'-' => true,
            _ => false,
        };
        let start = self.at + usize::from(negative);
        let end = digits_end(bytes, start);
        let digits = bytes.get(start..end)?;
        let leading_zero = digits.first() == Some(&b'0') && (digits.len() > 1 || negative);
        if digits.is_empty()
            || digits.len() > 19
            || leading_zero
            || matches!(bytes.get(end), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        // Nineteen digits fit a `u64`.
        let magnitude = digits
            .iter()
            .fold(0_u64, |n, digit| n * 10 + u64::from(digit - b'0'));
        let value = if negative {
            0_i64.checked_sub_unsigned(magnitude)?
        } else {
            i64::try_from(magnitude).ok()?
        };
        self.at = end;
        Some(Some(value))
    }

    /// Skips one value; the scalars inline, containers out of line.
    #[inline(always)]
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => self.skip_container(depth),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => None,
        }
    }

    /// Skips an object or an array, and everything in it.
    #[inline(never)]
    fn skip_container(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            _ if depth >= MAX_DEPTH => None,
            b'{' => self.object(|_, scanner| scanner.skip_value(depth + 1)),
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
            _ => None,
        }
    }

    fn literal<const N: usize>(&mut self, word: &[u8; N]) -> Option<()> {
        let end = self.at.checked_add(N)?;
        (self.text.as_bytes().get(self.at..end)? == word).then(|| self.at = end)
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
        self.at = string_stop(self.text.as_bytes(), self.at)?;
        if self.eat(b'"').is_some() {
            return Some(());
        }
        self.skip_escaped_string()
    }

    /// The rest of a string skipped by [`Scanner::skip_string`] from its first stop that is
    /// not its end (an escape, or a control character, which is not JSON), out of line.
    #[inline(never)]
    fn skip_escaped_string(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        loop {
            match *bytes.get(self.at)? {
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
            self.at = string_stop(bytes, self.at)?;
        }
    }
}

/// A field's name in the text, sliced only when asked for.
#[derive(Clone, Copy)]
pub(super) struct Name<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

impl<'a> Name<'a> {
    /// The name (empty if the bounds were not a name's, which the scanner never makes).
    pub fn get(self) -> &'a str {
        self.text.get(self.start..self.end).unwrap_or_default()
    }
}

mod fields;
mod runs;
#[cfg(test)]
mod tests;
