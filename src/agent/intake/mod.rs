//! What comes in: watcher hints, scans folder by folder, settle decisions,
//! and the journal's verdict on each finished file.

use super::*;
use crate::fileid::FileId;

mod settled;

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
}
