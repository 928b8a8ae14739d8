//! Read-only views for `status` and `history` ([`Reader`]), on their own
//! connection beside a running agent.

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::sqlite::{check_version, open_error};

use super::*;

/// A journal opened read-only for `status` and `history`: its own
/// connection, safe beside a running agent, which never migrates.
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// None when there is no journal yet (nothing was ever recorded).
    pub fn open(state_dir: &Path) -> Result<Option<Reader>, JournalError> {
        Ok(open_read_only(state_dir)?.map(|conn| Reader { conn }))
    }

    /// The newest results, newest first (only failures with `failed_only`).
    pub fn history(&self, limit: usize, failed_only: bool) -> Result<Vec<HistoryRow>, JournalError> {
        history(&self.conn, limit, failed_only)
    }

    /// How many files of each root are in each state.
    pub fn counts(&self) -> Result<Vec<RootCounts>, JournalError> {
        counts(&self.conn)
    }

    /// The running (or last) agent's heartbeat and live snapshot.
    pub fn agent(&self) -> Result<Option<AgentRow>, JournalError> {
        agent_row(&self.conn)
    }

    /// Every upload set, with its file count and how many are done.
    pub fn sets(&self) -> Result<Vec<(SetRow, i64, i64)>, JournalError> {
        Ok(super::sets::all_sets(&self.conn)?)
    }

    /// The files of set `set_rel` under `root` and their states (the
    /// dashboard's frame strips), at most `limit`.
    pub fn set_files(
        &self,
        root: &str,
        set_rel: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT rel, state FROM files INDEXED BY files_set
             WHERE root = ?1 AND set_rel = ?2 AND state != 'gone' ORDER BY rel LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![root, set_rel, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// Read-only access for `status` and `history`, safe beside a running agent.
pub(super) fn open_read_only(state_dir: &Path) -> Result<Option<Connection>, JournalError> {
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
    /// What `after_upload` did with the local file ("deleted", "moved to …").
    pub after: Option<String>,
    /// The upload set the file belongs to (its folder, relative to the root).
    pub set: Option<String>,
}

fn history(conn: &Connection, limit: usize, failed_only: bool) -> Result<Vec<HistoryRow>, JournalError> {
    let mut stmt = conn.prepare(
        "SELECT root, rel, ok, remote_folder, remote_name, file_no, url, size, sha256, error, at, adopted, after,
                (SELECT set_rel FROM files f WHERE f.root = history.root AND f.rel = history.rel)
         FROM history WHERE (?1 = 0 OR ok = 0) ORDER BY id DESC LIMIT ?2",
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
                after: r.get(12)?,
                set: r.get(13)?,
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
    /// Bytes of the pending files (queued, not started).
    pub pending_bytes: i64,
    pub uploading: i64,
    pub reconciling: i64,
    /// Uploads in flight when the agent stopped (or crashed): they resume
    /// at its next start. Filled by `status` when no agent runs.
    pub interrupted: i64,
    pub uploading_bytes_done: i64,
    pub failed: i64,
    pub done: i64,
    pub gone: i64,
    /// Left out by policy (`existing = "skip"`, `max_age`).
    pub skipped: i64,
    /// Settled, waiting for their upload set.
    pub held: i64,
    pub failures: Vec<(String, String)>,
    /// Pending files whose last attempt failed (retried after a backoff).
    pub retrying: Vec<(String, String)>,
    /// How the running agent watches this root ("native", "poll …"); None
    /// when no agent runs.
    pub watch: Option<String>,
    /// `mirror_deletes`: uploaded files missing locally whose remote copies
    /// wait to be deleted.
    pub deletes_waiting: i64,
    /// `mirror_deletes` rounds the running agent has made of this root, and
    /// why its deletes are held (root missing, empty …), if they are.
    pub deletes_rounds: i64,
    pub deletes_held: Option<String>,
}

/// Per-root counts by state, with bytes done for uploads in flight and the
/// last error of each failed file.
fn counts(conn: &Connection) -> Result<Vec<RootCounts>, JournalError> {
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
            State::Skipped => c.skipped += n,
            State::Held => c.held += n,
        }
    }
    let mut stmt = conn
        .prepare("SELECT f.root, count(*) FROM deletes d JOIN files f ON f.id = d.file_id GROUP BY f.root")?;
    let waiting = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (root, n) in waiting {
        if let Some(c) = out.iter_mut().find(|c| c.root == root) {
            c.deletes_waiting = n;
        }
    }
    // Bytes queued (through the queue's index: pending files only).
    let mut stmt = conn.prepare(
        "SELECT root, COALESCE(SUM(size), 0) FROM files INDEXED BY files_queue WHERE state = 'pending' GROUP BY root",
    )?;
    let queued = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (root, bytes) in queued {
        if let Some(c) = out.iter_mut().find(|c| c.root == root) {
            c.pending_bytes = bytes;
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

pub(super) fn agent_row(conn: &Connection) -> Result<Option<AgentRow>, JournalError> {
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
