//! `/_emulator/*`: what tests and people inspect (ledger, stats, sessions).

use super::*;

pub(super) async fn ledger(State(emu): State<Arc<Emulator>>) -> Response {
    axum::Json(emu.ledger().await).into_response()
}

pub(super) async fn stats(State(emu): State<Arc<Emulator>>) -> Response {
    axum::Json(&emu.stats).into_response()
}

pub(super) fn session_json(id: &str, rec: &SessionRec) -> Value {
    json!({
        "session": id,
        "file_name": rec.meta.file_name,
        "size": rec.meta.size,
        "part_size": rec.part_size,
        "expire_at": rec.expire_at,
        "puts": rec.puts,
        "received": rec.received,
        "stored_at_ms": rec.stored_at,
        "parts_received": rec.received.iter().filter(|r| r.is_some()).count(),
        "completing": rec.completing,
        "completed": rec.completed.is_some(),
    })
}

pub(super) async fn session_info(State(emu): State<Arc<Emulator>>, Path(session): Path<String>) -> Response {
    let inner = emu.inner.lock().expect("state lock");
    match inner.sessions.get(&session) {
        Some(rec) => axum::Json(session_json(&session, rec)).into_response(),
        None => json_error(&emu, StatusCode::NOT_FOUND, "Not Found", "no such session"),
    }
}

/// Every session the emulator still knows, for tests that wait on one file's upload.
pub(super) async fn sessions(State(emu): State<Arc<Emulator>>) -> Response {
    let inner = emu.inner.lock().expect("state lock");
    let list: Vec<Value> = inner
        .sessions
        .iter()
        .map(|(id, rec)| session_json(id, rec))
        .collect();
    axum::Json(list).into_response()
}
