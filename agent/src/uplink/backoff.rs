//! Capped exponential backoff with jitter, pure: the random draw is a parameter.

use std::time::Duration;

/// Reconnect delays: `min * 2^attempt`, capped at `max`, of which a random half
/// is jittered away ("equal jitter"), so a fleet that lost its broker at the same
/// moment does not reconnect in lockstep, while every delay stays at least half
/// the nominal one.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// `min` must not exceed `max` (the config checks it).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt; `unit` is a uniform draw from [0, 1).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let nominal = self
            .min
            .checked_mul(1u32 << self.attempt.min(20))
            .map_or(self.max, |d| d.min(self.max));
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// A connection succeeded: start again from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_until_the_cap() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let d: Vec<_> = (0..6).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(
            d,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
    }

    #[test]
    fn jitter_takes_off_at_most_half() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        assert_eq!(b.next_delay(0.0), 50 * MS);
        assert_eq!(b.next_delay(0.5), 150 * MS);
    }

    #[test]
    fn a_reset_starts_from_the_minimum() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        for _ in 0..10 {
            b.next_delay(1.0);
        }
        b.reset();
        assert_eq!(b.next_delay(1.0), 100 * MS);
    }

    #[test]
    fn many_attempts_never_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(b.next_delay(1.0) <= Duration::from_secs(60));
        }
    }
}
