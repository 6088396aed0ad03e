//! One thing `conflux lint` found: where (file, line, column when known), how bad, and
//! what; written one per line, as text for people or JSON for machines.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub severity: Severity,
    /// One line.
    pub message: String,
}

impl Finding {
    pub fn error(path: &Path, message: impl fmt::Display) -> Finding {
        Finding::new(path, Severity::Error, message)
    }

    pub fn warning(path: &Path, message: impl fmt::Display) -> Finding {
        Finding::new(path, Severity::Warning, message)
    }

    fn new(path: &Path, severity: Severity, message: impl fmt::Display) -> Finding {
        Finding {
            path: path.to_path_buf(),
            line: None,
            column: None,
            severity,
            message: one_line(&message.to_string()),
        }
    }

    pub fn at(mut self, line: Option<usize>, column: Option<usize>) -> Finding {
        self.line = line;
        self.column = column.filter(|_| line.is_some());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}: {}", self.severity, self.message)
    }
}

/// Writes `findings` to `out`, one per line.
pub fn write(out: &mut impl Write, findings: &[Finding], json: bool) -> std::io::Result<()> {
    for finding in findings {
        if json {
            let line = serde_json::to_string(finding).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{finding}")?;
        }
    }
    Ok(())
}

/// A message of several lines (Tera's and toml's errors quote the source with carets)
/// as one: its text lines joined, the quoted source and the carets left out.
pub fn one_line(text: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        let quoted = line.starts_with('|')
            || line.starts_with("-->")
            || line.chars().next().is_some_and(|c| c.is_ascii_digit()) && line.contains(" |");
        if line.is_empty() || quoted || line.chars().all(|c| c == '^' || c == ' ') {
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line));
    }
    parts.join("; ")
}

/// `line L, column C` (or `line L` alone) in an error's text, as toml's and conflux's
/// config errors give it: (line, column).
pub fn line_column_in(text: &str) -> (Option<usize>, Option<usize>) {
    let Some(at) = text.find("line ") else {
        return (None, None);
    };
    let rest = &text[at + "line ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let line = digits.parse().ok();
    let column = rest[digits.len()..]
        .strip_prefix(", column ")
        .map(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|c| c.parse().ok());
    (line, column)
}

/// An error's text without the position the finding already gives: `TOML parse error
/// at line 4, column 1` and `line 4, column 1:` are dropped.
pub fn without_position(text: &str) -> String {
    let one = one_line(text);
    let one = one
        .strip_prefix("TOML parse error at ")
        .map(|rest| rest.split_once("; ").map_or(rest, |(_, tail)| tail))
        .unwrap_or(&one);
    let one = match one.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(one, |(_, tail)| tail),
        None => one,
    };
    one.to_string()
}

/// The first `<file>:<line>:<column>` in `text` whose file ends with `name`, as the
/// template engines write positions (`--> app.tmpl:2:9`, `app.tmpl:2:9: executing`).
pub fn position_in(text: &str, name: &str) -> Option<(usize, usize)> {
    let mut rest = text;
    while let Some(i) = rest.find(name) {
        let after = &rest[i + name.len()..];
        let mut numbers = after.strip_prefix(':')?.splitn(3, ':');
        let line = numbers.next().and_then(|n| n.trim().parse().ok());
        let column = numbers
            .next()
            .map(|c| {
                c.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|c| c.parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return Some((line, column));
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines() {
        let f = Finding::error(
            Path::new("conf.d/app.toml"),
            "line one\n  | quoted\n  ^^^ \nmore",
        )
        .at(Some(4), Some(2));
        assert_eq!(f.to_string(), "conf.d/app.toml:4:2: error: line one; more");
        let w = Finding::warning(Path::new("templates/x"), "x");
        assert_eq!(w.to_string(), "templates/x: warning: x");
        let mut out = Vec::new();
        write(&mut out, &[f], true).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["line"], 4);
        assert_eq!(json["severity"], "error");
    }

    #[test]
    fn config_and_toml_positions_are_read_and_dropped_from_the_message() {
        let toml = "TOML parse error at line 4, column 1\n  |\n4 | bogus = 1\n  | ^^^^^\nunknown field `bogus`";
        assert_eq!(line_column_in(toml), (Some(4), Some(1)));
        assert_eq!(without_position(toml), "unknown field `bogus`");
        let config = "line 2, column 12: password: invalid value (not shown: it is a secret)";
        assert_eq!(line_column_in(config), (Some(2), Some(12)));
        assert_eq!(
            line_column_in("line 2: unknown key `bogus`"),
            (Some(2), None)
        );
        assert_eq!(
            without_position("line 2: unknown key `bogus`"),
            "unknown key `bogus`"
        );
        assert_eq!(
            without_position(config),
            "password: invalid value (not shown: it is a secret)"
        );
    }

    #[test]
    fn positions_are_found_as_the_engines_write_them() {
        let tera = "error: getv: key not found: /x\n --> app.tmpl:2:9\n  |\n2 | x\n";
        assert_eq!(position_in(tera, "app.tmpl"), Some((2, 9)));
        let go = "app.tmpl:3:14: executing \"app.tmpl\" at <getv \"/x\">";
        assert_eq!(position_in(go, "app.tmpl"), Some((3, 14)));
        assert_eq!(position_in("no position", "app.tmpl"), None);
    }
}
