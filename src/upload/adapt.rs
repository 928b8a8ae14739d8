//! Adaptive transfer: how many requests with a body (parts and direct
//! uploads, of every file together) may be in flight.
//!
//! On a long fat pipe one connection carries a fraction of the link (its
//! round trip and loss cap it), so throughput comes from many requests in
//! flight; too many only queue behind each other and time out. The
//! [`Controller`] watches how long each request takes against the best the
//! link has shown (its *pace*: best time ÷ this time, 1.0 when nothing
//! queues) and sets the limit as a delay-based congestion controller would:
//!
//! - slow start: while requests keep their pace (≥ [`GOOD`]) and the limit
//!   was used, the limit doubles each window; after the first cut it grows
//!   by an eighth (at least one) instead;
//! - requests slowed (pace < [`SLOW`]): the link is full, the extra requests
//!   only queue. Each request's pace times how many were in flight over its
//!   life is how many streams' worth the link carried for it; the limit
//!   falls to what would carry that at pace [`GOOD`]. Requests still in
//!   flight past their best time count too (a bound on their pace), so a
//!   link that shrinks is noticed before the slowed requests end;
//! - errors that say the network or the service is overloaded (a dropped or
//!   stalled connection, 429, 5xx) cut the limit by 30 %, once a window.
//!
//! A window is at least [`WINDOW`] and the latest half-limit's worth of
//! requests that began under the current limit (it slides while the limit
//! holds), so each decision judges the limit it is about, and soon. The best time is forgotten slowly (0.2 % a second), so a link
//! that became slower for good is learned again. A fixed `concurrent_parts`
//! turns all of this off: the [`Budget`] then only counts.
//!
//! The controller is pure (it is given the time); the [`Budget`] around it
//! is what uploads take [`Slot`]s from.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::api::ApiError;

/// Requests in flight when adaptation begins: enough that a long fat pipe
/// is filled within two doublings (each takes a big part's round trip),
/// few enough that a LAN, filled by a handful, is not crowded while the
/// controller learns it (16 cost 11 % on loopback, 8 about 5 %).
pub const START: usize = 8;
/// Never fewer in flight than this.
pub const MIN: usize = 2;
/// The default and the highest `max_concurrent_parts`.
pub const DEFAULT_MAX: usize = 32;
pub const HIGHEST_MAX: usize = 128;
/// A window's pace at or above this: the link has room.
pub const GOOD: f64 = 0.8;
/// A window's pace below this: requests queue; fewer go.
pub const SLOW: f64 = 0.7;
/// The shortest window a decision is taken over.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Requests up to this many bytes measure the round trip, larger ones the rate.
const SMALL: u64 = 64 * 1024;
/// How fast the best times seen are forgotten (fraction per second).
const FORGET: f64 = 0.002;
/// An overload error keeps this share of the limit.
const ERROR_KEEP: f64 = 0.7;
/// How often a waiting request looks at the requests in flight.
const TICK: Duration = Duration::from_millis(250);

/// Why the limit is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Fixed by `concurrent_parts`.
    Fixed,
    /// Where adaptation begins.
    Start,
    /// Requests kept their pace with the limit in use: more go.
    Growing,
    /// Requests slowed (the link is full): fewer go.
    Slowed,
    /// Network or service errors: fewer go.
    Errors,
    /// Requests keep their pace, but the limit is `max_concurrent_parts`.
    Ceiling,
}

impl Why {
    /// A short name (metrics label, `status --json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Fixed => "fixed",
            Why::Start => "start",
            Why::Growing => "growing",
            Why::Slowed => "slowed",
            Why::Errors => "errors",
            Why::Ceiling => "ceiling",
        }
    }
}

/// A change of the limit the controller decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub from: usize,
    pub to: usize,
    pub why: Why,
    /// The window's pace that decided it (None for errors).
    pub pace: Option<f64>,
}

impl Change {
    /// The sentence `status` and the log show.
    pub fn describe(&self) -> String {
        match (self.why, self.pace) {
            (Why::Growing, Some(p)) => format!(
                "{} → {}: requests kept {:.0} % of their best pace with all {} in use",
                self.from,
                self.to,
                p * 100.0,
                self.from
            ),
            (Why::Slowed, Some(p)) => format!(
                "{} → {}: requests slowed to {:.0} % of their best pace (the link is full)",
                self.from,
                self.to,
                p * 100.0
            ),
            (Why::Errors, _) => format!(
                "{} → {}: a request failed as an overloaded link or service fails",
                self.from, self.to
            ),
            (Why::Ceiling, _) => format!("{}: at max_concurrent_parts, and the link may have room", self.to),
            (Why::Fixed, _) => format!("{}: fixed by concurrent_parts", self.to),
            _ => format!("{}: where adaptation starts", self.to),
        }
    }
}

/// A request in flight, as the controller sees it.
#[derive(Debug, Clone, Copy)]
pub struct Flying {
    pub began: Instant,
    pub bytes: u64,
    pub epoch: u64,
    /// The controller's [`Controller::occupancy`] when it began: how many
    /// shared the link with it over its life is the growth since, over its
    /// time.
    pub since: f64,
}

/// The pure controller: given request outcomes and the time, the limit.
#[derive(Debug)]
pub struct Controller {
    limit: usize,
    max: usize,
    slow_start: bool,
    /// Bumped at each decision; requests carry the epoch they began in.
    epoch: u64,
    epoch_began: Instant,
    /// Paces of requests that began in this epoch and ended (growth is
    /// judged by these alone).
    paces: Vec<f64>,
    /// The latest requests that ended, of any epoch: (pace, how many were
    /// in flight on average over its life). How many streams' worth the
    /// link carried at full pace is their product, whatever the limit was
    /// when they began.
    recent: std::collections::VecDeque<(f64, f64)>,
    /// The most requests in flight at once in this epoch.
    peak: usize,
    /// Request-seconds in flight until `occupied_at`, and how many were in
    /// flight since then.
    occupied: f64,
    occupied_at: Instant,
    occupied_by: usize,
    /// Shortest time of a small request (s), and when it was seen.
    best_latency: Option<(f64, Instant)>,
    /// Highest rate beyond the round trip of a large request (B/s), and when.
    best_rate: Option<(f64, Instant)>,
    last: Change,
}

impl Controller {
    pub fn new(max: usize, now: Instant) -> Controller {
        Controller::starting_at(max, START, now)
    }

    fn starting_at(max: usize, start: usize, now: Instant) -> Controller {
        let max = max.max(MIN);
        let limit = start.clamp(MIN, max);
        Controller {
            limit,
            max,
            slow_start: true,
            epoch: 0,
            epoch_began: now,
            paces: Vec::new(),
            recent: Default::default(),
            peak: 0,
            occupied: 0.0,
            occupied_at: now,
            occupied_by: 0,
            best_latency: None,
            best_rate: None,
            last: Change {
                from: limit,
                to: limit,
                why: Why::Start,
                pace: None,
            },
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// The last decision (or where it started).
    pub fn last(&self) -> Change {
        self.last
    }

    /// How many are in flight now (after one more began).
    pub fn in_flight(&mut self, n: usize, now: Instant) {
        self.occupied = self.occupancy(now);
        self.occupied_at = now;
        self.occupied_by = n;
        self.peak = self.peak.max(n);
    }

    /// Requests in flight integrated over time (request-seconds) until `now`.
    pub fn occupancy(&self, now: Instant) -> f64 {
        self.occupied
            + self.occupied_by as f64 * now.saturating_duration_since(self.occupied_at).as_secs_f64()
    }

    /// How many were in flight on average while `f` was, until `now`.
    fn sharing(&self, f: &Flying, now: Instant) -> f64 {
        let took = now.duration_since(f.began).as_secs_f64();
        if took <= 0.0 {
            return 1.0;
        }
        ((self.occupancy(now) - f.since) / took).max(1.0)
    }

    fn latency(&self, now: Instant) -> f64 {
        self.best_latency
            .map(|(l, at)| l * (1.0 + FORGET * now.duration_since(at).as_secs_f64()))
            .unwrap_or(0.0)
    }
    fn rate(&self, now: Instant) -> Option<f64> {
        self.best_rate
            .map(|(r, at)| r / (1.0 + FORGET * now.duration_since(at).as_secs_f64()))
    }

    /// The best time a request of `bytes` has shown it can take (s).
    fn best_time(&self, bytes: u64, now: Instant) -> Option<f64> {
        if bytes <= SMALL {
            self.best_latency.map(|_| self.latency(now))
        } else {
            self.rate(now).map(|r| self.latency(now) + bytes as f64 / r)
        }
    }

    /// A request of `bytes` that began at `began` (in `epoch`) succeeded.
    pub fn finished(&mut self, request: Flying, in_flight: &[Flying], now: Instant) -> Option<Change> {
        let sharing = self.sharing(&request, now);
        let Flying {
            began, bytes, epoch, ..
        } = request;
        let took = now.duration_since(began).as_secs_f64().max(1e-4);
        // The pace is judged against the best before this one: a request is
        // never measured against itself.
        let pace = self.best_time(bytes, now).map(|b| (b / took).min(1.0));
        if bytes <= SMALL {
            if took <= self.latency(now) || self.best_latency.is_none() {
                self.best_latency = Some((took, now));
            }
        } else {
            let rate = bytes as f64 / (took - self.latency(now)).max(took / 10.0);
            if self.rate(now).is_none_or(|r| rate >= r) {
                self.best_rate = Some((rate, now));
            }
        }
        let pace = pace.unwrap_or(1.0);
        // The latest requests judge: windows slide (an old pace must not
        // hide a link that just shrank).
        if epoch == self.epoch {
            if self.paces.len() >= self.window_len() {
                self.paces.remove(0);
            }
            self.paces.push(pace);
        }
        while self.recent.len() >= self.window_len() {
            self.recent.pop_front();
        }
        self.recent.push_back((pace, sharing));
        self.decide(in_flight, now)
    }

    /// A request that began in `epoch` failed as an overloaded link or
    /// service fails: one cut a window.
    pub fn failed(&mut self, epoch: u64, now: Instant) -> Option<Change> {
        if epoch != self.epoch {
            return None;
        }
        let to = ((self.limit as f64 * ERROR_KEEP) as usize).max(MIN);
        self.slow_start = false;
        self.change(to, Why::Errors, None, now)
    }

    /// Looks at the requests in flight (a waiting request calls this every
    /// [`TICK`]): those past their best time bound the window's pace.
    pub fn tick(&mut self, in_flight: &[Flying], now: Instant) -> Option<Change> {
        self.decide(in_flight, now)
    }

    fn decide(&mut self, in_flight: &[Flying], now: Instant) -> Option<Change> {
        if now.duration_since(self.epoch_began) < WINDOW {
            return None;
        }
        // Slowed? The latest requests that ended, and those in flight past
        // their best time (a bound on their pace), of any epoch: each says
        // how many streams' worth the link carried at full pace (pace ×
        // how many shared it), so requests begun under an older, higher
        // limit judge the link as well as new ones.
        let overdue = in_flight.iter().filter_map(|f| {
            let best = self.best_time(f.bytes, now)?;
            let bound = best / now.duration_since(f.began).as_secs_f64().max(1e-4);
            (bound < SLOW).then_some((bound, self.sharing(f, now)))
        });
        let seen: Vec<(f64, f64)> = self.recent.iter().copied().chain(overdue).collect();
        if seen.len() >= self.window_len() {
            let pace = seen.iter().map(|(p, _)| p).sum::<f64>() / seen.len() as f64;
            let carried = |xs: &[(f64, f64)]| xs.iter().map(|(p, n)| p * n).sum::<f64>() / xs.len() as f64;
            // The newest quarter when it carried less still (the older
            // requests ran partly before the link shrank).
            let newest = seen.len().div_ceil(4);
            let streams = carried(&seen).min(carried(&seen[seen.len() - newest..]));
            let expected = streams / self.limit as f64;
            if pace < SLOW && expected < SLOW {
                let to = ((streams / GOOD).ceil() as usize).clamp(MIN, self.limit);
                if to < self.limit {
                    self.slow_start = false;
                    return self.change(to, Why::Slowed, Some(expected), now);
                }
            }
        }
        // Growing? Only by requests begun under this limit, all of it in use.
        if self.paces.len() < self.window_len() {
            return None;
        }
        let pace = self.paces.iter().sum::<f64>() / self.paces.len() as f64;
        if pace >= GOOD && self.peak >= self.limit {
            if self.limit >= self.max {
                let again = self.last.why != Why::Ceiling;
                let c = self.change(self.max, Why::Ceiling, Some(pace), now);
                return c.filter(|_| again);
            }
            let to = if self.slow_start {
                self.limit * 2
            } else {
                self.limit + (self.limit / 8).max(1)
            };
            return self.change(to.min(self.max), Why::Growing, Some(pace), now);
        }
        // Between, or the limit not in use: the window slides on.
        None
    }

    /// Requests a decision is taken over: half the limit, at least two.
    fn window_len(&self) -> usize {
        (self.limit / 2).max(2)
    }

    fn new_epoch(&mut self, now: Instant) {
        self.epoch += 1;
        self.epoch_began = now;
        self.paces.clear();
        self.peak = 0;
    }

    fn change(&mut self, to: usize, why: Why, pace: Option<f64>, now: Instant) -> Option<Change> {
        let c = Change {
            from: self.limit,
            to,
            why,
            pace,
        };
        self.limit = to;
        self.last = c;
        self.new_epoch(now);
        Some(c)
    }
}

/// What `status`, the dashboard and metrics show of the transfer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct View {
    pub adaptive: bool,
    /// Requests with a body allowed in flight now.
    pub limit: usize,
    pub in_flight: usize,
    pub max: usize,
    /// Why the limit is what it is (`Why::as_str`).
    pub reason: &'static str,
    pub detail: String,
    /// When it last changed (unix ms).
    pub changed_at_ms: i64,
    /// Changes so far, by reason.
    pub changes: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
struct State {
    ctl: Controller,
    flying: Vec<(u64, Flying)>,
    next: u64,
    changed_at_ms: i64,
    changes: std::collections::BTreeMap<&'static str, u64>,
}

impl State {
    fn flights(&self) -> Vec<Flying> {
        self.flying.iter().map(|(_, f)| *f).collect()
    }
    fn record(&mut self, c: Option<Change>) -> bool {
        let Some(c) = c else { return false };
        self.changed_at_ms = crate::clock::system_ms();
        *self.changes.entry(c.why.as_str()).or_default() += 1;
        tracing::info!("requests in flight {}", c.describe());
        true
    }
}

/// One budget of requests in flight for every upload of an uploader.
#[derive(Debug)]
pub struct Budget {
    /// None: adaptive; Some(n): fixed at n per file (counted, never waited on).
    fixed: Option<usize>,
    state: Mutex<State>,
    wake: Notify,
}

impl Budget {
    /// `fixed`: `concurrent_parts` when set (no adaptation); `max`:
    /// `max_concurrent_parts`.
    pub fn new(fixed: Option<usize>, max: usize) -> Budget {
        let now = Instant::now();
        let mut ctl = Controller::new(max, now);
        if let Some(n) = fixed {
            ctl.limit = n.max(1);
            ctl.last = Change {
                from: n,
                to: n,
                why: Why::Fixed,
                pace: None,
            };
        }
        Budget {
            fixed,
            state: Mutex::new(State {
                ctl,
                flying: Vec::new(),
                next: 0,
                changed_at_ms: crate::clock::system_ms(),
                changes: Default::default(),
            }),
            wake: Notify::new(),
        }
    }

    pub fn adaptive(&self) -> bool {
        self.fixed.is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests allowed in flight now (a fixed budget: per file).
    pub fn limit(&self) -> usize {
        self.lock().ctl.limit()
    }

    /// How many of a file's parts are started at once: a fixed
    /// `concurrent_parts`, or as many as the shared budget may ever allow
    /// (each then waits for its slot).
    pub fn per_file(&self) -> usize {
        match self.fixed {
            Some(n) => n.max(1),
            None => self.lock().ctl.max,
        }
    }

    /// Waits for room for a request of `bytes` and takes it.
    pub async fn slot(self: &Arc<Self>, bytes: u64) -> Slot {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let mut s = self.lock();
                let now = Instant::now();
                if self.fixed.is_none() {
                    let flights = s.flights();
                    let c = s.ctl.tick(&flights, now);
                    if s.record(c) {
                        self.wake.notify_waiters();
                    }
                }
                if self.fixed.is_some() || s.flying.len() < s.ctl.limit() {
                    let id = s.next;
                    s.next += 1;
                    let f = Flying {
                        began: now,
                        bytes,
                        epoch: s.ctl.epoch(),
                        since: s.ctl.occupancy(now),
                    };
                    s.flying.push((id, f));
                    let n = s.flying.len();
                    s.ctl.in_flight(n, now);
                    return Slot {
                        budget: self.clone(),
                        id,
                        ended: false,
                    };
                }
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    fn end(&self, id: u64, outcome: Option<bool>) {
        let mut s = self.lock();
        let Some(at) = s.flying.iter().position(|(i, _)| *i == id) else {
            return;
        };
        let (_, f) = s.flying.swap_remove(at);
        if self.fixed.is_none() {
            let now = Instant::now();
            let c = match outcome {
                Some(true) => {
                    let flights = s.flights();
                    s.ctl.finished(f, &flights, now)
                }
                Some(false) => s.ctl.failed(f.epoch, now),
                None => None,
            };
            let n = s.flying.len();
            s.ctl.in_flight(n, now);
            s.record(c);
        }
        drop(s);
        self.wake.notify_waiters();
    }

    pub fn view(&self) -> View {
        let s = self.lock();
        let last = s.ctl.last();
        View {
            adaptive: self.fixed.is_none(),
            limit: s.ctl.limit(),
            in_flight: s.flying.len(),
            max: if self.fixed.is_some() {
                s.ctl.limit()
            } else {
                s.ctl.max
            },
            reason: last.why.as_str(),
            detail: last.describe(),
            changed_at_ms: s.changed_at_ms,
            changes: s.changes.clone(),
        }
    }
}

/// Room for one request in flight; ended by [`Slot::done`] or
/// [`Slot::failed_with`], or by dropping it (cancelled: no verdict).
#[derive(Debug)]
pub struct Slot {
    budget: Arc<Budget>,
    id: u64,
    ended: bool,
}

impl Slot {
    /// The request leaves now: its time counts from here (not from the
    /// checkpoints between taking the slot and sending).
    pub fn sending(&self) {
        let mut s = self.budget.lock();
        let now = Instant::now();
        let since = s.ctl.occupancy(now);
        if let Some((_, f)) = s.flying.iter_mut().find(|(i, _)| *i == self.id) {
            f.began = now;
            f.since = since;
        }
    }

    /// The request succeeded: its time is a sample of the link.
    pub fn done(mut self) {
        self.ended = true;
        self.budget.end(self.id, Some(true));
    }

    /// The request failed: only errors an overloaded link or service
    /// gives (connection dropped or stalled, 429, 5xx) count against the
    /// limit; a refusal (a wrong key, an expired URL) says nothing of it.
    pub fn failed_with(mut self, e: &ApiError) {
        self.ended = true;
        let overload = matches!(
            e,
            ApiError::Network(_) | ApiError::Throttled { .. } | ApiError::Server { .. }
        );
        self.budget.end(self.id, overload.then_some(false));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.ended {
            self.budget.end(self.id, None);
        }
    }
}

#[cfg(test)]
mod tests;
