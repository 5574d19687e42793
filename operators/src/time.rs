//! Calendar arithmetic for dates and timestamps (proleptic Gregorian, UTC), no dependencies.

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_timestamp_micros(micros: i64) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let rem = micros.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1_000_000;
    let frac = rem % 1_000_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Parses `YYYY-MM-DD` into days since the epoch.
pub fn parse_date(text: &str) -> Option<i32> {
    let mut parts = text.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    i32::try_from(days_from_civil(year, month, day)).ok()
}

/// Parses an ISO-8601 timestamp (`2024-05-01T10:00:00[.ffffff][Z|±HH:MM]`, `T` or space) into
/// microseconds since the epoch, UTC. A missing offset means UTC.
pub fn parse_timestamp_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() < 19 {
        return None;
    }
    let days = i64::from(parse_date(&text[..10])?);
    let sep = text.as_bytes()[10];
    if sep != b'T' && sep != b' ' {
        return None;
    }
    let hour: i64 = text.get(11..13)?.parse().ok()?;
    let minute: i64 = text.get(14..16)?.parse().ok()?;
    let second: i64 = text.get(17..19)?.parse().ok()?;
    let mut rest = &text[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &frac[..digits.min(6)];
        micros = kept.parse::<i64>().ok()? * 10i64.pow(6 - kept.len() as u32);
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let mut body = rest[1..].replace(':', "");
            // PostgreSQL writes whole-hour offsets as `+HH`.
            if body.len() == 2 {
                body.push_str("00");
            }
            if body.len() != 4 {
                return None;
            }
            let h: i64 = body[..2].parse().ok()?;
            let m: i64 = body[2..].parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
    }

    #[test]
    fn timestamps_parse_with_offsets() {
        assert_eq!(
            parse_timestamp_micros("1970-01-01T00:00:01Z"),
            Some(1_000_000)
        );
        assert_eq!(parse_timestamp_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_timestamp_micros("1970-01-01 02:00:00+02"),
            Some(0),
            "PostgreSQL style"
        );
        assert_eq!(
            parse_timestamp_micros("1970-01-01 00:00:00.5"),
            Some(500_000)
        );
        assert_eq!(
            format_timestamp_micros(parse_timestamp_micros("2024-05-01T10:11:12.123456Z").unwrap()),
            "2024-05-01T10:11:12.123456Z"
        );
        assert_eq!(parse_timestamp_micros("nope"), None);
    }
}
