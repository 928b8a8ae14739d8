//! What happens to a local file after its upload is recorded as done:
//! `keep`, `delete`, or `move` into `move_to` (keeping the sub-path, never
//! overwriting: a numeric suffix is added). Called only after the journal
//! has the upload as done, and only if the file is still the version that
//! was uploaded, so a newer version written meanwhile is never lost.

use std::path::{Path, PathBuf};

use crate::config::AfterUpload;
use crate::fileid::Fingerprint;

#[derive(Debug, thiserror::Error)]
pub enum AfterError {
    #[error("cannot delete {path}: {source}")]
    Delete { path: PathBuf, source: std::io::Error },
    #[error("cannot move {from} to {to}: {source}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
}

/// Applies the action. `rel` is the root-relative path (for `move`).
/// Returns where the file ended up (None when deleted or left alone because it changed).
pub fn apply(
    action: &AfterUpload,
    path: &Path,
    rel: &str,
    uploaded: Fingerprint,
) -> Result<Option<PathBuf>, AfterError> {
    if *action == AfterUpload::Keep {
        return Ok(Some(path.to_path_buf()));
    }
    match Fingerprint::of(path) {
        Ok(now) if now == uploaded => {}
        _ => {
            tracing::info!(
                "{} changed since it was uploaded; leaving it in place",
                path.display()
            );
            return Ok(None);
        }
    }
    match action {
        AfterUpload::Keep => Ok(Some(path.to_path_buf())),
        AfterUpload::Delete => {
            std::fs::remove_file(path).map_err(|source| AfterError::Delete {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(None)
        }
        AfterUpload::Move(dest_root) => {
            let target = free_name(&dest_root.join(rel));
            let err = |source| AfterError::Move {
                from: path.to_path_buf(),
                to: target.clone(),
                source,
            };
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            if std::fs::rename(path, &target).is_err() {
                // Another filesystem: copy, flush, then remove the original.
                std::fs::copy(path, &target).map_err(err)?;
                std::fs::File::open(&target)
                    .and_then(|f| f.sync_all())
                    .map_err(err)?;
                std::fs::remove_file(path).map_err(err)?;
            }
            Ok(Some(target))
        }
    }
}

/// `a.mp4`, else `a (1).mp4`, `a (2).mp4`, …: never overwrite.
fn free_name(wanted: &Path) -> PathBuf {
    if std::fs::symlink_metadata(wanted).is_err() {
        return wanted.to_path_buf();
    }
    let stem = wanted
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = wanted
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (1..)
        .map(|n| wanted.with_file_name(format!("{stem} ({n}){ext}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .expect("some suffix is free")
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
        let fp = Fingerprint::of(&src).unwrap();
        let to = apply(&AfterUpload::Move(dest.clone()), &src, "a/b.mp4", fp)
            .unwrap()
            .unwrap();
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
        let fp = Fingerprint::of(&src).unwrap();
        std::fs::write(&src, b"v2 longer").unwrap();
        assert_eq!(apply(&AfterUpload::Delete, &src, "a.mp4", fp).unwrap(), None);
        assert!(src.exists());
    }
}
