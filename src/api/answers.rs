//! Reading answers: bodies read with a size limit, statuses classified into
//! errors (retryable or not), and start/complete answers validated.

use super::*;

pub(super) fn decode_start(value: serde_json::Value, size: u64) -> Result<Session, ApiError> {
    // The start answer is bare (not enveloped), but accept `data` wrapping too.
    let value = match value.get("data") {
        Some(inner) if inner.get("session_id").is_some() => inner.clone(),
        _ => value,
    };
    let raw: RawStart = serde_json::from_value(value)
        .map_err(|e| ApiError::Protocol(format!("start answer malformed: {e}")))?;
    validate_start(raw, size)
}

pub(super) fn decode_complete(value: serde_json::Value) -> Result<RemoteFile, ApiError> {
    decode_file(&value).map_err(|e| ApiError::Protocol(format!("the upload's answer is unusable: {e}")))
}

/// Decodes a start answer (status line and body) as the client does, without
/// a network: for fuzzing and tests. Never panics, whatever the bytes.
pub fn decode_start_answer(status: u16, body: &[u8], size: u64) -> Result<Session, ApiError> {
    let value = classify(status, None, &String::from_utf8_lossy(body))?;
    decode_start(value, size)
}

/// Decodes a complete answer as the client does; see [`decode_start_answer`].
pub fn decode_complete_answer(status: u16, body: &[u8]) -> Result<RemoteFile, ApiError> {
    let value = classify(status, None, &String::from_utf8_lossy(body))?;
    decode_complete(value)
}

pub(super) fn validate_start(raw: RawStart, size: u64) -> Result<Session, ApiError> {
    let session_id = raw
        .session_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::Protocol("start answer has no session_id".into()))?;
    let part_size = match raw.part_size {
        Some(p) if p > 0 => p as u64,
        Some(p) => return Err(ApiError::Protocol(format!("start answer has part_size {p}"))),
        None => return Err(ApiError::Protocol("start answer has no part_size".into())),
    };
    let urls = raw
        .parts
        .ok_or_else(|| ApiError::Protocol("start answer has no parts".into()))?;
    let needed = Session::parts_needed(size, part_size);
    // S3-style storage refuses parts under 5 MiB (but the last) and more
    // than 10,000 parts; a session that breaks either would only make a
    // flood of requests that cannot be completed (`part_size = 1` is
    // 50,000 PUTs for a 50 KB file).
    if needed > MAX_PARTS {
        return Err(ApiError::Protocol(format!(
            "start answer splits {size} bytes into {needed} parts of {part_size} bytes; \
             storage takes at most {MAX_PARTS} parts. The service's part_size is wrong"
        )));
    }
    let min_part = min_part_size();
    if needed > 1 && part_size < min_part {
        return Err(ApiError::Protocol(format!(
            "start answer offers parts of {part_size} bytes; storage needs at least {min_part} bytes \
             in every part but the last. The service's part_size is wrong"
        )));
    }
    // A zero-byte file may get one (empty) part or none.
    let count_ok = urls.len() as u64 == needed || (size == 0 && urls.len() == 1);
    if !count_ok {
        return Err(ApiError::Protocol(format!(
            "start answer has {} part URLs, but {size} bytes in parts of {part_size} need {needed}",
            urls.len()
        )));
    }
    let mut parts = Vec::with_capacity(urls.len());
    for (i, u) in urls.iter().enumerate() {
        let url = Url::parse(u).map_err(|e| ApiError::Protocol(format!("part URL {i} is not a URL: {e}")))?;
        check_transport(&url).map_err(|e| ApiError::Protocol(format!("part URL {i} refused: {e}")))?;
        parts.push(url);
    }
    Ok(Session {
        session_id,
        uuid: raw.uuid.filter(|u| !u.is_empty()),
        part_size,
        parts,
        expire_at: raw.expire_at,
        began_at_ms: crate::clock::system_ms(),
    })
}

/// Most parts one multipart upload may have (S3's limit).
pub const MAX_PARTS: u64 = 10_000;

/// Smallest part (but the last) a session may ask for: 5 MiB, S3's limit.
/// `AUTORENDER_TEST_MIN_PART_SIZE` lowers it, so tests can use a few KiB
/// parts against the emulator; it is not meant for use with a real service.
pub fn min_part_size() -> u64 {
    static MIN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("AUTORENDER_TEST_MIN_PART_SIZE")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(5 * 1024 * 1024)
    })
}

pub(super) async fn read_limited(mut resp: reqwest::Response) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        if buf.len() + chunk.len() > MAX_JSON_BODY {
            return Err(ApiError::Protocol(format!(
                "answer larger than {MAX_JSON_BODY} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    // A service or proxy may echo the request back, key and all.
    Ok(crate::secrets::redact(&String::from_utf8_lossy(&buf)))
}

/// Reads a JSON answer and turns error statuses and `success: false` into [`ApiError`].
pub(super) async fn read_json(resp: reqwest::Response) -> Result<serde_json::Value, ApiError> {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(86_400)));
    let text = read_limited(resp).await?;
    classify(status.as_u16(), retry_after, &text)
}

/// Turns an answer's status and body into its JSON value or a classified error.
pub(super) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    text: &str,
) -> Result<serde_json::Value, ApiError> {
    let status = reqwest::StatusCode::from_u16(status)
        .map_err(|_| ApiError::Protocol(format!("invalid HTTP status {status}")))?;
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| serde_json::from_value::<Envelope>(v.clone()).ok())
        .and_then(|e| {
            let pick = |v: Option<serde_json::Value>| {
                v.map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
            };
            match (pick(e.error), pick(e.message)) {
                (Some(a), Some(b)) if a != b => Some(format!("{a}: {b}")),
                (a, b) => a.or(b),
            }
        })
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    if !status.is_success() {
        log_failed_answer(status.as_u16(), text);
    }
    match status.as_u16() {
        200..=299 => {}
        401 | 403 => {
            return Err(ApiError::Auth {
                status: status.as_u16(),
                message,
            });
        }
        429 => return Err(ApiError::Throttled { retry_after }),
        s if s >= 500 => return Err(ApiError::Server { status: s, message }),
        s => return Err(ApiError::Rejected { status: s, message }),
    }
    let value = parsed.ok_or_else(|| ApiError::Protocol("answer is not JSON".into()))?;
    if let Ok(env) = serde_json::from_value::<Envelope>(value.clone())
        && env.success == Some(false)
    {
        return Err(ApiError::Rejected {
            status: status.as_u16(),
            message: format!("service answered success=false: {message}"),
        });
    }
    Ok(value)
}

/// Pulls `<Message>` (or `<Code>`) out of an S3-style XML error body.
pub(super) fn s3_message(xml: &str) -> Option<String> {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = xml.find(&open)? + open.len();
        let end = xml[start..].find(&close)? + start;
        Some(xml[start..end].trim().to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => Some(format!("{c}: {m}")),
        (c, m) => m.or(c),
    }
}

/// The body of an answer that was not a success, at `-v`: capped at 2 KiB,
/// control characters escaped (the key was redacted when it was read).
pub(super) fn log_failed_answer(status: u16, text: &str) {
    const CAP: usize = 2048;
    let mut end = text.len().min(CAP);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < text.len() { " …(cut)" } else { "" };
    tracing::debug!(
        "the service answered {status}: {}{more}",
        crate::text::shown(&text[..end])
    );
}
