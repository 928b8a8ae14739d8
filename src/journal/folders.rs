//! Local folder renames made one remote folder rename (`mirror_renames`):
//! what was asked and how it ended, and the uploaded files below a folder.

use rusqlite::{OptionalExtension, params};

use super::*;

/// A folder rename as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRename {
    pub id: i64,
    pub folder_no: String,
    /// "sending", "done" or "failed".
    pub state: String,
}

/// A folder rename about to be asked: the local folder's old and new
/// names (root-relative), the remote folder's, and its folder_no.
#[derive(Debug, Clone)]
pub struct FolderRenameAsk {
    pub old_rel: String,
    pub new_rel: String,
    pub old_remote: String,
    pub new_remote: String,
    pub folder_no: String,
}

/// An uploaded file below a folder (a folder rename's precondition).
#[derive(Debug, Clone)]
pub struct DoneBelow {
    pub rel: String,
    pub file_no: String,
    /// (device, inode) of the uploaded version, when known.
    pub node: Option<(u64, u64)>,
}

impl Sqlite {
    /// The rename of remote folder `old_remote` to `new_remote` in file
    /// `id`'s root, if one was asked (the latest).
    pub async fn folder_rename_of(
        &self,
        id: i64,
        old_remote: String,
        new_remote: String,
    ) -> Result<Option<FolderRename>, JournalError> {
        self.call(move |c| {
            c.query_row(
                "SELECT r.id, r.folder_no, r.state FROM folder_renames r, files f
                 WHERE f.id = ?1 AND r.root = f.root AND r.old_remote = ?2 AND r.new_remote = ?3
                 ORDER BY r.id DESC LIMIT 1",
                params![id, old_remote, new_remote],
                |r| {
                    Ok(FolderRename {
                        id: r.get(0)?,
                        folder_no: r.get(1)?,
                        state: r.get(2)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// A folder rename is about to be sent (file `id`'s root); its id.
    pub async fn folder_rename_begin(
        &self,
        id: i64,
        ask: FolderRenameAsk,
        now: i64,
    ) -> Result<i64, JournalError> {
        let FolderRenameAsk {
            old_rel,
            new_rel,
            old_remote,
            new_remote,
            folder_no,
        } = ask;
        self.call(move |c| {
            c.execute(
                "INSERT INTO folder_renames (root, old_rel, new_rel, old_remote, new_remote, folder_no, state, at)
                 SELECT root, ?2, ?3, ?4, ?5, ?6, 'sending', ?7 FROM files WHERE id = ?1",
                params![id, old_rel, new_rel, old_remote, new_remote, folder_no, now],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// How folder rename `rename` ended ("done" or "failed").
    pub async fn folder_rename_end(&self, rename: i64, state: String) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE folder_renames SET state = ?2 WHERE id = ?1",
                params![rename, state],
            )
            .map(drop)
        })
        .await
    }

    /// The uploaded files of file `id`'s root below the folder `prefix`
    /// (root-relative, without its trailing `/`), at most `limit` + 1.
    pub async fn done_below(
        &self,
        id: i64,
        prefix: String,
        limit: usize,
    ) -> Result<Vec<DoneBelow>, JournalError> {
        self.call(move |c| {
            let root: String =
                c.query_row("SELECT root FROM files WHERE id = ?1", params![id], |r| r.get(0))?;
            let mut stmt = c.prepare_cached(
                "SELECT rel, file_no, done_dev, done_ino FROM files
                 WHERE root = ?1 AND substr(rel, 1, length(?2) + 1) = ?2 || '/' AND state = 'done'
                   AND file_no IS NOT NULL LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![root, prefix, limit as i64 + 1], |r| {
                let dev: Option<i64> = r.get(2)?;
                let ino: Option<i64> = r.get(3)?;
                Ok(DoneBelow {
                    rel: r.get(0)?,
                    file_no: r.get(1)?,
                    node: dev.zip(ino).map(|(d, i)| (d as u64, i as u64)),
                })
            })?;
            rows.collect()
        })
        .await
    }
}
