//! `POST /api/pause`, `/api/resume` and `/api/reload`: requests the agent's
//! loop carries out, answered once it has.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{Command, Shared, json_body, refuse};

/// Sends `cmd` to the agent and waits for its answer.
async fn ask<T>(s: &Shared, cmd: Command, rx: oneshot::Receiver<T>) -> Result<T, Response> {
    let gone = || {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping; try again once it runs",
        )
    };
    s.hooks.commands.send(cmd).await.map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

/// `{"for": "2h"}` (optional): a pause that ends by itself.
pub(super) async fn pause(State(s): State<Shared>, body: Bytes) -> Response {
    let req = match json_body(&body, "{} or {\"for\": \"2h\"}") {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
    };
    let until_ms = match &req["for"] {
        Value::Null => None,
        Value::String(text) => match crate::units::parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(crate::clock::system_ms() + d.as_millis() as i64),
            Ok(_) => return refuse(StatusCode::BAD_REQUEST, "\"for\" must be longer than 0s"),
            Err(e) => {
                return refuse(StatusCode::BAD_REQUEST, &format!("\"for\": {e}"));
            }
        },
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "\"for\" must be a duration such as \"2h\"",
            );
        }
    };
    let (reply, rx) = oneshot::channel();
    match ask(&s, Command::Pause { until_ms, reply }, rx).await {
        Ok(p) => axum::Json(json!({
            "paused": true,
            "since": crate::clock::rfc3339_ms(p.since_ms),
            "until": p.until_ms.map(crate::clock::rfc3339_ms),
        }))
        .into_response(),
        Err(r) => r,
    }
}

pub(super) async fn resume(State(s): State<Shared>) -> Response {
    let (reply, rx) = oneshot::channel();
    match ask(&s, Command::Resume { reply }, rx).await {
        Ok(was) => axum::Json(json!({ "paused": false, "was_paused": was })).into_response(),
        Err(r) => r,
    }
}

/// Reads the config with `how` and has the agent switch to it: the one way
/// `POST /api/reload` and SIGHUP reload. Every problem is listed.
pub async fn reload_now(
    how: &super::ReloadFn,
    commands: &tokio::sync::mpsc::Sender<Command>,
) -> Result<super::ReloadReport, Vec<String>> {
    let f = how.clone();
    let (settings, transfer) = tokio::task::spawn_blocking(move || f())
        .await
        .map_err(|e| vec![e.to_string()])??;
    let (reply, rx) = oneshot::channel();
    let stopping = || vec!["the agent is stopping".to_string()];
    commands
        .send(Command::Reload {
            settings,
            transfer,
            reply,
        })
        .await
        .map_err(|_| stopping())?;
    rx.await.map_err(|_| stopping())?
}

/// Reads the config again: a valid one is applied; an invalid one is
/// refused (422) with every problem, and the agent goes on with the old.
pub(super) async fn reload(State(s): State<Shared>) -> Response {
    match reload_now(&s.hooks.reload, &s.hooks.commands).await {
        Ok(report) => axum::Json(json!({ "reloaded": true, "report": report })).into_response(),
        Err(problems) => refused(problems),
    }
}

fn refused(problems: Vec<String>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({
            "error": "the new config was refused; the agent goes on with the one it has",
            "problems": problems,
        })),
    )
        .into_response()
}
