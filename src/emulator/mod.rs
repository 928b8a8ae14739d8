//! A local AutoRender upload API for offline trials and tests
//! (`autorender-sync emulator`). It speaks the same protocol as the service
//! and is deliberately strict where the service or object storage is: a bad
//! key is 401, a malformed start is 400, part URLs are HMAC-signed and expire
//! (403 S3-style XML), a part PUT with credentials is 400, chunked is 501, a
//! wrong length is 400, and complete succeeds only when every part has exactly
//! its bytes. It answers in either reading of SPEC §1 (`--answers docs|sdk`)
//! and can be made as unhelpful as the real service may be: a repeated
//! complete of a finished session may be forgotten (404), a complete may take
//! its time (a second one meanwhile gets 400 "parts incomplete"), listings
//! may ignore their filters.
//!
//! Faults (`--fail-parts`, `--throttle-start`, `--fail-complete`) are drawn
//! from one seeded generator so a run with `--seed` is reproducible.
//!
//! Storage: each session writes its parts at their offsets into one sparse
//! file; complete renames it to an immutable object and hard-links it to
//! `<store>/<folder>/<name>`. The ledger's sha256 is computed from the object
//! lazily, so complete stays O(1) even for very large files.

mod storage;
mod workspace;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

pub use storage::Storage;

#[derive(Debug, Clone)]
pub struct Options {
    pub api_key: String,
    /// Where finished files are written, as `<store>/<folder>/<name>`.
    pub store: PathBuf,
    pub part_size: u64,
    pub fail_parts: f64,
    pub throttle_start: f64,
    pub fail_complete: f64,
    /// Upper bound on the presigned URL lifetime, whatever the client asks.
    pub url_ttl: Option<u64>,
    pub latency: Duration,
    pub seed: u64,
    /// Largest `size` accepted by start (413 above).
    pub max_size: u64,
    /// Base URL put into part and file URLs, when clients reach the emulator
    /// through a proxy; default: the address it listens on.
    pub public_url: Option<String>,
    /// Which reading of the API's answers to speak (SPEC §1).
    pub answers: Answers,
    /// A finished session is forgotten: a repeated complete gets 404.
    pub forget_sessions: bool,
    /// Complete takes this long after the parts are assembled; a second
    /// complete meanwhile gets 400 "parts incomplete".
    pub complete_delay: Duration,
    /// The file listing ignores its `name` and `path` filters.
    pub ignore_list_filters: bool,
    /// Largest direct upload accepted (413 above).
    pub direct_max: u64,
    /// Every file is placed under this folder, not where it was asked to
    /// go (as a workspace with a fixed upload root would), so answers name
    /// a folder other than the one sent.
    pub folder_root: Option<String>,
}

/// The two readings of the service's answers (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Answers {
    /// Wrapped in `{"success", "data"}`, `file_size`, `path` = the folder, numeric error codes.
    #[default]
    Docs,
    /// Flat, `size`, `path` = folder/name, `folder_no`, `is_duplicate`, metadata in listings, string error codes.
    Sdk,
}

impl Options {
    pub fn new(api_key: impl Into<String>, store: PathBuf) -> Options {
        Options {
            api_key: api_key.into(),
            store,
            part_size: 10 * 1024 * 1024,
            fail_parts: 0.0,
            throttle_start: 0.0,
            fail_complete: 0.0,
            url_ttl: None,
            latency: Duration::ZERO,
            seed: 0,
            max_size: 5 * 1024 * 1024 * 1024 * 1024,
            public_url: None,
            answers: Answers::Docs,
            forget_sessions: false,
            complete_delay: Duration::ZERO,
            ignore_list_filters: false,
            direct_max: 100 * 1024 * 1024,
            folder_root: None,
        }
    }
}

impl Stats {
    /// Counts one injected fault of `kind`.
    fn fault(&self, kind: &AtomicU64) {
        kind.fetch_add(1, Ordering::Relaxed);
        self.faults_injected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Request counters, for tests and for the curious (`GET /_emulator/stats`).
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub start: AtomicU64,
    pub start_ok: AtomicU64,
    pub part_put: AtomicU64,
    pub part_ok: AtomicU64,
    pub part_bytes: AtomicU64,
    pub part_rejected_credentials: AtomicU64,
    pub part_rejected_chunked: AtomicU64,
    pub part_rejected_signature: AtomicU64,
    pub part_rejected_expired: AtomicU64,
    pub part_rejected_length: AtomicU64,
    pub complete: AtomicU64,
    pub complete_ok: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Every injected fault; by kind below.
    pub faults_injected: AtomicU64,
    pub fault_part_500: AtomicU64,
    pub fault_part_dropped: AtomicU64,
    pub fault_throttled: AtomicU64,
    pub fault_finish_failed: AtomicU64,
    pub fault_finish_lost: AtomicU64,
    pub direct: AtomicU64,
    pub direct_ok: AtomicU64,
    pub list_files: AtomicU64,
    pub list_folders: AtomicU64,
    pub details: AtomicU64,
    pub deletes: AtomicU64,
    pub url_gets: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    pub folder: String,
    pub folder_no: Option<String>,
    pub name: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub file_no: String,
    pub session: String,
    pub format: String,
    pub tags: Vec<String>,
    pub metadata: Value,
    pub deleted: bool,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// "multipart" or "direct".
    pub kind: String,
}

/// What a client says about a file it uploads (start, or a direct upload's form).
#[derive(Debug, Clone)]
struct FileMeta {
    file_name: String,
    folder: String,
    format: String,
    tags: Vec<String>,
    metadata: Value,
    random_prefix: bool,
    size: u64,
}

struct SessionRec {
    uuid: String,
    meta: FileMeta,
    part_size: u64,
    expire_at: i64,
    /// Bytes stored per part (None until a PUT of the exact length finished).
    received: Vec<Option<u64>>,
    /// PUTs per part, to show resumed uploads skip finished parts.
    puts: Vec<u64>,
    /// The file_no it became, once finished.
    completed: Option<String>,
    /// A complete is assembling it right now.
    completing: bool,
}

struct Inner {
    sessions: HashMap<String, SessionRec>,
    ledger: Vec<LedgerEntry>,
    next_file_no: u64,
    /// Workspace folders by path ("a/b"), created as uploads land in them.
    folders: HashMap<String, FolderRec>,
    next_folder_no: u64,
}

struct FolderRec {
    folder_no: String,
    name: String,
    /// Parent folder's path; None at the root.
    parent: Option<String>,
    created_at_ms: i64,
}

impl Inner {
    /// The folder at `path` and its ancestors, created if missing; its folder_no
    /// (None for the root).
    fn ensure_folder(&mut self, path: &str) -> Option<String> {
        if path.is_empty() {
            return None;
        }
        let mut parent: Option<String> = None;
        let mut so_far = String::new();
        for seg in path.split('/') {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(seg);
            if !self.folders.contains_key(&so_far) {
                self.next_folder_no += 1;
                let rec = FolderRec {
                    folder_no: format!("fld{:06}", self.next_folder_no),
                    name: seg.to_string(),
                    parent: parent.clone(),
                    created_at_ms: now_ms(),
                };
                self.folders.insert(so_far.clone(), rec);
            }
            parent = Some(so_far.clone());
        }
        self.folders.get(path).map(|f| f.folder_no.clone())
    }
}

pub struct Emulator {
    opts: Options,
    base: String,
    secret: [u8; 32],
    rng: Mutex<u64>,
    inner: Mutex<Inner>,
    storage: Storage,
    pub stats: Stats,
}

impl Emulator {
    pub fn new(opts: Options, addr: SocketAddr) -> std::io::Result<Arc<Emulator>> {
        let seed = if opts.seed == 0 {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        } else {
            opts.seed
        };
        let mut rng = seed;
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_mut(8) {
            chunk.copy_from_slice(&splitmix(&mut rng).to_le_bytes());
        }
        let storage = Storage::open(&opts.store)?;
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let base = opts
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{host}"));
        Ok(Arc::new(Emulator {
            base,
            opts,
            secret,
            rng: Mutex::new(rng),
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                ledger: Vec::new(),
                next_file_no: 1_000_000_001,
                folders: HashMap::new(),
                next_folder_no: 0,
            }),
            storage,
            stats: Stats::default(),
        }))
    }

    fn chance(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let mut s = self.rng.lock().expect("rng lock");
        let x = (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64;
        x < rate
    }

    /// `--fail-complete`, drawn for a request that finishes a file
    /// (complete, a direct upload).
    fn finish_fault(&self) -> FinishFault {
        if !self.chance(self.opts.fail_complete) {
            FinishFault::None
        } else if self.chance(0.5) {
            FinishFault::LoseAnswer
        } else {
            FinishFault::FailBefore
        }
    }

    /// A 500 before anything was stored.
    fn failed_before(&self, message: &str) -> Response {
        self.stats.fault(&self.stats.fault_finish_failed);
        json_error(
            self,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            message,
        )
    }

    /// The file was stored, but the client never hears it.
    fn lost_answer(&self) -> Response {
        self.stats.fault(&self.stats.fault_finish_lost);
        json_error(self, StatusCode::BAD_GATEWAY, "Bad Gateway", "upstream timed out")
    }

    fn random_hex(&self, bytes: usize) -> String {
        let mut s = self.rng.lock().expect("rng lock");
        (0..bytes.div_ceil(8))
            .map(|_| format!("{:016x}", splitmix(&mut s)))
            .collect::<String>()[..bytes * 2]
            .to_string()
    }

    fn sign(&self, session: &str, part: usize, expires: i64) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("any key length works");
        mac.update(format!("{session}:{part}:{expires}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let api_key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let ok = bearer == Some(self.opts.api_key.as_str()) || api_key == Some(self.opts.api_key.as_str());
        if !ok {
            self.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The ledger, with any missing sha256 computed now.
    pub async fn ledger(&self) -> Vec<LedgerEntry> {
        let pending: Vec<(usize, String)> = {
            let inner = self.inner.lock().expect("state lock");
            inner
                .ledger
                .iter()
                .enumerate()
                .filter(|(_, e)| e.sha256.is_none())
                .map(|(i, e)| (i, e.file_no.clone()))
                .collect()
        };
        for (i, file_no) in pending {
            let sha = self.storage.object_sha256(&file_no).await.ok();
            let mut inner = self.inner.lock().expect("state lock");
            inner.ledger[i].sha256 = sha;
        }
        self.inner.lock().expect("state lock").ledger.clone()
    }
}

/// What `--fail-complete` does to one finishing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FinishFault {
    None,
    /// Fail with a 500 before storing anything.
    FailBefore,
    /// Store the file, then answer 502 as if the answer were lost.
    LoseAnswer,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An API error in the reading the emulator speaks: a numeric `code` (docs)
/// or a string one such as `NOT_FOUND` (SDKs).
fn json_error(emu: &Emulator, status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    let code = match emu.opts.answers {
        Answers::Docs => json!(status.as_u16()),
        Answers::Sdk => json!(match status.as_u16() {
            400 => "VALIDATION_ERROR",
            401 => "UNAUTHORIZED",
            404 => "NOT_FOUND",
            411 => "LENGTH_REQUIRED",
            413 => "FILE_TOO_LARGE",
            429 => "RATE_LIMITED",
            _ => "INTERNAL_ERROR",
        }),
    };
    let body = json!({
        "success": false,
        "error": error,
        "message": message.into(),
        "code": code,
    });
    (status, axum::Json(body)).into_response()
}

fn unauthorized(emu: &Emulator) -> Response {
    json_error(
        emu,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Invalid or missing API key",
    )
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>emulator</RequestId></Error>"
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

/// The emulator's HTTP routes.
pub fn router(emu: Arc<Emulator>) -> Router {
    let latency = emu.opts.latency;
    let api = Router::new()
        .route("/api/v1/multipart/start", post(start))
        .route("/api/v1/multipart/complete", post(complete))
        .route("/api/v1/files", get(workspace::list_files))
        .route(
            "/api/v1/files/{file_no}",
            get(workspace::details).delete(workspace::delete_file),
        )
        .route("/api/v1/folders", get(workspace::list_folders))
        // The form's size is checked against --direct-max by the handler itself.
        .route(
            "/api/v1/uploads",
            post(workspace::direct_upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/_storage/{session}/{part}", put(put_part))
        .route("/files/{file_no}/{name}", get(workspace::serve_file))
        // Half the latency before the request is handled, half before the
        // answer leaves: like a real round trip, the work is done before the
        // client hears of it.
        .layer(middleware::from_fn(move |req: Request, next: Next| async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency / 2).await;
            }
            let resp = next.run(req).await;
            if !latency.is_zero() {
                tokio::time::sleep(latency - latency / 2).await;
            }
            resp
        }));
    Router::new()
        .route("/_emulator/uploads", get(ledger))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/sessions", get(sessions))
        .route("/_emulator/sessions/{session}", get(session_info))
        .merge(api)
        .with_state(emu)
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    opts: Options,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let emu = Emulator::new(opts, addr)?;
    axum::serve(listener, router(emu))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn start(State(emu): State<Arc<Emulator>>, headers: HeaderMap, body: Bytes) -> Response {
    emu.stats.start.fetch_add(1, Ordering::Relaxed);
    if !emu.authorized(&headers) {
        return unauthorized(&emu);
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return json_error(
                &emu,
                StatusCode::BAD_REQUEST,
                "Bad Request",
                "body must be a JSON object",
            );
        }
    };
    let parsed = match validate_start(&req, emu.opts.max_size) {
        Ok(p) => p,
        Err((status, msg)) => return json_error(&emu, status, "Bad Request", msg),
    };
    if emu.chance(emu.opts.throttle_start) {
        emu.stats.fault(&emu.stats.fault_throttled);
        let mut r = json_error(
            &emu,
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "rate limit exceeded; retry later",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, "1".parse().expect("static header"));
        return r;
    }
    let size = parsed.meta.size;
    let part_size = emu.opts.part_size.max(1).max(size.div_ceil(10_000));
    let n_parts = size.div_ceil(part_size).max(1) as usize;
    let ttl = parsed.ttl.min(emu.opts.url_ttl.unwrap_or(u64::MAX)).max(1);
    let expire_at = now() + ttl as i64;
    let id = emu.random_hex(16);
    let uuid = emu.random_hex(16);
    if let Err(e) = emu.storage.create_session(&id, size) {
        return json_error(
            &emu,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            format!("storage: {e}"),
        );
    }
    let parts: Vec<String> = (0..n_parts)
        .map(|i| {
            format!(
                "{}/_storage/{id}/{i}?expires={expire_at}&signature={}",
                emu.base,
                emu.sign(&id, i, expire_at)
            )
        })
        .collect();
    emu.inner.lock().expect("state lock").sessions.insert(
        id.clone(),
        SessionRec {
            uuid: uuid.clone(),
            meta: parsed.meta,
            part_size,
            expire_at,
            received: vec![None; n_parts],
            puts: vec![0; n_parts],
            completed: None,
            completing: false,
        },
    );
    emu.stats.start_ok.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({
        "session_id": id,
        "uuid": uuid,
        "part_size": part_size,
        "min_part_size": 5 * 1024 * 1024,
        "parts": parts,
        "expire_at": expire_at,
        "workspace_id": "emulator",
    }))
    .into_response()
}

struct StartFields {
    meta: FileMeta,
    ttl: u64,
}

fn validate_start(req: &Value, max_size: u64) -> Result<StartFields, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let file_name = match req.get("file_name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(bad("file_name must not be empty".into())),
        Some(_) => return Err(bad("file_name must be a string".into())),
        None => return Err(bad("file_name is required".into())),
    };
    if file_name.len() > 255 || file_name == "." || file_name == ".." || file_name.contains(['/', '\0']) {
        return Err(bad(
            "file_name must be a plain name of at most 255 bytes, without /".into(),
        ));
    }
    let size = match req.get("size") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| bad("size must be a whole number ≥ 0".into()))?,
        Some(_) => return Err(bad("size must be an integer".into())),
        None => return Err(bad("size is required".into())),
    };
    if size > max_size {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("size {size} exceeds the limit of {max_size} bytes"),
        ));
    }
    let format = match req.get("format") {
        Some(Value::String(s)) if s.contains('/') && !s.contains(char::is_whitespace) => s.clone(),
        Some(_) => return Err(bad("format must be a MIME type such as video/mp4".into())),
        None => return Err(bad("format is required".into())),
    };
    let folder = match req.get("folder") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => {
            let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
            if parts.iter().any(|p| *p == "." || *p == "..") {
                return Err(bad("folder must not contain . or .. segments".into()));
            }
            parts.join("/")
        }
        Some(_) => return Err(bad("folder must be a string".into())),
    };
    let tags = match req.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("tags must be an array of strings".into()))?,
        Some(_) => return Err(bad("tags must be an array of strings".into())),
    };
    let metadata = match req.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(bad("metadata must be an object".into())),
    };
    if let Some(v) = req.get("custom_id")
        && !v.is_string()
        && !v.is_null()
    {
        return Err(bad("custom_id must be a string".into()));
    }
    let random_prefix = match req.get("random_prefix") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("random_prefix must be a boolean".into())),
    };
    let ttl = match req.get("ttl_seconds") {
        None | Some(Value::Null) => 3600,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(t) if (1..=7 * 86400).contains(&t) => t,
            _ => return Err(bad("ttl_seconds must be between 1 and 604800".into())),
        },
        Some(_) => return Err(bad("ttl_seconds must be an integer".into())),
    };
    Ok(StartFields {
        meta: FileMeta {
            file_name,
            size,
            format,
            folder,
            tags,
            metadata,
            random_prefix,
        },
        ttl,
    })
}

#[derive(Deserialize)]
struct Signed {
    expires: Option<i64>,
    signature: Option<String>,
}

async fn put_part(
    State(emu): State<Arc<Emulator>>,
    Path((session, part)): Path<(String, usize)>,
    Query(q): Query<Signed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let st = &emu.stats;
    st.part_put.fetch_add(1, Ordering::Relaxed);
    if headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key") {
        st.part_rejected_credentials.fetch_add(1, Ordering::Relaxed);
        return s3_error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Only one auth mechanism allowed; the presigned URL already carries the signature, so send no Authorization or x-api-key header",
        );
    }
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        st.part_rejected_chunked.fetch_add(1, Ordering::Relaxed);
        // Read a small body first so the client sees the answer rather than
        // a connection closed while it was still sending.
        let _ = axum::body::to_bytes(body, 64 * 1024).await;
        return s3_error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "A header you provided implies functionality that is not implemented (Transfer-Encoding: chunked)",
        );
    }
    let (Some(expires), Some(signature)) = (q.expires, q.signature) else {
        st.part_rejected_signature.fetch_add(1, Ordering::Relaxed);
        return s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Query-string authentication requires expires and signature",
        );
    };
    let expected_sig = emu.sign(&session, part, expires);
    if !constant_eq(expected_sig.as_bytes(), signature.as_bytes()) {
        st.part_rejected_signature.fetch_add(1, Ordering::Relaxed);
        return s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided",
        );
    }
    if now() >= expires {
        st.part_rejected_expired.fetch_add(1, Ordering::Relaxed);
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
    }
    let (offset, len) = {
        let mut inner = emu.inner.lock().expect("state lock");
        let Some(rec) = inner.sessions.get_mut(&session) else {
            return s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchUpload",
                "The specified multipart upload does not exist",
            );
        };
        if rec.completed.is_some() || part >= rec.received.len() {
            return s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchUpload",
                "The specified multipart upload does not exist or is complete",
            );
        }
        rec.puts[part] += 1;
        let offset = part as u64 * rec.part_size;
        let len = (rec.meta.size.saturating_sub(offset)).min(rec.part_size);
        (offset, len)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        None => {
            st.part_rejected_length.fetch_add(1, Ordering::Relaxed);
            return s3_error(
                StatusCode::LENGTH_REQUIRED,
                "MissingContentLength",
                "You must provide the Content-Length HTTP header",
            );
        }
        Some(n) if n != len => {
            st.part_rejected_length.fetch_add(1, Ordering::Relaxed);
            return s3_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                &format!("Content-Length {n} does not match the size of part {part} ({len} bytes)"),
            );
        }
        Some(_) => {}
    }
    let fault = emu.chance(emu.opts.fail_parts);
    let drop_connection = fault && emu.chance(0.5);
    if fault && !drop_connection {
        st.fault(&st.fault_part_500);
        return s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        );
    }
    // Forget any earlier copy first: a half-overwritten part must never count.
    if let Some(rec) = emu.inner.lock().expect("state lock").sessions.get_mut(&session) {
        rec.received[part] = None;
    }
    let mut stream = body.into_data_stream();
    let mut writer = match emu.storage.part_writer(&session, offset).await {
        Ok(w) => w,
        Err(e) => {
            return s3_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("storage: {e}"),
            );
        }
    };
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return s3_error(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                "The request body ended early",
            );
        };
        total += chunk.len() as u64;
        if total > len {
            st.part_rejected_length.fetch_add(1, Ordering::Relaxed);
            return s3_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "The body is longer than Content-Length",
            );
        }
        if let Err(e) = writer.write(&chunk).await {
            return s3_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("storage: {e}"),
            );
        }
    }
    if total != len {
        st.part_rejected_length.fetch_add(1, Ordering::Relaxed);
        return s3_error(
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header",
        );
    }
    if let Err(e) = writer.finish().await {
        return s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("storage: {e}"),
        );
    }
    if drop_connection {
        // The bytes arrived but the answer is lost: the client must retry.
        st.fault(&st.fault_part_dropped);
        let broken = futures_util::stream::once(async {
            Err::<Bytes, _>(std::io::Error::other("connection dropped by --fail-parts"))
        });
        return Response::builder()
            .status(StatusCode::OK)
            .body(Body::from_stream(broken))
            .expect("valid response");
    }
    if let Some(rec) = emu.inner.lock().expect("state lock").sessions.get_mut(&session) {
        rec.received[part] = Some(len);
    }
    st.part_ok.fetch_add(1, Ordering::Relaxed);
    st.part_bytes.fetch_add(len, Ordering::Relaxed);
    (
        StatusCode::OK,
        [(header::ETAG, format!("\"{session}-{part}-{len}\""))],
    )
        .into_response()
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn complete(State(emu): State<Arc<Emulator>>, headers: HeaderMap, body: Bytes) -> Response {
    emu.stats.complete.fetch_add(1, Ordering::Relaxed);
    if !emu.authorized(&headers) {
        return unauthorized(&emu);
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(session) = req.get("session_id").and_then(Value::as_str).map(str::to_string) else {
        return json_error(
            &emu,
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "session_id is required",
        );
    };
    let fault = emu.finish_fault();
    if fault == FinishFault::FailBefore {
        return emu.failed_before("complete failed; retry");
    }
    let uuid = req.get("uuid").and_then(Value::as_str).map(str::to_string);
    let checked = {
        let mut inner = emu.inner.lock().expect("state lock");
        check_complete(&mut inner, &session, uuid.as_deref())
    };
    let entry = match checked {
        Err((status, msg)) => return json_error(&emu, status, "Bad Request", msg),
        Ok(Some(done)) => done,
        Ok(None) => {
            // Assembling runs on its own task: like the real service, it
            // finishes even when the client has gone away meanwhile.
            let task = {
                let emu = emu.clone();
                let session = session.clone();
                tokio::spawn(async move {
                    if !emu.opts.complete_delay.is_zero() {
                        tokio::time::sleep(emu.opts.complete_delay).await;
                    }
                    let mut inner = emu.inner.lock().expect("state lock");
                    finish_session(&emu, &mut inner, &session)
                })
            };
            match task.await {
                Ok(Ok(entry)) => entry,
                Ok(Err((status, msg))) => return json_error(&emu, status, "Internal Server Error", msg),
                Err(_) => {
                    return json_error(
                        &emu,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal Server Error",
                        "complete task failed",
                    );
                }
            }
        }
    };
    if fault == FinishFault::LoseAnswer {
        return emu.lost_answer();
    }
    emu.stats.complete_ok.fetch_add(1, Ordering::Relaxed);
    workspace::file_answer(&emu, &entry)
}

/// Whether a complete may go ahead: `Ok(Some)` the earlier result of a
/// finished session, `Ok(None)` go ahead (now marked as completing), or the
/// error the service gives (unknown session 404; parts missing, or a complete
/// still running, 400).
fn check_complete(
    inner: &mut Inner,
    session: &str,
    uuid: Option<&str>,
) -> Result<Option<LedgerEntry>, (StatusCode, String)> {
    let Some(rec) = inner.sessions.get_mut(session) else {
        return Err((StatusCode::NOT_FOUND, format!("unknown session {session}")));
    };
    if let Some(u) = uuid
        && u != rec.uuid
    {
        return Err((StatusCode::BAD_REQUEST, "uuid does not match the session".into()));
    }
    if let Some(file_no) = &rec.completed {
        let file_no = file_no.clone();
        return Ok(inner.ledger.iter().find(|e| e.file_no == file_no).cloned());
    }
    if rec.completing {
        return Err((
            StatusCode::BAD_REQUEST,
            "parts incomplete: the upload is still being assembled".into(),
        ));
    }
    let missing: Vec<String> = rec
        .received
        .iter()
        .enumerate()
        .filter(|(i, got)| {
            let want = (rec.meta.size.saturating_sub(*i as u64 * rec.part_size)).min(rec.part_size);
            **got != Some(want)
        })
        .map(|(i, _)| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "parts incomplete: parts not uploaded with their exact length: {}",
                missing.join(", ")
            ),
        ));
    }
    rec.completing = true;
    Ok(None)
}

/// Turns a fully received session into a stored file.
fn finish_session(
    emu: &Emulator,
    inner: &mut Inner,
    session: &str,
) -> Result<LedgerEntry, (StatusCode, String)> {
    let Some(rec) = inner.sessions.get(session) else {
        return Err((StatusCode::NOT_FOUND, format!("unknown session {session}")));
    };
    let new = NewFile {
        meta: rec.meta.clone(),
        session: session.to_string(),
        kind: "multipart",
    };
    let entry = store_file(emu, inner, new)?;
    if emu.opts.forget_sessions {
        inner.sessions.remove(session);
    } else if let Some(rec) = inner.sessions.get_mut(session) {
        rec.completed = Some(entry.file_no.clone());
        rec.completing = false;
    }
    Ok(entry)
}

/// What a finished upload (multipart or direct) stores.
struct NewFile {
    meta: FileMeta,
    /// The storage scratch file holding the bytes.
    session: String,
    kind: &'static str,
}

/// Stores a finished file: object, `<store>/<folder>/<name>`, folders, ledger.
fn store_file(emu: &Emulator, inner: &mut Inner, new: NewFile) -> Result<LedgerEntry, (StatusCode, String)> {
    let mut f = new.meta;
    if let Some(root) = emu.opts.folder_root.as_deref().map(|r| r.trim_matches('/'))
        && !root.is_empty()
    {
        f.folder = [root, f.folder.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/");
    }
    let name = if f.random_prefix {
        let mut s = emu.rng.lock().expect("rng lock");
        format!("{:08x}_{}", splitmix(&mut s) as u32, f.file_name)
    } else {
        f.file_name.clone()
    };
    let file_no = inner.next_file_no.to_string();
    emu.storage
        .finish(&new.session, &file_no, &f.folder, &name)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("storage: {e}")))?;
    let folder_no = inner.ensure_folder(&f.folder);
    let entry = LedgerEntry {
        folder: f.folder,
        folder_no,
        name,
        size: f.size,
        sha256: None,
        file_no,
        session: new.session,
        format: f.format,
        tags: f.tags,
        metadata: f.metadata,
        deleted: false,
        created_at_ms: now_ms(),
        kind: new.kind.to_string(),
    };
    inner.next_file_no += 1;
    inner.ledger.push(entry.clone());
    Ok(entry)
}

async fn ledger(State(emu): State<Arc<Emulator>>) -> Response {
    axum::Json(emu.ledger().await).into_response()
}

async fn stats(State(emu): State<Arc<Emulator>>) -> Response {
    axum::Json(&emu.stats).into_response()
}

fn session_json(id: &str, rec: &SessionRec) -> Value {
    json!({
        "session": id,
        "file_name": rec.meta.file_name,
        "size": rec.meta.size,
        "part_size": rec.part_size,
        "expire_at": rec.expire_at,
        "puts": rec.puts,
        "received": rec.received,
        "parts_received": rec.received.iter().filter(|r| r.is_some()).count(),
        "completing": rec.completing,
        "completed": rec.completed.is_some(),
    })
}

async fn session_info(State(emu): State<Arc<Emulator>>, Path(session): Path<String>) -> Response {
    let inner = emu.inner.lock().expect("state lock");
    match inner.sessions.get(&session) {
        Some(rec) => axum::Json(session_json(&session, rec)).into_response(),
        None => json_error(&emu, StatusCode::NOT_FOUND, "Not Found", "no such session"),
    }
}

/// Every session the emulator still knows, for tests that wait on one file's upload.
async fn sessions(State(emu): State<Arc<Emulator>>) -> Response {
    let inner = emu.inner.lock().expect("state lock");
    let list: Vec<Value> = inner
        .sessions
        .iter()
        .map(|(id, rec)| session_json(id, rec))
        .collect();
    axum::Json(list).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_validation() {
        let ok = json!({"file_name": "a.mp4", "size": 10, "format": "video/mp4", "folder": "/x//y/"});
        let f = validate_start(&ok, 100).unwrap();
        assert_eq!(f.meta.folder, "x/y");
        for bad in [
            json!({"size": 10, "format": "video/mp4"}),
            json!({"file_name": "a", "size": -1, "format": "video/mp4"}),
            json!({"file_name": "a", "size": "10", "format": "video/mp4"}),
            json!({"file_name": "a/b", "size": 10, "format": "video/mp4"}),
            json!({"file_name": "a", "size": 10, "format": "mp4"}),
            json!({"file_name": "a", "size": 10, "format": "video/mp4", "tags": [1]}),
            json!({"file_name": "a", "size": 10, "format": "video/mp4", "ttl_seconds": 0}),
            json!({"file_name": "a", "size": 10, "format": "video/mp4", "folder": "../x"}),
        ] {
            assert_eq!(
                validate_start(&bad, 100).err().map(|e| e.0),
                Some(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
        let big = json!({"file_name": "a", "size": 101, "format": "video/mp4"});
        assert_eq!(
            validate_start(&big, 100).err().map(|e| e.0),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }

    #[test]
    fn faults_are_reproducible() {
        let draw = |seed| {
            let mut s: u64 = seed;
            (0..8).map(|_| splitmix(&mut s) % 10).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
