//! Sending a session's parts: each read from the one descriptor at its
//! offset, streamed with an exact length, watched for stalls, and retried
//! alone with backoff.

use super::*;

/// Read size for streaming parts.
const CHUNK: usize = 256 * 1024;

impl Uploader {
    pub(super) async fn send_parts(
        &self,
        job: &Job,
        session: &Session,
        done: &[bool],
        source: &Source,
        in_flight: usize,
        observer: &Arc<dyn Observer>,
    ) -> Result<(), UploadError> {
        let size = source.id.size;
        let todo: Vec<usize> = (0..session.parts.len())
            .filter(|i| !done.get(*i).copied().unwrap_or(false))
            .collect();
        let already: u64 = (0..session.parts.len())
            .filter(|i| done.get(*i).copied().unwrap_or(false))
            .map(|i| session.part_range(i, size).1)
            .sum();
        if already > 0 {
            observer.bytes(already as i64);
        }
        // A pause lets the parts in flight finish but starts no new one.
        let held = std::sync::atomic::AtomicBool::new(false);
        let stored = AtomicU64::new(already);
        let sent = futures_util::stream::iter(todo)
            .take_while(|_| {
                let stop = job.hold.is_cancelled();
                held.fetch_or(stop, std::sync::atomic::Ordering::Relaxed);
                std::future::ready(!stop)
            })
            .map(|i| {
                let stored = &stored;
                async move {
                    self.send_part(job, session, i, source, observer).await?;
                    stored.fetch_add(session.part_range(i, size).1, Ordering::Relaxed);
                    Ok::<(), UploadError>(())
                }
            })
            .buffer_unordered(in_flight.max(1))
            .try_collect::<Vec<()>>()
            .await;
        // A session given up: what it had counted is taken back, so the
        // next one counts from zero and progress never passes 100 %.
        if let Err(UploadError::Api(ApiError::SessionExpired { .. })) = &sent {
            observer.bytes(-(stored.load(Ordering::Relaxed) as i64));
        }
        sent?;
        if held.into_inner() {
            return Err(UploadError::Paused);
        }
        Ok(())
    }

    pub(super) async fn send_part(
        &self,
        job: &Job,
        session: &Session,
        index: usize,
        source: &Source,
        observer: &Arc<dyn Observer>,
    ) -> Result<(), UploadError> {
        let (offset, len) = session.part_range(index, source.id.size);
        let url = &session.parts[index];
        let attempt = || async {
            // A pause (or a reload that changed how files are sent) ends a
            // part that is failing at its next try, not after every try.
            if job.hold.is_cancelled() {
                return Err(PartError::Held);
            }
            // Cheap guard: a file that changed makes every further byte wasted.
            // Expiry is not judged by our clock (it may be skewed): storage
            // answers 403 for an expired URL, and that starts a new session.
            source.check(job).map_err(|e| match e {
                UploadError::Changed(m) => PartError::Changed(m),
                other => PartError::Read(other),
            })?;
            // Room in the budget of requests in flight (all files share it
            // when adaptive); a pause ends the wait.
            let slot = tokio::select! {
                s = self.budget.slot(len) => s,
                _ = job.hold.cancelled() => return Err(PartError::Held),
            };
            let sent = Arc::new(AtomicU64::new(0));
            let body = self.part_body(source, offset, len, sent.clone(), None, observer);
            let result = tokio::select! {
                r = self.client.put_part(url, body, len) => r,
                stalled = watch_progress(&sent, len, self.stall_timeout) => Err(stalled),
            };
            match &result {
                Ok(_) => slot.done(),
                Err(e) => slot.failed_with(e),
            }
            if result.is_err() {
                let rewind = sent.load(Ordering::Relaxed);
                observer.bytes(-(rewind as i64));
                // A body cut short because the file shrank is a change, not a
                // network error to retry.
                if let Err(UploadError::Changed(m)) = source.check(job) {
                    return Err(PartError::Changed(m));
                }
            }
            result.map_err(PartError::Api)
        };
        let mut retryable = self.retry.retryable();
        let hold = job.hold.clone();
        attempt
            .retry(self.retry.backoff())
            // The wait between tries ends early at a hold; the next try
            // then sees it and stops.
            .sleep(move |d| {
                let hold = hold.clone();
                async move {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = hold.cancelled() => {}
                    }
                }
            })
            .when(move |e: &PartError| matches!(e, PartError::Api(a) if retryable(a)))
            .adjust(|e, d| match e {
                PartError::Api(a) => d.map(|d| a.retry_after().map_or(d, |r| r.min(self.throttle.cap()))),
                _ => d,
            })
            .notify(|e, d| tracing::debug!(file = %job.path.display(), part = index, "part failed ({e}); retrying in {d:?}"))
            .await
            .map_err(|e| match e {
                PartError::Api(a) => UploadError::Api(a),
                PartError::Changed(m) => UploadError::Changed(m),
                PartError::Read(e) => e,
                PartError::Held => UploadError::Paused,
            })?;
        observer.part_done(index);
        Ok(())
    }

    /// A streamed body of exactly `len` bytes from `offset`, paced by the
    /// limiter. A file that turns out shorter ends the stream with an error,
    /// so a truncated part is never sent as if whole.
    pub(super) fn part_body(
        &self,
        source: &Source,
        offset: u64,
        len: u64,
        sent: Arc<AtomicU64>,
        digest: Option<Arc<std::sync::Mutex<sha2::Sha256>>>,
        observer: &Arc<dyn Observer>,
    ) -> reqwest::Body {
        let limiter = self.limiter.clone();
        let progress = observer.clone();
        let state = (source.file.clone(), 0u64, limiter, sent, progress, digest);
        let stream = futures_util::stream::try_unfold(
            state,
            move |(file, mut read, limiter, sent, progress, digest)| async move {
                let want = CHUNK.min((len - read) as usize);
                let (mut buf, n) = if want == 0 {
                    (Vec::new(), 0)
                } else {
                    let reader = file.clone();
                    let at = offset + read;
                    tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; want];
                        read_at(&reader, &mut buf, at).map(|n| (buf, n))
                    })
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))??
                };
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
                // The bytes as they leave: what the service stores, whatever
                // the file holds by the time it answers.
                if let Some(d) = &digest {
                    sha2::Digest::update(&mut *d.lock().expect("body digest lock"), &buf);
                }
                read += n as u64;
                sent.fetch_add(n as u64, Ordering::Relaxed);
                progress.bytes(n as i64);
                Ok(Some((
                    bytes::Bytes::from(buf),
                    (file, read, limiter, sent, progress, digest),
                )))
            },
        );
        reqwest::Body::wrap_stream(stream)
    }
}

#[derive(Debug)]
enum PartError {
    Api(ApiError),
    Changed(String),
    /// The file could not be read (kept whole, with its kind).
    Read(UploadError),
    /// Held before this try began.
    Held,
}

impl std::fmt::Display for PartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartError::Api(e) => write!(f, "{e}"),
            PartError::Changed(m) => write!(f, "file changed: {m}"),
            PartError::Read(e) => write!(f, "{e}"),
            PartError::Held => f.write_str("held"),
        }
    }
}

/// Resolves if the body stops moving for `limit` before it is fully sent,
/// or if the whole answer has not arrived `limit` after it was: a read
/// timeout alone is reset by every byte, so an answer trickled a byte a
/// second would hold the part for ever.
pub(super) async fn watch_progress(sent: &AtomicU64, len: u64, limit: Duration) -> ApiError {
    let tick = (limit / 4).max(Duration::from_millis(50));
    let mut last = sent.load(Ordering::Relaxed);
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = sent.load(Ordering::Relaxed);
        if now >= len {
            tokio::time::sleep(limit).await;
            return ApiError::Network(format!(
                "no whole answer within {}s after the part was sent",
                limit.as_secs()
            ));
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
