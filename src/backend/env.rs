//! The `env` backend: environment variables as keys, with confd's name mapping.
//!
//! A selector becomes a variable-name prefix by dropping its leading `/`, upper-casing
//! it and turning `/` into `_` (`/database` → `DATABASE`; the root `/` → every
//! variable). A variable whose name starts with that prefix comes back as the key `/`
//! followed by its lower-cased name with `_` turned into `/` (`DATABASE_HOST` →
//! `/database/host`), so keys read from the environment never contain `_`.
//!
//! One deliberate difference from confd: confd keeps every variable whose name starts
//! with the prefix, so the selector `/app/db` also pulls `APP_DBX` in as `/app/dbx`.
//! Here the mapped key must also be selected by the selector ([`keys::selects`]), as
//! with every other backend. Runs of `_` collapse into one `/` (`A__B` is `/a/b`, not
//! confd's `/a//b`), because keys are normalized everywhere else.
//!
//! The environment of a running process does not change, so a watch only waits for
//! shutdown, as confd's does.

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendError, BoxFuture};
use crate::kv::Change;
use crate::kv::Snapshot;
use crate::kv::keys;

/// Reads keys from environment variables.
#[derive(Debug, Default)]
pub struct EnvBackend {
    /// Fixed variables for tests; `None` reads the process environment at each snapshot.
    vars: Option<Vec<(String, String)>>,
}

impl EnvBackend {
    /// Reads the process environment.
    pub fn new() -> Self {
        EnvBackend { vars: None }
    }

    /// Reads the given variables instead of the process environment.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        EnvBackend {
            vars: Some(vars.into_iter().collect()),
        }
    }

    fn read(&self, selectors: &[String]) -> BTreeMap<String, String> {
        match &self.vars {
            Some(vars) => select(vars.iter().cloned(), selectors),
            // Variables that are not valid UTF-8 cannot be keys or values of a template.
            None => select(
                std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
                selectors,
            ),
        }
    }
}

/// The keys that `selectors` select among `vars`.
fn select(
    vars: impl Iterator<Item = (String, String)>,
    selectors: &[String],
) -> BTreeMap<String, String> {
    let prefixes: Vec<(&str, String)> = selectors
        .iter()
        .map(|s| (s.as_str(), env_prefix(s)))
        .collect();
    vars.filter_map(|(name, value)| {
        let key = env_key(&name);
        prefixes
            .iter()
            .any(|(selector, prefix)| {
                name.starts_with(prefix.as_str()) && keys::selects(selector, &key)
            })
            .then_some((key, value))
    })
    .collect()
}

/// The variable-name prefix for `selector`: `/app/db` → `APP_DB`, `/` → ``.
fn env_prefix(selector: &str) -> String {
    let name = selector.strip_prefix('/').unwrap_or(selector);
    name.replace('/', "_").to_uppercase()
}

/// The key for variable `name`: `APP_DB_HOST` → `/app/db/host`.
fn env_key(name: &str) -> String {
    keys::join("", &name.to_lowercase().replace('_', "/"))
}

impl Backend for EnvBackend {
    fn name(&self) -> &'static str {
        "env"
    }

    fn snapshot<'a>(
        &'a self,
        selectors: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        Box::pin(async move { Ok(Snapshot::new(1, self.read(selectors))) })
    }

    fn watch<'a>(
        &'a self,
        _selectors: &'a [String],
        _after: i64,
        changes: mpsc::Sender<Change>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = changes.closed() => {}
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(vars: &[(&str, &str)]) -> EnvBackend {
        EnvBackend::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    async fn snapshot(backend: &EnvBackend, selectors: &[&str]) -> Vec<(String, String)> {
        let selectors: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
        let snap = backend.snapshot(&selectors).await.unwrap();
        assert_eq!(snap.revision, 1);
        snap.kvs.into_iter().collect()
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_and_keys_map_both_ways() {
        assert_eq!(env_prefix("/database/host"), "DATABASE_HOST");
        assert_eq!(env_prefix("/"), "");
        assert_eq!(env_key("DATABASE_HOST"), "/database/host");
        assert_eq!(env_key("A__B_"), "/a/b");
    }

    /// The variables of confd's env integration test.
    #[tokio::test]
    async fn confd_integration_variables_map_to_keys() {
        let env = backend(&[
            ("KEY", "foobar"),
            ("DATABASE_HOST", "127.0.0.1"),
            ("DATABASE_PORT", "3306"),
            ("UPSTREAM_APP1", "10.0.1.10:8080"),
            ("HOME", "/root"),
        ]);
        assert_eq!(
            snapshot(&env, &["/key", "/database"]).await,
            pairs(&[
                ("/database/host", "127.0.0.1"),
                ("/database/port", "3306"),
                ("/key", "foobar"),
            ])
        );
    }

    #[tokio::test]
    async fn selectors_do_not_pull_in_siblings() {
        let env = backend(&[
            ("APP_DB", "a"),
            ("APP_DB_HOST", "h"),
            ("APP_DBX", "x"),
            ("APP_WEB", "w"),
        ]);
        assert_eq!(
            snapshot(&env, &["/app/db"]).await,
            pairs(&[("/app/db", "a"), ("/app/db/host", "h")])
        );
    }

    #[tokio::test]
    async fn names_must_match_the_upper_case_prefix() {
        // confd compares names with the upper-cased prefix as they are.
        let env = backend(&[("app_db_host", "lower"), ("APP_DB_PORT", "1")]);
        assert_eq!(
            snapshot(&env, &["/app/db"]).await,
            pairs(&[("/app/db/port", "1")])
        );
        assert_eq!(
            snapshot(&env, &["/"]).await,
            pairs(&[("/app/db/host", "lower"), ("/app/db/port", "1")])
        );
    }

    #[tokio::test]
    async fn the_process_environment_is_read() {
        let path = std::env::var("PATH").expect("tests run with PATH set");
        let env = EnvBackend::new();
        let kvs = snapshot(&env, &["/path"]).await;
        assert!(kvs.contains(&("/path".to_string(), path)));
    }

    #[tokio::test]
    async fn watch_waits_for_shutdown_or_a_closed_receiver() {
        let env = EnvBackend::new();
        let selectors = vec!["/".to_string()];
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(1);
        shutdown.cancel();
        env.watch(&selectors, 1, tx, shutdown).await.unwrap();
        assert!(rx.recv().await.is_none(), "nothing is ever sent");

        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        env.watch(&selectors, 1, tx, CancellationToken::new())
            .await
            .unwrap();
    }
}
