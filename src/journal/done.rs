//! What `verify`, `retry` and adoption read of the files already done, and
//! how they go back to the queue.

use rusqlite::params;

use super::records::DoneVersion;
use super::schema::FOLDER_OF_REL;

use super::*;

impl Sqlite {
    /// The uploaded versions of the files directly in one folder of `root`
    /// (`folder`: root-relative with a trailing `/`, empty for the root),
    /// by relative path. Read through the `files_folder` index, so a scan
    /// costs each folder its own records, whatever the root holds.
    pub async fn done_in(&self, root: String, folder: String) -> Result<FolderDone, JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT rel, done_size, done_mtime_ns, done_dev, done_ino, done_ctime_ns, state FROM files
                 WHERE root = ?1 AND {FOLDER_OF_REL} = ?2 AND state IN ('done', 'skipped')"
            ))?;
            let rows = stmt
                .query_map(params![root, folder], |r| {
                    let node = match (
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ) {
                        (Some(dev), Some(ino), Some(ctime)) => Some((dev as u64, ino as u64, ctime as i128)),
                        _ => None,
                    };
                    Ok((
                        r.get::<_, String>(0)?,
                        DoneVersion {
                            size: r.get(1)?,
                            mtime_ns: r.get(2)?,
                            node,
                            skipped: r.get::<_, String>(6)? == "skipped",
                        },
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(FolderDone(rows))
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
                       done_size = NULL, done_mtime_ns = NULL, done_dev = NULL, done_ino = NULL, done_ctime_ns = NULL, adopt = 0, updated_at = ?2
                     WHERE id = ?1 AND state = 'done'",
                    params![id, now_ms()],
                )?;
            }
            Ok(n)
        })
        .await
    }

    /// `retry`: failed files (all, or those under the given paths) back to pending.
    pub async fn retry(&self, paths: Vec<PathBuf>) -> Result<Retried, JournalError> {
        self.call(move |c| {
            let failed: Vec<(i64, String, String)> = c
                .prepare("SELECT id, root, rel FROM files WHERE state = 'failed'")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut matched = vec![false; paths.len()];
            let mut requeued = 0;
            for (id, root, rel) in failed {
                let full = Path::new(&root).join(&rel);
                let mut hit = paths.is_empty();
                for (i, p) in paths.iter().enumerate() {
                    if full.starts_with(p) {
                        matched[i] = true;
                        hit = true;
                    }
                }
                if hit {
                    requeued += c.execute(
                        "UPDATE files SET state = 'pending', attempts = 0, next_attempt_at = 0, updated_at = ?2 WHERE id = ?1",
                        params![id, now_ms()],
                    )?;
                }
            }
            let not_failed = paths
                .into_iter()
                .zip(matched)
                .filter(|(_, m)| !m)
                .map(|(p, _)| p)
                .collect();
            Ok(Retried { requeued, not_failed })
        })
        .await
    }
}
