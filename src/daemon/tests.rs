//! The loop against fakes, under tokio's paused clock: coalescing, retries, watch
//! resumption, resets, SIGHUP, shutdown and interval mode.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::fake::{Feed, Harness, Script, data, ms, reloaded, resource, two_resources};
use crate::config::Mode;
use crate::kv::Change;
use crate::outcome::Work;

#[tokio::test(start_paused = true)]
async fn an_isolated_change_applies_at_once_and_only_to_the_resources_it_concerns() {
    let (resources, snapshot) = two_resources();
    let mut h = Harness::start(resources, snapshot, Mode::Watch, |_, _| {});
    let first = h.calls(2).await;
    assert!(
        first
            .iter()
            .all(|c| c.revision == 10 && c.work == Work::Apply)
    );
    sleep(Duration::from_secs(10)).await;

    let sent = Instant::now();
    h.put(11, "/app/a/x", "2");
    let call = h.next_call().await;
    assert_eq!(
        (call.name.as_str(), call.revision, call.at),
        ("a.toml", 11, sent)
    );
    sleep(Duration::from_secs(10)).await;
    assert_eq!(h.all_calls().len(), 3, "b.toml was not applied");
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_burst_during_a_slow_apply_collapses_into_one_apply_of_the_newest_revision() {
    let resources = vec![resource("a.toml", &["/app/a"])];
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
    h.next_call().await;
    sleep(Duration::from_secs(10)).await;

    h.idle().await;
    h.applier.set_gate(false);
    h.put(11, "/app/a/x", "0");
    assert_eq!(h.next_call().await.revision, 11);
    for revision in 12..=511 {
        h.put(revision, "/app/a/x", &revision.to_string());
    }
    h.run_ready().await;
    // The apply takes two seconds: the window has long passed when it ends.
    tokio::time::advance(ms(2_000)).await;
    h.run_ready().await;
    h.applier.set_gate(true);
    sleep(Duration::from_secs(10)).await;

    let later: Vec<i64> = h.all_calls()[2..].iter().map(|c| c.revision).collect();
    assert_eq!(later, vec![511]);
    assert!(!h.applier.overlapped.load(Ordering::SeqCst));
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_last_change_of_a_burst_is_always_applied() {
    // Two resources share the key, so they apply side by side, never each twice at once.
    // Both reload, so the default window coalesces the burst.
    let resources = vec![
        reloaded("a.toml", &["/app"]),
        reloaded("b.toml", &["/app/a"]),
    ];
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
    h.calls(2).await;
    for revision in 11..=310 {
        h.put(revision, "/app/a/x", &revision.to_string());
        sleep(ms(3)).await;
    }
    sleep(Duration::from_secs(10)).await;

    for name in ["a.toml", "b.toml"] {
        let applies: Vec<i64> = h
            .all_calls()
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.revision)
            .collect();
        assert_eq!(applies.last(), Some(&310), "{name}");
        assert!(applies.len() <= 10, "{name}: {} applies", applies.len());
    }
    assert!(!h.applier.overlapped.load(Ordering::SeqCst));
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn without_a_reload_every_sequential_change_is_applied_at_once() {
    // Regression: the old one-size default window (100ms:1s) held every change that
    // came within 100 ms of an apply, even for a resource with no reload to protect.
    let resources = vec![resource("a.toml", &["/app"])];
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
    h.calls(1).await;
    for revision in 11..=20 {
        let sent = Instant::now();
        h.put(revision, "/app/x", &revision.to_string());
        let call = h.next_call().await;
        assert_eq!(call.revision, revision);
        assert_eq!(call.at, sent, "applied with no added delay");
        sleep(ms(3)).await;
    }
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_failed_apply_is_retried_with_backoff_until_it_succeeds() {
    let resources = vec![resource("a.toml", &["/app/a"])];
    let failed = Script::Failed;
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, applier| {
        applier.script_apply("a.toml", vec![failed, failed, failed]);
    });
    let calls = h.calls(4).await;
    sleep(Duration::from_secs(120)).await;

    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert_eq!(gaps, vec![ms(1_000), ms(2_000), ms(4_000)]);
    assert_eq!(h.all_calls().len(), 4, "no retry after the success");
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn an_owed_reload_is_retried_alone_until_it_succeeds() {
    let resources = vec![resource("a.toml", &["/app/a"])];
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, applier| {
        applier.script_apply("a.toml", vec![Script::ReloadFailed]);
        applier.script_reload("a.toml", vec![false, false]);
    });
    h.calls(4).await;
    sleep(Duration::from_secs(120)).await;

    let works: Vec<Work> = h.all_calls().iter().map(|c| c.work).collect();
    assert_eq!(
        works,
        vec![Work::Apply, Work::Reload, Work::Reload, Work::Reload]
    );
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn newer_data_supersedes_a_failing_apply() {
    let resources = vec![resource("a.toml", &["/app/a"])];
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, applier| {
        applier.script_apply("a.toml", vec![Script::Failed, Script::Failed]);
    });
    h.calls(2).await;
    sleep(ms(500)).await;
    let sent = Instant::now();
    h.put(11, "/app/a/x", "fixed");
    let call = h.next_call().await;
    assert_eq!((call.revision, call.at), (11, sent));
    sleep(Duration::from_secs(120)).await;
    assert_eq!(h.all_calls().len(), 3, "no retry of the superseded data");
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_broken_watch_resumes_after_the_last_applied_revision_without_busy_looping() {
    let resources = vec![resource("a.toml", &["/app/a"])];
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
    h.next_call().await;
    h.put(11, "/app/a/x", "1");
    h.next_call().await;

    // The backend goes away for a minute: every watch fails at once.
    h.backend.down.store(true, Ordering::SeqCst);
    h.feed.send(Feed::Break).expect("listening");
    sleep(Duration::from_secs(60)).await;
    let attempts = h.backend.watches.lock().unwrap().len() - 1;
    assert!(
        (5..=25).contains(&attempts),
        "{attempts} watch attempts in 60 s"
    );

    h.backend.down.store(false, Ordering::SeqCst);
    sleep(Duration::from_secs(20)).await;
    let afters: Vec<i64> = h
        .backend
        .watches
        .lock()
        .unwrap()
        .iter()
        .map(|w| w.2)
        .collect();
    assert_eq!(afters[0], 10);
    assert!(afters[1..].iter().all(|&after| after == 11), "{afters:?}");
    h.put(12, "/app/a/x", "2");
    assert_eq!(h.next_call().await.revision, 12);
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_reset_reapplies_only_the_resources_whose_data_changed() {
    let (resources, snapshot) = two_resources();
    let mut h = Harness::start(resources, snapshot, Mode::Watch, |_, _| {});
    h.calls(2).await;
    let reset = data(40, &[("/app/a/x", "changed"), ("/app/b/y", "1")]);
    h.feed
        .send(Feed::Change(Change::Reset(reset)))
        .expect("listening");
    let call = h.next_call().await;
    assert_eq!((call.name.as_str(), call.revision), ("a.toml", 40));
    sleep(Duration::from_secs(10)).await;
    assert_eq!(h.all_calls().len(), 3);
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn sighup_with_a_valid_set_swaps_it_in_and_watches_its_keys() {
    let resources = vec![resource("a.toml", &["/app/a"])];
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
    h.next_call().await;
    *h.next_load.lock().unwrap() = Ok(vec![resource("c.toml", &["/app/c"])]);
    *h.backend.data.lock().unwrap() = data(15, &[("/app/c/z", "1")]);
    h.reload_tx.send(()).await.expect("listening");

    let call = h.next_call().await;
    assert_eq!((call.name.as_str(), call.revision), ("c.toml", 15));
    sleep(Duration::from_secs(1)).await;
    let last_watch = h
        .backend
        .watches
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("watching");
    assert_eq!(
        (last_watch.1, last_watch.2),
        (vec!["/app/c".to_string()], 15)
    );
    h.put(16, "/app/a/x", "ignored");
    h.put(17, "/app/c/z", "2");
    let call = h.next_call().await;
    assert_eq!((call.name.as_str(), call.revision), ("c.toml", 17));
    sleep(Duration::from_secs(10)).await;
    assert_eq!(h.all_calls().len(), 3, "the removed a.toml is not applied");
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn sighup_with_an_invalid_set_keeps_the_old_one() {
    let resources = vec![resource("a.toml", &["/app/a"])];
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
    h.next_call().await;
    *h.next_load.lock().unwrap() = Err("conf.d/c.toml: missing dest".into());
    h.reload_tx.send(()).await.expect("listening");
    sleep(Duration::from_secs(1)).await;
    h.put(11, "/app/a/x", "1");
    let call = h.next_call().await;
    assert_eq!((call.name.as_str(), call.revision), ("a.toml", 11));
    assert_eq!(
        h.backend.watches.lock().unwrap().len(),
        1,
        "the watch was kept"
    );
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_slow_apply_waits_for_it_to_finish() {
    let resources = vec![resource("a.toml", &["/app/a"])];
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |_, _| {});
    h.next_call().await;
    h.idle().await;
    h.applier.set_gate(false);
    h.put(11, "/app/a/x", "1");
    h.next_call().await;

    h.token.cancel();
    h.run_ready().await;
    assert!(
        !h.daemon.is_finished(),
        "returned while an apply was under way"
    );
    h.applier.set_gate(true);
    let applier = Arc::clone(&h.applier);
    h.daemon.await.expect("no panic").expect("clean shutdown");
    assert_eq!(applier.finished.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn interval_mode_reads_again_and_applies_every_resource() {
    let (resources, snapshot) = two_resources();
    let mut h = Harness::start(
        resources,
        snapshot,
        Mode::Interval(Duration::from_secs(60)),
        |_, _| {},
    );
    h.calls(2).await;
    *h.backend.data.lock().unwrap() = data(11, &[("/app/a/x", "2"), ("/app/b/y", "1")]);
    let again = h.calls(2).await;
    assert!(again.iter().all(|c| c.revision == 11));
    assert_eq!(again[0].at - h.all_calls()[0].at, Duration::from_secs(60));
    assert_eq!(h.backend.snapshots.lock().unwrap().len(), 2);
    assert!(h.backend.watches.lock().unwrap().is_empty());
    h.stop().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_first_snapshot_is_retried_while_the_backend_is_away() {
    let resources = vec![resource("a.toml", &["/app/a"])];
    let start = Instant::now();
    let mut h = Harness::start(resources, data(10, &[]), Mode::Watch, |backend, _| {
        backend.snapshot_failures.store(5, Ordering::SeqCst);
    });
    let call = h.next_call().await;
    assert_eq!(call.revision, 10);
    assert_eq!(h.backend.snapshots.lock().unwrap().len(), 6);
    // Five waits of at least half of 100, 200, 400, 800 and 1,600 ms.
    assert!(call.at - start >= ms(1_550));
    h.stop().await.expect("clean shutdown");
}
