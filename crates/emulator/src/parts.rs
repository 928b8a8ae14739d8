//! Part PUTs checked as object storage checks them: signature, expiry,
//! no credentials, no chunking, exact length; bytes at their offset.

use super::*;

#[derive(Deserialize)]
pub(super) struct Signed {
    pub(super) expires: Option<i64>,
    pub(super) signature: Option<String>,
}

pub(super) async fn put_part(
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
        rec.stored_at[part] = Some(crate::now_ms());
    }
    st.part_ok.fetch_add(1, Ordering::Relaxed);
    st.part_bytes.fetch_add(len, Ordering::Relaxed);
    (
        StatusCode::OK,
        [(header::ETAG, format!("\"{session}-{part}-{len}\""))],
    )
        .into_response()
}

pub(super) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
