//! Token-bucket rate limiting, with time passed in.

use std::time::Duration;
use std::time::Instant;

/// How fast an action may be repeated: `burst` at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

impl Rate {
    pub const fn new(burst: u32, per_second: f64) -> Self {
        Rate { burst, per_second }
    }

    /// `count` actions per `window`, all of which may come at once.
    pub fn per_window(count: u32, window: Duration) -> Self {
        Rate {
            burst: count,
            per_second: f64::from(count) / window.as_secs_f64(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    /// Takes one token if there is one. `false` means the caller is over its rate.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now`, so forgetting it changes nothing.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= f64::from(self.rate.burst)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.rate.per_second).min(f64::from(self.rate.burst));
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_per_second_then_too_often_then_refilled() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Rate::new(60, 60.0), start);
        for _ in 0..60 {
            assert!(bucket.try_take(start));
        }
        assert!(
            !bucket.try_take(start),
            "the 61st within a second is refused"
        );
        assert!(!bucket.try_take(start + Duration::from_millis(10)));
        assert!(
            bucket.try_take(start + Duration::from_millis(20)),
            "one token per 1/60 s"
        );
        assert!(bucket.is_full(start + Duration::from_secs(2)));
    }

    #[test]
    fn per_window_spreads_the_refill() {
        let rate = Rate::per_window(10, Duration::from_secs(5));
        assert_eq!(rate.burst, 10);
        assert!((rate.per_second - 2.0).abs() < f64::EPSILON);
    }
}
