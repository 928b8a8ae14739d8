//! When an outcome is not plain: asking the workspace whether a file is
//! already there (reconciling a sent complete, or adopting before a first
//! upload).

use super::*;

impl Uploader {
    /// Records that the outcome of `session` is unknown, then asks: a
    /// multipart session is completed once more first; otherwise `session`
    /// only says when the direct upload began.
    pub(super) async fn ask_workspace(
        &self,
        job: &Job,
        session: &Session,
        multipart: bool,
        size: u64,
        sha256: &str,
        observer: &Arc<dyn Observer>,
    ) -> Result<Option<RemoteFile>, UploadError> {
        observer.reconciling().await.map_err(UploadError::Checkpoint)?;
        let session_to_complete = multipart.then_some(session);
        self.reconcile(
            job,
            session_to_complete,
            session.began_at_ms,
            size,
            sha256,
            &self.reconcile,
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
    ) -> Result<Option<RemoteFile>, UploadError> {
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
