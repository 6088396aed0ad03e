//! Whether the instance is healthy: HAProxy's rise/fall counting ([`Health`]) over the
//! results of `--check-cmd`, run every `--check-interval` by one task. The task
//! publishes only the transitions, on a `watch` channel the holder selects on.
//!
//! An instance starts unhealthy: the "put after `rise` passing checks" and
//! HAProxy's `init-state down`. Without a check it is healthy from the start.

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::HealthCheck;
use crate::command::{CommandError, CommandOutput};

/// Consecutive results toward the other state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    rise: u32,
    fall: u32,
    healthy: bool,
    /// Results in a row that disagree with `healthy`.
    streak: u32,
}

impl Health {
    pub fn new(rise: u32, fall: u32) -> Health {
        Health {
            rise,
            fall,
            healthy: false,
            streak: 0,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Counts one check; `Some(new state)` when it makes the state flip. A result
    /// that agrees with the state resets the count toward the other one, so only
    /// `rise` (or `fall`) results *in a row* flip it.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}

/// Starts the checks of the instance registered at `key` (named in their logs); the
/// receiver holds whether it is healthy now.
pub fn start(
    key: &str,
    check: Option<HealthCheck>,
    shutdown: CancellationToken,
) -> watch::Receiver<bool> {
    match check {
        None => watch::channel(true).1,
        Some(check) => {
            let (tx, rx) = watch::channel(false);
            tokio::spawn(run_checks(key.to_string(), check, tx, shutdown));
            rx
        }
    }
}

/// Waits for the next transition; never returns when there will be none (no check).
pub async fn changed(health: &mut watch::Receiver<bool>) -> bool {
    if health.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
    *health.borrow_and_update()
}

/// One check every `interval` (from the start of one to the start of the next; a
/// check that overruns delays the next, never two at once), until shutdown. A check
/// under way at shutdown is not waited for here: its blocking thread still kills its
/// process group at the timeout, and the runtime waits for that before the process
/// exits, so no check outlives conflux.
async fn run_checks(
    key: String,
    check: HealthCheck,
    tx: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut health = Health::new(check.rise, check.fall);
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Only the first failure of an unhealthy streak is worth a warning: the rest
    // repeat it every interval for as long as the instance is down.
    let mut quiet = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let command = check.command.clone();
        let run = tokio::task::spawn_blocking(move || command.run_as_written());
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = run => result,
        };
        let result = match result {
            Ok(result) => result,
            Err(join) => {
                warn!(key = %key, cause = %join, "health check task failed");
                continue;
            }
        };
        let passed = result.is_ok();
        let flipped = health.record(passed);
        log_check(&key, &result, &health, &check, &mut quiet);
        if let Some(healthy) = flipped {
            log_transition(&key, healthy, &check);
            quiet = false;
            tx.send_replace(healthy);
        }
    }
}

fn log_check(
    key: &str,
    result: &Result<CommandOutput, CommandError>,
    health: &Health,
    check: &HealthCheck,
    quiet: &mut bool,
) {
    match result {
        Ok(out) => debug!(
            key = %key,
            duration_ms = out.duration.as_millis() as u64,
            "health check passed"
        ),
        Err(cause) if health.is_healthy() || !*quiet => {
            *quiet = !health.is_healthy();
            warn!(key = %key, command = %check.command.line, cause = %cause, "health check failed");
        }
        Err(cause) => debug!(key = %key, cause = %cause, "health check failed"),
    }
}

fn log_transition(key: &str, healthy: bool, check: &HealthCheck) {
    if healthy {
        info!(
            key = %key,
            rise = check.rise,
            "healthy: the check passed {} time(s) in a row",
            check.rise
        );
    } else {
        warn!(
            key = %key,
            fall = check.fall,
            "unhealthy: the check failed {} time(s) in a row",
            check.fall
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::command::Command;

    fn run(health: &mut Health, results: &[bool]) -> Vec<Option<bool>> {
        results
            .iter()
            .map(|&passed| health.record(passed))
            .collect()
    }

    #[test]
    fn rise_passes_in_a_row_make_it_healthy() {
        let mut health = Health::new(2, 3);
        assert_eq!(run(&mut health, &[true, true]), [None, Some(true)]);
        assert!(health.is_healthy());
    }

    #[test]
    fn a_failure_between_passes_starts_the_rise_over() {
        let mut health = Health::new(2, 3);
        assert_eq!(
            run(&mut health, &[true, false, true, true]),
            [None, None, None, Some(true)]
        );
    }

    #[test]
    fn fall_failures_in_a_row_make_it_unhealthy_and_a_pass_resets_them() {
        let mut health = Health::new(1, 3);
        health.record(true);
        let results = [false, false, true, false, false, false];
        assert_eq!(
            run(&mut health, &results),
            [None, None, None, None, None, Some(false)]
        );
        assert!(!health.is_healthy());
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_publishes_transitions_of_a_real_check() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("healthy");
        let check = HealthCheck {
            command: Command::new(
                format!("test -e {}", marker.display()),
                Duration::from_secs(5),
            ),
            interval: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        };
        let shutdown = CancellationToken::new();
        let begin = tokio::time::Instant::now();
        std::fs::write(&marker, "").unwrap();
        let mut health = start("/svc/a", Some(check), shutdown.clone());
        assert!(!*health.borrow(), "an instance starts unhealthy");
        // Checks at 0 s and 1 s pass: healthy at the second (rise 2).
        assert!(changed(&mut health).await);
        assert_eq!(begin.elapsed(), Duration::from_secs(1));
        std::fs::remove_file(&marker).unwrap();
        // Checks at 2, 3 and 4 s fail: unhealthy at the third (fall 3).
        assert!(!changed(&mut health).await);
        assert_eq!(begin.elapsed(), Duration::from_secs(4));
        shutdown.cancel();
    }
}
