//! Uploads in flight: the multipart session (or direct upload) of a file,
//! its parts done, and the "completing" mark that makes a restart reconcile.

use rusqlite::{Connection, OptionalExtension, params};

use super::*;

impl Sqlite {
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

    /// The service stored an object for this file version (by content hash)
    /// that is not its bytes: counted; returns how many so far.
    pub async fn note_stray_copy(
        &self,
        id: i64,
        sha256: String,
        file_no: String,
    ) -> Result<u32, JournalError> {
        self.call(move |c| {
            c.query_row(
                "INSERT INTO stray_copies (file_id, sha256, n, last_file_no) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (file_id, sha256) DO UPDATE SET n = n + 1, last_file_no = ?3
                 RETURNING n",
                params![id, sha256, file_no],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u32)
        })
        .await
    }

    /// What `after_upload` did with the local file of the latest upload of
    /// `rel` in the history.
    pub async fn note_after(&self, root: String, rel: String, what: String) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE history SET after = ?3 WHERE id =
                   (SELECT max(id) FROM history WHERE root = ?1 AND rel = ?2 AND ok = 1 AND event IS NULL)",
                params![root, rel, what],
            )
            .map(|_| ())
        })
        .await
    }

    /// How many such objects this file version has left so far.
    pub async fn stray_copies(&self, id: i64, sha256: String) -> Result<u32, JournalError> {
        self.call(move |c| {
            c.query_row(
                "SELECT n FROM stray_copies WHERE file_id = ?1 AND sha256 = ?2",
                params![id, sha256],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.unwrap_or(0).max(0) as u32)
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
