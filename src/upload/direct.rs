//! One-request uploads for small files (`POST /api/v1/uploads`, SPEC §1.6):
//! the body is streamed from disk with an exact length, paced by the shared
//! limiter, with the sha256 in `metadata`. The start time is recorded before
//! the request goes, so an answer that never comes (or an error after the
//! bytes were sent) is reconciled exactly like a complete.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::reconcile::Found;
use super::{Job, Observer, Outcome, Source, UploadError, Uploader, reconcile};
use crate::api::ApiError;

impl Uploader {
    pub(super) async fn direct(
        &self,
        job: &Job,
        source: &Source,
        sha256: String,
        observer: &Arc<dyn Observer>,
    ) -> Result<Outcome, UploadError> {
        let size = source.id.size;
        let form = self.request(job, size, &sha256);
        let mut tries = 0;
        let mut retryable = self.retry.retryable();
        loop {
            tries += 1;
            source.check(job)?;
            source.confirm(job, &sha256).await?;
            let began_at_ms = self.client.service_now_ms().await;
            observer
                .direct_sending(began_at_ms)
                .await
                .map_err(UploadError::Checkpoint)?;
            let sent = Arc::new(AtomicU64::new(0));
            let body = self.part_body(source, 0, size, sent.clone(), observer);
            let error = match self.client.direct_upload(&form, body).await {
                Ok(file) => return self.accept(job, file, size, sha256, observer).await,
                Err(e @ ApiError::Auth { .. }) => return Err(e.into()),
                Err(e) => e,
            };
            observer.bytes(-(sent.load(std::sync::atomic::Ordering::Relaxed) as i64));
            // No connection, so nothing can have been stored: no need to ask.
            if error.never_sent() {
                if tries <= self.retry.max_retries && retryable(&error) {
                    tokio::time::sleep(self.retry.min_delay * (1 << tries.min(6))).await;
                    continue;
                }
                return Err(error.into());
            }
            // A refusal before the body went anywhere is plain; anything else
            // may have stored the file.
            let window = if error.is_transient() {
                reconcile::Window::short()
            } else {
                reconcile::Window::once()
            };
            tracing::debug!(
                "{}: direct upload not answered with success ({error}); asking the workspace",
                job.path.display()
            );
            observer.reconciling().await.map_err(UploadError::Checkpoint)?;
            // Sent and not found: this attempt is spent. It is never sent
            // again inside one attempt, so `max_attempts` bounds the copies
            // an unclear outcome can leave.
            return match self
                .reconcile(job, None, began_at_ms, size, &sha256, &window)
                .await?
            {
                Found::Ours(file) => self.accept(job, file, size, sha256, observer).await,
                Found::Other(file) => Err(self.altered(job, &file, size, &sha256, observer).await),
                Found::Nothing => Err(super::refusal(error)),
            };
        }
    }
}
