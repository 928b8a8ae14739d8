//! Upload sets: each set's round and state, and the files of a set as the
//! agent judges it (ready? which phase goes next? the manifest).

use rusqlite::{Connection, params};

use super::*;

/// A set as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetRow {
    pub root: String,
    pub set_rel: String,
    pub round: i64,
    /// "waiting", "uploading", "manifest" or "complete".
    pub state: String,
    /// The phase being sent (0 files, 1 `upload_last`, 2 the trigger).
    pub phase: i64,
    pub first_seen_at: i64,
    pub last_change_at: i64,
    pub completed_at: Option<i64>,
    /// Why it waits (for `status`).
    pub reason: Option<String>,
    pub stuck: bool,
    /// Released by the user: it goes without its trigger, quiet time or
    /// missing frames.
    pub released: bool,
}

/// One file of a set.
#[derive(Debug, Clone)]
pub struct SetFile {
    pub rel: String,
    pub state: State,
    pub phase: i64,
    pub size: i64,
    pub sha256: Option<String>,
    pub file_no: Option<String>,
    pub url: Option<String>,
}

/// How a set moves on.
#[derive(Debug, Clone)]
pub enum SetStep {
    /// Still waiting, and why (`stuck`: report it as stuck now).
    Wait { reason: String, stuck: bool },
    /// Send the held files up to `phase`.
    Release { phase: i64 },
    /// Every file is sent; the manifest goes now.
    Manifest,
    /// Done (with the manifest's file_no, if one was sent).
    Complete { manifest_file_no: Option<String> },
}

/// A file of `set_rel` was queued at `now`: a complete set starts a new round.
pub(super) fn changed(c: &Connection, root: &str, set_rel: &str, now: i64) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO sets (root, set_rel, round, state, phase, first_seen_at, last_change_at)
         VALUES (?1, ?2, 1, 'waiting', 0, ?3, ?3)
         ON CONFLICT (root, set_rel) DO UPDATE SET
           last_change_at = ?3,
           round = CASE WHEN state = 'complete' THEN round + 1 ELSE round END,
           first_seen_at = CASE WHEN state = 'complete' THEN ?3 ELSE first_seen_at END,
           stuck = CASE WHEN state = 'complete' THEN 0 ELSE stuck END,
           phase = CASE WHEN state = 'complete' THEN 0 ELSE phase END,
           reason = CASE WHEN state = 'complete' THEN NULL ELSE reason END,
           released = CASE WHEN state = 'complete' THEN 0 ELSE released END,
           state = CASE WHEN state = 'complete' THEN 'waiting' ELSE state END",
        params![root, set_rel, now],
    )?;
    Ok(())
}

fn set_row(r: &rusqlite::Row) -> rusqlite::Result<SetRow> {
    Ok(SetRow {
        root: r.get(0)?,
        set_rel: r.get(1)?,
        round: r.get(2)?,
        state: r.get(3)?,
        phase: r.get(4)?,
        first_seen_at: r.get(5)?,
        last_change_at: r.get(6)?,
        completed_at: r.get(7)?,
        reason: r.get(8)?,
        stuck: r.get::<_, i64>(9)? != 0,
        released: r.get::<_, i64>(10)? != 0,
    })
}

pub(super) const SET_COLS: &str = "root, set_rel, round, state, phase, first_seen_at, last_change_at, completed_at, reason, stuck, released";

/// Every set of every root (for `status`), by root and name.
pub(super) fn all_sets(c: &Connection) -> rusqlite::Result<Vec<(SetRow, i64, i64)>> {
    let mut stmt = c.prepare(&format!(
        "SELECT {SET_COLS},
           (SELECT count(*) FROM files f WHERE f.root = s.root AND f.set_rel = s.set_rel AND f.state NOT IN ('gone', 'skipped')),
           (SELECT count(*) FROM files f WHERE f.root = s.root AND f.set_rel = s.set_rel AND f.state = 'done')
         FROM sets s ORDER BY root, set_rel"
    ))?;
    let rows = stmt.query_map([], |r| Ok((set_row(r)?, r.get(11)?, r.get(12)?)))?;
    rows.collect()
}

impl Sqlite {
    /// Releases the waiting set `set_rel` of `root` (`autorender-sync
    /// release`); its change time moves to `now`, so it is judged at once.
    /// False: no such set is waiting.
    pub async fn release_set(&self, root: String, set_rel: String, now: i64) -> Result<bool, JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE sets SET released = 1, last_change_at = ?3
                 WHERE root = ?1 AND set_rel = ?2 AND state = 'waiting'",
                params![root, set_rel, now],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// The sets of `root` not complete yet.
    pub async fn open_sets(&self, root: String) -> Result<Vec<SetRow>, JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SET_COLS} FROM sets WHERE root = ?1 AND state != 'complete' ORDER BY set_rel"
            ))?;
            let rows = stmt.query_map(params![root], set_row)?;
            rows.collect()
        })
        .await
    }

    /// The files of a set (not gone), by path.
    pub async fn set_files(&self, root: String, set_rel: String) -> Result<Vec<SetFile>, JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT rel, state, phase, size, done_sha256, file_no, url FROM files INDEXED BY files_set
                 WHERE root = ?1 AND set_rel = ?2 AND state != 'gone' ORDER BY rel",
            )?;
            let rows = stmt.query_map(params![root, set_rel], |r| {
                Ok(SetFile {
                    rel: r.get(0)?,
                    state: State::parse(&r.get::<_, String>(1)?),
                    phase: r.get(2)?,
                    size: r.get(3)?,
                    sha256: r.get(4)?,
                    file_no: r.get(5)?,
                    url: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Records what the agent decided for a set (one transaction).
    pub async fn step_set(
        &self,
        root: String,
        set_rel: String,
        step: SetStep,
        now: i64,
    ) -> Result<(), JournalError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            match &step {
                SetStep::Wait { reason, stuck } => {
                    tx.execute(
                        "UPDATE sets SET reason = ?3, stuck = max(stuck, ?4) WHERE root = ?1 AND set_rel = ?2",
                        params![root, set_rel, reason, *stuck as i64],
                    )?;
                }
                SetStep::Release { phase } => {
                    tx.execute(
                        "UPDATE files SET state = 'pending', next_attempt_at = 0, updated_at = ?4
                         WHERE root = ?1 AND set_rel = ?2 AND state = 'held' AND phase <= ?3",
                        params![root, set_rel, phase, now],
                    )?;
                    tx.execute(
                        "UPDATE sets SET state = 'uploading', phase = ?3, reason = NULL WHERE root = ?1 AND set_rel = ?2",
                        params![root, set_rel, phase],
                    )?;
                }
                SetStep::Manifest => {
                    tx.execute(
                        "UPDATE sets SET state = 'manifest', reason = NULL WHERE root = ?1 AND set_rel = ?2",
                        params![root, set_rel],
                    )?;
                }
                SetStep::Complete { manifest_file_no } => {
                    tx.execute(
                        "UPDATE sets SET state = 'complete', completed_at = ?3, reason = NULL,
                           manifest_file_no = coalesce(?4, manifest_file_no)
                         WHERE root = ?1 AND set_rel = ?2",
                        params![root, set_rel, now, manifest_file_no],
                    )?;
                }
            }
            tx.commit()
        })
        .await
    }
}
