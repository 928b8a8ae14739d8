//! The agent's loop: start-up, then one `select!` whose every arm is one
//! call, until shutdown (or, with `--once`, until the work is done).

use super::*;

/// What the loop holds beside the agent: the watchers and their channel
/// (a reload replaces them), this agent's folder markers, the timers.
struct Running {
    tx: mpsc::Sender<Hint>,
    rx: mpsc::Receiver<Hint>,
    watchers: Option<watch::Watchers>,
    mark: Option<marker::Mark>,
    commands: Option<mpsc::Receiver<crate::control::Command>>,
    started_at: i64,
    /// Heartbeats so far.
    beats: u64,
    /// On a terminal: a progress line per upload every few seconds.
    show_progress: bool,
    rescan: tokio::time::Interval,
    give_up_after: Duration,
}

impl Agent {
    /// Runs until `shutdown` (or, with `once`, until the work is done).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<Report, AgentError> {
        let mut run = self.start().await?;
        let mut heartbeat = tokio::time::interval_at(self.clock.now(), Duration::from_secs(1));
        // Progress events for the dashboard, at most 4 per second per upload.
        let mut progress = tokio::time::interval(Duration::from_millis(250));
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            self.expire_pause().await?;
            let next_retry = self.fill().await?;
            if self.opts.once && self.once_done(run.give_up_after).await? {
                break;
            }
            let wake = self.next_wake(next_retry);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(cmd) = async { run.commands.as_mut()?.recv().await }, if run.commands.is_some() => {
                    self.on_command(cmd, &mut run).await?;
                }
                _ = progress.tick(), if self.dispatch.in_flight() > 0 && self.reporter.listened() => {
                    self.on_progress_tick();
                }
                Some(h) = run.rx.recv() => self.on_hints(h, &mut run.rx).await?,
                next = self.intake.next_folder(), if self.intake.can_take_folder() =>
                {
                    if let Some((id, folder)) = next {
                        self.scanned_folder(id, folder).await?;
                    }
                }
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.on_task(done, &shutdown).await?;
                }
                _ = tokio::time::sleep_until(wake) => self.on_wake().await?,
                _ = heartbeat.tick() => self.on_heartbeat(&mut run).await?,
                _ = run.rescan.tick() => self.scan_all(),
            }
        }
        self.stop(run).await
    }

    /// Claims the roots, starts the watchers, checks the key, restores the
    /// user's pause and the clocks' records, and scans every root.
    async fn start(&mut self) -> Result<Running, AgentError> {
        let (tx, rx) = mpsc::channel::<Hint>(64 * 1024);
        let commands = self.commands.take();
        self.roots.look(&self.settings);
        let mark = self.claim_roots()?;
        let watchers = if self.opts.once {
            None
        } else {
            let w = watch::start(
                &self.settings.watches,
                self.settings.agent.poll_interval,
                tx.clone(),
            )?;
            self.roots.set_modes(w.modes.clone());
            Some(w)
        };
        for (i, w) in self.settings.watches.iter().enumerate() {
            tracing::info!(
                "watching {} → \"{}\" ({})",
                w.path.display(),
                w.remote_folder,
                self.roots
                    .mode(RootId(i))
                    .map_or_else(|| "one scan".to_string(), WatchMode::to_string)
            );
        }
        let started_at = self.clock.wall_ms();
        if !self.opts.dry_run {
            self.check_key_at_start().await?;
        }
        self.restore_pause().await?;
        // A step back before this run: the earliest it can matter is when
        // this process started (a file made since is new to it).
        self.rebase_backoff(crate::clock::launched_ms().min(self.clock.wall_ms()))
            .await?;
        self.note_first_watch().await?;
        self.apply_schedule().await?;
        self.scan_all();
        self.start_delete_rounds();
        let show_progress = {
            use std::io::IsTerminal;
            std::io::stderr().is_terminal()
        };
        Ok(Running {
            tx,
            rx,
            watchers,
            mark,
            commands,
            started_at,
            beats: 0,
            show_progress,
            rescan: self.rescan_timer(),
            give_up_after: self.give_up_after(),
        })
    }

    fn scan_all(&mut self) {
        for id in self.settings.root_ids() {
            self.scan(id, None);
        }
    }

    /// `--once`: whether everything found is done (sets that became ready
    /// are judged, files still changing are left for the next run).
    async fn once_done(&mut self, give_up_after: Duration) -> Result<bool, AgentError> {
        if self.idle() {
            // Sets that became ready (or moved a phase on) go in this run
            // too: judged afresh, not by a heartbeat's decision taken while
            // their files were still settling.
            self.sets.judge_all_again();
            self.advance_sets().await?;
        }
        for p in self.intake.give_up(self.clock.now(), give_up_after) {
            tracing::warn!("{} is still changing; leaving it for the next run", p.display());
        }
        Ok(self.idle())
    }

    fn idle(&self) -> bool {
        self.intake.idle() && self.tasks.is_empty() && self.dispatch.settled()
    }

    /// The next moment the loop must look without being woken: a file due
    /// to settle, a retry due, a pause to re-check or end (else an hour).
    fn next_wake(&self, next_retry: Option<Instant>) -> Instant {
        [
            self.intake.next_deadline(),
            next_retry,
            self.gate.recheck_at(),
            self.pause_ends_at(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| self.clock.now() + Duration::from_secs(3600))
    }

    /// A request from the control plane (a reload replaces the watchers).
    async fn on_command(
        &mut self,
        cmd: crate::control::Command,
        run: &mut Running,
    ) -> Result<(), AgentError> {
        match cmd {
            crate::control::Command::Reload {
                settings,
                transfer,
                reply,
            } => {
                if let Some((t, r)) = self.reload(settings, transfer, reply, &mut run.watchers).await? {
                    (run.tx, run.rx) = (t, r);
                    run.rescan = self.rescan_timer();
                    run.give_up_after = self.give_up_after();
                }
            }
            other => self.command(other).await?,
        }
        self.beat(run.started_at).await
    }

    /// Progress events for the dashboard's stream.
    fn on_progress_tick(&self) {
        let at = self.clock.wall_ms();
        for v in self.dispatch.views(self.clock.now()) {
            self.reporter.send(
                &crate::control::Event::new("progress", at)
                    .path(&v.path)
                    .sized(v.size)
                    .with("sent", v.sent)
                    .with("rate", v.rate)
                    .with("eta_s", v.eta_s)
                    .with("stalled_s", v.stalled_s),
            );
        }
    }

    /// A hint, and every other one already waiting.
    async fn on_hints(&mut self, first: Hint, rx: &mut mpsc::Receiver<Hint>) -> Result<(), AgentError> {
        self.hint(first).await?;
        while let Ok(h) = rx.try_recv() {
            self.hint(h).await?;
        }
        Ok(())
    }

    /// A task ended (an upload, a hash, a manifest).
    async fn on_task(
        &mut self,
        done: Result<TaskResult, tokio::task::JoinError>,
        shutdown: &CancellationToken,
    ) -> Result<(), AgentError> {
        match done {
            Ok(result) => self.finished(result, shutdown).await,
            Err(e) if e.is_panic() => {
                tracing::error!("an upload task panicked: {e}");
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    /// A deadline passed: files to settle, the service to ask again.
    async fn on_wake(&mut self) -> Result<(), AgentError> {
        self.poll_settle().await?;
        if self.gate.recheck_at().is_some_and(|at| at <= self.clock.now()) {
            self.recheck_service().await;
        }
        Ok(())
    }

    /// Once a second: the clocks, put-off files, markers, progress lines,
    /// new folders, the roots and their watchers, the schedule, sets,
    /// health, and the heartbeat record.
    async fn on_heartbeat(&mut self, run: &mut Running) -> Result<(), AgentError> {
        // `retry` from another process may have queued files.
        self.dispatch.look_again();
        if let Some(since) = self.clock_stepped_back() {
            self.rebase_backoff(since).await?;
        }
        self.offer_deferred();
        if run.beats.is_multiple_of(marker::REFRESH_BEATS) {
            self.refresh_marks(&mut run.mark);
        }
        run.beats += 1;
        if run.beats.is_multiple_of(PROGRESS_EVERY) && run.show_progress {
            let views = self.dispatch.views(self.clock.now());
            for v in &views {
                tracing::info!("{}", v.line());
            }
            // With more than one, a line for all of them.
            if views.len() > 1
                && let Some(all) = flights::total_line(&views)
            {
                tracing::info!("{all}");
            }
        }
        self.rescan_new_folders();
        if let Some(w) = run.watchers.as_mut() {
            self.check_roots(w, &run.tx).await?;
        }
        if let Some(w) = &run.watchers {
            for (i, flag) in w.overflowed.iter().enumerate() {
                if flag.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!(
                        "event queue overflowed; rescanning {}",
                        self.settings.watches[i].path.display()
                    );
                    self.scan(RootId(i), None);
                }
            }
        }
        self.apply_schedule().await?;
        self.sample_throughput();
        self.advance_sets().await?;
        self.start_delete_rounds();
        self.report_stalls().await?;
        self.publish_health();
        self.report_degraded().await?;
        self.beat(run.started_at).await
    }

    /// The heartbeat record `status` reads (not in a dry run).
    async fn beat(&self, started_at: i64) -> Result<(), AgentError> {
        if !self.opts.dry_run {
            self.journal
                .heartbeat(
                    std::process::id(),
                    started_at,
                    self.reporter.last_event_at(),
                    self.snapshot(),
                )
                .await?;
        }
        Ok(())
    }

    /// Stops watching, takes the markers down, stops the transfers (their
    /// sessions are in the journal) and leaves the journal tidy.
    async fn stop(mut self, run: Running) -> Result<Report, AgentError> {
        drop(run.watchers);
        let sets_waiting = if self.opts.once && !self.opts.dry_run {
            self.sets_left_open().await?
        } else {
            Vec::new()
        };
        if let Some(me) = &run.mark {
            for w in &self.settings.watches {
                marker::remove(&w.path, me);
            }
        }
        self.tasks.shutdown().await;
        self.journal.checkpoint().await?;
        Ok(self.reporter.finish(sets_waiting))
    }
}
