//! An upload's outcome applied: the rule ([`super::super::rule`]) says
//! which step it is; this does the step's journal writes, events, logs and
//! the after-upload action.

use super::*;

impl Agent {
    pub(super) async fn upload_result(
        &mut self,
        row: FileRow,
        result: Result<Outcome, UploadError>,
        fp: Fingerprint,
        took: Option<Duration>,
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
                self.journal.record_done(row.id, done_record(&o, fp)).await?;
                if let Some(from) = &o.renamed_from {
                    self.reporter.adopted();
                    let remote = mapping::remote_path(&o.folder, &o.name);
                    tracing::info!(
                        path = %path.display(),
                        remote = %remote,
                        file_no = %o.file.file_no,
                        "renamed {} → {remote} (file_no {}; it was {}; nothing sent)",
                        path.display(),
                        o.file.file_no,
                        mapping::remote_path(&from.remote_folder, &from.remote_name)
                    );
                    let mut e = Event::new("renamed", self.clock.wall_ms()).path(&path);
                    e.remote_folder = Some(o.folder.clone());
                    e.name = Some(o.name.clone());
                    e.file_no = Some(o.file.file_no.clone());
                    e.size = Some(o.size);
                    let was = self
                        .root_of(&row)
                        .map(|id| self.settings.root(id).path.join(&from.rel))
                        .unwrap_or_else(|| from.rel.clone().into());
                    self.emit(
                        e.with("from", was.to_string_lossy().into_owned())
                            .with("from_name", from.remote_name.clone()),
                    )
                    .await?;
                } else if o.adopted.is_some() {
                    self.reporter.adopted();
                } else {
                    self.reporter.uploaded(o.size, self.clock.wall_ms());
                    let remote = mapping::remote_path(&o.folder, &o.name);
                    let took = took.unwrap_or_default();
                    tracing::info!(
                        path = %path.display(),
                        remote = %remote,
                        file_no = %o.file.file_no,
                        size = o.size,
                        duration_ms = took.as_millis() as u64,
                        sha256 = %o.sha256,
                        "uploaded {} → {remote} (file_no {}; {} in {})",
                        path.display(),
                        o.file.file_no,
                        crate::units::format_bytes(o.size),
                        crate::units::format_took(o.size, took)
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
                let mut local = None;
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
                    match outcome {
                        // Each deletion or move is said, and kept with the
                        // upload in the history.
                        Ok(done) => {
                            if let Some(what) = done.describe() {
                                if done != crate::after::Done::LeftAlone {
                                    tracing::info!(
                                        path = %path.display(),
                                        "{}: {what} (after_upload)",
                                        path.display()
                                    );
                                }
                                self.journal
                                    .note_after(row.root.clone(), row.rel.clone(), what)
                                    .await?;
                            }
                            local = Some(done);
                        }
                        Err(e) => tracing::warn!("{e}"),
                    }
                    if again {
                        let settle = self.settings.root(id).settle;
                        self.intake.offer(id, &path, settle, self.clock.now());
                    }
                }
                // Last: the hook sees where the local file went.
                if let Some(id) = self.root_of(&row) {
                    self.hook_uploaded(id, &path, &o, local.as_ref());
                }
            }
            // Paused by the user: the parts sent are recorded; it waits
            // (no attempt spent) and resumes from them.
            rule::Step::Wait => {
                self.journal.set_state(row.id, State::Pending).await?;
                if self.gate.held() {
                    tracing::info!(path = %path.display(), "{} paused; it resumes when uploads do", path.display());
                } else {
                    // Stopped by a reload that changed how files are sent.
                    tracing::info!(
                        path = %path.display(),
                        "{}: goes on with the reloaded settings",
                        path.display()
                    );
                    self.dispatch.look_again();
                }
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
