//! `conflux register`: the writing half of service discovery. An instance holds one key
//! in etcd under a lease while it is healthy, so that a gateway rendered by conflux
//! (the reading half) sends it traffic exactly then: the key is put once the health
//! check has passed `rise` times in a row, deleted (its lease revoked) after `fall`
//! failures in a row or on SIGTERM, and left to expire with the lease, within its TTL,
//! when the process is killed.
//!
//! - `settings`: the flags and the daemon's connection settings (config file,
//!   environment, flags) → one validated [`Setup`].
//! - `health`: HAProxy's rise/fall counting, and the task that runs the check.
//! - `lease`: the etcd requests: grant, revoke, claim the key, keep-alive, watch.
//! - `holder`: the loop that makes etcd match the health, through etcd outages, leases
//!   that expired meanwhile and keys deleted or taken by others.
//! - `memo`: this registration's file in the state directory: a lock against a second
//!   process for the same key, and the lease last granted, so that a restart after a
//!   crash revokes its predecessor's lease instead of calling its key someone else's.
//!
//! Left to others: the connection (timeouts, fail-over, token refresh, TLS) to
//! [`crate::backend::etcd`], running the check to [`crate::command`], the waits between
//! retries to [`crate::retry`], signals and the log set-up to `main`.

mod health;
mod holder;
mod lease;
mod memo;
mod settings;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::backend::BackendError;
use crate::backend::etcd::EtcdBackend;
use crate::config::ConfigError;
use crate::state::{StateDir, StateError};

pub use settings::{HealthCheck, Registration, Setup, load};

/// Why `conflux register` stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--value-file {}: {source}", .path.display())]
    ValueFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    /// etcd refuses in a way retrying will not fix: credentials, TLS, permissions.
    #[error(transparent)]
    Backend(BackendError),
    #[error(
        "another conflux register is running for {key} (it holds {}): stop it first",
        .lock.display()
    )]
    Running { key: String, lock: PathBuf },
    #[error(
        "{key} is held by another instance (lease {lease}, value {value:?}): not overwriting \
         it; stop that instance, wait for its lease to expire (at most its TTL), or pass \
         --replace to take the key"
    )]
    Held {
        key: String,
        lease: String,
        value: String,
    },
    #[error(
        "{key} was taken over by another instance (lease {lease}, started with --replace?): \
         this one no longer registers it"
    )]
    TakenOver { key: String, lease: String },
}

impl RegisterError {
    /// 1 when another instance is in the way, 2 for what the operator must fix in the
    /// settings (as the daemon's configuration errors).
    pub fn exit_code(&self) -> u8 {
        match self {
            RegisterError::Running { .. }
            | RegisterError::Held { .. }
            | RegisterError::TakenOver { .. } => 1,
            RegisterError::Config(_)
            | RegisterError::ValueFile { .. }
            | RegisterError::State(_)
            | RegisterError::Backend(_) => 2,
        }
    }
}

/// Holds the registration until `shutdown` is cancelled (then the lease is revoked and
/// the result is `Ok`), or until another instance is in the way, or etcd refuses the
/// settings.
pub async fn run(setup: Setup, shutdown: CancellationToken) -> Result<(), RegisterError> {
    let state = StateDir::open(&setup.config.state_dir, true)?;
    let memo = memo::Memo::open(&state, &setup.registration.key)?;
    let health = health::start(
        &setup.registration.key,
        setup.registration.check.clone(),
        shutdown.clone(),
    );
    let registration = &setup.registration;
    info!(
        key = %registration.key,
        ttl_s = registration.ttl_secs,
        check = registration.check.as_ref().map(|c| c.command.line.as_str()),
        "registering while healthy"
    );
    let connect = || async {
        let endpoints = crate::run::etcd_endpoints(&setup.etcd).await?;
        EtcdBackend::connect(lease::client_options(&setup, endpoints)).await
    };
    let backend = match crate::backend::retry_transient("connect to etcd", &shutdown, connect).await
    {
        Ok(Some(backend)) => backend,
        Ok(None) => return Ok(()),
        Err(e) => return Err(RegisterError::Backend(e)),
    };
    holder::Holder::new(lease::Etcd::new(backend), setup.registration, memo)
        .hold(health, &shutdown)
        .await
}

/// A lease id as etcdctl prints it (hex), so that log lines can be pasted into
/// `etcdctl lease timetolive`.
fn hex(lease: i64) -> String {
    format!("{lease:x}")
}
