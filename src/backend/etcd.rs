//! The etcd v3 backend: connecting (plaintext, TLS with client certificates, user and
//! password), reading every selected key at one revision, and one watch stream that
//! reports what changed after it.
//!
//! What etcd 3.4 does that this module is shaped around (see shared/research/stack.md §3):
//! - a watch never resumes by itself: after a restart or a broken connection its stream
//!   ends with an `Err`, and [`EtcdBackend::watch`] returns [`BackendError::Transient`].
//!   **The caller backs off and calls `watch` again from the last revision it applied**;
//!   this module never sleeps between watch attempts;
//! - a compacted start revision arrives as a canceled response with `compact_revision`
//!   set: the watch re-reads a snapshot, sends [`Change::Reset`] and goes on from there;
//! - a watch created with an expired auth token is canceled at creation: the token is
//!   refreshed and the watch created again;
//! - a client with several endpoints does not fail over per request (about a third of
//!   calls fail while one member is down), so every request is retried a few times;
//! - a connection can hang without breaking (a frozen member, a lost route): the watch
//!   asks for progress notifications and gives up when nothing at all arrives in time.
//!
//! Keys and values are read as UTF-8, with invalid bytes replaced (templates deal in
//! strings, as confd's do).
//!
//! Selectors, ranges and revisions are the caller's business: it passes merged selectors
//! ([`crate::kv::keys::merge`]) and keeps the mirror.

mod error;
mod watch;

pub use self::error::{ClientError, EtcdError};

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions, Txn, TxnOp,
    TxnOpResponse,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use self::error::{classify, fatal, is_invalid_token, status_code, transient};
use super::{Action, Backend, BackendError, BoxFuture};
use crate::kv::Change;
use crate::kv::Snapshot;
use crate::kv::keys;

const NAME: &str = "etcdv3";

/// etcd's default `--max-txn-ops`: the most range reads one snapshot transaction holds.
const MAX_TXN_OPS: usize = 128;

/// A snapshot or a burst of watch events can exceed tonic's 4 MiB default; etcd's own Go
/// client accepts any size, so a large key space must not be the reason a read fails.
const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Pause between attempts of one request when several endpoints are configured.
const RETRY_DELAY: Duration = Duration::from_millis(50);

/// Where etcd is and how to talk to it.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `http://host:port`, `https://host:port` or a bare `host:port` (TLS when TLS files
    /// are given, plaintext otherwise).
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA bundle (PEM) that signed the server certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Time to open a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Time one unary request (a read, a revision check) may take.
    pub request_timeout: Duration,
    /// How often an open watch asks etcd for a progress notification.
    pub progress_interval: Duration,
    /// How long a watch may hear nothing at all before it is declared stalled.
    pub stall_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            progress_interval: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(25),
        }
    }
}

/// A connected etcd client. Cheap to share: requests clone the underlying channel.
pub struct EtcdBackend {
    client: Client,
    endpoints: Vec<String>,
    request_timeout: Duration,
    progress_interval: Duration,
    stall_timeout: Duration,
}

impl EtcdBackend {
    /// Connects to `opts.endpoints`. With a user this authenticates at once (a wrong
    /// password is [`BackendError::Fatal`] here); without one the connection is lazy and
    /// the first request tells whether etcd is there.
    pub async fn connect(opts: EtcdOptions) -> Result<Self, BackendError> {
        let connect = connect_options(&opts)?;
        let client = tokio::time::timeout(
            opts.request_timeout,
            Client::connect(&opts.endpoints, Some(connect)),
        )
        .await
        .map_err(|_| {
            let endpoints = opts.endpoints.clone();
            let after = opts.request_timeout;
            transient(
                Action::Connect,
                EtcdError::ConnectTimedOut { endpoints, after },
            )
        })?
        .map_err(|e| classify(e, Action::Connect))?;
        info!(endpoints = ?opts.endpoints, tls = has_tls_files(&opts), user = opts.username.as_deref(), "connected to etcd");
        Ok(EtcdBackend {
            client,
            endpoints: opts.endpoints,
            request_timeout: opts.request_timeout,
            progress_interval: opts.progress_interval,
            stall_timeout: opts.stall_timeout,
        })
    }

    /// The store's current revision. A count-only read of the key `/`; a user that may
    /// not read `/` gets the revision of the member's status instead (possibly a little
    /// behind the leader, which is fine for a periodic "am I behind?" check).
    pub async fn current_revision(&self) -> Result<i64, BackendError> {
        let read = self
            .call(Action::Revision, |mut c| async move {
                c.get("/", Some(GetOptions::new().with_count_only())).await
            })
            .await;
        match read {
            Ok(resp) => header_revision(resp.header(), Action::Revision),
            Err(e) if status_code(&e) == Some(tonic::Code::PermissionDenied) => {
                let status = self
                    .call(Action::Status, |mut c| async move { c.status().await })
                    .await?;
                header_revision(status.header(), Action::Status)
            }
            Err(e) => Err(e),
        }
    }

    /// Every key `selectors` select, read at one revision: one transaction of prefix
    /// reads when they fit in etcd's transaction limit, else one read of the range that
    /// covers them all (the range the watch follows), filtered here. The number of
    /// requests never grows with the number of resources; batches of 128 pinned to one
    /// revision would cost one more request per 128 selectors.
    pub async fn read(&self, selectors: &[String]) -> Result<Snapshot, BackendError> {
        if selectors.len() > MAX_TXN_OPS {
            return self.read_covering(selectors).await;
        }
        let mut kvs = BTreeMap::new();
        let mut pinned: Option<i64> = None;
        for batch in selectors.chunks(MAX_TXN_OPS) {
            let txn = Txn::new().and_then(range_reads(batch, pinned));
            let resp = self
                .call(Action::Snapshot, |c| {
                    let txn = txn.clone();
                    async move {
                        let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES);
                        kv.txn(txn).await
                    }
                })
                .await?;
            let revision = *pinned.get_or_insert(header_revision(resp.header(), Action::Snapshot)?);
            for (selector, op) in batch.iter().zip(resp.op_responses()) {
                let TxnOpResponse::Get(get) = op else {
                    return Err(transient(
                        Action::Snapshot,
                        EtcdError::UnexpectedTxnResponse { revision },
                    ));
                };
                for kv in get.kvs() {
                    let key = String::from_utf8_lossy(kv.key());
                    if keys::selects(selector, &key) {
                        kvs.insert(
                            key.into_owned(),
                            String::from_utf8_lossy(kv.value()).into_owned(),
                        );
                    }
                }
            }
        }
        let revision = match pinned {
            Some(revision) => revision,
            None => self.current_revision().await?,
        };
        Ok(Snapshot::new(revision, kvs))
    }

    /// One range read of `[lowest selector, end of the highest)`, keeping the selected keys.
    async fn read_covering(&self, selectors: &[String]) -> Result<Snapshot, BackendError> {
        let Some(range) = watch::WatchRange::covering(selectors) else {
            return Ok(Snapshot::new(
                self.current_revision().await?,
                BTreeMap::new(),
            ));
        };
        let resp = self
            .call(Action::Snapshot, |c| {
                let (start, end) = (range.start.clone(), range.end.clone());
                async move {
                    let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES);
                    kv.get(start, Some(GetOptions::new().with_range(end))).await
                }
            })
            .await?;
        let selection = keys::Selection::new(selectors);
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(kv.key()), kv))
            .filter(|(key, _)| selection.selects(key))
            .map(|(key, kv)| {
                (
                    key.into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect();
        Ok(Snapshot::new(
            header_revision(resp.header(), Action::Snapshot)?,
            kvs,
        ))
    }

    /// Runs one request with the request timeout. An expired token is refreshed once;
    /// with several endpoints a failed request is tried again a few times, because the
    /// client picks an endpoint per request and a dead member fails its share of them.
    async fn call<T, F, Fut>(&self, action: Action, mut request: F) -> Result<T, BackendError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = if self.endpoints.len() > 1 {
            3 * self.endpoints.len()
        } else {
            1
        };
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match tokio::time::timeout(
                self.request_timeout,
                request(self.client.clone()),
            )
            .await
            {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
                Err(_) => {
                    return Err(transient(action, EtcdError::TimedOut(self.request_timeout)));
                }
            };
            if !refreshed && is_invalid_token(&error) {
                refreshed = true;
                self.client
                    .refresh_token()
                    .await
                    .map_err(|e| classify(e, Action::RefreshToken))?;
                continue;
            }
            let classified = classify(error, action);
            if !classified.is_transient() || attempt >= attempts {
                return Err(classified);
            }
            debug!(attempt, %action, cause = %classified, "etcd request failed; retrying");
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn snapshot<'a>(
        &'a self,
        selectors: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        Box::pin(self.read(selectors))
    }

    fn watch<'a>(
        &'a self,
        selectors: &'a [String],
        after: i64,
        changes: mpsc::Sender<Change>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.follow(selectors, after, changes, shutdown))
    }
}

/// One prefix read per selector, pinned to `revision` when given.
fn range_reads(selectors: &[String], revision: Option<i64>) -> Vec<TxnOp> {
    selectors
        .iter()
        .map(|selector| {
            let mut options = GetOptions::new().with_prefix();
            if let Some(revision) = revision {
                options = options.with_revision(revision);
            }
            TxnOp::get(selector.as_str(), Some(options))
        })
        .collect()
}

fn header_revision(
    header: Option<&etcd_client::ResponseHeader>,
    action: Action,
) -> Result<i64, BackendError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| transient(action, EtcdError::NoHeader))
}

fn has_tls_files(opts: &EtcdOptions) -> bool {
    opts.ca_file.is_some() || opts.cert_file.is_some() || opts.key_file.is_some()
}

/// Credentials, keep-alive and TLS. TLS files with an `http://` endpoint are refused
/// here, naming the endpoint: the operator asked for TLS, and etcd-client's own refusal
/// ("TLS options are only supported with HTTPS URLs") does not say which setting is off.
fn connect_options(opts: &EtcdOptions) -> Result<ConnectOptions, BackendError> {
    if opts.endpoints.is_empty() {
        return Err(fatal(Action::Connect, EtcdError::NoEndpoints));
    }
    // new(), not default(): only new() keeps pinging an idle connection, which is how
    // a dead member is noticed between requests.
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(opts.connect_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    match (&opts.username, &opts.password) {
        (Some(user), Some(password)) => {
            connect = connect
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        (None, None) => {}
        _ => return Err(fatal(Action::Connect, EtcdError::HalfCredentials)),
    }
    if has_tls_files(opts) {
        if let Some(plain) = opts.endpoints.iter().find(|e| e.starts_with("http://")) {
            let endpoint = plain.clone();
            return Err(fatal(
                Action::Connect,
                EtcdError::PlaintextEndpoint { endpoint },
            ));
        }
        connect = connect.with_tls(tls_options(opts)?);
    }
    Ok(connect)
}

/// The CA and client identity. The server name checked is each endpoint's own host
/// (tonic's default), so `https://127.0.0.1:2379` needs an IP SAN and `https://etcd-1:2379`
/// a DNS one; one fixed name would break clusters whose members have their own certs.
fn tls_options(opts: &EtcdOptions) -> Result<TlsOptions, BackendError> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = &opts.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca, "CA")?));
    }
    match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read_pem(cert, "client certificate")?,
                read_pem(key, "client key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(fatal(Action::Connect, EtcdError::HalfIdentity));
        }
    }
    Ok(tls)
}

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|source| {
        let path = path.to_path_buf();
        fatal(Action::Connect, EtcdError::TlsFile { what, path, source })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_with_a_plaintext_endpoint_are_refused() {
        let opts = EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..EtcdOptions::default()
        };
        let err = connect_options(&opts).expect_err("plaintext with TLS files");
        assert!(!err.is_transient());
        assert!(
            err.to_string()
                .contains("endpoint http://127.0.0.1:2379 is plaintext"),
            "{err}"
        );
    }
    #[test]
    fn half_credentials_are_refused() {
        let opts = EtcdOptions {
            username: Some("root".into()),
            ..EtcdOptions::default()
        };
        assert!(connect_options(&opts).is_err());
    }
}
