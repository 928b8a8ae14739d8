//! What comes in: watcher hints, scans folder by folder, settle decisions,
//! and the journal's verdict on each finished file.

use super::*;

/// A walk of root `root` (or a folder in it) on a blocking thread, handing
/// over one folder's files at a time.
pub(super) struct Scan {
    root: usize,
    folders: mpsc::Receiver<scan::Folder>,
}

/// At most this many paths settle at once because of scans: a root of
/// 100,000 new files is taken in as the earlier ones settle, so memory holds
/// a few thousand paths, not the whole root. Watcher events are not held back.
pub(super) const SETTLING_CAP: usize = 5_000;

/// The next folder of the oldest scan under way (ended scans are dropped);
/// never resolves when no scan is under way.
pub(super) async fn next_folder(scans: &mut std::collections::VecDeque<Scan>) -> (usize, scan::Folder) {
    loop {
        let Some(front) = scans.front_mut() else {
            return std::future::pending().await;
        };
        match front.folders.recv().await {
            Some(folder) => return (front.root, folder),
            None => {
                scans.pop_front();
            }
        }
    }
}

impl Agent {
    /// Starts a walk of root `i` (or a folder in it). Its folders come back
    /// to the loop one at a time ([`Self::scanned_folder`]), so memory and
    /// time follow the folders scanned, not the root's size.
    pub(super) fn scan(&mut self, i: usize, dir: Option<PathBuf>) {
        let w = self.settings.watches[i].clone();
        let dir = dir.unwrap_or_else(|| w.path.clone());
        let (tx, rx) = mpsc::channel::<scan::Folder>(2);
        tokio::task::spawn_blocking(move || {
            scan::walk_folders(&w, &dir, |folder| tx.blocking_send(folder).is_ok())
        });
        self.scans.push_back(Scan { root: i, folders: rx });
    }

    /// One scanned folder: files already uploaded unchanged are skipped on
    /// the spot (checked against that folder's journal records only), the
    /// rest go to settle.
    pub(super) async fn scanned_folder(&mut self, i: usize, folder: scan::Folder) -> Result<(), AgentError> {
        if folder.files.is_empty() {
            return Ok(());
        }
        let settle = self.settings.watches[i].settle;
        let done = self.journal.done_in(self.root_str(i), folder.prefix).await?;
        let now = std::time::Instant::now();
        for f in folder.files {
            if let Some((size, mtime)) = done.get(&f.rel)
                && f.size as i64 == *size
                && f.mtime_ns as i64 == *mtime
            {
                self.report.skipped += 1;
                continue;
            }
            self.settler.offer(&f.path, settle, now);
        }
        Ok(())
    }

    /// A folder that just appeared: scanned now, and once more a moment
    /// later, when its own watch is surely in place (a file written between
    /// the first scan and the watch would otherwise wait for the full rescan).
    pub(super) fn scan_new_folder(&mut self, i: usize, dir: PathBuf) {
        self.scan(i, Some(dir.clone()));
        if !self.opts.once {
            self.rescan_soon
                .push((i, dir, Instant::now() + NEW_FOLDER_RESCAN));
        }
    }

    /// Scans the new folders whose second look is due.
    pub(super) fn rescan_new_folders(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rescan_soon)
            .into_iter()
            .partition(|(_, _, at)| *at <= now);
        self.rescan_soon = later;
        for (i, dir, _) in due {
            self.scan(i, Some(dir));
        }
    }

    pub(super) async fn hint(&mut self, h: Hint) -> Result<(), AgentError> {
        self.last_event_at = Some(now_ms());
        match h {
            Hint::Rescan(i) => {
                tracing::info!(
                    "the watcher lost events (overflow or error); rescanning {}",
                    self.settings.watches[i].path.display()
                );
                self.scan(i, None);
                Ok(())
            }
            Hint::Dir(i, dir) => {
                self.scan_new_folder(i, dir);
                Ok(())
            }
            Hint::Path(i, path) if path == self.settings.watches[i].path => {
                // An event on the root itself (deleted, moved): its watch may be
                // dead even if a new folder already stands there (inode numbers
                // get reused), so the next heartbeat re-watches and rescans it.
                self.root_ids[i] = None;
                Ok(())
            }
            Hint::Path(i, path) => {
                let w = &self.settings.watches[i];
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    // A folder moved or renamed into the root.
                    if path.starts_with(&w.path) && path != w.path {
                        self.scan_new_folder(i, path);
                    }
                    return Ok(());
                }
                match scan::relative(w, &path) {
                    Ok(_) => self.settler.touch(&path, w.settle, std::time::Instant::now()),
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

    pub(super) fn locate(&self, path: &Path) -> Option<(usize, String)> {
        self.settings
            .watches
            .iter()
            .enumerate()
            .find_map(|(i, w)| scan::relative(w, path).ok().map(|rel| (i, rel)))
    }

    pub(super) async fn poll_settle(&mut self) -> Result<(), AgentError> {
        for d in self.settler.poll(std::time::Instant::now(), &Fs) {
            match d {
                Decision::Gone { path } => {
                    if let Some((i, rel)) = self.locate(&path) {
                        self.journal.mark_gone(self.root_str(i), rel).await?;
                    }
                }
                Decision::Stable { path, size, mtime_ns } => {
                    self.stable(path, Fingerprint { size, mtime_ns }).await?;
                }
            }
        }
        Ok(())
    }

    /// A finished file: decide from the journal whether it needs uploading.
    pub(super) async fn stable(&mut self, path: PathBuf, fp: Fingerprint) -> Result<(), AgentError> {
        let Some((i, rel)) = self.locate(&path) else {
            return Ok(());
        };
        let root = self.root_str(i);
        let row = self.journal.lookup(root.clone(), rel.clone()).await?;
        if let Some(row) = &row {
            let same_fp = row.fingerprint() == fp;
            match row.state {
                State::Done
                    if row.done_size == Some(fp.size as i64)
                        && row.done_mtime_ns == Some(fp.mtime_ns as i64) =>
                {
                    self.report.skipped += 1;
                    return Ok(());
                }
                State::Done if row.done_size == Some(fp.size as i64) => {
                    // Same size, new mtime: hash before deciding (a `touch` is not a change).
                    let row = row.clone();
                    self.tasks.spawn(async move {
                        let same = hash_file(&path).await.ok() == row.done_sha256;
                        TaskResult::Touched { row, fp, same }
                    });
                    return Ok(());
                }
                State::Pending | State::Uploading | State::Failed if same_fp => return Ok(()),
                _ => {}
            }
        }
        self.enqueue(i, root, rel, fp).await
    }

    pub(super) async fn enqueue(
        &mut self,
        i: usize,
        root: String,
        rel: String,
        fp: Fingerprint,
    ) -> Result<(), AgentError> {
        if self.opts.dry_run {
            let w = &self.settings.watches[i];
            if let Ok(r) = mapping::map(Path::new(&rel), &w.remote_folder, w.subfolders) {
                tracing::info!(
                    "would upload {} → {}/{} ({} bytes)",
                    Path::new(&root).join(&rel).display(),
                    r.folder,
                    r.name,
                    fp.size
                );
            }
            self.report.would_upload += 1;
            return Ok(());
        }
        let w = &self.settings.watches[i];
        // With random_prefix the service gives every file its own name.
        let key = mapping::map(Path::new(&rel), &w.remote_folder, w.subfolders)
            .ok()
            .filter(|_| !w.random_prefix)
            .map(|r| r.key(self.settings.api.case_insensitive_remote));
        let path = Path::new(&root).join(&rel);
        if let Some(first) = self.journal.enqueue(root, rel, fp, key).await? {
            self.report.failed += 1;
            tracing::error!(
                "{} is not uploaded: its remote name is already taken by {first} (the names differ only by \
                 Unicode normalisation or case); rename one of them",
                path.display()
            );
        }
        self.queue_dirty = true;
        Ok(())
    }
}
