//! The queue: which files wait, which are due, and each transition of a
//! file's state (done, failed, gone, retried), one transaction each.

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{DUE_FROM, DUE_SMALL_FROM, QUEUED};
use super::*;

/// The longest per-file backoff the agent sets (15 min and its jitter).
pub(crate) const MAX_BACKOFF_MS: i64 = (900 + 225) * 1000;

/// The first `limit` rows that `keep` accepts.
fn first_kept(
    mut rows: rusqlite::Rows<'_>,
    limit: usize,
    keep: impl Fn(&FileRow) -> bool,
) -> rusqlite::Result<Vec<FileRow>> {
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(r) = rows.next()? else { break };
        let row = file_row(r)?;
        if keep(&row) {
            out.push(row);
        }
    }
    Ok(out)
}

impl Sqlite {
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

    /// Whether a finished file version needs uploading (see [`Verdict`]).
    pub async fn verdict(&self, root: String, rel: String, now: FileId) -> Result<Verdict, JournalError> {
        let row = self.lookup(root, rel).await?;
        Ok(Verdict::of(row.as_ref(), &now))
    }

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
        set: Option<(String, i64)>,
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
                None if set.is_some() => (State::Held, None),
                None => (State::Pending, None),
            };
            let (set_rel, phase) = match &set {
                Some((s, p)) => (Some(s.clone()), *p),
                None => (None, 0),
            };
            tx.execute(
                "INSERT INTO files (root, rel, state, size, mtime_ns, attempts, next_attempt_at, updated_at, adopt,
                   last_error, remote_key, set_rel, phase)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, 1, ?7, ?8, ?9, ?10)
                 ON CONFLICT (root, rel) DO UPDATE SET state = ?3, size = ?4, mtime_ns = ?5,
                   attempts = 0, last_error = ?7, next_attempt_at = 0, updated_at = ?6, remote_key = ?8,
                   set_rel = ?9, phase = ?10, pre_sha256 = NULL, pre_dev = NULL, pre_ino = NULL, pre_ctime_ns = NULL",
                params![
                    root,
                    rel,
                    state.as_str(),
                    fp.size as i64,
                    fp.mtime_ns as i64,
                    now_ms(),
                    error,
                    if collision.is_some() { None } else { remote_key },
                    set_rel,
                    phase
                ],
            )?;
            if let Some(set_rel) = &set_rel {
                super::sets::changed(&tx, &root, set_rel, now_ms())?;
            }
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
    pub async fn refresh_done_identity(&self, id: i64, now: FileId) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE files SET done_mtime_ns = ?2, mtime_ns = ?2, done_dev = ?3, done_ino = ?4, done_ctime_ns = ?5,
                   updated_at = ?6
                 WHERE id = ?1 AND state = 'done' AND done_size = ?7",
                params![
                    id,
                    now.mtime_ns as i64,
                    now.dev as i64,
                    now.ino as i64,
                    now.ctime_ns as i64,
                    now_ms(),
                    now.size as i64
                ],
            )
            .map(|_| ())
        })
        .await
    }

    /// Up to `limit` queued files due at `now`, in the order `serving`
    /// says (priority, then `order`; only small ones for the small files'
    /// lane), leaving out the ids in `skip` and in `tried`.
    pub async fn due(
        &self,
        now: i64,
        limit: usize,
        skip: Vec<i64>,
        tried: Option<std::sync::Arc<std::collections::HashSet<i64>>>,
        serving: Serving,
    ) -> Result<Vec<FileRow>, JournalError> {
        self.call(move |c| {
            let tried = tried.unwrap_or_default();
            let keep = |row: &FileRow| !skip.contains(&row.id) && !tried.contains(&row.id);
            if serving.is_plain() {
                // In `files_due` order, so rows are read only until `limit`
                // are found: a queue of 100,000 files costs a few rows per
                // call, not a sort of the whole queue (the small files'
                // lane too: it asks for every free slot of a one-folder
                // ingest, and a sort there made 50,000 files quadratic).
                match serving.max_size {
                    None => {
                        let mut stmt = c.prepare_cached(&format!("SELECT {FILE_COLS} {DUE_FROM}"))?;
                        let rows = stmt.query(params![now])?;
                        first_kept(rows, limit, keep)
                    }
                    Some(max) => {
                        let mut stmt = c.prepare_cached(&format!("SELECT {FILE_COLS} {DUE_SMALL_FROM}"))?;
                        let rows = stmt.query(params![now, max.min(i64::MAX as u64) as i64])?;
                        first_kept(rows, limit, keep)
                    }
                }
            } else {
                // Another order sorts the due files (what a user who asks for
                // "smallest first" pays; fifo stays the index walk above).
                let (sql, values) = serving.query(now);
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query(rusqlite::params_from_iter(values))?;
                first_kept(rows, limit, keep)
            }
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

    /// Backoff deadlines recorded while the wall clock stood ahead of `now`
    /// (it has been stepped back since, across a restart or while running):
    /// each keeps its delay, counted from `now`, instead of waiting out the
    /// step too. Only rows whose failure is recorded more than a minute in
    /// the future, with a plausible backoff (at most [`MAX_BACKOFF_MS`]).
    /// Returns how many were moved.
    pub async fn rebase_backoff(&self, now: i64) -> Result<usize, JournalError> {
        self.call(move |c| {
            c.execute(
                &format!(
                    "UPDATE files SET next_attempt_at = ?1 + (next_attempt_at - updated_at), updated_at = ?1
                     WHERE {QUEUED} AND updated_at > ?1 + 60000
                       AND next_attempt_at >= updated_at AND next_attempt_at - updated_at <= ?2"
                ),
                params![now, MAX_BACKOFF_MS],
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

    /// Queued files wait until `at` (unix ms) without an attempt being
    /// spent (in a fleet: another node holds them, or the database is away).
    pub async fn postpone(&self, ids: Vec<i64>, at: i64) -> Result<(), JournalError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "UPDATE files SET next_attempt_at = MAX(next_attempt_at, ?2) WHERE id = ?1 AND {QUEUED}"
                ))?;
                for id in ids {
                    stmt.execute(params![id, at])?;
                }
            }
            tx.commit()
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

    /// The done version recorded under another path of the same root as
    /// `id` with this device, inode, size and sha256 (and a file_no): what a
    /// local rename leaves behind. Its path is not checked here.
    pub async fn renamed_from(
        &self,
        id: i64,
        sha256: String,
        file: FileId,
    ) -> Result<Option<RenameSource>, JournalError> {
        self.call(move |c| {
            c.query_row(
                "SELECT o.id, o.rel, o.file_no, o.remote_path, o.remote_name FROM files o, files f
                 WHERE f.id = ?1 AND o.done_ino = ?2 AND o.done_dev = ?3 AND o.root = f.root AND o.id != f.id
                   AND o.done_size = ?4 AND o.done_sha256 = ?5 AND o.file_no IS NOT NULL
                   AND o.remote_name IS NOT NULL AND o.state IN ('done', 'gone')
                 ORDER BY o.updated_at DESC LIMIT 1",
                params![id, file.ino as i64, file.dev as i64, file.size as i64, sha256],
                |r| {
                    Ok(RenameSource {
                        id: r.get(0)?,
                        rel: r.get(1)?,
                        file_no: r.get(2)?,
                        remote_folder: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        remote_name: r.get(4)?,
                    })
                },
            )
            .optional()
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

    /// `upload` of one file: its record (created, with no state the agent
    /// acts on, if there is none) and the session an interrupted `upload`
    /// or agent left for it. The record's state is not changed: it becomes
    /// `done` only through [`Sqlite::record_upload`].
    pub async fn upload_slot(
        &self,
        root: String,
        rel: String,
        fp: Fingerprint,
    ) -> Result<(i64, Option<SavedSession>), JournalError> {
        let id = self
            .call(move |c| {
                c.execute(
                    "INSERT INTO files (root, rel, state, size, mtime_ns, updated_at) VALUES (?1, ?2, 'settling', ?3, ?4, ?5)
                     ON CONFLICT (root, rel) DO NOTHING",
                    params![root, rel, fp.size as i64, fp.mtime_ns as i64, now_ms()],
                )?;
                c.query_row("SELECT id FROM files WHERE root = ?1 AND rel = ?2", params![root, rel], |r| r.get(0))
            })
            .await?;
        Ok((id, self.session(id).await?))
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
}

/// Marks file `id` done with its result, drops its session, adds history.
fn write_done(c: &Connection, id: i64, d: &DoneRecord) -> rusqlite::Result<()> {
    let now = now_ms();
    // The identity is kept only if it is of the very version recorded.
    let node = d
        .identity
        .filter(|i| i.fingerprint() == d.fingerprint)
        .map(|i| (i.dev as i64, i.ino as i64, i.ctime_ns as i64));
    c.execute(
        "UPDATE files SET state = 'done', size = ?2, mtime_ns = ?3, done_size = ?2, done_mtime_ns = ?3,
           done_sha256 = ?4, file_no = ?5, url = ?6, remote_path = ?7, last_error = NULL, updated_at = ?8, adopt = 0,
           remote_name = ?9, done_dev = ?10, done_ino = ?11, done_ctime_ns = ?12
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
            d.remote_name,
            node.map(|n| n.0),
            node.map(|n| n.1),
            node.map(|n| n.2)
        ],
    )?;
    c.execute("DELETE FROM sessions WHERE file_id = ?1", params![id])?;
    if let Some(old) = d.retire.filter(|old| *old != id) {
        // Its remote file is this one's now (sessions go with it).
        c.execute("DELETE FROM sessions WHERE file_id = ?1", params![old])?;
        c.execute("DELETE FROM files WHERE id = ?1", params![old])?;
    }
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
