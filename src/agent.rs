//! The agent: wires watch → settle → journal → uploader → after-upload.
//!
//! One loop owns the settle state and the set of uploads in flight; uploads
//! and sha256 checks run as tasks whose results come back to the loop, so no
//! state is shared. Events and scans only say "look at this path"; settle
//! says when a file is finished; the journal says whether it needs uploading
//! and holds the durable queue. Shutdown stops watching, cancels in-flight
//! transfers (their sessions and finished parts are already recorded, so the
//! next start resumes them) and flushes the journal.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Session};
use crate::config::{Settings, WatchSettings};
use crate::fileid::{FileId, Fingerprint, hash_file};
use crate::journal::{DoneRecord, FileRow, Journal, JournalError, SavedSession, State, now_ms};
use crate::mapping;
use crate::scan::{self, Rejected};
use crate::settle::{Decision, Fs, Settler};
use crate::upload::{Job, Observer, Outcome, Phase, Resume, UploadError, Uploader};
use crate::watch::{self, Hint};

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Scan, upload what is pending, exit.
    pub once: bool,
    /// Log what would be uploaded; send nothing, record nothing.
    pub dry_run: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub uploaded: usize,
    /// Found in the workspace already (no journal record) and recorded, not sent.
    pub adopted: usize,
    pub failed: usize,
    pub skipped: usize,
    pub would_upload: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Watch(String),
    #[error("the API key was rejected: {0}")]
    Auth(String),
}

/// Why uploads are held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// The API key was rejected.
    Auth,
    /// No answer from the service (unix ms since when).
    Unreachable { since_ms: i64 },
}

/// How often an unreachable service is asked again.
const OUTAGE_RECHECK: Duration = Duration::from_secs(15);

/// A new folder is scanned again this long after it appeared.
const NEW_FOLDER_RESCAN: Duration = Duration::from_secs(1);

/// How long uploads pause after the key is rejected before checking again.
const AUTH_RECHECK: Duration = Duration::from_secs(60);

enum TaskResult {
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
        same: bool,
    },
}

/// Records each upload step in the journal (see [`Observer`]).
struct JournalObserver {
    journal: Journal,
    id: i64,
    /// The version being sent and its sha256, once hashed.
    hashed: Mutex<Option<(FileId, String)>>,
}

impl JournalObserver {
    fn hashed_version(&self) -> Result<(FileId, String), String> {
        self.hashed
            .lock()
            .expect("hashed lock")
            .clone()
            .ok_or_else(|| "the file was not hashed before its upload began".to_string())
    }
}

impl Observer for JournalObserver {
    fn hashed(&self, id: FileId, sha256: &str) {
        *self.hashed.lock().expect("hashed lock") = Some((id, sha256.to_string()));
    }
    fn session_started<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (file, sha) = self.hashed_version()?;
            self.journal
                .save_session(self.id, session.clone(), file, sha)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn part_done(&self, index: usize) {
        self.journal.part_done(self.id, index);
    }
    fn completing(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.journal.completing(self.id).await.map_err(|e| e.to_string()) })
    }
    fn direct_sending(&self, began_at_ms: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let (file, sha) = self.hashed_version()?;
            self.journal
                .direct_sending(self.id, began_at_ms, file, sha)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn reconciling(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.journal.reconciling(self.id).await.map_err(|e| e.to_string()) })
    }
}

pub struct Agent {
    settings: Arc<Settings>,
    uploader: Arc<Uploader>,
    journal: Journal,
    opts: RunOptions,
    settler: Settler,
    tasks: JoinSet<TaskResult>,
    inflight: HashSet<i64>,
    /// `--once`: files already tried in this run (not tried twice).
    /// Shared with the journal's queue query without copying (copied on
    /// write only if a query still holds it), so a run of 100,000 files
    /// does not rebuild this set for every upload started.
    attempted: Arc<HashSet<i64>>,
    /// Queued files whose watch root is no longer configured.
    orphans: HashSet<i64>,
    report: Report,
    queue_dirty: bool,
    /// Uploads held back, why, and when to ask the service again.
    pause: Option<(Pause, Instant)>,
    last_event_at: Option<i64>,
    watch_modes: Vec<String>,
    /// Per root: the identity of the folder being watched (None: missing).
    root_ids: Vec<Option<(u64, u64)>>,
    /// New folders to scan once more, and when.
    rescan_soon: Vec<(usize, PathBuf, Instant)>,
    /// Walks under way, oldest first; the loop takes their folders one at a
    /// time while fewer than [`SETTLING_CAP`] paths are settling.
    scans: std::collections::VecDeque<Scan>,
}

/// A walk of root `root` (or a folder in it) on a blocking thread, handing
/// over one folder's files at a time.
struct Scan {
    root: usize,
    folders: mpsc::Receiver<scan::Folder>,
}

/// At most this many paths settle at once because of scans: a root of
/// 100,000 new files is taken in as the earlier ones settle, so memory holds
/// a few thousand paths, not the whole root. Watcher events are not held back.
const SETTLING_CAP: usize = 5_000;

/// The next folder of the oldest scan under way (ended scans are dropped);
/// never resolves when no scan is under way.
async fn next_folder(scans: &mut std::collections::VecDeque<Scan>) -> (usize, scan::Folder) {
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
    pub fn new(settings: Arc<Settings>, uploader: Uploader, journal: Journal, opts: RunOptions) -> Agent {
        Agent {
            settings,
            uploader: Arc::new(uploader),
            journal,
            opts,
            settler: Settler::new(),
            tasks: JoinSet::new(),
            inflight: HashSet::new(),
            attempted: Arc::new(HashSet::new()),
            orphans: HashSet::new(),
            report: Report::default(),
            queue_dirty: true,
            pause: None,
            last_event_at: None,
            watch_modes: Vec::new(),
            root_ids: Vec::new(),
            rescan_soon: Vec::new(),
            scans: std::collections::VecDeque::new(),
        }
    }

    fn root_str(&self, i: usize) -> String {
        self.settings.watches[i].path.to_string_lossy().into_owned()
    }

    /// Runs until `shutdown` (or, with `once`, until the work is done).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<Report, AgentError> {
        let (tx, mut rx) = mpsc::channel::<Hint>(64 * 1024);
        self.root_ids = self
            .settings
            .watches
            .iter()
            .map(|w| folder_identity(&w.path))
            .collect();
        let mut watchers = if self.opts.once {
            None
        } else {
            let w = watch::start(
                &self.settings.watches,
                self.settings.agent.poll_interval,
                tx.clone(),
            )
            .map_err(AgentError::Watch)?;
            self.watch_modes = w.modes.clone();
            Some(w)
        };
        for (i, w) in self.settings.watches.iter().enumerate() {
            tracing::info!(
                "watching {} → \"{}\" ({})",
                w.path.display(),
                w.remote_folder,
                self.watch_modes.get(i).map(String::as_str).unwrap_or("one scan")
            );
        }
        let started_at = now_ms();
        for i in 0..self.settings.watches.len() {
            self.scan(i, None);
        }
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        let rescan_every = self
            .settings
            .agent
            .rescan_interval
            .unwrap_or(Duration::from_secs(365 * 86400));
        let mut rescan = tokio::time::interval_at(Instant::now() + rescan_every, rescan_every);
        let give_up_after = self
            .settings
            .watches
            .iter()
            .map(|w| w.settle)
            .max()
            .unwrap_or_default()
            * 5;
        loop {
            let next_retry = self.fill().await?;
            if self.opts.once {
                for p in self
                    .settler
                    .changing_longer_than(std::time::Instant::now(), give_up_after)
                {
                    tracing::warn!("{} is still changing; leaving it for the next run", p.display());
                    self.settler.forget(&p);
                }
                if self.settler.is_empty()
                    && self.tasks.is_empty()
                    && !self.queue_dirty
                    && self.scans.is_empty()
                {
                    break;
                }
            }
            let settle_at = self.settler.next_deadline().map(Instant::from_std);
            let wake = [settle_at, next_retry, self.pause.as_ref().map(|p| p.1)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(h) = rx.recv() => {
                    self.hint(h).await?;
                    while let Ok(h) = rx.try_recv() {
                        self.hint(h).await?;
                    }
                }
                (i, folder) = next_folder(&mut self.scans),
                    if !self.scans.is_empty() && self.settler.len() < SETTLING_CAP =>
                {
                    self.scanned_folder(i, folder).await?;
                }
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok(result) => self.finished(result, &shutdown).await?,
                        Err(e) if e.is_panic() => tracing::error!("an upload task panicked: {e}"),
                        Err(_) => {}
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.poll_settle().await?;
                    if self.pause.as_ref().is_some_and(|p| p.1 <= Instant::now()) {
                        self.recheck_service().await;
                    }
                }
                _ = heartbeat.tick() => {
                    // `retry` from another process may have queued files.
                    self.queue_dirty = true;
                    self.rescan_new_folders();
                    if let Some(w) = watchers.as_mut() {
                        self.check_roots(w, &tx).await?;
                    }
                    if let Some(w) = &watchers {
                        for (i, flag) in w.overflowed.iter().enumerate() {
                            if flag.swap(false, std::sync::atomic::Ordering::Relaxed) {
                                tracing::info!("event queue overflowed; rescanning {}", self.settings.watches[i].path.display());
                                self.scan(i, None);
                            }
                        }
                    }
                    if !self.opts.dry_run {
                        self.journal.heartbeat(std::process::id(), started_at, self.last_event_at, self.snapshot()).await?;
                    }
                }
                _ = rescan.tick() => {
                    for i in 0..self.settings.watches.len() {
                        self.scan(i, None);
                    }
                }
            }
        }
        drop(watchers);
        // In-flight transfers stop here; their sessions are in the journal.
        self.tasks.shutdown().await;
        self.journal.checkpoint().await?;
        Ok(self.report)
    }

    /// A watched folder that vanished loses its watch, and so does one that
    /// was deleted and recreated between two looks (a new folder, a new
    /// identity). Either way, once it is there it is watched again and
    /// scanned, so nothing dropped into it is missed.
    async fn check_roots(
        &mut self,
        watchers: &mut watch::Watchers,
        tx: &mpsc::Sender<Hint>,
    ) -> Result<(), AgentError> {
        for i in 0..self.settings.watches.len() {
            let w = &self.settings.watches[i];
            let now = folder_identity(&w.path);
            if now == self.root_ids[i] {
                continue;
            }
            match now {
                None => {
                    tracing::warn!(
                        "watched folder {} disappeared; waiting for it to come back",
                        w.path.display()
                    );
                    watchers.stop(i);
                    self.root_ids[i] = None;
                }
                Some(_) => match watchers.restart(i, w, self.settings.agent.poll_interval, tx) {
                    Ok(()) => {
                        tracing::info!(
                            "watched folder {} is (re)created; watching it again",
                            w.path.display()
                        );
                        self.root_ids[i] = now;
                        self.watch_modes[i] = watchers.modes[i].clone();
                        self.scan(i, None);
                    }
                    Err(e) => tracing::warn!("{e}; trying again"),
                },
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> String {
        let now = std::time::Instant::now();
        let roots: Vec<serde_json::Value> = self
            .settings
            .watches
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let (settling, growing) = self.settler.counts_under(&w.path, now);
                serde_json::json!({
                    "root": w.path,
                    "remote_folder": w.remote_folder,
                    "watch": self.watch_modes.get(i),
                    "settling": settling,
                    "growing": growing,
                })
            })
            .collect();
        let (reason, since) = match &self.pause {
            Some((Pause::Auth, _)) => (Some("auth_rejected"), None),
            Some((Pause::Unreachable { since_ms }, _)) => (Some("service_unreachable"), Some(*since_ms)),
            None => (None, None),
        };
        serde_json::json!({
            "roots": roots,
            "paused": self.pause.is_some(),
            "pause_reason": reason,
            "unreachable_since": since,
        })
        .to_string()
    }

    /// Starts a walk of root `i` (or a folder in it). Its folders come back
    /// to the loop one at a time ([`Self::scanned_folder`]), so memory and
    /// time follow the folders scanned, not the root's size.
    fn scan(&mut self, i: usize, dir: Option<PathBuf>) {
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
    async fn scanned_folder(&mut self, i: usize, folder: scan::Folder) -> Result<(), AgentError> {
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
    fn scan_new_folder(&mut self, i: usize, dir: PathBuf) {
        self.scan(i, Some(dir.clone()));
        if !self.opts.once {
            self.rescan_soon
                .push((i, dir, Instant::now() + NEW_FOLDER_RESCAN));
        }
    }

    /// Scans the new folders whose second look is due.
    fn rescan_new_folders(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rescan_soon)
            .into_iter()
            .partition(|(_, _, at)| *at <= now);
        self.rescan_soon = later;
        for (i, dir, _) in due {
            self.scan(i, Some(dir));
        }
    }

    async fn hint(&mut self, h: Hint) -> Result<(), AgentError> {
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

    fn locate(&self, path: &Path) -> Option<(usize, String)> {
        self.settings
            .watches
            .iter()
            .enumerate()
            .find_map(|(i, w)| scan::relative(w, path).ok().map(|rel| (i, rel)))
    }

    async fn poll_settle(&mut self) -> Result<(), AgentError> {
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
    async fn stable(&mut self, path: PathBuf, fp: Fingerprint) -> Result<(), AgentError> {
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

    async fn enqueue(
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

    /// Starts due uploads up to `concurrent_files`. Returns when the next
    /// backed-off file becomes due, if any.
    async fn fill(&mut self) -> Result<Option<Instant>, AgentError> {
        if self.opts.dry_run || self.pause.is_some() {
            self.queue_dirty = false;
            return Ok(None);
        }
        let free = self
            .settings
            .agent
            .concurrent_files
            .saturating_sub(self.inflight.len());
        if free > 0 && self.queue_dirty {
            let skip: Vec<i64> = self.inflight.iter().chain(&self.orphans).copied().collect();
            let tried = self.opts.once.then(|| self.attempted.clone());
            let rows = self.journal.due(now_ms(), free, skip, tried).await?;
            if rows.len() < free {
                self.queue_dirty = false;
            }
            for row in rows {
                self.start_upload(row);
            }
        }
        if self.opts.once {
            return Ok(None);
        }
        let next = self.journal.next_due().await?;
        Ok(next
            .filter(|t| *t > now_ms())
            .map(|t| Instant::now() + Duration::from_millis((t - now_ms()) as u64)))
    }

    fn start_upload(&mut self, row: FileRow) {
        let Some(i) = self
            .settings
            .watches
            .iter()
            .position(|w| w.path.to_string_lossy() == row.root)
        else {
            // The root left the config: leave the record alone (and stop asking for it).
            self.orphans.insert(row.id);
            return;
        };
        self.inflight.insert(row.id);
        if self.opts.once {
            Arc::make_mut(&mut self.attempted).insert(row.id);
        }
        let w: WatchSettings = self.settings.watches[i].clone();
        let journal = self.journal.clone();
        let uploader = self.uploader.clone();
        self.tasks.spawn(async move {
            let path = row.local_path();
            let fp = match Fingerprint::of(&path) {
                Ok(fp) => fp,
                Err(e) => {
                    let gone = e.kind() == std::io::ErrorKind::NotFound;
                    return TaskResult::NotReady { row, gone };
                }
            };
            if fp != row.fingerprint() {
                return TaskResult::NotReady { row, gone: false };
            }
            let remote = match mapping::map(Path::new(&row.rel), &w.remote_folder, w.subfolders) {
                Ok(r) => r,
                Err(e) => {
                    let err = UploadError::Io {
                        path: path.clone(),
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
                path: path.clone(),
                file_name: remote.name,
                folder: remote.folder,
                format: remote.format,
                tags: w.tags.clone(),
                metadata: w.metadata.clone(),
                random_prefix: w.random_prefix,
                adopt: row.adopt,
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
                tracing::info!("resuming the upload of {}", path.display());
            }
            let observer: Arc<dyn Observer> = Arc::new(JournalObserver {
                journal,
                id: row.id,
                hashed: Mutex::new(None),
            });
            let result = uploader.upload_resuming(&job, resume, &observer).await;
            TaskResult::Upload {
                row,
                result: Box::new(result),
                fp,
            }
        });
    }

    async fn finished(&mut self, result: TaskResult, shutdown: &CancellationToken) -> Result<(), AgentError> {
        match result {
            TaskResult::Touched { row, fp, same } => {
                if same {
                    self.journal.refresh_done_mtime(row.id, fp.mtime_ns).await?;
                    self.report.skipped += 1;
                } else if let Some(i) = self
                    .settings
                    .watches
                    .iter()
                    .position(|w| w.path.to_string_lossy() == row.root)
                {
                    self.enqueue(i, row.root, row.rel, fp).await?;
                }
            }
            TaskResult::NotReady { row, gone } => {
                self.inflight.remove(&row.id);
                if gone {
                    self.journal.mark_gone(row.root.clone(), row.rel.clone()).await?;
                } else {
                    self.back_to_settling(&row).await?;
                }
            }
            TaskResult::Upload { row, result, fp } => {
                self.inflight.remove(&row.id);
                self.queue_dirty = true;
                self.upload_result(row, *result, fp, shutdown).await?;
            }
        }
        Ok(())
    }

    async fn back_to_settling(&mut self, row: &FileRow) -> Result<(), AgentError> {
        self.journal.drop_session(row.id).await?;
        self.journal.set_state(row.id, State::Settling).await?;
        if let Some(w) = self
            .settings
            .watches
            .iter()
            .find(|w| w.path.to_string_lossy() == row.root)
        {
            self.settler
                .touch(&row.local_path(), w.settle, std::time::Instant::now());
        }
        Ok(())
    }

    async fn upload_result(
        &mut self,
        row: FileRow,
        result: Result<Outcome, UploadError>,
        fp: Fingerprint,
        shutdown: &CancellationToken,
    ) -> Result<(), AgentError> {
        let path = row.local_path();
        match result {
            Ok(o) => {
                self.journal
                    .record_done(
                        row.id,
                        DoneRecord {
                            fingerprint: fp,
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
                    self.report.adopted += 1;
                } else {
                    self.report.uploaded += 1;
                    tracing::info!(
                        "uploaded {} → {}/{} (file_no {})",
                        path.display(),
                        o.folder,
                        o.name,
                        o.file.file_no
                    );
                }
                if let Some(w) = self
                    .settings
                    .watches
                    .iter()
                    .find(|w| w.path.to_string_lossy() == row.root)
                {
                    let action = w.after_upload.clone();
                    let rel = row.rel.clone();
                    let outcome =
                        tokio::task::spawn_blocking(move || crate::after::apply(&action, &path, &rel, fp))
                            .await;
                    if let Ok(Err(e)) = outcome {
                        tracing::warn!("{e}");
                    }
                }
            }
            Err(e) if e.is_auth() => {
                self.journal.set_state(row.id, State::Pending).await?;
                if self.opts.once {
                    shutdown.cancel();
                    return Err(AgentError::Auth(e.to_string()));
                }
                if !matches!(self.pause, Some((Pause::Auth, _))) {
                    tracing::error!(
                        "{e}; all uploads are paused and the key is re-checked every {}s. Fix the key (then restart, or wait)",
                        AUTH_RECHECK.as_secs()
                    );
                }
                self.pause = Some((Pause::Auth, Instant::now() + AUTH_RECHECK));
            }
            // No answer about this file at all (network down, 5xx, 429 after
            // every retry): the service is unreachable for every file, so the
            // queue waits, and this file's attempts are not spent.
            Err(UploadError::Api(a)) if a.is_transient() && !self.opts.once => {
                self.journal.set_state(row.id, State::Pending).await?;
                if self.pause.is_none() {
                    tracing::warn!(
                        "the service is unreachable ({a}); all uploads wait and it is asked again every {}s",
                        OUTAGE_RECHECK.as_secs()
                    );
                    self.pause = Some((
                        Pause::Unreachable { since_ms: now_ms() },
                        Instant::now() + OUTAGE_RECHECK,
                    ));
                }
            }
            Err(UploadError::Changed(why)) => {
                tracing::info!(
                    "{} changed during upload ({why}); waiting for it to settle again",
                    path.display()
                );
                self.back_to_settling(&row).await?;
            }
            Err(UploadError::Io { message, .. }) if !path.exists() => {
                tracing::info!("{} vanished during upload ({message})", path.display());
                self.journal.mark_gone(row.root, row.rel).await?;
            }
            Err(e) => {
                let keep_session = matches!(&e, UploadError::Api(a) if a.is_transient())
                    || matches!(e, UploadError::Io { .. });
                if !keep_session {
                    self.journal.drop_session(row.id).await?;
                }
                let delay = retry_delay(row.attempts as u32);
                let state = self
                    .journal
                    .record_failure(
                        row.id,
                        e.to_string(),
                        self.settings.agent.max_attempts,
                        now_ms() + delay.as_millis() as i64,
                    )
                    .await?;
                if state == State::Failed {
                    self.report.failed += 1;
                    tracing::error!(
                        "{} failed after {} attempts: {e}; run `autorender-sync retry` to try again",
                        path.display(),
                        row.attempts + 1
                    );
                } else {
                    if self.opts.once {
                        self.report.failed += 1;
                    }
                    tracing::warn!("{}: {e}; retrying in {}s", path.display(), delay.as_secs());
                }
            }
        }
        Ok(())
    }

    /// One cheap authenticated call decides whether a pause ends.
    async fn recheck_service(&mut self) {
        let Some((reason, _)) = self.pause.take() else {
            return;
        };
        match self.uploader.client.verify_key().await {
            Ok(()) => {
                match reason {
                    Pause::Auth => tracing::info!("the API key is accepted again; resuming uploads"),
                    Pause::Unreachable { since_ms } => tracing::info!(
                        "the service answers again after {}s; resuming uploads",
                        (now_ms() - since_ms) / 1000
                    ),
                }
                self.queue_dirty = true;
            }
            Err(e @ ApiError::Auth { .. }) => {
                if reason != Pause::Auth {
                    tracing::error!("{e}; all uploads are paused until the key is accepted");
                }
                self.pause = Some((Pause::Auth, Instant::now() + AUTH_RECHECK));
            }
            Err(e) => {
                tracing::debug!("the service is still not answering ({e})");
                let again = if reason == Pause::Auth {
                    AUTH_RECHECK
                } else {
                    OUTAGE_RECHECK
                };
                self.pause = Some((reason, Instant::now() + again));
            }
        }
    }
}

/// (device, inode) of a folder, to notice it was replaced; None if missing.
fn folder_identity(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Some((0, 0))
    }
}

/// A saved session is resumed only for the very same file version.
fn usable(saved: SavedSession, fp: Fingerprint) -> Option<Resume> {
    let phase = match (saved.direct, saved.completing) {
        (true, _) => Phase::Direct,
        (false, true) => Phase::Completing,
        (false, false) => Phase::Parts,
    };
    (saved.fingerprint == fp && saved.done.len() == saved.session.parts.len()).then_some(Resume {
        session: saved.session,
        done: saved.done,
        sha256: saved.sha256,
        fingerprint: saved.fingerprint,
        file_id: saved.file_id,
        phase,
    })
}

/// Per-file backoff between attempts: 5 s doubling to 15 min, with jitter.
fn retry_delay(attempts: u32) -> Duration {
    let base = 5u64.saturating_mul(1u64 << attempts.min(8)).min(900);
    // Up to a quarter of the delay again, so files that failed together spread out.
    let jitter_ms = (now_ms() as u64 % 1000) * base / 4;
    Duration::from_secs(base) + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_caps() {
        // Each step doubles the base (5 s, 10 s, 20 s …) and adds at most a
        // quarter of it as jitter, so consecutive delays never overlap.
        for n in 0..7 {
            let (a, b) = (retry_delay(n), retry_delay(n + 1));
            assert!(
                a >= Duration::from_secs(5 << n) && a <= Duration::from_secs(5 << n) * 5 / 4,
                "{n}: {a:?}"
            );
            assert!(b > a, "{n}: {a:?} then {b:?}");
        }
        assert!(retry_delay(20) >= Duration::from_secs(900));
        assert!(retry_delay(20) <= Duration::from_secs(900 + 225));
    }
}
