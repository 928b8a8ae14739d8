//! The one clock the agent and settle read.
//!
//! Instants come from tokio's clock, so a test can pause it and advance it
//! (`#[tokio::test(start_paused = true)]`) and watch minutes of settle
//! windows, backoff and pauses go by in milliseconds. Wall time (unix ms,
//! what the journal records and compares retry times against) is the
//! system's in production; in a test it follows tokio's clock from a given
//! start, so the journal's due times advance with the paused clock too.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Tokio's instant and the wall time it stands for, when wall time
    /// follows tokio's clock; None: the system's wall clock.
    follow: Option<(Instant, i64)>,
}

impl Clock {
    /// The real clocks.
    pub fn system() -> Clock {
        Clock { follow: None }
    }

    /// Wall time that starts at `wall_ms` now and then moves only with
    /// tokio's clock (paused, advanced or auto-advancing in tests).
    pub fn following_tokio(wall_ms: i64) -> Clock {
        Clock {
            follow: Some((Instant::now(), wall_ms)),
        }
    }

    /// Now, on tokio's clock.
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Now, as unix milliseconds.
    pub fn wall_ms(&self) -> i64 {
        match self.follow {
            None => system_ms(),
            Some((at, wall)) => wall + Instant::now().duration_since(at).as_millis() as i64,
        }
    }
}

/// A unix-millisecond time as RFC 3339 in UTC, to the millisecond (how
/// events, pauses and schedules name a moment).
pub fn rfc3339_ms(ms: i64) -> String {
    let at = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// When this process started, as unix ms on the system's wall clock (taken
/// at the first call; `main` calls it first thing). Files made after it are
/// surely new to a run, whatever the clock did before.
pub fn launched_ms() -> i64 {
    static LAUNCHED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *LAUNCHED.get_or_init(system_ms)
}

/// The system's wall clock as unix milliseconds (0 before 1970).
pub fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn wall_time_follows_a_paused_tokio_clock() {
        let clock = Clock::following_tokio(1_000_000);
        let t0 = clock.now();
        assert_eq!(clock.wall_ms(), 1_000_000);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.wall_ms(), 1_090_000);
        assert_eq!(clock.now() - t0, Duration::from_secs(90));
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(Clock::system().wall_ms() > 1_577_836_800_000);
    }
}
