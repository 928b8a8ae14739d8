//! Error answers: the API's JSON in either reading, and storage's S3 XML.

use super::*;

/// An API error in the reading the emulator speaks: a numeric `code` (docs)
/// or a string one such as `NOT_FOUND` (SDKs).
pub(super) fn json_error(
    emu: &Emulator,
    status: StatusCode,
    error: &str,
    message: impl Into<String>,
) -> Response {
    let code = match emu.opts.answers {
        Answers::Docs => json!(status.as_u16()),
        Answers::Sdk => json!(match status.as_u16() {
            400 => "VALIDATION_ERROR",
            401 => "UNAUTHORIZED",
            404 => "NOT_FOUND",
            411 => "LENGTH_REQUIRED",
            413 => "FILE_TOO_LARGE",
            429 => "RATE_LIMITED",
            _ => "INTERNAL_ERROR",
        }),
    };
    let body = json!({
        "success": false,
        "error": error,
        "message": message.into(),
        "code": code,
    });
    (status, axum::Json(body)).into_response()
}

pub(super) fn unauthorized(emu: &Emulator) -> Response {
    json_error(
        emu,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Invalid or missing API key",
    )
}

pub(super) fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>emulator</RequestId></Error>"
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}
