//! Go's `path.Match` globs, the one glob dialect of conflux: confd's key lookups
//! (`gets`, `getvs`) and the file backend's `--filter` both use them, as confd does
//! (`path.Match` and `filepath.Match` agree on `/`-separated names).

/// A pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

/// A Go `path.Match` glob: `*` matches any run of characters except `/`, `?` one
/// character except `/`, `[abc]`, `[a-z]` and `[^a-z]` a character class, and `\x`
/// the character `x`. The whole key must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    /// Whether this single-character token matches `c` (never called for `Star`).
    fn matches_one(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::AnyChar => c != '/',
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

impl Pattern {
    /// Parses the whole pattern up front, so a malformed one is an error even when
    /// no key would reach the broken part (Go does the same since 1.16).
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        let bad = |reason| PatternError {
            pattern: pattern.to_string(),
            reason,
        };
        let mut chars = pattern.chars().peekable();
        let mut tokens = Vec::new();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => Token::Star,
                '?' => Token::AnyChar,
                '\\' => Token::Literal(chars.next().ok_or_else(|| bad("trailing backslash"))?),
                '[' => parse_class(&mut chars).map_err(bad)?,
                c => Token::Literal(c),
            };
            tokens.push(token);
        }
        Ok(Pattern { tokens })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let chars: Vec<char> = name.chars().collect();
        let (t, s) = (self.tokens.len(), chars.len());
        // table[i][j]: tokens[i..] match chars[j..]. Quadratic at worst, where
        // naive backtracking over several stars is exponential.
        let mut table = vec![vec![false; s + 1]; t + 1];
        table[t][s] = true;
        for i in (0..t).rev() {
            for j in (0..=s).rev() {
                table[i][j] = match &self.tokens[i] {
                    Token::Star => table[i + 1][j] || (j < s && chars[j] != '/' && table[i][j + 1]),
                    token => j < s && token.matches_one(chars[j]) && table[i + 1][j + 1],
                };
            }
        }
        table[0][0]
    }

    /// The literal characters before the first wildcard: every match starts with them.
    pub fn literal_prefix(&self) -> String {
        self.tokens
            .iter()
            .map_while(|t| match t {
                Token::Literal(c) => Some(*c),
                _ => None,
            })
            .collect()
    }
}

/// Parses a class after its `[`, Go's way: `]` closes it only after one range, `-`
/// and `]` must be escaped inside it, and it must be closed.
fn parse_class(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<Token, &'static str> {
    let negated = chars.next_if_eq(&'^').is_some();
    let mut ranges = Vec::new();
    loop {
        if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
            return Ok(Token::Class { negated, ranges });
        }
        let lo = class_char(chars)?;
        let hi = if chars.next_if_eq(&'-').is_some() {
            class_char(chars)?
        } else {
            lo
        };
        ranges.push((lo, hi));
    }
}

fn class_char(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, &'static str> {
    match chars.next() {
        None => Err("unclosed character class"),
        Some('-' | ']') => Err("unescaped '-' or ']' in character class"),
        Some('\\') => chars.next().ok_or("unclosed character class"),
        Some(c) => Ok(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_follows_go_path_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("a?b", "a/b", false),
            ("*x", "xxx", true),
        ];
        for (pattern, name, want) in cases {
            let p = Pattern::parse(pattern).unwrap();
            assert_eq!(p.matches(name), *want, "{pattern} vs {name}");
        }
    }
}

/// Properties over any input: no pattern panics the parser or the matcher, a pattern
/// without wildcards matches exactly itself, and an escaped string matches itself.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_pattern_and_name_neither_panic(pattern in ".{0,24}", name in ".{0,24}") {
            if let Ok(p) = Pattern::parse(&pattern) {
                let _ = p.matches(&name);
            }
        }

        #[test]
        fn a_literal_matches_only_itself(text in "[a-z0-9/._-]{0,16}", other in "[a-z0-9/._-]{0,16}") {
            let p = Pattern::parse(&text).expect("a literal parses");
            prop_assert!(p.matches(&text));
            prop_assert_eq!(p.matches(&other), other == text);
        }

        #[test]
        fn an_escaped_string_matches_itself(text in ".{0,16}") {
            let escaped: String = text.chars().flat_map(|c| ['\\', c]).collect();
            let p = Pattern::parse(&escaped).expect("an escaped string parses");
            prop_assert!(p.matches(&text));
        }
    }
}
