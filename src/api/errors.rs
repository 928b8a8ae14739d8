//! What can go wrong talking to the service, classified by what to do
//! about it (retry, start a new session, fail the file, stop everything).

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Connection refused/reset, timeout, truncated answer: try again.
    #[error("network error: {0}")]
    Network(String),
    /// No connection could be made (refused, no route, DNS): nothing was
    /// sent. Retried briefly only, so a wrong or down endpoint is reported
    /// in seconds.
    #[error("cannot reach the service: {0}")]
    Unreachable(String),
    /// 429: try again after `retry_after` (or our own backoff).
    #[error("throttled by the service (429){}", .retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    Throttled { retry_after: Option<Duration> },
    /// 5xx: try again.
    #[error("server error {status}: {message}")]
    Server { status: u16, message: String },
    /// A presigned URL expired or was refused by storage: start a new session.
    #[error("part URL no longer valid ({status}): {message}")]
    SessionExpired { status: u16, message: String },
    /// 400, 404, 413 …: this file cannot be uploaded as asked.
    #[error("rejected ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// 401/403 from the API: the key is wrong; nothing will work until it is fixed.
    #[error("the API key was rejected ({status}): {message}")]
    Auth { status: u16, message: String },
    /// The answer did not make sense (malformed JSON, missing fields, …).
    #[error("unexpected answer from the service: {0}")]
    Protocol(String),
}

impl ApiError {
    /// Worth retrying the same request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::Network(_)
                | ApiError::Unreachable(_)
                | ApiError::Throttled { .. }
                | ApiError::Server { .. }
        )
    }

    /// The answer was lost on the way (a connection cut or timed out after
    /// the request went, or a gateway's 502/504): the service may well have
    /// done the work and simply not been heard. A 500 the service gave
    /// itself says it failed.
    pub fn answer_lost(&self) -> bool {
        matches!(
            self,
            ApiError::Network(_)
                | ApiError::Server {
                    status: 502 | 504,
                    ..
                }
        )
    }

    /// The request never left this machine (no connection was made).
    pub fn never_sent(&self) -> bool {
        matches!(self, ApiError::Unreachable(_))
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Throttled { retry_after } => *retry_after,
            _ => None,
        }
    }
}

pub(super) fn network(e: reqwest::Error) -> ApiError {
    // Never include the URL: part URLs carry signatures. The causes say what
    // actually happened ("connection refused", "dns error", a refused redirect).
    let e = e.without_url();
    let connect = e.is_connect();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    if connect {
        ApiError::Unreachable(message)
    } else {
        ApiError::Network(message)
    }
}
