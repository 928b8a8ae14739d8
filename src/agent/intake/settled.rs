//! Settled files: the settler's decisions, files that keep changing, the
//! start-from-now filters (`max_age`, `existing = "skip"`), and the
//! journal's verdict on each file that settled.

use super::*;

/// Why a card's `ascmhl/` files are not sent one by one.
const MHL_WITH_SET: &str = "the card's ASC MHL history, sent whole with our generation once the set is complete (set_mhl = \"write\")";

impl Agent {
    pub(in crate::agent) async fn poll_settle(&mut self) -> Result<(), AgentError> {
        let fs = Fs {
            roots: self.settings.watches.iter().map(|w| w.path.as_path()).collect(),
        };
        let decisions = self.intake.settler.poll(self.clock.now(), &fs);
        drop(fs);
        for d in decisions {
            match d {
                Decision::Gone { root, path } | Decision::NotAFile { root, path } => {
                    self.intake.settled_nodes.remove(&path);
                    if let Ok(rel) = scan::relative(self.settings.root(root), &path) {
                        self.journal.mark_gone(self.key(root), rel).await?;
                    }
                }
                Decision::Stable {
                    root,
                    path,
                    size,
                    mtime_ns,
                    node,
                    ctime_ns,
                } => {
                    if self.intake.settled_nodes.len() < SETTLED_NODES_CAP {
                        self.intake.settled_nodes.insert(path.clone(), node);
                    }
                    let now = FileId {
                        dev: node.0,
                        ino: node.1,
                        size,
                        mtime_ns,
                        ctime_ns,
                    };
                    self.stable(root, path, now).await?;
                }
            }
        }
        Ok(())
    }

    /// A finished file: the journal's verdict says whether it needs uploading.
    pub(in crate::agent) async fn stable(
        &mut self,
        id: RootId,
        path: PathBuf,
        now: FileId,
    ) -> Result<(), AgentError> {
        let fp = now.fingerprint();
        let node = self.intake.settled_nodes.remove(&path);
        let Ok(rel) = scan::relative(self.settings.root(id), &path) else {
            return Ok(());
        };
        let root = self.key(id);
        match self.journal.verdict(root.clone(), rel.clone(), now).await? {
            Verdict::Unchanged => {
                self.reporter.skipped();
                Ok(())
            }
            Verdict::HashFirst(row) => {
                // Same size, but maybe another version (another mtime, inode
                // or ctime): hash before deciding. A `touch`, `chmod` or an
                // identical copy is not a change; other content is uploaded.
                let anchor = self.settings.root(id).path.clone();
                self.tasks.spawn(async move {
                    let same = match crate::anchor::hash(&anchor, &path).await {
                        Ok((before, sha, after))
                            if before == after && row.done_sha256.as_deref() == Some(sha.as_str()) =>
                        {
                            Some(after)
                        }
                        _ => None,
                    };
                    TaskResult::Touched { row: *row, fp, same }
                });
                Ok(())
            }
            Verdict::Queued => Ok(()),
            Verdict::Upload => match self.left_out(id, &path, &root, &rel, fp).await? {
                Some(why) => {
                    tracing::debug!("{} is skipped: {why}", path.display());
                    // Once per folder and reason, where people look.
                    let folder = Path::new(&rel)
                        .parent()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if self.intake.skip_noted.len() < 10_000
                        && self.intake.skip_noted.insert((id, folder, why.clone()))
                    {
                        tracing::info!(
                            "files in {} are left out: {why}{} (this is said once per folder)",
                            path.parent().unwrap_or(&path).display(),
                            if why == MHL_WITH_SET {
                                ""
                            } else {
                                "; each is uploaded once it changes"
                            }
                        );
                    }
                    self.reporter.skipped();
                    if self.opts.dry_run {
                        return Ok(());
                    }
                    Ok(self.journal.record_skipped(root, rel, fp).await?)
                }
                None => {
                    if self.keeps_changing(id, &path, &root, &rel).await? {
                        return Ok(());
                    }
                    if let Some(node) = node
                        && self.intake.settled_nodes.len() < SETTLED_NODES_CAP
                    {
                        self.intake.settled_nodes.insert(path.clone(), node);
                    }
                    self.enqueue(id, root, rel, fp).await
                }
            },
        }
    }

    /// `min_interval`: a file uploaded twice within it keeps changing (a
    /// log, a file appended to): its next version waits until that long
    /// after the last upload (shown `growing` meanwhile) instead of going
    /// at every settle. True when it was put off.
    async fn keeps_changing(
        &mut self,
        id: RootId,
        path: &Path,
        root: &str,
        rel: &str,
    ) -> Result<bool, AgentError> {
        let Some(gap) = self.settings.root(id).min_interval else {
            return Ok(false);
        };
        if self.intake.deferred.len() >= SETTLED_NODES_CAP && !self.intake.deferred.contains_key(path) {
            return Ok(false);
        }
        let gap_ms = gap.as_millis() as i64;
        let recent = self
            .journal
            .recent_uploads(root.to_string(), rel.to_string(), 2)
            .await?;
        let now = self.clock.wall_ms();
        let (Some(&last), Some(&before)) = (recent.first(), recent.get(1)) else {
            return Ok(false);
        };
        if now - last >= gap_ms || last - before >= 2 * gap_ms {
            return Ok(false);
        }
        let due_ms = last + gap_ms;
        let due = self.clock.now() + Duration::from_millis((due_ms - now).max(0) as u64);
        let shown = crate::clock::rfc3339_ms(due_ms);
        if self
            .intake
            .deferred
            .insert(path.to_path_buf(), (id, due))
            .is_none()
        {
            let next = if self.opts.once {
                format!("left for a run after {shown}")
            } else {
                format!("its next version goes at {shown}")
            };
            tracing::info!(
                "{} keeps changing (uploaded at {} and {}); {next} (min_interval = {})",
                path.display(),
                crate::clock::rfc3339_ms(before),
                crate::clock::rfc3339_ms(last),
                humantime::format_duration(gap)
            );
        }
        Ok(true)
    }

    /// Files put off by `min_interval` whose time has come settle again.
    pub(in crate::agent) fn offer_deferred(&mut self) {
        let now = self.clock.now();
        let due: Vec<PathBuf> = self
            .intake
            .deferred
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in due {
            if let Some((id, _)) = self.intake.deferred.remove(&p) {
                let settle = self.settings.root(id).settle;
                self.intake.settler.offer(id, &p, settle, now);
            }
        }
    }

    /// Hashes a held file while its set waits (two at a time), so the
    /// upload need not read it twice once the set is ready.
    fn prehash(&mut self, id: RootId, root: String, rel: String, path: PathBuf) {
        let permits = self.intake.prehashing.clone();
        let anchor = self.settings.root(id).path.clone();
        self.tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            // One descriptor, opened beneath the root: its identity before
            // and after the read, and the path's after it, must agree.
            let hashed = match crate::anchor::hash(&anchor, &path).await {
                Ok((b, sha, a)) if a == b && crate::anchor::file_id(&anchor, &path).ok() == Some(b) => {
                    Some((b, sha))
                }
                _ => None,
            };
            TaskResult::Prehashed { root, rel, hashed }
        });
    }

    /// Why a new or changed file is left out by its root's policy, if it is:
    /// outside `min_size`..`max_size`, older than `max_age`, or (with `existing = "skip"`) there before the
    /// root was first watched and never recorded since. "There before" is
    /// judged by ctime, which a copy or a move into the folder always sets
    /// anew (an mtime can be carried over by `cp -p` or `rsync -a`).
    async fn left_out(
        &mut self,
        id: RootId,
        path: &Path,
        root: &str,
        rel: &str,
        fp: Fingerprint,
    ) -> Result<Option<String>, AgentError> {
        let w = self.settings.root(id);
        // With set_mhl = "write" the card's history is ours to extend and
        // send whole once the set is complete (file by file, each of our
        // own writes would start the set again).
        if let Some(rules) = w.sets.as_ref().filter(|r| r.mhl == crate::config::Mhl::Write)
            && rules
                .place(rel)
                .is_some_and(|(_, inner)| inner.starts_with("ascmhl/"))
        {
            return Ok(Some(MHL_WITH_SET.into()));
        }
        // One reason per root and bound (noted once per folder, not per file).
        if let Some(min) = w.min_size.filter(|min| fp.size < *min) {
            return Ok(Some(format!(
                "smaller than {} (min_size)",
                crate::units::format_bytes(min)
            )));
        }
        if let Some(max) = w.max_size.filter(|max| fp.size > *max) {
            return Ok(Some(format!(
                "larger than {} (max_size)",
                crate::units::format_bytes(max)
            )));
        }
        if let Some(age) = w.max_age {
            let cutoff = i128::from(self.clock.wall_ms()) * 1_000_000 - age.as_nanos() as i128;
            if fp.mtime_ns < cutoff {
                return Ok(Some(format!(
                    "modified more than {} ago (max_age)",
                    humantime::format_duration(age)
                )));
            }
        }
        if w.existing != crate::config::Existing::Skip {
            return Ok(None);
        }
        let since = match self.intake.first_watched.get(&id) {
            Some(t) => *t,
            None => {
                let t = self
                    .journal
                    .first_watched(root.to_string(), self.clock.wall_ms())
                    .await?;
                self.intake.first_watched.insert(id, t);
                t
            }
        };
        let Ok(file) = crate::anchor::file_id(&w.path, path) else {
            return Ok(None);
        };
        if file.ctime_ns >= i128::from(since) * 1_000_000 {
            return Ok(None);
        }
        // A file recorded since (uploaded, or skipped and now changed) is
        // judged by its record, not by when it appeared.
        if self
            .journal
            .lookup(root.to_string(), rel.to_string())
            .await?
            .is_some()
        {
            return Ok(None);
        }
        Ok(Some(format!(
            "there before the folder was first watched, {} (existing = \"skip\")",
            crate::clock::rfc3339_ms(since)
        )))
    }

    pub(in crate::agent) async fn enqueue(
        &mut self,
        id: RootId,
        root: String,
        rel: String,
        fp: Fingerprint,
    ) -> Result<(), AgentError> {
        // Asked only where it matters (one query per file otherwise saved).
        let before = if self.opts.dry_run || self.settings.root(id).immutable {
            self.journal.lookup(root.clone(), rel.clone()).await?
        } else {
            None
        };
        let uploaded_before = before.as_ref().is_some_and(|r| r.done_size.is_some());
        if self.settings.root(id).immutable && uploaded_before {
            return self.changed_but_immutable(root, rel, fp).await;
        }
        if self.opts.dry_run {
            // A version the journal has a record of is a change; else new.
            let changed = before.is_some();
            let w = self.settings.root(id);
            if let Ok(r) = mapping::map(Path::new(&rel), &w.remote_folder, w.subfolders) {
                tracing::info!(
                    "would upload ({}) {} → {} ({})",
                    if changed { "changed" } else { "new" },
                    Path::new(&root).join(&rel).display(),
                    mapping::remote_path(&r.folder, &r.name),
                    crate::units::format_bytes(fp.size)
                );
            }
            self.reporter.would_upload(changed, fp.size);
            return Ok(());
        }
        let w = self.settings.root(id);
        // With random_prefix the service gives every file its own name.
        let key = mapping::map(Path::new(&rel), &w.remote_folder, w.subfolders)
            .ok()
            .filter(|_| !w.random_prefix)
            .map(|r| r.key(self.settings.api.case_insensitive_remote));
        let path = Path::new(&root).join(&rel);
        let set = w.sets.as_ref().and_then(|rules| {
            rules
                .place(&rel)
                .map(|(set, inner)| (set.to_string(), rules.phase(inner)))
        });
        let held = set.is_some();
        // A card checked against its ASC MHL history is read by the check
        // (sha256 included), not twice.
        let mhl_reads = set.as_ref().is_some_and(|(set_rel, _)| {
            w.sets.as_ref().is_some_and(|r| {
                r.mhl_new
                    || (r.mhl != crate::config::Mhl::Off
                        && crate::anchor::stat(&w.path, &w.path.join(set_rel).join("ascmhl")).is_ok())
            })
        });
        if let Some(first) = self
            .journal
            .enqueue(root.clone(), rel.clone(), fp, key, set)
            .await?
        {
            self.reporter.not_uploaded();
            tracing::error!(
                "{} is not uploaded: its remote name is already taken by {first} (the names differ only by \
                 Unicode normalisation or case); rename one of them",
                path.display()
            );
        } else {
            self.reporter.send(
                &crate::control::Event::new("settled", self.clock.wall_ms())
                    .path(&path)
                    .sized(fp.size),
            );
            if held && !mhl_reads {
                self.prehash(id, root, rel, path);
            }
        }
        self.dispatch.look_again();
        Ok(())
    }

    /// `immutable = true`: a file uploaded before has changed. It is not
    /// sent; this version is recorded failed with why (so `status`,
    /// `history` and a `failed` event say so) until `retry` sends it.
    async fn changed_but_immutable(
        &mut self,
        root: String,
        rel: String,
        fp: Fingerprint,
    ) -> Result<(), AgentError> {
        let path = Path::new(&root).join(&rel);
        let why = "changed after it was uploaded; immutable = true keeps the version uploaded \
                   (`autorender-sync retry PATH` sends this one anyway)";
        if self.opts.dry_run {
            tracing::info!("would not upload (changed, immutable) {}", path.display());
            return Ok(());
        }
        self.journal
            .enqueue(root.clone(), rel.clone(), fp, None, None)
            .await?;
        if let Some(row) = self.journal.lookup(root, rel).await? {
            self.journal.record_failure(row.id, why.to_string(), 1, 0).await?;
        }
        tracing::error!(path = %path.display(), "{}: {why}", path.display());
        self.reporter.not_uploaded();
        let mut e = crate::control::Event::new("failed", self.clock.wall_ms())
            .path(&path)
            .sized(fp.size);
        e.error = Some(why.to_string());
        self.emit(e).await
    }
}
