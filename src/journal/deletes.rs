//! Deletes mirrored to the workspace (`mirror_deletes`): uploaded files
//! found missing, how long they have been missing, the remote delete
//! journaled before it is sent, and what was deleted (history), which the
//! brake (`max_delete` per hour) counts.

use rusqlite::{OptionalExtension, params};

use super::*;

/// An uploaded file of a root, as a sweep for missing files sees it.
#[derive(Debug, Clone)]
pub struct DoneEntry {
    pub id: i64,
    pub rel: String,
    /// The device the uploaded version was on (None: not known, as in
    /// records from before v5; such a file's remote copy is never deleted).
    pub dev: Option<u64>,
    pub file_no: String,
    pub remote_folder: String,
    pub remote_name: String,
}

/// Where a file whose remote copy is deleted went, when it was moved
/// (the same device, inode and content recorded under another path).
#[derive(Debug, Clone)]
pub struct MovedTo {
    pub root: String,
    pub rel: String,
    pub remote_folder: String,
    pub remote_name: String,
}

/// A remote copy waiting to be deleted (its file missing since `gone_at`).
#[derive(Debug, Clone)]
pub struct PendingDelete {
    pub id: i64,
    pub rel: String,
    pub dev: Option<u64>,
    pub file_no: String,
    pub remote_folder: String,
    pub remote_name: String,
    pub size: i64,
    pub sha256: Option<String>,
    pub gone_at: i64,
    /// The DELETE was sent before (a crash, a lost answer): send it again.
    pub sending: bool,
}

/// How many uploaded files of `root` are missing and wait.
fn waiting(c: &rusqlite::Connection, root: &str) -> rusqlite::Result<usize> {
    c.query_row(
        "SELECT count(*) FROM deletes d JOIN files f ON f.id = d.file_id WHERE f.root = ?1",
        params![root],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as usize)
}

fn released_key(root: &str) -> String {
    format!("deletes_released {root}")
}

impl Sqlite {
    /// Up to `limit` uploaded files of `root` after record `after_id`, in
    /// id order, leaving out those whose local file the agent itself
    /// deleted or moved (`after_upload`) and those another record took
    /// over (a local rename shares its remote file).
    pub async fn done_page(
        &self,
        root: String,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<DoneEntry>, JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT f.id, f.rel, f.done_dev, f.file_no, f.remote_path, f.remote_name FROM files f
                 WHERE f.root = ?1 AND f.id > ?2 AND f.state = 'done' AND f.file_no IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM history h WHERE h.root = f.root AND h.rel = f.rel
                                   AND h.file_no = f.file_no AND h.after IS NOT NULL)
                 ORDER BY f.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![root, after_id, limit as i64], |r| {
                Ok(DoneEntry {
                    id: r.get(0)?,
                    rel: r.get(1)?,
                    dev: r.get::<_, Option<i64>>(2)?.map(|d| d as u64),
                    file_no: r.get(3)?,
                    remote_folder: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    remote_name: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Whether another record still uses file `id`'s remote file (two
    /// local copies adopted as one remote file, a rename): then its remote
    /// copy is not deleted.
    pub async fn remote_shared(&self, id: i64) -> Result<bool, JournalError> {
        self.call(move |c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM files f, files o WHERE f.id = ?1 AND o.file_no = f.file_no
                                AND o.id != f.id AND o.state = 'done')",
                params![id],
                |r| r.get(0),
            )
        })
        .await
    }

    /// The done record file `id` lives on as, if it was moved (same
    /// device, inode, size and sha256 under another path, any root).
    pub async fn moved_to(&self, id: i64) -> Result<Option<MovedTo>, JournalError> {
        self.call(move |c| {
            c.query_row(
                "SELECT o.root, o.rel, o.remote_path, o.remote_name FROM files f, files o
                 WHERE f.id = ?1 AND o.done_ino = f.done_ino AND o.done_dev = f.done_dev AND o.id != f.id
                   AND o.done_size = f.done_size AND o.done_sha256 = f.done_sha256 AND o.state = 'done'
                 ORDER BY o.updated_at DESC LIMIT 1",
                params![id],
                |r| {
                    Ok(MovedTo {
                        root: r.get(0)?,
                        rel: r.get(1)?,
                        remote_folder: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        remote_name: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// A sweep's findings: `missing` files start (or go on) waiting from
    /// `now`; `present` ones stop waiting (a delete already sent goes on).
    pub async fn note_missing(
        &self,
        missing: Vec<i64>,
        present: Vec<i64>,
        now: i64,
    ) -> Result<(), JournalError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            for id in &missing {
                tx.execute(
                    "INSERT OR IGNORE INTO deletes (file_id, gone_at) VALUES (?1, ?2)",
                    params![id, now],
                )?;
            }
            for id in &present {
                tx.execute(
                    "DELETE FROM deletes WHERE file_id = ?1 AND sending_at IS NULL",
                    params![id],
                )?;
            }
            tx.commit()
        })
        .await
    }

    /// The remote copies of `root` due for deletion: missing since
    /// `gone_before` or earlier, or already sent; oldest first.
    pub async fn deletes_due(
        &self,
        root: String,
        gone_before: i64,
    ) -> Result<Vec<PendingDelete>, JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT f.id, f.rel, f.done_dev, f.file_no, f.remote_path, f.remote_name, f.done_size,
                        f.done_sha256, d.gone_at, d.sending_at IS NOT NULL
                 FROM deletes d JOIN files f ON f.id = d.file_id
                 WHERE f.root = ?1 AND f.state = 'done' AND f.file_no IS NOT NULL
                   AND (d.gone_at <= ?2 OR d.sending_at IS NOT NULL)
                 ORDER BY d.gone_at, f.id",
            )?;
            let rows = stmt.query_map(params![root, gone_before], |r| {
                Ok(PendingDelete {
                    id: r.get(0)?,
                    rel: r.get(1)?,
                    dev: r.get::<_, Option<i64>>(2)?.map(|d| d as u64),
                    file_no: r.get(3)?,
                    remote_folder: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    remote_name: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    size: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                    sha256: r.get(7)?,
                    gone_at: r.get(8)?,
                    sending: r.get(9)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// How many uploaded files of `root` are missing and wait.
    pub async fn deletes_waiting(&self, root: String) -> Result<usize, JournalError> {
        self.call(move |c| waiting(c, &root)).await
    }

    /// The DELETE of file `id`'s remote copy is about to be sent.
    pub async fn delete_sending(&self, id: i64, now: i64) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE deletes SET sending_at = ?2 WHERE file_id = ?1",
                params![id, now],
            )
            .map(drop)
        })
        .await
    }

    /// File `id`'s remote copy is deleted: history says so (`what`
    /// became of the local file; `counted`: it counts toward `max_delete`),
    /// and the record goes (a file made again at that path is new).
    pub async fn deleted_remote(
        &self,
        id: i64,
        counted: bool,
        what: String,
        now: i64,
    ) -> Result<(), JournalError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            tx.execute(
                "INSERT INTO history (root, rel, ok, remote_folder, remote_name, file_no, size, sha256, at, after, event)
                 SELECT root, rel, 1, remote_path, remote_name, file_no, done_size, done_sha256, ?2, ?4, ?3
                 FROM files WHERE id = ?1",
                params![id, now, if counted { "deleted" } else { "deleted_released" }, what],
            )?;
            tx.execute("DELETE FROM files WHERE id = ?1", params![id])?;
            tx.commit()
        })
        .await
    }

    /// Remote deletes of `root` counted toward `max_delete` after `since`.
    pub async fn deleted_since(&self, root: String, since: i64) -> Result<usize, JournalError> {
        self.call(move |c| {
            c.query_row(
                "SELECT count(*) FROM history WHERE root = ?1 AND event = 'deleted' AND at > ?2",
                params![root, since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
        })
        .await
    }

    /// When `release --deletes` last let `root`'s waiting deletes go (0: never).
    pub async fn deletes_released(&self, root: String) -> Result<i64, JournalError> {
        self.call(move |c| {
            let v: Option<String> = c
                .query_row(
                    "SELECT value FROM agent_state WHERE key = ?1",
                    params![released_key(&root)],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
        })
        .await
    }

    /// `release --deletes`: the deletes of `root` waiting at `now` go,
    /// beyond the brake; how many wait.
    pub async fn release_deletes(&self, root: String, now: i64) -> Result<usize, JournalError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO agent_state (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = ?2",
                params![released_key(&root), now.to_string()],
            )?;
            waiting(c, &root)
        })
        .await
    }
}
