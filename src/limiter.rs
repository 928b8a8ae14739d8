//! A shared upload bandwidth limit (`bandwidth_limit`). One token bucket for
//! the whole process, so N files × M parts together stay under the rate.
//! Callers take tokens before sending a chunk; the bucket may go into debt,
//! and whoever takes tokens it does not have sleeps until the debt is repaid,
//! which keeps the long-run rate exact without a background task. The rate
//! can change while transfers run (a bandwidth schedule's window); 0 means
//! no limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Limiter {
    /// Bytes per second; 0: unlimited.
    rate: AtomicU64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Limiter {
    /// Bytes per second (None: unlimited).
    pub fn rate(&self) -> Option<f64> {
        match self.rate.load(Ordering::Relaxed) {
            0 => None,
            r => Some(r as f64),
        }
    }

    /// A limit of `bytes_per_second` (None: unlimited). Up to a quarter
    /// second of burst is allowed.
    pub fn new(bytes_per_second: Option<u64>) -> Limiter {
        Limiter {
            rate: AtomicU64::new(bytes_per_second.unwrap_or(0)),
            state: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    /// Changes the limit; transfers in flight follow it from their next chunk.
    pub fn set_rate(&self, bytes_per_second: Option<u64>) {
        self.rate.store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: usize) {
        let Some(rate) = self.rate() else {
            return;
        };
        let burst = rate / 4.0;
        let wait = {
            let mut b = self.state.lock().await;
            let now = Instant::now();
            let elapsed = now.duration_since(b.last).as_secs_f64();
            b.last = now;
            b.tokens = (b.tokens + elapsed * rate).min(burst);
            b.tokens -= bytes as f64;
            if b.tokens >= 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(-b.tokens / rate))
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate() {
        let l = Limiter::new(Some(1000));
        let start = Instant::now();
        for _ in 0..10 {
            l.acquire(500).await;
        }
        // 5000 bytes at 1000 B/s ≈ 5 s (less the small initial burst allowance).
        let took = start.elapsed().as_secs_f64();
        assert!((4.5..=5.1).contains(&took), "took {took}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_rate_applies_to_what_is_sent_next_and_none_lifts_it() {
        let l = Limiter::new(Some(1000));
        let start = Instant::now();
        for _ in 0..4 {
            l.acquire(500).await;
        }
        l.set_rate(Some(4000));
        let mid = Instant::now();
        for _ in 0..8 {
            l.acquire(500).await;
        }
        let fast = mid.elapsed().as_secs_f64();
        assert!(fast <= 1.3, "4000 bytes at 4000 B/s took {fast}");
        l.set_rate(None);
        let free = Instant::now();
        l.acquire(1_000_000).await;
        assert_eq!(free.elapsed(), Duration::ZERO);
        assert!(start.elapsed().as_secs_f64() >= 1.5);
    }
}
