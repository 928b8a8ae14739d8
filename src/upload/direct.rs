//! One-request uploads for small files (`POST /api/v1/uploads`, SPEC §1.6):
//! the body is streamed from disk with an exact length, paced by the shared
//! limiter, with the sha256 in `metadata`. The start time is recorded before
//! the request goes, so an answer that never comes (or an error after the
//! bytes were sent) is reconciled exactly like a complete.
//!
//! The body is hashed as it leaves: a file overwritten in place while the
//! request streams would otherwise be stored as bytes of neither version
//! under the old version's sha256. Such an object is deleted (or, where that
//! fails, recorded) and the file waits to settle again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::Digest;

use super::reconcile::Found;
use super::{Job, Observer, Outcome, Source, UploadError, Uploader};
use crate::api::{ApiError, RemoteFile};

/// What one request's body was, as it was read from the descriptor.
struct Body {
    sent: Arc<AtomicU64>,
    digest: Arc<Mutex<sha2::Sha256>>,
}

impl Body {
    fn new() -> Body {
        Body {
            sent: Arc::new(AtomicU64::new(0)),
            digest: Arc::new(Mutex::new(sha2::Sha256::new())),
        }
    }

    /// Every byte went and they hash to `sha256`: the version that settled.
    /// `None` when the body did not go whole (nothing can be said of it).
    fn was(&self, size: u64, sha256: &str) -> Option<bool> {
        if self.sent.load(Ordering::Relaxed) != size {
            return None;
        }
        let digest = self.digest.lock().expect("body digest lock").clone().finalize();
        Some(hex::encode(digest) == sha256)
    }
}

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
            // Room in the budget of requests in flight, before the send is
            // recorded (a crash while waiting leaves nothing to look for).
            let slot = self.budget.slot(size).await;
            let began_at_ms = self.client.service_now_ms().await;
            observer
                .direct_sending(began_at_ms)
                .await
                .map_err(UploadError::Checkpoint)?;
            let body = Body::new();
            let stream = self.part_body(
                source,
                0,
                size,
                body.sent.clone(),
                Some(body.digest.clone()),
                observer,
            );
            slot.sending();
            let sent = self.client.direct_upload(&form, stream).await;
            match &sent {
                Ok(_) => slot.done(),
                Err(e) => slot.failed_with(e),
            }
            let error = match sent {
                Ok(file) => {
                    if body.was(size, &sha256) == Some(false) {
                        return Err(self.discard_mixed(job, &file, true, &sha256, observer).await);
                    }
                    return self.accept(job, file, size, sha256, observer).await;
                }
                Err(e @ ApiError::Auth { .. }) => return Err(e.into()),
                Err(e) => e,
            };
            observer.bytes(-(body.sent.load(Ordering::Relaxed) as i64));
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
            let window = self.reconcile.for_error(&error);
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
                Found::Ours(file) if body.was(size, &sha256) == Some(false) => {
                    Err(self.discard_mixed(job, &file, false, &sha256, observer).await)
                }
                Found::Ours(file) => self.accept(job, file, size, sha256, observer).await,
                Found::Other(file) => Err(self.altered(job, &file, size, &sha256, observer).await),
                Found::Nothing => {
                    if error.answer_lost() {
                        self.unresolved_until_bound(job, began_at_ms).await?;
                    }
                    observer.not_found().await.map_err(UploadError::Checkpoint)?;
                    Err(super::refusal(error))
                }
            };
        }
    }

    /// The body sent was not the version that settled (the file was written
    /// while it streamed), so `file` holds bytes of neither version under the
    /// old sha256. It is deleted when it is surely ours (the request's own
    /// answer, or its served content proves the mix); otherwise, or when the
    /// delete fails, it is recorded as a stray copy for `verify` and the log.
    /// Either way the file is settled and sent again.
    async fn discard_mixed(
        &self,
        job: &Job,
        file: &RemoteFile,
        answered: bool,
        sha256: &str,
        observer: &Arc<dyn Observer>,
    ) -> UploadError {
        let path = job.path.display();
        let proven = answered
            || match file.url.as_deref() {
                Some(url) => matches!(
                    self.client.url_sha256(url, file.size.unwrap_or(u64::MAX)).await,
                    Ok(Some(h)) if h != sha256
                ),
                None => false,
            };
        let deleted = if proven {
            match self.client.delete_file(&file.file_no).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        "{path}: could not delete the mixed object (file_no {}): {e}",
                        file.file_no
                    );
                    false
                }
            }
        } else {
            false
        };
        if deleted {
            tracing::warn!(
                "{path}: written while its one request was sent; the object stored (file_no {}) mixed two \
                 versions and was deleted; the file is sent again once it settles",
                file.file_no
            );
        } else {
            if let Err(e) = observer.stray_copy(sha256, &file.file_no).await {
                return UploadError::Checkpoint(e);
            }
            tracing::warn!(
                "{path}: written while its one request was sent; the object stored (file_no {}) may mix two \
                 versions and is left in the workspace (delete it there; `verify --content` lists it); the \
                 file is sent again once it settles",
                file.file_no
            );
        }
        UploadError::Changed("written while its one request was sent".into())
    }
}
