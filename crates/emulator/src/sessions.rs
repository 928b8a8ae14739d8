//! The multipart service: start (validated field by field), complete
//! (parts checked, faults drawn), and storing a finished file.

use super::*;

pub(super) async fn start(State(emu): State<Arc<Emulator>>, headers: HeaderMap, body: Bytes) -> Response {
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
    let early = emu.stats.start.load(Ordering::Relaxed) <= emu.opts.throttle_first;
    if early || emu.chance(emu.opts.throttle_start) {
        emu.stats.fault(&emu.stats.fault_throttled);
        let mut r = json_error(
            &emu,
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "rate limit exceeded; retry later",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(emu.opts.retry_after),
        );
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
            stored_at: vec![None; n_parts],
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

pub(super) struct StartFields {
    pub(super) meta: FileMeta,
    pub(super) ttl: u64,
}

pub(super) fn validate_start(req: &Value, max_size: u64) -> Result<StartFields, (StatusCode, String)> {
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

pub(super) async fn complete(State(emu): State<Arc<Emulator>>, headers: HeaderMap, body: Bytes) -> Response {
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
    let fresh = matches!(checked, Ok(None));
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
    if fault == FinishFault::LoseAnswer || (fresh && emu.lose_first_due()) {
        return emu.lost_answer();
    }
    emu.stats.complete_ok.fetch_add(1, Ordering::Relaxed);
    workspace::file_answer(&emu, &entry)
}

/// Whether a complete may go ahead: `Ok(Some)` the earlier result of a
/// finished session, `Ok(None)` go ahead (now marked as completing), or the
/// error the service gives (unknown session 404; parts missing, or a complete
/// still running, 400).
pub(super) fn check_complete(
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
pub(super) fn finish_session(
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
pub(super) struct NewFile {
    pub(super) meta: FileMeta,
    /// The storage scratch file holding the bytes.
    pub(super) session: String,
    pub(super) kind: &'static str,
}

/// Stores a finished file: object, `<store>/<folder>/<name>`, folders, ledger.
pub(super) fn store_file(
    emu: &Emulator,
    inner: &mut Inner,
    new: NewFile,
) -> Result<LedgerEntry, (StatusCode, String)> {
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
