//! Retrying transient failures in place, within the invocation's deadline.
//!
//! A transient error (a reset connection, 429, 503, UNAVAILABLE, RESOURCE_EXHAUSTED) retried
//! here costs a few seconds; the same error surfacing as a failed SQS message costs a full
//! S3 re-read, new write streams and a visibility timeout. Retries stop early enough to leave
//! the invocation time to report what it did.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;

tokio::task_local! {
    /// When the current invocation must have answered (Lambda's `context.deadline`).
    static DEADLINE: Instant;
}

/// Time kept free before the deadline for recording progress and answering.
pub const RESERVE: Duration = Duration::from_secs(10);

/// Whether an error can go away by itself (so repeating the call may succeed).
pub trait Transient {
    fn is_transient(&self) -> bool;
}

/// Runs `work` with `deadline` as the invocation's deadline.
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// The current invocation's deadline, if one was set.
pub fn deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Time left before the deadline (`None`: no deadline, e.g. the CLI).
pub fn time_left() -> Option<Duration> {
    deadline().map(|d| d.saturating_duration_since(Instant::now()))
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Attempts in all when no deadline bounds them.
    pub attempts_without_deadline: u32,
}

impl Backoff {
    /// For calls to BigQuery and S3: retried for minutes within a deadline (an outage of a
    /// few minutes is ridden out in place), about 15 s without one.
    pub const STANDARD: Backoff = Backoff {
        first: Duration::from_millis(200),
        max: Duration::from_secs(20),
        attempts_without_deadline: 7,
    };

    /// The pause before attempt `attempt + 1` (full jitter: uniform in [0, cap]).
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .first
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let jittered = rand::rng().random_range(0..=cap.as_millis() as u64);
        Duration::from_millis(jittered.max(self.first.as_millis() as u64 / 4))
    }

    /// Whether another attempt fits: under the attempt cap without a deadline, or before the
    /// deadline's reserve with one.
    fn another(&self, attempt: u32, delay: Duration) -> bool {
        match time_left() {
            Some(left) => left > delay + RESERVE,
            None => attempt < self.attempts_without_deadline,
        }
    }
}

/// Calls `op` until it succeeds, fails permanently, or retrying no longer fits.
pub async fn retry<T, E, F, Fut>(call: &str, backoff: Backoff, mut op: F) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() => {
                let delay = backoff.delay(attempt);
                if !backoff.another(attempt, delay) {
                    return Err(e);
                }
                tracing::warn!(call, attempt, error = %e, delay_ms = delay.as_millis() as u64, "transient failure; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug)]
    struct E(bool);
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transient={}", self.0)
        }
    }

    const FAST: Backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(2),
        attempts_without_deadline: 4,
    };

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = Cell::new(0);
        let result: Result<u32, E> = retry("t", FAST, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(E(true))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried_and_attempts_are_capped() {
        let calls = Cell::new(0);
        let result: Result<(), E> = retry("t", FAST, || {
            calls.set(calls.get() + 1);
            async { Err(E(false)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);
        calls.set(0);
        let result: Result<(), E> = retry("t", FAST, || {
            calls.set(calls.get() + 1);
            async { Err(E(true)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 4, "attempts_without_deadline");
    }

    #[tokio::test]
    async fn no_retry_starts_inside_the_deadline_reserve() {
        let calls = Cell::new(0);
        let deadline = Instant::now() + RESERVE / 2;
        let result: Result<(), E> = within(
            deadline,
            retry("t", FAST, || {
                calls.set(calls.get() + 1);
                async { Err(E(true)) }
            }),
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1, "too close to the deadline to try again");
        assert!(time_left().is_none(), "the deadline is scoped to the work");
    }
}
