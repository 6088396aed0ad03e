//! The one watch stream of [`EtcdBackend::follow`]: a single watch request over the
//! smallest range covering every selector, its responses grouped into one
//! [`Change::Events`] per revision, and what etcd 3.4's cancellations mean (compaction:
//! re-read and reset; expired token: refresh and re-create; anything else: an error).
//! Liveness comes from progress requests: a stream that hears nothing is abandoned.

use etcd_client::{EventType, WatchOptions, WatchResponse};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::error::{EtcdError, classify, fatal, transient};
use super::{EtcdBackend, MAX_MESSAGE_BYTES};
use crate::backend::{Action, BackendError};
use crate::kv::keys;
use crate::kv::{Change, Event};

/// How often a watch refused for an expired token is re-created before giving up.
const MAX_TOKEN_REFRESHES: u32 = 2;

impl EtcdBackend {
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
                Restart::Rewound { seen, now } => {
                    // etcd's history went backwards (wiped, restored from an older
                    // snapshot, or another cluster behind the same address): revisions
                    // up to `seen` mean other data now, and watching "after seen" would
                    // skip them. Read everything again, as after a compaction.
                    warn!(
                        seen,
                        now, "etcd's revision went backwards; reading a new snapshot"
                    );
                    let snapshot = self.read(selectors).await?;
                    next = snapshot.revision + 1;
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
                        .map_err(|e| classify(e, Action::RefreshToken))?;
                }
                Restart::TokenExpired => {
                    return Err(transient(Action::Watch, EtcdError::TokenStillInvalid));
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
            .call(Action::Watch, |c| {
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
                        let (silent, from) = (last_heard.elapsed(), *next);
                        return Err(transient(Action::Watch, EtcdError::Stalled { silent, from }));
                    }
                    requests.request_progress().await.map_err(|e| classify(e, Action::Watch))?;
                }
                message = responses.message() => {
                    let Some(resp) = message.map_err(|e| classify(e, Action::Watch))? else {
                        return Err(transient(Action::Watch, EtcdError::StreamEnded { from: *next }));
                    };
                    if resp.canceled() {
                        return cancellation(resp.compact_revision(), resp.cancel_reason(), range);
                    }
                    if let Some(header) = resp.header()
                        && let Some(rewound) = self.rewound(header, *next - 1)
                    {
                        return Ok(rewound);
                    }
                    if resp.created() {
                        debug!(watch_id = resp.watch_id(), from = *next, "watch created");
                    }
                    // Created, or a progress notification: the stream is live up to the
                    // header's revision.
                    if resp.events().is_empty()
                        && let Some(revision) = resp.header().map(|h| h.revision())
                        && !send(changes, Change::Progress { revision }, shutdown).await
                    {
                        return Ok(Restart::Stop);
                    }
                    for (revision, events) in revisions(self, &resp, selectors) {
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
}

impl EtcdBackend {
    /// Whether a response from etcd shows a history that does not continue the one
    /// read so far (`seen`: the last revision delivered): a lower revision, or another
    /// cluster than the snapshot's.
    fn rewound(&self, header: &etcd_client::ResponseHeader, seen: i64) -> Option<Restart> {
        let other_cluster = self.cluster_changed(header.cluster_id());
        (header.revision() < seen || other_cluster).then_some(Restart::Rewound {
            seen,
            now: header.revision(),
        })
    }
}

/// Why one watch request ended without an error for the caller.
#[derive(Debug, PartialEq, Eq)]
enum Restart {
    /// Shutdown, or nobody listens any more.
    Stop,
    /// etcd answered at revision `now`, below the revision `seen` already applied, or
    /// from another cluster.
    Rewound { seen: i64, now: i64 },
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
pub(super) struct WatchRange {
    pub(super) start: Vec<u8>,
    pub(super) end: Vec<u8>,
}

impl WatchRange {
    pub(super) fn covering(selectors: &[String]) -> Option<WatchRange> {
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
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A watch response's events grouped by revision, in order, keeping only selected keys.
/// A revision whose events were all filtered out stays, with no events, so that the
/// watch still moves past it.
fn revisions(
    backend: &EtcdBackend,
    resp: &WatchResponse,
    selectors: &[String],
) -> Vec<(i64, Vec<Event>)> {
    let events = resp.events().iter().filter_map(|event| {
        let kv = event.kv()?;
        let (key, value) = backend.text(kv.key(), kv.value());
        let change = match event.event_type() {
            EventType::Put => Event::Put { key, value },
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
    // The one place errors are sorted by their text: a canceled watch response carries
    // no status, only `cancel_reason`, a string (the Go error of the status, such as
    // `rpc error: code = PermissionDenied desc = etcdserver: permission denied`).
    if reason.contains("invalid auth token") {
        return Ok(Restart::TokenExpired);
    }
    let is_fatal = [
        "PermissionDenied",
        "InvalidArgument",
        "Unauthenticated",
        "permission denied",
    ]
    .iter()
    .any(|fatal| reason.contains(fatal));
    let cause = EtcdError::Canceled {
        range: range.to_string(),
        reason: reason.to_string(),
    };
    if is_fatal {
        Err(fatal(Action::Watch, cause))
    } else {
        Err(transient(Action::Watch, cause))
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
}
