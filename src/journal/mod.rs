//! The journal: an SQLite database (WAL, synchronous=FULL) in `state_dir` that
//! records every file's state, fingerprint, in-flight multipart session and
//! result, so a crash at any instant resumes from what was recorded.
//!
//! One owner thread holds the write connection; everyone else sends it
//! closures over a channel (FIFO, so a later call that is awaited also
//! proves every earlier call committed). `status` and `history` open their
//! own read-only connection, which WAL lets run beside a live agent.
//! A lock file (`agent.lock`) keeps a second agent off the same state dir.
//!
//! The agent and the commands see one interface, [`Journal`], an enum of
//! backends: SQLite (`sqlite.rs`) today; a second backend (PostgreSQL, for
//! fleets) adds a variant and one arm per operation, and the agent does not
//! change. The interface is the list in the `journal_interface!` invocation below.
//!
//! Rooms: this file holds the interface, the errors and the state-dir lock;
//! `sqlite` opens, guards (identity, damage) and runs the owner thread;
//! `schema` applies the numbered steps in `migrations/`; `records` is what is
//! recorded about a file; `queue` the queue and each file's transitions;
//! `sessions` the uploads in flight; `control` the user's pause and the
//! notification outbox; `sets` upload sets; `report` the read-only views for
//! `status` and `history`. No SQL lives outside this module.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api::Session;
use crate::fileid::{FileId, Fingerprint};

mod control;
mod fleet;
mod queue;
mod records;
mod report;
mod schema;
mod sessions;
mod sets;
mod sqlite;
#[cfg(test)]
mod tests;

pub use control::{OutboxItem, OutboxRow, UserPause};
pub use fleet::Fleet;
pub use records::{DoneRecord, FileRow, FolderDone, Retried, SavedSession, Serving, State, Verdict};
use records::{FILE_COLS, file_row};
pub use report::{AgentRow, HistoryRow, RootCounts, agent_row, counts, history, open_read_only};
pub use sets::{SetFile, SetRow, SetStep, all_sets};
pub use sqlite::Sqlite;

const SCHEMA_VERSION: i64 = schema::MIGRATIONS.len() as i64;
pub const DB_NAME: &str = "journal.sqlite3";
pub const LOCK_NAME: &str = "agent.lock";

#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("cannot use the state dir {path}: {message}; check `agent.state_dir` and free disk space")]
    Open { path: PathBuf, message: String },
    #[error(
        "another autorender-sync agent is already running on {}{holder}; stop it first (or give this one another `agent.state_dir`)",
        path.display()
    )]
    Locked {
        path: PathBuf,
        /// " (pid N, running since T)", when the journal says so.
        holder: String,
    },
    #[error(
        "journal write failed: {0}; check that the disk holding `agent.state_dir` has free space and is writable"
    )]
    Db(String),
    /// Another process holds the journal's write lock (an `sqlite3` shell,
    /// a backup tool) past the busy timeout.
    #[error(
        "the journal {} is locked by another process{holders} and stayed locked for 10 s; close what \
         holds it open (an `sqlite3` shell, a backup or sync tool), then start again",
        path.display()
    )]
    Busy { path: PathBuf, holders: String },
    #[error("the journal thread has stopped")]
    Closed,
    /// The fleet's database: unreachable, refusing, or this node's claim is gone.
    #[error("{0}")]
    Fleet(String),
    /// The file at the journal's path is no longer the one this agent opened.
    #[error(
        "the journal {0} was deleted or replaced while the agent ran; stopping, so that no second agent \
         uploads the same files again. Restore the state dir, or start again (files already in the \
         workspace are adopted, not sent again)"
    )]
    Vanished(PathBuf),
    /// The file is there but is no journal this binary can use.
    #[error(
        "the journal {path} is damaged: {reason}. Nothing was uploaded. To rebuild it from the workspace \
         (files already there are adopted, not sent again), run `autorender-sync run --recover`; \
         the damaged file is moved aside, not deleted"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "the journal {path} was written by a newer autorender-sync (schema {found}; this one knows up to {known}); \
         run the newer version, or move the journal aside to start over"
    )]
    Newer { path: PathBuf, found: i64, known: i64 },
    #[error(
        "the journal {path} is from an older autorender-sync (schema {found}); start the agent once \
         (`autorender-sync run`) to upgrade it, then ask again"
    )]
    Older { path: PathBuf, found: i64 },
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        JournalError::Db(e.to_string())
    }
}

/// The system's wall clock (unix ms), for the times records are stamped
/// with; decisions (what is due) take the caller's clock instead.
pub use crate::clock::system_ms as now_ms;

/// Holds the agent lock for as long as it lives.
pub struct AgentLock {
    _file: std::fs::File,
}

pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DB_NAME)
}

/// Takes the single-agent lock on `state_dir`.
pub fn lock_agent(state_dir: &Path) -> Result<AgentLock, JournalError> {
    let open_err = |e: std::io::Error| JournalError::Open {
        path: state_dir.to_path_buf(),
        message: e.to_string(),
    };
    crate::private::state_dir(state_dir).map_err(|message| JournalError::Open {
        path: state_dir.to_path_buf(),
        message,
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(state_dir.join(LOCK_NAME)).map_err(open_err)?;
    match file.try_lock() {
        Ok(()) => Ok(AgentLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: state_dir.to_path_buf(),
            holder: lock_holder(state_dir),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(open_err(e)),
    }
}

/// Who holds the lock, as the running agent's heartbeat tells: its pid and
/// since when (empty when the journal has no fresh heartbeat to go by).
fn lock_holder(state_dir: &Path) -> String {
    let Ok(Some(conn)) = open_read_only(state_dir) else {
        return String::new();
    };
    match agent_row(&conn) {
        Ok(Some(AgentRow {
            pid: Some(pid),
            started_at: Some(started),
            heartbeat_at: Some(beat),
            ..
        })) if now_ms() - beat < 10_000 => {
            let since = std::time::UNIX_EPOCH + std::time::Duration::from_millis(started.max(0) as u64);
            format!(
                " (pid {pid}, running since {})",
                humantime::format_rfc3339_seconds(since)
            )
        }
        _ => String::new(),
    }
}

/// Is an agent holding the lock on `state_dir` right now?
pub fn agent_running(state_dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(state_dir.join(LOCK_NAME))
    else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// `run --recover`: moves a damaged journal (and its -wal/-shm) aside as
/// `journal.sqlite3.damaged-<unix ms>` and returns the new name; the next
/// open starts empty and adoption rebuilds the state from the workspace.
pub fn move_aside(state_dir: &Path) -> Result<Option<PathBuf>, JournalError> {
    let path = db_path(state_dir);
    if !path.exists() {
        return Ok(None);
    }
    let aside = state_dir.join(format!("{DB_NAME}.damaged-{}", now_ms()));
    let io = |e: std::io::Error| JournalError::Open {
        path: state_dir.to_path_buf(),
        message: format!("cannot move the damaged journal aside: {e}"),
    };
    std::fs::rename(&path, &aside).map_err(io)?;
    for ext in ["-wal", "-shm"] {
        let side = state_dir.join(format!("{DB_NAME}{ext}"));
        if side.exists() {
            std::fs::rename(&side, state_dir.join(format!("{}{ext}", aside.display()))).map_err(io)?;
        }
    }
    Ok(Some(aside))
}

/// The journal, whichever backend holds it. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Sqlite),
    /// `[fleet]`: the shared queue in PostgreSQL, beside this node's SQLite
    /// journal (operations the fleet does not change are the local one's).
    Fleet(Fleet),
}

/// Writes each operation of the interface once: its signature and what it
/// promises, dispatched to the backend.
macro_rules! journal_interface {
    ($($(#[$doc:meta])* async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Journal {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, JournalError> {
                    match &self.backend {
                        Backend::Sqlite(b) => b.$name($($arg),*).await,
                        Backend::Fleet(b) => b.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

journal_interface! {
    /// A file's record, if it has one.
    async fn lookup(&self, root: String, rel: String) -> Option<FileRow>;
    /// Whether a finished file version needs uploading ([`Verdict`]).
    async fn verdict(&self, root: String, rel: String, now: FileId) -> Verdict;
    /// Queues a stable file (in an upload set, `(set, phase)`: held until
    /// the set is ready); with a remote key another live file holds, fails
    /// it instead and returns that file's local path.
    async fn enqueue(
        &self,
        root: String,
        rel: String,
        fp: Fingerprint,
        remote_key: Option<String>,
        set: Option<(String, i64)>
    ) -> Option<String>;
    /// A touched, chmod-ed, restored or moved-in but identical file: its
    /// mtime, inode and ctime now, so it is not hashed again.
    async fn refresh_done_identity(&self, id: i64, now: FileId) -> ();
    /// Up to `limit` queued files due at `now` (unix ms), in the order
    /// `serving` says, leaving out `skip` and `tried`.
    async fn due(
        &self,
        now: i64,
        limit: usize,
        skip: Vec<i64>,
        tried: Option<std::sync::Arc<std::collections::HashSet<i64>>>,
        serving: Serving
    ) -> Vec<FileRow>;
    /// When the next queued file is due (unix ms).
    async fn next_due(&self) -> Option<i64>;
    /// Queued files wait until `at` (unix ms), no attempt spent.
    async fn postpone(&self, ids: Vec<i64>, at: i64) -> ();
    /// Backoff set under a wall clock that has since been stepped back is
    /// counted from `now` instead (how many files moved).
    async fn rebase_backoff(&self, now: i64) -> usize;
    async fn set_state(&self, id: i64, state: State) -> ();
    /// The uploaded versions of the files directly in one folder of a root.
    async fn done_in(&self, root: String, folder: String) -> FolderDone;
    /// Files recorded as done (all, or under `paths`), for `verify`.
    async fn done_files(&self, paths: Vec<PathBuf>) -> Vec<FileRow>;
    /// `verify --requeue`: done files the workspace lost go back to the queue.
    async fn requeue(&self, ids: Vec<i64>) -> usize;
    /// A queued file is uploaded: its result, its session dropped, history.
    async fn record_done(&self, id: i64, d: DoneRecord) -> ();
    /// `upload` of one file: its record id (created if none) and the session
    /// left by an interrupted upload of it, if any.
    async fn upload_slot(&self, root: String, rel: String, fp: Fingerprint) -> (i64, Option<SavedSession>);
    /// A file uploaded outside the queue (`upload`): recorded as done.
    async fn record_upload(&self, root: String, rel: String, d: DoneRecord) -> ();
    /// A failed attempt: retried at `retry_at`, or failed after `max_attempts`.
    async fn record_failure(&self, id: i64, error: String, max_attempts: u32, retry_at: i64) -> State;
    /// A held file's hash and the version it is of (the upload skips hashing
    /// it again if the file is still that version).
    async fn record_prehash(&self, root: String, rel: String, file: FileId, sha256: String) -> ();
    /// A file left out by policy (`existing = "skip"`, `max_age`), until it changes.
    async fn record_skipped(&self, root: String, rel: String, fp: Fingerprint) -> ();
    /// When `root` was first watched with `existing = "skip"` (now, if never).
    async fn first_watched(&self, root: String, now: i64) -> i64;
    /// When the file was last uploaded, newest first (up to `limit`).
    async fn recent_uploads(&self, root: String, rel: String, limit: usize) -> Vec<i64>;
    /// First-watch times later than `at` (set under a clock that stood
    /// ahead) become `at` (how many roots moved).
    async fn clamp_first_watched(&self, at: i64) -> usize;
    /// The file vanished.
    async fn mark_gone(&self, root: String, rel: String) -> ();
    /// `retry`: failed files (all, or under `paths`) go back to the queue.
    async fn retry(&self, paths: Vec<PathBuf>) -> Retried;
    /// The upload in flight for file `id`, as recorded.
    async fn session(&self, id: i64) -> Option<SavedSession>;
    /// A multipart session began for this file version.
    async fn save_session(&self, id: i64, s: Session, file: FileId, sha256: String) -> ();
    /// A direct upload of this file version is about to be sent.
    async fn direct_sending(&self, id: i64, began_at_ms: i64, file: FileId, sha256: String) -> ();
    /// The outcome of a sent complete or direct upload is being looked up.
    async fn reconciling(&self, id: i64) -> ();
    /// The service stored something other than this version's bytes for
    /// it (`file_no`): counted per file and content; the count so far.
    async fn note_stray_copy(&self, id: i64, sha256: String, file_no: String) -> u32;
    /// How many such objects this version (by content) has so far.
    async fn stray_copies(&self, id: i64, sha256: String) -> u32;
    /// Complete is about to be sent (every part mark before it is recorded).
    async fn completing(&self, id: i64) -> ();
    async fn drop_session(&self, id: i64) -> ();
    /// The running agent's heartbeat and live snapshot (for `status`).
    async fn heartbeat(&self, pid: u32, started_at: i64, last_event_at: Option<i64>, snapshot: String) -> ();
    /// The upload sets of `root` not complete yet.
    async fn open_sets(&self, root: String) -> Vec<SetRow>;
    /// The files of one set (not gone), by path.
    async fn set_files(&self, root: String, set_rel: String) -> Vec<SetFile>;
    /// What the agent decided for a set: wait (and why), release a phase,
    /// send the manifest, or complete.
    async fn step_set(&self, root: String, set_rel: String, step: SetStep, now: i64) -> ();
    /// The pause the user set (`pause`), if one holds.
    async fn user_pause(&self) -> Option<UserPause>;
    /// Sets (or, with None, lifts) the user's pause; it outlives a restart.
    async fn set_user_pause(&self, pause: Option<UserPause>) -> ();
    /// Notifications to deliver, kept until their receiver takes them.
    async fn outbox_push(&self, items: Vec<OutboxItem>, now: i64) -> ();
    /// Up to `limit` notifications due at `now`, oldest first.
    async fn outbox_due(&self, now: i64, limit: usize) -> Vec<OutboxRow>;
    /// When the next notification is due (unix ms), if any waits.
    async fn outbox_next(&self) -> Option<i64>;
    async fn outbox_delivered(&self, id: i64) -> ();
    /// A delivery failed: tried again at `next_at`.
    async fn outbox_retry(&self, id: i64, next_at: i64, error: String) -> ();
    /// Waits until every earlier call is durable.
    async fn flush(&self) -> ();
    /// After a clean stop: everything durable and tidy.
    async fn checkpoint(&self) -> ();
}

impl Journal {
    /// Opens (creating and migrating) the SQLite journal in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        Ok(Journal {
            backend: Backend::Sqlite(Sqlite::open(state_dir)?),
        })
    }

    /// Opens a fleet node's journal: the local one in `state_dir` and the
    /// shared queue in the `[fleet]` database; `shares` maps each root's
    /// key to its share name.
    pub async fn open_fleet(
        state_dir: &Path,
        fleet: &crate::config::FleetSettings,
        shares: std::collections::HashMap<String, String>,
    ) -> Result<Journal, JournalError> {
        Ok(Journal {
            backend: Backend::Fleet(Fleet::open(state_dir, fleet, shares).await?),
        })
    }

    /// Marks part `index` of file `id`'s session stored, without waiting
    /// (a lost mark only re-sends a part).
    pub fn part_done(&self, id: i64, index: usize) {
        match &self.backend {
            Backend::Sqlite(b) => b.part_done(id, index),
            Backend::Fleet(b) => b.part_done(id, index),
        }
    }

    /// In a fleet: the upload of `id` stopped because this node no longer
    /// holds its claim (another node took it over, or the database is
    /// away), and why. It is then not a failure of the file.
    /// `failed`: the upload ended in an error (the database is asked then).
    pub async fn claim_lost(&self, id: i64, failed: bool) -> Option<String> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Fleet(b) => b.claim_lost(id, failed).await,
        }
    }

    /// In a fleet: how many of this node's files another node held when
    /// last asked (0 without a fleet).
    pub fn held_elsewhere(&self) -> usize {
        match &self.backend {
            Backend::Sqlite(_) => 0,
            Backend::Fleet(b) => b.held_elsewhere(),
        }
    }

    /// In a fleet: the roots' share names (after a reload).
    pub fn set_shares(&self, shares: std::collections::HashMap<String, String>) {
        if let Backend::Fleet(b) = &self.backend {
            b.set_shares(shares);
        }
    }

    /// In a fleet: the fleet as this node last read it (None without one).
    pub fn fleet_view(&self) -> Option<serde_json::Value> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Fleet(b) => Some(b.view()),
        }
    }

    /// The SQLite backend, for tests that look at its tables.
    #[cfg(test)]
    fn sqlite(&self) -> &Sqlite {
        match &self.backend {
            Backend::Sqlite(b) => b,
            Backend::Fleet(b) => b,
        }
    }
}
