//! Go's `path.Base`, `path.Dir` and `path.Clean` on `/`-separated strings: key paths
//! as confd's templates see them.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_base_dir_clean() {
        assert_eq!(base("/a/b"), "b");
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(base(""), ".");
        assert_eq!(base("///"), "/");
        assert_eq!(base("x"), "x");
        assert_eq!(dir("/a/b"), "/a");
        assert_eq!(dir("/a/b/"), "/a/b");
        assert_eq!(dir("/a"), "/");
        assert_eq!(dir("a"), ".");
        assert_eq!(dir(""), ".");
        assert_eq!(dir("a//b"), "a");
        assert_eq!(clean("/../a/./b/../c//"), "/a/c");
        assert_eq!(clean("../a/.."), "..");
        assert_eq!(clean("a/../.."), "..");
    }
}
