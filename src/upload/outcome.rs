//! Outcomes: whether what the service stored is this upload (size and
//! sha256), counting altered copies; and when an outcome is not plain,
//! asking the workspace whether a file is already there (reconciling a sent
//! complete, or adopting before a first upload).

use super::*;

impl Uploader {
    /// The service's answer (or what reconciliation found) as this upload:
    /// ours when size and sha256 (where told) are the file's, else an
    /// altered copy ([`Self::altered`]).
    pub(super) async fn accept(
        &self,
        job: &Job,
        file: RemoteFile,
        size: u64,
        sha256: String,
        observer: &Arc<dyn Observer>,
    ) -> Result<Outcome, UploadError> {
        let size_ok = file.size.is_none_or(|s| s == size);
        let sha_ok = file.sha256.as_deref().is_none_or(|s| s == sha256);
        if !(size_ok && sha_ok) {
            return Err(self.altered(job, &file, size, &sha256, observer).await);
        }
        verify(job, file, size, sha256)
    }

    /// The service stored `file` for this upload and it is not the file's
    /// bytes: counted in the journal per version; the attempt is spent
    /// ([`UploadError::Verify`]), and once [`MAX_STRAY_COPIES`] such
    /// objects exist the file fails ([`UploadError::Altered`]) so no more
    /// are made.
    pub(super) async fn altered(
        &self,
        job: &Job,
        file: &RemoteFile,
        size: u64,
        sha256: &str,
        observer: &Arc<dyn Observer>,
    ) -> UploadError {
        let what = match (file.size, file.sha256.as_deref()) {
            (Some(s), _) if s != size => format!(
                "the service stored {} for a {} file",
                crate::units::bytes_exact(s),
                crate::units::bytes_exact(size)
            ),
            (_, Some(s)) => format!("the service stored content with sha256 {s}; the file's is {sha256}"),
            _ => "the service stored other content".into(),
        };
        let n = match observer.stray_copy(sha256, &file.file_no).await {
            Ok(n) => n,
            Err(e) => return UploadError::Checkpoint(e),
        };
        tracing::warn!(
            "{}: {what} (file_no {}); that object is not this file",
            job.path.display(),
            file.file_no
        );
        if n >= MAX_STRAY_COPIES {
            UploadError::Altered(format!(
                "{what}: something between here and the service alters uploads ({n} altered copies are in \
                 the workspace, the last file_no {}); the file is failed so that no more are made. Check \
                 proxies and the service, then run `autorender-sync retry`",
                file.file_no
            ))
        } else {
            UploadError::Verify(format!(
                "{what} (file_no {}); it is sent again in parts",
                file.file_no
            ))
        }
    }

    /// Records that the outcome of `session` is unknown, then asks: a
    /// multipart session is completed once more first; otherwise `session`
    /// only says when the direct upload began.
    #[allow(clippy::too_many_arguments)] // the ambiguous send, described in full
    pub(super) async fn ask_workspace(
        &self,
        job: &Job,
        session: &Session,
        multipart: bool,
        size: u64,
        sha256: &str,
        window: &reconcile::Window,
        observer: &Arc<dyn Observer>,
    ) -> Result<reconcile::Found, UploadError> {
        observer.reconciling().await.map_err(UploadError::Checkpoint)?;
        let session_to_complete = multipart.then_some(session);
        self.reconcile(
            job,
            session_to_complete,
            session.began_at_ms,
            size,
            sha256,
            window,
        )
        .await
    }

    /// Asks the workspace about an upload whose outcome is unknown.
    pub(super) async fn reconcile(
        &self,
        job: &Job,
        session: Option<&Session>,
        began_at_ms: i64,
        size: u64,
        sha256: &str,
        window: &reconcile::Window,
    ) -> Result<reconcile::Found, UploadError> {
        let what = reconcile::Ambiguous {
            session,
            folder: &job.folder,
            name: &job.file_name,
            random_prefix: job.random_prefix,
            size,
            sha256,
            began_at_ms,
        };
        Ok(reconcile::reconcile(&self.workspace, &what, window).await?)
    }

    /// Adoption (SPEC §4): a file the journal has no record of, whose folder
    /// already holds the same content under the same name.
    pub(super) async fn adoptable(
        &self,
        job: &Job,
        fp: Fingerprint,
        sha256: &str,
    ) -> Result<Option<(RemoteFile, Proof)>, UploadError> {
        if job.random_prefix {
            // The service renames such files: a name can prove nothing.
            return Ok(None);
        }
        let candidates = self
            .workspace
            .same_name_and_size(&job.folder, &job.file_name, fp.size)
            .await?;
        let mtime_ms = (fp.mtime_ns / 1_000_000) as i64;
        for c in candidates {
            if let Some(proof) = same_content(self.workspace.client(), &c, fp.size, sha256, mtime_ms).await? {
                return Ok(Some((c, proof)));
            }
        }
        Ok(None)
    }
}

pub(super) fn verify(job: &Job, file: RemoteFile, size: u64, sha256: String) -> Result<Outcome, UploadError> {
    if let Some(remote) = file.size
        && remote != size
    {
        return Err(UploadError::Verify(format!(
            "the service stored {remote} bytes but the file has {size}"
        )));
    }
    if let Some(remote) = &file.sha256
        && remote != &sha256
    {
        return Err(UploadError::Verify(format!(
            "the service recorded sha256 {remote} but the file has {sha256}"
        )));
    }
    if let Some(p) = &file.folder
        && p != &job.folder
    {
        tracing::warn!(file = %job.path.display(), "asked for folder \"{}\" but the service placed it in \"{p}\"", job.folder);
    }
    Ok(Outcome {
        folder: file.folder.clone().unwrap_or_else(|| job.folder.clone()),
        name: if file.name.is_empty() {
            job.file_name.clone()
        } else {
            file.name.clone()
        },
        file,
        size,
        sha256,
        adopted: None,
        renamed_from: None,
        source: None,
    })
}
