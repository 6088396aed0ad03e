//! The prefix-relative keys one template sees, and confd's lookups over them
//! (`getv`, `gets`, `getvs`, `exists`, `ls`, `lsdir`). Template functions in
//! [`crate::template`] are thin wrappers over these methods.
//!
//! Semantics follow confd's memkv, with two of its bugs fixed: `ls("/")` lists every
//! top-level name (confd lists only top-level leaves) and `lsdir("/")` lists the
//! top-level directories (confd always returns nothing). Patterns are Go `path.Match`
//! globs, see [`Pattern`].
//!
//! Cutting a store out of a snapshot is [`crate::mirror::Snapshot::store`]'s job.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::keys;

/// Keys relative to a resource's prefix (`/db/host`) to values, at one revision.
///
/// Cloning is cheap (the map is shared): a render hands a clone to the template
/// functions for its duration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    revision: i64,
    kvs: Arc<BTreeMap<String, String>>,
}

/// A lookup that cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("key not found: {0}")]
    KeyNotFound(String),
    #[error("bad pattern {pattern:?}: {reason}")]
    BadPattern {
        pattern: String,
        reason: &'static str,
    },
}

impl Store {
    pub fn new(revision: i64, kvs: BTreeMap<String, String>) -> Self {
        Store {
            revision,
            kvs: Arc::new(kvs),
        }
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }

    /// The value of exactly `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.kvs.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.kvs.iter()
    }

    /// confd's `getv` without a default: the value of `key`, or an error naming it.
    pub fn getv(&self, key: &str) -> Result<&str, LookupError> {
        self.get(key)
            .ok_or_else(|| LookupError::KeyNotFound(key.to_string()))
    }

    /// Every key matching the glob `pattern`, with its value, sorted by key.
    pub fn gets(&self, pattern: &str) -> Result<Vec<(&str, &str)>, LookupError> {
        let pattern = Pattern::parse(pattern)?;
        let prefix = pattern.literal_prefix();
        // Keys are sorted, so only the range sharing the pattern's literal prefix
        // can match: `/upstream/*` never looks at keys outside `/upstream/`.
        Ok(self
            .kvs
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix.as_str()))
            .filter(|(k, _)| pattern.matches(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect())
    }

    /// The values of every key matching `pattern`, sorted by value (as confd does).
    pub fn getvs(&self, pattern: &str) -> Result<Vec<&str>, LookupError> {
        let mut values: Vec<&str> = self.gets(pattern)?.into_iter().map(|(_, v)| v).collect();
        values.sort_unstable();
        Ok(values)
    }

    /// Whether exactly `key` is present; a "directory" with keys below it is not a key.
    pub fn exists(&self, key: &str) -> bool {
        self.kvs.contains_key(key)
    }

    /// Sorted unique names of the immediate children of `path`. A key equal to `path`
    /// contributes its own base name, as in confd (`ls("/e")` is `["e"]` when `/e` is a key).
    pub fn ls(&self, path: &str) -> Vec<String> {
        let path = keys::join("", path);
        let mut names = BTreeSet::new();
        for key in self.kvs.keys() {
            if *key == path {
                names.insert(go_path::base(key));
            } else if let Some(rest) = below(&path, key) {
                names.insert(first_segment(rest).to_string());
            }
        }
        names.into_iter().collect()
    }

    /// Sorted unique names of the immediate children of `path` that have children.
    pub fn lsdir(&self, path: &str) -> Vec<String> {
        let path = keys::join("", path);
        let mut names = BTreeSet::new();
        for key in self.kvs.keys() {
            if let Some((child, _)) = below(&path, key).and_then(|rest| rest.split_once('/')) {
                names.insert(child.to_string());
            }
        }
        names.into_iter().collect()
    }
}

/// The part of `key` below the normalized directory `dir`, without the leading `/`;
/// `None` when `key` is not strictly below `dir`.
fn below<'k>(dir: &str, key: &'k str) -> Option<&'k str> {
    let rest = if dir == "/" {
        key.strip_prefix('/')?
    } else {
        key.strip_prefix(dir)?.strip_prefix('/')?
    };
    (!rest.is_empty()).then_some(rest)
}

fn first_segment(rest: &str) -> &str {
    rest.split('/').next().unwrap_or(rest)
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
    pub fn parse(pattern: &str) -> Result<Pattern, LookupError> {
        let bad = |reason| LookupError::BadPattern {
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
    fn literal_prefix(&self) -> String {
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

/// Go's `path.Base`, `path.Dir` and `path.Clean` on `/`-separated strings.
pub mod go_path {
    /// The last element: trailing slashes dropped, `""` → `.`, all slashes → `/`.
    pub fn base(path: &str) -> String {
        if path.is_empty() {
            return ".".to_string();
        }
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty() {
            return "/".to_string();
        }
        match trimmed.rfind('/') {
            Some(i) => trimmed[i + 1..].to_string(),
            None => trimmed.to_string(),
        }
    }

    /// Everything but the last element, cleaned: `dir("/a/b")` is `/a`, `dir("a")` is `.`.
    pub fn dir(path: &str) -> String {
        let head = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "",
        };
        clean(head)
    }

    /// The shortest equivalent path: no `//`, `.` or `x/..`; `""` → `.`.
    pub fn clean(path: &str) -> String {
        let rooted = path.starts_with('/');
        let mut parts: Vec<&str> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.last().is_some_and(|p| *p != "..") {
                        parts.pop();
                    } else if !rooted {
                        parts.push("..");
                    }
                }
                p => parts.push(p),
            }
        }
        let joined = parts.join("/");
        match (rooted, joined.is_empty()) {
            (true, _) => format!("/{joined}"),
            (false, true) => ".".to_string(),
            (false, false) => joined,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(pairs: &[(&str, &str)]) -> Store {
        Store::new(
            3,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// confd's verified vectors for `/a/b/c=1, /a/d=22, /e=333`.
    fn confd_store() -> Store {
        store(&[("/a/b/c", "1"), ("/a/d", "22"), ("/e", "333")])
    }

    #[test]
    fn confd_vectors() {
        let s = confd_store();
        assert_eq!(s.ls("/a"), vec!["b", "d"]);
        assert_eq!(s.lsdir("/a"), vec!["b"]);
        assert_eq!(s.getvs("/a/*").unwrap(), vec!["22"]);
        assert!(!s.exists("/a"));
        assert!(s.exists("/e"));
    }

    #[test]
    fn ls_of_a_key_lists_its_own_base_name() {
        assert_eq!(confd_store().ls("/e"), vec!["e"]);
        assert_eq!(confd_store().ls("/a/b/c"), vec!["c"]);
    }

    #[test]
    fn ls_and_lsdir_of_root_list_top_level_names() {
        // confd lists only leaves for ls "/" and nothing for lsdir "/"; fixed here.
        let s = confd_store();
        assert_eq!(s.ls("/"), vec!["a", "e"]);
        assert_eq!(s.lsdir("/"), vec!["a"]);
        assert_eq!(s.ls(""), vec!["a", "e"]);
    }

    #[test]
    fn ls_normalizes_the_path_and_skips_siblings() {
        let s = store(&[("/a/x", "1"), ("/ab/y", "2"), ("/a/z/w", "3")]);
        assert_eq!(s.ls("/a/"), vec!["x", "z"]);
        assert_eq!(s.lsdir("/a/"), vec!["z"]);
        assert!(s.ls("/missing").is_empty());
        assert!(s.lsdir("/a/x").is_empty());
    }

    #[test]
    fn getv_names_the_missing_key() {
        let s = confd_store();
        assert_eq!(s.getv("/e"), Ok("333"));
        assert_eq!(
            s.getv("/nope").unwrap_err().to_string(),
            "key not found: /nope"
        );
    }

    #[test]
    fn gets_sorts_by_key_and_getvs_by_value() {
        let s = store(&[
            ("/up/a", "9"),
            ("/up/b", "10"),
            ("/up/c/d", "x"),
            ("/upx", "y"),
        ]);
        assert_eq!(
            s.gets("/up/*").unwrap(),
            vec![("/up/a", "9"), ("/up/b", "10")]
        );
        assert_eq!(s.getvs("/up/*").unwrap(), vec!["10", "9"]);
        assert_eq!(s.gets("/up/*/*").unwrap(), vec![("/up/c/d", "x")]);
        assert!(s.gets("/none/*").unwrap().is_empty());
        assert_eq!(s.gets("/*").unwrap(), vec![("/upx", "y")]);
    }

    #[test]
    fn a_bad_pattern_is_an_error() {
        for bad in ["/a/[", "/a/[]", "/a/[^]", "/a\\", "/a/[a-]", "/[z"] {
            assert!(
                matches!(confd_store().gets(bad), Err(LookupError::BadPattern { .. })),
                "{bad}"
            );
        }
    }

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

    #[test]
    fn go_path_base_dir_clean() {
        assert_eq!(go_path::base("/a/b"), "b");
        assert_eq!(go_path::base("/a/b/"), "b");
        assert_eq!(go_path::base(""), ".");
        assert_eq!(go_path::base("///"), "/");
        assert_eq!(go_path::base("x"), "x");
        assert_eq!(go_path::dir("/a/b"), "/a");
        assert_eq!(go_path::dir("/a/b/"), "/a/b");
        assert_eq!(go_path::dir("/a"), "/");
        assert_eq!(go_path::dir("a"), ".");
        assert_eq!(go_path::dir(""), ".");
        assert_eq!(go_path::dir("a//b"), "a");
        assert_eq!(go_path::clean("/../a/./b/../c//"), "/a/c");
        assert_eq!(go_path::clean("../a/.."), "..");
        assert_eq!(go_path::clean("a/../.."), "..");
    }

    #[test]
    fn clones_share_the_map() {
        let s = confd_store();
        let c = s.clone();
        assert!(Arc::ptr_eq(&s.kvs, &c.kvs));
        assert_eq!(c.revision(), 3);
    }
}
