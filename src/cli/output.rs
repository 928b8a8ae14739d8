//! How times and history rows are shown, shared by `status` and `history`.

use crate::journal::HistoryRow;
use crate::units::format_bytes;

/// A unix-millisecond time as RFC 3339, to the second.
pub fn format_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// One history row, as `history` and `status` print it.
pub fn print_history_row(h: &HistoryRow) {
    let when = format_time(h.at);
    if h.ok {
        println!(
            "{when}  {} → {}/{}  file_no={}  {}  {}",
            h.local_path,
            h.remote_folder.as_deref().unwrap_or(""),
            h.remote_name.as_deref().unwrap_or(""),
            h.file_no.as_deref().unwrap_or("-"),
            format_bytes(h.size.unwrap_or(0).max(0) as u64),
            h.url.as_deref().unwrap_or("-")
        );
    } else {
        println!(
            "{when}  {}  FAILED: {}",
            h.local_path,
            h.error.as_deref().unwrap_or("")
        );
    }
}
