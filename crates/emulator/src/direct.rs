//! The one-request direct upload (`POST /api/v1/uploads`, multipart form),
//! in either reading of the answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::workspace::*;
use super::{Emulator, FileMeta, FinishFault, NewFile, json_error, store_file, unauthorized};

/// `POST /api/v1/uploads` (multipart/form-data). Strict like the service's
/// front door: a body without `Content-Length` (chunked) is refused, `file`
/// and `file_name` are required, `metadata` must be a JSON object string.
pub(super) async fn direct_upload(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    emu.stats.direct.fetch_add(1, Ordering::Relaxed);
    if !emu.authorized(&headers) {
        return unauthorized(&emu);
    }
    let bad = |m: &str| json_error(&emu, StatusCode::BAD_REQUEST, "Bad Request", m.to_string());
    let Some(declared) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return json_error(
            &emu,
            StatusCode::LENGTH_REQUIRED,
            "Length Required",
            "send the form with a Content-Length",
        );
    };
    if declared > emu.opts.direct_max.saturating_add(64 * 1024) {
        return json_error(
            &emu,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            format!(
                "direct uploads are limited to {} bytes; use multipart",
                emu.opts.direct_max
            ),
        );
    }
    let scratch = format!("direct-{}", emu.random_hex(16));
    if let Err(e) = emu.storage.create_session(&scratch, 0) {
        return json_error(
            &emu,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            format!("storage: {e}"),
        );
    }
    let mut fields = std::collections::HashMap::<String, String>::new();
    let mut size: Option<u64> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return bad(&format!("malformed multipart body: {e}")),
        };
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            let mut writer = match emu.storage.part_writer(&scratch, 0).await {
                Ok(w) => w,
                Err(e) => {
                    return json_error(
                        &emu,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal Server Error",
                        format!("storage: {e}"),
                    );
                }
            };
            let mut field = field;
            let mut total = 0u64;
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        emu.stats
                            .direct_bytes
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        // `--reencode-direct`: each chunk stored twice, as a
                        // proxy rewriting the body would change its size.
                        let copies = if emu.opts.reencode_direct { 2 } else { 1 };
                        for _ in 0..copies {
                            total += chunk.len() as u64;
                            if let Err(e) = writer.write(&chunk).await {
                                return json_error(
                                    &emu,
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    "Internal Server Error",
                                    format!("storage: {e}"),
                                );
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return bad(&format!("the file part ended early: {e}")),
                }
            }
            size = Some(total);
        } else {
            match field.text().await {
                Ok(t) => {
                    fields.insert(name, t);
                }
                Err(e) => return bad(&format!("malformed field {name}: {e}")),
            }
        }
    }
    let Some(size) = size else {
        return bad("file is required");
    };
    if size > emu.opts.max_size {
        return json_error(
            &emu,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            format!("size {size} exceeds the limit of {} bytes", emu.opts.max_size),
        );
    }
    // `--complete-delay`: storing a direct upload takes as long as a complete.
    if !emu.opts.complete_delay.is_zero() {
        tokio::time::sleep(emu.opts.complete_delay).await;
    }
    let file_name = match fields.get("file_name").map(|s| s.trim()) {
        Some(n) if !n.is_empty() && n.len() <= 255 && !n.contains(['/', '\0']) && n != "." && n != ".." => {
            n.to_string()
        }
        Some(_) => return bad("file_name must be a plain name of at most 255 bytes, without /"),
        None => return bad("file_name is required"),
    };
    let segs: Vec<&str> = fields
        .get("folder")
        .map(|f| f.split('/').filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    if segs.iter().any(|p| *p == "." || *p == "..") {
        return bad("folder must not contain . or .. segments");
    }
    let metadata = match fields.get("metadata") {
        None => json!({}),
        Some(m) => match serde_json::from_str::<Value>(m) {
            Ok(v @ Value::Object(_)) => v,
            _ => return bad("metadata must be a JSON object, sent as a string"),
        },
    };
    let tags: Vec<String> = fields
        .get("tags")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let format = mime_guess::from_path(&file_name)
        .first_or_octet_stream()
        .essence_str()
        .to_string();
    let fault = emu.finish_fault();
    if fault == FinishFault::FailBefore {
        return emu.failed_before("upload failed; retry");
    }
    let new = NewFile {
        meta: FileMeta {
            file_name,
            folder: segs.join("/"),
            format,
            tags,
            metadata,
            random_prefix: fields.get("random_prefix").is_some_and(|v| v == "true"),
            size,
        },
        session: scratch,
        kind: "direct",
    };
    let stored = {
        let mut inner = emu.inner.lock().expect("state lock");
        store_file(&emu, &mut inner, new)
    };
    match stored {
        Ok(_) if emu.opts.reencode_direct => {
            emu.stats.fault(&emu.stats.fault_reencoded);
            json_error(
                &emu,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "upstream answered badly",
            )
        }
        Ok(entry) => {
            if fault == FinishFault::LoseAnswer || emu.lose_first_due() {
                return emu.lost_answer();
            }
            emu.stats.direct_ok.fetch_add(1, Ordering::Relaxed);
            file_answer(&emu, &entry)
        }
        Err((status, msg)) => json_error(&emu, status, "Internal Server Error", msg),
    }
}
