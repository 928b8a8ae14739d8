//! How times and history rows are shown, shared by `status` and `history`.

use serde_json::{Value, json};

use crate::journal::HistoryRow;
use crate::units::format_bytes;

/// A unix-millisecond time as RFC 3339, to the second.
pub fn format_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A unix-millisecond time for JSON: RFC 3339 (None stays null).
pub fn json_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(format_time(ms)))
}

/// Every `--json` output is printed this way: pretty, one document.
pub fn print_json(v: &Value) {
    super::print_stdout(&serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One file's result as every `--json` names it (`history`, `status`'s
/// last uploads, `upload`): `local_path`, `ok`, `remote_folder`,
/// `remote_name`, `remote_path`, `file_no`, `url`, `size`, `sha256`,
/// `error`, `at` (RFC 3339) and `at_ms`.
pub fn file_json(h: &HistoryRow) -> Value {
    let remote_path = match (&h.remote_folder, &h.remote_name) {
        (Some(f), Some(n)) => Value::String(crate::mapping::remote_path(f, n)),
        (None, Some(n)) => Value::String(n.clone()),
        _ => Value::Null,
    };
    json!({
        "local_path": h.local_path,
        "ok": h.ok,
        "remote_folder": h.remote_folder,
        "remote_name": h.remote_name,
        "remote_path": remote_path,
        "file_no": h.file_no,
        "url": h.url,
        "size": h.size,
        "sha256": h.sha256,
        "error": h.error,
        "at": json_time(Some(h.at)),
        "at_ms": h.at,
        "adopted": h.adopted,
    })
}

/// A URL as it should be printed: percent-encoded (a service may hand one
/// out with raw spaces, which no terminal or browser takes as one link).
pub fn display_url(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_string(), String::from)
}

/// One history row, as `history` and `status` print it.
pub fn print_history_row(h: &HistoryRow) {
    let when = format_time(h.at);
    if h.ok {
        outln!(
            "{when}  {} → {}  file_no={}  {}  {}",
            h.local_path,
            crate::mapping::remote_path(
                h.remote_folder.as_deref().unwrap_or(""),
                h.remote_name.as_deref().unwrap_or("")
            ),
            h.file_no.as_deref().unwrap_or("-"),
            format_bytes(h.size.unwrap_or(0).max(0) as u64),
            h.url.as_deref().map_or_else(|| "-".into(), display_url)
        );
        if let Some(how) = &h.adopted {
            outln!(
                "    adopted (already in the workspace): {}",
                crate::text::shown(how)
            );
        }
    } else {
        outln!(
            "{when}  {}  FAILED: {}",
            h.local_path,
            h.error.as_deref().unwrap_or("")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_printed_percent_encoded() {
        assert_eq!(
            display_url("http://127.0.0.1:9/files/7/big clip.mov"),
            "http://127.0.0.1:9/files/7/big%20clip.mov"
        );
        let fine = "https://cdn.example/files/7/a%20b.mov?sig=x";
        assert_eq!(display_url(fine), fine, "already encoded: unchanged");
        assert_eq!(display_url("not a url"), "not a url");
    }
}
