//! A shared upload bandwidth limit (`bandwidth_limit`). One token bucket for
//! the whole process, so N files × M parts together stay under the rate.
//! Callers take tokens before sending a chunk; the bucket may go into debt,
//! and whoever takes tokens it does not have sleeps until the debt is repaid,
//! which keeps the long-run rate exact without a background task.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Limiter {
    /// `bytes_per_second` > 0. Up to a quarter second of burst is allowed.
    /// Bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn new(bytes_per_second: u64) -> Limiter {
        let rate = bytes_per_second.max(1) as f64;
        Limiter {
            rate,
            burst: rate / 4.0,
            state: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: usize) {
        let wait = {
            let mut b = self.state.lock().await;
            let now = Instant::now();
            let elapsed = now.duration_since(b.last).as_secs_f64();
            b.last = now;
            b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
            b.tokens -= bytes as f64;
            if b.tokens >= 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(-b.tokens / self.rate))
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
        let l = Limiter::new(1000);
        let start = Instant::now();
        for _ in 0..10 {
            l.acquire(500).await;
        }
        // 5000 bytes at 1000 B/s ≈ 5 s (less the small initial burst allowance).
        let took = start.elapsed().as_secs_f64();
        assert!((4.5..=5.1).contains(&took), "took {took}");
    }
}
