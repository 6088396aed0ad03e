//! Go's `time.Time.Format(layout)` over a chrono time: the reference-time layouts
//! (`2006-01-02 15:04:05`, `Jan _2`, `3:04PM`, `-07:00`, `.000`) that confd's
//! `{{datetime.Format "…"}}` uses, and `String()`'s layout for a bare `{{datetime}}`.
//! The zone abbreviation (`MST`) is `UTC` at offset zero and the numeric offset
//! otherwise, as Go prints a zone it has no name for.

use chrono::{DateTime, Datelike, FixedOffset, Timelike};

/// Go's `Time.String()` without the monotonic clock reading.
pub(super) const STRING_LAYOUT: &str = "2006-01-02 15:04:05.999999999 -0700 MST";

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// `t` formatted with the Go `layout`.
pub(super) fn format(t: &DateTime<FixedOffset>, layout: &str) -> String {
    let mut out = String::new();
    let mut rest = layout;
    while !rest.is_empty() {
        match next_chunk(rest) {
            Some((token, len)) => {
                write_token(&mut out, t, token, &rest[..len]);
                rest = &rest[len..];
            }
            None => {
                let c = rest.chars().next().expect("rest is not empty");
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Token {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    TZ,
    /// `-0700`, `-07:00`, `-07`, `-070000`, `-07:00:00`; `Z` first prints `Z` at UTC.
    Offset {
        z: bool,
        colon: bool,
        seconds: bool,
        minutes: bool,
    },
    /// `.000` (always `digits` digits) or `.999` (trailing zeros dropped).
    Fraction {
        digits: usize,
        trim: bool,
    },
}

/// The layout token at the start of `s`, and its length; `None` for a literal.
fn next_chunk(s: &str) -> Option<(Token, usize)> {
    use Token::*;
    const FIXED: &[(&str, Token)] = &[
        ("January", LongMonth),
        ("Jan", Month),
        ("Monday", LongWeekDay),
        ("Mon", WeekDay),
        ("MST", TZ),
        ("2006", LongYear),
        ("002", ZeroYearDay),
        ("__2", UnderYearDay),
        ("01", ZeroMonth),
        ("02", ZeroDay),
        ("03", ZeroHour12),
        ("04", ZeroMinute),
        ("05", ZeroSecond),
        ("06", Year),
        ("15", Hour),
        ("_2", UnderDay),
        ("PM", PM),
        ("pm", Pm),
        ("1", NumMonth),
        ("2", Day),
        ("3", Hour12),
        ("4", Minute),
        ("5", Second),
    ];
    if let Some(offset) = offset_token(s) {
        return Some(offset);
    }
    if let Some(fraction) = fraction_token(s) {
        return Some(fraction);
    }
    for (text, token) in FIXED {
        if let Some(rest) = s.strip_prefix(text) {
            // Go: "Jan" and "Mon" only when not followed by a lower-case letter
            // ("Monday" is matched above; "Month" is literal text).
            let after = rest.chars().next();
            if matches!(text, &"Jan" | &"Mon") && after.is_some_and(|c| c.is_ascii_lowercase()) {
                return None;
            }
            return Some((*token, text.len()));
        }
    }
    None
}

fn offset_token(s: &str) -> Option<(Token, usize)> {
    const FORMS: &[(&str, bool, bool, bool)] = &[
        // (text without the leading - or Z, colon, seconds, minutes)
        ("070000", false, true, true),
        ("07:00:00", true, true, true),
        ("0700", false, false, true),
        ("07:00", true, false, true),
        ("07", false, false, false),
    ];
    let (z, body) = match s.as_bytes().first()? {
        b'-' => (false, &s[1..]),
        b'Z' => (true, &s[1..]),
        _ => return None,
    };
    FORMS.iter().find_map(|(text, colon, seconds, minutes)| {
        body.starts_with(text).then_some((
            Token::Offset {
                z,
                colon: *colon,
                seconds: *seconds,
                minutes: *minutes,
            },
            text.len() + 1,
        ))
    })
}

fn fraction_token(s: &str) -> Option<(Token, usize)> {
    let bytes = s.as_bytes();
    if !matches!(bytes.first()?, b'.' | b',') {
        return None;
    }
    let digit = *bytes.get(1)?;
    if digit != b'0' && digit != b'9' {
        return None;
    }
    let run = bytes[1..].iter().take_while(|b| **b == digit).count();
    // Go: the run must not be followed by another digit.
    if bytes.get(1 + run).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some((
        Token::Fraction {
            digits: run,
            trim: digit == b'9',
        },
        1 + run,
    ))
}

fn write_token(out: &mut String, t: &DateTime<FixedOffset>, token: Token, text: &str) {
    use Token::*;
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    match token {
        LongMonth => out.push_str(MONTHS[t.month0() as usize]),
        Month => out.push_str(&MONTHS[t.month0() as usize][..3]),
        NumMonth => out.push_str(&t.month().to_string()),
        ZeroMonth => out.push_str(&format!("{:02}", t.month())),
        LongWeekDay => out.push_str(DAYS[t.weekday().num_days_from_monday() as usize]),
        WeekDay => out.push_str(&DAYS[t.weekday().num_days_from_monday() as usize][..3]),
        Day => out.push_str(&t.day().to_string()),
        UnderDay => out.push_str(&format!("{:>2}", t.day())),
        ZeroDay => out.push_str(&format!("{:02}", t.day())),
        UnderYearDay => out.push_str(&format!("{:>3}", t.ordinal())),
        ZeroYearDay => out.push_str(&format!("{:03}", t.ordinal())),
        Hour => out.push_str(&format!("{:02}", t.hour())),
        Hour12 => out.push_str(&hour12.to_string()),
        ZeroHour12 => out.push_str(&format!("{hour12:02}")),
        Minute => out.push_str(&t.minute().to_string()),
        ZeroMinute => out.push_str(&format!("{:02}", t.minute())),
        Second => out.push_str(&t.second().to_string()),
        ZeroSecond => out.push_str(&format!("{:02}", t.second())),
        LongYear => out.push_str(&format!("{:04}", t.year())),
        Year => out.push_str(&format!("{:02}", t.year().rem_euclid(100))),
        PM => out.push_str(if t.hour() >= 12 { "PM" } else { "AM" }),
        Pm => out.push_str(if t.hour() >= 12 { "pm" } else { "am" }),
        TZ => write_zone_name(out, t),
        Offset {
            z,
            colon,
            seconds,
            minutes,
        } => write_offset(out, t, z, colon, seconds, minutes),
        Fraction { digits, trim } => write_fraction(out, t, digits, trim, &text[..1]),
    }
}

fn write_zone_name(out: &mut String, t: &DateTime<FixedOffset>) {
    let offset = t.offset().local_minus_utc();
    if offset == 0 {
        out.push_str("UTC");
        return;
    }
    let minutes = offset.abs() / 60;
    out.push(if offset < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}{:02}", minutes / 60, minutes % 60));
}

fn write_offset(
    out: &mut String,
    t: &DateTime<FixedOffset>,
    z: bool,
    colon: bool,
    seconds: bool,
    minutes: bool,
) {
    let offset = t.offset().local_minus_utc();
    if z && offset == 0 {
        out.push('Z');
        return;
    }
    let abs = offset.abs();
    out.push(if offset < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}", abs / 3600));
    let sep = if colon { ":" } else { "" };
    if minutes {
        out.push_str(&format!("{sep}{:02}", abs / 60 % 60));
    }
    if seconds {
        out.push_str(&format!("{sep}{:02}", abs % 60));
    }
}

fn write_fraction(
    out: &mut String,
    t: &DateTime<FixedOffset>,
    digits: usize,
    trim: bool,
    sep: &str,
) {
    let nanos = format!("{:09}", t.nanosecond().min(999_999_999));
    let mut shown = &nanos[..digits.min(9)];
    if trim {
        shown = shown.trim_end_matches('0');
        if shown.is_empty() {
            return;
        }
    }
    out.push_str(sep);
    out.push_str(shown);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn go_reference_layouts() {
        let t = at("2009-11-10T23:04:05.120+01:00");
        let cases = [
            ("2006-01-02 15:04:05", "2009-11-10 23:04:05"),
            (
                "Jan 2, 2006 at 3:04pm (MST)",
                "Nov 10, 2009 at 11:04pm (+0100)",
            ),
            ("Monday January _2 06", "Tuesday November 10 09"),
            ("2006-01-02T15:04:05Z07:00", "2009-11-10T23:04:05+01:00"),
            ("15:04:05.000 -0700", "23:04:05.120 +0100"),
            ("15:04:05.999", "23:04:05.12"),
            ("002 3PM Month", "314 11PM Month"),
            (STRING_LAYOUT, "2009-11-10 23:04:05.12 +0100 +0100"),
        ];
        for (layout, want) in cases {
            assert_eq!(format(&t, layout), want, "{layout}");
        }
        let utc = at("2024-01-05T08:00:00Z");
        assert_eq!(format(&utc, STRING_LAYOUT), "2024-01-05 08:00:00 +0000 UTC");
        assert_eq!(format(&utc, "Z07:00 _2 1"), "Z  5 1");
    }
}
