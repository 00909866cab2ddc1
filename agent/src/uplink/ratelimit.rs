//! A token bucket for draining a backlog, pure: time is a parameter.
//!
//! After an outage the outbox may hold hours of aggregates; sending them as fast
//! as the link allows would saturate a metered uplink and the upstream broker.
//! The bucket refills at `rate` tokens per second up to `burst`; aggregates and
//! diagnostics each take one. Alerts never wait for a token: they are rare and
//! are what the backlog must not delay.

use std::time::{Duration, Instant};

/// Publishes per second with a burst allowance.
#[derive(Clone, Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `rate` per second (0 = unlimited), starting full.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if one is available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be available (now if one is).
    pub fn next_token_at(&mut self, now: Instant) -> Instant {
        if self.rate == 0.0 {
            return now;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 5, t0);
        assert_eq!((0..8).filter(|_| r.try_take(t0)).count(), 5, "the burst");
        assert!(!r.try_take(t0));
        // 10 per second: one token every 100 ms.
        assert_eq!(r.next_token_at(t0), t0 + Duration::from_millis(100));
        assert!(r.try_take(t0 + Duration::from_millis(100)));
        assert!(!r.try_take(t0 + Duration::from_millis(150)));
    }

    #[test]
    fn over_a_long_run_the_rate_holds() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(100, 10, t0);
        let mut sent = 0;
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            while r.try_take(now) {
                sent += 1;
            }
        }
        // 10 s at 100/s, plus the initial burst of 10.
        assert!((1000..=1010).contains(&sent), "{sent}");
    }

    #[test]
    fn tokens_do_not_accumulate_beyond_the_burst() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(100, 3, t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| r.try_take(later)).count(), 3);
    }

    #[test]
    fn a_zero_rate_means_unlimited() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0, 1, t0);
        assert!((0..10_000).all(|_| r.try_take(t0)));
        assert_eq!(r.next_token_at(t0), t0);
    }
}
