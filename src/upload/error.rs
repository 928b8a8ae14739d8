//! What can end one file's upload, and how the outcome rule reads it.

use super::*;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The service refused the request that describes the file (start or a
    /// direct upload: 400 validation, 413 too large …). Sending the same
    /// file again cannot succeed, so it is not retried.
    #[error("refused by the service ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("file changed during upload ({0}); it will be uploaded once it is stable")]
    Changed(String),
    /// Reading the file failed; `kind` is the error's own (a file gone
    /// from its path is told apart without looking again).
    #[error("cannot read {path}: {message}")]
    Io {
        path: PathBuf,
        kind: std::io::ErrorKind,
        message: String,
    },
    #[error("upload could not be verified: {0}")]
    Verify(String),
    /// The service stored other bytes than the file's, again: failed so
    /// that no more copies are made.
    #[error("{0}")]
    Altered(String),
    #[error("cannot record progress in the journal: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// Uploads were paused before this one finished; its stored parts are
    /// recorded and it resumes when uploads do.
    #[error("paused")]
    Paused,
    /// Sent, the answer lost, and not in the workspace yet, while its
    /// listing may still lag ([`reconcile::UNRESOLVED_BOUND`]): nothing is
    /// sent again before `retry_in` has passed; then it is asked once more.
    #[error("outcome unresolved: not in the workspace yet; asked again in {}s", .retry_in.as_secs())]
    Unresolved { retry_in: Duration },
}

/// The journal could not record a step of an upload: the upload stops
/// (nothing goes out unrecorded) and the file is tried again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckpointError {
    /// The upload began before the version it sends was hashed.
    #[error("the file was not hashed before its upload began")]
    NotHashed,
    /// The store failed the write (its own error kept as the source).
    #[error("{0}")]
    Store(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
}

impl CheckpointError {
    /// The store's error `e`, kept whole.
    pub fn store(e: impl std::error::Error + Send + Sync + 'static) -> CheckpointError {
        CheckpointError::Store(std::sync::Arc::new(e))
    }
}

impl UploadError {
    /// A read of `path` failed with `e` (its kind kept).
    pub fn io(path: &std::path::Path, e: &std::io::Error) -> UploadError {
        UploadError::Io {
            path: path.to_path_buf(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// The API key was refused: stop everything, not just this file.
    pub fn is_auth(&self) -> bool {
        matches!(self, UploadError::Api(ApiError::Auth { .. }))
    }

    /// Retrying cannot help: the file fails at once (`retry` still works).
    pub fn is_permanent(&self) -> bool {
        matches!(self, UploadError::Refused { .. } | UploadError::Altered(_))
    }
}

/// An error of this kind, reading a file, means it is no longer there (or a
/// folder on its way is not).
pub fn gone(kind: std::io::ErrorKind) -> bool {
    matches!(
        kind,
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// A rejection of start or of a direct upload is about the file itself,
/// except for the statuses that mean "not now" (404 stays retried: it can
/// come from a service being redeployed).
pub(crate) fn refusal(e: ApiError) -> UploadError {
    match e {
        ApiError::Rejected { status, message } if !matches!(status, 404 | 408 | 409 | 425) => {
            UploadError::Refused { status, message }
        }
        e => UploadError::Api(e),
    }
}
