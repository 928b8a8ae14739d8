//! What the agent shows of itself: its roots' health (a folder missing or
//! replaced, a watcher degraded), what `/healthz` reports, the
//! `watch_degraded` events, and the heartbeat's snapshot for `status`.

use super::*;

impl Agent {
    /// A watched folder that vanished loses its watch, and so does one that
    /// was deleted and recreated between two looks (a new folder, a new
    /// identity). Either way, once it is there it is watched again and
    /// scanned, so nothing dropped into it is missed.
    pub(super) async fn check_roots(
        &mut self,
        watchers: &mut watch::Watchers,
        tx: &mpsc::Sender<Hint>,
    ) -> Result<(), AgentError> {
        for id in self.settings.root_ids() {
            let i = id.0;
            let w = self.settings.root(id);
            let now = roots::folder_identity(&w.path);
            if now == self.roots.identity(id) {
                continue;
            }
            match now {
                None => {
                    if std::fs::symlink_metadata(&w.path).is_ok_and(|m| m.file_type().is_symlink()) {
                        tracing::warn!(
                            "watched folder {} has been replaced by a symbolic link; it is not followed, and \
                             nothing is uploaded from it until a folder stands there again (to watch where the \
                             link points, name that folder in the config)",
                            w.path.display()
                        );
                    } else {
                        tracing::warn!(
                            "watched folder {} disappeared; waiting for it to come back",
                            w.path.display()
                        );
                    }
                    watchers.stop(id);
                    self.roots.set_identity(id, None);
                }
                Some(_) => match watchers.restart(id, w, self.settings.agent.poll_interval, tx) {
                    Ok(()) => {
                        tracing::info!(
                            "watched folder {} is (re)created; watching it again",
                            w.path.display()
                        );
                        self.roots.set_identity(id, now);
                        self.roots.set_mode(id, watchers.modes[i]);
                        self.scan(id, None);
                    }
                    Err(e) => tracing::warn!("{e}; trying again"),
                },
            }
        }
        Ok(())
    }

    /// What `/healthz` reports: every reason the agent is not doing its job.
    pub(super) fn publish_health(&self) {
        let mut problems = self.roots.problems(&self.settings);
        if !self.opts.dry_run
            && let Some(why) = journal_unwritable(&self.settings.agent.state_dir)
        {
            problems.push(why);
        }
        if let Some(until) = self.transfer.rate_limited_until_ms() {
            problems.push(format!(
                "the service is rate-limiting uploads (429); they wait until {}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(until.max(0) as u64)
                )
            ));
        }
        for v in self.dispatch.views(self.clock.now()) {
            if let Some(quiet) = v.stalled_s {
                problems.push(format!(
                    "the upload of {} is stalled: nothing sent for {quiet} s",
                    crate::text::shown(&v.path.display().to_string())
                ));
            }
        }
        problems.extend(self.deletes.problems().cloned());
        match self.gate.service_pause() {
            Some(Pause::Auth) => problems.push("the API key was rejected".into()),
            Some(Pause::Unreachable { .. }) => problems.push("the service is unreachable".into()),
            None => {}
        }
        self.reporter.health(
            self.gate.service_pause().is_some() || self.gate.user_pause().is_some(),
            problems,
        );
    }

    /// Uploads that send nothing: a warning and a `stalled` event when one
    /// stalls (once), a line when it sends again.
    pub(super) async fn report_stalls(&mut self) -> Result<(), AgentError> {
        let (fresh, moving) = self.dispatch.stall_news(self.clock.now());
        for v in fresh {
            let quiet = v.stalled_s.unwrap_or_default();
            tracing::warn!(
                path = %v.path.display(),
                "{}: nothing sent for {quiet} s (the network or the service takes no bytes); still trying",
                v.path.display()
            );
            let mut e = crate::control::Event::new("stalled", self.clock.wall_ms())
                .path(&v.path)
                .sized(v.size)
                .with("sent", v.sent)
                .with("quiet_s", quiet);
            e.error = Some(format!("nothing sent for {quiet} s"));
            self.emit(e).await?;
        }
        for p in moving {
            tracing::info!(path = %p.display(), "{}: sending again after a stall", p.display());
        }
        Ok(())
    }

    /// A `watch_degraded` event for each watch problem not reported yet.
    pub(super) async fn report_degraded(&mut self) -> Result<(), AgentError> {
        let now: HashSet<String> = self
            .reporter
            .problems()
            .into_iter()
            .filter(|p| p.starts_with("watched folder") || p.contains(" is polled"))
            .collect();
        for p in self.roots.newly_degraded(now) {
            let mut e = crate::control::Event::new("watch_degraded", self.clock.wall_ms());
            e.error = Some(p);
            self.emit(e).await?;
        }
        Ok(())
    }

    pub(super) fn snapshot(&self) -> String {
        let now = self.clock.now();
        let roots: Vec<serde_json::Value> = self
            .settings
            .watches
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let (settling, growing) = self.intake.counts_under(RootId(i), now);
                let (rounds, held) = self.deletes.view(&self.key(RootId(i)));
                serde_json::json!({
                    "root": w.path,
                    "remote_folder": w.remote_folder,
                    "watch": self.roots.mode(RootId(i)).map(WatchMode::to_string),
                    "settling": settling,
                    "growing": growing,
                    "deletes_rounds": rounds,
                    "deletes_held": held,
                })
            })
            .collect();
        let (reason, since) = match (self.gate.service_pause(), self.gate.user_pause()) {
            (Some(Pause::Auth), _) => (Some("auth_rejected"), None),
            (Some(Pause::Unreachable { since_ms }), _) => (Some("service_unreachable"), Some(since_ms)),
            (None, Some(p)) => (Some("paused_by_user"), Some(p.since_ms)),
            (None, None) if self.gate.schedule_paused() => (Some("paused_by_schedule"), None),
            (None, None) => (None, None),
        };
        serde_json::json!({
            "roots": roots,
            "in_flight": self.dispatch.views(now),
            "paused": !self.gate.open(),
            "pause_reason": reason,
            "unreachable_since": since.filter(|_| matches!(self.gate.service_pause(), Some(Pause::Unreachable { .. }))),
            "user_pause": self.gate.user_pause(),
            "rate_limited_until": self.transfer.rate_limited_until_ms(),
            "concurrency": self.transfer.concurrency(),
            "schedule": self.schedule_view(),
            "problems": self.reporter.problems(),
            "fleet": self.journal.fleet().map(|f| f.view()),
        })
        .to_string()
    }
}

/// Below this much free space on the journal's disk, `/healthz` warns
/// (the agent stops at the first journal write that fails).
const JOURNAL_FREE_MIN: u64 = 64 * 1024 * 1024;

/// Why the journal in `state_dir` cannot (or soon cannot) be written: the
/// folder is read-only, or its disk is almost full. None: it can.
fn journal_unwritable(state_dir: &Path) -> Option<String> {
    if crate::sys::writable(state_dir) == Some(false) {
        return Some(format!(
            "the journal is not writable: {} is read-only for this user",
            state_dir.display()
        ));
    }
    match crate::sys::free_bytes(state_dir) {
        Some(free) if free < JOURNAL_FREE_MIN => Some(format!(
            "the journal's disk is almost full ({} free in {}); free space, or the agent stops at the \
             next write",
            crate::units::format_bytes(free),
            state_dir.display()
        )),
        _ => None,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_writable_state_dir_is_healthy_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(journal_unwritable(dir.path()), None);
        let gone = dir.path().join("gone");
        let why = journal_unwritable(&gone).unwrap();
        assert!(why.contains("not writable") && why.contains("gone"), "{why}");
    }
}
