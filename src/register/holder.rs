//! The loop that makes etcd match the instance's health. Each `step` brings etcd one
//! move closer, and a healthy, registered instance spends its time in `session`
//! (renewing the lease every third of its TTL and watching its key).
//!
//! The rules it keeps:
//! - **One lease at a time.** A lease is given up (unhealthy, shutdown, not renewed
//!   within its TTL, left by the previous run) by revoking it, and no new lease is
//!   granted before that revoke went through (or etcd said the lease was already
//!   gone). A lease is "not renewed within its TTL" by our clock: after an outage
//!   longer than the TTL etcd may still hold it (a restarted etcd extends every lease
//!   by a TTL), but the key must come back under a lease we know to be alive.
//! - **No key without a kept-alive lease.** The key is only ever put under the lease
//!   being renewed; revoking that lease is what deletes the key, so nothing else can
//!   leave it behind.
//! - **Someone else's change is answered.** A deleted key is put back, an edited one
//!   too; a key taken by another lease (`--replace` elsewhere) ends this instance.
//! - **No busy loop.** Every failed request waits by [`retry::BACKEND`] before the
//!   next step.

mod session;

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::health::changed;
use super::lease::{Claim, Etcd};
use super::memo::Memo;
use super::{RegisterError, Registration, hex};
use crate::backend::BackendError;
use crate::retry::{self, Backoff};

/// How long a revoke at shutdown may take before the key is left to its TTL.
const LEAVE_DEADLINE: Duration = Duration::from_secs(5);

pub struct Holder {
    etcd: Etcd,
    registration: Registration,
    memo: Memo,
    /// The lease held, kept alive while healthy.
    lease: Option<Lease>,
    /// A lease given up but not yet revoked (etcd was away, or the previous run left
    /// it): revoked before anything else.
    stale: Option<i64>,
    /// Whether the key is put under `lease`.
    registered: bool,
    backoff: Backoff,
    /// When etcd started failing, for the log line when it answers again.
    failing_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    ttl: Duration,
    /// When the last renewal etcd acknowledged was sent: etcd keeps the lease at
    /// least a TTL after it.
    renewed: Instant,
}

impl Lease {
    fn expires(&self) -> Instant {
        self.renewed + self.ttl
    }
}

enum Next {
    Again,
    Stop,
}

enum Failure {
    Etcd(BackendError),
    Refused(RegisterError),
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        Failure::Etcd(e)
    }
}

/// How a session ended without an error.
enum Ended {
    Unhealthy,
    Shutdown,
    /// The key was deleted or edited by someone else, or its watch lost track of
    /// it: claim it again (the message says which).
    Recheck(&'static str),
    TakenOver(i64),
    /// etcd says the lease has no time left.
    LeaseExpired,
}

impl Holder {
    pub fn new(etcd: Etcd, registration: Registration, mut memo: Memo) -> Holder {
        let stale = memo.previous();
        if let Some(lease) = stale {
            info!(key = %registration.key, lease = %hex(lease), "revoking the lease a previous run left");
        }
        Holder {
            etcd,
            registration,
            memo,
            lease: None,
            stale,
            registered: false,
            backoff: Backoff::new(retry::BACKEND),
            failing_since: None,
        }
    }

    /// Runs until shutdown (`Ok`, the lease revoked) or until another instance is in
    /// the way or etcd refuses for good (the lease revoked too, if etcd answers).
    pub async fn hold(
        mut self,
        mut health: watch::Receiver<bool>,
        shutdown: &CancellationToken,
    ) -> Result<(), RegisterError> {
        loop {
            // Cancelling a step mid-request is safe: a grant whose answer is lost
            // leaves a lease with no key that expires by itself, and any lease we
            // know of is revoked by `leave`.
            let step = tokio::select! {
                _ = shutdown.cancelled() => Ok(Next::Stop),
                step = self.step(&mut health, shutdown) => step,
            };
            let error = match step {
                Ok(Next::Again) => continue,
                Ok(Next::Stop) => None,
                Err(Failure::Refused(e)) => Some(e),
                Err(Failure::Etcd(e)) if !e.is_transient() => Some(RegisterError::Backend(e)),
                Err(Failure::Etcd(e)) => {
                    self.failing_since.get_or_insert_with(Instant::now);
                    let delay = self.backoff.next_delay();
                    warn!(key = %self.registration.key, cause = %e, retry_in_ms = delay.as_millis() as u64, "etcd request failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => None,
                        _ = sleep(delay) => continue,
                    }
                }
            };
            self.leave().await;
            return error.map_or(Ok(()), Err);
        }
    }

    async fn step(
        &mut self,
        health: &mut watch::Receiver<bool>,
        shutdown: &CancellationToken,
    ) -> Result<Next, Failure> {
        self.revoke_stale().await?;
        if !*health.borrow_and_update() {
            self.deregister("unhealthy").await?;
            changed(health).await;
            return Ok(Next::Again);
        }
        let lease = self.lease().await?;
        let sent = Instant::now();
        let kept = self.etcd.keep_alive(lease.id).await?;
        self.answered();
        let Some((keeper, answers)) = kept else {
            return Ok(self.lease_expired());
        };
        self.renewed(sent);
        let Some(revision) = self.claim(lease.id).await? else {
            return Ok(self.lease_expired());
        };
        let watch = self
            .etcd
            .watch(&self.registration.key, revision + 1)
            .await?;
        Ok(
            match self
                .session(keeper, answers, watch, health, shutdown)
                .await?
            {
                Ended::Shutdown => Next::Stop,
                Ended::Unhealthy => Next::Again,
                Ended::LeaseExpired => self.lease_expired(),
                Ended::Recheck(why) => {
                    warn!(key = %self.registration.key, "{why}");
                    self.registered = false;
                    Next::Again
                }
                Ended::TakenOver(other) => {
                    self.registered = false;
                    return Err(Failure::Refused(RegisterError::TakenOver {
                        key: self.registration.key.clone(),
                        lease: hex(other),
                    }));
                }
            },
        )
    }

    /// The lease to hold the key with: the current one while it can still be alive,
    /// else a new one, once the old one is revoked.
    async fn lease(&mut self) -> Result<Lease, Failure> {
        if let Some(lease) = self.lease {
            if Instant::now() < lease.expires() {
                return Ok(lease);
            }
            warn!(key = %self.registration.key, lease = %hex(lease.id), "lease not renewed within its TTL: replacing it");
            self.give_up_lease();
            self.revoke_stale().await?;
        }
        let sent = Instant::now();
        let granted = self.etcd.grant(self.registration.ttl_secs).await?;
        self.memo.save(Some(granted.id));
        let lease = Lease {
            id: granted.id,
            ttl: granted.ttl,
            renewed: sent,
        };
        debug!(key = %self.registration.key, lease = %hex(lease.id), ttl_s = lease.ttl.as_secs(), "lease granted");
        self.lease = Some(lease);
        Ok(lease)
    }

    /// Puts the key under `lease` unless it is there already; the revision after which
    /// changes are someone else's, `None` when the lease is gone.
    async fn claim(&mut self, lease: i64) -> Result<Option<i64>, Failure> {
        let r = &self.registration;
        let claim = self.etcd.claim(&r.key, &r.value, lease, r.replace).await?;
        match claim {
            Claim::Held {
                revision,
                put,
                took_from,
            } => {
                if let Some(other) = took_from {
                    warn!(key = %r.key, from_lease = %hex(other), "took the key from another instance (--replace)");
                }
                if put || !self.registered {
                    info!(key = %r.key, lease = %hex(lease), revision, "registered");
                }
                self.registered = true;
                Ok(Some(revision))
            }
            Claim::LeaseGone => Ok(None),
            Claim::Taken { lease, value } => Err(Failure::Refused(RegisterError::Held {
                key: r.key.clone(),
                lease: hex(lease),
                value: String::from_utf8_lossy(&value).into_owned(),
            })),
        }
    }

    fn renewal_failed(&self, cause: BackendError) -> Failure {
        let lease = self.lease.map(|l| hex(l.id)).unwrap_or_default();
        warn!(key = %self.registration.key, lease = %lease, cause = %cause, "lease renewal failed");
        Failure::Etcd(cause)
    }

    fn renewed(&mut self, sent: Instant) {
        if let Some(lease) = &mut self.lease {
            lease.renewed = sent;
        }
    }

    /// etcd forgot the lease (it expired, or was revoked by hand): the key went with it.
    fn lease_expired(&mut self) -> Next {
        if let Some(lease) = self.lease.take() {
            warn!(key = %self.registration.key, lease = %hex(lease.id), "lease expired; registering again under a new one");
        }
        self.registered = false;
        Next::Again
    }

    /// Leaves the lease to be revoked: from here on it is no longer renewed.
    fn give_up_lease(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.stale = Some(lease.id);
        }
    }

    /// Revokes the lease (deleting the key), if one is held.
    async fn deregister(&mut self, reason: &str) -> Result<(), Failure> {
        let was_registered = std::mem::take(&mut self.registered);
        let lease = self.lease.map(|l| hex(l.id)).unwrap_or_default();
        self.give_up_lease();
        let revoked = self.revoke_stale().await;
        match &revoked {
            Ok(()) if was_registered => {
                info!(key = %self.registration.key, lease = %lease, reason = %reason, "deregistered: lease revoked, key deleted");
            }
            Err(Failure::Etcd(cause)) if was_registered => {
                warn!(key = %self.registration.key, lease = %lease, reason = %reason, cause = %cause, "could not revoke the lease: the key stays until the lease expires, within its TTL");
            }
            _ => {}
        }
        revoked
    }

    async fn revoke_stale(&mut self) -> Result<(), Failure> {
        let Some(lease) = self.stale else {
            return Ok(());
        };
        let existed = self.etcd.revoke(lease).await?;
        self.answered();
        debug!(lease = %hex(lease), existed, "lease revoked");
        self.stale = None;
        self.memo.save(None);
        Ok(())
    }

    /// A request went through: log the end of an outage.
    fn answered(&mut self) {
        self.backoff.reset();
        if let Some(since) = self.failing_since.take() {
            info!(key = %self.registration.key, down_for_ms = since.elapsed().as_millis() as u64, "etcd answers again");
        }
    }

    /// Shutdown, or an end by error: revoke what is held, within [`LEAVE_DEADLINE`]
    /// (a failure is logged by `deregister`).
    async fn leave(&mut self) {
        let registered = self.registered;
        if tokio::time::timeout(LEAVE_DEADLINE, self.deregister("stopping"))
            .await
            .is_err()
            && registered
        {
            warn!(
                key = %self.registration.key,
                lease = %self.stale.map(hex).unwrap_or_default(),
                "could not revoke the lease in time: the key stays until the lease expires, within its TTL"
            );
        }
    }
}
