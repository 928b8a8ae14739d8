//! The gate: whether uploads may start, and why not. Three things close it:
//! the service (key rejected, unreachable; asked again on a timer), the
//! user (`pause`, persisted by the caller), and a schedule window that says
//! "paused". The gate only holds the state and its rules; logging, events
//! and journal writes stay with the agent's methods that call it.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Pause;
use crate::journal::UserPause;

/// This many transient upload failures in a row, with no success between
/// them, pause the queue as an outage even while the service's cheap check
/// answers (its API up, its storage down).
const FAILING_STREAK: u32 = 5;

pub(super) struct Gate {
    /// Uploads held back for everyone, why, and when to ask the service again.
    service: Option<(Pause, Instant)>,
    /// Transient upload failures since the last success.
    failing_streak: u32,
    /// The pause the user set (`pause`).
    user: Option<UserPause>,
    /// Given to every upload; cancelled while the user or a schedule holds
    /// uploads (parts in flight finish, no new part starts).
    hold: CancellationToken,
    /// The time zone schedules are read in (the system's; tests set one).
    tz: jiff::tz::TimeZone,
    /// The `[[agent.schedule]]` window in force (None: none), once known.
    window: Option<Option<usize>>,
    /// A schedule window says "paused".
    schedule_paused: bool,
}

impl Gate {
    pub(super) fn new() -> Gate {
        Gate {
            service: None,
            failing_streak: 0,
            user: None,
            hold: CancellationToken::new(),
            tz: jiff::tz::TimeZone::system(),
            window: None,
            schedule_paused: false,
        }
    }

    /// Uploads may start: nothing holds them.
    pub(super) fn open(&self) -> bool {
        self.service.is_none() && !self.held()
    }

    /// Uploads are held by the user or by a schedule window (the service's
    /// pauses are not a hold: parts in flight go on).
    pub(super) fn held(&self) -> bool {
        self.user.is_some() || self.schedule_paused
    }

    /// The token each upload watches for a hold.
    pub(super) fn hold_token(&self) -> CancellationToken {
        self.hold.clone()
    }

    /// Stops the uploads in flight after their current parts (they wait,
    /// no attempt spent, and resume from their parts), without holding the
    /// next ones: a reload that changed how files are sent.
    pub(super) fn rehold(&mut self) {
        if !self.held() {
            self.hold.cancel();
            self.hold = CancellationToken::new();
        }
    }

    /// Makes the hold token say what [`Gate::held`] says. True when a hold
    /// was just released (the queue is worth a look again).
    fn apply_hold(&mut self) -> bool {
        if self.held() {
            self.hold.cancel();
            false
        } else if self.hold.is_cancelled() {
            self.hold = CancellationToken::new();
            true
        } else {
            false
        }
    }

    // The service's pause.

    pub(super) fn service_pause(&self) -> Option<Pause> {
        self.service.map(|(p, _)| p)
    }

    /// When to ask the service again (None: not paused).
    pub(super) fn recheck_at(&self) -> Option<Instant> {
        self.service.map(|(_, at)| at)
    }

    /// Pauses uploads for everyone for `reason`, to be asked again at `at`.
    pub(super) fn pause_service(&mut self, reason: Pause, at: Instant) {
        self.service = Some((reason, at));
    }

    /// Ends the service's pause (to ask the service whether it may).
    pub(super) fn take_service_pause(&mut self) -> Option<Pause> {
        self.service.take().map(|(p, _)| p)
    }

    /// Asks the service again at once (a reload may bring a new key).
    pub(super) fn recheck_now(&mut self, now: Instant) {
        if let Some((_, at)) = &mut self.service {
            *at = now;
        }
    }

    /// A transient failure: how many in a row now, and whether that many
    /// alone means the service is down.
    pub(super) fn failed(&mut self) -> (u32, bool) {
        self.failing_streak += 1;
        (self.failing_streak, self.failing_streak >= FAILING_STREAK)
    }

    /// An upload (or the service's check) succeeded: a new run of failures
    /// starts from here.
    pub(super) fn succeeded(&mut self) {
        self.failing_streak = 0;
    }

    // The user's pause.

    pub(super) fn user_pause(&self) -> Option<UserPause> {
        self.user
    }

    /// Sets (or ends) the user's pause. Returns (whether one held before,
    /// whether a hold was just released).
    pub(super) fn set_user_pause(&mut self, pause: Option<UserPause>) -> (bool, bool) {
        let was = std::mem::replace(&mut self.user, pause).is_some();
        (was, self.apply_hold())
    }

    // Schedules.

    pub(super) fn tz(&self) -> &jiff::tz::TimeZone {
        &self.tz
    }

    #[cfg(test)]
    pub(super) fn set_tz(&mut self, tz: jiff::tz::TimeZone) {
        self.tz = tz;
    }

    /// Notes the window in force; true when it differs from the last one
    /// noted (or none was).
    pub(super) fn window_changed(&mut self, window: Option<usize>) -> bool {
        self.window.replace(window) != Some(window)
    }

    /// Forgets the window noted (a reload says the one in force again).
    pub(super) fn forget_window(&mut self) {
        self.window = None;
    }

    pub(super) fn schedule_paused(&self) -> bool {
        self.schedule_paused
    }

    /// Sets the schedule's pause. None when unchanged; else whether a hold
    /// was just released.
    pub(super) fn set_schedule_paused(&mut self, paused: bool) -> Option<bool> {
        if paused == self.schedule_paused {
            return None;
        }
        self.schedule_paused = paused;
        Some(self.apply_hold())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_cancels_the_token_and_its_release_hands_out_a_fresh_one() {
        let mut g = Gate::new();
        let before = g.hold_token();
        assert!(g.open());
        let p = UserPause {
            since_ms: 1,
            until_ms: None,
        };
        assert_eq!(g.set_user_pause(Some(p)), (false, false));
        assert!(before.is_cancelled() && g.held() && !g.open());
        // The schedule pausing too changes nothing; its end leaves the user's hold.
        assert_eq!(g.set_schedule_paused(true), Some(false));
        assert_eq!(g.set_schedule_paused(true), None);
        assert_eq!(g.set_schedule_paused(false), Some(false));
        assert_eq!(g.set_user_pause(None), (true, true));
        assert!(!g.hold_token().is_cancelled() && g.open());
    }

    #[test]
    fn the_failing_streak_says_down_at_five_and_a_success_resets_it() {
        let mut g = Gate::new();
        for n in 1..FAILING_STREAK {
            assert_eq!(g.failed(), (n, false));
        }
        assert_eq!(g.failed(), (FAILING_STREAK, true));
        g.succeeded();
        assert_eq!(g.failed(), (1, false));
    }

    #[test]
    fn a_window_is_news_once() {
        let mut g = Gate::new();
        assert!(g.window_changed(None));
        assert!(!g.window_changed(None));
        assert!(g.window_changed(Some(0)));
        g.forget_window();
        assert!(g.window_changed(Some(0)));
    }
}
