//! A wall clock set back while the agent runs: noticed at the heartbeat,
//! and the waits and first-watch times measured on the clock as it was are
//! moved to the clock as it is.

use super::*;

impl Agent {
    /// Backoff deadlines set while the wall clock stood ahead (it was
    /// stepped back since) count from now, so a clock set back an hour does
    /// not add an hour to every wait.
    ///
    /// Likewise a first-watch time (`existing = "skip"`) later than `since`
    /// (the earliest the step can have happened, on the clock as it is now)
    /// becomes `since`, so files made after the step are not taken for
    /// files that were there before.
    pub(super) async fn rebase_backoff(&mut self, since: i64) -> Result<(), AgentError> {
        let n = self.journal.rebase_backoff(self.clock.wall_ms()).await?;
        if n > 0 {
            tracing::info!(
                "the clock has been set back since {n} file(s) were put in backoff; their waits count from now"
            );
            self.dispatch.look_again();
        }
        let roots = self.journal.clamp_first_watched(since).await?;
        if roots > 0 {
            tracing::info!(
                "the clock has been set back since {roots} folder(s) were first watched with existing = \"skip\"; \
                 files made from now on are new to them"
            );
            self.intake.forget_first_watched();
        }
        Ok(())
    }

    /// If the wall clock fell more than a minute behind the monotonic clock
    /// since the last heartbeat (someone or NTP stepped it back): the wall
    /// time of that heartbeat on the clock as it is now (the earliest the
    /// step can have happened).
    pub(super) fn clock_stepped_back(&mut self) -> Option<i64> {
        self.wall.stepped_back(self.clock.now(), self.clock.wall_ms())
    }
}

/// The last heartbeat's (instant, wall ms): a wall clock that fell behind
/// the instant's advance was stepped back.
#[derive(Default)]
pub(super) struct WallWatch {
    seen: Option<(Instant, i64)>,
}

impl WallWatch {
    /// Notes the clocks at `now` and `wall` (ms); if the wall clock fell
    /// more than a minute behind since the last note: the wall time of
    /// that note on the clock as it is now.
    fn stepped_back(&mut self, now: Instant, wall: i64) -> Option<i64> {
        let back = self.seen.and_then(|(at, was)| {
            let elapsed = now.duration_since(at).as_millis() as i64;
            (wall < was + elapsed - 60_000).then_some(wall - elapsed)
        });
        self.seen = Some((now, wall));
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_step_back_of_more_than_a_minute_is_reported() {
        let t0 = Instant::now();
        let mut w = WallWatch::default();
        assert_eq!(w.stepped_back(t0, 1_000_000), None);
        // A second later, the wall clock 30 s back: drift, not a step.
        assert_eq!(w.stepped_back(t0 + Duration::from_secs(1), 971_000), None);
        // Two seconds later, an hour back: the last note, on today's clock.
        let back = w.stepped_back(t0 + Duration::from_secs(3), 973_000 - 3_600_000);
        assert_eq!(back, Some(973_000 - 3_600_000 - 2_000));
        // Forward steps are not reported.
        assert_eq!(w.stepped_back(t0 + Duration::from_secs(4), 9_000_000), None);
    }
}
