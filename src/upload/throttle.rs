//! The service's rate limit, shared by every upload of one uploader: a 429
//! answer closes the gate for what its `Retry-After` asks (cut to
//! `api.retry_after_max`), every start waits at the gate instead of asking
//! again meanwhile, and each episode is logged once. `status` and
//! `/healthz` read [`Throttle::until_ms`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct Throttle {
    /// Unix ms until which the service asked not to be asked (0: open).
    until_ms: AtomicI64,
    cap: Duration,
    /// This episode (429s until a start succeeds) is already in the log.
    logged: std::sync::atomic::AtomicBool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Throttle {
    pub fn new(cap: Duration) -> Throttle {
        Throttle {
            until_ms: AtomicI64::new(0),
            cap,
            logged: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The longest a `Retry-After` is obeyed.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// When the gate opens, while it is closed.
    pub fn until_ms(&self) -> Option<i64> {
        let u = self.until_ms.load(Ordering::Relaxed);
        (u > now_ms()).then_some(u)
    }

    /// A 429: how long to wait before asking again (what the service
    /// asked, cut to the cap; else `fallback`, our own backoff). The first
    /// 429 of an episode is logged, with the cut if there was one.
    pub fn throttled(&self, asked: Option<Duration>, fallback: Duration) -> Duration {
        let wait = asked.map_or(fallback, |a| a.min(self.cap));
        let now = now_ms();
        let until = now + wait.as_millis() as i64;
        self.until_ms.fetch_max(until, Ordering::Relaxed);
        if !self.logged.swap(true, Ordering::Relaxed) {
            let at = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(until as u64),
            );
            match asked {
                Some(a) if a > self.cap => tracing::warn!(
                    "the service is rate-limiting uploads (429) and asks to wait {}; uploads wait until {at} \
                     (api.retry_after_max = {}) and then ask again",
                    humantime::format_duration(a),
                    humantime::format_duration(self.cap)
                ),
                _ => tracing::warn!("the service is rate-limiting uploads (429); uploads wait until {at}"),
            }
        }
        wait
    }

    /// A start went through: the next 429 is a new episode, logged again.
    pub fn passed(&self) {
        if self.logged.swap(false, Ordering::Relaxed) {
            tracing::info!("the service accepts uploads again (no longer rate-limited)");
        }
    }

    /// Waits while the gate is closed (never longer than the cap).
    pub async fn wait(&self) {
        if let Some(u) = self.until_ms() {
            let left = Duration::from_millis((u - now_ms()).max(0) as u64).min(self.cap);
            tokio::time::sleep(left).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_retry_after_is_cut_to_the_cap_and_closes_the_gate() {
        let t = Throttle::new(Duration::from_secs(300));
        assert_eq!(t.until_ms(), None);
        let wait = t.throttled(Some(Duration::from_secs(3600)), Duration::from_secs(1));
        assert_eq!(wait, Duration::from_secs(300));
        let until = t.until_ms().expect("closed");
        assert!(until - now_ms() <= 300_000 && until - now_ms() > 290_000);
        // A shorter ask later does not reopen it early.
        t.throttled(Some(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(t.until_ms(), Some(until));
    }

    #[test]
    fn without_retry_after_our_backoff_is_used() {
        let t = Throttle::new(Duration::from_secs(300));
        assert_eq!(t.throttled(None, Duration::from_secs(2)), Duration::from_secs(2));
    }
}
