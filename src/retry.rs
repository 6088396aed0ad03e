//! The one retry policy of conflux: capped exponential backoff, jittered where many
//! processes would otherwise retry in step. Every retry uses it: reconnecting to a
//! backend, re-reading a snapshot, a request to another etcd member, a failed apply.
//!
//! What to retry and when to give up is the caller's business; this only says how long
//! to wait before the next attempt.

use std::time::Duration;

/// How the waits of one kind of retry grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first wait.
    pub first: Duration,
    /// No wait is longer (before jitter).
    pub max: Duration,
    pub jitter: Jitter,
}

/// How a wait is spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the step: for retries of local work, where nothing else retries in step
    /// with us and a predictable schedule is easier to read in the log.
    None,
    /// Between half and all of the step ("equal jitter"): for retries against a shared
    /// server, so that a fleet of daemons spreads out after an outage.
    Equal,
}

/// Reconnecting to a backend and re-reading it: 100 ms doubling to 10 s, jittered.
pub const BACKEND: Policy = Policy {
    first: Duration::from_millis(100),
    max: Duration::from_secs(10),
    jitter: Jitter::Equal,
};

/// One etcd request tried again, the client picking another member: 50 ms doubling
/// to 400 ms, jittered (a fleet of daemons retries the same cluster). Short, because a
/// dead member fails only its share of requests and the next attempt usually lands
/// elsewhere; capped at 400 ms so that the attempts of one request (three per member)
/// still outlast a leader election, etcd's default election timeout being 1 s.
pub const REQUEST: Policy = Policy {
    first: Duration::from_millis(50),
    max: Duration::from_millis(400),
    jitter: Jitter::Equal,
};

/// A failed apply or reload: 1 s doubling to 30 s. Not jittered: the work is local.
pub const APPLY: Policy = Policy {
    first: Duration::from_secs(1),
    max: Duration::from_secs(30),
    jitter: Jitter::None,
};

/// The state of one sequence of retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    step: Duration,
}

impl Backoff {
    pub fn new(policy: Policy) -> Self {
        Backoff {
            policy,
            step: policy.first,
        }
    }

    /// The wait before the next attempt; each call doubles the step up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.policy.max);
        match self.policy.jitter {
            Jitter::None => step,
            Jitter::Equal => {
                let half = step / 2;
                half + half.mul_f64(rand::random_range(0.0..=1.0))
            }
        }
    }

    /// Starts over from the first wait (after a success).
    pub fn reset(&mut self) {
        self.step = self.policy.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap() {
        let mut b = Backoff::new(APPLY);
        let secs: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    /// Three members, nine attempts: even at the short end of the jitter the eight
    /// waits between them outlast a 1 s leader election.
    #[test]
    fn request_retries_outlast_a_leader_election() {
        let mut b = Backoff::new(REQUEST);
        let waited: Duration = (0..8).map(|_| b.next_delay()).sum();
        assert!(waited >= Duration::from_secs(1), "{waited:?}");
        assert!(b.next_delay() <= REQUEST.max);
    }

    #[test]
    fn equal_jitter_stays_between_half_and_all_of_the_step() {
        let mut b = Backoff::new(BACKEND);
        let mut step = BACKEND.first;
        for _ in 0..12 {
            let delay = b.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
            step = (step * 2).min(BACKEND.max);
        }
    }
}
