//! Upload sets in the loop: each heartbeat, every open set of a root with
//! `sets = "folder"` is judged (ready? stuck? which phase next?), and what
//! was decided is recorded in the journal before it is acted on, so a
//! restart carries on from there. The manifest is written into the state
//! dir and uploaded as one more file of the set.

use super::*;
use crate::config::{Gaps, PHASE_TRIGGER, SetRules};
use crate::control::Event;
use crate::journal::{SetFile, SetRow, SetStep};

/// What a set should do now, from its record and files (a pure rule).
pub(super) fn decide(
    rules: &SetRules,
    set: &SetRow,
    files: &[SetFile],
    settling: bool,
    now_ms: i64,
) -> (SetStep, Option<String>) {
    match set.state.as_str() {
        "waiting" => {
            let mut warning = None;
            let why = if settling {
                Some("files are still settling".to_string())
            } else if set.released {
                // The user said it goes as it is.
                None
            } else if let Some(pattern) = &rules.trigger_pattern
                && !files.iter().any(|f| f.phase == PHASE_TRIGGER)
            {
                Some(format!("no trigger ({pattern}) yet"))
            } else if rules.trigger.is_none() && now_ms - set.last_change_at < rules.quiet.as_millis() as i64
            {
                let until = set.last_change_at + rules.quiet.as_millis() as i64;
                Some(format!("quiet until {}", crate::clock::rfc3339_ms(until)))
            } else {
                let gaps = if rules.gaps == Gaps::Ignore {
                    Vec::new()
                } else {
                    crate::sequence::gaps(files.iter().map(|f| f.rel.rsplit('/').next().unwrap_or(&f.rel)))
                };
                let named: Vec<String> = gaps
                    .iter()
                    .map(|(seq, missing)| format!("gap at {} ({seq})", crate::sequence::compact(missing)))
                    .collect();
                match (rules.gaps, named.is_empty()) {
                    (Gaps::Hold, false) => Some(named.join("; ")),
                    (Gaps::Warn, false) => {
                        warning = Some(named.join("; "));
                        None
                    }
                    _ => None,
                }
            };
            match why {
                Some(reason) => {
                    let stuck = !set.stuck && now_ms - set.first_seen_at >= rules.timeout.as_millis() as i64;
                    (SetStep::Wait { reason, stuck }, None)
                }
                None => (SetStep::Release { phase: 0 }, warning),
            }
        }
        "uploading" => {
            let open: Vec<&SetFile> = files
                .iter()
                .filter(|f| f.phase <= set.phase && !matches!(f.state, State::Done | State::Skipped))
                .collect();
            let failed = open.iter().filter(|f| f.state == State::Failed).count();
            if open.iter().any(|f| f.state == State::Held) {
                // Files that settled after this phase was released go with it.
                (SetStep::Release { phase: set.phase }, None)
            } else if failed > 0 {
                let reason = format!("{failed} file(s) failed; `autorender-sync retry` sends them again");
                (SetStep::Wait { reason, stuck: false }, None)
            } else if !open.is_empty() {
                (
                    SetStep::Wait {
                        reason: format!("uploading ({} left)", open.len()),
                        stuck: false,
                    },
                    None,
                )
            } else if let Some(next) = files.iter().map(|f| f.phase).filter(|p| *p > set.phase).min() {
                // The next phase that has files (an empty one is not worth
                // a heartbeat of its own).
                (SetStep::Release { phase: next }, None)
            } else if rules.manifest || rules.mhl == crate::config::Mhl::Write || rules.mhl_new {
                (SetStep::Manifest, None)
            } else {
                (
                    SetStep::Complete {
                        manifest_file_no: None,
                    },
                    None,
                )
            }
        }
        _ => (
            SetStep::Wait {
                reason: String::new(),
                stuck: false,
            },
            None,
        ),
    }
}

/// The manifest: each done file's path in the set, size, sha256, file_no.
/// Nothing in it changes unless the files do, so a manifest sent again
/// after a crash is the same content (and is adopted, not stored twice).
fn manifest(set: &SetRow, files: &[SetFile]) -> String {
    let entries: Vec<serde_json::Value> = files
        .iter()
        .filter(|f| f.state == State::Done)
        .map(|f| {
            serde_json::json!({
                "path": f.rel.strip_prefix(&format!("{}/", set.set_rel)).unwrap_or(&f.rel),
                "size": f.size,
                "sha256": f.sha256,
                "file_no": f.file_no,
            })
        })
        .collect();
    let doc = serde_json::json!({ "set": set.set_rel, "round": set.round, "files": entries });
    format!("{doc:#}\n")
}

/// A watched root as a relative path under `manifests/`: its own path
/// without the leading `/` (or drive), e.g. `home/alice/renders`.
fn readable_root(root: &Path) -> PathBuf {
    root.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// What the agent keeps of upload sets between two heartbeats (the sets
/// themselves are in the journal).
#[derive(Default)]
pub(super) struct Sets {
    /// Waiting sets last judged: (root key, set) → (their last change then,
    /// when to judge them again at the latest).
    seen: HashMap<(String, String), (i64, i64)>,
    /// Sets whose manifest upload is under way (root key, set).
    manifests: HashSet<(String, String)>,
    /// Each set's ASC MHL check, for its last change then.
    pub(super) mhl: HashMap<(String, String), (i64, super::mhl::MhlState)>,
    /// The files each open set's last check read (reused by the next check
    /// while they are the same file).
    pub(super) digests: HashMap<(String, String), Vec<super::mhl::Hashed>>,
}

impl Sets {
    /// Every waiting set is judged afresh at the next look, not by a
    /// decision taken earlier.
    pub(super) fn judge_all_again(&mut self) {
        self.seen.clear();
    }
}

impl Agent {
    /// Judges every open set and acts on what was decided.
    pub(super) async fn advance_sets(&mut self) -> Result<(), AgentError> {
        if self.opts.dry_run {
            return Ok(());
        }
        let now = self.clock.wall_ms();
        for id in self.settings.root_ids() {
            let Some(rules) = self.settings.root(id).sets.clone() else {
                continue;
            };
            let key = self.key(id);
            for set in self.journal.open_sets(key.clone()).await? {
                // A waiting set is judged again only when one of its files
                // changed or a time it waits for has come: a farm with
                // hundreds of open shots is not re-read every second.
                let cache_key = (key.clone(), set.set_rel.clone());
                if set.state == "waiting"
                    && self
                        .sets
                        .seen
                        .get(&cache_key)
                        .is_some_and(|(changed, next)| *changed == set.last_change_at && now < *next)
                {
                    continue;
                }
                let files = self.journal.set_files(key.clone(), set.set_rel.clone()).await?;
                let dir = self.settings.root(id).path.join(&set.set_rel);
                if set.state == "manifest" {
                    self.send_manifest(id, &set, &files);
                    continue;
                }
                let settling = self.intake.settling_under(&dir);
                let (mut step, warning) = decide(&rules, &set, &files, settling, now);
                // A card with an ASC MHL history goes only once its files
                // match it.
                if set.state == "waiting" && matches!(step, SetStep::Release { phase: 0 }) {
                    if let Some(reason) = self.mhl_gate(id, &set, &files, true).await? {
                        step = SetStep::Wait { reason, stuck: false };
                    }
                } else if set.state == "waiting" && !settling {
                    // Its files are in: the check runs while the set waits
                    // for its trigger or quiet time (a verdict is said only
                    // once the set would go).
                    self.mhl_gate(id, &set, &files, false).await?;
                }
                // Files settling is the loop's own knowledge, not the
                // journal's: such a set is judged again at the next beat
                // (cached, it said "still settling" for 30 s after its
                // files had settled, e.g. after a reload re-offered them).
                if matches!(step, SetStep::Wait { .. }) && set.state == "waiting" && !settling {
                    let mut next = now + 30_000;
                    if rules.trigger.is_none() {
                        next = next.min(set.last_change_at + rules.quiet.as_millis() as i64);
                    }
                    if !set.stuck {
                        next = next.min(set.first_seen_at + rules.timeout.as_millis() as i64);
                    }
                    self.sets
                        .seen
                        .insert(cache_key, (set.last_change_at, next.max(now + 1)));
                } else {
                    self.sets.seen.remove(&cache_key);
                }
                if let Some(w) = warning {
                    tracing::warn!(
                        "set {}: {w}; it is uploaded anyway (sequence_gaps = \"warn\")",
                        dir.display()
                    );
                }
                match &step {
                    SetStep::Wait { reason, stuck } => {
                        if set.reason.as_deref() == Some(reason.as_str()) && !stuck {
                            continue;
                        }
                        if !stuck {
                            // Each new reason to hold the set, once.
                            tracing::info!("set {} is held: {reason}", dir.display());
                        }
                        if *stuck {
                            tracing::warn!("set {} is stuck: {reason}", dir.display());
                            let mut e = Event::new("stuck", now).path(&dir);
                            e.error = Some(reason.clone());
                            self.emit(e.with("set", set.set_rel.clone())).await?;
                        }
                    }
                    SetStep::Release { phase } => {
                        tracing::info!(
                            "set {}: {}{}",
                            dir.display(),
                            match *phase {
                                crate::config::PHASE_FILES => "it is complete; sending its files",
                                crate::config::PHASE_LAST =>
                                    "its files are up; sending the ones that go last (set_last)",
                                _ => "everything else is up; sending its trigger file",
                            },
                            if set.round > 1 {
                                format!(" (round {}: files changed after it was complete)", set.round)
                            } else {
                                String::new()
                            }
                        );
                        self.dispatch.look_again();
                    }
                    SetStep::Complete { .. } => {
                        let n = files.iter().filter(|f| f.state == State::Done).count();
                        tracing::info!("set {} is complete ({n} files)", dir.display());
                        let mut e = Event::new("set_complete", now).path(&dir);
                        e.remote_folder = Some(self.settings.root(id).remote_folder.clone());
                        self.emit(
                            e.with("set", set.set_rel.clone())
                                .with("files", n)
                                .with("round", set.round),
                        )
                        .await?;
                        self.hook_set_complete(id, &set.set_rel, n, None);
                    }
                    SetStep::Manifest => {}
                }
                let manifest_now = matches!(step, SetStep::Manifest);
                self.journal
                    .step_set(key.clone(), set.set_rel.clone(), step, now)
                    .await?;
                // Sent at once (a `--once` run must not end between the
                // decision and the upload).
                if manifest_now {
                    self.send_manifest(id, &set, &files);
                }
            }
        }
        Ok(())
    }

    /// The sets still open (waiting or in progress), with why, for the
    /// summary of a `--once` run.
    pub(super) async fn sets_left_open(&mut self) -> Result<Vec<(String, String)>, AgentError> {
        let mut open = Vec::new();
        for id in self.settings.root_ids() {
            if self.settings.root(id).sets.is_none() {
                continue;
            }
            for set in self.journal.open_sets(self.key(id)).await? {
                let why = match set.reason.as_deref() {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ => set.state.clone(),
                };
                open.push((set.set_rel.clone(), why));
            }
        }
        Ok(open)
    }

    /// Writes the set's manifest into the state dir and uploads it into
    /// the set's remote folder (one task per set at a time).
    fn send_manifest(&mut self, id: RootId, set: &SetRow, files: &[SetFile]) {
        let flight = (self.key(id), set.set_rel.clone());
        if self.sets.manifests.contains(&flight) || !self.gate.open() {
            return;
        }
        let w = self.settings.root(id).clone();
        // Each round's manifest its own name: a second round (files changed
        // after the set was complete) does not replace the first's.
        let base = set.set_rel.rsplit('/').next().unwrap_or(&set.set_rel);
        let name = if set.round > 1 {
            format!("{base}.manifest.r{}.json", set.round)
        } else {
            format!("{base}.manifest.json")
        };
        // Kept under the root's own path, so it is found by looking.
        let dir = self
            .settings
            .agent
            .state_dir
            .join("manifests")
            .join(readable_root(&w.path))
            .join(&set.set_rel);
        let local = dir.join(&name);
        let written = local.clone();
        let text = manifest(set, files);
        let rules = w.sets.clone();
        let json = rules.as_ref().is_some_and(|r| r.manifest);
        if json
            && let Err(e) =
                std::fs::create_dir_all(&dir).and_then(|()| crate::private::write(&local, text.as_bytes()))
        {
            tracing::error!("cannot write the manifest {}: {e}", local.display());
            return;
        }
        // The card's ASC MHL history, extended with our generation, goes
        // first (then the JSON manifest, whose upload completes the set).
        let history = self.history_job(id, set, files, &dir);
        let remote = match mapping::map(
            Path::new(&format!("{}/{name}", set.set_rel)),
            &w.remote_folder,
            w.subfolders,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("no remote name for the manifest of {}: {e}", set.set_rel);
                return;
            }
        };
        let job = Job {
            path: local,
            file_name: remote.name,
            folder: remote.folder,
            ..Job::companion(
                self.settings.agent.state_dir.join("manifests"),
                "application/json",
                &w.tags,
                &w.metadata,
                self.gate.hold_token(),
            )
        };
        self.sets.manifests.insert(flight.clone());
        let transfer = self.transfer.clone();
        self.tasks.spawn(async move {
            let observer: Arc<dyn Observer> = Arc::new(crate::upload::Quiet);
            let result = match history {
                Some(h) => h.run(&transfer, &observer).await,
                None => Ok(()),
            };
            let result = match result {
                Err(e) => Err(e),
                Ok(()) if json => transfer.send(&job, None, &observer).await.map(Some),
                Ok(()) => Ok(None),
            };
            TaskResult::Manifest {
                root: flight.0,
                set_rel: flight.1,
                local: written,
                result: Box::new(result),
            }
        });
    }

    /// A manifest upload ended: the set is complete, or tried again later.
    pub(super) async fn manifest_sent(
        &mut self,
        root: String,
        set_rel: String,
        local: PathBuf,
        result: Result<Option<Outcome>, UploadError>,
    ) -> Result<(), AgentError> {
        self.sets.manifests.remove(&(root.clone(), set_rel.clone()));
        let Some(id) = self.roots.of_key(&root) else {
            return Ok(());
        };
        let dir = self.settings.root(id).path.join(&set_rel);
        match result {
            Ok(None) => {
                // Only the ASC MHL history went (no JSON manifest).
                let now = self.clock.wall_ms();
                let files = self.journal.set_files(root.clone(), set_rel.clone()).await?;
                let n = files.iter().filter(|f| f.state == State::Done).count();
                let step = SetStep::Complete {
                    manifest_file_no: None,
                };
                self.journal.step_set(root, set_rel.clone(), step, now).await?;
                tracing::info!("set {} is complete ({n} files)", dir.display());
                let mut e = Event::new("set_complete", now).path(&dir);
                e.remote_folder = Some(self.settings.root(id).remote_folder.clone());
                self.emit(e.with("set", set_rel.clone()).with("files", n)).await?;
                self.hook_set_complete(id, &set_rel, n, None);
            }
            Ok(Some(o)) => {
                let now = self.clock.wall_ms();
                tracing::info!(
                    "set {}: manifest uploaded → {} (file_no {})",
                    dir.display(),
                    mapping::remote_path(&o.folder, &o.name),
                    o.file.file_no
                );
                let files = self.journal.set_files(root.clone(), set_rel.clone()).await?;
                let n = files.iter().filter(|f| f.state == State::Done).count();
                let step = SetStep::Complete {
                    manifest_file_no: Some(o.file.file_no.clone()),
                };
                self.journal.step_set(root, set_rel.clone(), step, now).await?;
                let mut e = Event::new("set_complete", now).path(&dir);
                e.remote_folder = Some(o.folder.clone());
                e.name = Some(o.name.clone());
                e.file_no = Some(o.file.file_no.clone());
                self.emit(e.with("set", set_rel.clone()).with("files", n)).await?;
                self.hook_set_complete(id, &set_rel, n, Some((&local, &o)));
            }
            Err(UploadError::Paused) => {}
            Err(e) => tracing::warn!(
                "set {}: the manifest was not uploaded ({e}); trying again",
                dir.display()
            ),
        }
        Ok(())
    }
}
