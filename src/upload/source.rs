//! The file being uploaded: the one descriptor every byte, hash and
//! identity check comes from.

use super::*;

/// The file being uploaded: one open descriptor, and what it was when opened.
pub(crate) struct Source {
    pub(super) file: Arc<std::fs::File>,
    pub id: FileId,
    /// Seen with the same inode, size and mtime but another ctime: the
    /// content is hashed again before complete ([`Source::confirm`]).
    ctime_moved: std::sync::atomic::AtomicBool,
    /// The identity whose content was hashed again and found the same.
    confirmed: std::sync::Mutex<Option<FileId>>,
}

impl Source {
    /// Opens the job's file beneath its root (no symlink followed, never
    /// blocking on a FIFO, off the runtime's worker threads): the version
    /// that settled, else [`UploadError::Changed`].
    pub(super) async fn open(job: &Job) -> Result<Source, UploadError> {
        let io_err = |e: std::io::Error| UploadError::io(&job.path, &e);
        let (root, path) = (job.root.clone(), job.path.clone());
        let file = tokio::task::spawn_blocking(move || crate::anchor::open_file(&root, &path))
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))?
            .map_err(io_err)?;
        let id = FileId::of_file(&file).map_err(io_err)?;
        if let Some(node) = job.settled
            && node != (id.dev, id.ino)
        {
            return Err(UploadError::Changed(
                "replaced by another file since it settled".into(),
            ));
        }
        Ok(Source {
            file: Arc::new(file),
            id,
            ctime_moved: std::sync::atomic::AtomicBool::new(false),
            confirmed: std::sync::Mutex::new(None),
        })
    }

    /// The identity this upload's bytes are known to be: as opened, or as
    /// re-hashed after a metadata-only change.
    pub fn confirmed(&self) -> FileId {
        self.confirmed.lock().expect("confirmed lock").unwrap_or(self.id)
    }

    /// Before complete: if only the ctime moved while the parts went (a
    /// `chmod`, a new hard link), the descriptor's content is hashed again;
    /// the same sha256 lets the upload complete, another one is a change.
    pub(super) async fn confirm(&self, job: &Job, sha256: &str) -> Result<(), UploadError> {
        if !self.ctime_moved.load(Ordering::Relaxed) {
            return Ok(());
        }
        let io_err = |e: std::io::Error| UploadError::io(&job.path, &e);
        let now = FileId::of_file(&self.file).map_err(io_err)?;
        let mut reader = self.file.try_clone().map_err(io_err)?;
        std::io::Seek::rewind(&mut reader).map_err(io_err)?;
        let again = hash_open(reader).await.map_err(io_err)?;
        self.check(job)?;
        if again != sha256 || FileId::of_file(&self.file).map_err(io_err)? != now {
            return Err(UploadError::Changed(
                "rewritten in place with its modification time put back (ctime changed, and the content differs)"
                    .into(),
            ));
        }
        tracing::debug!(
            "{}: only its metadata changed while it was sent (ctime); the content is the same",
            job.path.display()
        );
        *self.confirmed.lock().expect("confirmed lock") = Some(now);
        Ok(())
    }

    /// Still the same version, both behind the path and behind the
    /// descriptor (size, mtime, ctime, inode)? Else [`UploadError::Changed`].
    pub(super) fn check(&self, job: &Job) -> Result<(), UploadError> {
        let io_err = |e: std::io::Error| UploadError::io(&job.path, &e);
        for now in [
            crate::anchor::file_id(&job.root, &job.path).map_err(io_err)?,
            FileId::of_file(&self.file).map_err(io_err)?,
        ] {
            if now == self.id {
                continue;
            }
            // Only the ctime: a question for the content, asked before complete.
            if self.id.same_but_ctime(&now) {
                self.ctime_moved.store(true, Ordering::Relaxed);
                continue;
            }
            return Err(UploadError::Changed(self.id.describe_change(&now)));
        }
        Ok(())
    }
}
