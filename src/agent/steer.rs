//! Steering a running agent: the user's pause (persisted, with an optional
//! end), a config reload applied without a restart, and the events every
//! step emits (to the dashboard's stream and the notification outbox).

use super::*;
use crate::control::{Command, Event, ReloadReport};
use crate::journal::{OutboxItem, UserPause};

impl Agent {
    /// Tells the dashboard's stream and, for the kinds a `[[notify]]` entry
    /// asks for, the outbox (durable: delivered even after a restart).
    pub(super) async fn emit(&self, event: Event) -> Result<(), AgentError> {
        self.reporter.send(&event);
        if self.opts.dry_run {
            return Ok(());
        }
        let body = match serde_json::to_string(&event) {
            Ok(b) => b,
            Err(_) => return Ok(()),
        };
        let items: Vec<OutboxItem> = self
            .settings
            .notify
            .iter()
            .enumerate()
            .filter(|(_, n)| n.wants(event.event))
            .map(|(i, _)| OutboxItem {
                target: i as i64,
                event: event.event.to_string(),
                body: body.clone(),
            })
            .collect();
        if !items.is_empty() {
            self.journal.outbox_push(items, self.clock.wall_ms()).await?;
            self.reporter.outbox_changed();
        }
        Ok(())
    }

    /// At start: a pause the user set before a restart still holds (unless
    /// it ran out meanwhile).
    pub(super) async fn restore_pause(&mut self) -> Result<(), AgentError> {
        if self.opts.once || self.opts.dry_run {
            return Ok(());
        }
        if let Some(p) = self.journal.user_pause().await? {
            if p.until_ms.is_some_and(|u| u <= self.clock.wall_ms()) {
                self.journal.set_user_pause(None).await?;
                tracing::info!(
                    "the pause set with `autorender-sync pause` ran out while the agent was stopped"
                );
            } else {
                tracing::warn!(
                    "uploads are paused ({}); `autorender-sync resume` starts them again",
                    describe(&p)
                );
                self.gate.set_user_pause(Some(p));
            }
        }
        Ok(())
    }

    /// Sets the shared limiter's rate (and the schedule's pause) from the
    /// window in force; logs each change of window.
    pub(super) async fn apply_schedule(&mut self) -> Result<(), AgentError> {
        let windows = &self.settings.agent.schedule;
        let now = self.clock.wall_ms();
        let window = crate::schedule::in_force(windows, now, self.gate.tz());
        let limit = crate::schedule::limit(windows, window, self.settings.agent.bandwidth_limit);
        if let Some(l) = self.transfer.limiter() {
            l.set_rate(match limit {
                crate::config::Limit::Rate(r) => Some(r),
                _ => None,
            });
        }
        if self.gate.window_changed(window) {
            let next = crate::schedule::next_change(windows, now, self.gate.tz())
                .map(|t| format!(" until {}", crate::clock::rfc3339_ms(t)))
                .unwrap_or_default();
            match window {
                Some(i) => tracing::info!("schedule: {} is in force{next}", windows[i].describe()),
                None if !windows.is_empty() => {
                    tracing::info!("schedule: no window in force ({limit}){next}")
                }
                None => {}
            }
        }
        let paused = limit == crate::config::Limit::Paused;
        if let Some(released) = self.gate.set_schedule_paused(paused) {
            if released {
                self.dispatch.look_again();
            }
            self.emit(Event::new(if paused { "paused" } else { "resumed" }, now).with("by", "schedule"))
                .await?;
            self.publish_health();
        }
        Ok(())
    }

    /// The schedule as `status` shows it (None without windows).
    pub(super) fn schedule_view(&self) -> Option<serde_json::Value> {
        let windows = &self.settings.agent.schedule;
        if windows.is_empty() {
            return None;
        }
        let now = self.clock.wall_ms();
        let window = crate::schedule::in_force(windows, now, self.gate.tz());
        let limit = crate::schedule::limit(windows, window, self.settings.agent.bandwidth_limit);
        Some(serde_json::json!({
            "window": window.map(|i| windows[i].describe()),
            "limit": limit.to_string(),
            "next_change": crate::schedule::next_change(windows, now, self.gate.tz()),
        }))
    }

    /// The dashboard's throughput sample for this second: bytes sent so
    /// far, the limit in force, and whether the service is out or uploads
    /// are paused.
    pub(super) fn sample_throughput(&self) {
        use crate::control::charts::Standing;
        let windows = &self.settings.agent.schedule;
        let window = crate::schedule::in_force(windows, self.clock.wall_ms(), self.gate.tz());
        let limit = match crate::schedule::limit(windows, window, self.settings.agent.bandwidth_limit) {
            crate::config::Limit::Rate(r) => Some(r),
            crate::config::Limit::Paused => Some(0),
            crate::config::Limit::Unlimited => None,
        };
        let standing = if self.gate.service_pause().is_some() {
            Standing::Outage
        } else if self.gate.user_pause().is_some() || self.gate.schedule_paused() {
            Standing::Paused
        } else {
            Standing::Ok
        };
        self.reporter
            .throughput(self.clock.wall_ms(), self.dispatch.total_sent(), limit, standing);
    }

    /// When the user's pause runs out (as an instant on the loop's clock).
    pub(super) fn pause_ends_at(&self) -> Option<Instant> {
        let until = self.gate.user_pause()?.until_ms?;
        let left = (until - self.clock.wall_ms()).max(0) as u64;
        Some(self.clock.now() + Duration::from_millis(left))
    }

    /// Ends the user's pause if its time is up.
    pub(super) async fn expire_pause(&mut self) -> Result<(), AgentError> {
        if self
            .gate
            .user_pause()
            .and_then(|p| p.until_ms)
            .is_some_and(|u| u <= self.clock.wall_ms())
        {
            tracing::info!("the pause ran out; uploads start again");
            self.resume().await?;
        }
        Ok(())
    }

    async fn resume(&mut self) -> Result<bool, AgentError> {
        self.journal.set_user_pause(None).await?;
        let (was, _) = self.gate.set_user_pause(None);
        self.dispatch.look_again();
        if was {
            self.emit(Event::new("resumed", self.clock.wall_ms())).await?;
            self.publish_health();
        }
        Ok(was)
    }

    /// Pause and resume; a reload is applied by the loop (it owns the watchers).
    pub(super) async fn command(&mut self, cmd: Command) -> Result<(), AgentError> {
        match cmd {
            Command::Pause { until_ms, reply } => {
                let p = UserPause {
                    since_ms: self
                        .gate
                        .user_pause()
                        .map_or(self.clock.wall_ms(), |p| p.since_ms),
                    until_ms,
                };
                self.journal.set_user_pause(Some(p)).await?;
                // Parts in flight finish and are recorded; no new part starts.
                let (was, _) = self.gate.set_user_pause(Some(p));
                let new = !was;
                tracing::info!(
                    "uploads paused ({}); {} upload(s) in flight stop after their current parts",
                    describe(&p),
                    self.dispatch.in_flight()
                );
                if new {
                    let mut e = Event::new("paused", self.clock.wall_ms());
                    if let Some(u) = until_ms {
                        e = e.with("until", crate::clock::rfc3339_ms(u));
                    }
                    self.emit(e).await?;
                }
                self.publish_health();
                let _ = reply.send(p);
            }
            Command::Resume { reply } => {
                let was = self.resume().await?;
                if was {
                    tracing::info!("uploads resumed");
                }
                let _ = reply.send(was);
            }
            Command::Reload { reply, .. } => {
                // Only the loop applies a reload; this arm is never reached.
                let _ = reply.send(Err(vec!["the agent cannot reload here".into()]));
            }
        }
        Ok(())
    }

    /// Switches to `settings` (already validated) and `transfer`: roots
    /// added, removed or changed are watched anew and scanned; uploads in
    /// flight go on with what they started with; settling starts again (a
    /// file is never taken as finished sooner than before).
    pub(super) fn adopt_settings(
        &mut self,
        settings: Arc<Settings>,
        transfer: Arc<dyn Transfer>,
    ) -> ReloadReport {
        let mut report = self.roots.adopt(&settings);
        report.changed = crate::config::diff::changes(&self.settings.written, &settings.written);
        if let Some(fleet) = self.journal.fleet() {
            fleet.set_shares(settings.shares());
        }
        if let Some(current) = &self.current {
            current.send_replace(settings.clone());
        }
        self.dispatch.adopt(&settings);
        self.settings = settings;
        self.transfer = transfer;
        // How files are sent changed: uploads in flight (a file retrying
        // its parts among them) stop after their current parts and go on
        // from them with the new settings, instead of finishing with the
        // old ones.
        if report.changed.iter().any(|c| sends_differently(c)) && self.dispatch.in_flight() > 0 {
            tracing::info!(
                "uploads in flight take the new settings after their current parts (they go on from what is stored)"
            );
            self.gate.rehold();
        }
        self.intake.reset();
        // Roots may have changed: each is swept anew (a round under way
        // still reports under its key).
        self.deletes.reset();
        self.sets.judge_all_again();
        // A new key (or endpoint) is checked at once rather than after the wait.
        self.gate.recheck_now(self.clock.now());
        report
    }
}

/// A changed key (as `config::diff` words it) that changes how a file is
/// sent: the service's address and key, its timeouts, the request shape.
fn sends_differently(change: &str) -> bool {
    const KEYS: [&str; 4] = [
        "agent.direct_upload_max",
        "agent.concurrent_parts",
        "agent.max_concurrent_parts",
        "agent.max_attempts",
    ];
    change.starts_with("api.") || KEYS.iter().any(|k| change.starts_with(&format!("{k}:")))
}

impl Agent {
    /// The periodic rescan (`rescan_interval`; "off" is a year).
    pub(super) fn rescan_timer(&self) -> tokio::time::Interval {
        let every = self
            .settings
            .agent
            .rescan_interval
            .unwrap_or(Duration::from_secs(365 * 86400));
        tokio::time::interval_at(self.clock.now() + every, every)
    }

    /// `--once` leaves a file still changing after this long for the next run.
    pub(super) fn give_up_after(&self) -> Duration {
        self.settings
            .watches
            .iter()
            .map(|w| w.settle)
            .max()
            .unwrap_or_default()
            * 5
    }

    /// Applies a reloaded config: new watchers on a new channel first (hints
    /// in the old roots' numbering must not reach the new ones), then the
    /// settings; every root is scanned again. Returns the new channel, or
    /// None when the watchers could not start (the old config stays).
    pub(super) async fn reload(
        &mut self,
        settings: Arc<Settings>,
        transfer: Arc<dyn Transfer>,
        reply: tokio::sync::oneshot::Sender<Result<crate::control::ReloadReport, Vec<String>>>,
        watchers: &mut Option<watch::Watchers>,
    ) -> Result<Option<(mpsc::Sender<Hint>, mpsc::Receiver<Hint>)>, AgentError> {
        let (tx, rx) = mpsc::channel::<Hint>(64 * 1024);
        let w = match watch::start(&settings.watches, settings.agent.poll_interval, tx.clone()) {
            Ok(w) => w,
            Err(e) => {
                let _ = reply.send(Err(vec![e.to_string()]));
                return Ok(None);
            }
        };
        drop(watchers.take());
        let modes = w.modes.clone();
        *watchers = Some(w);
        let report = self.adopt_settings(settings, transfer);
        self.roots.set_modes(modes);
        self.note_first_watch().await?;
        self.gate.forget_window();
        self.apply_schedule().await?;
        for id in self.settings.root_ids() {
            self.scan(id, None);
        }
        tracing::info!(
            "config reloaded: {} folder(s) watched, {} added, {} removed{}",
            report.roots,
            report.roots_added.len(),
            report.roots_removed.len(),
            if report.changed.is_empty() {
                "; no setting changed".to_string()
            } else {
                format!("; changed: {}", report.changed.join("; "))
            }
        );
        self.emit(Event::new("reloaded", self.clock.wall_ms()).with("roots", report.roots))
            .await?;
        self.publish_health();
        let _ = reply.send(Ok(report));
        Ok(Some((tx, rx)))
    }
}

/// "until 2026-11-25T14:00:00Z" or "until `resume`".
fn describe(p: &UserPause) -> String {
    match p.until_ms {
        Some(u) => format!("until {}", crate::clock::rfc3339_ms(u)),
        None => "until `autorender-sync resume`".to_string(),
    }
}
