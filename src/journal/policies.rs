//! What the policies record: a held file's hash (`record_prehash`), files
//! left out by `existing = "skip"` or `max_age`, when a root was first
//! watched (and its correction after a clock step), when a file was last
//! uploaded (`min_interval`).

use rusqlite::params;

use super::*;

impl Sqlite {
    /// A held file was hashed: kept with the version it is of, if the
    /// record still holds that version.
    pub async fn record_prehash(
        &self,
        root: String,
        rel: String,
        file: FileId,
        sha256: String,
    ) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE files SET pre_sha256 = ?3, pre_dev = ?4, pre_ino = ?5, pre_ctime_ns = ?6
                 WHERE root = ?1 AND rel = ?2 AND size = ?7 AND mtime_ns = ?8 AND state = 'held'",
                params![
                    root,
                    rel,
                    sha256,
                    file.dev as i64,
                    file.ino as i64,
                    file.ctime_ns as i64,
                    file.size as i64,
                    file.mtime_ns as i64
                ],
            )
            .map(|_| ())
        })
        .await
    }

    /// A file left out by policy: recorded with its version, so it is
    /// skipped until it changes.
    pub async fn record_skipped(
        &self,
        root: String,
        rel: String,
        fp: Fingerprint,
    ) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO files (root, rel, state, size, mtime_ns, done_size, done_mtime_ns, updated_at)
                 VALUES (?1, ?2, 'skipped', ?3, ?4, ?3, ?4, ?5)
                 ON CONFLICT (root, rel) DO UPDATE SET state = 'skipped', size = ?3, mtime_ns = ?4,
                   done_size = ?3, done_mtime_ns = ?4, updated_at = ?5",
                params![root, rel, fp.size as i64, fp.mtime_ns as i64, now_ms()],
            )
            .map(|_| ())
        })
        .await
    }

    /// When `root` was first watched with `existing = "skip"` (recorded now
    /// if never), unix ms.
    pub async fn first_watched(&self, root: String, now: i64) -> Result<i64, JournalError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO roots (root, first_watched_at) VALUES (?1, ?2) ON CONFLICT (root) DO NOTHING",
                params![root, now],
            )?;
            c.query_row(
                "SELECT first_watched_at FROM roots WHERE root = ?1",
                params![root],
                |r| r.get(0),
            )
        })
        .await
    }

    /// When the file was last uploaded (up to `limit` times, newest first,
    /// unix ms), from history.
    pub async fn recent_uploads(
        &self,
        root: String,
        rel: String,
        limit: usize,
    ) -> Result<Vec<i64>, JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT at FROM history WHERE root = ?1 AND rel = ?2 AND ok = 1 AND event IS NULL ORDER BY at DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![root, rel, limit as i64], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// First-watch times recorded while the wall clock stood ahead of `at`
    /// (it was stepped back since) become `at`: otherwise every file made
    /// until the clock catches up would look older than the first watch and
    /// be skipped. Returns how many roots moved.
    pub async fn clamp_first_watched(&self, at: i64) -> Result<usize, JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE roots SET first_watched_at = ?1 WHERE first_watched_at > ?1",
                params![at],
            )
        })
        .await
    }
}
