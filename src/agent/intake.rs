//! What comes in: watcher hints, scans folder by folder, settle decisions,
//! and the journal's verdict on each finished file.

use super::*;
use crate::fileid::FileId;

/// A walk of root `root` (or a folder in it) on a blocking thread, handing
/// over one folder's files at a time.
pub(super) struct Scan {
    root: RootId,
    folders: mpsc::Receiver<scan::Folder>,
}

/// At most this many paths settle at once because of scans: a root of
/// 100,000 new files is taken in as the earlier ones settle, so memory holds
/// a few thousand paths, not the whole root. Watcher events are not held back.
pub(super) const SETTLING_CAP: usize = 5_000;
/// How many settled (device, inode) pairs wait for their upload in memory.
pub(super) const SETTLED_NODES_CAP: usize = 100_000;

/// What intake holds between two calls: the files settling, the walks
/// under way, files put off, and what it learnt of settled files before
/// their upload starts. A reload starts it afresh ([`Intake::reset`]).
pub(super) struct Intake {
    settler: Settler,
    /// Walks under way, oldest first; the loop takes their folders one at a
    /// time while fewer than [`SETTLING_CAP`] paths are settling.
    scans: std::collections::VecDeque<Scan>,
    /// New folders to scan once more, and when.
    rescan_soon: Vec<(RootId, PathBuf, Instant)>,
    /// Files put off by `min_interval` (they keep changing), and when they
    /// settle again. Shown as growing.
    deferred: HashMap<PathBuf, (RootId, Instant)>,
    /// (root, folder, reason) of the skip decisions already logged.
    skip_noted: HashSet<(RootId, String, String)>,
    /// Per root with `existing = "skip"`: when it was first watched (unix ms).
    first_watched: HashMap<RootId, i64>,
    /// (device, inode) each queued path had when it settled: the descriptor
    /// an upload opens must be that file, else it goes back to settling.
    /// Bounded ([`SETTLED_NODES_CAP`]); past it (or after a restart) the
    /// size and mtime alone are compared, as before.
    settled_nodes: HashMap<PathBuf, (u64, u64)>,
    /// Held files hashed at once (the rest wait their turn).
    prehashing: Arc<tokio::sync::Semaphore>,
}

impl Intake {
    pub(super) fn new() -> Intake {
        Intake {
            settler: Settler::new(),
            scans: Default::default(),
            rescan_soon: Vec::new(),
            deferred: HashMap::new(),
            skip_noted: HashSet::new(),
            first_watched: HashMap::new(),
            settled_nodes: HashMap::new(),
            prehashing: Arc::new(tokio::sync::Semaphore::new(2)),
        }
    }

    /// After a reload: settling starts again (a file is never taken as
    /// finished sooner than before) and walks in the old roots' numbering
    /// end. What is keyed by path alone (settled identities) stays.
    pub(super) fn reset(&mut self) {
        self.settler = Settler::new();
        self.first_watched.clear();
        // Keyed by RootId, which a reload renumbers: files put off by
        // min_interval are found again by the rescan that follows.
        self.deferred.clear();
        self.skip_noted.clear();
        self.scans.clear();
        self.rescan_soon.clear();
    }

    /// Nothing settling and no walk under way.
    pub(super) fn idle(&self) -> bool {
        self.settler.is_empty() && self.scans.is_empty()
    }

    /// A walk has a folder to hand over and there is room to settle it.
    pub(super) fn can_take_folder(&self) -> bool {
        !self.scans.is_empty() && self.settler.len() < SETTLING_CAP
    }

    /// The next folder of the oldest scan under way, or None when a scan
    /// has just ended (so the loop looks again at whether `--once` is
    /// done); never resolves when no scan is under way.
    pub(super) async fn next_folder(&mut self) -> Option<(RootId, scan::Folder)> {
        let Some(front) = self.scans.front_mut() else {
            return std::future::pending().await;
        };
        match front.folders.recv().await {
            Some(folder) => Some((front.root, folder)),
            None => {
                self.scans.pop_front();
                None
            }
        }
    }

    /// When a settling file is next due to be looked at.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.settler.next_deadline()
    }

    /// Files still changing after `after`, forgotten (`--once` leaves them
    /// for the next run).
    pub(super) fn give_up(&mut self, now: Instant, after: Duration) -> Vec<PathBuf> {
        let paths = self.settler.changing_longer_than(now, after);
        for p in &paths {
            self.settler.forget(p);
        }
        paths
    }

    /// Root `id`'s files settling and growing (put off ones count as growing).
    pub(super) fn counts_under(&self, id: RootId, now: Instant) -> (usize, usize) {
        let (settling, growing) = self.settler.counts_under(id, now);
        let put_off = self.deferred.values().filter(|(root, _)| *root == id).count();
        (settling, growing + put_off)
    }

    /// Some file under `dir` is still settling.
    pub(super) fn settling_under(&self, dir: &Path) -> bool {
        self.settler.any_under(dir)
    }

    /// Settles `path` again from the start (it changed, or its upload found
    /// another file there).
    pub(super) fn settle_again(&mut self, id: RootId, path: &Path, settle: Duration, now: Instant) {
        self.settler.touch(id, path, settle, now);
    }

    /// Offers `path` to settle (a file whose after-upload step must run again).
    pub(super) fn offer(&mut self, id: RootId, path: &Path, settle: Duration, now: Instant) {
        self.settler.offer(id, path, settle, now);
    }

    /// The (device, inode) `path` had when it settled, if known (taken: an
    /// upload checks it once).
    pub(super) fn take_settled_node(&mut self, path: &Path) -> Option<(u64, u64)> {
        self.settled_nodes.remove(path)
    }

    /// First-watch times are read again from the journal (the clock was set
    /// back and they were clamped).
    pub(super) fn forget_first_watched(&mut self) {
        self.first_watched.clear();
    }
}

impl Agent {
    /// Roots with `existing = "skip"` record when they were first watched
    /// (before their first scan, so what is there now counts as there before).
    pub(super) async fn note_first_watch(&mut self) -> Result<(), AgentError> {
        if self.opts.dry_run {
            return Ok(());
        }
        for id in self.settings.root_ids() {
            if self.settings.root(id).existing == crate::config::Existing::Skip {
                let t = self
                    .journal
                    .first_watched(self.key(id), self.clock.wall_ms())
                    .await?;
                self.intake.first_watched.insert(id, t);
            }
        }
        Ok(())
    }

    /// Starts a walk of root `id` (or a folder in it). Its folders come back
    /// to the loop one at a time ([`Self::scanned_folder`]), so memory and
    /// time follow the folders scanned, not the root's size.
    pub(super) fn scan(&mut self, id: RootId, dir: Option<PathBuf>) {
        let w = self.settings.root(id).clone();
        let dir = dir.unwrap_or_else(|| w.path.clone());
        let (tx, rx) = mpsc::channel::<scan::Folder>(2);
        tokio::task::spawn_blocking(move || {
            scan::walk_folders(&w, &dir, |folder| tx.blocking_send(folder).is_ok())
        });
        self.intake.scans.push_back(Scan {
            root: id,
            folders: rx,
        });
    }

    /// One scanned folder: files already uploaded unchanged are skipped on
    /// the spot (checked against that folder's journal records only), the
    /// rest go to settle.
    pub(super) async fn scanned_folder(
        &mut self,
        id: RootId,
        folder: scan::Folder,
    ) -> Result<(), AgentError> {
        if folder.files.is_empty() {
            return Ok(());
        }
        let settle = self.settings.root(id).settle;
        let done = self.journal.done_in(self.key(id), folder.prefix).await?;
        let now = self.clock.now();
        for f in folder.files {
            if done.unchanged(&f.rel, &f.id) {
                self.reporter.skipped();
                continue;
            }
            self.intake.settler.offer(id, &f.path, settle, now);
        }
        Ok(())
    }

    /// A folder that just appeared: scanned now, and once more a moment
    /// later, when its own watch is surely in place (a file written between
    /// the first scan and the watch would otherwise wait for the full rescan).
    pub(super) fn scan_new_folder(&mut self, id: RootId, dir: PathBuf) {
        self.scan(id, Some(dir.clone()));
        if !self.opts.once {
            let at = self.clock.now() + NEW_FOLDER_RESCAN;
            self.intake.rescan_soon.push((id, dir, at));
        }
    }

    /// Scans the new folders whose second look is due.
    pub(super) fn rescan_new_folders(&mut self) {
        let now = self.clock.now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.intake.rescan_soon)
            .into_iter()
            .partition(|(_, _, at)| *at <= now);
        self.intake.rescan_soon = later;
        for (id, dir, _) in due {
            self.scan(id, Some(dir));
        }
    }

    pub(super) async fn hint(&mut self, h: Hint) -> Result<(), AgentError> {
        self.reporter.file_event(self.clock.wall_ms());
        match h {
            Hint::Rescan(id) => {
                tracing::info!(
                    "the watcher lost events (overflow or error); rescanning {}",
                    self.settings.root(id).path.display()
                );
                self.scan(id, None);
                Ok(())
            }
            Hint::Dir(id, dir) => {
                self.scan_new_folder(id, dir);
                Ok(())
            }
            Hint::Path(id, path) if path == self.settings.root(id).path => {
                // An event on the root itself (deleted, moved): its watch may be
                // dead even if a new folder already stands there (inode numbers
                // get reused), so the next heartbeat re-watches and rescans it.
                self.roots.recheck(id);
                Ok(())
            }
            Hint::Path(id, path) => {
                let w = self.settings.root(id);
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    // A folder moved or renamed into the root.
                    if path.starts_with(&w.path) && path != w.path {
                        self.scan_new_folder(id, path);
                    }
                    return Ok(());
                }
                match scan::relative(w, &path) {
                    Ok(_) => self.intake.settler.touch(id, &path, w.settle, self.clock.now()),
                    Err(Rejected::NotUtf8(p)) => {
                        tracing::warn!(
                            "skipping {}: its name is not valid UTF-8; rename it to upload it",
                            p.display()
                        )
                    }
                    Err(_) => {}
                }
                Ok(())
            }
        }
    }

    pub(super) async fn poll_settle(&mut self) -> Result<(), AgentError> {
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
    pub(super) async fn stable(&mut self, id: RootId, path: PathBuf, now: FileId) -> Result<(), AgentError> {
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
                            "files in {} are left out: {why}; each is uploaded once it changes (this is said once per folder)",
                            path.parent().unwrap_or(&path).display()
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
    pub(super) fn offer_deferred(&mut self) {
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
    /// older than `max_age`, or (with `existing = "skip"`) there before the
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

    pub(super) async fn enqueue(
        &mut self,
        id: RootId,
        root: String,
        rel: String,
        fp: Fingerprint,
    ) -> Result<(), AgentError> {
        if self.opts.dry_run {
            let w = self.settings.root(id);
            if let Ok(r) = mapping::map(Path::new(&rel), &w.remote_folder, w.subfolders) {
                tracing::info!(
                    "would upload {} → {}/{} ({} bytes)",
                    Path::new(&root).join(&rel).display(),
                    r.folder,
                    r.name,
                    fp.size
                );
            }
            self.reporter.would_upload();
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
            if held {
                self.prehash(id, root, rel, path);
            }
        }
        self.queue_dirty = true;
        Ok(())
    }
}
