//! Runs of bytes found sixteen or eight at a time: where a plain string's characters end, and
//! where a run of digits ends. The scanner's innermost loops.

use wide::u8x16;

/// The first byte at or after `from` that ends a run of plain string characters: a quote, a
/// backslash or a control character. Sixteen bytes at a time (SSE2 or NEON, through `wide`),
/// then eight (SWAR: a byte's flag is exact for the lowest flagged byte of a word, which is the
/// one taken), then one.
#[inline]
pub(super) fn string_stop(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(lane) = lane_at(bytes, at) {
        let stops = lane.simd_eq(u8x16::splat(b'"'))
            | lane.simd_eq(u8x16::splat(b'\\'))
            | lane.min(u8x16::splat(0x1f)).simd_eq(lane);
        let mask = stops.to_bitmask();
        if mask != 0 {
            return Some(at + mask.trailing_zeros() as usize);
        }
        at += 16;
    }
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
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
#[inline]
pub(super) fn digits_end(bytes: &[u8], from: usize) -> usize {
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

/// The sixteen bytes at `at` as a vector, if there are sixteen.
fn lane_at(bytes: &[u8], at: usize) -> Option<u8x16> {
    let chunk: [u8; 16] = bytes.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(u8x16::new(chunk))
}

/// The eight bytes at `at` as a little-endian word, if there are eight.
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at.checked_add(8)?)?;
    let mut word = [0; 8];
    word.copy_from_slice(chunk);
    Some(u64::from_le_bytes(word))
}
