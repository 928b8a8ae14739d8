//! `upload` and the journal: what is left to the agent or already
//! uploaded, and each result recorded as the agent records its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::agent::{JournalObserver, done_record, usable};
use crate::fileid::Fingerprint;
use crate::journal::Journal;
use crate::scan;
use crate::upload::{Observer, Outcome};

/// Why `upload` leaves a file inside a watched root to the agent.
pub(super) enum Left {
    /// Already uploaded as this very version.
    Uploaded { remote: String, file_no: String },
    /// The agent that watches its folder is running: it sends it.
    ToAgent { root: PathBuf },
}

impl Left {
    pub(super) fn describe(&self, path: &Path) -> String {
        match self {
            Left::Uploaded { remote, file_no } => format!(
                "{}: already uploaded as this very version → {remote}  file_no={file_no}; not sent again",
                path.display()
            ),
            Left::ToAgent { root } => format!(
                "{}: left to the running agent, which watches {} (sending it here too would store it twice; \
                 `autorender-sync status` shows its progress)",
                path.display(),
                root.display()
            ),
        }
    }

    pub(super) fn json(&self, path: &Path) -> serde_json::Value {
        let at = crate::clock::system_ms();
        match self {
            Left::Uploaded { remote, file_no } => json!({
                "local_path": path, "ok": true, "skipped": "already_uploaded",
                "remote_path": remote, "file_no": file_no, "error": null,
                "at": crate::cli::output::json_time(Some(at)), "at_ms": at, "file": path,
            }),
            Left::ToAgent { root } => json!({
                "local_path": path, "ok": true, "skipped": "left_to_agent", "watched_root": root,
                "error": null, "at": crate::cli::output::json_time(Some(at)), "at_ms": at, "file": path,
            }),
        }
    }
}

/// Whether a named file inside a watched root is left alone (see [`Left`]).
pub(super) async fn left_alone(
    settings: &crate::config::Settings,
    journal: Option<&Journal>,
    agent_runs: bool,
    path: &Path,
) -> Option<Left> {
    let abs = path.canonicalize().ok()?;
    let (w, rel) = settings
        .watches
        .iter()
        .find_map(|w| scan::relative(w, &abs).ok().map(|rel| (w, rel)))?;
    let now = crate::anchor::file_id(&w.path, &abs).ok()?;
    if let Some(j) = journal
        && let Ok(Some(row)) = j.lookup(w.key(), rel).await
        && row.is_uploaded_version(&now)
    {
        return Some(Left::Uploaded {
            remote: row.remote_path.clone().unwrap_or_default(),
            file_no: row.file_no.clone().unwrap_or_default(),
        });
    }
    agent_runs.then(|| Left::ToAgent { root: w.path.clone() })
}

/// Records successful uploads in the journal. An upload that worked is never
/// reported as failed because the journal could not be written: warn instead.
pub(super) async fn record(
    journal: &Journal,
    settings: &crate::config::Settings,
    results: &[(PathBuf, Result<Outcome, String>, bool)],
) {
    // All records are queued before any is awaited, so the journal's group
    // commit writes them in a few transactions instead of one fsync each.
    let mut pending = Vec::new();
    for (path, result, _) in results {
        let Ok(o) = result else { continue };
        let Some((root, rel, fingerprint)) = place_of(settings, path) else {
            continue;
        };
        // `upload` never adopts (its jobs say so): the record is a send's.
        let done = done_record(o, fingerprint);
        pending.push(async move {
            if let Err(e) = journal.record_upload(root, rel, done).await {
                tracing::warn!("{} not recorded in the journal: {e}", path.display());
            }
        });
    }
    futures_util::future::join_all(pending).await;
    if let Err(e) = journal.checkpoint().await {
        tracing::warn!("the journal's write-ahead log was not folded back: {e}");
    }
}

/// Where the journal keeps `path`'s record, and its version: under the
/// watched root that holds it (so the agent skips it once uploaded), else
/// under its own folder.
pub(super) fn place_of(
    settings: &crate::config::Settings,
    path: &Path,
) -> Option<(String, String, Fingerprint)> {
    let abs = path.canonicalize().ok()?;
    let fingerprint = Fingerprint::of(&abs).ok()?;
    let (root, rel) = settings
        .watches
        .iter()
        .find_map(|w| scan::relative(w, &abs).ok().map(|rel| (w.key(), rel)))
        .unwrap_or_else(|| {
            let parent = abs.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = abs
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (parent.to_string_lossy().into_owned(), name)
        });
    Some((root, rel, fingerprint))
}

/// The journal observer for `path`'s upload (progress still shown), and
/// the session an interrupted upload of this very version left, if any.
pub(super) async fn recorded(
    journal: &Journal,
    settings: &crate::config::Settings,
    path: &Path,
    progress: Arc<dyn Observer>,
) -> (Arc<dyn Observer>, Option<crate::upload::Resume>) {
    let Some((root, rel, fp)) = place_of(settings, path) else {
        return (progress, None);
    };
    match journal.upload_slot(root, rel, fp).await {
        Ok((id, saved)) => (
            Arc::new(JournalObserver::new(journal.clone(), id, Some(progress))),
            saved.and_then(|s| usable(s, fp)),
        ),
        Err(e) => {
            tracing::warn!(
                "{}: not recorded in the journal ({e}); it cannot resume if stopped",
                path.display()
            );
            (progress, None)
        }
    }
}
