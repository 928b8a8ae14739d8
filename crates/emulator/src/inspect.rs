//! `/_emulator/*`: what tests and people inspect (ledger, stats, sessions).

use super::*;

pub(super) async fn ledger(State(emu): State<Arc<Emulator>>) -> Response {
    // Hashing new objects runs on a task of its own, so a client that gives
    // up on a slow first read (a 300 MiB file) does not throw the work away:
    // the hash is kept for the next read.
    let work = tokio::spawn(async move { emu.ledger().await });
    match work.await {
        Ok(ledger) => axum::Json(ledger).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("ledger: {e}")).into_response(),
    }
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

/// `POST /_emulator/alter/{file_no}`: a fault for tests: the stored
/// object's bytes change (its first byte flipped) while everything the
/// service says about it (size, metadata) stays, as if storage corrupted
/// it or a part was overwritten through its URL.
pub(super) async fn alter(State(emu): State<Arc<Emulator>>, Path(file_no): Path<String>) -> Response {
    if !emu.is_live(&file_no) {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    let path = emu.storage.object_path(&file_no);
    let flipped = (|| {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
        let mut b = [0u8; 1];
        if f.read(&mut b)? == 0 {
            f.write_all(b"!")?;
            return Ok::<_, std::io::Error>(());
        }
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&[!b[0]])
    })();
    match flipped {
        Ok(()) => (StatusCode::OK, "altered").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

impl Emulator {
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
