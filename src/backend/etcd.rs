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
//!
//! Inside: `connect` turns [`EtcdOptions`] into the client's settings, `error` says what
//! failed and whether to retry, `watch` follows the one watch stream.

mod connect;
mod error;
mod page;
mod watch;

pub use self::connect::{DEFAULT_ENDPOINT, EtcdOptions};
pub use self::error::{ClientError, EtcdError, classify, is_not_found};

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Client, GetOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::connect::{connect_options, has_tls_files};
use self::error::{is_invalid_token, status_code, transient};
use super::{Action, Backend, BackendError, BoxFuture};
use crate::kv::Change;
use crate::kv::Snapshot;
use crate::kv::keys;
use crate::retry::{self, Backoff};

/// The backend's name in logs and errors.
pub const NAME: &str = "etcdv3";

/// etcd's default `--max-txn-ops`: the most range reads one snapshot transaction holds.
const MAX_TXN_OPS: usize = 128;

/// A snapshot or a burst of watch events can exceed tonic's 4 MiB default; etcd's own Go
/// client accepts any size, so a large key space must not be the reason a read fails.
const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// A connected etcd client. Cheap to share: requests clone the underlying channel.
pub struct EtcdBackend {
    client: Client,
    /// The cluster the last snapshot was read from (0 until one was read): a watch
    /// answered by another one must not be trusted to continue its history.
    cluster_id: AtomicU64,
    /// Keys already warned about for bytes that are not UTF-8 (once per key).
    lossy: Mutex<HashSet<String>>,
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
            cluster_id: AtomicU64::new(0),
            lossy: Mutex::new(HashSet::new()),
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
    ///
    /// Large ranges come in pages of [`PAGE`] keys, each read at the revision of the
    /// first: one response of 100,000 keys, decoded whole, was held beside the map it
    /// became (about 3× the key space at the peak); a page is turned into pairs and
    /// dropped before the next is read. A key space under one page per selector is
    /// still one request.
    pub async fn read(&self, selectors: &[String]) -> Result<Snapshot, BackendError> {
        let mut pairs = Vec::new();
        let revision = if selectors.is_empty() {
            self.current_revision().await?
        } else if selectors.len() > MAX_TXN_OPS {
            self.read_covering(selectors, &mut pairs).await?
        } else {
            self.read_prefixes(selectors, &mut pairs).await?
        };
        // Prefix reads of `/a` and `/a-b` come in selector order, not key order;
        // collecting sorted pairs builds the tree with full nodes (inserting one at a
        // time leaves them half full).
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(Snapshot::new(revision, pairs.into_iter().collect()))
    }

    /// One transaction of prefix reads, each limited to a page; a selector with more
    /// keys is read on by pages at the transaction's revision. Returns the revision.
    async fn read_prefixes(
        &self,
        selectors: &[String],
        pairs: &mut Vec<(String, String)>,
    ) -> Result<i64, BackendError> {
        let txn = Txn::new().and_then(range_reads(selectors));
        let resp = self
            .call(Action::Snapshot, |c| {
                let txn = txn.clone();
                async move {
                    let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES);
                    kv.txn(txn).await
                }
            })
            .await?;
        self.note_cluster(resp.header());
        let revision = header_revision(resp.header(), Action::Snapshot)?;
        // etcd-client hands out the answers only as copies: drop the original at once,
        // so that the first pages are not held twice while they are turned into pairs.
        let ops = resp.op_responses();
        drop(resp);
        for (selector, op) in selectors.iter().zip(ops) {
            let TxnOpResponse::Get(mut get) = op else {
                return Err(transient(
                    Action::Snapshot,
                    EtcdError::UnexpectedTxnResponse { revision },
                ));
            };
            let keep = |key: &str| keys::selects(selector, key);
            let next = page::take(&mut get, keep, pairs, &mut |key, what| {
                self.lossy(key, what)
            });
            if let Some(start) = next {
                let range = page::Range {
                    start,
                    end: watch::prefix_end(selector.as_bytes()),
                };
                self.read_pages(range, Some(revision), keep, pairs).await?;
            }
        }
        Ok(revision)
    }

    /// The range covering every selector, by pages, keeping the selected keys.
    async fn read_covering(
        &self,
        selectors: &[String],
        pairs: &mut Vec<(String, String)>,
    ) -> Result<i64, BackendError> {
        let Some(range) = watch::WatchRange::covering(selectors) else {
            return self.current_revision().await;
        };
        let selection = keys::Selection::new(selectors);
        let range = page::Range {
            start: range.start,
            end: range.end,
        };
        self.read_pages(range, None, |key| selection.selects(key), pairs)
            .await
    }

    /// Reads `range` a page at a time, at `revision` (or at the first page's), keeping
    /// the pairs `keep` accepts. Returns the revision read.
    async fn read_pages(
        &self,
        mut range: page::Range,
        mut revision: Option<i64>,
        keep: impl Fn(&str) -> bool,
        pairs: &mut Vec<(String, String)>,
    ) -> Result<i64, BackendError> {
        loop {
            let request = range.request(revision);
            let mut resp = self
                .call(Action::Snapshot, |c| {
                    let (start, options) = request.clone();
                    async move {
                        let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES);
                        kv.get(start, Some(options)).await
                    }
                })
                .await?;
            self.note_cluster(resp.header());
            let read = *revision.get_or_insert(header_revision(resp.header(), Action::Snapshot)?);
            match page::take(&mut resp, &keep, pairs, &mut |key, what| {
                self.lossy(key, what)
            }) {
                Some(next) => range.start = next,
                None => return Ok(read),
            }
        }
    }

    /// Runs one request with the request timeout. An expired token is refreshed once;
    /// with several endpoints a failed request is tried again, three times per member
    /// with the waits of [`retry::REQUEST`], because the client picks an endpoint per
    /// request and a dead member fails its share of them. The fixed 50 ms pause this
    /// replaces spread a request's attempts over less than half a second, shorter than
    /// a leader election; a longer fixed pause would slow the common case, one retry.
    ///
    /// Public for the other etcd users of the crate (`conflux register`'s leases), so
    /// that every request to etcd gets the same timeout, token refresh and fail-over.
    /// `request` may turn an error it expects into a value (a revoked lease that is
    /// already gone) before this classifies it.
    pub async fn call<T, F, Fut>(&self, action: Action, mut request: F) -> Result<T, BackendError>
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
        let mut backoff = Backoff::new(retry::REQUEST);
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
            tokio::time::sleep(backoff.next_delay()).await;
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

/// One prefix read per selector, a page at most each.
fn range_reads(selectors: &[String]) -> Vec<TxnOp> {
    selectors
        .iter()
        .map(|selector| {
            let options = GetOptions::new().with_prefix().with_limit(page::PAGE);
            TxnOp::get(selector.as_str(), Some(options))
        })
        .collect()
}

impl EtcdBackend {
    /// Records the cluster a snapshot was read from.
    fn note_cluster(&self, header: Option<&etcd_client::ResponseHeader>) {
        if let Some(header) = header {
            self.cluster_id
                .store(header.cluster_id(), Ordering::Relaxed);
        }
    }

    /// A key and its value as text. Templates deal in strings, as confd's do: invalid
    /// UTF-8 is replaced with U+FFFD, and said once per key (naming the key, never the
    /// value), so that a binary value does not slip into a config unnoticed.
    fn text(&self, key: &[u8], value: &[u8]) -> (String, String) {
        let key_text = String::from_utf8_lossy(key).into_owned();
        let value_text = String::from_utf8_lossy(value).into_owned();
        if std::str::from_utf8(key).is_err() {
            self.lossy(&key_text, "key");
        } else if std::str::from_utf8(value).is_err() {
            self.lossy(&key_text, "value");
        }
        (key_text, value_text)
    }

    /// Says once per key that its `what` (key or value) was not UTF-8.
    fn lossy(&self, key: &str, what: &'static str) {
        let first = self
            .lossy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_string());
        if first {
            warn!(key, "the {what} is not UTF-8: invalid bytes read as U+FFFD");
        }
    }

    /// Whether `cluster_id` differs from the snapshot's cluster (known ones only).
    fn cluster_changed(&self, cluster_id: u64) -> bool {
        let known = self.cluster_id.load(Ordering::Relaxed);
        known != 0 && cluster_id != 0 && known != cluster_id
    }
}

fn header_revision(
    header: Option<&etcd_client::ResponseHeader>,
    action: Action,
) -> Result<i64, BackendError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| transient(action, EtcdError::NoHeader))
}
