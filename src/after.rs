//! What happens to a local file after its upload is recorded as done:
//! `keep`, `delete`, or `move` into `move_to` (keeping the sub-path, never
//! overwriting: a numeric suffix is added). Called only after the journal
//! has the upload as done, and only if the file is still the version that
//! was uploaded, so a newer version written meanwhile is never lost.

use std::path::{Path, PathBuf};

use crate::config::AfterUpload;
use crate::fileid::FileId;

#[derive(Debug, thiserror::Error)]
pub enum AfterError {
    #[error("cannot delete {path}: {source}")]
    Delete { path: String, source: std::io::Error },
    #[error("cannot move {from} to {to}: {source}")]
    Move {
        from: String,
        to: String,
        source: std::io::Error,
    },
    #[error("after_upload did not finish: {0}")]
    Join(String),
}

/// The version that was uploaded: the identity of the descriptor the
/// upload read (device, inode, size, mtime, ctime). Size and mtime alone
/// are never enough to delete or move a file: a copied mtime fakes them.
#[derive(Debug, Clone, Copy)]
pub enum Uploaded {
    Exactly(FileId),
}

/// What became of the local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// `after_upload = "keep"`.
    Kept,
    /// Left where it is: it changed since it was uploaded (or is no longer
    /// the file that was).
    LeftAlone,
    Deleted,
    /// Moved, to this path.
    Moved(PathBuf),
}

impl Done {
    /// For the history and the log ("deleted", "moved to …"); None for keep.
    pub fn describe(&self) -> Option<String> {
        match self {
            Done::Kept => None,
            Done::LeftAlone => Some("left in place: it changed after it was uploaded".into()),
            Done::Deleted => Some("deleted".into()),
            Done::Moved(to) => Some(format!("moved to {}", crate::text::path(to))),
        }
    }
}

/// Applies the action to `path`, below the watched `root`. `rel` is the
/// root-relative path (for `move`). Every step is anchored at the root
/// (no symlink followed, [`crate::anchor`]) and acts on the name only while
/// it is still the inode that was uploaded, unchanged since (ctime).
/// Says what became of the file.
pub fn apply(
    action: &AfterUpload,
    root: &Path,
    path: &Path,
    rel: &str,
    uploaded: Uploaded,
) -> Result<Done, AfterError> {
    if *action == AfterUpload::Keep {
        return Ok(Done::Kept);
    }
    let now = crate::anchor::file_id(root, path);
    let expect = match (uploaded, &now) {
        (Uploaded::Exactly(id), Ok(now)) if *now == id => id,
        _ => return Ok(left_alone(path)),
    };
    let shown = crate::text::path(path);
    match action {
        AfterUpload::Keep => Ok(Done::Kept),
        AfterUpload::Delete => match crate::anchor::remove_if(root, path, &expect) {
            Ok(true) => Ok(Done::Deleted),
            Ok(false) => Ok(left_alone(path)),
            Err(source) => Err(AfterError::Delete { path: shown, source }),
        },
        AfterUpload::Move(dest_root) => match crate::anchor::move_if(root, path, &expect, dest_root, rel) {
            Ok(Some(to)) => Ok(Done::Moved(to)),
            Ok(None) => Ok(left_alone(path)),
            Err(source) => Err(AfterError::Move {
                from: shown,
                to: crate::text::path(&dest_root.join(rel)),
                source,
            }),
        },
    }
}

fn left_alone(path: &Path) -> Done {
    tracing::info!(
        "{} changed since it was uploaded (or is no longer the file that was); leaving it in place",
        crate::text::path(path)
    );
    Done::LeftAlone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_keeps_subpath_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("in/a/b.mp4");
        let dest = d.path().join("out");
        std::fs::create_dir_all(src.parent().unwrap()).unwrap();
        std::fs::create_dir_all(dest.join("a")).unwrap();
        std::fs::write(dest.join("a/b.mp4"), b"old").unwrap();
        std::fs::write(&src, b"new").unwrap();
        let fp = Uploaded::Exactly(FileId::of_path(&src).unwrap());
        let to = apply(
            &AfterUpload::Move(dest.clone()),
            &d.path().join("in"),
            &src,
            "a/b.mp4",
            fp,
        )
        .unwrap();
        let Done::Moved(to) = to else { panic!("{to:?}") };
        assert_eq!(to, dest.join("a/b (1).mp4"));
        assert_eq!(std::fs::read(&to).unwrap(), b"new");
        assert_eq!(std::fs::read(dest.join("a/b.mp4")).unwrap(), b"old");
        assert!(!src.exists());
    }

    #[test]
    fn a_changed_file_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a.mp4");
        std::fs::write(&src, b"v1").unwrap();
        let fp = Uploaded::Exactly(FileId::of_path(&src).unwrap());
        std::fs::write(&src, b"v2 longer").unwrap();
        assert_eq!(
            apply(&AfterUpload::Delete, d.path(), &src, "a.mp4", fp).unwrap(),
            Done::LeftAlone
        );
        assert!(src.exists());
    }
}
