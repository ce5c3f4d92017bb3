//! When to try a failed job again: exponential backoff with a cap, and when to give up.

use std::time::Duration;

/// How failed jobs are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last one the job is dead-lettered.
    pub max_attempts: u32,
    /// Wait after the first failure; it doubles each time.
    pub base: Duration,
    /// The wait never exceeds this.
    pub max: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Run attempt number `attempt` (1-based) after `wait`.
    RetryAfter {
        /// The attempt to run next.
        attempt: u32,
        /// How long to wait before it.
        wait: Duration,
    },
    /// Give up: put the job on the dead-letter list for a person to look at.
    DeadLetter,
}

impl RetryPolicy {
    /// The decision after attempt `attempt` (1-based) failed.
    pub fn after_failure(&self, attempt: u32) -> AfterFailure {
        if attempt >= self.max_attempts {
            return AfterFailure::DeadLetter;
        }
        let exp = attempt.saturating_sub(1).min(30);
        let wait = self.base.saturating_mul(1u32 << exp).min(self.max);
        AfterFailure::RetryAfter {
            attempt: attempt + 1,
            wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_secs(10),
        max: Duration::from_secs(60),
    };

    #[test]
    fn waits_double_up_to_the_cap() {
        let waits: Vec<_> = (1..5)
            .map(|a| match POLICY.after_failure(a) {
                AfterFailure::RetryAfter { wait, .. } => wait.as_secs(),
                AfterFailure::DeadLetter => 0,
            })
            .collect();
        assert_eq!(waits, vec![10, 20, 40, 60]);
    }

    #[test]
    fn the_last_attempt_goes_to_the_dead_letters() {
        assert_eq!(POLICY.after_failure(5), AfterFailure::DeadLetter);
        assert_eq!(
            POLICY.after_failure(1),
            AfterFailure::RetryAfter {
                attempt: 2,
                wait: Duration::from_secs(10)
            }
        );
    }
}
