//! Reconcile, never guess (SPEC §3 of §1 and §4): when a complete or a
//! direct upload was sent but not plainly answered with success (answer lost,
//! an error after sending, the agent killed meanwhile), the service may or may
//! not hold the file. Nothing documents that complete is idempotent, so the
//! answer is found by asking: complete once more (a service may answer with
//! the first result), else look in the workspace for a file with the same
//! name and size, created after the session began, with the same sha256
//! wherever metadata is exposed. Only when several looks, spread over a
//! window (a complete may still be assembling), find nothing is the file
//! known not to be there.

use std::time::Duration;

use crate::api::{ApiError, RemoteFile, Session};
use crate::workspace::Workspace;

/// What is being reconciled.
pub struct Ambiguous<'a> {
    /// The multipart session, if any (none for a direct upload).
    pub session: Option<&'a Session>,
    pub folder: &'a str,
    pub name: &'a str,
    pub random_prefix: bool,
    pub size: u64,
    pub sha256: &'a str,
    /// The service's time when the session (or direct upload) began, unix ms.
    pub began_at_ms: i64,
}

/// How long reconciliation keeps looking before it concludes "not there".
#[derive(Debug, Clone)]
pub struct Window {
    /// Delays between looks; one look more than delays.
    pub delays: Vec<Duration>,
}

/// A send whose answer was lost is not sent again until this long after it
/// went (RELIABILITY.md): a service's listing may show a stored file only
/// after tens of seconds, and concluding "not there" sooner stores it twice.
/// Meanwhile the file is "unresolved" and waits without holding a slot.
pub const UNRESOLVED_BOUND: Duration = Duration::from_secs(120);

impl Default for Window {
    /// Looks with backoff for about 15 s; beyond that an answer-lost send
    /// waits unresolved ([`UNRESOLVED_BOUND`]) and is asked about again.
    fn default() -> Self {
        Window {
            delays: [500, 1000, 2000, 4000, 8000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
        }
    }
}

impl Window {
    /// One look, no waiting: for answers that plainly refused the file.
    pub fn once() -> Window {
        Window { delays: Vec::new() }
    }

    /// How the outcome of a request that failed with `error` is looked
    /// for: the window when the answer was lost or was a failure, one look
    /// when the service refused.
    pub fn for_error(&self, error: &crate::api::ApiError) -> Window {
        if error.is_transient() {
            self.clone()
        } else {
            Window::once()
        }
    }

    /// How long all the looks take.
    pub fn bound(&self) -> Duration {
        self.delays.iter().sum()
    }
}

/// What reconciliation found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The service holds this upload.
    Ours(RemoteFile),
    /// The service holds an object under this name, created since the
    /// upload began, that is not these bytes (another size, or another
    /// sha256 in its metadata): the upload was stored altered.
    Other(RemoteFile),
    /// Nothing of this upload (after every look in the window).
    Nothing,
}

/// `Ok(found)`; `Err`: the service could not be asked (a transient error
/// persisted, or the key was rejected); the caller keeps the ambiguity
/// recorded and asks again later.
pub async fn reconcile(
    workspace: &Workspace,
    what: &Ambiguous<'_>,
    window: &Window,
) -> Result<Found, ApiError> {
    let mut last_err: Option<ApiError> = None;
    for round in 0..=window.delays.len() {
        if round > 0 {
            tokio::time::sleep(window.delays[round - 1]).await;
        }

        if let Some(session) = what.session {
            match workspace.client().complete(session, what.size).await {
                Ok(file) => return Ok(judge(file, what)),
                Err(e @ ApiError::Auth { .. }) => return Err(e),
                Err(e) => tracing::debug!(name = what.name, "complete again: {e}"),
            }
        }
        match workspace.find(what.folder, what.name, what.random_prefix).await {
            Ok(found) => {
                last_err = None;
                if let Some(file) = pick(&found, what) {
                    return Ok(Found::Ours(file));
                }
                if let Some(file) = other(found, what) {
                    return Ok(Found::Other(file));
                }
            }
            Err(e @ ApiError::Auth { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(name = what.name, "cannot list the workspace: {e}");
                last_err = Some(e);
            }
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok(Found::Nothing),
    }
}

/// A file a complete answered with: ours, or (other size or sha256) an
/// altered copy.
fn judge(file: RemoteFile, what: &Ambiguous<'_>) -> Found {
    let size_ok = file.size.is_none_or(|s| s == what.size);
    let sha_ok = file.sha256.as_deref().is_none_or(|s| s == what.sha256);
    if size_ok && sha_ok {
        Found::Ours(file)
    } else {
        Found::Other(file)
    }
}

/// The newest candidate that is this upload: same size, created after the
/// session began (when the service says when), same sha256 (when it
/// exposes metadata).
fn pick(found: &[RemoteFile], what: &Ambiguous<'_>) -> Option<RemoteFile> {
    let mut ok: Vec<&RemoteFile> = found
        .iter()
        .filter(|f| f.size == Some(what.size))
        .filter(|f| f.created_at_ms.is_none_or(|t| t >= what.began_at_ms))
        .filter(|f| f.sha256.as_deref().is_none_or(|s| s == what.sha256))
        .collect();
    ok.sort_by_key(|f| std::cmp::Reverse(f.created_at_ms.unwrap_or(0)));
    ok.into_iter().next().cloned()
}

/// An object under exactly this name, known to be created since the upload
/// began, that is not these bytes. Only a creation time proves it came from
/// this upload, and only the exact name (a random prefix proves nothing).
fn other(found: Vec<RemoteFile>, what: &Ambiguous<'_>) -> Option<RemoteFile> {
    if what.random_prefix {
        return None;
    }
    found
        .into_iter()
        .filter(|f| f.created_at_ms.is_some_and(|t| t >= what.began_at_ms))
        .filter(|f| {
            f.size.is_some_and(|s| s != what.size) || f.sha256.as_deref().is_some_and(|s| s != what.sha256)
        })
        .max_by_key(|f| f.created_at_ms.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(no: &str, size: u64, created: Option<i64>, sha: Option<&str>) -> RemoteFile {
        RemoteFile {
            file_no: no.into(),
            name: "a.mov".into(),
            id: None,
            url: None,
            path: None,
            folder: None,
            folder_no: None,
            size: Some(size),
            created_at_ms: created,
            sha256: sha.map(str::to_string),
            has_metadata: sha.is_some(),
            hash: None,
            is_duplicate: None,
        }
    }

    fn what() -> Ambiguous<'static> {
        Ambiguous {
            session: None,
            folder: "f",
            name: "a.mov",
            random_prefix: false,
            size: 10,
            sha256: "good",
            began_at_ms: 1_000,
        }
    }

    #[test]
    fn picks_only_a_file_that_is_this_upload() {
        let w = what();
        assert_eq!(pick(&[file("1", 9, Some(2_000), None)], &w), None, "other size");
        assert_eq!(
            pick(&[file("1", 10, Some(999), None)], &w),
            None,
            "older than the session"
        );
        assert_eq!(
            pick(&[file("1", 10, Some(2_000), Some("bad"))], &w),
            None,
            "other content"
        );
        let got = pick(
            &[
                file("old", 10, Some(1_500), Some("good")),
                file("new", 10, Some(3_000), Some("good")),
                file("x", 10, Some(4_000), Some("bad")),
            ],
            &w,
        );
        assert_eq!(got.map(|f| f.file_no), Some("new".into()));
        assert!(
            pick(&[file("1", 10, None, None)], &w).is_some(),
            "no time, no metadata: name and size"
        );
    }

    #[test]
    fn an_object_stored_altered_is_told_apart_from_nothing() {
        let w = what();
        let got = other(vec![file("1", 17, Some(2_000), None)], &w);
        assert_eq!(
            got.map(|f| f.file_no),
            Some("1".into()),
            "other size, since the upload began"
        );
        assert_eq!(
            other(vec![file("1", 17, Some(999), None)], &w),
            None,
            "older: not this upload's"
        );
        assert_eq!(
            other(vec![file("1", 17, None, None)], &w),
            None,
            "no time: cannot tell"
        );
        assert!(
            other(vec![file("1", 10, Some(2_000), Some("bad"))], &w).is_some(),
            "other hash"
        );
        let prefixed = Ambiguous {
            random_prefix: true,
            ..what()
        };
        assert_eq!(other(vec![file("1", 17, Some(2_000), None)], &prefixed), None);
        assert!(matches!(judge(file("1", 17, None, None), &w), Found::Other(_)));
        assert!(matches!(judge(file("1", 10, None, None), &w), Found::Ours(_)));
    }
}
