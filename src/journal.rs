//! The journal: an SQLite database (WAL, synchronous=FULL) in `state_dir` that
//! records every file's state, fingerprint, in-flight multipart session and
//! result, so a crash at any instant resumes from what was recorded.
//!
//! One owner thread holds the write connection; everyone else sends it
//! closures over a channel (FIFO, so a later call that is awaited also
//! proves every earlier call committed). `status` and `history` open their
//! own read-only connection, which WAL lets run beside a live agent.
//! A lock file (`agent.lock`) keeps a second agent off the same state dir.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use crate::api::Session;
use crate::fileid::{FileId, Fingerprint};

const SCHEMA_VERSION: i64 = 3;
pub const DB_NAME: &str = "journal.sqlite3";
pub const LOCK_NAME: &str = "agent.lock";

#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("cannot use the state dir {path}: {message}; check `agent.state_dir` and free disk space")]
    Open { path: PathBuf, message: String },
    #[error(
        "another autorender-sync agent is already running on {0}; stop it first (or give this one another `agent.state_dir`)"
    )]
    Locked(PathBuf),
    #[error(
        "journal write failed: {0}; check that the disk holding `agent.state_dir` has free space and is writable"
    )]
    Db(String),
    #[error("the journal thread has stopped")]
    Closed,
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

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Settling,
    Pending,
    Uploading,
    /// A complete or direct upload was sent without a plain answer; the
    /// workspace is being asked whether it holds the file.
    Reconciling,
    Done,
    Failed,
    Gone,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Settling => "settling",
            State::Pending => "pending",
            State::Uploading => "uploading",
            State::Reconciling => "reconciling",
            State::Done => "done",
            State::Failed => "failed",
            State::Gone => "gone",
        }
    }
    fn parse(s: &str) -> State {
        match s {
            "settling" => State::Settling,
            "pending" => State::Pending,
            "uploading" => State::Uploading,
            "reconciling" => State::Reconciling,
            "done" => State::Done,
            "failed" => State::Failed,
            _ => State::Gone,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    pub id: i64,
    pub root: String,
    pub rel: String,
    pub state: State,
    pub size: i64,
    pub mtime_ns: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub done_size: Option<i64>,
    pub done_mtime_ns: Option<i64>,
    pub done_sha256: Option<String>,
    pub file_no: Option<String>,
    pub url: Option<String>,
    pub remote_path: Option<String>,
    /// No record existed when it was queued: check the workspace first.
    pub adopt: bool,
    /// The name the service gave the file (done files).
    pub remote_name: Option<String>,
}

impl FileRow {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            size: self.size as u64,
            mtime_ns: self.mtime_ns as i128,
        }
    }
    pub fn local_path(&self) -> PathBuf {
        Path::new(&self.root).join(&self.rel)
    }
}

const FILE_COLS: &str = "id, root, rel, state, size, mtime_ns, attempts, last_error, next_attempt_at, \
    done_size, done_mtime_ns, done_sha256, file_no, url, remote_path, adopt, remote_name";

fn file_row(r: &rusqlite::Row) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        root: r.get(1)?,
        rel: r.get(2)?,
        state: State::parse(&r.get::<_, String>(3)?),
        size: r.get(4)?,
        mtime_ns: r.get(5)?,
        attempts: r.get(6)?,
        last_error: r.get(7)?,
        next_attempt_at: r.get(8)?,
        done_size: r.get(9)?,
        done_mtime_ns: r.get(10)?,
        done_sha256: r.get(11)?,
        file_no: r.get(12)?,
        url: r.get(13)?,
        remote_path: r.get(14)?,
        adopt: r.get::<_, i64>(15)? != 0,
        remote_name: r.get(16)?,
    })
}

/// A multipart session saved for resuming.
#[derive(Debug, Clone)]
pub struct SavedSession {
    pub session: Session,
    pub done: Vec<bool>,
    pub fingerprint: Fingerprint,
    pub sha256: String,
    pub completing: bool,
    /// A direct upload in flight (no parts; only its start time).
    pub direct: bool,
    /// The version being sent (None in journals from before v3).
    pub file_id: Option<FileId>,
}

/// What a finished upload recorded.
#[derive(Debug, Clone)]
pub struct DoneRecord {
    pub fingerprint: Fingerprint,
    pub sha256: String,
    pub remote_folder: String,
    pub remote_name: String,
    pub file_no: String,
    pub url: Option<String>,
    /// Recorded by adoption (how it was proven the same), not uploaded.
    pub adopted: Option<String>,
}

/// What a call does once its batch is committed (or failed to commit).
type Reply = Box<dyn FnOnce(Result<(), JournalError>) + Send>;
/// A queued call: runs inside the batch's transaction, answers after commit.
type Call = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;

/// Most calls grouped into one transaction (one fsync).
const MAX_BATCH: usize = 512;

/// Handle to the journal's owner thread. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Call>,
    path: PathBuf,
}

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
    std::fs::create_dir_all(state_dir).map_err(open_err)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join(LOCK_NAME))
        .map_err(open_err)?;
    match file.try_lock() {
        Ok(()) => Ok(AgentLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Locked(state_dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(open_err(e)),
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

/// The folder part of `rel` with its trailing `/` ("a/b/" of "a/b/c.mov",
/// "" of "c.mov"): every character but `/` trimmed from the right. Queries
/// must spell it exactly so to use the `files_folder` index.
const FOLDER_OF_REL: &str = "rtrim(rel, replace(rel, '/', ''))";

/// Files waiting for an upload (or its outcome). Queries must spell it
/// exactly so to use the partial `files_due` index.
macro_rules! queued {
    () => {
        "state IN ('pending', 'uploading', 'reconciling')"
    };
}
const QUEUED: &str = queued!();

/// The queued files due at ?1, in the order they are served.
const DUE_FROM: &str = concat!(
    "FROM files INDEXED BY files_due WHERE ",
    queued!(),
    " AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id"
);

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    // Every step in one transaction: a reader never sees a half-migrated schema.
    let tx = conn.transaction()?;
    if version < 1 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS files (
                id INTEGER PRIMARY KEY,
                root TEXT NOT NULL,
                rel TEXT NOT NULL,
                state TEXT NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                next_attempt_at INTEGER NOT NULL DEFAULT 0,
                done_size INTEGER,
                done_mtime_ns INTEGER,
                done_sha256 TEXT,
                file_no TEXT,
                url TEXT,
                remote_path TEXT,
                updated_at INTEGER NOT NULL,
                UNIQUE (root, rel)
            );
            CREATE INDEX IF NOT EXISTS files_queue ON files (state, next_attempt_at);
            CREATE TABLE IF NOT EXISTS sessions (
                file_id INTEGER PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
                session_id TEXT NOT NULL,
                uuid TEXT,
                part_size INTEGER NOT NULL,
                parts TEXT NOT NULL,
                expire_at INTEGER,
                parts_done TEXT NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                sha256 TEXT NOT NULL,
                completing INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS history (
                id INTEGER PRIMARY KEY,
                root TEXT NOT NULL,
                rel TEXT NOT NULL,
                ok INTEGER NOT NULL,
                remote_folder TEXT,
                remote_name TEXT,
                file_no TEXT,
                url TEXT,
                size INTEGER,
                sha256 TEXT,
                error TEXT,
                at INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS agent (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                pid INTEGER,
                started_at INTEGER,
                heartbeat_at INTEGER,
                last_event_at INTEGER,
                snapshot TEXT
            );",
        )?;
    }
    if version < 2 {
        // v2: reconciliation and adoption. `kind` tells a multipart session
        // from a direct upload in flight; `began_at` is the service's time
        // when it began; `adopt` marks files with no earlier record.
        tx.execute_batch(
            "ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'multipart';
             ALTER TABLE sessions ADD COLUMN began_at INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE files ADD COLUMN adopt INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE files ADD COLUMN remote_name TEXT;
             ALTER TABLE history ADD COLUMN adopted TEXT;",
        )?;
    }
    if version < 3 {
        // v3: the identity of the file version a session sends (inode and
        // ctime, which a copied mtime cannot fake); NULL in older rows. And
        // each file's remote key (folder/NFC name), so two local names that
        // are one remote name are caught.
        tx.execute_batch(
            "ALTER TABLE sessions ADD COLUMN dev INTEGER;
             ALTER TABLE sessions ADD COLUMN ino INTEGER;
             ALTER TABLE sessions ADD COLUMN ctime_ns INTEGER;
             ALTER TABLE files ADD COLUMN remote_key TEXT;
             CREATE INDEX files_remote_key ON files (remote_key);",
        )?;
    }
    // Each file's folder, for scans folder by folder. An index only: older
    // binaries of the same schema version read and write around it.
    // And the queue in the order it is served (rowid = id breaks ties).
    tx.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS files_folder ON files (root, {FOLDER_OF_REL});
         CREATE INDEX IF NOT EXISTS files_due ON files (next_attempt_at) WHERE {QUEUED};"
    ))?;
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

/// A new journal is built beside its final name and renamed into place
/// complete, so the file at `journal.sqlite3` is never seen empty or
/// half-made (by `status`, or by the next start after a crash right here).
fn create(state_dir: &Path, path: &Path) -> Result<(), JournalError> {
    let tmp = state_dir.join(format!("{DB_NAME}.new"));
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", tmp.display()));
    }
    {
        let mut conn = Connection::open(&tmp).map_err(|e| open_error(&tmp, e))?;
        migrate(&mut conn).map_err(|e| open_error(&tmp, e))?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| open_error(&tmp, e))?;
        // Closing the only connection removes the -wal file.
    }
    std::fs::rename(&tmp, path).map_err(|e| JournalError::Open {
        path: state_dir.to_path_buf(),
        message: format!("cannot put the new journal in place: {e}"),
    })
}

/// Which file the journal's connection has open, to notice it was deleted
/// or replaced at its path (an unlinked database accepts writes silently).
struct Identity {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl Identity {
    fn of(path: &Path) -> Identity {
        Identity {
            path: path.to_path_buf(),
            id: file_identity(path),
        }
    }
    fn still_there(&self) -> bool {
        self.id.is_none() || file_identity(&self.path) == self.id
    }
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).ok().map(|_| (0, 0))
    }
}

/// A damaged file is named as such; anything else is a state-dir problem.
fn open_error(path: &Path, e: rusqlite::Error) -> JournalError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(NotADatabase) => JournalError::Damaged {
            path: path.to_path_buf(),
            reason: "it is not an SQLite database (its header is garbage)".into(),
        },
        Some(DatabaseCorrupt) => JournalError::Damaged {
            path: path.to_path_buf(),
            reason: format!("SQLite finds it malformed ({e})"),
        },
        _ => match path.parent() {
            Some(dir) => JournalError::Open {
                path: dir.to_path_buf(),
                message: e.to_string(),
            },
            None => JournalError::Db(e.to_string()),
        },
    }
}

/// Refuses a journal from a newer release before anything touches it.
fn check_version(conn: &Connection, path: &Path) -> Result<(), JournalError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if found > SCHEMA_VERSION {
        return Err(JournalError::Newer {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
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

/// Group commit: runs every call already queued (up to [`MAX_BATCH`]) in one
/// transaction, then commits once and answers every caller. Each call is
/// atomic on its own (one statement, or its own savepoint), so a failing
/// call undoes only itself. Callers hear "done"
/// only after the commit, so durability is unchanged; throughput under load
/// is one fsync per batch instead of one per call.
fn run_batch(conn: &mut Connection, first: Call, rx: &mpsc::Receiver<Call>, identity: &Identity) {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(c) => batch.push(c),
            Err(_) => break,
        }
    }
    let began = conn.execute_batch("BEGIN IMMEDIATE");
    let mut replies = Vec::with_capacity(batch.len());
    for call in batch {
        replies.push(call(conn));
    }
    let committed = match began {
        // A journal deleted (or replaced) under the agent must not go on
        // recording into an unlinked file: nothing commits, everyone hears why.
        Ok(()) if !identity.still_there() => Err(JournalError::Vanished(identity.path.clone())),
        Ok(()) => conn
            .execute_batch("COMMIT")
            .map_err(|e| JournalError::Db(e.to_string())),
        Err(e) => Err(JournalError::Db(e.to_string())),
    };
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for reply in replies {
        reply(committed.clone());
    }
}

impl Journal {
    /// Opens (creating and migrating) the journal and starts its owner thread.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        let open_err = |m: String| JournalError::Open {
            path: state_dir.to_path_buf(),
            message: m,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| open_err(e.to_string()))?;
        let path = db_path(state_dir);
        if !path.exists() {
            create(state_dir, &path)?;
        }
        // SQLite would take an empty file for a new database: a journal that
        // lost its contents must not look like a first run (that re-uploads
        // everything). A new journal is never empty: `create` fills it first.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Err(JournalError::Damaged {
                path,
                reason: "the file is empty (0 bytes)".into(),
            });
        }
        let mut conn = Connection::open(&path).map_err(|e| open_error(&path, e))?;
        check_version(&conn, &path)?;
        migrate(&mut conn).map_err(|e| open_error(&path, e))?;
        let identity = Identity::of(&path);
        let (tx, rx) = mpsc::channel::<Call>();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    run_batch(&mut conn, first, &rx, &identity);
                }
                // Channel closed: fold the WAL back so the file is tidy.
                let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
            })
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Journal {
            tx,
            path: db_path(state_dir),
        })
    }

    /// Runs `f` on the owner thread and waits for its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move |c| {
                let result = f(c);
                Box::new(move |committed: Result<(), JournalError>| {
                    let _ = tx.send(committed.and_then(|()| result.map_err(JournalError::from)));
                })
            }))
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Queues `f` without waiting (ordering with later calls is kept).
    pub fn send<F>(&self, f: F)
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<()> + Send + 'static,
    {
        let _ = self.tx.send(Box::new(move |c| {
            if let Err(e) = f(c) {
                tracing::error!("journal write failed: {e}");
            }
            Box::new(|committed: Result<(), JournalError>| {
                if let Err(e) = committed {
                    tracing::error!("journal commit failed: {e}");
                }
            })
        }));
    }

    pub async fn lookup(&self, root: String, rel: String) -> Result<Option<FileRow>, JournalError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {FILE_COLS} FROM files WHERE root = ?1 AND rel = ?2"),
                params![root, rel],
                file_row,
            )
            .optional()
        })
        .await
    }

    /// Queues a stable file for upload (new, changed, or back from settling).
    /// Queues a stable file for upload (new, changed, or back from settling).
    /// A file with no earlier record is marked for adoption (the workspace
    /// is checked for the same content before it is uploaded). With a
    /// `remote_key`, a file whose key another live file already holds is not
    /// queued but failed, and that file's local path is returned.
    pub async fn enqueue(
        &self,
        root: String,
        rel: String,
        fp: Fingerprint,
        remote_key: Option<String>,
    ) -> Result<Option<String>, JournalError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            let first: Option<(String, String)> = match &remote_key {
                None => None,
                Some(key) => tx
                    .query_row(
                        "SELECT root, rel FROM files WHERE remote_key = ?1 AND state != 'gone'
                           AND NOT (root = ?2 AND rel = ?3) ORDER BY id LIMIT 1",
                        params![key, root, rel],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?,
            };
            let collision = first.map(|(r, l)| Path::new(&r).join(l).display().to_string());
            let (state, error) = match &collision {
                Some(first) => (
                    State::Failed,
                    Some(format!(
                        "its remote name is already taken by {first} (the names differ only by Unicode normalisation \
                         or case); rename one of them"
                    )),
                ),
                None => (State::Pending, None),
            };
            tx.execute(
                "INSERT INTO files (root, rel, state, size, mtime_ns, attempts, next_attempt_at, updated_at, adopt,
                   last_error, remote_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, 1, ?7, ?8)
                 ON CONFLICT (root, rel) DO UPDATE SET state = ?3, size = ?4, mtime_ns = ?5,
                   attempts = 0, last_error = ?7, next_attempt_at = 0, updated_at = ?6, remote_key = ?8",
                params![
                    root,
                    rel,
                    state.as_str(),
                    fp.size as i64,
                    fp.mtime_ns as i64,
                    now_ms(),
                    error,
                    if collision.is_some() { None } else { remote_key }
                ],
            )?;
            if let Some(e) = &error {
                tx.execute(
                    "INSERT INTO history (root, rel, ok, size, error, at) VALUES (?1, ?2, 0, ?3, ?4, ?5)",
                    params![root, rel, fp.size as i64, e, now_ms()],
                )?;
            }
            tx.commit()?;
            Ok(collision)
        })
        .await
    }

    /// A touched but identical file: remember the new mtime so the next look
    /// skips it without hashing.
    pub async fn refresh_done_mtime(&self, id: i64, mtime_ns: i128) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE files SET done_mtime_ns = ?2, mtime_ns = ?2, updated_at = ?3 WHERE id = ?1 AND state = 'done'",
                params![id, mtime_ns as i64, now_ms()],
            )
            .map(|_| ())
        })
        .await
    }

    /// Pending (or interrupted) uploads whose time has come, oldest first.
    /// Up to `limit` queued files due at `now`, oldest first, leaving out
    /// the ids in `skip` and in `tried`.
    pub async fn due(
        &self,
        now: i64,
        limit: usize,
        skip: Vec<i64>,
        tried: Option<std::sync::Arc<std::collections::HashSet<i64>>>,
    ) -> Result<Vec<FileRow>, JournalError> {
        self.call(move |c| {
            // In `files_due` order, so rows are read only until `limit` are
            // found: a queue of 100,000 files costs a few rows per call, not
            // a sort of the whole queue.
            let tried = tried.unwrap_or_default();
            let mut stmt = c.prepare_cached(&format!("SELECT {FILE_COLS} {DUE_FROM}"))?;
            let mut rows = stmt.query(params![now])?;
            let mut out = Vec::new();
            while out.len() < limit {
                let Some(r) = rows.next()? else { break };
                let row = file_row(r)?;
                if !skip.contains(&row.id) && !tried.contains(&row.id) {
                    out.push(row);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Earliest `next_attempt_at` among queued files (to sleep until then).
    pub async fn next_due(&self) -> Result<Option<i64>, JournalError> {
        self.call(|c| {
            c.query_row(
                &format!("SELECT MIN(next_attempt_at) FROM files WHERE {QUEUED}"),
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    pub async fn set_state(&self, id: i64, state: State) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE files SET state = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, state.as_str(), now_ms()],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn session(&self, id: i64) -> Result<Option<SavedSession>, JournalError> {
        self.call(move |c| {
            c.query_row(
                "SELECT session_id, uuid, part_size, parts, expire_at, parts_done, size, mtime_ns, sha256, completing,
                        kind, began_at, dev, ino, ctime_ns
                 FROM sessions WHERE file_id = ?1",
                params![id],
                |r| {
                    let parts: String = r.get(3)?;
                    let parts: Vec<String> = serde_json::from_str(&parts).unwrap_or_default();
                    let done: String = r.get(5)?;
                    Ok(SavedSession {
                        session: Session {
                            session_id: r.get(0)?,
                            uuid: r.get(1)?,
                            part_size: r.get::<_, i64>(2)? as u64,
                            parts: parts.iter().filter_map(|u| url::Url::parse(u).ok()).collect(),
                            expire_at: r.get(4)?,
                            began_at_ms: r.get(11)?,
                        },
                        done: done.chars().map(|ch| ch == '1').collect(),
                        fingerprint: Fingerprint { size: r.get::<_, i64>(6)? as u64, mtime_ns: r.get::<_, i64>(7)? as i128 },
                        sha256: r.get(8)?,
                        completing: r.get::<_, i64>(9)? != 0,
                        direct: r.get::<_, String>(10)? == "direct",
                        file_id: match (r.get::<_, Option<i64>>(12)?, r.get::<_, Option<i64>>(13)?, r.get::<_, Option<i64>>(14)?) {
                            (Some(dev), Some(ino), Some(ctime)) => Some(FileId {
                                dev: dev as u64,
                                ino: ino as u64,
                                size: r.get::<_, i64>(6)? as u64,
                                mtime_ns: r.get::<_, i64>(7)? as i128,
                                ctime_ns: ctime as i128,
                            }),
                            _ => None,
                        },
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Records a multipart session before any part is sent.
    pub async fn save_session(
        &self,
        id: i64,
        s: Session,
        file: FileId,
        sha256: String,
    ) -> Result<(), JournalError> {
        self.call(move |c| insert_session(c, id, Some(&s), s.began_at_ms, file, &sha256))
            .await
    }

    /// Recorded (and committed) before a direct upload is sent: if its
    /// answer never arrives, the next attempt reconciles instead of sending
    /// the file again blind.
    pub async fn direct_sending(
        &self,
        id: i64,
        began_at_ms: i64,
        file: FileId,
        sha256: String,
    ) -> Result<(), JournalError> {
        self.call(move |c| insert_session(c, id, None, began_at_ms, file, &sha256))
            .await
    }

    /// The outcome of a sent complete or direct upload is being looked up.
    pub async fn reconciling(&self, id: i64) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE files SET state = 'reconciling', updated_at = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )
            .map(|_| ())
        })
        .await
    }

    /// Size and mtime of the done files directly in one folder of `root`
    /// (`folder`: root-relative with a trailing `/`, empty for the root),
    /// by relative path. Read through the `files_folder` index, so a scan
    /// costs each folder its own records, whatever the root holds.
    pub async fn done_in(
        &self,
        root: String,
        folder: String,
    ) -> Result<std::collections::HashMap<String, (i64, i64)>, JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT rel, done_size, done_mtime_ns FROM files
                 WHERE root = ?1 AND {FOLDER_OF_REL} = ?2 AND state = 'done'"
            ))?;
            let rows = stmt
                .query_map(params![root, folder], |r| {
                    Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// Files recorded as done (all, or those under `paths`), for `verify`.
    pub async fn done_files(&self, paths: Vec<PathBuf>) -> Result<Vec<FileRow>, JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {FILE_COLS} FROM files WHERE state = 'done' ORDER BY root, rel"
            ))?;
            let rows = stmt
                .query_map([], file_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .filter(|r| paths.is_empty() || paths.iter().any(|p| r.local_path().starts_with(p)))
                .collect())
        })
        .await
    }

    /// `verify --requeue`: done files the workspace no longer holds go back
    /// to the queue (their done record is cleared so nothing skips them).
    pub async fn requeue(&self, ids: Vec<i64>) -> Result<usize, JournalError> {
        self.call(move |c| {
            let mut n = 0;
            for id in ids {
                n += c.execute(
                    "UPDATE files SET state = 'pending', attempts = 0, next_attempt_at = 0, last_error = NULL,
                       done_size = NULL, done_mtime_ns = NULL, adopt = 0, updated_at = ?2
                     WHERE id = ?1 AND state = 'done'",
                    params![id, now_ms()],
                )?;
            }
            Ok(n)
        })
        .await
    }

    /// Marks part `index` stored (not awaited: a lost mark only re-sends a part).
    pub fn part_done(&self, id: i64, index: usize) {
        self.send(move |c| {
            let tx = c.savepoint()?;
            let done: Option<String> = tx
                .query_row(
                    "SELECT parts_done FROM sessions WHERE file_id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(done) = done {
                let mut bytes = done.into_bytes();
                if let Some(b) = bytes.get_mut(index) {
                    *b = b'1';
                }
                let done = String::from_utf8(bytes).unwrap_or_default();
                tx.execute(
                    "UPDATE sessions SET parts_done = ?2 WHERE file_id = ?1",
                    params![id, done],
                )?;
            }
            tx.commit()
        });
    }

    /// Recorded (and committed, with every earlier part mark) before complete is sent.
    pub async fn completing(&self, id: i64) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE sessions SET completing = 1 WHERE file_id = ?1",
                params![id],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn drop_session(&self, id: i64) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute("DELETE FROM sessions WHERE file_id = ?1", params![id])
                .map(|_| ())
        })
        .await
    }

    pub async fn record_done(&self, id: i64, d: DoneRecord) -> Result<(), JournalError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            write_done(&tx, id, &d)?;
            tx.commit()
        })
        .await
    }

    /// Records an upload made outside the queue (`upload FILE`), so history
    /// shows it and an agent watching the same folder does not send it again.
    /// One call: the row is never seen half-recorded by a running agent.
    pub async fn record_upload(&self, root: String, rel: String, d: DoneRecord) -> Result<(), JournalError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            tx.execute(
                "INSERT INTO files (root, rel, state, size, mtime_ns, updated_at) VALUES (?1, ?2, 'done', ?3, ?4, ?5)
                 ON CONFLICT (root, rel) DO UPDATE SET size = ?3, mtime_ns = ?4, updated_at = ?5",
                params![root, rel, d.fingerprint.size as i64, d.fingerprint.mtime_ns as i64, now_ms()],
            )?;
            let id: i64 =
                tx.query_row("SELECT id FROM files WHERE root = ?1 AND rel = ?2", params![root, rel], |r| r.get(0))?;
            write_done(&tx, id, &d)?;
            tx.commit()
        })
        .await
    }

    /// Records a failed attempt: back to pending after `retry_at`, or
    /// `failed` once `max_attempts` is reached. Returns the new state.
    pub async fn record_failure(
        &self,
        id: i64,
        error: String,
        max_attempts: u32,
        retry_at: i64,
    ) -> Result<State, JournalError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            let attempts: i64 = tx.query_row("SELECT attempts FROM files WHERE id = ?1", params![id], |r| r.get(0))?;
            let attempts = attempts + 1;
            let state = if attempts >= max_attempts as i64 { State::Failed } else { State::Pending };
            tx.execute(
                "UPDATE files SET state = ?2, attempts = ?3, last_error = ?4, next_attempt_at = ?5, updated_at = ?6 WHERE id = ?1",
                params![id, state.as_str(), attempts, error, retry_at, now_ms()],
            )?;
            if state == State::Failed {
                tx.execute(
                    "INSERT INTO history (root, rel, ok, size, error, at) SELECT root, rel, 0, size, ?2, ?3 FROM files WHERE id = ?1",
                    params![id, error, now_ms()],
                )?;
            }
            tx.commit()?;
            Ok(state)
        })
        .await
    }

    /// The file vanished: forget its session; a `done` record stays done.
    pub async fn mark_gone(&self, root: String, rel: String) -> Result<(), JournalError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            tx.execute(
                "DELETE FROM sessions WHERE file_id IN (SELECT id FROM files WHERE root = ?1 AND rel = ?2 AND state != 'done')",
                params![root, rel],
            )?;
            tx.execute(
                "UPDATE files SET state = 'gone', updated_at = ?3 WHERE root = ?1 AND rel = ?2 AND state != 'done'",
                params![root, rel, now_ms()],
            )?;
            tx.commit()
        })
        .await
    }

    /// `retry`: failed files (all, or those under the given paths) back to pending.
    pub async fn retry(&self, paths: Vec<PathBuf>) -> Result<usize, JournalError> {
        self.call(move |c| {
            let failed: Vec<(i64, String, String)> = c
                .prepare("SELECT id, root, rel FROM files WHERE state = 'failed'")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut n = 0;
            for (id, root, rel) in failed {
                let full = Path::new(&root).join(&rel);
                if paths.is_empty() || paths.iter().any(|p| full.starts_with(p)) {
                    n += c.execute(
                        "UPDATE files SET state = 'pending', attempts = 0, next_attempt_at = 0, updated_at = ?2 WHERE id = ?1",
                        params![id, now_ms()],
                    )?;
                }
            }
            Ok(n)
        })
        .await
    }

    pub async fn heartbeat(
        &self,
        pid: u32,
        started_at: i64,
        last_event_at: Option<i64>,
        snapshot: String,
    ) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO agent (id, pid, started_at, heartbeat_at, last_event_at, snapshot) VALUES (1, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET pid = ?1, started_at = ?2, heartbeat_at = ?3, last_event_at = ?4, snapshot = ?5",
                params![pid, started_at, now_ms(), last_event_at, snapshot],
            )
            .map(|_| ())
        })
        .await
    }

    /// Waits until every earlier call has been committed.
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.call(|_| Ok(())).await
    }

    /// After a clean stop: everything committed and the WAL folded back, so
    /// the journal is one self-contained file (the `-wal` file left empty).
    /// Runs on its own connection: the owner's is idle between batches, and
    /// a checkpoint cannot run inside the owner's batch transaction.
    pub async fn checkpoint(&self) -> Result<(), JournalError> {
        self.flush().await?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), JournalError> {
            let conn = Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
        .map_err(|e| JournalError::Db(e.to_string()))?
    }
}

/// The session row of file `id`: a multipart `session` with no part done
/// yet, or (None) a direct upload about to be sent, which counts as
/// completing from the start. `file` is the version being sent.
fn insert_session(
    c: &Connection,
    id: i64,
    session: Option<&Session>,
    began_at_ms: i64,
    file: FileId,
    sha256: &str,
) -> rusqlite::Result<()> {
    let (session_id, uuid, part_size, parts, expire_at, done, completing, kind) = match session {
        Some(s) => {
            let urls: Vec<&str> = s.parts.iter().map(|u| u.as_str()).collect();
            (
                s.session_id.as_str(),
                s.uuid.as_deref(),
                s.part_size as i64,
                serde_json::to_string(&urls).unwrap_or_default(),
                s.expire_at,
                "0".repeat(s.parts.len()),
                0,
                "multipart",
            )
        }
        None => ("", None, 1, "[]".to_string(), None, String::new(), 1, "direct"),
    };
    c.execute(
        "INSERT OR REPLACE INTO sessions
         (file_id, session_id, uuid, part_size, parts, expire_at, parts_done, size, mtime_ns, sha256, completing,
          created_at, kind, began_at, dev, ino, ctime_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            id,
            session_id,
            uuid,
            part_size,
            parts,
            expire_at,
            done,
            file.size as i64,
            file.mtime_ns as i64,
            sha256,
            completing,
            now_ms(),
            kind,
            began_at_ms,
            file.dev as i64,
            file.ino as i64,
            file.ctime_ns as i64
        ],
    )
    .map(|_| ())
}

/// Marks file `id` done with its result, drops its session, adds history.
fn write_done(c: &Connection, id: i64, d: &DoneRecord) -> rusqlite::Result<()> {
    let now = now_ms();
    c.execute(
        "UPDATE files SET state = 'done', size = ?2, mtime_ns = ?3, done_size = ?2, done_mtime_ns = ?3,
           done_sha256 = ?4, file_no = ?5, url = ?6, remote_path = ?7, last_error = NULL, updated_at = ?8, adopt = 0,
           remote_name = ?9
         WHERE id = ?1",
        params![
            id,
            d.fingerprint.size as i64,
            d.fingerprint.mtime_ns as i64,
            d.sha256,
            d.file_no,
            d.url,
            d.remote_folder,
            now,
            d.remote_name
        ],
    )?;
    c.execute("DELETE FROM sessions WHERE file_id = ?1", params![id])?;
    c.execute(
        "INSERT INTO history (root, rel, ok, remote_folder, remote_name, file_no, url, size, sha256, at, adopted)
         SELECT root, rel, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 FROM files WHERE id = ?1",
        params![
            id,
            d.remote_folder,
            d.remote_name,
            d.file_no,
            d.url,
            d.fingerprint.size as i64,
            d.sha256,
            now,
            d.adopted
        ],
    )?;
    Ok(())
}

/// Read-only access for `status` and `history`, safe beside a running agent.
pub fn open_read_only(state_dir: &Path) -> Result<Option<Connection>, JournalError> {
    let path = db_path(state_dir);
    if !path.exists() {
        return Ok(None);
    }
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
        return Err(JournalError::Damaged {
            path,
            reason: "the file is empty (0 bytes)".into(),
        });
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_error(&path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    check_version(&conn, &path)?;
    // An agent may have created the file but not yet the schema.
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| open_error(&path, e))?;
    if version == 0 {
        return Ok(None);
    }
    // Readers never migrate (they may run beside an old agent); they need
    // the current schema.
    if version < SCHEMA_VERSION {
        return Err(JournalError::Older { path, found: version });
    }
    Ok(Some(conn))
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub local_path: String,
    pub ok: bool,
    pub remote_folder: Option<String>,
    pub remote_name: Option<String>,
    pub file_no: Option<String>,
    pub url: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
    /// Recorded by adoption, not uploaded: how the copy was proven the same.
    pub adopted: Option<String>,
}

pub fn history(conn: &Connection, limit: usize, failed_only: bool) -> Result<Vec<HistoryRow>, JournalError> {
    let mut stmt = conn.prepare(
        "SELECT root, rel, ok, remote_folder, remote_name, file_no, url, size, sha256, error, at, adopted FROM history
         WHERE (?1 = 0 OR ok = 0) ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![failed_only as i64, limit as i64], |r| {
            let root: String = r.get(0)?;
            let rel: String = r.get(1)?;
            Ok(HistoryRow {
                local_path: Path::new(&root).join(rel).display().to_string(),
                ok: r.get::<_, i64>(2)? != 0,
                remote_folder: r.get(3)?,
                remote_name: r.get(4)?,
                file_no: r.get(5)?,
                url: r.get(6)?,
                size: r.get(7)?,
                sha256: r.get(8)?,
                error: r.get(9)?,
                at: r.get(10)?,
                adopted: r.get(11)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RootCounts {
    pub root: String,
    pub settling: i64,
    pub growing: i64,
    pub pending: i64,
    pub uploading: i64,
    pub reconciling: i64,
    pub uploading_bytes_done: i64,
    pub failed: i64,
    pub done: i64,
    pub gone: i64,
    pub failures: Vec<(String, String)>,
    /// Pending files whose last attempt failed (retried after a backoff).
    pub retrying: Vec<(String, String)>,
    /// How the running agent watches this root ("native", "poll …"); None
    /// when no agent runs.
    pub watch: Option<String>,
}

/// Per-root counts by state, with bytes done for uploads in flight and the
/// last error of each failed file.
pub fn counts(conn: &Connection) -> Result<Vec<RootCounts>, JournalError> {
    let mut out: Vec<RootCounts> = Vec::new();
    let mut stmt =
        conn.prepare("SELECT root, state, COUNT(*) FROM files GROUP BY root, state ORDER BY root")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (root, state, n) in rows {
        if out.last().is_none_or(|c| c.root != root) {
            out.push(RootCounts {
                root: root.clone(),
                ..Default::default()
            });
        }
        let c = out.last_mut().expect("pushed above");
        match State::parse(&state) {
            State::Settling => c.settling += n,
            State::Pending => c.pending += n,
            State::Uploading => c.uploading += n,
            State::Reconciling => c.reconciling += n,
            State::Done => c.done += n,
            State::Failed => c.failed += n,
            State::Gone => c.gone += n,
        }
    }
    let mut stmt = conn.prepare(
        "SELECT f.root, s.parts_done, s.part_size, s.size FROM sessions s JOIN files f ON f.id = s.file_id
         WHERE f.state = 'uploading'",
    )?;
    let sessions = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (root, done, part_size, size) in sessions {
        let bytes: i64 = done
            .chars()
            .enumerate()
            .filter(|(_, ch)| *ch == '1')
            .map(|(i, _)| (size - i as i64 * part_size).clamp(0, part_size))
            .sum();
        if let Some(c) = out.iter_mut().find(|c| c.root == root) {
            c.uploading_bytes_done += bytes;
        }
    }
    // Failed files, and pending ones whose last attempt failed (retrying
    // after a backoff), each with its last error.
    let mut stmt = conn.prepare(
        "SELECT root, rel, COALESCE(last_error, ''), state FROM files
         WHERE state = 'failed' OR (state = 'pending' AND attempts > 0 AND last_error IS NOT NULL)
         ORDER BY updated_at DESC",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (root, rel, err, state) in rows {
        if let Some(c) = out.iter_mut().find(|c| c.root == root) {
            if state == "failed" {
                c.failures.push((rel, err));
            } else {
                c.retrying.push((rel, err));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub pid: Option<i64>,
    pub started_at: Option<i64>,
    pub heartbeat_at: Option<i64>,
    pub last_event_at: Option<i64>,
    pub snapshot: Option<String>,
}

pub fn agent_row(conn: &Connection) -> Result<Option<AgentRow>, JournalError> {
    Ok(conn
        .query_row(
            "SELECT pid, started_at, heartbeat_at, last_event_at, snapshot FROM agent WHERE id = 1",
            [],
            |r| {
                Ok(AgentRow {
                    pid: r.get(0)?,
                    started_at: r.get(1)?,
                    heartbeat_at: r.get(2)?,
                    last_event_at: r.get(3)?,
                    snapshot: r.get(4)?,
                })
            },
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(size: u64, m: i128) -> Fingerprint {
        Fingerprint { size, mtime_ns: m }
    }

    #[tokio::test]
    async fn queue_session_and_done_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.enqueue("/r".into(), "a.mp4".into(), fp(10, 5), None)
            .await
            .unwrap();
        let due = j.due(now_ms(), 10, vec![], None).await.unwrap();
        assert_eq!(due.len(), 1);
        let id = due[0].id;
        let s = Session {
            session_id: "s1".into(),
            uuid: Some("u".into()),
            part_size: 4,
            parts: (0..3)
                .map(|i| url::Url::parse(&format!("https://x/{i}")).unwrap())
                .collect(),
            expire_at: Some(99),
            began_at_ms: 1_000,
        };
        let file = FileId {
            dev: 1,
            ino: 2,
            size: 10,
            mtime_ns: 5,
            ctime_ns: 6,
        };
        j.save_session(id, s.clone(), file, "abc".into()).await.unwrap();
        j.part_done(id, 1);
        j.completing(id).await.unwrap();
        let saved = j.session(id).await.unwrap().unwrap();
        assert_eq!(saved.session, s);
        assert_eq!(saved.done, vec![false, true, false]);
        assert_eq!(saved.file_id, Some(file));
        assert_eq!(saved.fingerprint, fp(10, 5));
        assert!(saved.completing);
        j.record_done(
            id,
            DoneRecord {
                fingerprint: fp(10, 5),
                sha256: "abc".into(),
                remote_folder: "x".into(),
                remote_name: "a.mp4".into(),
                file_no: "7".into(),
                url: None,
                adopted: None,
            },
        )
        .await
        .unwrap();
        let row = j.lookup("/r".into(), "a.mp4".into()).await.unwrap().unwrap();
        assert_eq!(row.state, State::Done);
        assert_eq!(row.done_size, Some(10));
        assert!(j.session(id).await.unwrap().is_none());
        let conn = open_read_only(dir.path()).unwrap().unwrap();
        let h = history(&conn, 10, false).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].file_no.as_deref(), Some("7"));
    }

    #[tokio::test]
    async fn failures_back_off_then_fail_until_retry() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.enqueue("/r".into(), "a".into(), fp(1, 1), None).await.unwrap();
        let id = j.due(now_ms(), 1, vec![], None).await.unwrap()[0].id;
        assert_eq!(
            j.record_failure(id, "boom".into(), 2, now_ms() + 60_000)
                .await
                .unwrap(),
            State::Pending
        );
        assert!(
            j.due(now_ms(), 1, vec![], None).await.unwrap().is_empty(),
            "backing off"
        );
        assert_eq!(
            j.record_failure(id, "boom".into(), 2, 0).await.unwrap(),
            State::Failed
        );
        assert!(j.due(now_ms(), 1, vec![], None).await.unwrap().is_empty());
        assert_eq!(j.retry(vec![]).await.unwrap(), 1);
        assert_eq!(j.due(now_ms(), 1, vec![], None).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_queue_is_read_in_index_order_without_a_sort() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let plan: Vec<String> = j
            .call(|c| {
                let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN SELECT id {DUE_FROM}"))?;
                s.query_map([5], |r| r.get::<_, String>(3))?.collect()
            })
            .await
            .unwrap();
        assert!(plan.iter().any(|p| p.contains("files_due")), "{plan:?}");
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }

    #[tokio::test]
    async fn done_in_a_folder_is_only_that_folder_and_uses_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        for rel in [
            "a/b/x.mov",
            "a/b/y/z.mov",
            "a/b.mov",
            "a/bc/x.mov",
            "a/b0.mov",
            "top.mov",
        ] {
            let d = DoneRecord {
                fingerprint: fp(1, 2),
                sha256: "s".into(),
                remote_folder: "f".into(),
                remote_name: "n".into(),
                file_no: "1".into(),
                url: None,
                adopted: None,
            };
            j.record_upload("/r".into(), rel.into(), d).await.unwrap();
        }
        let keys = |m: std::collections::HashMap<String, (i64, i64)>| {
            let mut k: Vec<String> = m.into_keys().collect();
            k.sort();
            k
        };
        let done_in = |folder: &str| j.done_in("/r".into(), folder.into());
        assert_eq!(keys(done_in("a/b/").await.unwrap()), vec!["a/b/x.mov"]);
        assert_eq!(keys(done_in("a/").await.unwrap()), vec!["a/b.mov", "a/b0.mov"]);
        assert_eq!(keys(done_in("").await.unwrap()), vec!["top.mov"]);
        assert_eq!(keys(done_in("a/b/y/").await.unwrap()), vec!["a/b/y/z.mov"]);
        assert!(j.done_in("/other".into(), "".into()).await.unwrap().is_empty());
        // The query reads the folder index, not the whole table.
        let plan: Vec<String> = j
            .call(|c| {
                let mut s = c.prepare(&format!(
                    "EXPLAIN QUERY PLAN SELECT rel FROM files WHERE root = 'r' AND {FOLDER_OF_REL} = '' AND state = 'done'"
                ))?;
                s.query_map([], |r| r.get::<_, String>(3))?.collect()
            })
            .await
            .unwrap();
        assert!(plan.iter().any(|p| p.contains("files_folder")), "{plan:?}");
    }

    #[test]
    fn second_agent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = lock_agent(dir.path()).unwrap();
        assert!(matches!(lock_agent(dir.path()), Err(JournalError::Locked(_))));
        assert!(agent_running(dir.path()));
    }
}
