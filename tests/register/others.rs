//! `conflux register` and the other writers of its key: a second process for the
//! same key, a hand that deletes it, an instance that holds it under its own lease.

use etcd_client::PutOptions;

use super::{DEADLINE, Held, KEY, VALUE, held, leases, register, registered, start, wait_key};
use crate::harness::{Confdir, Daemon};
use crate::support::etcd::EtcdServer;

#[tokio::test]
async fn a_second_register_for_the_same_key_is_refused() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    let dir = Confdir::new();
    let first = register(&dir, &etcd, &[]);
    let lease = registered(&mut client, &first).await;
    let other = Confdir::new();
    let mut second = Daemon::start(
        &other,
        &[
            "--state-dir",
            dir.state_dir().to_str().unwrap(),
            "register",
            "--node",
            &etcd.endpoint(),
            "--key",
            KEY,
            "--value",
            "other",
        ],
    );
    assert_eq!(second.exit_code(DEADLINE).await, 1);
    assert!(
        second
            .stderr()
            .contains("another conflux register is running for /gateway/services/api/i1"),
        "{}",
        second.stderr()
    );
    assert_eq!(held(&mut client, KEY).await.map(|h| h.lease), Some(lease));
}

#[tokio::test]
async fn a_key_deleted_by_hand_is_put_back() {
    let (_etcd, mut client, _dir, daemon) = start(&["--ttl", "60s"]).await;
    let lease = registered(&mut client, &daemon).await;
    client.delete(KEY, None).await.expect("delete");
    let back = wait_key(&mut client, &daemon, "put back", Option::is_some).await;
    assert_eq!(
        back,
        Some(Held {
            value: VALUE.to_string(),
            lease
        })
    );
    assert!(
        daemon
            .stderr()
            .contains("the key was deleted by someone else; putting it back")
    );
}

#[tokio::test]
async fn a_key_held_by_another_lease_is_refused_unless_replace() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    let theirs = client.lease_grant(60, None).await.expect("grant").id();
    let options = PutOptions::new().with_lease(theirs);
    client.put(KEY, "theirs", Some(options)).await.expect("put");

    let dir = Confdir::new();
    let mut refused = register(&dir, &etcd, &[]);
    assert_eq!(refused.exit_code(DEADLINE).await, 1);
    let log = refused.stderr();
    assert!(log.contains("is held by another instance"), "{log}");
    assert!(log.contains("--replace"), "{log}");
    let untouched = Some(Held {
        value: "theirs".into(),
        lease: theirs,
    });
    assert_eq!(held(&mut client, KEY).await, untouched);
    assert_eq!(
        leases(&mut client).await,
        vec![theirs],
        "its own lease revoked"
    );

    let mut replacing = register(&dir, &etcd, &["--replace"]);
    let ours = registered(&mut client, &replacing).await;
    assert_ne!(ours, theirs);
    replacing.assert_running();
}

#[tokio::test]
async fn an_instance_whose_key_is_taken_over_stops_with_exit_1() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    let (first_dir, second_dir) = (Confdir::new(), Confdir::new());
    let mut first = register(&first_dir, &etcd, &[]);
    let first_lease = registered(&mut client, &first).await;
    let mut second = register(&second_dir, &etcd, &["--replace"]);
    assert_eq!(first.exit_code(DEADLINE).await, 1);
    assert!(
        first
            .stderr()
            .contains("was taken over by another instance"),
        "{}",
        first.stderr()
    );
    let held_now = held(&mut client, KEY).await.expect("held");
    assert_ne!(held_now.lease, first_lease);
    assert_eq!(leases(&mut client).await, vec![held_now.lease]);
    second.assert_running();
}
