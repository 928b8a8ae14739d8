//! `mirror_deletes`: the remote copy of a file deleted locally is deleted
//! too, deliberately. Each root with it is swept now and then (every
//! quarter of `delete_after`, between 1 s and 10 min): each uploaded file's
//! path is looked at below the root without following a link, and one
//! found missing starts its grace period in the journal. Once missing for
//! `delete_after`, and looked at once more just before, its remote copy is
//! deleted, the DELETE journaled before it is sent.
//!
//! Never while the root is missing, not a folder, or empty (an unmounted
//! share looks like a folder with nothing in it: nothing is swept then, so
//! no grace period even starts), never for a file recorded on another
//! device than the root's (a mount that is not there), never for a remote
//! file another record still uses, and never more than `max_delete` in an
//! hour: beyond it deletes stop (a health problem and a `deletes_braked`
//! event) until `release --deletes` lets the waiting ones go.

use super::*;
use crate::anchor;
use crate::config::MirrorDeletes;
use crate::control::Event;
use crate::journal::{DoneEntry, MovedTo};

/// Uploaded files looked at per journal page in a sweep.
const PAGE: usize = 1000;

/// The shortest and longest time between two sweeps of a root.
const SWEEP_MIN: Duration = Duration::from_secs(1);
const SWEEP_MAX: Duration = Duration::from_secs(600);

/// The rounds of each root (by journal key).
#[derive(Default)]
pub(super) struct Deletes {
    next: HashMap<String, Instant>,
    busy: HashSet<String>,
    /// Roots whose deletes are braked, and why (health).
    braked: HashMap<String, String>,
    /// Why a root's deletes are held (root missing, empty …), as last said.
    held: HashMap<String, String>,
    /// Rounds ended per root (`status` shows them: a test waits on them).
    rounds: HashMap<String, u64>,
}

impl Deletes {
    /// After a reload: every root is swept at once; brakes are judged again
    /// by the next round.
    pub(super) fn reset(&mut self) {
        self.next.clear();
    }

    /// A root's rounds so far and why its deletes are held, for `status`.
    pub(super) fn view(&self, key: &str) -> (u64, Option<&String>) {
        (self.rounds.get(key).copied().unwrap_or(0), self.held.get(key))
    }

    pub(super) fn problems(&self) -> impl Iterator<Item = &String> {
        self.braked.values()
    }
}

/// What one round found and did.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// Why nothing was swept or deleted (the root is not safe to judge).
    pub held: Option<String>,
    /// Remote copies deleted: the file's path, its remote path, file_no,
    /// size, and where it went if it was moved.
    pub deleted: Vec<(PathBuf, String, String, u64, Option<MovedTo>)>,
    /// The brake: deleted this hour, and how many more wait.
    pub braked: Option<(usize, usize)>,
    /// Deletes that failed (tried again next round).
    pub failed: Vec<String>,
    /// A dry run: what would be deleted (path, remote path, file_no).
    pub would: Vec<(PathBuf, String, String)>,
}

/// Everything a round needs, owned (it runs as a task).
struct RoundJob {
    journal: Journal,
    transfer: Arc<dyn Transfer>,
    root: PathBuf,
    key: String,
    rules: MirrorDeletes,
    now_ms: i64,
    dry_run: bool,
}

impl Agent {
    /// Starts a round for each root with `mirror_deletes` whose time has
    /// come (not in a fleet: the config refuses it there).
    pub(super) fn start_delete_rounds(&mut self) {
        if self.settings.fleet.is_some() {
            return;
        }
        let now = self.clock.now();
        for id in self.settings.root_ids() {
            let w = self.settings.root(id);
            let Some(rules) = w.mirror_deletes else {
                continue;
            };
            let key = self.key(id);
            if self.deletes.busy.contains(&key) || self.deletes.next.get(&key).is_some_and(|at| *at > now) {
                continue;
            }
            let every = (rules.after / 4).clamp(SWEEP_MIN, SWEEP_MAX);
            self.deletes.next.insert(key.clone(), now + every);
            self.deletes.busy.insert(key.clone());
            let job = RoundJob {
                journal: self.journal.clone(),
                transfer: self.transfer.clone(),
                root: w.path.clone(),
                key: key.clone(),
                rules,
                now_ms: self.clock.wall_ms(),
                dry_run: self.opts.dry_run,
            };
            self.tasks.spawn(async move {
                let round = job.run().await;
                TaskResult::Deletes { key, round }
            });
        }
    }

    /// A round ended: what it deleted is said (log, events), a brake
    /// raises a health problem, a hold is said once.
    pub(super) async fn deletes_done(
        &mut self,
        key: String,
        round: Result<Round, JournalError>,
    ) -> Result<(), AgentError> {
        self.deletes.busy.remove(&key);
        let round = round?;
        *self.deletes.rounds.entry(key.clone()).or_default() += 1;
        let shown = crate::text::shown(&key);
        match &round.held {
            Some(why) if self.deletes.held.get(&key) != Some(why) => {
                tracing::warn!("{shown}: no remote copy is deleted (mirror_deletes): {why}");
                self.deletes.held.insert(key.clone(), why.clone());
            }
            None if self.deletes.held.remove(&key).is_some() => {
                tracing::info!("{shown}: deletes are judged again (mirror_deletes)");
            }
            _ => {}
        }
        for (path, remote, file_no) in &round.would {
            tracing::info!(
                "would delete {remote} (file_no {file_no}): {} is missing (mirror_deletes; after its grace period)",
                path.display()
            );
            self.reporter.would_delete();
        }
        for (path, remote, file_no, size, moved) in round.deleted {
            let now = self.clock.wall_ms();
            match &moved {
                Some(to) => {
                    let to_path = Path::new(&to.root).join(&to.rel);
                    let to_remote = mapping::remote_path(&to.remote_folder, &to.remote_name);
                    tracing::info!(
                        "moved {} → {} (uploaded there as {to_remote}); its old remote copy {remote} (file_no \
                         {file_no}) is deleted (mirror_deletes)",
                        path.display(),
                        to_path.display()
                    );
                    let mut e = Event::new("moved", now).path(&to_path).sized(size);
                    e.remote_folder = Some(to.remote_folder.clone());
                    e.name = Some(to.remote_name.clone());
                    self.emit(
                        e.with("from", path.display().to_string())
                            .with("from_remote", remote.clone())
                            .with("deleted_file_no", file_no.clone()),
                    )
                    .await?;
                }
                None => {
                    tracing::info!(
                        "deleted {remote} (file_no {file_no}): {} was deleted locally (mirror_deletes)",
                        path.display()
                    );
                    let mut e = Event::new("deleted", now).path(&path).sized(size);
                    e.file_no = Some(file_no.clone());
                    e.name = Some(remote.clone());
                    self.emit(e).await?;
                }
            }
            self.reporter.deleted();
        }
        for f in &round.failed {
            tracing::warn!("{f}; tried again at the next round");
        }
        match round.braked {
            Some((done, waiting)) => {
                let max = self
                    .settings
                    .root_ids()
                    .find(|id| self.key(*id) == key)
                    .and_then(|id| self.settings.root(id).mirror_deletes)
                    .map_or(0, |m| m.max_per_hour);
                let why = format!(
                    "deletes from {shown} are braked: {done} remote copies deleted in the last hour reach \
                     max_delete = {max}, and {waiting} more wait; check that the folder is as it should be, then \
                     `autorender-sync release --deletes {shown}` lets them go (or raise max_delete)"
                );
                if self.deletes.braked.insert(key.clone(), why.clone()).is_none() {
                    tracing::warn!("{why}");
                    let mut e = Event::new("deletes_braked", self.clock.wall_ms()).path(Path::new(&key));
                    e.error = Some(why);
                    self.emit(e.with("deleted", done).with("waiting", waiting))
                        .await?;
                }
            }
            None => {
                if self.deletes.braked.remove(&key).is_some() {
                    tracing::info!("deletes from {shown} go again");
                }
            }
        }
        Ok(())
    }
}

/// Why `root` must not be judged now (None: it may): missing, not a
/// folder, or with nothing in it but our marker. Its device otherwise.
fn root_state(root: &Path) -> Result<u64, String> {
    let m = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) => {
            return Err(format!(
                "the folder is not there ({e}); an unmounted share is not a deletion"
            ));
        }
    };
    if !m.is_dir() {
        return Err("it is not a folder now (a symbolic link or a file stands there)".into());
    }
    match anchor::list(root, root) {
        Ok(entries) if entries.iter().all(|e| e.name == marker::NAME) => {
            return Err(
                "the folder is empty, as an unmounted share looks; if everything was meant to go, put any file \
                 in it (e.g. .keep) and the deletes go on"
                    .into(),
            );
        }
        Ok(_) => {}
        Err(e) => return Err(format!("the folder cannot be read ({e})")),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(m.dev())
    }
    #[cfg(not(unix))]
    {
        Ok(0)
    }
}

/// Whether the uploaded file `rel` is missing below `root`: only a plain
/// "not found" is (a path through a symlink, an unreadable folder, any
/// other error: not judged, so never deleted).
fn missing(root: &Path, rel: &str) -> bool {
    match anchor::stat(root, &root.join(rel)) {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound && anchor::Refusal::of(&e).is_none(),
    }
}

impl RoundJob {
    async fn run(self) -> Result<Round, JournalError> {
        let mut round = Round::default();
        let root = self.root.clone();
        let dev = match tokio::task::spawn_blocking(move || root_state(&root)).await {
            Ok(Ok(dev)) => dev,
            Ok(Err(why)) => {
                round.held = Some(why);
                return Ok(round);
            }
            Err(e) => {
                round.held = Some(format!("the folder could not be looked at ({e})"));
                return Ok(round);
            }
        };
        self.sweep(dev, &mut round).await?;
        if !self.dry_run {
            self.delete_due(dev, &mut round).await?;
        }
        Ok(round)
    }

    /// Looks at every uploaded file of the root: the missing ones start
    /// waiting (a dry run lists them), the ones back stop.
    async fn sweep(&self, dev: u64, round: &mut Round) -> Result<(), JournalError> {
        let mut after = 0;
        loop {
            let page: Vec<DoneEntry> = self.journal.done_page(self.key.clone(), after, PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id;
            let root = self.root.clone();
            let looked = tokio::task::spawn_blocking(move || {
                let mut gone = Vec::new();
                let mut here = Vec::new();
                for e in page {
                    // Recorded on another device than the root is on now
                    // (or not known): a mount that is not there; not judged.
                    if e.dev != Some(dev) {
                        continue;
                    }
                    if missing(&root, &e.rel) {
                        gone.push(e);
                    } else {
                        here.push(e.id);
                    }
                }
                (gone, here)
            })
            .await;
            let Ok((gone, here)) = looked else {
                break;
            };
            if self.dry_run {
                round.would.extend(gone.into_iter().map(|e| {
                    (
                        self.root.join(&e.rel),
                        mapping::remote_path(&e.remote_folder, &e.remote_name),
                        e.file_no,
                    )
                }));
            } else {
                self.journal
                    .note_missing(gone.into_iter().map(|e| e.id).collect(), here, self.now_ms)
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes the remote copies whose grace period is over, under the brake.
    async fn delete_due(&self, dev: u64, round: &mut Round) -> Result<(), JournalError> {
        let grace = self.rules.after.as_millis() as i64;
        let due = self
            .journal
            .deletes_due(self.key.clone(), self.now_ms - grace)
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let released = self.journal.deletes_released(self.key.clone()).await?;
        let since = (self.now_ms - 3_600_000).max(released);
        let mut counted = self.journal.deleted_since(self.key.clone(), since).await?;
        let max = self.rules.max_per_hour as usize;
        let mut waiting = 0;
        for d in due {
            if d.dev != Some(dev) {
                continue;
            }
            // Looked at once more, just before: back (or a new file at the
            // path) means it waits no more.
            let (root, rel) = (self.root.clone(), d.rel.clone());
            let still = tokio::task::spawn_blocking(move || missing(&root, &rel))
                .await
                .unwrap_or(false);
            if !still && !d.sending {
                self.journal
                    .note_missing(Vec::new(), vec![d.id], self.now_ms)
                    .await?;
                continue;
            }
            if self.journal.remote_shared(d.id).await? {
                // Another record uses the remote file (a rename, an
                // adoption of the same copy): only this record goes.
                self.journal
                    .deleted_remote(
                        d.id,
                        false,
                        "deleted (its remote file is another record's now)".into(),
                        self.now_ms,
                    )
                    .await?;
                continue;
            }
            // Released ones go beyond the brake and are not counted; one
            // already sent (before a crash) goes, and counts.
            let released_one = d.gone_at <= released;
            if !released_one {
                if counted >= max && !d.sending {
                    waiting += 1;
                    continue;
                }
                counted += 1;
            }
            let remote = mapping::remote_path(&d.remote_folder, &d.remote_name);
            if !d.sending {
                self.journal.delete_sending(d.id, self.now_ms).await?;
            }
            match self.transfer.delete_remote(&d.file_no).await {
                Ok(()) => {
                    let moved = self.journal.moved_to(d.id).await?;
                    let what = match &moved {
                        Some(to) => format!(
                            "moved to {}; its old remote copy deleted (mirror_deletes)",
                            Path::new(&to.root).join(&to.rel).display()
                        ),
                        None => "deleted; its remote copy deleted too (mirror_deletes)".to_string(),
                    };
                    self.journal
                        .deleted_remote(d.id, !released_one, what, self.now_ms)
                        .await?;
                    round.deleted.push((
                        self.root.join(&d.rel),
                        remote,
                        d.file_no,
                        d.size.max(0) as u64,
                        moved,
                    ));
                }
                Err(e) => {
                    if !released_one {
                        counted -= 1;
                    }
                    round.failed.push(format!(
                        "deleting {remote} (file_no {}) of {} failed: {e}",
                        d.file_no,
                        self.root.join(&d.rel).display()
                    ));
                }
            }
        }
        if waiting > 0 {
            round.braked = Some((counted, waiting));
        }
        Ok(())
    }
}
