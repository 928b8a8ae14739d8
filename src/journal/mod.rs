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
//! backends that each implement the trait [`Store`]: SQLite (`sqlite.rs`)
//! and the fleet (`fleet/`: PostgreSQL beside the local SQLite journal).
//! The interface is the list in `store.rs`; what only a fleet does is
//! reached through [`Journal::fleet`].
//!
//! Rooms: this file holds [`Journal`], the errors and the state-dir lock;
//! `store` the interface;
//! `sqlite` opens, guards (identity, damage) and runs the owner thread;
//! `schema` applies the numbered steps in `migrations/`; `records` is what is
//! recorded about a file; `queue` the queue and each file's transitions;
//! `done` what verify, retry and adoption read of done files; `policies`
//! what `existing`, `max_age`, `min_interval` and held sets record;
//! `sessions` the uploads in flight; `control` the user's pause and the
//! notification outbox; `sets` upload sets; `report` the read-only views for
//! `status` and `history`. No SQL lives outside this module.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api::Session;
use crate::fileid::{FileId, Fingerprint};

mod control;
mod deletes;
mod done;
mod fleet;
mod folders;
mod policies;
mod queue;
mod records;
mod report;
mod schema;
mod sessions;
mod sets;
mod sqlite;
mod store;
#[cfg(test)]
mod tests;

pub use control::{OutboxItem, OutboxRow, UserPause};
pub use deletes::{DoneEntry, MovedTo, PendingDelete};
pub use fleet::Fleet;
pub use folders::{DoneBelow, FolderRename, FolderRenameAsk};
pub use records::{
    DoneRecord, FileRow, FolderDone, RenameSource, Retried, SavedSession, Serving, State, Verdict,
};
use records::{FILE_COLS, file_row};
pub use report::{AgentRow, HistoryRow, Reader, RootCounts};
use report::{agent_row, open_read_only};
pub use sets::{SetFile, SetRow, SetStep};
pub use sqlite::Sqlite;
pub use store::Store;

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
    crate::private::state_dir(state_dir).map_err(|e| JournalError::Open {
        path: state_dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(state_dir.join(LOCK_NAME)).map_err(open_err)?;
    // `status`, `check` and the dashboard ask whether an agent runs by
    // taking the lock shared for an instant (`agent_running`). An agent
    // starting in that instant would take the probe for a running agent and
    // refuse to start (CI's restart test did; a monitor polling `status` at
    // login would). A held lock is tried again for a while: a probe lets go
    // within microseconds, a running agent never does. The wait blocks the
    // start-up thread, before any task of the agent runs.
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(AgentLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked {
                    path: state_dir.to_path_buf(),
                    holder: lock_holder(state_dir),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
        }
    }
}

/// How long a starting agent keeps trying a held lock before it says
/// another agent runs.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(1500);

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

/// Is an agent holding the lock on `state_dir` right now? Probes with a
/// shared lock, so probes never block each other; an agent starting during
/// the probe waits it out (`lock_agent`).
pub fn agent_running(state_dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .open(state_dir.join(LOCK_NAME))
    else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
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
    /// journal.
    Fleet(Fleet),
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

    /// The fleet backend, for what only a fleet does (None without one).
    pub fn fleet(&self) -> Option<&Fleet> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Fleet(b) => Some(b),
        }
    }

    /// The SQLite backend, for tests that look at its tables.
    #[cfg(test)]
    fn sqlite(&self) -> &Sqlite {
        match &self.backend {
            Backend::Sqlite(b) => b,
            Backend::Fleet(b) => b.local(),
        }
    }
}
