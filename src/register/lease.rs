//! The etcd requests of a registration, sent through the daemon's connection
//! ([`EtcdBackend::call`]: request timeout, token refresh, fail-over between members):
//! grant and revoke a lease, claim the key, open the keep-alive and the watch on the
//! key. What to do with their answers is the holder's business.
//!
//! The key is claimed by compare-and-swap on its `mod_revision`: read it, decide
//! ([`decide`], pure), then put only if nobody wrote it in between. One transaction
//! cannot express "absent, or without a lease, or under ours" (etcd's compares are
//! ANDed), and a nested transaction would only move the same decision into etcd.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};

use super::Setup;
use crate::backend::etcd::{EtcdBackend, EtcdOptions, NAME, is_not_found};
use crate::backend::{Action, BackendError};

/// The daemon's etcd settings, with a request timeout shorter than the TTL: an answer
/// that comes after the lease could have expired is of no use, and a SIGTERM must not
/// wait 10 s for a revoke to a member that hangs.
pub fn client_options(setup: &Setup, endpoints: Vec<String>) -> EtcdOptions {
    let ttl = Duration::from_secs(setup.registration.ttl_secs.unsigned_abs());
    EtcdOptions {
        request_timeout: (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(5)),
        ..crate::run::etcd_options(&setup.etcd, endpoints)
    }
}

/// A lease etcd granted.
#[derive(Debug, Clone, Copy)]
pub struct Granted {
    pub id: i64,
    /// The TTL etcd granted: at least etcd's minimum, whatever was asked.
    pub ttl: Duration,
}

/// The key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub lease: i64,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// What [`decide`] makes of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It already holds our value under our lease, since `revision`.
    Keep { revision: i64 },
    /// Put ours, if it is still as read (`mod_revision`, 0 for an absent key).
    Put { mod_revision: i64 },
    /// Another live lease holds it.
    Refuse { lease: i64, value: Vec<u8> },
}

/// The outcome of [`Etcd::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key holds our value under our lease; `put` says whether this claim wrote it,
    /// `took_from` the lease it was taken from (`--replace`). Changes after `revision`
    /// are someone else's.
    Held {
        revision: i64,
        put: bool,
        took_from: Option<i64>,
    },
    /// Another live lease holds it (and `--replace` was not given).
    Taken { lease: i64, value: Vec<u8> },
    /// Our lease no longer exists (expired or revoked): the put was refused.
    LeaseGone,
}

/// Whose the key is. A key without a lease is a leftover (a hand-made entry, a
/// registration from before leases) that nobody keeps alive: it is overwritten, as the
/// issue protects only "another live instance". A key under another lease belongs to
/// a live instance (etcd deletes a key when its lease ends).
pub fn decide(current: Option<&Current>, lease: i64, value: &[u8], replace: bool) -> Decision {
    match current {
        None => Decision::Put { mod_revision: 0 },
        Some(c) if c.lease == lease && c.value == value => Decision::Keep {
            revision: c.mod_revision,
        },
        Some(c) if c.lease == lease || c.lease == 0 || replace => Decision::Put {
            mod_revision: c.mod_revision,
        },
        Some(c) => Decision::Refuse {
            lease: c.lease,
            value: c.value.clone(),
        },
    }
}

/// A registration's view of etcd.
pub struct Etcd {
    backend: EtcdBackend,
}

impl Etcd {
    pub fn new(backend: EtcdBackend) -> Etcd {
        Etcd { backend }
    }

    pub async fn grant(&self, ttl_secs: i64) -> Result<Granted, BackendError> {
        let resp = self
            .backend
            .call(Action::LeaseGrant, |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?;
        Ok(Granted {
            id: resp.id(),
            ttl: Duration::from_secs(resp.ttl().unsigned_abs()),
        })
    }

    /// Revokes `lease`, deleting its keys; `false` when etcd no longer knew it (it
    /// expired, or an earlier revoke went through without its answer reaching us).
    pub async fn revoke(&self, lease: i64) -> Result<bool, BackendError> {
        self.backend
            .call(Action::LeaseRevoke, |mut c| async move {
                match c.lease_revoke(lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_not_found(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Opens the keep-alive stream of `lease`, renewing it once; `None` when etcd no
    /// longer knows the lease.
    pub async fn keep_alive(
        &self,
        lease: i64,
    ) -> Result<Option<(LeaseKeeper, LeaseKeepAliveStream)>, BackendError> {
        self.backend
            .call(Action::LeaseKeepAlive, |mut c| async move {
                match c.lease_keep_alive(lease).await {
                    Ok(stream) => Ok(Some(stream)),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Makes `key` hold `value` under `lease`, unless another live lease holds it.
    pub async fn claim(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        replace: bool,
    ) -> Result<Claim, BackendError> {
        loop {
            let current = self.read(key).await?;
            let mod_revision = match decide(current.as_ref(), lease, value, replace) {
                Decision::Keep { revision } => {
                    return Ok(Claim::Held {
                        revision,
                        put: false,
                        took_from: None,
                    });
                }
                Decision::Refuse { lease, value } => return Ok(Claim::Taken { lease, value }),
                Decision::Put { mod_revision } => mod_revision,
            };
            let took_from = current.map(|c| c.lease).filter(|&l| l != 0 && l != lease);
            match self.put_if(key, value, lease, mod_revision).await? {
                Put::Done { revision } => {
                    return Ok(Claim::Held {
                        revision,
                        put: true,
                        took_from,
                    });
                }
                Put::LeaseGone => return Ok(Claim::LeaseGone),
                // Written by someone else between the read and the put: decide again.
                Put::Raced => continue,
            }
        }
    }

    /// A watch of `key` alone, from `revision`.
    pub async fn watch(&self, key: &str, revision: i64) -> Result<WatchStream, BackendError> {
        self.backend
            .call(Action::Watch, |mut c| async move {
                let options = WatchOptions::new().with_start_revision(revision);
                c.watch(key, Some(options)).await
            })
            .await
    }

    async fn read(&self, key: &str) -> Result<Option<Current>, BackendError> {
        let resp = self
            .backend
            .call(Action::Get, |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp.kvs().first().map(|kv| Current {
            lease: kv.lease(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        }))
    }

    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        mod_revision: i64,
    ) -> Result<Put, BackendError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        self.backend
            .call(Action::Put, |mut c| {
                let txn = txn.clone();
                async move {
                    match c.txn(txn).await {
                        Ok(resp) if !resp.succeeded() => Ok(Put::Raced),
                        Ok(resp) => Ok(Put::Done {
                            revision: resp.header().map_or(0, |h| h.revision()),
                        }),
                        Err(e) if is_not_found(&e) => Ok(Put::LeaseGone),
                        Err(e) => Err(e),
                    }
                }
            })
            .await
    }
}

enum Put {
    Done { revision: i64 },
    Raced,
    LeaseGone,
}

/// What a registration notices itself on its two streams.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the keep-alive stream ended")]
    KeepAliveEnded,
    #[error("no keep-alive answer within the lease TTL ({0:?})")]
    NoRenewal(Duration),
    #[error("the watch of the key ended")]
    WatchEnded,
}

impl StreamError {
    /// As a transient failure of `action`: etcd may answer again.
    pub fn during(self, action: Action) -> BackendError {
        BackendError::transient(NAME, action, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: i64 = 7;

    fn current(lease: i64, value: &str) -> Current {
        Current {
            lease,
            value: value.as_bytes().to_vec(),
            mod_revision: 42,
        }
    }

    #[test]
    fn an_absent_key_is_put() {
        assert_eq!(
            decide(None, OURS, b"v", false),
            Decision::Put { mod_revision: 0 }
        );
    }

    #[test]
    fn our_own_key_is_kept_or_put_back() {
        let same = current(OURS, "v");
        assert_eq!(
            decide(Some(&same), OURS, b"v", false),
            Decision::Keep { revision: 42 }
        );
        let edited = current(OURS, "edited");
        assert_eq!(
            decide(Some(&edited), OURS, b"v", false),
            Decision::Put { mod_revision: 42 }
        );
    }

    #[test]
    fn a_key_without_a_lease_is_nobodys() {
        let leftover = current(0, "old");
        assert_eq!(
            decide(Some(&leftover), OURS, b"v", false),
            Decision::Put { mod_revision: 42 }
        );
    }

    #[test]
    fn another_live_lease_keeps_its_key_unless_replace() {
        let theirs = current(9, "theirs");
        assert_eq!(
            decide(Some(&theirs), OURS, b"v", false),
            Decision::Refuse {
                lease: 9,
                value: b"theirs".to_vec()
            }
        );
        assert_eq!(
            decide(Some(&theirs), OURS, b"v", true),
            Decision::Put { mod_revision: 42 }
        );
    }
}
