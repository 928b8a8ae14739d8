//! The schema: versioned steps applied by `user_version`, and the indexed
//! expressions queries must spell exactly.

use rusqlite::Connection;

use super::*;

/// The folder part of `rel` with its trailing `/` ("a/b/" of "a/b/c.mov",
/// "" of "c.mov"): every character but `/` trimmed from the right. Queries
/// must spell it exactly so to use the `files_folder` index.
pub(super) const FOLDER_OF_REL: &str = "rtrim(rel, replace(rel, '/', ''))";

/// Files waiting for an upload (or its outcome). Queries must spell it
/// exactly so to use the partial `files_due` index.
macro_rules! queued {
    () => {
        "state IN ('pending', 'uploading', 'reconciling')"
    };
}
pub(super) const QUEUED: &str = queued!();

/// The queued files due at ?1, in the order they are served.
pub(super) const DUE_FROM: &str = concat!(
    "FROM files INDEXED BY files_due WHERE ",
    queued!(),
    " AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id"
);

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
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
