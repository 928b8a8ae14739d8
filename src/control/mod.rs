//! The control plane `run` serves on loopback (`[control] listen`): the
//! status document, retry, Prometheus metrics and a health check.
//!
//! Guards, before any handler runs: the `Host` header must be a loopback
//! name (a page on another site that resolves its name to 127.0.0.1 — DNS
//! rebinding — is refused); every `/api/*` request needs the token from
//! `<state_dir>/control.token` (0600) as `Authorization: Bearer …`; a POST
//! with an `Origin` that is not this server is refused (CSRF). `/metrics`
//! and `/healthz` need no token. The address is written to
//! `<state_dir>/control.json` for the CLI to find.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::journal::Journal;

pub mod charts;
mod dashboard;
pub mod events;
mod metrics;
pub mod notify;
pub mod status;
mod steer;

pub use events::{Event, Hub};
pub use steer::reload_now;

/// What the control plane asks of the running agent.
pub enum Command {
    /// Start no new upload (parts in flight finish) until `resume`, or until `until_ms`.
    Pause {
        until_ms: Option<i64>,
        reply: tokio::sync::oneshot::Sender<crate::journal::UserPause>,
    },
    /// Start uploads again; replies whether they were paused.
    Resume {
        reply: tokio::sync::oneshot::Sender<bool>,
    },
    /// Switch to a validated config and the transfer built from it.
    Reload {
        settings: Arc<crate::config::Settings>,
        transfer: Arc<dyn crate::upload::Transfer>,
        reply: tokio::sync::oneshot::Sender<Result<ReloadReport, Vec<String>>>,
    },
}

/// What a reload changed.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// Each key of the config whose value changed, as written
    /// (`agent.direct_upload_max: "8MiB" → "0"`; secrets as "changed").
    pub changed: Vec<String>,
    pub roots_added: Vec<String>,
    pub roots_removed: Vec<String>,
    /// Roots watched now.
    pub roots: usize,
}

/// Upper bounds (seconds) of the upload-duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 9] = [0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0];

pub const INFO_FILE: &str = "control.json";
pub const TOKEN_FILE: &str = "control.token";

/// What the agent tells the control plane as it runs.
#[derive(Default)]
pub struct Live {
    pub files_uploaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub files_failed: AtomicU64,
    pub retries: AtomicU64,
    /// Unix ms of the last upload recorded (0: none yet).
    pub last_success_ms: AtomicU64,
    pub paused: AtomicBool,
    /// Why the agent is not healthy (empty: it is).
    pub problems: Mutex<Vec<String>>,
    /// Uploads whose outcome was looked up in the workspace (unknown
    /// outcome of a complete or direct upload, or adoption).
    pub reconciliations: AtomicU64,
    /// Failed attempts by reason (`refused`, `service`, `io`, `verify`, `journal`).
    pub failures: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Upload durations: a count per bucket of [`DURATION_BUCKETS`] (the
    /// last one is +Inf), their sum in ms.
    pub durations: [AtomicU64; DURATION_BUCKETS.len() + 1],
    pub duration_sum_ms: AtomicU64,
    /// Events for the dashboard's stream.
    pub hub: Hub,
    /// Woken when the outbox has something new to deliver.
    pub outbox: tokio::sync::Notify,
    /// Healthcheck pings owed: a success (1) or a failure (2) since the last ping.
    pub ping: std::sync::atomic::AtomicU8,
    /// Bytes sent per second over the last hour (the dashboard's chart).
    pub throughput: Mutex<charts::Throughput>,
}

impl Live {
    /// Counts one upload that took `secs`.
    pub fn observe_duration(&self, secs: f64) {
        use std::sync::atomic::Ordering::Relaxed;
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.durations[i].fetch_add(1, Relaxed);
        self.duration_sum_ms.fetch_add((secs * 1000.0) as u64, Relaxed);
    }

    pub fn count_failure(&self, reason: &'static str) {
        *self
            .failures
            .lock()
            .expect("failures lock")
            .entry(reason)
            .or_default() += 1;
    }
}

/// Reads the config again and builds what the agent needs from it, or
/// lists every problem.
pub type ReloadFn = Arc<
    dyn Fn() -> Result<(Arc<crate::config::Settings>, Arc<dyn crate::upload::Transfer>), Vec<String>>
        + Send
        + Sync,
>;

/// What the control plane serves from and steers.
pub struct Hooks {
    /// The settings in force (the status document is computed against them).
    pub settings: notify::Current,
    pub reload: ReloadFn,
    pub commands: tokio::sync::mpsc::Sender<Command>,
    pub journal: Journal,
}

#[derive(Clone)]
struct Shared {
    token: Arc<String>,
    addr: SocketAddr,
    live: Arc<Live>,
    hooks: Arc<Hooks>,
    /// Dashboard sessions (cookie values) and one-time login codes with
    /// when they lapse.
    sessions: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Cancelled at stop: ends the event streams, so the server can stop.
    stop: CancellationToken,
    codes: Arc<Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

/// Why the control API could not start (the agent goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The address the config names is taken: scrapes and dashboards
    /// pointed at it would reach another program, so the agent stops.
    #[error(
        "[control] listen = \"{addr}\" is taken{}: stop that program, or set [control] listen to another port \
         (or \"off\")",
        .holder.as_ref().map(|w| format!(" by {w}")).unwrap_or_default()
    )]
    Taken {
        addr: SocketAddr,
        holder: Option<String>,
    },
    #[error("cannot listen on {addr}: {source}; change or turn off [control] listen")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no randomness for the control token: {0}")]
    Random(getrandom::Error),
}

/// A running control server; dropping it leaves the server to its
/// cancellation token, and [`Control::remove_files`] tidies up.
pub struct Control {
    state_dir: PathBuf,
}

impl Control {
    /// Binds `listen` (or, when that port is taken, a free one on the same
    /// address), writes control.json and control.token, and serves until
    /// `stop` is cancelled.
    pub async fn start(
        listen: SocketAddr,
        explicit: bool,
        state_dir: &Path,
        live: Arc<Live>,
        hooks: Hooks,
        stop: CancellationToken,
    ) -> Result<Control, ControlError> {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && explicit => {
                return Err(ControlError::Taken {
                    addr: listen,
                    holder: crate::sys::port_holder(listen),
                });
            }
            // The default address taken (another user's agent, most
            // often): a free port, said loudly; `status` shows which.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let any = SocketAddr::new(listen.ip(), 0);
                let l = tokio::net::TcpListener::bind(any)
                    .await
                    .map_err(|source| ControlError::Listen { addr: any, source })?;
                tracing::warn!(
                    "the control API's default address {listen} is taken{}; it listens on http://{} instead \
                     (`autorender-sync status` shows it; set [control] listen to choose one)",
                    crate::sys::port_holder(listen)
                        .map(|w| format!(" by {w}"))
                        .unwrap_or_default(),
                    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
                );
                l
            }
            Err(source) => return Err(ControlError::Listen { addr: listen, source }),
        };
        let addr = listener
            .local_addr()
            .map_err(|source| ControlError::Listen { addr: listen, source })?;
        let token = new_token()?;
        let write = |name: &str, text: String| {
            let path = state_dir.join(name);
            crate::private::write(&path, text.as_bytes())
                .map_err(|source| ControlError::Write { path, source })
        };
        write(TOKEN_FILE, format!("{token}\n"))?;
        let info = json!({ "address": addr.to_string(), "url": format!("http://{addr}"), "pid": std::process::id() });
        write(INFO_FILE, format!("{info:#}\n"))?;
        let shared = Shared {
            token: Arc::new(token),
            addr,
            live,
            hooks: Arc::new(hooks),
            sessions: Arc::default(),
            codes: Arc::default(),
            stop: stop.clone(),
        };
        let app = router(shared);
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!("the control API stopped: {e}");
            }
        });
        tracing::info!("control API on http://{addr} (token in {})", TOKEN_FILE);
        Ok(Control {
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// After a clean stop: no stale address or token is left behind.
    pub fn remove_files(&self) {
        let _ = std::fs::remove_file(self.state_dir.join(INFO_FILE));
        let _ = std::fs::remove_file(self.state_dir.join(TOKEN_FILE));
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::serve))
        .route("/", get(dashboard::page))
        .route("/api/status", get(status))
        .route("/api/history", get(history))
        .route("/api/charts", get(charts_view))
        .route("/api/events", get(dashboard::events))
        .route("/api/login", post(dashboard::login_code))
        .route("/api/retry", post(retry))
        .route("/api/release", post(release))
        .route("/api/pause", post(steer::pause))
        .route("/api/resume", post(steer::resume))
        .route("/api/reload", post(steer::reload))
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// 32 random bytes, hex.
fn new_token() -> Result<String, ControlError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(ControlError::Random)?;
    Ok(hex::encode(bytes))
}

/// Is `host` (a Host header, port included or not) a loopback name?
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "localhost" | "127.0.0.1" | "::1"
    )
}

/// Is `origin` this server, under a loopback name?
fn own_origin(origin: &str, addr: SocketAddr) -> bool {
    let port = addr.port();
    [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
    ]
    .iter()
    .any(|o| o.eq_ignore_ascii_case(origin))
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({ "error": why }))).into_response()
}

async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !loopback_host(host) {
        return refuse(
            StatusCode::FORBIDDEN,
            "refused: the Host header is not a loopback name (the control API serves this machine only)",
        );
    }
    if req.method() == Method::POST
        && let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && !own_origin(origin, s.addr)
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "refused: a request from another site (Origin)",
        );
    }
    if req.uri().path().starts_with("/api/") && !authorised(headers, &s) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a token is needed: Authorization: Bearer <the contents of control.token in the state dir>",
        );
    }
    next.run(req).await
}

/// The token as `Authorization: Bearer`, or a dashboard session's cookie.
fn authorised(headers: &HeaderMap, s: &Shared) -> bool {
    if let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        return same(given.trim(), &s.token);
    }
    dashboard::session_of(headers, s).is_some()
}

/// Compared in constant time: a token must not leak through timing.
fn same(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(s): State<Shared>) -> Response {
    let problems = s.live.problems.lock().expect("problems lock").clone();
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", problems.join("\n")),
        )
            .into_response()
    }
}

/// The `status --json` document, computed now (the journal is read on a
/// blocking thread).
async fn status_document(s: &Shared) -> Result<Value, Response> {
    let settings = s.hooks.settings.borrow().clone();
    build(move || {
        let g = status::gather(&settings).map_err(|e| e.to_string())?;
        Ok(status::document(&g))
    })
    .await
}

async fn build(f: impl FnOnce() -> Result<Value, String> + Send + 'static) -> Result<Value, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, &e)),
        Err(e) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

async fn status(State(s): State<Shared>) -> Response {
    match status_document(&s).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
    failed: Option<bool>,
}

/// `GET /api/history?limit=20&failed=true`.
async fn history(State(s): State<Shared>, q: axum::extract::Query<HistoryQuery>) -> Response {
    let (limit, failed) = (q.limit.unwrap_or(20).min(1000), q.failed.unwrap_or(false));
    let state_dir = s.hooks.settings.borrow().agent.state_dir.clone();
    let rows = move || {
        let rows = match crate::journal::Reader::open(&state_dir).map_err(|e| e.to_string())? {
            Some(r) => r.history(limit, failed).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        Ok(Value::Array(rows.iter().map(status::file_json).collect()))
    };
    match build(rows).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/charts`: what the dashboard draws (throughput, the
/// schedule's week, a frame strip per upload set).
async fn charts_view(State(s): State<Shared>) -> Response {
    let settings = s.hooks.settings.borrow().clone();
    let throughput = s.live.throughput.lock().expect("throughput lock").view();
    let view = move || {
        let now = crate::clock::system_ms();
        let week = charts::week(&settings, now, &jiff::tz::TimeZone::system());
        let mut sets = Vec::new();
        if let Some(r) = crate::journal::Reader::open(&settings.agent.state_dir).map_err(|e| e.to_string())? {
            // Strips for the sets still open and those complete in the last
            // day, at most MAX_STRIP_SETS: a farm's years of complete sets
            // are not read again every refresh.
            let recent = now - 24 * 3600 * 1000;
            let shown = r
                .sets()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|(s, _, _)| s.state != "complete" || s.completed_at.is_some_and(|t| t >= recent))
                .take(charts::MAX_STRIP_SETS);
            for (set, _, _) in shown {
                let files = r
                    .set_files(&set.root, &set.set_rel, 20_000)
                    .map_err(|e| e.to_string())?;
                sets.push(json!({
                    "root": set.root,
                    "set": set.set_rel,
                    "state": set.state,
                    "sequences": charts::frame_strips(&files),
                }));
            }
        }
        Ok(json!({ "throughput": throughput, "week": week, "sets": sets }))
    };
    match build(view).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

/// The body of a POST as JSON (an empty body is `{}`).
/// (Its error is the 400 answer's text.)
fn json_body(body: &[u8], hint: &str) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON ({e}); send {hint}"))
}

/// `POST /api/retry` with `{"paths": [...]}` or `{"all": true}`.
async fn retry(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
    let req = match json_body(&body, "{\"paths\": [\"/path\"]} or {\"all\": true}") {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
    };
    let paths: Vec<PathBuf> = match (&req["all"], &req["paths"]) {
        (Value::Bool(true), _) => Vec::new(),
        (_, Value::Array(list)) if !list.is_empty() && list.iter().all(Value::is_string) => {
            list.iter().filter_map(Value::as_str).map(PathBuf::from).collect()
        }
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "say what to retry: {\"paths\": [\"/path\", …]} (absolute paths) or {\"all\": true}",
            );
        }
    };
    match s.hooks.journal.retry(paths).await {
        Ok(done) => {
            axum::Json(json!({ "requeued": done.requeued, "not_failed": done.not_failed })).into_response()
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Lets a held set go as it is (`release`): `{"set": "/abs/path/of/the/set"}`.
async fn release(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
    let req = match json_body(&body, "{\"set\": \"/path/of/the/set\"}") {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
    };
    let Some(path) = req["set"].as_str().map(PathBuf::from).filter(|p| p.is_absolute()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "say which set: {\"set\": \"/path/of/the/set\"} (the set folder's absolute path)",
        );
    };
    let settings = s.hooks.settings.borrow().clone();
    let place = settings.watches.iter().find_map(|w| w.set_at(&path));
    let released = match place {
        Some((root, set_rel)) => match s
            .hooks
            .journal
            .release_set(root, set_rel, crate::clock::system_ms())
            .await
        {
            Ok(r) => r,
            Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        None => false,
    };
    if released {
        axum::Json(json!({ "released": true, "set": path })).into_response()
    } else {
        refuse(
            StatusCode::NOT_FOUND,
            &format!("no set waits at {}", crate::text::path(&path)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_accepted_as_host() {
        for ok in [
            "127.0.0.1:7780",
            "localhost:7780",
            "LOCALHOST",
            "[::1]:7780",
            "127.0.0.1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:7780",
            "127.0.0.1.evil.example",
            "",
            "[::2]:1",
            "10.0.0.1:7780",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abcd"));
        assert!(!same("abd", "abc"));
        assert!(!same("", "abc"));
    }
}
