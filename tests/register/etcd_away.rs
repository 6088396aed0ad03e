//! `conflux register` while etcd goes away and comes back: a lease that outlived the
//! outage only by etcd's grace is replaced, one that is still alive is kept.

use std::time::Duration;

use tokio::time::Instant;

use super::{DEADLINE, KEY, VALUE, leases, register, registered, wait_key};
use crate::harness::Confdir;
use crate::support::etcd::EtcdServer;

#[tokio::test]
async fn an_etcd_away_longer_than_the_ttl_gets_the_key_back_under_a_new_lease() {
    let mut etcd = EtcdServer::start().await;
    let dir = Confdir::new();
    let daemon = register(&dir, &etcd, &["--ttl", "2s"]);
    let old = {
        let mut client = etcd.client().await;
        registered(&mut client, &daemon).await
    };
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    etcd.restart().await;
    let mut client = etcd.client().await;
    let new = wait_key(&mut client, &daemon, "registered again", |h| {
        h.as_ref().is_some_and(|h| h.lease != 0 && h.lease != old)
    })
    .await
    .expect("registered");
    assert_eq!(new.value, VALUE);
    // One key, one lease: the old one (which a restarted etcd extends) was revoked.
    let all = client
        .get(
            "/gateway/services/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("etcd get");
    assert_eq!(all.kvs().len(), 1);
    assert_eq!(leases(&mut client).await, vec![new.lease]);
    let log = daemon.stderr();
    assert!(log.contains("etcd answers again"), "{log}");
    assert!(log.contains("lease not renewed within its TTL"), "{log}");
}

/// An etcd restart well within the TTL: the lease is still alive, so the key is
/// neither deleted nor written again (a gateway following it sees no change at all).
#[tokio::test]
async fn a_short_etcd_restart_keeps_the_lease_and_leaves_the_key_untouched() {
    let mut etcd = EtcdServer::start().await;
    let dir = Confdir::new();
    let daemon = register(&dir, &etcd, &["--ttl", "30s"]);
    let (lease, written) = {
        let mut client = etcd.client().await;
        let lease = registered(&mut client, &daemon).await;
        let resp = client.get(KEY, None).await.expect("etcd get");
        (lease, resp.kvs()[0].mod_revision())
    };
    etcd.restart().await;
    let end = Instant::now() + DEADLINE;
    while !daemon.stderr().contains("etcd answers again") {
        assert!(
            Instant::now() < end,
            "no reconnection:\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = etcd.client().await;
    let resp = client.get(KEY, None).await.expect("etcd get");
    let kv = &resp.kvs()[0];
    assert_eq!((kv.lease(), kv.mod_revision()), (lease, written));
    assert_eq!(daemon.stderr().matches(" registered ").count(), 1);
    assert_eq!(leases(&mut client).await, vec![lease]);
}
