//! How times and history rows are shown, shared by `status` and `history`.

use serde_json::Value;

pub use crate::control::status::{file_json, json_time, local_time};

use crate::journal::HistoryRow;
use crate::units::format_bytes;

/// Every `--json` output is printed this way: pretty, one document.
pub fn print_json(v: &Value) {
    super::print_stdout(&serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A URL as it should be printed: percent-encoded (a service may hand one
/// out with raw spaces, which no terminal or browser takes as one link).
pub fn display_url(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_string(), String::from)
}

/// One history row, as `history` and `status` print it.
pub fn print_history_row(h: &HistoryRow) {
    let when = local_time(h.at);
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
        if let Some(set) = &h.set {
            outln!("    in upload set: {}", crate::text::shown(set));
        }
        if let Some(what) = &h.after {
            outln!("    local file: {}", crate::text::shown(what));
        }
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
