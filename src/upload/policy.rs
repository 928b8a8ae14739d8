//! How hard one request is tried ([`RetryPolicy`]), the seam the agent
//! sends files through ([`Transfer`]), and the one an upload reports its
//! steps through ([`Observer`]).

use std::sync::Arc;
use std::time::Duration;

use backon::ExponentialBuilder;
use futures_util::future::BoxFuture;

use super::{CheckpointError, Job, Outcome, Resume, UploadError, Uploader};
use crate::api::{ApiError, Session};
use crate::fileid::FileId;

/// What the agent needs from an uploader: send one file (resuming a saved
/// session) and check the key. [`Uploader`] is the real one; the agent's
/// in-process tests put a scripted one here.
pub trait Transfer: Send + Sync {
    fn send<'a>(
        &'a self,
        job: &'a Job,
        resume: Option<Resume>,
        observer: &'a Arc<dyn Observer>,
    ) -> BoxFuture<'a, Result<Outcome, UploadError>>;
    /// One cheap authenticated call: is the service there, and is the key good?
    fn check_key(&self) -> BoxFuture<'_, Result<(), ApiError>>;
    /// The bandwidth limiter its transfers share (a schedule changes its rate).
    fn limiter(&self) -> Option<Arc<crate::limiter::Limiter>> {
        None
    }
    /// Until when (unix ms) the service asked not to be asked (429).
    fn rate_limited_until_ms(&self) -> Option<i64> {
        None
    }
    /// Requests in flight: the limit, why, and how many now (None: not known).
    fn concurrency(&self) -> Option<super::adapt::View> {
        None
    }
    /// How many small files (direct uploads) may be sent at once beside the
    /// large ones: the adaptive budget's limit (each still takes a slot of
    /// it), or one when the count is fixed.
    fn lane_width(&self) -> usize {
        1
    }
    /// Deletes a remote file (`mirror_deletes`). Ok also when it is
    /// already gone (a DELETE sent before a crash, whose answer was lost).
    fn delete_remote<'a>(&'a self, file_no: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        let _ = file_no;
        Box::pin(async { Err(ApiError::Protocol("this transfer cannot delete files".into())) })
    }
}

impl Transfer for Uploader {
    fn send<'a>(
        &'a self,
        job: &'a Job,
        resume: Option<Resume>,
        observer: &'a Arc<dyn Observer>,
    ) -> BoxFuture<'a, Result<Outcome, UploadError>> {
        Box::pin(self.upload_resuming(job, resume, observer))
    }
    fn check_key(&self) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(self.client.verify_key())
    }
    fn limiter(&self) -> Option<Arc<crate::limiter::Limiter>> {
        self.limiter.clone()
    }
    fn rate_limited_until_ms(&self) -> Option<i64> {
        self.throttle.until_ms()
    }
    fn concurrency(&self) -> Option<super::adapt::View> {
        Some(self.budget.view())
    }
    fn lane_width(&self) -> usize {
        if self.budget.adaptive() {
            self.budget.limit()
        } else {
            1
        }
    }
    fn delete_remote<'a>(&'a self, file_no: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            match self.client.delete_file(file_no).await {
                Ok(()) => Ok(()),
                // A 404 is believed only if the file is not there to ask
                // about either (a service without DELETE answers 404 too).
                Err(ApiError::Rejected { status: 404, message }) => {
                    match self.client.file_details(file_no).await? {
                        None => Ok(()),
                        Some(_) => Err(ApiError::Protocol(format!(
                            "deleting file_no {file_no} answered 404 ({message}), yet the file is still there"
                        ))),
                    }
                }
                Err(e) => Err(e),
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Retries of one request (a part, a start, a complete) after the first try.
    pub max_retries: usize,
    /// New sessions started after URLs expired, per upload.
    pub max_sessions: usize,
    /// Retries of a request that could not connect at all (refused, DNS):
    /// few, so a wrong or down endpoint fails `upload` and `--once` in
    /// seconds (the agent then waits for the service as in an outage).
    pub max_connect_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_retries: 8,
            max_sessions: 5,
            max_connect_retries: 2,
        }
    }
}

impl RetryPolicy {
    /// Whether a failed request is tried again: transient errors are, but a
    /// request that could not connect only `max_connect_retries` times.
    pub(super) fn retryable(&self) -> impl FnMut(&ApiError) -> bool + use<> {
        let mut connects = 0usize;
        let max_connect = self.max_connect_retries;
        move |e: &ApiError| {
            if e.never_sent() {
                connects += 1;
                connects <= max_connect
            } else {
                e.is_transient()
            }
        }
    }

    pub(super) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// Progress and checkpoints. All methods have no-op defaults. The two that
/// return futures are awaited before the upload goes on: a journal records
/// the session before any part is sent, and "completing" (with every part
/// mark before it) before complete is sent; an error there stops the upload.
pub trait Observer: Send + Sync {
    /// The file's identity and content hash, before anything is sent.
    fn hashed(&self, _id: FileId, _sha256: &str) {}
    fn session_started<'a>(&'a self, _session: &'a Session) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(async { Ok(()) })
    }
    /// Bytes sent (negative when a failed part attempt is rewound).
    fn bytes(&self, _delta: i64) {}
    fn part_done(&self, _index: usize) {}
    fn completing(&self) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async { Ok(()) })
    }
    /// A direct upload is about to be sent (recorded first, so a crash
    /// while it is in flight is reconciled, not sent again blind).
    fn direct_sending(&self, _began_at_ms: i64) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async { Ok(()) })
    }
    /// The outcome of a sent complete or direct upload is unknown; the
    /// workspace is being asked.
    fn reconciling(&self) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async { Ok(()) })
    }
    /// A direct upload's outcome was looked for as long as its error
    /// deserved and it is not there: the record of that send is dropped,
    /// so the next attempt sends again without asking once more.
    fn not_found(&self) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async { Ok(()) })
    }
    /// The journal this upload is recorded in and its record's id (a
    /// folder rename is journaled there); None outside the agent.
    fn journal(&self) -> Option<(&crate::journal::Journal, i64)> {
        None
    }
    /// A done version recorded under another path of this file's root with
    /// this identity and content (a local rename).
    fn renamed_from<'a>(
        &'a self,
        _sha256: &'a str,
        _file: FileId,
    ) -> BoxFuture<'a, Result<Option<crate::journal::RenameSource>, CheckpointError>> {
        Box::pin(async { Ok(None) })
    }
    /// How many objects the service stored for this version (by content)
    /// that were not its bytes, in earlier attempts.
    fn stray_copies<'a>(&'a self, _sha256: &'a str) -> BoxFuture<'a, Result<u32, CheckpointError>> {
        Box::pin(async { Ok(0) })
    }
    /// The service stored `file_no` for this version, and it is not its
    /// bytes: counted (a journal keeps the count across attempts and
    /// restarts); returns the count so far.
    fn stray_copy<'a>(
        &'a self,
        _sha256: &'a str,
        _file_no: &'a str,
    ) -> BoxFuture<'a, Result<u32, CheckpointError>> {
        Box::pin(async { Ok(1) })
    }
}

/// The no-op observer.
pub struct Quiet;
impl Observer for Quiet {}
