//! Starting a session: what start says about the file, sent through the
//! rate-limit gate and retried while the service says "not now".

use super::*;

impl Uploader {
    /// What start (or a direct upload) says about the file: the job's
    /// fields, its size, and the content sha256 as metadata `sha256`.
    pub(super) fn request(&self, job: &Job, size: u64, sha256: &str) -> StartRequest {
        let mut metadata = job.metadata.clone();
        metadata.insert("sha256".into(), sha256.into());
        StartRequest {
            file_name: job.file_name.clone(),
            size,
            format: job.format.clone(),
            folder: (!job.folder.is_empty()).then(|| job.folder.clone()),
            tags: job.tags.clone(),
            metadata,
            custom_id: None,
            random_prefix: job.random_prefix,
            ttl_seconds: url_lifetime(self.url_ttl, self.limiter.as_ref().and_then(|l| l.rate()), size),
        }
    }

    pub(super) async fn start(&self, job: &Job, size: u64, sha256: &str) -> Result<Session, UploadError> {
        let req = self.request(job, size, sha256);
        let s = (|| async {
            self.throttle.wait().await;
            let s = self.client.start(&req).await;
            if s.is_ok() {
                self.throttle.passed();
            }
            s
        })
        .retry(self.retry.backoff())
        .when(self.retry.retryable())
        .adjust(|e, d| {
            d.map(|d| match e {
                ApiError::Throttled { retry_after } => self.throttle.throttled(*retry_after, d),
                _ => d,
            })
        })
        .notify(|e, d| tracing::debug!(file = %job.path.display(), "start failed ({e}); retrying in {d:?}"))
        .await
        .map_err(refusal)?;
        Ok(s)
    }
}
