//! A registered instance's steady state: the lease renewed every third of its TTL and
//! the key watched, until the health changes, shutdown comes, etcd fails, or someone
//! else touches the key. What happens next is the holder's `step`.

use etcd_client::{EventType, LeaseKeepAliveStream, LeaseKeeper, WatchResponse, WatchStream};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use super::{Ended, Failure, Holder};
use crate::backend::Action;
use crate::backend::etcd::classify;
use crate::register::health::changed;
use crate::register::lease::StreamError;

/// The shortest time between two renewals.
const MIN_RENEWAL_PERIOD: Duration = Duration::from_millis(500);

impl Holder {
    /// Renews the lease every third of its TTL and watches the key, until something
    /// needs a new step.
    pub(super) async fn session(
        &mut self,
        mut keeper: LeaseKeeper,
        mut answers: LeaseKeepAliveStream,
        mut watch: WatchStream,
        health: &mut watch::Receiver<bool>,
        shutdown: &CancellationToken,
    ) -> Result<Ended, Failure> {
        let Some(lease) = self.lease else {
            return Ok(Ended::LeaseExpired);
        };
        // A third of the TTL, as etcd's own client: two renewals can fail before the
        // lease is at risk. The floor keeps a (never seen) zero TTL from spinning.
        let every = (lease.ttl / 3).max(MIN_RENEWAL_PERIOD);
        let mut next_renewal = Instant::now() + every;
        // The oldest renewal not answered yet: etcd keeps the lease a TTL after it at
        // least (an answer may be to a later one; counting from the oldest is safe).
        let mut sent = None;
        loop {
            let expires = self.lease.map_or(lease.expires(), |l| l.expires());
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
                healthy = changed(health) => if !healthy {
                    return Ok(Ended::Unhealthy);
                },
                _ = sleep_until(next_renewal) => {
                    if let Err(e) = keeper.keep_alive().await {
                        return Err(self.renewal_failed(classify(e, Action::LeaseKeepAlive)));
                    }
                    sent.get_or_insert_with(Instant::now);
                    // From now, not from the missed deadline: a process that was
                    // stopped (SIGSTOP, a suspended VM) must not send a burst.
                    next_renewal = Instant::now() + every;
                }
                answer = answers.message() => match answer {
                    Ok(Some(answer)) if answer.ttl() > 0 => {
                        if let Some(sent) = sent.take() {
                            self.renewed(sent);
                        }
                    }
                    Ok(Some(_)) => return Ok(Ended::LeaseExpired),
                    Ok(None) => return Err(self.renewal_failed(StreamError::KeepAliveEnded.during(Action::LeaseKeepAlive))),
                    Err(e) => return Err(self.renewal_failed(classify(e, Action::LeaseKeepAlive))),
                },
                _ = sleep_until(expires) => {
                    let cause = StreamError::NoRenewal(lease.ttl).during(Action::LeaseKeepAlive);
                    return Err(self.renewal_failed(cause));
                }
                event = watch.message() => {
                    let response = match event {
                        Ok(Some(response)) => response,
                        Ok(None) => return Err(StreamError::WatchEnded.during(Action::Watch).into()),
                        Err(e) => return Err(classify(e, Action::Watch).into()),
                    };
                    if response.canceled() {
                        // Compacted past our revision (or refused): claim again, which
                        // reads the key as it is now.
                        return Ok(Ended::Recheck("the watch of the key was canceled; checking the key again"));
                    }
                    if let Some(ended) = self.judge(&response, lease.id) {
                        return Ok(ended);
                    }
                }
            }
        }
    }

    /// What a change to the key (never ours: the watch starts after our last write)
    /// asks for; `None` for one that leaves our registration as it is.
    fn judge(&self, response: &WatchResponse, lease: i64) -> Option<Ended> {
        response.events().iter().find_map(|event| {
            let kv = event.kv()?;
            match event.event_type() {
                EventType::Delete => Some(Ended::Recheck(
                    "the key was deleted by someone else; putting it back",
                )),
                EventType::Put if kv.lease() != lease && kv.lease() != 0 => {
                    Some(Ended::TakenOver(kv.lease()))
                }
                EventType::Put if kv.lease() == lease && kv.value() == self.registration.value => {
                    None
                }
                EventType::Put => Some(Ended::Recheck(
                    "the key was overwritten by someone else; putting it back",
                )),
            }
        })
    }
}
