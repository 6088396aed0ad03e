//! The small values conflux reads from its own files and flags: durations with a unit,
//! coalescing waits, octal file modes, and TOML errors as one readable message.
//!
//! A leaf: what each value is used for is its reader's business (resources, the
//! config, the scheduler).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A resource's coalescing window, written `"<min>[:<max>]"`.
///
/// After an apply starts, a change waits until no further change has come for `min`,
/// but never longer than `max` after the first waiting change; `"<min>"` alone sets
/// `max = min` (changes wait `min`, no debouncing). A change that comes `min` or more
/// after the last apply started is applied at once. Durations need a unit (`ms`, `s`,
/// `m`, `h`) except `0`: a bare number is ambiguous next to confd's `interval`, which is
/// in seconds, so it is refused rather than guessed.
///
/// A resource that sets no `wait` (and runs under no global `--wait`) gets
/// [`Wait::default_for`]: a window only where there is a reload to protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub min: Duration,
    pub max: Duration,
}

impl Wait {
    /// No window: every change is applied as soon as the previous apply of the
    /// resource is done (changes that came during it collapse into one more apply).
    pub const NONE: Wait = Wait {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// The window of a resource with a `reload_cmd`: it opens only after an apply, so
    /// an isolated change is applied at once, and a burst of 1,000 puts spread over a
    /// second gives two or three applies (one at the first put, one a second later at
    /// most, one after the last put) while no change waits more than a second behind a
    /// continuous stream.
    pub const RELOAD: Wait = Wait {
        min: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };

    /// The window of a resource that sets none. Coalescing exists to spare a service
    /// reload storms: a resource with a `reload_cmd` gets [`Wait::RELOAD`], one without
    /// gets [`Wait::NONE`], so its changes apply as fast as they come (as confd's do).
    /// One window for all (the old `100ms:1s` default) held every change that followed
    /// an apply within 100 ms even where no reload ran, which made sequential updates a
    /// hundred times slower than confd's for nothing.
    pub fn default_for(reloads: bool) -> Wait {
        if reloads { Wait::RELOAD } else { Wait::NONE }
    }
}

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration such as \"500ms\", \"30s\" or \"2m\"")]
    Malformed(String),
    #[error("{0:?} needs a unit (ms, s, m or h)")]
    NoUnit(String),
}

/// Why a `wait` setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("wait {0:?}: {1}")]
    Duration(String, DurationError),
    #[error("wait {0:?}: the maximum is shorter than the minimum")]
    MaxBelowMin(String),
}

impl FromStr for Wait {
    type Err = WaitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (min, max) = match text.split_once(':') {
            Some((min, max)) => (min, Some(max)),
            None => (text, None),
        };
        let duration =
            |part: &str| parse_duration(part).map_err(|e| WaitError::Duration(text.to_string(), e));
        let min = duration(min)?;
        let max = match max {
            Some(max) => duration(max)?,
            None => min,
        };
        if max < min {
            return Err(WaitError::MaxBelowMin(text.to_string()));
        }
        Ok(Wait { min, max })
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms:{}ms", self.min.as_millis(), self.max.as_millis())
    }
}

/// A file mode written as an octal string: `"0644"`, `"644"` and `"0o644"` all mean
/// 0644. confd reads `"644"` as decimal (giving `--w----r--`); nobody means that.
pub fn parse_mode(text: &str) -> Result<u32, ModeError> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    if digits.is_empty() || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(ModeError::NotOctal(text.to_string()));
    }
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(ModeError::OutOfRange(text.to_string())),
    }
}

/// Why a mode was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    #[error("{0:?} is not an octal mode such as \"0644\"")]
    NotOctal(String),
    #[error("{0:?} is out of range (at most 07777)")]
    OutOfRange(String),
}

/// A duration with its unit: `"500ms"`, `"30s"`, `"2m"`, `"1h"`, or `"0"`. A bare
/// number is refused rather than guessed: confd's `interval` is in seconds, a wait in
/// milliseconds would be as natural.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let part = text.trim();
    let split = part
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(part.len());
    let (digits, unit) = part.split_at(split);
    let bad = || DurationError::Malformed(text.to_string());
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let millis = match unit {
        "" if n == 0 => Some(0),
        "" => return Err(DurationError::NoUnit(text.to_string())),
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    millis.map(Duration::from_millis).ok_or_else(bad)
}

/// toml's own Display spreads one problem over several lines; keep it, but start with
/// the line and column so that the first line of the log says where.
pub fn toml_error_message(e: &toml::de::Error) -> String {
    e.to_string().trim_end().to_string()
}

/// A TOML error as `line L, column C: key: message`, without the source line toml
/// quotes (it may hold a secret), and without the message when the key is one of
/// `secrets` (toml's messages quote the offending value).
pub fn toml_error_redacted(e: &toml::de::Error, text: &str, secrets: &[&str]) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(key) if secrets.contains(&key) => {
            format!(
                "line {line}, column {column}: {key}: invalid value (not shown: it is a secret)"
            )
        }
        Some(key) => format!("line {line}, column {column}: {key}: {}", e.message()),
        None => format!("line {line}, column {column}: {}", e.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_toml_errors_name_line_and_key_but_never_a_secret() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Conf {
            password: Option<String>,
            port: Option<u16>,
        }
        let text = "port = 80\npassword = 12345678\n";
        let e = toml::from_str::<Conf>(text).unwrap_err();
        let shown = toml_error_redacted(&e, text, &["password"]);
        assert!(
            shown.starts_with("line 2, column 12: password: "),
            "{shown}"
        );
        assert!(!shown.contains("12345678"), "{shown}");
        let text = "port = \"eighty\"\n";
        let e = toml::from_str::<Conf>(text).unwrap_err();
        let shown = toml_error_redacted(&e, text, &["password"]);
        assert!(shown.starts_with("line 1, column 8: port: "), "{shown}");
    }

    #[test]
    fn mode_is_octal_with_or_without_leading_zero() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("0x1a4").is_err());
        assert!(parse_mode("0899").is_err());
        assert!(parse_mode("77777").is_err());
    }

    #[test]
    fn wait_parses_min_and_max_with_units() {
        let w: Wait = "2s:10s".parse().expect("valid");
        assert_eq!(
            (w.min, w.max),
            (Duration::from_millis(2_000), Duration::from_millis(10_000))
        );
        let w: Wait = "50ms".parse().expect("valid");
        assert_eq!(
            (w.min, w.max),
            (Duration::from_millis(50), Duration::from_millis(50))
        );
        let w: Wait = "0".parse().expect("valid");
        assert_eq!(
            (w.min, w.max),
            (Duration::from_millis(0), Duration::from_millis(0))
        );
        let w: Wait = "0:1m".parse().expect("valid");
        assert_eq!(w.max, Duration::from_millis(60_000));
        assert_eq!(Wait::RELOAD.to_string(), "100ms:1000ms");
        assert_eq!(Wait::default_for(true), Wait::RELOAD);
        assert_eq!(Wait::default_for(false), "0".parse().expect("valid"));
    }

    #[test]
    fn wait_refuses_bare_numbers_unknown_units_and_max_below_min() {
        assert!(matches!("50".parse::<Wait>(), Err(WaitError::Duration(..))));
        assert!(matches!("5x".parse::<Wait>(), Err(WaitError::Duration(..))));
        assert!(matches!("".parse::<Wait>(), Err(WaitError::Duration(..))));
        assert!(matches!(
            "2s:1s".parse::<Wait>(),
            Err(WaitError::MaxBelowMin(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("30").is_err(), "a bare number needs a unit");
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }
}

/// Properties over any input: the parsers never panic, and what they print parses back.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_neither_panics(text in ".{0,24}") {
            let _ = parse_duration(&text);
            let _ = parse_mode(&text);
            let _ = text.parse::<Wait>();
        }

        #[test]
        fn a_wait_prints_what_parses_back(min in 0u64..10_000_000, extra in 0u64..10_000_000) {
            let wait = Wait {
                min: Duration::from_millis(min),
                max: Duration::from_millis(min + extra),
            };
            prop_assert_eq!(wait.to_string().parse::<Wait>(), Ok(wait));
        }

        #[test]
        fn every_mode_in_octal_parses_back(mode in 0u32..=0o7777) {
            prop_assert_eq!(parse_mode(&format!("{mode:o}")), Ok(mode));
            prop_assert_eq!(parse_mode(&format!("0{mode:o}")), Ok(mode));
        }
    }
}
