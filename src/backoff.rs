//! The one retry wait: exponential from a base, with half jitter (a random
//! wait between half and all of the step, so retries of many clients spread
//! out but never come back sooner than half the step), capped; a server's
//! `Retry-After` is honoured as given, under the same cap. Used by Google
//! calls (sync, token refresh, channel registration), channel renewal
//! retries and the alert webhook.

use std::time::Duration;

/// Retry waits growing from `base` by doubling, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap }
    }

    /// The undithered step before retry `attempt` (0 = the first retry): `base · 2^attempt`, capped.
    pub fn step(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(1u32 << attempt.min(16)).min(self.cap)
    }

    /// The wait before retry `attempt`: a random point in the upper half of [`Backoff::step`].
    pub fn delay(&self, attempt: u32) -> Duration {
        let ms = self.step(attempt).as_millis() as u64;
        Duration::from_millis(rand::Rng::random_range(&mut rand::rng(), ms / 2..=ms))
    }

    /// [`Backoff::delay`], or what the server asked for (`Retry-After`), capped.
    pub fn delay_or(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.cap),
            None => self.delay(attempt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_under_a_cap_and_honours_retry_after() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(32));
        for attempt in 0..6 {
            let step = Duration::from_millis(500) * (1 << attempt);
            for _ in 0..20 {
                let d = b.delay(attempt);
                assert!(d >= step / 2 && d <= step, "{d:?} for attempt {attempt}");
            }
        }
        // The jitter spreads waits out (20 draws of a 16 s step are not all equal).
        let draws: std::collections::HashSet<Duration> = (0..20).map(|_| b.delay(5)).collect();
        assert!(draws.len() > 1, "{draws:?}");
        for attempt in [7, 30, 200, u32::MAX] {
            assert!(b.delay(attempt) <= b.cap && b.delay(attempt) >= b.cap / 2, "attempt {attempt}");
        }
        assert_eq!(b.delay_or(0, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(b.delay_or(0, Some(Duration::from_secs(3600))), b.cap, "Retry-After is capped too");
        assert!(b.delay_or(2, None) <= b.step(2));
    }

    #[test]
    fn a_zero_base_never_waits() {
        let b = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(b.delay(3), Duration::ZERO);
    }
}
