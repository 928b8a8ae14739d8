//! A folder renamed locally becomes one remote folder rename
//! (`mirror_renames`): the first of its files to arrive after the rename
//! asks for it, the rest find it done. Only where the remote folder holds
//! nothing but what this root uploaded under the old local folder, every
//! one of those files now stands under the new one (same device and
//! inode), the old local folder is gone and no remote folder has the new
//! name. The request is journaled before it is sent; one whose answer was
//! lost is settled by listing (the folder found under its new name).

use super::*;
use crate::journal::{FolderRename, Journal, JournalError, RenameSource};

fn checkpoint(e: JournalError) -> UploadError {
    UploadError::Checkpoint(CheckpointError::store(e))
}

/// The most uploaded files a folder rename covers; a larger folder's files
/// are uploaded to the new place one by one instead.
const MAX_FILES: usize = 10_000;

/// A folder's old and new names: local (root-relative) and remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pair {
    pub old_rel: String,
    pub new_rel: String,
    pub old_remote: String,
    pub new_remote: String,
    /// The new last name (what the rename asks for).
    pub new_name: String,
}

/// The one folder whose renaming explains a file's move from `old_rel` to
/// `new_rel` (root-relative) and from remote folder `old_folder` to
/// `new_folder`: the same file name, the same depth, and exactly one
/// folder name differing, the same one locally and remotely.
pub(super) fn pair(old_rel: &str, new_rel: &str, old_folder: &str, new_folder: &str) -> Option<Pair> {
    let old: Vec<&str> = old_rel.split('/').collect();
    let new: Vec<&str> = new_rel.split('/').collect();
    if old.len() != new.len() || old.last() != new.last() || old.len() < 2 {
        return None;
    }
    let differ: Vec<usize> = (0..old.len() - 1).filter(|i| old[*i] != new[*i]).collect();
    let [k] = differ[..] else { return None };
    let ro: Vec<&str> = old_folder.split('/').collect();
    let rn: Vec<&str> = new_folder.split('/').collect();
    if ro.len() != rn.len() {
        return None;
    }
    let rdiffer: Vec<usize> = (0..ro.len()).filter(|i| ro[*i] != rn[*i]).collect();
    let [j] = rdiffer[..] else { return None };
    // The folder below it maps one to one (the same names after it).
    if rn[j] != new[k] || ro[j] != old[k] || ro.len() - j != old.len() - 1 - k {
        return None;
    }
    Some(Pair {
        old_rel: old[..=k].join("/"),
        new_rel: new[..=k].join("/"),
        old_remote: ro[..=j].join("/"),
        new_remote: rn[..=j].join("/"),
        new_name: new[k].to_string(),
    })
}

impl Uploader {
    /// This file's remote copy carried to its new folder by a folder
    /// rename (asked now, or earlier for another file of the folder): the
    /// outcome, or None when the folder is not renamed remotely (the file
    /// is uploaded to its new place instead).
    pub(super) async fn by_folder_rename(
        &self,
        job: &Job,
        from: &RenameSource,
        sha256: &str,
        size: u64,
        observer: &Arc<dyn Observer>,
    ) -> Result<Option<Outcome>, UploadError> {
        let Some((journal, id)) = observer.journal() else {
            return Ok(None);
        };
        let Ok(rel) = job.path.strip_prefix(&job.root) else {
            return Ok(None);
        };
        let rel = rel.to_string_lossy().replace('\\', "/");
        let Some(pair) = pair(
            &from.rel,
            &rel,
            from.remote_folder.trim_matches('/'),
            job.folder.trim_matches('/'),
        ) else {
            return Ok(None);
        };
        // One folder rename at a time: the folder's other files wait for it.
        let _one = self.workspace.renames.lock().await;
        let asked = journal
            .folder_rename_of(id, pair.old_remote.clone(), pair.new_remote.clone())
            .await
            .map_err(checkpoint)?;
        let done = match asked {
            Some(FolderRename { state, .. }) if state == "done" => true,
            Some(FolderRename { state, .. }) if state == "failed" => false,
            Some(r) => self.settle_lost(journal, &r, &pair).await?,
            None => self.rename_folder(journal, id, job, &pair).await?,
        };
        if !done {
            return Ok(None);
        }
        // The file itself, asked for where it should now be.
        let Some(file) = self.client.file_details(&from.file_no).await? else {
            tracing::warn!(
                "{}: file_no {} is not in the workspace after its folder was renamed; it is uploaded again",
                job.path.display(),
                from.file_no
            );
            return Ok(None);
        };
        if let Some(folder) = &file.folder
            && folder.trim_matches('/') != job.folder.trim_matches('/')
        {
            tracing::warn!(
                "{}: file_no {} is in \"{folder}\", not \"{}\", after its folder was renamed; it is uploaded again",
                job.path.display(),
                from.file_no,
                job.folder
            );
            return Ok(None);
        }
        Ok(Some(Outcome {
            size,
            sha256: sha256.to_string(),
            folder: job.folder.clone(),
            name: if file.name.is_empty() {
                from.remote_name.clone()
            } else {
                file.name.clone()
            },
            file,
            adopted: Some(Proof::Renamed),
            source: None,
            renamed_from: Some(from.clone()),
        }))
    }

    /// Asks for the folder rename if everything says it is one; whether
    /// the remote folder now has the new name.
    async fn rename_folder(
        &self,
        journal: &Journal,
        id: i64,
        job: &Job,
        pair: &Pair,
    ) -> Result<bool, UploadError> {
        // Locally: the old folder gone, the new one a folder, and every
        // uploaded file of the old one standing under the new one.
        let below = journal
            .done_below(id, pair.old_rel.clone(), MAX_FILES)
            .await
            .map_err(checkpoint)?;
        if below.is_empty() || below.len() > MAX_FILES {
            return Ok(false);
        }
        let (root, p) = (job.root.clone(), pair.clone());
        let moved_whole = tokio::task::spawn_blocking(move || {
            let gone = matches!(
                crate::anchor::stat(&root, &root.join(&p.old_rel)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound
            );
            let new_is_dir = matches!(
                crate::anchor::stat(&root, &root.join(&p.new_rel)),
                Ok(crate::anchor::Kind::Dir)
            );
            let whole = gone
                && new_is_dir
                && below.iter().all(|b| {
                    let Some(rest) = b.rel.strip_prefix(&format!("{}/", p.old_rel)) else {
                        return false;
                    };
                    let now = root.join(&p.new_rel).join(rest);
                    b.node.is_some_and(|(dev, ino)| {
                        crate::anchor::file_id(&root, &now).is_ok_and(|f| f.dev == dev && f.ino == ino)
                    })
                });
            whole.then_some(below)
        })
        .await
        .ok()
        .flatten();
        let Some(below) = moved_whole else {
            return Ok(false);
        };
        // Remotely: no folder has the new name, and the old one holds only
        // the files recorded under the old local folder.
        self.workspace.forget_folders();
        if self.workspace.folder_no(&pair.new_remote).await?.is_some() {
            return Ok(false);
        }
        let Some(folder_no) = self.workspace.folder_no(&pair.old_remote).await? else {
            return Ok(false);
        };
        let ours: std::collections::HashSet<&str> = below.iter().map(|b| b.file_no.as_str()).collect();
        match self.workspace.files_below(&pair.old_remote, MAX_FILES).await? {
            Some(files) if files.iter().all(|f| ours.contains(f.as_str())) => {}
            _ => {
                tracing::info!(
                    "remote folder \"{}\" holds files this folder did not upload; its files are uploaded to \"{}\" \
                     instead of renaming it",
                    pair.old_remote,
                    pair.new_remote
                );
                return Ok(false);
            }
        }
        let rename = journal
            .folder_rename_begin(
                id,
                crate::journal::FolderRenameAsk {
                    old_rel: pair.old_rel.clone(),
                    new_rel: pair.new_rel.clone(),
                    old_remote: pair.old_remote.clone(),
                    new_remote: pair.new_remote.clone(),
                    folder_no: folder_no.clone(),
                },
                crate::clock::system_ms(),
            )
            .await
            .map_err(checkpoint)?;
        self.send_folder_rename(journal, rename, &folder_no, pair, below.len())
            .await
    }

    /// Sends the journaled rename; its end recorded.
    async fn send_folder_rename(
        &self,
        journal: &Journal,
        rename: i64,
        folder_no: &str,
        pair: &Pair,
        files: usize,
    ) -> Result<bool, UploadError> {
        tracing::info!(
            "folder {} was renamed {}: renaming remote folder \"{}\" (folder_no {folder_no}) to \"{}\"",
            pair.old_rel,
            pair.new_rel,
            pair.old_remote,
            pair.new_name
        );
        let answer = self.client.rename_folder(folder_no, &pair.new_name).await;
        self.workspace.forget_folders();
        let state = match answer {
            Ok(f) if f.folder_no == folder_no => {
                tracing::info!(
                    "renamed remote folder \"{}\" → \"{}\" (folder_no {folder_no}; {files} file(s), nothing sent)",
                    pair.old_remote,
                    pair.new_remote
                );
                "done"
            }
            Ok(f) => {
                journal
                    .folder_rename_end(rename, "failed".into())
                    .await
                    .map_err(checkpoint)?;
                return Err(UploadError::Verify(format!(
                    "renaming folder_no {folder_no} answered folder_no {}",
                    f.folder_no
                )));
            }
            Err(ApiError::Rejected { status, message }) if matches!(status, 404 | 405 | 409 | 501) => {
                tracing::warn!(
                    "the service did not rename folder \"{}\" ({status}: {message}); its files are uploaded to \"{}\"",
                    pair.old_remote,
                    pair.new_remote
                );
                "failed"
            }
            // Unknown: the row stays "sending", settled by listing next time.
            Err(e) => return Err(e.into()),
        };
        journal
            .folder_rename_end(rename, state.into())
            .await
            .map_err(checkpoint)?;
        Ok(state == "done")
    }

    /// A rename sent before whose answer never came: the folder is looked
    /// for under its new name (done), else under its old one (sent again),
    /// else given up (its files are uploaded).
    async fn settle_lost(
        &self,
        journal: &Journal,
        r: &FolderRename,
        pair: &Pair,
    ) -> Result<bool, UploadError> {
        self.workspace.forget_folders();
        if self.workspace.folder_no(&pair.new_remote).await?.as_deref() == Some(r.folder_no.as_str()) {
            tracing::info!(
                "remote folder \"{}\" is found renamed \"{}\" (the answer was lost)",
                pair.old_remote,
                pair.new_remote
            );
            journal
                .folder_rename_end(r.id, "done".into())
                .await
                .map_err(checkpoint)?;
            return Ok(true);
        }
        if self.workspace.folder_no(&pair.old_remote).await?.as_deref() == Some(r.folder_no.as_str()) {
            return self
                .send_folder_rename(journal, r.id, &r.folder_no, pair, 0)
                .await;
        }
        journal
            .folder_rename_end(r.id, "failed".into())
            .await
            .map_err(checkpoint)?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_rename_is_one_name_changed_at_the_same_place_locally_and_remotely() {
        let p = pair("shots/A/x.mov", "shots/B/x.mov", "up/shots/A", "up/shots/B").unwrap();
        assert_eq!(
            (
                p.old_rel.as_str(),
                p.new_rel.as_str(),
                p.old_remote.as_str(),
                p.new_remote.as_str()
            ),
            ("shots/A", "shots/B", "up/shots/A", "up/shots/B")
        );
        assert_eq!(p.new_name, "B");
        // Deeper below the renamed folder.
        let p = pair("A/sub/x.mov", "B/sub/x.mov", "up/A/sub", "up/B/sub").unwrap();
        assert_eq!((p.old_remote.as_str(), p.new_remote.as_str()), ("up/A", "up/B"));
        // Not a folder rename: the file renamed too, two names changed, a
        // move to another depth, a flattened mapping.
        assert_eq!(pair("A/x.mov", "B/y.mov", "up/A", "up/B"), None);
        assert_eq!(pair("A/C/x.mov", "B/D/x.mov", "up/A/C", "up/B/D"), None);
        assert_eq!(pair("A/x.mov", "B/C/x.mov", "up/A", "up/B/C"), None);
        assert_eq!(pair("A/x.mov", "B/x.mov", "up", "up"), None);
        assert_eq!(pair("x.mov", "x.mov", "up", "up"), None);
    }
}
