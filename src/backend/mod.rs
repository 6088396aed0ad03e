//! Where key-value data comes from. Every backend answers two questions behind one
//! trait: "every key these selectors select, at one revision" ([`Backend::snapshot`])
//! and "what changed after that revision" ([`Backend::watch`]). The daemon keeps the
//! mirror and decides what to re-apply; a backend only reads and reports.
//!
//! - [`file`](mod@file): YAML, JSON and TOML files or directories (confd's `file`).
//! - [`env`](mod@env): environment variables with confd's name mapping.
//! - [`etcd`]: etcd v3.
//!
//! Failures of all three are one [`BackendError`] (see [`error`]).

pub mod env;
pub mod error;
pub mod etcd;
pub mod file;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use self::error::{Action, BackendError, Cause, Failure};
use crate::kv::{Change, Snapshot};
use crate::retry::{self, Backoff};

/// A boxed future, so that [`Backend`] stays usable as `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Backend: Send + Sync {
    /// The name used in logs and errors (`etcdv3`, `file`, `env`).
    fn name(&self) -> &'static str;

    /// Every key that `selectors` select (see [`crate::kv::keys::selects`]), read as one
    /// consistent snapshot. Keys are absolute (`/app/db/host`).
    fn snapshot<'a>(
        &'a self,
        selectors: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, BackendError>>;

    /// Sends every change to the selected keys after revision `after` to `changes`,
    /// in revision order, until `shutdown` is cancelled or `changes` is closed.
    /// Returns `Ok(())` on shutdown; an error when the watch broke and the caller
    /// must resume it (from the last revision it applied).
    fn watch<'a>(
        &'a self,
        selectors: &'a [String],
        after: i64,
        changes: mpsc::Sender<Change>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
}

/// Runs `attempt` until it succeeds, waiting by the [`retry::BACKEND`] policy after each
/// transient failure (logged with `what`); a fatal error comes back at once, and
/// `None` when `shutdown` came first.
pub async fn retry_transient<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<Option<T>, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let mut backoff = Backoff::new(retry::BACKEND);
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            result = attempt() => result,
        };
        match result {
            Ok(value) => return Ok(Some(value)),
            Err(err) if err.is_transient() => {
                let delay = backoff.next_delay();
                warn!(cause = %err, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(err) => return Err(err),
        }
    }
}
