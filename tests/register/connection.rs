//! `conflux register` reaches etcd as the daemon does: the same config file (whatever
//! backend it names for the daemon), TLS with client certificates, credentials.

use nix::sys::signal::Signal;

use super::{DEADLINE, KEY, VALUE, held, register, registered};
use crate::harness::{Confdir, Daemon};
use crate::support::etcd::{EtcdServer, READER, ROOT};

#[tokio::test]
async fn the_daemons_config_file_and_tls_settings_are_used() {
    let etcd = EtcdServer::start_tls().await;
    let tls = etcd.tls_files().expect("a TLS server").clone();
    let dir = Confdir::new();
    // The daemon of this confdir reads files; its register still talks to etcd.
    dir.write(
        "conflux.toml",
        &format!(
            "backend = \"file\"\nfile = [\"/nonexistent/data.yaml\"]\nnodes = [\"{}\"]\n\
             client_cakeys = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            etcd.endpoint(),
            tls.ca.display(),
            tls.cert.display(),
            tls.key.display()
        ),
    );
    let mut daemon = Daemon::start(&dir, &["register", "--key", KEY, "--value", VALUE]);
    let mut client = etcd.client().await;
    registered(&mut client, &daemon).await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code(DEADLINE).await, 0, "{}", daemon.stderr());
    assert_eq!(held(&mut client, KEY).await, None);
}

#[tokio::test]
async fn credentials_are_used_and_a_user_who_may_not_write_gets_exit_2() {
    let mut etcd = EtcdServer::start().await;
    etcd.enable_auth("/gateway").await;
    let mut client = etcd.client().await;

    let (root, root_password) = ROOT;
    let dir = Confdir::new();
    let daemon = register(
        &dir,
        &etcd,
        &["--username", root, "--password", root_password],
    );
    registered(&mut client, &daemon).await;
    drop(daemon);
    assert_eq!(held(&mut client, KEY).await, None, "revoked on SIGTERM");

    let (reader, reader_password) = READER;
    let other = Confdir::new();
    let mut refused = register(
        &other,
        &etcd,
        &["--username", reader, "--password", reader_password],
    );
    assert_eq!(refused.exit_code(DEADLINE).await, 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("permission denied"),
        "{}",
        refused.stderr()
    );
    assert_eq!(held(&mut client, KEY).await, None);
    let leases = client.leases().await.expect("leases");
    assert!(
        leases.leases().is_empty(),
        "the refused one revoked its lease"
    );
}

#[tokio::test]
async fn logs_take_the_daemons_json_format() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    let dir = Confdir::new();
    let daemon = register(&dir, &etcd, &["--log-format", "json"]);
    registered(&mut client, &daemon).await;
    drop(daemon);
    let log = dir.read("daemon.stderr");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let registered = lines
        .iter()
        .find(|l| l["message"] == "registered")
        .unwrap_or_else(|| panic!("no registered line:\n{log}"));
    assert_eq!(registered["key"], KEY);
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "deregistered: lease revoked, key deleted"),
        "{log}"
    );
}
