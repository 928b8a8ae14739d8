//! AutoRender HTTP client: multipart start / part PUT / complete, and a cheap
//! authenticated call for `check`. Every failure is classified here, once, so
//! callers decide "retry", "new session", "give up on this file" or "stop the
//! agent" from the error kind alone.
//!
//! Invariants: part PUTs go through a separate client that never carries
//! credentials and never follows redirects; the API client follows redirects
//! only to the same host; plain http is allowed only to loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::check_transport;
use crate::secrets::ApiKey;
use answers::{classify, decode_complete, decode_start, read_json, read_limited, s3_message};
pub use answers::{decode_complete_answer, decode_start_answer};

mod answers;
mod decode;
mod errors;
pub use errors::ApiError;
use errors::network;
#[cfg(test)]
mod tests;
pub use decode::{
    DecodeError, FilePage, RemoteFile, RemoteFolder, decode_file, decode_file_page, decode_folder,
    decode_folders, derive_folder,
};

/// Largest JSON answer we are willing to read; the service's are tiny.
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct StartRequest {
    pub file_name: String,
    pub size: u64,
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    pub random_prefix: bool,
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct RawStart {
    session_id: Option<String>,
    part_size: Option<i64>,
    parts: Option<Vec<String>>,
    expire_at: Option<i64>,
    uuid: Option<String>,
}

/// A started multipart session, validated: URLs parse and use an allowed transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub session_id: String,
    pub uuid: Option<String>,
    pub part_size: u64,
    pub parts: Vec<Url>,
    /// Unix seconds after which part URLs stop working, when the service said.
    pub expire_at: Option<i64>,
    /// When the service opened the session (its `Date` header, else our
    /// clock), unix ms: a file created before this is not this upload's.
    pub began_at_ms: i64,
}

impl Session {
    /// Number of parts a file of `size` bytes needs with this part size.
    pub fn parts_needed(size: u64, part_size: u64) -> u64 {
        size.div_ceil(part_size)
    }
    /// Byte range of part `i` in a file of `size` bytes.
    pub fn part_range(&self, i: usize, size: u64) -> (u64, u64) {
        let start = (i as u64).saturating_mul(self.part_size);
        let end = (i as u64 + 1).saturating_mul(self.part_size).min(size);
        (start, end.saturating_sub(start))
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    success: Option<bool>,
    error: Option<serde_json::Value>,
    message: Option<serde_json::Value>,
}

#[derive(Clone)]
pub struct Client {
    api: reqwest::Client,
    parts: reqwest::Client,
    base: Url,
    timeout: Duration,
    /// The service's clock minus ours (ms), from the last `Date` header seen;
    /// `i64::MIN` until one was.
    skew_ms: Arc<AtomicI64>,
    /// Held while the service's clock is asked for (`service_now_ms`).
    probing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(base: Url, key: ApiKey, timeout: Duration) -> Result<Client, ApiError> {
        check_transport(&base).map_err(ApiError::Protocol)?;
        crate::secrets::hide(&key);
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
            ApiError::Protocol("the API key contains characters not allowed in an HTTP header".into())
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, auth);
        let ua = concat!("autorender-sync/", env!("CARGO_PKG_VERSION"));
        let api = reqwest::Client::builder()
            .user_agent(ua)
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(15).min(timeout))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same_host = attempt
                    .previous()
                    .first()
                    .map(|first| {
                        first.host_str() == attempt.url().host_str()
                            && first.port_or_known_default() == attempt.url().port_or_known_default()
                    })
                    .unwrap_or(false);
                if !same_host {
                    attempt.error("redirect to another host refused (credentials are never sent elsewhere)")
                } else if attempt.previous().len() > 5 {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| ApiError::Protocol(format!("cannot build HTTP client: {e}")))?;
        // Storage client: no default headers at all, no redirects; a part
        // transfer is bounded by read inactivity rather than a total time so
        // big parts on slow links are not cut off while still moving.
        // HTTP/1.1 only: storage that offered HTTP/2 would carry every part
        // on one connection, and on a long lossy link one connection is
        // capped whatever is multiplexed on it; parts in flight are worth
        // having only as connections of their own (kept alive, reused).
        let parts = reqwest::Client::builder()
            .user_agent(ua)
            .http1_only()
            .connect_timeout(Duration::from_secs(15).min(timeout))
            .read_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Protocol(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            api,
            parts,
            base,
            timeout,
            skew_ms: Arc::new(AtomicI64::new(i64::MIN)),
            probing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        url
    }

    /// `GET /api/v1/files?limit=1`: proves the key works.
    pub async fn verify_key(&self) -> Result<(), ApiError> {
        let mut url = self.endpoint("/api/v1/files");
        url.set_query(Some("limit=1"));
        let resp = self.api.get(url).send().await.map_err(network)?;
        read_json(resp).await.map(|_| ())
    }

    pub async fn start(&self, req: &StartRequest) -> Result<Session, ApiError> {
        let sent_at = crate::clock::system_ms();
        let resp = self
            .api
            .post(self.endpoint("/api/v1/multipart/start"))
            .json(req)
            .send()
            .await
            .map_err(network)?;
        let began_at_ms = self
            .observe_date(resp.headers())
            .unwrap_or(sent_at - CLOCK_MARGIN_MS);
        let value = read_json(resp).await?;
        let mut session = decode_start(value, req.size)?;
        session.began_at_ms = began_at_ms;
        Ok(session)
    }

    /// PUT one part. `body` must yield exactly `len` bytes.
    pub async fn put_part(&self, url: &Url, body: reqwest::Body, len: u64) -> Result<(), ApiError> {
        let resp = self
            .parts
            .put(url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(network)?;
        let status = resp.status();
        // Read the whole answer: a connection dropped after the headers must
        // count as a failure, not as a stored part.
        let text = read_limited(resp).await?;
        if status.is_success() {
            return Ok(());
        }
        answers::log_failed_answer(status.as_u16(), &text);
        let message =
            s3_message(&text).unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        Err(match status.as_u16() {
            403 => ApiError::SessionExpired { status: 403, message },
            429 => ApiError::Throttled { retry_after: None },
            s if s >= 500 => ApiError::Server { status: s, message },
            s => ApiError::Rejected { status: s, message },
        })
    }

    /// `POST /api/v1/multipart/complete`. The wait grows with the file's size
    /// (the service assembles the parts before it answers), so a slow
    /// complete is not cut off and sent again.
    pub async fn complete(&self, session: &Session, size: u64) -> Result<RemoteFile, ApiError> {
        let mut body = serde_json::Map::new();
        body.insert("session_id".into(), session.session_id.clone().into());
        if let Some(uuid) = &session.uuid {
            body.insert("uuid".into(), uuid.clone().into());
        }
        let req = self
            .api
            .post(self.endpoint("/api/v1/multipart/complete"))
            .timeout(self.timeout_for(size))
            .json(&body);
        self.send_for_file(req).await
    }

    /// Sends a request whose answer describes a stored file (complete,
    /// direct upload), noting the service's clock on the way.
    async fn send_for_file(&self, req: reqwest::RequestBuilder) -> Result<RemoteFile, ApiError> {
        let resp = req.send().await.map_err(network)?;
        self.observe_date(resp.headers());
        let value = read_json(resp).await?;
        decode_complete(value)
    }

    fn timeout_for(&self, size: u64) -> Duration {
        // One more request_timeout for every GiB (at least the plain timeout).
        self.timeout + self.timeout.mul_f64(size as f64 / (1u64 << 30) as f64)
    }

    /// `POST /api/v1/uploads`: the whole file in one multipart/form-data
    /// request, described by the same fields a multipart start sends
    /// (`ttl_seconds` is not sent). `body` must yield exactly `form.size`
    /// bytes, so the request has an exact `Content-Length`.
    pub async fn direct_upload(
        &self,
        form: &StartRequest,
        body: reqwest::Body,
    ) -> Result<RemoteFile, ApiError> {
        let len = form.size;
        // The name travels in `file_name`; the part's own filename is only a
        // hint, kept to characters a Content-Disposition header carries safely.
        let hint: String = form
            .file_name
            .chars()
            .map(|c| {
                if c.is_control() || c == '"' || c == '\\' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let file = reqwest::multipart::Part::stream_with_length(body, len)
            .file_name(hint)
            .mime_str(&form.format)
            .map_err(|e| ApiError::Protocol(format!("format {:?} is not a MIME type: {e}", form.format)))?;
        let mut multipart = reqwest::multipart::Form::new()
            .text("file_name", form.file_name.clone())
            .part("file", file);
        if let Some(folder) = &form.folder {
            multipart = multipart.text("folder", folder.clone());
        }
        if !form.tags.is_empty() {
            multipart = multipart.text("tags", form.tags.join(","));
        }
        if !form.metadata.is_empty() {
            multipart = multipart.text(
                "metadata",
                serde_json::Value::Object(form.metadata.clone()).to_string(),
            );
        }
        if let Some(id) = &form.custom_id {
            multipart = multipart.text("custom_id", id.clone());
        }
        if form.random_prefix {
            multipart = multipart.text("random_prefix", "true");
        }
        let req = self
            .api
            .post(self.endpoint("/api/v1/uploads"))
            .timeout(self.timeout_for(len) + self.timeout)
            .multipart(multipart);
        self.send_for_file(req).await
    }

    /// Notes the service's clock from an answer's `Date` header; returns it.
    fn observe_date(&self, headers: &HeaderMap) -> Option<i64> {
        let t = service_time_ms(headers)?;
        self.skew_ms
            .store(t - crate::clock::system_ms(), Ordering::Relaxed);
        Some(t)
    }

    /// The service's clock now, as far as we can tell without asking: ours
    /// corrected by the skew its last `Date` header showed, less a second
    /// (`Date` has whole seconds). Asks once when no answer was seen yet.
    pub async fn service_now_ms(&self) -> i64 {
        if self.skew_ms.load(Ordering::Relaxed) == i64::MIN {
            // One probe at a time: small files starting together ask once.
            let _asking = self.probing.lock().await;
            if self.skew_ms.load(Ordering::Relaxed) == i64::MIN {
                let mut url = self.endpoint("/api/v1/files");
                url.set_query(Some("limit=1"));
                if let Ok(resp) = self.api.get(url).send().await {
                    self.observe_date(resp.headers());
                }
            }
        }
        match self.skew_ms.load(Ordering::Relaxed) {
            i64::MIN => crate::clock::system_ms() - CLOCK_MARGIN_MS,
            skew => crate::clock::system_ms() + skew - 1000,
        }
    }

    /// `GET /api/v1/folders[?parent_folder_no=…]`.
    pub async fn list_folders(&self, parent: Option<&str>) -> Result<Vec<RemoteFolder>, ApiError> {
        let mut url = self.endpoint("/api/v1/folders");
        if let Some(p) = parent {
            url.query_pairs_mut().append_pair("parent_folder_no", p);
        }
        let resp = self.api.get(url).send().await.map_err(network)?;
        let value = read_json(resp).await?;
        decode_folders(&value).map_err(|e| ApiError::Protocol(e.to_string()))
    }

    /// One page of `GET /api/v1/files` in `folder_no` (None: the whole
    /// workspace), optionally filtered by `name` (the service may ignore it).
    pub async fn list_files(
        &self,
        folder_no: Option<&str>,
        name: Option<&str>,
        page: u64,
        limit: u64,
    ) -> Result<FilePage, ApiError> {
        let mut url = self.endpoint("/api/v1/files");
        {
            let mut q = url.query_pairs_mut();
            if let Some(f) = folder_no {
                q.append_pair("folder_no", f);
            }
            if let Some(n) = name {
                q.append_pair("name", n);
            }
            q.append_pair("page", &page.to_string());
            q.append_pair("limit", &limit.to_string());
        }
        let resp = self.api.get(url).send().await.map_err(network)?;
        let value = read_json(resp).await?;
        decode_file_page(&value).map_err(|e| ApiError::Protocol(e.to_string()))
    }

    /// `GET /api/v1/files/{file_no}`; `Ok(None)` when the service says 404.
    pub async fn file_details(&self, file_no: &str) -> Result<Option<RemoteFile>, ApiError> {
        let url = self.endpoint(&format!("/api/v1/files/{}", urlencode(file_no)));
        let resp = self.api.get(url).send().await.map_err(network)?;
        match read_json(resp).await {
            Ok(v) => decode_file(&v)
                .map(Some)
                .map_err(|e| ApiError::Protocol(e.to_string())),
            Err(ApiError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PATCH /api/v1/files/{file_no}/rename`: the file's record as the
    /// service answers it (it may keep or change the extension: the name it
    /// gives is the one to record). Either reading: the bare record or
    /// `{"data": …}`.
    pub async fn rename_file(&self, file_no: &str, name: &str) -> Result<RemoteFile, ApiError> {
        let url = self.endpoint(&format!("/api/v1/files/{}/rename", urlencode(file_no)));
        let resp = self
            .api
            .patch(url)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .map_err(network)?;
        let value = read_json(resp).await?;
        decode_file(&value).map_err(|e| ApiError::Protocol(e.to_string()))
    }

    /// `POST /api/v1/folders/rename/{folder_no}`: the folder as renamed.
    pub async fn rename_folder(&self, folder_no: &str, name: &str) -> Result<RemoteFolder, ApiError> {
        let url = self.endpoint(&format!("/api/v1/folders/rename/{}", urlencode(folder_no)));
        let resp = self
            .api
            .post(url)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .map_err(network)?;
        let value = read_json(resp).await?;
        decode_folder(&value).map_err(|e| ApiError::Protocol(e.to_string()))
    }

    /// `DELETE /api/v1/files/{file_no}`.
    pub async fn delete_file(&self, file_no: &str) -> Result<(), ApiError> {
        let url = self.endpoint(&format!("/api/v1/files/{}", urlencode(file_no)));
        let resp = self.api.delete(url).send().await.map_err(network)?;
        let status = resp.status();
        let text = read_limited(resp).await?;
        if status.is_success() {
            return Ok(());
        }
        classify(status.as_u16(), None, &text).map(|_| ())
    }

    /// sha256 of the bytes a file's `url` serves, read as a stream and cut
    /// off past `max` bytes (then `Ok(None)`: not the file we think). The
    /// URL is fetched without credentials, like a part URL.
    pub async fn url_sha256(&self, url: &str, max: u64) -> Result<Option<String>, ApiError> {
        use sha2::Digest;
        let url = Url::parse(url).map_err(|e| ApiError::Protocol(format!("file url is not a URL: {e}")))?;
        check_transport(&url).map_err(ApiError::Protocol)?;
        let mut resp = self.parts.get(url).send().await.map_err(network)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(match status.as_u16() {
                429 => ApiError::Throttled { retry_after: None },
                s if s >= 500 => ApiError::Server {
                    status: s,
                    message: "file url".into(),
                },
                s => ApiError::Rejected {
                    status: s,
                    message: "the file's url did not serve it".into(),
                },
            });
        }
        // The read timeout is reset by every byte: the whole body must also
        // come within request_timeout plus its size at 256 KiB/s.
        let allowed = self.timeout + Duration::from_secs_f64(max as f64 / (256.0 * 1024.0));
        let read_all = async {
            let mut hasher = sha2::Sha256::new();
            let mut read = 0u64;
            while let Some(chunk) = resp.chunk().await.map_err(network)? {
                read += chunk.len() as u64;
                if read > max {
                    return Ok(None);
                }
                hasher.update(&chunk);
            }
            Ok(Some(hex::encode(hasher.finalize())))
        };
        match tokio::time::timeout(allowed, read_all).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Network(format!(
                "the file's url did not serve {max} bytes within {}s",
                allowed.as_secs()
            ))),
        }
    }
}

/// Without the service's `Date`, how far our clock may be ahead of its.
const CLOCK_MARGIN_MS: i64 = 10 * 60 * 1000;

fn service_time_ms(headers: &HeaderMap) -> Option<i64> {
    let date = headers.get(header::DATE)?.to_str().ok()?;
    let t = httpdate::parse_http_date(date).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
