//! The etcd backend against a real etcd (see `support::etcd`): snapshots at one
//! revision, one watch stream with resume, compaction, restarts, auth, TLS, a cluster
//! with a dead member, lease expiry and a frozen server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conflux::backend::BackendError;
use conflux::backend::etcd::{EtcdBackend, EtcdOptions};
use conflux::kv::Snapshot;
use conflux::kv::{Change, Event};
use etcd_client::{GetOptions, PutOptions, Txn, TxnOp};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::etcd::{EtcdCluster, EtcdServer, READER, ROOT};

/// A guard against hanging forever, not a speed requirement.
const PATIENCE: Duration = Duration::from_secs(30);

fn selectors(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn options(endpoints: Vec<String>) -> EtcdOptions {
    EtcdOptions {
        endpoints,
        ..EtcdOptions::default()
    }
}

async fn connect(server: &EtcdServer) -> Arc<EtcdBackend> {
    Arc::new(
        EtcdBackend::connect(options(vec![server.endpoint()]))
            .await
            .expect("connect"),
    )
}

fn put(key: &str, value: &str) -> Event {
    Event::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn delete(key: &str) -> Event {
    Event::Delete { key: key.into() }
}

/// A running watch: its changes, and the task that returns the watch's result.
struct Watch {
    changes: mpsc::Receiver<Change>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), BackendError>>,
}

impl Watch {
    fn start(backend: &Arc<EtcdBackend>, selected: &[&str], after: i64) -> Watch {
        let (tx, changes) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let (backend, selected, token) = (backend.clone(), selectors(selected), shutdown.clone());
        let task = tokio::spawn(async move { backend.follow(&selected, after, tx, token).await });
        Watch {
            changes,
            shutdown,
            task,
        }
    }

    /// The next change to the data (progress reports are skipped).
    async fn next(&mut self) -> Change {
        loop {
            match self.next_report().await {
                Change::Progress { .. } => continue,
                change => return change,
            }
        }
    }

    /// The next thing the watch sent, progress reports included.
    async fn next_report(&mut self) -> Change {
        let change = tokio::time::timeout(PATIENCE, self.changes.recv())
            .await
            .expect("a change within the patience limit");
        match change {
            Some(change) => change,
            None => panic!("the watch ended: {:?}", (&mut self.task).await),
        }
    }

    /// The next `count` changes, which must all be events: (revision, events).
    async fn events(&mut self, count: usize) -> Vec<(i64, Vec<Event>)> {
        let mut out = Vec::new();
        while out.len() < count {
            match self.next().await {
                Change::Events { revision, events } => out.push((revision, events)),
                Change::Reset(snapshot) => panic!("unexpected reset at {}", snapshot.revision),
                Change::Progress { .. } => unreachable!("next() skips progress reports"),
            }
        }
        out
    }

    /// Waits for the watch to end by itself and returns its result.
    async fn ended(self) -> Result<(), BackendError> {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the watch ends within the patience limit")
            .expect("the watch task does not panic")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = self.ended().await;
        assert!(
            result.is_ok(),
            "shutdown ends the watch with Ok: {result:?}"
        );
    }
}

fn kvs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn snapshot_reads_every_selector_at_one_revision() {
    let server = EtcdServer::start().await;
    server.put("/app/db/host", "db1").await;
    server.put("/app/db", "self").await;
    server.put("/app/dbx", "sibling").await;
    server.put("/app/db-x", "sibling").await;
    server.put("/app/web/port", "80").await;
    let last = server.put("/other/key", "x").await;
    let backend = connect(&server).await;

    let snapshot = backend
        .read(&selectors(&["/app/db", "/app/web"]))
        .await
        .expect("snapshot");

    let expected = kvs(&[
        ("/app/db", "self"),
        ("/app/db/host", "db1"),
        ("/app/web/port", "80"),
    ]);
    assert_eq!(snapshot, Snapshot::new(last, expected));
    assert_eq!(backend.current_revision().await.expect("revision"), last);
}

#[tokio::test]
async fn root_selector_reads_every_key() {
    let server = EtcdServer::start().await;
    server.put("/a", "1").await;
    let last = server.put("/b/c", "2").await;
    let backend = connect(&server).await;

    let snapshot = backend.read(&selectors(&["/"])).await.expect("snapshot");

    assert_eq!(
        snapshot,
        Snapshot::new(last, kvs(&[("/a", "1"), ("/b/c", "2")]))
    );
}

/// 300 selectors do not fit in one transaction (etcd allows 128 operations): the later
/// batches must read at the first one's revision even while a writer changes the keys.
#[tokio::test]
async fn snapshot_of_300_selectors_is_one_revision() {
    let server = EtcdServer::start().await;
    let keys: Vec<String> = (0..300).map(|i| format!("/many/k{i:03}")).collect();
    let mut client = server.client().await;
    for chunk in keys.chunks(100) {
        let puts: Vec<TxnOp> = chunk
            .iter()
            .map(|k| TxnOp::put(k.as_str(), "0", None))
            .collect();
        client.txn(Txn::new().and_then(puts)).await.expect("seed");
    }
    let writer = {
        let (keys, mut client) = (keys.clone(), server.client().await);
        tokio::spawn(async move {
            for key in keys.iter().rev() {
                client
                    .put(key.as_str(), "1", None)
                    .await
                    .expect("concurrent put");
            }
        })
    };
    let backend = connect(&server).await;

    let snapshot = backend.read(&keys).await.expect("snapshot");
    writer.await.expect("writer");

    let expected = read_at(&mut client, "/many/", snapshot.revision).await;
    assert_eq!(snapshot.kvs.len(), 300);
    assert_eq!(snapshot.kvs, expected);
}

/// A created watch says so (the daemon's "connected"), with the revision it is live at.
#[tokio::test]
async fn a_new_watch_reports_progress_at_the_current_revision() {
    let server = EtcdServer::start().await;
    let backend = connect(&server).await;
    let start = server.put("/app/db/a", "0").await;
    let current = server.put("/elsewhere", "x").await;
    let mut watch = Watch::start(&backend, &["/app/db"], start);
    assert_eq!(
        watch.next_report().await,
        Change::Progress { revision: current }
    );
    watch.stop().await;
}

/// Every key under `prefix` as it was at `revision`, read by a plain client.
async fn read_at(
    client: &mut etcd_client::Client,
    prefix: &str,
    revision: i64,
) -> BTreeMap<String, String> {
    let options = GetOptions::new().with_prefix().with_revision(revision);
    let resp = client
        .get(prefix, Some(options))
        .await
        .expect("get at the snapshot's revision");
    resp.kvs()
        .iter()
        .map(|kv| {
            let key = kv.key_str().unwrap().to_string();
            (key, kv.value_str().unwrap().to_string())
        })
        .collect()
}

/// Ranges larger than a page (10,000 keys) are read in pages, every page at the first
/// one's revision even while a writer changes the keys: through the transaction of
/// prefix reads (2 selectors) and through the covering range (more than 128).
#[tokio::test]
async fn a_snapshot_larger_than_a_page_is_read_in_pages_at_one_revision() {
    let server = EtcdServer::start().await;
    let mut keys: Vec<String> = (0..15_000).map(|i| format!("/big/a/k{i:05}")).collect();
    keys.extend((0..10_000).map(|i| format!("/big/b/k{i:05}")));
    let mut client = server.client().await;
    for chunk in keys.chunks(128) {
        let puts: Vec<TxnOp> = chunk
            .iter()
            .map(|k| TxnOp::put(k.as_str(), "0", None))
            .collect();
        client.txn(Txn::new().and_then(puts)).await.expect("seed");
    }
    let backend = connect(&server).await;
    let two = selectors(&["/big/a", "/big/b"]);
    let mut many = two.clone();
    many.extend((0..200).map(|i| format!("/big/c{i:03}")));
    for selected in [two, many] {
        let writer = {
            let (keys, mut client) = (keys.clone(), server.client().await);
            tokio::spawn(async move {
                for key in keys.iter().rev().step_by(50) {
                    client.put(key.as_str(), "1", None).await.expect("put");
                }
            })
        };
        let snapshot = backend.read(&selected).await.expect("snapshot");
        writer.await.expect("writer");
        let expected = read_at(&mut client, "/big/", snapshot.revision).await;
        assert_eq!(snapshot.kvs.len(), 25_000, "{} selectors", selected.len());
        assert!(snapshot.kvs == expected, "{} selectors", selected.len());
    }
}

#[tokio::test]
async fn watch_delivers_puts_and_deletes_in_revision_order() {
    let server = EtcdServer::start().await;
    let backend = connect(&server).await;
    let start = server.put("/app/db/a", "0").await;
    let mut watch = Watch::start(&backend, &["/app/db", "/app/web"], start);

    let r1 = server.put("/app/db/b", "1").await;
    server.put("/app/dbx", "sibling").await;
    let r2 = server.delete("/app/db/a").await;
    let both = Txn::new().and_then(vec![
        TxnOp::put("/app/web/port", "80", None),
        TxnOp::put("/app/db/b", "2", None),
    ]);
    let r3 = server
        .client()
        .await
        .txn(both)
        .await
        .expect("txn")
        .header()
        .unwrap()
        .revision();

    let got = watch.events(3).await;
    assert_eq!(
        got,
        vec![
            (r1, vec![put("/app/db/b", "1")]),
            (r2, vec![delete("/app/db/a")]),
            (r3, vec![put("/app/web/port", "80"), put("/app/db/b", "2")]),
        ]
    );
    watch.stop().await;
}

#[tokio::test]
async fn watch_from_an_old_revision_replays_what_was_missed() {
    let server = EtcdServer::start().await;
    let backend = connect(&server).await;
    let after = server.put("/app/x", "0").await;
    let r1 = server.put("/app/x", "1").await;
    let r2 = server.put("/app/y", "2").await;
    let r3 = server.delete("/app/x").await;

    let mut watch = Watch::start(&backend, &["/app"], after);

    assert_eq!(
        watch.events(3).await,
        vec![
            (r1, vec![put("/app/x", "1")]),
            (r2, vec![put("/app/y", "2")]),
            (r3, vec![delete("/app/x")]),
        ]
    );
    watch.stop().await;
}

#[tokio::test]
async fn compaction_past_the_start_revision_resets_with_current_data() {
    let server = EtcdServer::start().await;
    let backend = connect(&server).await;
    let after = server.put("/app/a", "0").await;
    server.put("/app/a", "1").await;
    let current = server.put("/app/b", "2").await;
    server.compact(current).await;

    let mut watch = Watch::start(&backend, &["/app"], after);

    match watch.next().await {
        Change::Reset(snapshot) => {
            assert_eq!(
                snapshot,
                Snapshot::new(current, kvs(&[("/app/a", "1"), ("/app/b", "2")]))
            );
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    let next = server.put("/app/c", "3").await;
    assert_eq!(
        watch.events(1).await,
        vec![(next, vec![put("/app/c", "3")])]
    );
    watch.stop().await;
}

#[tokio::test]
async fn watch_ends_when_etcd_is_killed_and_resumes_without_loss() {
    let mut server = EtcdServer::start().await;
    let backend = connect(&server).await;
    let start = server.put("/app/a", "0").await;
    let mut watch = Watch::start(&backend, &["/app"], start);
    let r1 = server.put("/app/a", "1").await;
    let (last_applied, _) = watch.events(1).await[0].clone();
    assert_eq!(last_applied, r1);

    server.kill();
    let result = watch.ended().await;
    assert!(
        matches!(result, Err(BackendError::Transient { .. })),
        "a killed etcd ends the watch with a transient error: {result:?}"
    );

    server.restart().await;
    let r2 = server.put("/app/b", "2").await;
    let mut resumed = Watch::start(&backend, &["/app"], last_applied);
    let r3 = server.put("/app/a", "3").await;
    assert_eq!(
        resumed.events(2).await,
        vec![
            (r2, vec![put("/app/b", "2")]),
            (r3, vec![put("/app/a", "3")])
        ]
    );
    resumed.stop().await;
}

#[tokio::test]
async fn a_read_only_user_can_snapshot_and_watch_but_not_outside_its_prefix() {
    let mut server = EtcdServer::start().await;
    server.put("/app/db/host", "db1").await;
    server.put("/secret/key", "s").await;
    server.enable_auth("/app/").await;
    let (user, password) = READER;
    let reader = Arc::new(
        EtcdBackend::connect(EtcdOptions {
            username: Some(user.into()),
            password: Some(password.into()),
            ..options(vec![server.endpoint()])
        })
        .await
        .expect("connect as reader"),
    );

    let snapshot = reader
        .read(&selectors(&["/app/db"]))
        .await
        .expect("snapshot");
    assert_eq!(snapshot.kvs, kvs(&[("/app/db/host", "db1")]));
    assert_eq!(
        reader.current_revision().await.expect("revision"),
        snapshot.revision
    );

    let mut watch = Watch::start(&reader, &["/app/db"], snapshot.revision);
    let r1 = server.put("/app/db/host", "db2").await;
    assert_eq!(
        watch.events(1).await,
        vec![(r1, vec![put("/app/db/host", "db2")])]
    );
    watch.stop().await;

    let denied = reader.read(&selectors(&["/secret"])).await;
    assert!(
        matches!(denied, Err(BackendError::Fatal { .. })),
        "{denied:?}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_fatal() {
    let mut server = EtcdServer::start().await;
    server.enable_auth("/app/").await;

    let result = EtcdBackend::connect(EtcdOptions {
        username: Some(ROOT.0.into()),
        password: Some("not-the-password".into()),
        ..options(vec![server.endpoint()])
    })
    .await;

    let Err(error) = result else {
        panic!("connect with a wrong password succeeded")
    };
    assert!(!error.is_transient(), "{error}");
}

/// A watch created after the auth token expired is refused by etcd 3.4 even with
/// auto refresh: the backend refreshes the token and creates it again.
#[tokio::test]
async fn a_watch_created_with_an_expired_token_refreshes_it() {
    let mut server = EtcdServer::start_with(&["--auth-token-ttl=1"]).await;
    server.enable_auth("/app").await;
    let (user, password) = READER;
    let reader = Arc::new(
        EtcdBackend::connect(EtcdOptions {
            username: Some(user.into()),
            password: Some(password.into()),
            ..options(vec![server.endpoint()])
        })
        .await
        .expect("connect as reader"),
    );
    let after = server.put("/app/a", "0").await;
    // Let the token expire: etcd 3.4 checks simple tokens every second.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut watch = Watch::start(&reader, &["/app"], after);
    let r1 = server.put("/app/a", "1").await;

    assert_eq!(watch.events(1).await, vec![(r1, vec![put("/app/a", "1")])]);
    watch.stop().await;
}

#[tokio::test]
async fn tls_with_client_certificates() {
    let server = EtcdServer::start_tls().await;
    let files = server.tls_files().expect("TLS files").clone();
    let tls = |endpoint: String| EtcdOptions {
        ca_file: Some(files.ca.clone()),
        cert_file: Some(files.cert.clone()),
        key_file: Some(files.key.clone()),
        ..options(vec![endpoint])
    };
    let revision = server.put("/app/tls", "yes").await;

    let https = EtcdBackend::connect(tls(server.endpoint()))
        .await
        .expect("https");
    let snapshot = https
        .read(&selectors(&["/app"]))
        .await
        .expect("snapshot over TLS");
    assert_eq!(
        snapshot,
        Snapshot::new(revision, kvs(&[("/app/tls", "yes")]))
    );

    let bare = server.endpoint().replace("https://", "");
    let bare = EtcdBackend::connect(tls(bare))
        .await
        .expect("bare host:port");
    assert_eq!(
        bare.current_revision().await.expect("revision over TLS"),
        revision
    );

    let plaintext = server.endpoint().replace("https://", "http://");
    let refused = EtcdBackend::connect(tls(plaintext)).await;
    let Err(error) = refused else {
        panic!("TLS files with an http:// endpoint were accepted")
    };
    assert!(!error.is_transient());
    assert!(error.to_string().contains("is plaintext"), "{error}");

    // A server certificate from an unknown CA is recognised on our side: Fatal.
    let untrusted = EtcdBackend::connect(EtcdOptions {
        ca_file: Some(files.cert.clone()),
        ..tls(server.endpoint())
    })
    .await
    .expect("connect is lazy without a user");
    let rejected = untrusted.read(&selectors(&["/app"])).await;
    assert!(
        matches!(rejected, Err(BackendError::Fatal { .. })),
        "{rejected:?}"
    );

    // Without a client certificate the server refuses the handshake. With TLS 1.3 the
    // client often sees only a closed connection, so the kind of error is not asserted.
    let without_client_cert = EtcdBackend::connect(EtcdOptions {
        ca_file: Some(files.ca.clone()),
        ..options(vec![server.endpoint()])
    })
    .await
    .expect("connect is lazy without a user");
    let refused = without_client_cert.read(&selectors(&["/app"])).await;
    assert!(
        refused.is_err(),
        "read without a client certificate: {refused:?}"
    );
}

#[tokio::test]
async fn a_cluster_with_one_member_killed_still_answers() {
    let mut cluster = EtcdCluster::start(3).await;
    let revision = cluster.put("/app/k", "v").await;
    let backend = EtcdBackend::connect(options(cluster.endpoints()))
        .await
        .expect("connect");
    cluster.kill_member(2);

    for _ in 0..10 {
        let snapshot = backend
            .read(&selectors(&["/app"]))
            .await
            .expect("snapshot despite a dead member");
        assert_eq!(snapshot.kvs, kvs(&[("/app/k", "v")]));
        assert!(snapshot.revision >= revision);
    }
}

#[tokio::test]
async fn an_expired_lease_arrives_as_a_delete() {
    let server = EtcdServer::start().await;
    let backend = connect(&server).await;
    let mut client = server.client().await;
    let lease = client.lease_grant(2, None).await.expect("lease");
    let resp = client
        .put(
            "/app/leased",
            "temp",
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put with lease");
    let after = resp.header().unwrap().revision();

    let mut watch = Watch::start(&backend, &["/app"], after);

    let (_, events) = watch.events(1).await.remove(0);
    assert_eq!(events, vec![delete("/app/leased")]);
    watch.stop().await;
}

/// A frozen etcd keeps its connections open but answers nothing: the watch must notice
/// by its progress requests going unanswered, not wait forever.
#[tokio::test]
async fn a_frozen_etcd_stalls_the_watch() {
    let server = EtcdServer::start().await;
    let backend = Arc::new(
        EtcdBackend::connect(EtcdOptions {
            progress_interval: Duration::from_millis(200),
            stall_timeout: Duration::from_millis(600),
            ..options(vec![server.endpoint()])
        })
        .await
        .expect("connect"),
    );
    let after = server.put("/app/a", "0").await;
    let mut watch = Watch::start(&backend, &["/app"], after);
    let r1 = server.put("/app/a", "1").await;
    assert_eq!(watch.events(1).await, vec![(r1, vec![put("/app/a", "1")])]);

    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let result = watch.ended().await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");

    match result {
        Err(BackendError::Transient { message, .. }) => {
            let message = message.to_string();
            assert!(message.contains("stalled"), "{message}")
        }
        other => panic!("expected a stalled watch, got {other:?}"),
    }
}
