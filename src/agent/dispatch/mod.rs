//! What goes out: due files become upload tasks; each outcome becomes one
//! journal transition; the service-unreachable and key-rejected pauses.

use super::*;
use crate::control::Event;

mod outcome;

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
        /// The manifest written into the state dir.
        local: PathBuf,
        /// None: no JSON manifest (only the ASC MHL history went).
        result: Box<Result<Option<Outcome>, UploadError>>,
    },
    /// A post-upload hook ended.
    Hook(crate::hooks::Ran),
    /// A set's ASC MHL check ended (for the set as it was at `change`).
    MhlChecked {
        root: String,
        set_rel: String,
        change: i64,
        found: Box<super::mhl::MhlFound>,
    },
    /// A `mirror_deletes` round of the root with this journal key ended.
    Deletes {
        key: String,
        round: Result<super::deletes::Round, JournalError>,
    },
}

/// What dispatch keeps: the uploads in flight (and which of them are in
/// the small files' lane), what `--once` has tried, records whose root left
/// the config, how the queue is served, and whether it is worth asking the
/// journal for due files again.
pub(super) struct Dispatch {
    inflight: HashSet<i64>,
    /// Those of `inflight` in the small files' lane.
    lane: HashSet<i64>,
    /// `--once`: files already tried in this run (not tried twice).
    /// Shared with the journal's queue query without copying (copied on
    /// write only if a query still holds it), so a run of 100,000 files
    /// does not rebuild this set for every upload started.
    attempted: Arc<HashSet<i64>>,
    /// Queued files whose watch root is no longer configured.
    orphans: HashSet<i64>,
    /// The queue may hold due files no upload has started for.
    dirty: bool,
    /// How the queue is served (order, priorities), from the settings.
    serving: crate::journal::Serving,
    /// Uploads in flight and their progress.
    flights: Flights,
    /// How long an upload may send nothing before it is stalled.
    stall_after: Duration,
    /// The uploads reported stalled (each once, until bytes move again).
    stalled: HashSet<PathBuf>,
    /// Bytes of the uploads started in this run (for `--max-transfer`).
    started_bytes: u64,
    /// `--max-transfer` is reached: no new upload starts.
    spent: bool,
}

impl Dispatch {
    pub(super) fn new(settings: &Settings) -> Dispatch {
        Dispatch {
            inflight: HashSet::new(),
            lane: HashSet::new(),
            attempted: Arc::new(HashSet::new()),
            orphans: HashSet::new(),
            dirty: true,
            serving: serving_of(settings),
            flights: Flights::default(),
            stall_after: settings.agent.stall_after,
            stalled: HashSet::new(),
            started_bytes: 0,
            spent: false,
        }
    }

    /// After a reload: the new order and priorities, and records of roots
    /// that came back are asked for again. Uploads in flight go on.
    pub(super) fn adopt(&mut self, settings: &Settings) {
        self.serving = serving_of(settings);
        self.stall_after = settings.agent.stall_after;
        self.orphans.clear();
        self.dirty = true;
    }

    /// Something may have made files due (a file queued, a pause ended,
    /// another process's `retry`): ask the journal at the next turn.
    pub(super) fn look_again(&mut self) {
        self.dirty = true;
    }

    /// Nothing left to ask the journal for until something changes.
    pub(super) fn settled(&self) -> bool {
        !self.dirty
    }

    /// How many uploads are in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The uploads in flight and their progress.
    pub(super) fn views(&self, now: Instant) -> Vec<FlightView> {
        self.flights.views(now, self.stall_after)
    }

    /// Bytes every upload has sent since the agent started.
    pub(super) fn total_sent(&self) -> u64 {
        self.flights.total_sent()
    }

    /// The uploads that stalled since the last call, and those that were
    /// stalled and send again (by path).
    pub(super) fn stall_news(&mut self, now: Instant) -> (Vec<FlightView>, Vec<PathBuf>) {
        let views = self.views(now);
        let fresh: Vec<FlightView> = views
            .iter()
            .filter(|v| v.stalled_s.is_some() && !self.stalled.contains(&v.path))
            .cloned()
            .collect();
        let still: HashSet<PathBuf> = views
            .iter()
            .filter(|v| v.stalled_s.is_some())
            .map(|v| v.path.clone())
            .collect();
        let moving: Vec<PathBuf> = self
            .stalled
            .iter()
            .filter(|p| !still.contains(*p) && views.iter().any(|v| &v.path == *p))
            .cloned()
            .collect();
        self.stalled = still;
        (fresh, moving)
    }
}

/// How the queue is served under `settings`: its order, and each root
/// whose priority is not 0.
fn serving_of(settings: &Settings) -> crate::journal::Serving {
    crate::journal::Serving {
        order: settings.agent.order,
        priorities: settings
            .watches
            .iter()
            .filter(|w| w.priority != 0)
            .map(|w| (w.key(), w.priority))
            .collect(),
        max_size: None,
    }
}

impl Agent {
    /// Starts due uploads up to `concurrent_files`. Returns when the next
    /// backed-off file becomes due, if any.
    pub(super) async fn fill(&mut self) -> Result<Option<Instant>, AgentError> {
        if self.opts.dry_run || !self.gate.open() || self.dispatch.spent {
            self.dispatch.dirty = false;
            return Ok(None);
        }
        if self.dispatch.dirty {
            let (general, lane) = self.free_slots();
            let mut dirty = false;
            for (small_only, free) in [(false, general), (true, lane)] {
                if free == 0 {
                    continue;
                }
                let skip: Vec<i64> = self
                    .dispatch
                    .inflight
                    .iter()
                    .chain(&self.dispatch.orphans)
                    .copied()
                    .collect();
                let tried = self.opts.once.then(|| self.dispatch.attempted.clone());
                let mut serving = self.dispatch.serving.clone();
                if small_only {
                    serving.max_size = Some(self.settings.agent.direct_upload_max);
                }
                let rows = self
                    .journal
                    .due(self.clock.wall_ms(), free, skip, tried, serving)
                    .await?;
                dirty |= rows.len() == free;
                for row in rows {
                    // `--max-transfer`: a file starts while less than the
                    // limit has been started (as rclone's soft cutoff).
                    if let Some(max) = self.opts.max_transfer
                        && self.dispatch.started_bytes >= max
                    {
                        tracing::info!(
                            "max-transfer reached ({} started of {}): no new upload starts in this run; the files \
                             still queued go at the next",
                            crate::units::format_bytes(self.dispatch.started_bytes),
                            crate::units::format_bytes(max)
                        );
                        self.dispatch.spent = true;
                        self.reporter.transfer_limit_reached();
                        dirty = false;
                        break;
                    }
                    self.dispatch.started_bytes += row.size.max(0) as u64;
                    let id = row.id;
                    self.start_upload(row);
                    // (A row whose root left the config is not started.)
                    if small_only && self.dispatch.inflight.contains(&id) {
                        self.dispatch.lane.insert(id);
                    }
                }
            }
            self.dispatch.dirty = dirty && !self.dispatch.spent;
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
    /// `concurrent_files` ≥ 2 and direct uploads on, one slot (as many as
    /// the adaptive budget allows requests in flight, when it adapts) only
    /// takes files up to `direct_upload_max`, so a long upload never holds
    /// back the small files queued behind it, and small files on a
    /// high-latency link go many at once.
    fn free_slots(&self) -> (usize, usize) {
        let all = self.settings.agent.concurrent_files;
        if all < 2 || self.settings.agent.direct_upload_max == 0 {
            return (all.saturating_sub(self.dispatch.inflight.len()), 0);
        }
        let in_lane = self.dispatch.lane.len();
        let general = (all - 1).saturating_sub(self.dispatch.inflight.len().saturating_sub(in_lane));
        let width = self.transfer.lane_width().max(1);
        (general, width.saturating_sub(in_lane))
    }

    pub(super) fn start_upload(&mut self, row: FileRow) {
        let Some(id) = self.root_of(&row) else {
            // The root left the config: leave the record alone (and stop asking for it).
            self.dispatch.orphans.insert(row.id);
            return;
        };
        self.dispatch.inflight.insert(row.id);
        if self.opts.once {
            Arc::make_mut(&mut self.dispatch.attempted).insert(row.id);
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
        let flight =
            self.dispatch
                .flights
                .begin(row.id, row.local_path(), row.size.max(0) as u64, self.clock.now());
        let settled = self.intake.take_settled_node(&row.local_path());
        let fleet = self.journal.fleet().is_some();
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
                // A random prefix gives every file its own remote name; a
                // fleet's done records are shared, not this node's to move.
                renames: w.mirror_renames && !w.random_prefix && !fleet,
            };
            if let Err(e) = journal.set_state(row.id, State::Uploading).await {
                let err = UploadError::Checkpoint(crate::upload::CheckpointError::store(e));
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
                local,
                result,
            } => {
                self.manifest_sent(root, set_rel, local, *result).await?;
            }
            TaskResult::Hook(ran) => self.hook_ran(ran).await?,
            TaskResult::MhlChecked {
                root,
                set_rel,
                change,
                found,
            } => self.mhl_checked(root, set_rel, change, *found).await?,
            TaskResult::Deletes { key, round } => self.deletes_done(key, round).await?,
            TaskResult::NotReady { row, gone } => {
                self.dispatch.inflight.remove(&row.id);
                self.dispatch.lane.remove(&row.id);
                self.dispatch.flights.end(row.id);
                if gone {
                    self.journal.mark_gone(row.root.clone(), row.rel.clone()).await?;
                } else {
                    self.back_to_settling(&row).await?;
                }
            }
            TaskResult::Upload { row, result, fp } => {
                self.dispatch.inflight.remove(&row.id);
                self.dispatch.lane.remove(&row.id);
                let took =
                    (self.dispatch.flights.end(row.id)).map(|began| self.clock.now().duration_since(began));
                if let (Some(t), Ok(o)) = (took, result.as_ref())
                    && o.adopted.is_none()
                {
                    self.reporter.took(t.as_secs_f64());
                }
                self.dispatch.dirty = true;
                self.upload_result(row, *result, fp, took, shutdown).await?;
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
}
