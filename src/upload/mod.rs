//! One file's upload: hash; for a file with no journal record, look for the
//! same content in the workspace first (adoption); then either one direct
//! request (`direct.rs`, small files) or start, PUT parts in parallel
//! (streamed from disk, each retried alone), re-check the file, complete. A
//! complete or direct upload without a plain success is reconciled
//! (`reconcile.rs`), never sent again blind. Parts are sent in `parts.rs`;
//! the workspace is asked (reconcile, adoption) in `outcome.rs`.
//!
//! Invariants:
//! - memory is bounded by the requests in flight (a fixed `concurrent_parts`
//!   per file, or the adaptive budget of `adapt.rs` for all files together,
//!   at most `max_concurrent_parts`) × one read buffer, whatever the file
//!   size (parts are streamed, never loaded);
//! - the session is completed only if the file is the same version as when
//!   it was hashed: same inode, size, mtime and ctime, read from the one
//!   descriptor (otherwise [`UploadError::Changed`]);
//! - expired or refused part URLs start a new session (bounded), transient
//!   errors are retried with exponential backoff + jitter, anything else ends
//!   this file's attempt with a classified error;
//! - every step is reported to an [`Observer`] before the next one starts, so a
//!   journal can checkpoint the session and resume it later.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::Retryable;
use futures_util::{StreamExt, TryStreamExt};

use crate::api::{ApiError, Client, RemoteFile, Session, StartRequest};
pub use crate::fileid::Fingerprint;
use crate::fileid::{FileId, hash_open, read_at};
use crate::limiter::Limiter;
use crate::workspace::{Proof, Workspace, same_content};
use outcome::verify;
use reconcile::Found;

mod direct;
mod error;
mod folders;
pub(crate) use error::refusal;
pub use error::{CheckpointError, UploadError, gone};
mod source;
pub(crate) use source::Source;
mod factory;
mod policy;
mod start;
pub use policy::{Observer, Quiet, RetryPolicy, Transfer};
pub mod adapt;
mod outcome;
mod parts;
pub mod reconcile;
#[cfg(test)]
mod tests;
pub mod throttle;

/// Objects the service may store for one file version that are not its
/// bytes before the file fails (SPEC §7: at most 2 copies per version).
pub const MAX_STRAY_COPIES: u32 = 2;

/// The upload rate assumed when sizing URL lifetimes without a bandwidth limit.
const ASSUMED_RATE: f64 = 2.0 * 1024.0 * 1024.0;
/// Parts in flight for one file at most, when URLs the service grants
/// for less than an upload needs call for more streams.
const MAX_PARTS_IN_FLIGHT: usize = 32;

/// The longest lifetime a presigned URL can have (S3's limit).
const MAX_URL_TTL: u64 = 7 * 86400;

/// The presigned URL lifetime (seconds) to ask for: `url_ttl`, or longer
/// when `size` bytes cannot be sent in that time at the expected rate (the
/// bandwidth limit, else a cautious 2 MiB/s), with room to spare; at most 7
/// days, the longest a presigned URL can live. The service may grant less.
fn url_lifetime(url_ttl: Duration, rate: Option<f64>, size: u64) -> u64 {
    let needed = (size as f64 / rate.unwrap_or(ASSUMED_RATE) * 2.0) as u64 + 600;
    url_ttl.as_secs().max(needed).clamp(1, MAX_URL_TTL)
}

/// What to upload and where.
#[derive(Debug, Clone)]
pub struct Job {
    /// The watched root (or the folder named to `upload`): every access to
    /// `path` is anchored there and follows no symlink ([`crate::anchor`]).
    pub root: PathBuf,
    /// (device, inode) of the version that settled, when known: a
    /// descriptor of any other file is not uploaded.
    pub settled: Option<(u64, u64)>,
    pub path: PathBuf,
    pub file_name: String,
    /// Normalised remote folder ("" = workspace root).
    pub folder: String,
    pub format: String,
    pub tags: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub random_prefix: bool,
    /// No journal record: look for the same content in the workspace first.
    pub adopt: bool,
    /// Cancelled when uploads are paused: no new part starts, the parts in
    /// flight finish (and are recorded), and the upload ends as
    /// [`UploadError::Paused`], to be resumed from its recorded parts.
    pub hold: tokio_util::sync::CancellationToken,
    /// The content hash taken earlier of this very version (inode, size,
    /// mtime, ctime): used instead of reading the file once more.
    pub known_sha256: Option<(FileId, String)>,
    /// Send it in parts even if it is small (a one-request upload of it was
    /// stored altered before; the agent learns this from its journal).
    pub in_parts: bool,
    /// A local rename of an uploaded file renames its remote file
    /// (`mirror_renames`), when the journal knows it under its old path.
    pub renames: bool,
}

impl Job {
    /// A file the agent writes itself beside a set (its manifest, its ASC
    /// MHL history): the watch's tags and metadata, never a random prefix,
    /// and adopted when a crash came after it was sent, so it is not stored
    /// twice. `root` anchors `path`; the caller sets the path and the names.
    pub fn companion(
        root: PathBuf,
        format: &str,
        tags: &[String],
        metadata: &serde_json::Map<String, serde_json::Value>,
        hold: tokio_util::sync::CancellationToken,
    ) -> Job {
        Job {
            root,
            settled: None,
            path: PathBuf::new(),
            file_name: String::new(),
            folder: String::new(),
            format: format.into(),
            tags: tags.to_vec(),
            metadata: metadata.clone(),
            random_prefix: false,
            adopt: true,
            hold,
            known_sha256: None,
            in_parts: false,
            renames: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: RemoteFile,
    pub size: u64,
    pub sha256: String,
    pub folder: String,
    pub name: String,
    /// Recorded without uploading: how the workspace's copy was proven the same.
    pub adopted: Option<Proof>,
    /// The identity of the descriptor the upload read (what `after_upload`
    /// may act on); None where no local file was read.
    pub source: Option<FileId>,
    /// A local rename: the remote file of this record was renamed to this
    /// file's name instead of uploading it again.
    pub renamed_from: Option<crate::journal::RenameSource>,
}

#[derive(Debug, Clone)]
pub struct Uploader {
    pub client: Client,
    /// The same client's view of the workspace, with the per-run listing cache.
    pub workspace: Arc<Workspace>,
    /// Files up to this size go in one request (`POST /api/v1/uploads`).
    pub direct_upload_max: u64,
    /// How long an unknown outcome is looked for before "not there".
    pub reconcile: reconcile::Window,
    /// Requests with a body in flight: fixed per file, or one adaptive
    /// budget for every file (`adapt.rs`).
    pub budget: Arc<adapt::Budget>,
    pub limiter: Option<Arc<Limiter>>,
    pub url_ttl: Duration,
    pub retry: RetryPolicy,
    /// A part whose body makes no progress for this long is abandoned and
    /// retried (a stalled connection never errors by itself).
    pub stall_timeout: Duration,
    /// The service's rate limit, one gate for all uploads.
    pub throttle: Arc<throttle::Throttle>,
}

/// A session carried over from an earlier run, with the parts already stored.
#[derive(Debug, Clone)]
pub struct Resume {
    pub session: Session,
    pub done: Vec<bool>,
    pub sha256: String,
    pub fingerprint: Fingerprint,
    /// Inode and ctime when the session began (None in older journals).
    pub file_id: Option<FileId>,
    pub phase: Phase,
}

/// How far an upload carried over from an earlier run had got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Parts were being sent.
    Parts,
    /// Complete was sent (or about to be): its outcome is unknown.
    Completing,
    /// A direct upload was sent (the session holds only its start time).
    Direct,
}

impl Uploader {
    pub async fn upload(&self, job: &Job, observer: &Arc<dyn Observer>) -> Result<Outcome, UploadError> {
        self.upload_resuming(job, None, observer).await
    }

    /// Files up to `direct_upload_max` go in one request, unless a tag has a
    /// comma (the direct upload sends tags comma-separated).
    pub fn is_direct(&self, job: &Job, size: u64) -> bool {
        self.direct_upload_max > 0
            && size <= self.direct_upload_max
            && !job.tags.iter().any(|t| t.contains(','))
    }

    pub async fn upload_resuming(
        &self,
        job: &Job,
        resume: Option<Resume>,
        observer: &Arc<dyn Observer>,
    ) -> Result<Outcome, UploadError> {
        // One descriptor for the whole upload: hash and every part read the
        // same inode, and any change to it or to the path shows in `check`.
        if job.hold.is_cancelled() {
            return Err(UploadError::Paused);
        }
        let source = Source::open(job).await?;
        let mut outcome = self.send_from(job, &source, resume, observer).await?;
        outcome.source = Some(source.confirmed());
        Ok(outcome)
    }

    /// A local rename of an uploaded version (`from`: the same device,
    /// inode, size and sha256 under another path of the root) made remote:
    /// its file renamed to this file's name. None (send it instead) when
    /// the old path still holds the file (a second hard link), the remote
    /// folder differs (the API cannot move files), or the service cannot
    /// rename it (gone, or renames not offered).
    async fn rename_instead(
        &self,
        job: &Job,
        source: &Source,
        sha256: &str,
        from: crate::journal::RenameSource,
        observer: &Arc<dyn Observer>,
    ) -> Result<Option<Outcome>, UploadError> {
        let old = job.root.join(&from.rel);
        let (root, path) = (job.root.clone(), old.clone());
        let there = tokio::task::spawn_blocking(move || crate::anchor::file_id(&root, &path))
            .await
            .ok()
            .and_then(|r| r.ok());
        if there.is_some_and(|t| t.dev == source.id.dev && t.ino == source.id.ino) {
            return Ok(None);
        }
        if from.remote_folder.trim_matches('/') != job.folder.trim_matches('/') {
            // A folder renamed locally: its remote folder renamed (once).
            if let Some(outcome) = self
                .by_folder_rename(job, &from, sha256, source.id.size, observer)
                .await?
            {
                return Ok(Some(outcome));
            }
            tracing::info!(
                "{} was {} (uploaded as file_no {} in {}): another remote folder, and files cannot be moved \
                 there; it is uploaded to {}",
                job.path.display(),
                old.display(),
                from.file_no,
                from.remote_folder,
                job.folder
            );
            return Ok(None);
        }
        tracing::info!(
            "{} was {}: renaming its remote file (file_no {}) {} → {}",
            job.path.display(),
            old.display(),
            from.file_no,
            from.remote_name,
            job.file_name
        );
        let file = match self.client.rename_file(&from.file_no, &job.file_name).await {
            Ok(file) => file,
            Err(ApiError::Rejected { status, message }) if matches!(status, 404 | 405 | 501) => {
                tracing::warn!(
                    "{}: the service did not rename file_no {} ({status}: {message}); the file is uploaded \
                     under its new name",
                    job.path.display(),
                    from.file_no
                );
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if file.file_no != from.file_no {
            return Err(UploadError::Verify(format!(
                "renaming file_no {} answered file_no {}",
                from.file_no, file.file_no
            )));
        }
        let name = if file.name.is_empty() {
            job.file_name.clone()
        } else {
            file.name.clone()
        };
        Ok(Some(Outcome {
            size: source.id.size,
            sha256: sha256.to_string(),
            folder: job.folder.clone(),
            name,
            file,
            adopted: Some(Proof::Renamed),
            source: None,
            renamed_from: Some(from),
        }))
    }

    /// The upload from the one open descriptor.
    async fn send_from(
        &self,
        job: &Job,
        source: &Source,
        resume: Option<Resume>,
        observer: &Arc<dyn Observer>,
    ) -> Result<Outcome, UploadError> {
        let io_err = |e: std::io::Error| UploadError::io(&job.path, &e);
        let before = source.id.fingerprint();
        let began = std::time::Instant::now();
        let hash = || async {
            let reader = source.file.try_clone().map_err(io_err)?;
            let sha = hash_open(reader).await.map_err(io_err)?;
            source.check(job)?;
            Ok::<_, UploadError>(sha)
        };
        let (sha256, mut carried) = match resume {
            Some(r) if r.fingerprint == before && r.file_id.is_some_and(|id| id == source.id) => {
                (r.sha256, Some((r.session, r.done, r.phase)))
            }
            // Recorded without this machine's inode and ctime (another fleet
            // node's session, or an older journal): size and mtime alone do
            // not prove the same content (a re-render copied in with its
            // mtime kept), and resuming a session with other bytes would
            // store a file mixed from two versions. The content decides.
            // Also when only the ctime moved since (a chmod, a new hard link):
            // the same content resumes the session.
            Some(r)
                if r.fingerprint == before && r.file_id.is_none_or(|id| id.same_but_ctime(&source.id)) =>
            {
                let sha = hash().await?;
                if sha == r.sha256 {
                    (sha, Some((r.session, r.done, r.phase)))
                } else {
                    tracing::warn!(
                        "{}: its content changed since the recorded upload began (same size and mtime); \
                         that session is not resumed, and the file is sent anew",
                        job.path.display()
                    );
                    (sha, None)
                }
            }
            _ => match &job.known_sha256 {
                Some((id, sha)) if *id == source.id => (sha.clone(), None),
                _ => (hash().await?, None),
            },
        };
        observer.hashed(source.id, &sha256);
        tracing::debug!(file = %job.path.display(), size = before.size, "hashed in {:?}", began.elapsed());

        // A file renamed locally after its upload: its remote file is
        // renamed, not sent again.
        if job.renames
            && carried.is_none()
            && let Some(from) = observer
                .renamed_from(&sha256, source.id)
                .await
                .map_err(UploadError::Checkpoint)?
            && let Some(outcome) = self.rename_instead(job, source, &sha256, from, observer).await?
        {
            return Ok(outcome);
        }

        if job.adopt
            && carried.is_none()
            && let Some((file, proof)) = self.adoptable(job, before, &sha256).await?
        {
            tracing::info!(
                "{} is already in the workspace as file_no {} ({}); recorded without uploading",
                job.path.display(),
                file.file_no,
                proof.describe()
            );
            let mut outcome = verify(job, file, before.size, sha256)?;
            outcome.adopted = Some(proof);
            return Ok(outcome);
        }

        // An upload that may already have landed is reconciled before anything is sent again.
        if let Some((session, _, phase @ (Phase::Completing | Phase::Direct))) = &carried {
            let multipart = *phase == Phase::Completing;
            tracing::info!(
                "{}: the last upload's outcome is unknown; asking the workspace",
                job.path.display()
            );
            match self
                .ask_workspace(
                    job,
                    session,
                    multipart,
                    before.size,
                    &sha256,
                    &self.reconcile,
                    observer,
                )
                .await?
            {
                Found::Ours(file) => return self.accept(job, file, before.size, sha256, observer).await,
                Found::Other(file) => {
                    return Err(self.altered(job, &file, before.size, &sha256, observer).await);
                }
                Found::Nothing => {
                    self.unresolved_until_bound(job, session.began_at_ms).await?;
                    tracing::info!(
                        "{}: not in the workspace {}s after it was sent; uploading it again",
                        job.path.display(),
                        reconcile::UNRESOLVED_BOUND.as_secs()
                    );
                    carried = None;
                }
            }
        }

        // A session none of whose parts is stored holds nothing: a file the
        // settings now send in one request (a reload raised
        // direct_upload_max) leaves it unfinished; the service drops it.
        if let Some((_, done, Phase::Parts)) = &carried
            && !done.iter().any(|d| *d)
            && self.is_direct(job, before.size)
            && !job.in_parts
        {
            tracing::info!(
                "{}: sent in one request as the settings now say; its multipart session had no part stored",
                job.path.display()
            );
            carried = None;
        }

        // A direct upload the service stored altered before goes in parts.
        if carried.is_none() && self.is_direct(job, before.size) && !job.in_parts {
            let strays = observer
                .stray_copies(&sha256)
                .await
                .map_err(UploadError::Checkpoint)?;
            if strays == 0 {
                return self.direct(job, source, sha256, observer).await;
            }
            tracing::info!(
                "{}: sent in parts, not in one request: the service stored a one-request upload of it altered before",
                job.path.display()
            );
        }

        let mut sessions = 0;
        // Parts in flight; more after a session whose URLs outlived the
        // service's grant (each stream capped, more streams finish sooner).
        let mut in_flight = self.budget.per_file();
        loop {
            let (session, done) = match carried.take() {
                Some((s, done, _)) => (s, done),
                None => {
                    sessions += 1;
                    let s = self.start(job, before.size, &sha256).await?;
                    observer
                        .session_started(&s)
                        .await
                        .map_err(UploadError::Checkpoint)?;
                    let n = s.parts.len();
                    (s, vec![false; n])
                }
            };
            let session_began = std::time::Instant::now();
            let asked = url_lifetime(
                self.url_ttl,
                self.limiter.as_ref().and_then(|l| l.rate()),
                before.size,
            );
            let granted = session
                .expire_at
                .map(|at| (at - session.began_at_ms / 1000).max(0) as u64)
                .filter(|g| *g < asked);
            match self
                .send_parts(job, &session, &done, source, in_flight, observer)
                .await
            {
                Ok(()) => {}
                Err(UploadError::Api(ApiError::SessionExpired { message, .. })) => {
                    let lived = session_began.elapsed().as_secs();
                    let why = match granted {
                        // The service cut the lifetime below what was asked:
                        // raising url_ttl cannot help; more streams may.
                        Some(g) => format!(
                            "the part URLs stopped working after {lived}s, before the {} were sent ({message}): \
                             the service grants part URLs for only {g}s (asked for {asked}s)",
                            crate::units::format_bytes(before.size)
                        ),
                        None => format!(
                            "the part URLs stopped working after {lived}s, before the {} were sent ({message}). \
                             Raise `api.url_ttl`, or `agent.bandwidth_limit` if one holds the upload back",
                            crate::units::format_bytes(before.size)
                        ),
                    };
                    let limited = self.limiter.as_ref().and_then(|l| l.rate()).is_some();
                    // (An adaptive budget already has as many in flight as the link takes.)
                    let widen = granted.is_some()
                        && !limited
                        && !self.budget.adaptive()
                        && in_flight < MAX_PARTS_IN_FLIGHT;
                    if sessions > self.retry.max_sessions || (granted.is_some() && !widen) {
                        let advice = match (granted, limited) {
                            (Some(_), true) => {
                                ". At the bandwidth limit it cannot be sent within that time: raise \
                                 `agent.bandwidth_limit` (or lift a schedule's limit), or ask the service \
                                 for longer URL lifetimes"
                            }
                            (Some(_), false) => {
                                ". It cannot be sent within that time even with more parts in flight; ask the \
                                 service for longer URL lifetimes"
                            }
                            _ => "",
                        };
                        return Err(UploadError::Api(ApiError::SessionExpired {
                            status: 403,
                            message: format!("gave up after {sessions} session(s): {why}{advice}"),
                        }));
                    }
                    if widen {
                        in_flight = (in_flight * 2).min(MAX_PARTS_IN_FLIGHT);
                        tracing::warn!(
                            file = %job.path.display(),
                            "{why}; starting a new session with {in_flight} parts in flight"
                        );
                    } else {
                        tracing::warn!(file = %job.path.display(), "{why}; starting a new session");
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            tracing::debug!(file = %job.path.display(), "all {} parts stored after {:?}", session.parts.len(), began.elapsed());
            source.check(job)?;
            source.confirm(job, &sha256).await?;
            observer.completing().await.map_err(UploadError::Checkpoint)?;
            let error = match self.client.complete(&session, before.size).await {
                Ok(file) => return self.accept(job, file, before.size, sha256, observer).await,
                Err(e @ ApiError::Auth { .. }) => return Err(e.into()),
                Err(e) => e,
            };
            // Sent, but not plainly answered: the service may hold the file.
            tracing::info!(
                "{}: complete was not answered with success ({error}); asking the workspace",
                job.path.display()
            );
            // Nothing of ours found: this attempt is spent (the session is
            // kept, so the next one asks once more before sending again).
            return match self
                .ask_workspace(
                    job,
                    &session,
                    true,
                    before.size,
                    &sha256,
                    &self.reconcile.for_error(&error),
                    observer,
                )
                .await?
            {
                Found::Ours(file) => self.accept(job, file, before.size, sha256, observer).await,
                Found::Other(file) => Err(self.altered(job, &file, before.size, &sha256, observer).await),
                Found::Nothing if error.answer_lost() => {
                    self.unresolved_until_bound(job, session.began_at_ms).await?;
                    Err(error.into())
                }
                Found::Nothing => Err(error.into()),
            };
        }
    }

    /// Not found, yet: while the send is younger than
    /// [`reconcile::UNRESOLVED_BOUND`] (on the service's clock), the outcome
    /// is [`UploadError::Unresolved`] and nothing is sent again.
    pub(super) async fn unresolved_until_bound(
        &self,
        job: &Job,
        began_at_ms: i64,
    ) -> Result<(), UploadError> {
        let elapsed = (self.client.service_now_ms().await - began_at_ms).max(0) as u64;
        let bound = reconcile::UNRESOLVED_BOUND.as_millis() as u64;
        if elapsed >= bound {
            return Ok(());
        }
        // Asked again every 20 s or so (a lagging listing shows it soon).
        let retry_in = Duration::from_millis((bound - elapsed).min(20_000));
        tracing::info!(
            "{}: sent {}s ago, its answer lost, and not in the workspace yet (its listing may lag); it is not sent \
             again before {}s have passed since it was sent: asked again in {}s",
            job.path.display(),
            elapsed / 1000,
            bound / 1000,
            retry_in.as_secs()
        );
        Err(UploadError::Unresolved { retry_in })
    }
}
