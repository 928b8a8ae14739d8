//! The SQLite backend: one owner thread holds the write connection and
//! runs callers' closures in batches (group commit); a journal file that is
//! replaced or emptied under it is refused, never written past.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{Connection, params};

use super::schema::migrate;
use super::*;

/// What a call does once its batch is committed (or failed to commit).
type Reply = Box<dyn FnOnce(Result<(), JournalError>) + Send>;
/// A queued call: runs inside the batch's transaction, answers after commit.
type Call = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;

/// Most calls grouped into one transaction (one fsync).
const MAX_BATCH: usize = 512;

/// The SQLite backend: a handle to the owner thread. Cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    tx: mpsc::Sender<Call>,
    path: PathBuf,
}

/// A new journal is built beside its final name and renamed into place
/// complete, so the file at `journal.sqlite3` is never seen empty or
/// half-made (by `status`, or by the next start after a crash right here).
fn create(state_dir: &Path, path: &Path) -> Result<(), JournalError> {
    let tmp = state_dir.join(format!("{DB_NAME}.new"));
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", tmp.display()));
    }
    // Private from its first byte: SQLite gives the -wal and -shm files the
    // database file's mode, and the journal holds presigned part URLs.
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&tmp).map_err(|e| JournalError::Open {
            path: state_dir.to_path_buf(),
            message: format!("cannot create {}: {e}", tmp.display()),
        })?;
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
pub(super) fn open_error(path: &Path, e: rusqlite::Error) -> JournalError {
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
        _ if is_busy(&e) => JournalError::Busy {
            path: path.to_path_buf(),
            holders: holders_of(path),
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
pub(super) fn check_version(conn: &Connection, path: &Path) -> Result<(), JournalError> {
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
        Err(e) if is_busy(&e) => Err(JournalError::Busy {
            path: identity.path.clone(),
            holders: holders_of(&identity.path),
        }),
        Err(e) => Err(JournalError::Db(e.to_string())),
    };
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for reply in replies {
        reply(committed.clone());
    }
}

impl Sqlite {
    /// Opens (creating and migrating) the journal and starts its owner thread.
    pub fn open(state_dir: &Path) -> Result<Sqlite, JournalError> {
        crate::private::state_dir(state_dir).map_err(|e| JournalError::Open {
            path: state_dir.to_path_buf(),
            message: e.to_string(),
        })?;
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
            .map_err(|e| JournalError::Open {
                path: state_dir.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Sqlite {
            tx,
            path: db_path(state_dir),
        })
    }

    /// Runs `f` on the owner thread and waits for its result.
    pub(super) async fn call<T, F>(&self, f: F) -> Result<T, JournalError>
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
        #[cfg(test)]
        {
            // The owner thread is invisible to tokio's clock: a test that
            // pauses the clock would see it jump ahead while a call is under
            // way. Waiting on the blocking pool holds the paused clock still.
            let waited = tokio::task::spawn_blocking(move || rx.blocking_recv()).await;
            waited
                .map_err(|_| JournalError::Closed)?
                .map_err(|_| JournalError::Closed)?
        }
        #[cfg(not(test))]
        {
            rx.await.map_err(|_| JournalError::Closed)?
        }
    }

    /// Queues `f` without waiting (ordering with later calls is kept).
    pub(super) fn send<F>(&self, f: F)
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

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// " (open in pid 123 sqlite3, …)": the other processes this user can see
/// holding the journal (or its WAL) open, read from /proc; "" elsewhere or
/// when none can be seen.
fn holders_of(journal: &Path) -> String {
    let me = std::process::id().to_string();
    let wal = journal.with_extension("sqlite3-wal");
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return String::new();
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|t| t == journal || t == wal);
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            found.push(format!("pid {pid} {}", crate::text::shown(comm.trim())));
        }
        if found.len() >= 5 {
            break;
        }
    }
    if found.is_empty() {
        String::new()
    } else {
        format!(" (open in {})", found.join(", "))
    }
}
