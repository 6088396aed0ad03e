//! The attacks and accidents of issue 8, each reproduced with the real binary (and a
//! real etcd where it matters), asserting the fixed behaviour and that the old files
//! are intact.

use std::time::Duration;

use crate::harness::{Confdir, Daemon};
use crate::support::etcd::EtcdServer;

const PATIENCE: Duration = Duration::from_secs(20);

fn app(dir: &Confdir, reload: &str) {
    dir.template("app.tmpl", "x={{ getv(key=\"/x\", default=\"none\") }}\n");
    dir.resource(
        "app.toml",
        &format!(
            "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n\
             reload_cmd = '''{reload}'''\n"
        ),
    );
}

fn watch(dir: &Confdir, etcd: &EtcdServer) -> Daemon {
    Daemon::start(
        dir,
        &["--watch", "--backend", "etcdv3", "--node", &etcd.endpoint()],
    )
}

/// Regression: etcd wiped and restarted under a watching daemon (revision 34 → 1): the
/// daemon kept watching "after 34" and ignored every change until the new cluster
/// passed revision 34.
#[tokio::test]
async fn a_wiped_etcd_whose_revision_went_backwards_is_read_again() {
    let mut etcd = EtcdServer::start().await;
    etcd.put("/app/x", "1").await;
    for n in 0..30 {
        etcd.put(&format!("/other/{n}"), "v").await;
    }
    let dir = Confdir::new();
    app(&dir, "true");
    let daemon = watch(&dir, &etcd);
    daemon
        .wait_for("x=1 applied", PATIENCE, || {
            dir.try_read("out/app.conf").as_deref() == Some("x=1\n")
        })
        .await;

    etcd.wipe_and_restart().await;
    let revision = etcd.put("/app/x", "2").await;
    assert!(revision < 30, "the new cluster starts over: {revision}");
    daemon
        .wait_for("the new cluster's x=2 applied", PATIENCE, || {
            dir.try_read("out/app.conf").as_deref() == Some("x=2\n")
        })
        .await;
    assert!(
        daemon.stderr().contains("revision went backwards"),
        "{}",
        daemon.stderr()
    );
}

/// Regression: a reload that failed after its swap was dropped when a newer render then
/// failed its check: the service ran older config than dest said until some later
/// render passed. Now the owed reload of the file in place runs anyway.
#[tokio::test]
async fn an_owed_reload_runs_although_a_newer_render_fails_its_check() {
    let etcd = EtcdServer::start().await;
    etcd.put("/app/x", "1").await;
    let dir = Confdir::new();
    dir.template("app.tmpl", "x={{ getv(key=\"/x\", default=\"none\") }}\n");
    dir.resource(
        "app.toml",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n\
         check_cmd = '! grep -q bad {{.src}}'\n\
         reload_cmd = 'test -e $(dirname {{.dest}})/reload-ok && cat {{.dest}} >> $(dirname {{.dest}})/reloads.log'\n",
    );
    let daemon = watch(&dir, &etcd);
    daemon
        .wait_for("x=1 swapped, its reload failed", PATIENCE, || {
            daemon
                .stderr()
                .contains("IS in place, but its reload failed")
        })
        .await;
    // The service comes back, and at once a newer value arrives that fails its check.
    dir.write("out/reload-ok", "");
    etcd.put("/app/x", "bad").await;
    daemon
        .wait_for("the owed reload of x=1 runs", PATIENCE, || {
            dir.try_read("out/reloads.log").as_deref() == Some("x=1\n")
        })
        .await;
    assert_eq!(
        dir.read("out/app.conf"),
        "x=1\n",
        "the bad render never reached dest"
    );
}
