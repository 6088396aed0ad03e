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
            matches!(confd_store().gets(bad), Err(LookupError::BadPattern(_))),
            "{bad}"
        );
    }
}

#[test]
fn store_strips_the_prefix() {
    let s = Arc::new(Snapshot::new(
        7,
        [
            ("/app/db/host", "h"),
            ("/app/web/port", "80"),
            ("/other", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    ));
    let store = Store::cut(&s, "/app", &["/app/db".to_string()]);
    assert_eq!(store.revision(), 7);
    assert_eq!(store.get("/db/host"), Some("h"));
    assert_eq!(store.get("/web/port"), None);
}

#[test]
fn clones_share_the_map() {
    let s = confd_store();
    let c = s.clone();
    assert!(Arc::ptr_eq(&s.snapshot, &c.snapshot));
    assert_eq!(c.revision(), 3);
}

fn absolute(pairs: &[(&str, &str)]) -> Arc<Snapshot> {
    Arc::new(Snapshot::new(
        9,
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
}

/// The view and confd's copy (relative keys, cleaned) must answer every lookup alike.
fn same_as_copy(snapshot: &Arc<Snapshot>, prefix: &str, selectors: &[&str]) -> Store {
    let selectors: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
    let view = Store::cut(snapshot, prefix, &selectors);
    let copy = Store::copied(snapshot, prefix, &selectors);
    let pairs = |s: &Store| {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(pairs(&view), pairs(&copy), "{prefix} {selectors:?}");
    for path in ["/", "/db", "/db/", "/a", "/web", "/x/y", ""] {
        assert_eq!(view.ls(path), copy.ls(path), "ls {path}");
        assert_eq!(view.lsdir(path), copy.lsdir(path), "lsdir {path}");
        assert_eq!(view.get(path), copy.get(path), "get {path}");
    }
    for pattern in ["/*", "/*/*", "/db/*", "*", "/d*", "/[a-z]*/host", "/"] {
        assert_eq!(view.gets(pattern), copy.gets(pattern), "gets {pattern}");
    }
    assert_eq!(view.len(), copy.len());
    view
}

#[test]
fn a_view_answers_as_the_copy_did() {
    let s = absolute(&[
        ("/app", "own"),
        ("/app-x/a", "sibling"),
        ("/app/a", "1"),
        ("/app/db", "d"),
        ("/app/db-x", "dx"),
        ("/app/db/host", "h"),
        ("/app/db/port", "p"),
        ("/app/web/x/y", "w"),
        ("/apple", "no"),
        ("/other", "o"),
    ]);
    same_as_copy(&s, "/app", &["/app"]);
    same_as_copy(&s, "/app", &["/app/db"]);
    same_as_copy(&s, "/app", &["/app/db", "/app/web", "/app/a"]);
    let view = same_as_copy(&s, "/", &["/"]);
    assert_eq!(view.get("/app/db/host"), Some("h"));
    let view = same_as_copy(&s, "/app", &["/app/db"]);
    assert_eq!(view.get("/db"), Some("d"));
    assert_eq!(
        view.get("/db-x"),
        None,
        "a sibling of a selector is not selected"
    );
    assert_eq!(
        view.get("db"),
        None,
        "a key that is not relative is never found"
    );
    assert_eq!(view.get("/"), None);
    let many: Vec<String> = (0..20).map(|i| format!("/app/s{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).chain(["/app/db"]).collect();
    same_as_copy(&s, "/app", &many);
}

#[test]
fn keys_that_path_cleaning_renames_are_served_from_a_copy() {
    // confd cleans relative keys (`path.Join`): `/app/db/` is `/db`, `/app//x` is `/x`.
    let s = absolute(&[
        ("/app/db/", "slash"),
        ("/app//x", "double"),
        ("/app/y", "y"),
    ]);
    let store = same_as_copy(&s, "/app", &["/app"]);
    assert_eq!(store.get("/db"), Some("slash"));
    assert_eq!(store.get("/x"), Some("double"));
    // A renamed key outside the selectors does not force the copy.
    let view = Store::cut(&s, "/app", &["/app/y".to_string()]);
    assert!(Arc::ptr_eq(&view.snapshot, &s));
}

#[test]
fn matches_are_keys_and_directories_at_the_pattern_depth() {
    let s = store(&[
        ("/s/api/1", "a"),
        ("/s/web", "w"),
        ("/s/web-x/1", "x"),
        ("/s/web/1", "b"),
        ("/t/other", "o"),
    ]);
    let pattern = Pattern::parse("/s/*").unwrap();
    assert_eq!(
        s.matches(&pattern, 2),
        vec![
            ("/s/api".to_string(), None),
            ("/s/web".to_string(), Some("w")),
            ("/s/web-x".to_string(), None),
        ]
    );
    let deep = Pattern::parse("/s/*/1").unwrap();
    assert_eq!(s.matches(&deep, 3).len(), 3);
}
