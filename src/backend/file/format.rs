//! Which parser reads a data file ([`Format`], by its extension) and why a parser
//! refused one ([`ParseError`], with the format and line kept).
//!
//! Parsing and flattening are the `flatten` module's; naming the file is the parent's.

use std::path::Path;

/// The format a data file is parsed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Toml,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
            Format::Toml => "TOML",
        })
    }
}

impl Format {
    /// confd reads every file as YAML (JSON is a subset of it); dedicated parsers for
    /// `.json` and `.toml` give better error messages and make TOML possible at all.
    pub(super) fn of(path: &Path) -> Format {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext.to_ascii_lowercase().as_str() {
            "json" => Format::Json,
            "toml" => Format::Toml,
            _ => Format::Yaml,
        }
    }
}

/// Why one document does not flatten. The display is the parser's message on one line
/// with its line and column (`trailing comma at line 3 column 1`); the file's name and
/// format are added by the caller, which knows the file.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Yaml(#[source] yaml_serde::Error),
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    /// toml's own display spans several lines with a source excerpt; a log line wants
    /// `message at line L column C` as the other parsers give it, so the position is
    /// worked out here from the error's span.
    #[error("{message}{}", at(.line_column))]
    Toml {
        message: String,
        line_column: Option<(usize, usize)>,
        /// Boxed: toml's error is large, and a parse error travels up every read.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A bare scalar (or a value under an empty key) has no path to live at.
    #[error("the top level must be a mapping or a list")]
    NotACollection { format: Format },
    #[error("a map key under {key} is not a scalar")]
    KeyNotScalar { key: String },
    /// Two spellings of one key in one file (`a: {b: x}` and `"a/b": y`): which value
    /// wins would depend on the map's order, so neither is taken.
    #[error("key {key} is given twice (nested and as a path with `/`, or once as `a//b`)")]
    Collision { format: Format, key: String },
}

impl ParseError {
    pub fn format(&self) -> Format {
        match self {
            ParseError::Yaml(_) | ParseError::KeyNotScalar { .. } => Format::Yaml,
            ParseError::Json(_) => Format::Json,
            ParseError::Toml { .. } => Format::Toml,
            ParseError::NotACollection { format } | ParseError::Collision { format, .. } => *format,
        }
    }

    /// The line the parser stopped at (from 1), when it says.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::Yaml(err) => err.location().map(|l| l.line()),
            ParseError::Json(err) => Some(err.line()).filter(|line| *line > 0),
            ParseError::Toml { line_column, .. } => line_column.map(|(line, _)| line),
            ParseError::NotACollection { .. }
            | ParseError::KeyNotScalar { .. }
            | ParseError::Collision { .. } => None,
        }
    }

    pub(super) fn toml(text: &str, source: toml::de::Error) -> ParseError {
        let line_column = source.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, column)
        });
        ParseError::Toml {
            message: source.message().trim_end().to_string(),
            line_column,
            source: Box::new(source),
        }
    }
}

fn at(line_column: &Option<(usize, usize)>) -> String {
    match line_column {
        Some((line, column)) => format!(" at line {line} column {column}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_the_extension() {
        assert_eq!(Format::of(Path::new("a.JSON")), Format::Json);
        assert_eq!(Format::of(Path::new("a.toml")), Format::Toml);
        assert_eq!(Format::of(Path::new("a.yml")), Format::Yaml);
        assert_eq!(Format::of(Path::new("app.conf")), Format::Yaml);
        assert_eq!(Format::of(Path::new("noext")), Format::Yaml);
    }
}
