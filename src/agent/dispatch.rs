//! What goes out: due files become upload tasks; each outcome becomes one
//! journal transition; the service-unreachable and key-rejected pauses.

use super::*;
use crate::control::Event;

pub(super) enum TaskResult {
    Upload {
        row: FileRow,
        result: Box<Result<Outcome, UploadError>>,
        fp: Fingerprint,
    },
    /// The file changed (or vanished) between being queued and being sent.
    NotReady { row: FileRow, gone: bool },
    /// A touched file (same size, new mtime) was hashed: same content or not.
    Touched {
        row: FileRow,
        fp: Fingerprint,
        /// The identity of the version hashed, when its content is the
        /// uploaded one.
        same: Option<crate::fileid::FileId>,
    },
    /// A held file was hashed while its set waits (None: it changed meanwhile).
    Prehashed {
        root: String,
        rel: String,
        hashed: Option<(crate::fileid::FileId, String)>,
    },
    /// A set's manifest upload ended.
    Manifest {
        root: String,
        set_rel: String,
        result: Box<Result<Outcome, UploadError>>,
    },
}

impl Agent {
    /// Starts due uploads up to `concurrent_files`. Returns when the next
    /// backed-off file becomes due, if any.
    pub(super) async fn fill(&mut self) -> Result<Option<Instant>, AgentError> {
        if self.opts.dry_run || !self.gate.open() {
            self.queue_dirty = false;
            return Ok(None);
        }
        if self.queue_dirty {
            let (general, lane) = self.free_slots();
            let mut dirty = false;
            for (small_only, free) in [(false, general), (true, lane)] {
                if free == 0 {
                    continue;
                }
                let skip: Vec<i64> = self.inflight.iter().chain(&self.orphans).copied().collect();
                let tried = self.opts.once.then(|| self.attempted.clone());
                let mut serving = self.serving.clone();
                if small_only {
                    serving.max_size = Some(self.settings.agent.direct_upload_max);
                }
                let rows = self
                    .journal
                    .due(self.clock.wall_ms(), free, skip, tried, serving)
                    .await?;
                dirty |= rows.len() == free;
                for row in rows {
                    let id = row.id;
                    self.start_upload(row);
                    // (A row whose root left the config is not started.)
                    if small_only && self.inflight.contains(&id) {
                        self.lane.insert(id);
                    }
                }
            }
            self.queue_dirty = dirty;
        }
        if self.opts.once {
            return Ok(None);
        }
        let next = self.journal.next_due().await?;
        let now_ms = self.clock.wall_ms();
        Ok(next
            .filter(|t| *t > now_ms)
            .map(|t| self.clock.now() + Duration::from_millis((t - now_ms) as u64)))
    }

    /// Free upload slots: (any file, the small files' lane). With
    /// `concurrent_files` ≥ 2 and direct uploads on, one slot only takes
    /// files up to `direct_upload_max`, so a long upload never holds back
    /// the small files queued behind it.
    fn free_slots(&self) -> (usize, usize) {
        let all = self.settings.agent.concurrent_files;
        if all < 2 || self.settings.agent.direct_upload_max == 0 {
            return (all.saturating_sub(self.inflight.len()), 0);
        }
        let in_lane = self.lane.len();
        let general = (all - 1).saturating_sub(self.inflight.len().saturating_sub(in_lane));
        (general, 1usize.saturating_sub(in_lane))
    }

    pub(super) fn start_upload(&mut self, row: FileRow) {
        let Some(id) = self.root_of(&row) else {
            // The root left the config: leave the record alone (and stop asking for it).
            self.orphans.insert(row.id);
            return;
        };
        self.inflight.insert(row.id);
        if self.opts.once {
            Arc::make_mut(&mut self.attempted).insert(row.id);
        }
        let w: WatchSettings = self.settings.root(id).clone();
        let journal = self.journal.clone();
        let transfer = self.transfer.clone();
        let hold = self.gate.hold_token();
        self.reporter.send(
            &crate::control::Event::new("started", self.clock.wall_ms())
                .path(&row.local_path())
                .sized(row.size.max(0) as u64),
        );
        let flight = self
            .flights
            .begin(row.id, row.local_path(), row.size.max(0) as u64, self.clock.now());
        let settled = self.intake.take_settled_node(&row.local_path());
        self.tasks.spawn(async move {
            let path = row.local_path();
            let anchor = w.path.clone();
            let stat_path = path.clone();
            let now = tokio::task::spawn_blocking(move || crate::anchor::file_id(&anchor, &stat_path)).await;
            let fp = match now {
                Ok(Ok(id)) => id.fingerprint(),
                Ok(Err(e)) => {
                    if let Some(why) = crate::anchor::Refusal::of(&e) {
                        tracing::warn!("skipping {}: {why}", crate::text::path(&path));
                    }
                    let gone = e.kind() == std::io::ErrorKind::NotFound;
                    return TaskResult::NotReady { row, gone };
                }
                Err(_) => return TaskResult::NotReady { row, gone: false },
            };
            if fp != row.fingerprint() {
                return TaskResult::NotReady { row, gone: false };
            }
            let remote = match mapping::map(Path::new(&row.rel), &w.remote_folder, w.subfolders) {
                Ok(r) => r,
                Err(e) => {
                    let err = UploadError::Io {
                        path: path.clone(),
                        kind: std::io::ErrorKind::InvalidInput,
                        message: e.to_string(),
                    };
                    return TaskResult::Upload {
                        row,
                        result: Box::new(Err(err)),
                        fp,
                    };
                }
            };
            let job = Job {
                root: w.path.clone(),
                settled,
                path: path.clone(),
                file_name: remote.name,
                folder: remote.folder,
                format: remote.format,
                tags: w.tags.clone(),
                metadata: w.metadata.clone(),
                random_prefix: w.random_prefix,
                adopt: row.adopt,
                hold,
                known_sha256: row.pre.clone(),
                in_parts: false,
            };
            if let Err(e) = journal.set_state(row.id, State::Uploading).await {
                let err = UploadError::Checkpoint(e.to_string());
                return TaskResult::Upload {
                    row,
                    result: Box::new(Err(err)),
                    fp,
                };
            }
            let resume = match journal.session(row.id).await {
                Ok(Some(saved)) => usable(saved, fp),
                _ => None,
            };
            if resume.is_some() {
                tracing::info!(path = %path.display(), "resuming the upload of {}", path.display());
            }
            let observer: Arc<dyn Observer> = Arc::new(JournalObserver::new(journal, row.id, Some(flight)));
            let result = transfer.send(&job, resume, &observer).await;
            TaskResult::Upload {
                row,
                result: Box::new(result),
                fp,
            }
        });
    }

    pub(super) async fn finished(
        &mut self,
        result: TaskResult,
        shutdown: &CancellationToken,
    ) -> Result<(), AgentError> {
        match result {
            TaskResult::Touched { row, fp, same } => {
                if let Some(now) = same {
                    self.journal.refresh_done_identity(row.id, now).await?;
                    self.reporter.skipped();
                } else if let Some(id) = self.root_of(&row) {
                    self.enqueue(id, row.root, row.rel, fp).await?;
                }
            }
            TaskResult::Prehashed { root, rel, hashed } => {
                if let Some((file, sha256)) = hashed {
                    self.journal.record_prehash(root, rel, file, sha256).await?;
                }
            }
            TaskResult::Manifest {
                root,
                set_rel,
                result,
            } => {
                self.manifest_sent(root, set_rel, *result).await?;
            }
            TaskResult::NotReady { row, gone } => {
                self.inflight.remove(&row.id);
                self.lane.remove(&row.id);
                self.flights.end(row.id);
                if gone {
                    self.journal.mark_gone(row.root.clone(), row.rel.clone()).await?;
                } else {
                    self.back_to_settling(&row).await?;
                }
            }
            TaskResult::Upload { row, result, fp } => {
                self.inflight.remove(&row.id);
                self.lane.remove(&row.id);
                if let (Some(began), Ok(o)) = (self.flights.end(row.id), result.as_ref())
                    && o.adopted.is_none()
                {
                    self.reporter
                        .took(self.clock.now().duration_since(began).as_secs_f64());
                }
                self.queue_dirty = true;
                self.upload_result(row, *result, fp, shutdown).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn back_to_settling(&mut self, row: &FileRow) -> Result<(), AgentError> {
        self.journal.drop_session(row.id).await?;
        self.journal.set_state(row.id, State::Settling).await?;
        if let Some(id) = self.root_of(row) {
            let settle = self.settings.root(id).settle;
            self.intake
                .settle_again(id, &row.local_path(), settle, self.clock.now());
        }
        Ok(())
    }

    pub(super) async fn upload_result(
        &mut self,
        row: FileRow,
        result: Result<Outcome, UploadError>,
        fp: Fingerprint,
        shutdown: &CancellationToken,
    ) -> Result<(), AgentError> {
        let path = row.local_path();
        // In a fleet: the claim went (another node took the file over, or
        // the database is away). Not a failure of the file: it waits, no
        // attempt spent, and the fleet's record decides what comes next.
        let lost = match self.journal.fleet() {
            Some(fleet) => fleet.claim_lost(row.id, result.is_err()).await,
            None => None,
        };
        if let (Some(why), Err(e)) = (&lost, &result) {
            tracing::info!(
                path = %path.display(),
                "{}: not completed here: {why}; it waits, and goes on from the fleet's record",
                path.display()
            );
            tracing::debug!("the upload stopped with: {e}");
            self.journal.set_state(row.id, State::Pending).await?;
            self.journal
                .postpone(vec![row.id], self.clock.wall_ms() + 2000)
                .await?;
            return Ok(());
        }
        let facts = rule::Facts {
            once: self.opts.once,
            service_down: match &result {
                Err(UploadError::Api(a)) if rule::needs_service_check(&result, self.opts.once) => {
                    self.service_down(a).await
                }
                _ => false,
            },
            max_attempts: self.settings.agent.max_attempts,
        };
        match rule::transition(result, facts) {
            rule::Step::Done(o) => {
                self.gate.succeeded();
                self.journal
                    .record_done(
                        row.id,
                        DoneRecord {
                            fingerprint: fp,
                            identity: o.source,
                            sha256: o.sha256.clone(),
                            remote_folder: o.folder.clone(),
                            remote_name: o.name.clone(),
                            file_no: o.file.file_no.clone(),
                            url: o.file.url.clone(),
                            adopted: o.adopted.map(|p| p.describe().to_string()),
                        },
                    )
                    .await?;
                if o.adopted.is_some() {
                    self.reporter.adopted();
                } else {
                    self.reporter.uploaded(o.size, self.clock.wall_ms());
                    let remote = mapping::remote_path(&o.folder, &o.name);
                    tracing::info!(
                        path = %path.display(),
                        remote = %remote,
                        file_no = %o.file.file_no,
                        "uploaded {} → {remote} (file_no {})",
                        path.display(),
                        o.file.file_no
                    );
                    let mut e = Event::new("uploaded", self.clock.wall_ms()).path(&path);
                    e.remote_folder = Some(o.folder.clone());
                    e.name = Some(o.name.clone());
                    e.file_no = Some(o.file.file_no.clone());
                    e.size = Some(o.size);
                    self.emit(e).await?;
                    self.reporter.ping_owed(false);
                }
                // Only the version this agent read is deleted or moved; an
                // outcome without one (none in practice) leaves the file.
                if let (Some(id), Some(source)) = (self.root_of(&row), o.source) {
                    let mut action = self.settings.root(id).after_upload.clone();
                    // An adoption that could not compare content (a take with
                    // the same name and size may differ) keeps the file.
                    if let Some(proof) = o.adopted
                        && !proof.compared_content()
                        && action != crate::config::AfterUpload::Keep
                    {
                        tracing::warn!(
                            "{}: adopted {}; after_upload is not applied to it. Compare it with file_no {} and \
                             remove it yourself if they are the same",
                            path.display(),
                            proof.describe(),
                            o.file.file_no
                        );
                        action = crate::config::AfterUpload::Keep;
                    }
                    let anchor = self.settings.root(id).path.clone();
                    let rel = row.rel.clone();
                    let uploaded = crate::after::Uploaded::Exactly(source);
                    let (again, outcome) = {
                        let path = path.clone();
                        tokio::task::spawn_blocking(move || {
                            // Written again while it was sent (its complete in
                            // flight, the same size, the mtime put back): that
                            // version settles and is judged anew, else it would
                            // pass for the one just recorded.
                            let again = crate::anchor::file_id(&anchor, &path).is_ok_and(|now| now != source);
                            (
                                again,
                                crate::after::apply(&action, &anchor, &path, &rel, uploaded),
                            )
                        })
                        .await
                        .unwrap_or_else(|e| (false, Err(crate::after::AfterError::Join(e.to_string()))))
                    };
                    if let Err(e) = outcome {
                        tracing::warn!("{e}");
                    }
                    if again {
                        let settle = self.settings.root(id).settle;
                        self.intake.offer(id, &path, settle, self.clock.now());
                    }
                }
            }
            // Paused by the user: the parts sent are recorded; it waits
            // (no attempt spent) and resumes from them.
            rule::Step::Wait => {
                self.journal.set_state(row.id, State::Pending).await?;
                tracing::info!(path = %path.display(), "{} paused; it resumes when uploads do", path.display());
            }
            rule::Step::PauseAuth(e) => {
                self.journal.set_state(row.id, State::Pending).await?;
                if self.opts.once {
                    shutdown.cancel();
                    return Err(AgentError::Auth(e.to_string()));
                }
                if self.gate.service_pause() != Some(Pause::Auth) {
                    tracing::error!(
                        "{e}; all uploads are paused and the key is re-checked every {}s. Fix the key (then restart, or wait)",
                        AUTH_RECHECK.as_secs()
                    );
                    let mut ev = Event::new("auth_rejected", self.clock.wall_ms());
                    ev.error = Some(e.to_string());
                    self.emit(ev).await?;
                }
                self.gate
                    .pause_service(Pause::Auth, self.clock.now() + AUTH_RECHECK);
            }
            // The service is unreachable for every file (no connection, or
            // a transient failure and the cheap check fails too, or every
            // recent upload failed): the queue waits, and this file's
            // attempts are not spent. A 5xx or a lost answer for this file
            // while the service answers otherwise is this file's failed
            // attempt (below), so an unclear outcome cannot repeat for ever.
            rule::Step::PauseOutage(a) => {
                self.journal.set_state(row.id, State::Pending).await?;
                if self.gate.service_pause().is_none() {
                    tracing::warn!(
                        "the service is unreachable ({a}); all uploads wait and it is asked again every {}s",
                        OUTAGE_RECHECK.as_secs()
                    );
                    self.gate.pause_service(
                        Pause::Unreachable {
                            since_ms: self.clock.wall_ms(),
                        },
                        self.clock.now() + OUTAGE_RECHECK,
                    );
                }
            }
            // Sent, answer lost, not listed yet: it waits (its session
            // kept, no attempt spent, no slot held) and is asked about
            // again; nothing is sent twice while a listing may lag.
            rule::Step::Unresolved(retry_in) => {
                self.journal.set_state(row.id, State::Pending).await?;
                self.journal
                    .postpone(vec![row.id], self.clock.wall_ms() + retry_in.as_millis() as i64)
                    .await?;
            }
            rule::Step::Resettle(why) => {
                tracing::info!(
                    path = %path.display(),
                    "{} changed during upload ({why}); waiting for it to settle again",
                    path.display()
                );
                self.back_to_settling(&row).await?;
            }
            rule::Step::Gone(message) => {
                tracing::info!("{} vanished during upload ({message})", path.display());
                self.journal.mark_gone(row.root, row.rel).await?;
            }
            rule::Step::Fail {
                error: e,
                keep_session,
                max_attempts,
                permanent,
                kind,
            } => {
                if !keep_session {
                    self.journal.drop_session(row.id).await?;
                }
                let delay = rule::retry_delay(row.attempts as u32, self.clock.wall_ms());
                let state = self
                    .journal
                    .record_failure(
                        row.id,
                        e.to_string(),
                        max_attempts,
                        self.clock.wall_ms() + delay.as_millis() as i64,
                    )
                    .await?;
                self.reporter.attempt_failed(kind, state == State::Failed);
                if state == State::Failed {
                    let mut ev = Event::new("failed", self.clock.wall_ms()).path(&path);
                    ev.size = Some(row.size.max(0) as u64);
                    ev.error = Some(e.to_string());
                    if let Some(id) = self.root_of(&row) {
                        ev.remote_folder = Some(self.settings.root(id).remote_folder.clone());
                    }
                    ev.name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    self.emit(ev).await?;
                    self.reporter.ping_owed(true);
                }
                if state == State::Failed && permanent {
                    self.reporter.not_uploaded();
                    tracing::error!(
                        path = %path.display(),
                        error = %e,
                        "{} failed: {e}; sending it again cannot succeed, so it is not retried. Fix the cause, \
                         then run `autorender-sync retry`",
                        path.display()
                    );
                } else if state == State::Failed {
                    self.reporter.not_uploaded();
                    tracing::error!(
                        path = %path.display(),
                        error = %e,
                        "{} failed after {} attempts: {e}; run `autorender-sync retry` to try again",
                        path.display(),
                        row.attempts + 1
                    );
                } else if self.opts.once {
                    self.reporter.not_uploaded();
                    tracing::warn!(path = %path.display(), error = %e, "{}: {e}; it is tried again on the next run", path.display());
                } else {
                    tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "{}: {e}; retrying in {}s",
                        path.display(),
                        delay.as_secs()
                    );
                }
            }
        }
        Ok(())
    }
}

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
            self.queue_dirty = true;
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
        let now = (self.clock.now(), self.clock.wall_ms());
        let back = self.wall_seen.and_then(|(at, wall)| {
            let elapsed = now.0.duration_since(at).as_millis() as i64;
            (now.1 < wall + elapsed - 60_000).then_some(now.1 - elapsed)
        });
        self.wall_seen = Some(now);
        back
    }
}
