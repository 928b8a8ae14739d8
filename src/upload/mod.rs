//! One file's upload: hash; for a file with no journal record, look for the
//! same content in the workspace first (adoption); then either one direct
//! request (`direct.rs`, small files) or start, PUT parts in parallel
//! (streamed from disk, each retried alone), re-check the file, complete. A
//! complete or direct upload without a plain success is reconciled
//! (`reconcile.rs`), never sent again blind.
//!
//! Invariants:
//! - memory is bounded by `concurrent_parts` × one read buffer, whatever the
//!   file size (parts are streamed, never loaded);
//! - the session is completed only if the file's size and mtime are the same
//!   as when it was hashed (otherwise [`UploadError::Changed`]);
//! - expired or refused part URLs start a new session (bounded), transient
//!   errors are retried with exponential backoff + jitter, anything else ends
//!   this file's attempt with a classified error;
//! - every step is reported to an [`Observer`] before the next one starts, so a
//!   journal can checkpoint the session and resume it later.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::api::{ApiError, Client, RemoteFile, Session, StartRequest};
use crate::limiter::Limiter;
use crate::workspace::{Proof, Workspace, same_content};

mod direct;
pub mod reconcile;

/// Read size for streaming parts and hashing.
const CHUNK: usize = 256 * 1024;

/// What to upload and where.
#[derive(Debug, Clone)]
pub struct Job {
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
}

/// Size and mtime: what "unchanged" means before hashing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i128,
}

impl Fingerprint {
    pub fn of(path: &Path) -> std::io::Result<Fingerprint> {
        let m = std::fs::metadata(path)?;
        if !m.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let mtime_ns = m
            .modified()
            .ok()
            .map(|t| match t.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            })
            .unwrap_or(0);
        Ok(Fingerprint {
            size: m.len(),
            mtime_ns,
        })
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
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("file changed during upload ({0}); it will be uploaded once it is stable")]
    Changed(String),
    #[error("cannot read {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("upload could not be verified: {0}")]
    Verify(String),
    #[error("cannot record progress in the journal: {0}")]
    Checkpoint(String),
}

impl UploadError {
    /// The API key was refused: stop everything, not just this file.
    pub fn is_auth(&self) -> bool {
        matches!(self, UploadError::Api(ApiError::Auth { .. }))
    }
}

/// Progress and checkpoints. All methods have no-op defaults. The two that
/// return futures are awaited before the upload goes on: a journal records
/// the session before any part is sent, and "completing" (with every part
/// mark before it) before complete is sent; an error there stops the upload.
pub trait Observer: Send + Sync {
    fn hashed(&self, _size: u64, _sha256: &str) {}
    fn session_started<'a>(&'a self, _session: &'a Session) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Bytes sent (negative when a failed part attempt is rewound).
    fn bytes(&self, _delta: i64) {}
    fn part_done(&self, _index: usize) {}
    fn completing(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// A direct upload is about to be sent (recorded first, so a crash
    /// while it is in flight is reconciled, not sent again blind).
    fn direct_sending(&self, _began_at_ms: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// The outcome of a sent complete or direct upload is unknown; the
    /// workspace is being asked.
    fn reconciling(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// The no-op observer.
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Retries of one request (a part, a start, a complete) after the first try.
    pub max_retries: usize,
    /// New sessions started after URLs expired, per upload.
    pub max_sessions: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_retries: 8,
            max_sessions: 5,
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
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
    pub concurrent_parts: usize,
    pub limiter: Option<Arc<Limiter>>,
    pub url_ttl: Duration,
    pub retry: RetryPolicy,
    /// A part whose body makes no progress for this long is abandoned and
    /// retried (a stalled connection never errors by itself).
    pub stall_timeout: Duration,
}

/// A session carried over from an earlier run, with the parts already stored.
#[derive(Debug, Clone)]
pub struct Resume {
    pub session: Session,
    pub done: Vec<bool>,
    pub sha256: String,
    pub fingerprint: Fingerprint,
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
        let io_err = |e: std::io::Error| UploadError::Io {
            path: job.path.clone(),
            message: e.to_string(),
        };
        let before = Fingerprint::of(&job.path).map_err(io_err)?;
        let began = std::time::Instant::now();
        let (sha256, mut carried) = match resume {
            Some(r) if r.fingerprint == before => (r.sha256, Some((r.session, r.done, r.phase))),
            _ => {
                let sha = hash_file(&job.path).await.map_err(io_err)?;
                let after = Fingerprint::of(&job.path).map_err(io_err)?;
                if after != before {
                    return Err(UploadError::Changed("while it was being hashed".into()));
                }
                (sha, None)
            }
        };
        observer.hashed(before.size, &sha256);
        tracing::debug!(file = %job.path.display(), size = before.size, "hashed in {:?}", began.elapsed());

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
            let multipart = (*phase == Phase::Completing).then_some(session);
            tracing::info!(
                "{}: the last upload's outcome is unknown; asking the workspace",
                job.path.display()
            );
            observer.reconciling().await.map_err(UploadError::Checkpoint)?;
            match self
                .reconcile(
                    job,
                    multipart,
                    session.began_at_ms,
                    before.size,
                    &sha256,
                    &self.reconcile,
                )
                .await?
            {
                Some(file) => return verify(job, file, before.size, sha256),
                None => {
                    tracing::info!("{}: not in the workspace; uploading it again", job.path.display());
                    carried = None;
                }
            }
        }

        if carried.is_none() && self.is_direct(job, before.size) {
            return self.direct(job, before, sha256, observer).await;
        }

        let mut sessions = 0;
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
            match self.send_parts(job, &session, &done, before, observer).await {
                Ok(()) => {}
                Err(UploadError::Api(ApiError::SessionExpired { message, .. })) => {
                    if sessions > self.retry.max_sessions {
                        return Err(UploadError::Api(ApiError::SessionExpired {
                            status: 403,
                            message: format!("gave up after {sessions} sessions: {message}"),
                        }));
                    }
                    tracing::info!(file = %job.path.display(), "part URLs expired or refused ({message}); starting a new session");
                    continue;
                }
                Err(e) => return Err(e),
            }
            tracing::debug!(file = %job.path.display(), "all {} parts stored after {:?}", session.parts.len(), began.elapsed());
            let now = Fingerprint::of(&job.path).map_err(io_err)?;
            if now != before {
                return Err(UploadError::Changed(describe_change(before, now)));
            }
            observer.completing().await.map_err(UploadError::Checkpoint)?;
            let error = match self.client.complete(&session, before.size).await {
                Ok(file) => return verify(job, file, before.size, sha256),
                Err(e @ ApiError::Auth { .. }) => return Err(e.into()),
                Err(e) => e,
            };
            // Sent, but not plainly answered: the service may hold the file.
            tracing::info!(
                "{}: complete was not answered with success ({error}); asking the workspace",
                job.path.display()
            );
            observer.reconciling().await.map_err(UploadError::Checkpoint)?;
            match self
                .reconcile(
                    job,
                    Some(&session),
                    session.began_at_ms,
                    before.size,
                    &sha256,
                    &self.reconcile,
                )
                .await?
            {
                Some(file) => return verify(job, file, before.size, sha256),
                None if error.is_transient() && sessions <= self.retry.max_sessions => {
                    tracing::info!(
                        "{}: not in the workspace; starting a new session",
                        job.path.display()
                    );
                }
                None => return Err(error.into()),
            }
        }
    }

    /// Asks the workspace about an upload whose outcome is unknown.
    async fn reconcile(
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
    async fn adoptable(
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

    /// What start (or a direct upload) says about the file: the job's
    /// fields, its size, and the content sha256 as metadata `sha256`.
    fn request(&self, job: &Job, size: u64, sha256: &str) -> StartRequest {
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
            ttl_seconds: self.url_ttl.as_secs().max(1),
        }
    }

    async fn start(&self, job: &Job, size: u64, sha256: &str) -> Result<Session, UploadError> {
        let req = self.request(job, size, sha256);
        let s = (|| self.client.start(&req))
            .retry(self.retry.backoff())
            .when(ApiError::is_transient)
            .adjust(|e, d| d.map(|d| e.retry_after().unwrap_or(d)))
            .notify(
                |e, d| tracing::debug!(file = %job.path.display(), "start failed ({e}); retrying in {d:?}"),
            )
            .await?;
        Ok(s)
    }

    async fn send_parts(
        &self,
        job: &Job,
        session: &Session,
        done: &[bool],
        fp: Fingerprint,
        observer: &Arc<dyn Observer>,
    ) -> Result<(), UploadError> {
        let todo: Vec<usize> = (0..session.parts.len())
            .filter(|i| !done.get(*i).copied().unwrap_or(false))
            .collect();
        let already: u64 = (0..session.parts.len())
            .filter(|i| done.get(*i).copied().unwrap_or(false))
            .map(|i| session.part_range(i, fp.size).1)
            .sum();
        if already > 0 {
            observer.bytes(already as i64);
        }
        futures_util::stream::iter(todo)
            .map(|i| self.send_part(job, session, i, fp, observer))
            .buffer_unordered(self.concurrent_parts.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn send_part(
        &self,
        job: &Job,
        session: &Session,
        index: usize,
        fp: Fingerprint,
        observer: &Arc<dyn Observer>,
    ) -> Result<(), UploadError> {
        let (offset, len) = session.part_range(index, fp.size);
        let url = &session.parts[index];
        let attempt = || async {
            // Cheap guard: a file that changed makes every further byte wasted.
            match Fingerprint::of(&job.path) {
                Ok(now) if now == fp => {}
                Ok(now) => return Err(PartError::Changed(describe_change(fp, now))),
                Err(e) => return Err(PartError::Io(e.to_string())),
            }
            if let Some(exp) = session.expire_at
                && unix_now() >= exp
            {
                return Err(PartError::Api(ApiError::SessionExpired {
                    status: 403,
                    message: "presigned URLs expired".into(),
                }));
            }
            let sent = Arc::new(AtomicU64::new(0));
            let body = self
                .part_body(&job.path, offset, len, sent.clone(), observer)
                .await
                .map_err(|e| PartError::Io(e.to_string()))?;
            let result = tokio::select! {
                r = self.client.put_part(url, body, len) => r,
                stalled = watch_progress(&sent, len, self.stall_timeout) => Err(stalled),
            };
            if result.is_err() {
                let rewind = sent.load(Ordering::Relaxed);
                observer.bytes(-(rewind as i64));
            }
            result.map_err(PartError::Api)
        };
        attempt
            .retry(self.retry.backoff())
            .when(|e: &PartError| matches!(e, PartError::Api(a) if a.is_transient()))
            .adjust(|e, d| match e {
                PartError::Api(a) => d.map(|d| a.retry_after().unwrap_or(d)),
                _ => d,
            })
            .notify(|e, d| tracing::debug!(file = %job.path.display(), part = index, "part failed ({e}); retrying in {d:?}"))
            .await
            .map_err(|e| match e {
                PartError::Api(a) => UploadError::Api(a),
                PartError::Changed(m) => UploadError::Changed(m),
                PartError::Io(m) => UploadError::Io { path: job.path.clone(), message: m },
            })?;
        observer.part_done(index);
        Ok(())
    }

    /// A streamed body of exactly `len` bytes from `offset`, paced by the
    /// limiter. A file that turns out shorter ends the stream with an error,
    /// so a truncated part is never sent as if whole.
    async fn part_body(
        &self,
        path: &Path,
        offset: u64,
        len: u64,
        sent: Arc<AtomicU64>,
        observer: &Arc<dyn Observer>,
    ) -> std::io::Result<reqwest::Body> {
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let limiter = self.limiter.clone();
        let progress = observer.clone();
        let state = (file.take(len), 0u64, limiter, sent, progress);
        let stream = futures_util::stream::try_unfold(
            state,
            move |(mut reader, mut read, limiter, sent, progress)| async move {
                let mut buf = vec![0u8; CHUNK.min((len - read) as usize).max(1)];
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    if read < len {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "file is shorter than when the upload began",
                        ));
                    }
                    return Ok(None);
                }
                buf.truncate(n);
                if let Some(l) = &limiter {
                    l.acquire(n).await;
                }
                read += n as u64;
                sent.fetch_add(n as u64, Ordering::Relaxed);
                progress.bytes(n as i64);
                Ok(Some((
                    bytes::Bytes::from(buf),
                    (reader, read, limiter, sent, progress),
                )))
            },
        );
        Ok(reqwest::Body::wrap_stream(stream))
    }
}

#[derive(Debug)]
enum PartError {
    Api(ApiError),
    Changed(String),
    Io(String),
}

impl std::fmt::Display for PartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartError::Api(e) => write!(f, "{e}"),
            PartError::Changed(m) => write!(f, "file changed: {m}"),
            PartError::Io(m) => write!(f, "{m}"),
        }
    }
}

/// Resolves only if the body stops moving for `limit` before it is fully
/// sent; once it is, the client's read timeout covers waiting for the answer.
async fn watch_progress(sent: &AtomicU64, len: u64, limit: Duration) -> ApiError {
    let tick = (limit / 4).max(Duration::from_millis(50));
    let mut last = sent.load(Ordering::Relaxed);
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = sent.load(Ordering::Relaxed);
        if now >= len {
            return std::future::pending().await;
        }
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= limit {
            return ApiError::Network(format!(
                "part upload stalled: no progress for {}s",
                limit.as_secs()
            ));
        }
    }
}

fn describe_change(before: Fingerprint, now: Fingerprint) -> String {
    if before.size != now.size {
        format!("size {} → {}", before.size, now.size)
    } else {
        "modification time changed".to_string()
    }
}

fn verify(job: &Job, file: RemoteFile, size: u64, sha256: String) -> Result<Outcome, UploadError> {
    if let Some(remote) = file.size
        && remote != size
    {
        return Err(UploadError::Verify(format!(
            "the service stored {remote} bytes but the file has {size}"
        )));
    }
    if let Some(remote) = &file.sha256
        && remote != &sha256
    {
        return Err(UploadError::Verify(format!(
            "the service recorded sha256 {remote} but the file has {sha256}"
        )));
    }
    if let Some(p) = &file.folder
        && p != &job.folder
    {
        tracing::warn!(file = %job.path.display(), "asked for folder \"{}\" but the service placed it in \"{p}\"", job.folder);
    }
    Ok(Outcome {
        folder: file.folder.clone().unwrap_or_else(|| job.folder.clone()),
        name: if file.name.is_empty() {
            job.file_name.clone()
        } else {
            file.name.clone()
        },
        file,
        size,
        sha256,
        adopted: None,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// sha256 of a file, computed in the blocking pool.
pub async fn hash_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || hash_blocking(&path))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

const HASH_BUF: usize = 1024 * 1024;

/// SHA-256 runs at the CPU's limit (~1.6–1.8 GB/s with SHA-NI) and `start`
/// needs the digest before the first part can go, so for a large file the
/// read (the copy out of the page cache, or the wait on the disk) runs on a
/// second thread, overlapping the hashing. Three 1 MiB buffers circulate
/// between the two threads; small files are hashed inline.
fn hash_blocking(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    if f.metadata()?.len() < 4 * HASH_BUF as u64 {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; HASH_BUF];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        return Ok(hex::encode(h.finalize()));
    }
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(3);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        // Cannot fail: the channel has room for all three and its receiver is alive.
        let _ = empty_tx.send(vec![0u8; HASH_BUF]);
    }
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in full_rx {
                h.update(&buf[..n]);
                // The reader may already have stopped; then the buffer is simply dropped.
                let _ = empty_tx.send(buf);
            }
            h.finalize()
        });
        let mut read = || -> std::io::Result<()> {
            while let Ok(mut buf) = empty_rx.recv() {
                let n = f.read(&mut buf)?;
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
            Ok(())
        };
        let read_result = read();
        drop(full_tx);
        let digest = hasher
            .join()
            .map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
        read_result?;
        Ok(hex::encode(digest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(len: usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Not a repeating pattern, so a lost or reordered buffer changes the digest.
        let data: Vec<u8> = (0..len as u64)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(
            hash_blocking(&path).unwrap(),
            hex::encode(Sha256::digest(&data)),
            "len {len}"
        );
    }

    #[test]
    fn hashing_matches_a_one_shot_digest_below_and_above_the_threaded_size() {
        for len in [
            0,
            1,
            HASH_BUF - 1,
            4 * HASH_BUF - 1,
            4 * HASH_BUF,
            7 * HASH_BUF + 12_345,
        ] {
            check(len);
        }
    }

    #[test]
    fn hashing_a_missing_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(hash_blocking(&dir.path().join("absent")).is_err());
    }
}
