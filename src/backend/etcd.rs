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
//! ([`crate::keys::merge`]) and keeps the mirror.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchResponse,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Backend, BackendError, BoxFuture, Change, Event};
use crate::keys;
use crate::mirror::Snapshot;

const NAME: &str = "etcdv3";

/// etcd's default `--max-txn-ops`: the most range reads one snapshot transaction holds.
const MAX_TXN_OPS: usize = 128;

/// A snapshot or a burst of watch events can exceed tonic's 4 MiB default; etcd's own Go
/// client accepts any size, so a large key space must not be the reason a read fails.
const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Pause between attempts of one request when several endpoints are configured.
const RETRY_DELAY: Duration = Duration::from_millis(50);

/// How a watch that was refused for an expired token is retried before giving up.
const MAX_TOKEN_REFRESHES: u32 = 2;

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
        .map_err(|_| transient(format!("connecting to {:?} timed out", opts.endpoints)))?
        .map_err(|e| classify(&e, "connect"))?;
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
            .call("revision", |mut c| async move {
                c.get("/", Some(GetOptions::new().with_count_only())).await
            })
            .await;
        match read {
            Ok(resp) => header_revision(resp.header()),
            Err(e) if e.to_string().contains("permission denied") => {
                let status = self
                    .call("status", |mut c| async move { c.status().await })
                    .await?;
                header_revision(status.header())
            }
            Err(e) => Err(e),
        }
    }

    /// Every key `selectors` select, read at one revision: one transaction of prefix
    /// reads when they fit in etcd's transaction limit, else batches where every batch
    /// after the first reads at the first one's revision.
    pub async fn read(&self, selectors: &[String]) -> Result<Snapshot, BackendError> {
        let mut kvs = BTreeMap::new();
        let mut pinned: Option<i64> = None;
        for batch in selectors.chunks(MAX_TXN_OPS) {
            let txn = Txn::new().and_then(range_reads(batch, pinned));
            let resp = self
                .call("snapshot", |c| {
                    let txn = txn.clone();
                    async move {
                        let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES);
                        kv.txn(txn).await
                    }
                })
                .await?;
            let revision = *pinned.get_or_insert(header_revision(resp.header())?);
            for (selector, op) in batch.iter().zip(resp.op_responses()) {
                let TxnOpResponse::Get(get) = op else {
                    return Err(transient(format!(
                        "snapshot at {revision}: unexpected txn response"
                    )));
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

    /// Follows every change to the keys `selectors` select after revision `after` on one
    /// watch stream, until `shutdown` or until `changes` is closed (both `Ok(())`).
    ///
    /// Returns [`BackendError::Transient`] when the stream broke, ended or stalled: the
    /// caller backs off and calls again from the last revision it applied, which loses
    /// nothing as long as that revision is not compacted (and if it is, the next call
    /// starts with a [`Change::Reset`]).
    pub async fn follow(
        &self,
        selectors: &[String],
        after: i64,
        changes: mpsc::Sender<Change>,
        shutdown: CancellationToken,
    ) -> Result<(), BackendError> {
        let Some(range) = WatchRange::covering(selectors) else {
            // Nothing selected: nothing will ever change.
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = changes.closed() => {}
            }
            return Ok(());
        };
        let mut next = after + 1;
        let mut refreshes = 0;
        loop {
            match self
                .watch_once(&range, selectors, &mut next, &changes, &shutdown)
                .await?
            {
                Restart::Stop => return Ok(()),
                Restart::Compacted(compacted) => {
                    warn!(
                        from = next,
                        compacted, "watch start revision compacted; reading a new snapshot"
                    );
                    let snapshot = self.read(selectors).await?;
                    next = snapshot.revision + 1;
                    refreshes = 0;
                    if !send(&changes, Change::Reset(snapshot), &shutdown).await {
                        return Ok(());
                    }
                }
                Restart::TokenExpired if refreshes < MAX_TOKEN_REFRESHES => {
                    refreshes += 1;
                    debug!("watch refused with an expired token; refreshing it");
                    self.client
                        .refresh_token()
                        .await
                        .map_err(|e| classify(&e, "refresh token"))?;
                }
                Restart::TokenExpired => {
                    return Err(transient(
                        "watch refused: invalid auth token after refreshing it".into(),
                    ));
                }
            }
        }
    }

    /// One watch request from `next` until it ends; `next` follows the events delivered.
    async fn watch_once(
        &self,
        range: &WatchRange,
        selectors: &[String],
        next: &mut i64,
        changes: &mpsc::Sender<Change>,
        shutdown: &CancellationToken,
    ) -> Result<Restart, BackendError> {
        let options = WatchOptions::new()
            .with_range(range.end.clone())
            .with_start_revision(*next);
        let stream = self
            .call("watch", |c| {
                let (start, options) = (range.start.clone(), options.clone());
                async move {
                    let mut watch = c
                        .watch_client()
                        .max_decoding_message_size(MAX_MESSAGE_BYTES);
                    watch.watch(start, Some(options)).await
                }
            })
            .await?;
        let (mut requests, mut responses) = stream.split();
        let mut ticker = tokio::time::interval_at(
            Instant::now() + self.progress_interval,
            self.progress_interval,
        );
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Restart::Stop),
                _ = changes.closed() => return Ok(Restart::Stop),
                _ = ticker.tick() => {
                    if last_heard.elapsed() >= self.stall_timeout {
                        return Err(transient(format!(
                            "watch stalled: nothing heard for {:?} (from revision {next})",
                            last_heard.elapsed()
                        )));
                    }
                    requests.request_progress().await.map_err(|e| classify(&e, "watch"))?;
                }
                message = responses.message() => {
                    let Some(resp) = message.map_err(|e| classify(&e, "watch"))? else {
                        return Err(transient(format!("watch stream ended (from revision {next})")));
                    };
                    if resp.canceled() {
                        return cancellation(resp.compact_revision(), resp.cancel_reason(), range);
                    }
                    if resp.created() {
                        debug!(watch_id = resp.watch_id(), from = *next, "watch created");
                    }
                    for (revision, events) in revisions(&resp, selectors) {
                        if !events.is_empty()
                            && !send(changes, Change::Events { revision, events }, shutdown).await
                        {
                            return Ok(Restart::Stop);
                        }
                        *next = revision + 1;
                    }
                    // Measured after delivery: time spent waiting on a full channel is
                    // the caller's, not etcd's silence.
                    last_heard = Instant::now();
                }
            }
        }
    }

    /// Runs one request with the request timeout. An expired token is refreshed once;
    /// with several endpoints a failed request is tried again a few times, because the
    /// client picks an endpoint per request and a dead member fails its share of them.
    async fn call<T, F, Fut>(&self, what: &'static str, mut request: F) -> Result<T, BackendError>
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
                    return Err(transient(format!(
                        "{what}: timed out after {:?}",
                        self.request_timeout
                    )));
                }
            };
            if !refreshed && is_invalid_token(&error) {
                refreshed = true;
                self.client
                    .refresh_token()
                    .await
                    .map_err(|e| classify(&e, "refresh token"))?;
                continue;
            }
            let classified = classify(&error, what);
            if !classified.is_transient() || attempt >= attempts {
                return Err(classified);
            }
            debug!(attempt, cause = %classified, "{what} failed; retrying");
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

/// Why one watch request ended without an error for the caller.
#[derive(Debug, PartialEq, Eq)]
enum Restart {
    /// Shutdown, or nobody listens any more.
    Stop,
    /// The start revision was compacted (up to this revision).
    Compacted(i64),
    /// Refused at creation with an expired token.
    TokenExpired,
}

/// The smallest key range covering every selector: `[lowest selector, end of the
/// highest selector's prefix range)`. One watch over it delivers each revision's events
/// together and in order, which separate watches per selector would not; keys inside the
/// range that no selector selects are dropped client-side.
#[derive(Debug, PartialEq, Eq)]
struct WatchRange {
    start: Vec<u8>,
    end: Vec<u8>,
}

impl WatchRange {
    fn covering(selectors: &[String]) -> Option<WatchRange> {
        let start = selectors.iter().min()?;
        let end = selectors.iter().map(|s| prefix_end(s.as_bytes())).max()?;
        Some(WatchRange {
            start: start.as_bytes().to_vec(),
            end,
        })
    }
}

impl std::fmt::Display for WatchRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = String::from_utf8_lossy(&self.start);
        let end = String::from_utf8_lossy(&self.end);
        write!(f, "[{start}, {end})")
    }
}

/// The first key after every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`).
/// `[0]`, meaning "to the end of the key space", when the prefix is all `0xff`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
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

/// A watch response's events grouped by revision, in order, keeping only selected keys.
/// A revision whose events were all filtered out stays, with no events, so that the
/// watch still moves past it.
fn revisions(resp: &WatchResponse, selectors: &[String]) -> Vec<(i64, Vec<Event>)> {
    let events = resp.events().iter().filter_map(|event| {
        let kv = event.kv()?;
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let change = match event.event_type() {
            EventType::Put => Event::Put {
                key,
                value: String::from_utf8_lossy(kv.value()).into_owned(),
            },
            EventType::Delete => Event::Delete { key },
        };
        Some((kv.mod_revision(), change))
    });
    group_selected(events, selectors)
}

fn group_selected(
    events: impl IntoIterator<Item = (i64, Event)>,
    selectors: &[String],
) -> Vec<(i64, Vec<Event>)> {
    let mut groups: Vec<(i64, Vec<Event>)> = Vec::new();
    for (revision, event) in events {
        if groups.last().is_none_or(|(last, _)| *last != revision) {
            groups.push((revision, Vec::new()));
        }
        let key = match &event {
            Event::Put { key, .. } | Event::Delete { key } => key,
        };
        if selectors.iter().any(|s| keys::selects(s, key))
            && let Some((_, group)) = groups.last_mut()
        {
            group.push(event);
        }
    }
    groups
}

/// What a canceled watch response means. etcd 3.4 cancels a watch for a compacted start
/// revision (with `compact_revision` set) and for auth problems at creation (with the
/// gRPC error text in `cancel_reason`).
/// A permission error names the range: one watch covers every selector, so a user
/// needs read permission on all of it, not only on each selector.
fn cancellation(
    compact_revision: i64,
    reason: &str,
    range: &WatchRange,
) -> Result<Restart, BackendError> {
    if compact_revision > 0 {
        return Ok(Restart::Compacted(compact_revision));
    }
    if reason.contains("invalid auth token") {
        return Ok(Restart::TokenExpired);
    }
    let message = format!("watch of {range} canceled: {reason}");
    if [
        "PermissionDenied",
        "InvalidArgument",
        "Unauthenticated",
        "permission denied",
    ]
    .iter()
    .any(|fatal| reason.contains(fatal))
    {
        Err(fatal(message))
    } else {
        Err(transient(message))
    }
}

/// Sends `change` unless shutdown comes first; false when it was not delivered.
async fn send(
    changes: &mpsc::Sender<Change>,
    change: Change,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        sent = changes.send(change) => sent.is_ok(),
        _ = shutdown.cancelled() => false,
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64, BackendError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| transient("response without a header".into()))
}

fn has_tls_files(opts: &EtcdOptions) -> bool {
    opts.ca_file.is_some() || opts.cert_file.is_some() || opts.key_file.is_some()
}

/// Credentials, keep-alive and TLS. TLS files with an `http://` endpoint are refused:
/// etcd-client would otherwise ignore them for bare endpoints' scheme choice or fail
/// with a less clear message, and a silent plaintext connection is the worst outcome.
fn connect_options(opts: &EtcdOptions) -> Result<ConnectOptions, BackendError> {
    if opts.endpoints.is_empty() {
        return Err(fatal("no endpoints configured".into()));
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
        _ => return Err(fatal("username and password must be given together".into())),
    }
    if has_tls_files(opts) {
        if let Some(plain) = opts.endpoints.iter().find(|e| e.starts_with("http://")) {
            return Err(fatal(format!(
                "TLS files given but endpoint {plain} is plaintext"
            )));
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
            return Err(fatal(
                "client certificate and key must be given together".into(),
            ));
        }
    }
    Ok(tls)
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|e| fatal(format!("reading {what} {}: {e}", path.display())))
}

/// gRPC status codes that matter here (tonic::Code as numbers: tonic is not a direct
/// dependency, and these values are fixed by the gRPC spec).
mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAUTHENTICATED: i32 = 16;
}

fn is_invalid_token(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s)
        if i32::from(s.code()) == code::UNAUTHENTICATED && s.message().contains("invalid auth token"))
}

/// Transient (worth retrying: unavailable, timeouts, broken transport, a compacted
/// pinned revision, an expired token) or Fatal (retrying will not help: bad
/// credentials, missing permissions, bad TLS material, malformed settings).
fn classify(error: &etcd_client::Error, what: &str) -> BackendError {
    use etcd_client::Error as E;
    let text = error_chain(error);
    let message = format!("{what}: {text}");
    let fatal_kind = match error {
        E::GRpcStatus(status) => fatal_status(i32::from(status.code()), &text),
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) | E::EndpointError(_) => {
            true
        }
        _ => false,
    };
    if fatal_kind || is_tls_failure(&text) {
        fatal(message)
    } else {
        transient(message)
    }
}

fn fatal_status(code: i32, text: &str) -> bool {
    match code {
        code::PERMISSION_DENIED | code::INVALID_ARGUMENT | code::UNIMPLEMENTED => true,
        code::UNAUTHENTICATED => !text.contains("invalid auth token"),
        _ => false,
    }
}

/// A certificate the other side will keep rejecting (untrusted issuer, wrong name,
/// missing or refused client certificate).
fn is_tls_failure(text: &str) -> bool {
    [
        "certificate",
        "Certificate",
        "UnknownIssuer",
        "NotValidForName",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// The error with its sources: tonic hides the useful part ("invalid peer
/// certificate", "Connection refused") in the source chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn transient(message: String) -> BackendError {
    BackendError::Transient {
        backend: NAME,
        message,
    }
}

fn fatal(message: String) -> BackendError {
    BackendError::Fatal {
        backend: NAME,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn put(key: &str, value: &str) -> Event {
        Event::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/app/db"), b"/app/dc".to_vec());
        assert_eq!(prefix_end(b"/"), b"0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn watch_range_spans_lowest_to_end_of_highest() {
        let range = WatchRange::covering(&strings(&["/b/x", "/a", "/b"])).expect("non-empty");
        assert_eq!(range.start, b"/a".to_vec());
        assert_eq!(range.end, b"/c".to_vec());
        assert_eq!(WatchRange::covering(&[]), None);
    }

    #[test]
    fn events_are_grouped_by_revision_and_filtered() {
        let selectors = strings(&["/app/db"]);
        let groups = group_selected(
            vec![
                (5, put("/app/db/a", "1")),
                (5, put("/app/dbx", "no")),
                (
                    5,
                    Event::Delete {
                        key: "/app/db/b".into(),
                    },
                ),
                (6, put("/app/dbx", "no")),
                (7, put("/app/db", "2")),
            ],
            &selectors,
        );
        assert_eq!(
            groups,
            vec![
                (
                    5,
                    vec![
                        put("/app/db/a", "1"),
                        Event::Delete {
                            key: "/app/db/b".into()
                        }
                    ]
                ),
                (6, vec![]),
                (7, vec![put("/app/db", "2")]),
            ]
        );
    }

    #[test]
    fn cancellations_are_classified() {
        let range = WatchRange::covering(&strings(&["/a", "/b"])).expect("non-empty");
        assert_eq!(
            cancellation(42, "", &range).ok(),
            Some(Restart::Compacted(42))
        );
        let expired = "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token";
        assert_eq!(
            cancellation(0, expired, &range).ok(),
            Some(Restart::TokenExpired)
        );
        let denied = "rpc error: code = PermissionDenied desc = etcdserver: permission denied";
        let error = cancellation(0, denied, &range).expect_err("denied");
        assert!(!error.is_transient());
        assert!(
            error.to_string().contains("watch of [/a, /c) canceled"),
            "{error}"
        );
        let empty_user = "rpc error: code = InvalidArgument desc = etcdserver: user name is empty";
        assert!(matches!(
            cancellation(0, empty_user, &range),
            Err(BackendError::Fatal { .. })
        ));
        assert!(matches!(
            cancellation(0, "something else", &range),
            Err(BackendError::Transient { .. })
        ));
    }

    #[test]
    fn status_codes_split_into_fatal_and_transient() {
        assert!(fatal_status(
            code::PERMISSION_DENIED,
            "etcdserver: permission denied"
        ));
        assert!(fatal_status(
            code::INVALID_ARGUMENT,
            "authentication failed"
        ));
        assert!(!fatal_status(
            code::UNAUTHENTICATED,
            "etcdserver: invalid auth token"
        ));
        assert!(!fatal_status(14, "tcp connect error"));
        assert!(is_tls_failure("invalid peer certificate: UnknownIssuer"));
    }

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
