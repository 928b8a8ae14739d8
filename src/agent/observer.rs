//! The journal's view of an upload in flight: each step recorded before
//! the next (see [`Observer`]), and which recorded session may be resumed.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use crate::api::Session;
use crate::fileid::{FileId, Fingerprint};
use crate::journal::{DoneRecord, Journal, SavedSession};
use crate::upload::{CheckpointError, Observer, Outcome, Phase, Resume};

/// Records each upload step in the journal (see [`Observer`]).
pub struct JournalObserver {
    journal: Journal,
    id: i64,
    /// The version being sent and its sha256, once hashed.
    hashed: Mutex<Option<(FileId, String)>>,
    /// Where progress goes too (a progress bar), if anywhere.
    progress: Option<Arc<dyn Observer>>,
}

impl JournalObserver {
    /// Records the upload of file `id`'s record; bytes sent also go to `progress`.
    pub fn new(journal: Journal, id: i64, progress: Option<Arc<dyn Observer>>) -> JournalObserver {
        JournalObserver {
            journal,
            id,
            hashed: Mutex::new(None),
            progress,
        }
    }

    fn hashed_version(&self) -> Result<(FileId, String), CheckpointError> {
        self.hashed
            .lock()
            .expect("hashed lock")
            .clone()
            .ok_or(CheckpointError::NotHashed)
    }
}

impl Observer for JournalObserver {
    fn hashed(&self, id: FileId, sha256: &str) {
        *self.hashed.lock().expect("hashed lock") = Some((id, sha256.to_string()));
        if let Some(p) = &self.progress {
            p.hashed(id, sha256);
        }
    }
    fn session_started<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(async move {
            let (file, sha) = self.hashed_version()?;
            self.journal
                .save_session(self.id, session.clone(), file, sha)
                .await
                .map_err(CheckpointError::store)
        })
    }
    fn bytes(&self, delta: i64) {
        if let Some(p) = &self.progress {
            p.bytes(delta);
        }
    }
    fn part_done(&self, index: usize) {
        self.journal.part_done(self.id, index);
    }
    fn completing(&self) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async move {
            self.journal
                .completing(self.id)
                .await
                .map_err(CheckpointError::store)
        })
    }
    fn direct_sending(&self, began_at_ms: i64) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async move {
            let (file, sha) = self.hashed_version()?;
            self.journal
                .direct_sending(self.id, began_at_ms, file, sha)
                .await
                .map_err(CheckpointError::store)
        })
    }
    fn reconciling(&self) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async move {
            self.journal
                .reconciling(self.id)
                .await
                .map_err(CheckpointError::store)
        })
    }
    fn not_found(&self) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async move {
            self.journal
                .drop_session(self.id)
                .await
                .map_err(CheckpointError::store)
        })
    }
    fn journal(&self) -> Option<(&Journal, i64)> {
        Some((&self.journal, self.id))
    }
    fn renamed_from<'a>(
        &'a self,
        sha256: &'a str,
        file: FileId,
    ) -> BoxFuture<'a, Result<Option<crate::journal::RenameSource>, CheckpointError>> {
        Box::pin(async move {
            self.journal
                .renamed_from(self.id, sha256.to_string(), file)
                .await
                .map_err(CheckpointError::store)
        })
    }
    fn stray_copies<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<u32, CheckpointError>> {
        Box::pin(async move {
            self.journal
                .stray_copies(self.id, sha256.to_string())
                .await
                .map_err(CheckpointError::store)
        })
    }
    fn stray_copy<'a>(
        &'a self,
        sha256: &'a str,
        file_no: &'a str,
    ) -> BoxFuture<'a, Result<u32, CheckpointError>> {
        Box::pin(async move {
            self.journal
                .note_stray_copy(self.id, sha256.to_string(), file_no.to_string())
                .await
                .map_err(CheckpointError::store)
        })
    }
}

/// A saved session is resumed only for the very same file version.
pub fn usable(saved: SavedSession, fp: Fingerprint) -> Option<Resume> {
    let phase = match (saved.direct, saved.completing) {
        (true, _) => Phase::Direct,
        (false, true) => Phase::Completing,
        (false, false) => Phase::Parts,
    };
    (saved.fingerprint == fp && saved.done.len() == saved.session.parts.len()).then_some(Resume {
        session: saved.session,
        done: saved.done,
        sha256: saved.sha256,
        fingerprint: saved.fingerprint,
        file_id: saved.file_id,
        phase,
    })
}

/// What the journal records of a finished upload of the version
/// `fingerprint` (the agent's and `upload`'s record alike).
pub fn done_record(o: &Outcome, fingerprint: Fingerprint) -> DoneRecord {
    DoneRecord {
        fingerprint,
        identity: o.source,
        sha256: o.sha256.clone(),
        remote_folder: o.folder.clone(),
        remote_name: o.name.clone(),
        file_no: o.file.file_no.clone(),
        url: o.file.url.clone(),
        adopted: o.adopted.map(|p| p.describe().to_string()),
        retire: o.renamed_from.as_ref().map(|r| r.id),
    }
}
