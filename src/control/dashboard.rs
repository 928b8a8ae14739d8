//! The dashboard: one page embedded in the binary (no outside assets), its
//! login (a one-time code from `autorender-sync dashboard`, or the token,
//! traded at `/?code=…` for an HttpOnly, SameSite=Strict session cookie)
//! and the Server-Sent Events stream it updates itself from.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{Shared, new_token, same};

const PAGE: &str = include_str!("dashboard.html");

/// How long a login code from `autorender-sync dashboard` stays good.
const CODE_LIFE: Duration = Duration::from_secs(120);

/// Sessions kept at most (older ones are forgotten past this: log in again).
const MAX_SESSIONS: usize = 256;

/// The session cookie's name: one per port, so two agents on one machine
/// do not overwrite each other's sessions.
fn cookie_name(s: &Shared) -> String {
    format!("autorender_sync_{}", s.addr.port())
}

/// The session a request carries, if it is one this server gave out.
pub(super) fn session_of(headers: &HeaderMap, s: &Shared) -> Option<String> {
    let name = cookie_name(s);
    let sessions = s.sessions.lock().expect("sessions lock");
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .find(|v| sessions.iter().any(|known| same(v, known)))
}

#[derive(serde::Deserialize)]
pub(super) struct Login {
    /// A one-time login code (`token` is the older name for the same).
    code: Option<String>,
    token: Option<String>,
}

/// Security headers for the page: nothing from elsewhere, no framing.
fn page_headers() -> [(header::HeaderName, &'static str); 4] {
    [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
             img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
    ]
}

fn login_page(status: StatusCode, why: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>autorender-sync</title><body style=\"font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em\">\
         <h1>autorender-sync</h1><p>{why}</p><p>Run <code>autorender-sync dashboard</code> on this machine \
         for a login link.</p></body>"
    );
    (status, page_headers(), body).into_response()
}

/// `GET /`: with `?code=` (a one-time code) logs in and redirects to `/`
/// with a session cookie; with a session, the page. The long-lived control
/// token is never taken from a URL: URLs end up in browser history, proxy
/// logs and other processes' command lines.
pub(super) async fn page(State(s): State<Shared>, headers: HeaderMap, q: Query<Login>) -> Response {
    if let Some(given) = q.code.as_ref().or(q.token.as_ref()) {
        let valid = {
            let mut codes = s.codes.lock().expect("codes lock");
            codes.retain(|_, lapse| *lapse > Instant::now());
            let hit = codes.keys().find(|c| same(given, c)).cloned();
            // One time: a code is gone once used.
            hit.is_some_and(|c| codes.remove(&c).is_some())
        };
        if !valid {
            return login_page(
                StatusCode::UNAUTHORIZED,
                "This login link was already used or has expired.",
            );
        }
        let Ok(session) = new_token() else {
            return login_page(StatusCode::INTERNAL_SERVER_ERROR, "No randomness for a session.");
        };
        {
            let mut sessions = s.sessions.lock().expect("sessions lock");
            if sessions.len() >= MAX_SESSIONS {
                sessions.clear();
            }
            sessions.insert(session.clone());
        }
        let cookie = format!("{}={session}; Path=/; HttpOnly; SameSite=Strict", cookie_name(&s));
        // The redirect drops the code from the address bar and history.
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, "/".to_string()), (header::SET_COOKIE, cookie)],
        )
            .into_response();
    }
    if session_of(&headers, &s).is_none() {
        return login_page(
            StatusCode::UNAUTHORIZED,
            "You are not logged in to this agent's dashboard.",
        );
    }
    (StatusCode::OK, page_headers(), PAGE).into_response()
}

/// `POST /api/login`: a one-time code for `/?code=` (what `autorender-sync
/// dashboard` prints), good for two minutes.
pub(super) async fn login_code(State(s): State<Shared>) -> Response {
    let Ok(code) = new_token() else {
        return super::refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a login code",
        );
    };
    let mut codes = s.codes.lock().expect("codes lock");
    codes.retain(|_, lapse| *lapse > Instant::now());
    codes.insert(code.clone(), Instant::now() + CODE_LIFE);
    let url = format!("http://{}/?code={code}", s.addr);
    axum::Json(json!({ "code": code, "url": url, "expires_in_s": CODE_LIFE.as_secs() })).into_response()
}

/// `GET /api/events`: every event as a JSON `data:` line. A reader that
/// falls behind gets `{"event":"lagged","missed":N}` (refetch the status)
/// and never holds the agent back.
pub(super) async fn events(State(s): State<Shared>) -> Response {
    let rx = s.live.hub.subscribe();
    let hello = futures_util::stream::once(async {
        Ok::<_, Infallible>(SseEvent::default().data(json!({ "event": "hello" }).to_string()))
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = match rx.recv().await {
            Ok(text) => SseEvent::default().data(&*text),
            Err(RecvError::Lagged(n)) => {
                SseEvent::default().data(json!({ "event": "lagged", "missed": n }).to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(item), rx))
    });
    let stop = s.stop.clone();
    let stream = hello
        .chain(stream)
        .take_until(async move { stop.cancelled().await });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
