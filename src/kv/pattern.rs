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
    /// The literal characters before the first wildcard, and how many tokens they are.
    literal: String,
    literal_tokens: usize,
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
        let literal: String = tokens
            .iter()
            .map_while(|t| match t {
                Token::Literal(c) => Some(*c),
                _ => None,
            })
            .collect();
        let literal_tokens = literal.chars().count();
        Ok(Pattern {
            tokens,
            literal,
            literal_tokens,
        })
    }

    /// Whether the whole of `name` matches.
    ///
    /// One pass with backtracking to the last `*` only, as glob matchers do, with no
    /// allocation for ASCII names: `gets` calls this once per key in range, and the
    /// dynamic-programming table it replaced allocated a row per token on every call
    /// (1.3 of the 2 million allocations of a `gets` over 100,000 keys, measured with
    /// benches/render.rs). Backtracking to an earlier star is never needed: a star
    /// cannot cross `/`, so a later star that cannot grow past a `/` leaves nothing an
    /// earlier one could do better (checked against the table on random patterns). A
    /// class that matches `/` (`[^a]`) is the exception, where this takes the first
    /// place the piece after a star fits, as Go's `path.Match` does.
    pub fn matches(&self, name: &str) -> bool {
        self.matches_from(0, name)
    }

    /// [`Pattern::matches`] for a key of a range read from the [`literal_prefix`]
    /// (`Pattern::literal_prefix`): past a cheap check that it is there, only the rest
    /// is compared token by token.
    pub fn matches_after_literal_prefix(&self, name: &str) -> bool {
        match name.strip_prefix(self.literal.as_str()) {
            Some(rest) => self.matches_from(self.literal_tokens, rest),
            None => false,
        }
    }

    /// Whether `tokens[first..]` match the whole of `name`.
    fn matches_from(&self, first: usize, name: &str) -> bool {
        // The most common rest of a pattern (`/upstream/*`), as Go special-cases it: a
        // trailing star matches what is left unless it crosses a `/`.
        if let [Token::Star] = &self.tokens[first..] {
            return !name.contains('/');
        }
        if name.is_ascii() {
            let bytes = name.as_bytes();
            self.matches_at(first, bytes.len(), |i| char::from(bytes[i]))
        } else {
            let chars: Vec<char> = name.chars().collect();
            self.matches_at(first, chars.len(), |i| chars[i])
        }
    }

    /// Whether `tokens[first..]` match a name of `len` characters, the `i`th given by `at`.
    fn matches_at(&self, first: usize, len: usize, at: impl Fn(usize) -> char) -> bool {
        let tokens = &self.tokens[first..];
        let (mut t, mut s) = (0, 0);
        // The token after the last star seen, and where that star's match ends.
        let mut star: Option<(usize, usize)> = None;
        while s < len {
            match tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t + 1, s));
                    t += 1;
                }
                Some(token) if token.matches_one(at(s)) => {
                    t += 1;
                    s += 1;
                }
                _ => match star {
                    Some((after, end)) if at(end) != '/' => {
                        star = Some((after, end + 1));
                        t = after;
                        s = end + 1;
                    }
                    _ => return false,
                },
            }
        }
        tokens[t..].iter().all(|token| *token == Token::Star)
    }

    /// The matcher [`Pattern::matches`] replaced, kept as the oracle of its tests.
    #[cfg(test)]
    fn matches_by_table(&self, name: &str) -> bool {
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
        self.literal.clone()
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
            assert_eq!(p.matches_by_table(name), *want, "{pattern} vs {name}");
            if name.starts_with(&p.literal_prefix()) {
                assert_eq!(
                    p.matches_after_literal_prefix(name),
                    *want,
                    "{pattern} vs {name}"
                );
            }
        }
    }

    #[test]
    fn matching_agrees_with_the_exhaustive_table_on_random_patterns() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let pick = |rng: &mut rand::rngs::StdRng, from: &[&str], n: usize| -> String {
            (0..n)
                .map(|_| from[rng.random_range(0..from.len())])
                .collect()
        };
        // No class that matches `/`: there the table and Go differ (Go's matcher takes
        // the first place each piece after a star fits, as this one does: `*[^a]**`
        // against `ac/a` is false in Go and here, true by the table).
        let pattern_parts = ["a", "b", "/", "*", "?", "[ab]", "[^/a]", "**", "\\*"];
        let name_parts = ["a", "b", "/", "c", "☺"];
        for _ in 0..20_000 {
            let n = rng.random_range(0..7);
            let pattern = Pattern::parse(&pick(&mut rng, &pattern_parts, n)).unwrap();
            let n = rng.random_range(0..9);
            let name = pick(&mut rng, &name_parts, n);
            assert_eq!(
                pattern.matches(&name),
                pattern.matches_by_table(&name),
                "{pattern:?} vs {name}"
            );
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
