//! Sliding-window rate limits kept in memory (per replica).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Allows `limit` hits per key within any `window`.
#[derive(Clone)]
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    hits: Arc<Mutex<HashMap<String, VecDeque<Instant>>>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter { limit: limit as usize, window, hits: Arc::default() }
    }

    /// Records a hit on `key`, or answers how long until one is allowed.
    pub fn hit(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget keys that went quiet, so the map does not grow without bound.
        if hits.len() > 100_000 {
            hits.retain(|_, times| times.back().is_some_and(|last| now.duration_since(*last) < self.window));
        }
        let times = hits.entry(key.to_owned()).or_default();
        while times.front().is_some_and(|first| now.duration_since(*first) >= self.window) {
            times.pop_front();
        }
        if times.len() >= self.limit {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_says_how_long_to_wait() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        assert!(limiter.hit("a").is_ok());
        assert!(limiter.hit("a").is_ok());
        let wait = limiter.hit("a").unwrap_err();
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(limiter.hit("b").is_ok(), "keys are counted apart");
    }
}
