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
//!
//! Rooms: this file holds the state and the fault draws; `router` the routes
//! and the server; `sessions` start and complete; `parts` the signed part
//! PUTs; `workspace` listings, details, deletes and file bytes; `direct` the
//! one-request upload; `storage` the
//! files on disk; `errors` the error answers; `inspect` the `/_emulator` views.

mod direct;
mod errors;
mod inspect;
mod parts;
mod pipe;
mod rename;
mod router;
pub use router::{router, serve};
mod sessions;
mod storage;
#[cfg(test)]
mod tests;
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
use axum::routing::{get, patch, post, put};
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use errors::{json_error, s3_error, unauthorized};
use inspect::{ledger, session_info, sessions, stats};
use parts::put_part;
use sessions::{NewFile, complete, start, store_file};
pub use storage::Storage;

#[derive(Debug, Clone)]
pub struct Options {
    pub api_key: String,
    /// Where finished files are written, as `<store>/<folder>/<name>`.
    pub store: PathBuf,
    pub part_size: u64,
    pub fail_parts: f64,
    pub throttle_start: f64,
    /// Fault: the first this many starts are throttled.
    pub throttle_first: u64,
    /// Retry-After (seconds) of a throttled start.
    pub retry_after: u64,
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
    /// Fault: a direct upload is stored re-encoded (every chunk of the body
    /// written twice, as a proxy rewriting it might) and answered 500.
    pub reencode_direct: bool,
    /// Fault: every answer's body (an empty one padded with spaces) is
    /// sent a byte at a time, this long apart.
    pub trickle: Duration,
    /// Fault: the file listing never ends.
    pub endless_pages: Option<EndlessPages>,
    /// Fault: files' `url`s answer 403.
    pub url_unreadable: bool,
    /// Fault: a stored file is listed (and has details) only this long after.
    pub list_lag: Duration,
    /// Fault: the first this many finishing requests are stored but their
    /// answer is lost.
    pub lose_first: u64,
    /// A long fat pipe: each request body's rate (bytes/s, 0: no cap).
    pub stream_rate: u64,
    /// All request bodies' rate together (bytes/s, 0: no cap).
    pub link_rate: u64,
    /// The chance a request body stalls once, for `stall`.
    pub stalls: f64,
    pub stall: Duration,
}

/// How the file listing never ends (`--endless-pages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EndlessPages {
    /// Past the last page, the last page again, always with a next one.
    Repeat,
    /// Past the last page, pages of made-up files, always with a next one.
    New,
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
            throttle_first: 0,
            retry_after: 1,
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
            reencode_direct: false,
            trickle: Duration::ZERO,
            endless_pages: None,
            url_unreadable: false,
            list_lag: Duration::ZERO,
            lose_first: 0,
            stream_rate: 0,
            link_rate: 0,
            stalls: 0.0,
            stall: Duration::from_secs(2),
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
    /// Request bodies the simulated pipe stalled (`--stalls`).
    pub pipe_stalls: AtomicU64,
    pub fault_part_dropped: AtomicU64,
    pub fault_throttled: AtomicU64,
    pub fault_finish_failed: AtomicU64,
    pub fault_finish_lost: AtomicU64,
    pub direct: AtomicU64,
    pub direct_ok: AtomicU64,
    /// Bytes of direct-upload bodies received so far (in flight included).
    pub direct_bytes: AtomicU64,
    pub list_files: AtomicU64,
    pub list_folders: AtomicU64,
    pub details: AtomicU64,
    pub deletes: AtomicU64,
    /// File and folder renames asked for.
    pub renames: AtomicU64,
    pub url_gets: AtomicU64,
    pub fault_reencoded: AtomicU64,
    pub fault_url_refused: AtomicU64,
    /// Requests that finish a file (complete, direct upload), as drawn for faults.
    pub finishes: AtomicU64,
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
    /// When each part's body was fully received (unix ms), to measure a
    /// client's throughput from the service's side.
    stored_at: Vec<Option<i64>>,
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

#[derive(Clone)]
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
    /// The simulated long fat pipe (`--stream-rate`, `--link-rate`).
    pub pipe: pipe::Pipe,
}

impl Emulator {
    pub fn new(opts: Options, addr: SocketAddr) -> std::io::Result<Arc<Emulator>> {
        let pipe = pipe::Pipe::new(opts.stream_rate, opts.link_rate, opts.stalls, opts.stall);
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
            pipe,
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

    /// `--list-lag`: a file shows in listings and details only this long
    /// after it was stored (an eventually consistent index).
    fn listed_yet(&self, e: &LedgerEntry) -> bool {
        self.opts.list_lag.is_zero() || e.created_at_ms + self.opts.list_lag.as_millis() as i64 <= now_ms()
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

    /// `--lose-first N`: whether this file just stored is one of the first
    /// N, whose answer is lost.
    fn lose_first_due(&self) -> bool {
        self.stats.finishes.fetch_add(1, Ordering::Relaxed) < self.opts.lose_first
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

    /// `file_no` names a stored file not deleted.
    fn is_live(&self, file_no: &str) -> bool {
        self.inner
            .lock()
            .expect("state lock")
            .ledger
            .iter()
            .any(|e| e.file_no == file_no && !e.deleted)
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
