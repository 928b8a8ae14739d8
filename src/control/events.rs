//! What the agent tells the world as it works: one [`Event`] per thing a
//! user may want to know, broadcast to the dashboard's event stream (SSE)
//! and, for the kinds a `[[notify]]` entry asks for, put in the journal's
//! outbox for delivery.
//!
//! The broadcast is a bounded ring: a slow reader misses events (and is
//! told to refetch the status) instead of slowing the agent down.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// How many events a reader may fall behind before it misses some.
const RING: usize = 1024;

/// One event. The notification kinds (`uploaded`, `failed`, `stuck`,
/// `set_complete`, `auth_rejected`, `watch_degraded`, `paused`, `resumed`)
/// have every field, null where it does not apply; the stream-only kinds
/// (`settled`, `started`, `progress`, `reloaded`) carry what they need in
/// `extra`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub event: &'static str,
    /// RFC 3339, UTC.
    pub time: String,
    pub host: String,
    pub path: Option<String>,
    pub remote_folder: Option<String>,
    pub name: Option<String>,
    pub file_no: Option<String>,
    pub size: Option<u64>,
    pub error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Event {
    /// An event of `kind` at `now_ms` (unix ms) with no details yet.
    pub fn new(kind: &'static str, now_ms: i64) -> Event {
        Event {
            event: kind,
            time: crate::clock::rfc3339_ms(now_ms),
            host: crate::sys::host_name().to_string(),
            path: None,
            remote_folder: None,
            name: None,
            file_no: None,
            size: None,
            error: None,
            extra: Map::new(),
        }
    }

    pub fn path(mut self, p: &std::path::Path) -> Event {
        self.path = Some(p.display().to_string());
        self
    }

    pub fn sized(mut self, size: u64) -> Event {
        self.size = Some(size);
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

/// One line a person reads about an event (the Slack format's text).
pub fn text(e: &Value) -> String {
    let field = |k: &str| e[k].as_str().unwrap_or("");
    let what = field("path");
    let mut line = match field("event") {
        "uploaded" => format!(
            "uploaded {what} → {} (file_no {})",
            crate::mapping::remote_path(field("remote_folder"), field("name")),
            field("file_no")
        ),
        "failed" => format!("upload failed: {what}"),
        "auth_rejected" => "the API key was rejected; uploads are paused".to_string(),
        "watch_degraded" => "watching is degraded".to_string(),
        "paused" => "uploads paused".to_string(),
        "resumed" => "uploads resumed".to_string(),
        "stalled" => format!("upload stalled: {what}"),
        other => format!("{other} {what}"),
    };
    if let Some(err) = e["error"].as_str() {
        line.push_str(": ");
        line.push_str(err);
    }
    format!("autorender-sync on {}: {line}", field("host"))
}

/// The broadcast side of the event stream. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            tx: broadcast::channel(RING).0,
        }
    }
}

impl Hub {
    /// Sends `event` to every reader attached now (none: dropped).
    pub fn send(&self, event: &Event) {
        if self.tx.receiver_count() > 0
            && let Ok(text) = serde_json::to_string(event)
        {
            let _ = self.tx.send(text.into());
        }
    }

    /// Is anyone listening (so building progress events is worth it)?
    pub fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_events_have_every_field() {
        let e = Event::new("failed", 1_700_000_000_000).path(std::path::Path::new("/d/a.mov"));
        let v = serde_json::to_value(&e).unwrap();
        for key in [
            "event",
            "time",
            "host",
            "path",
            "remote_folder",
            "name",
            "file_no",
            "size",
            "error",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
        assert!(!crate::sys::host_name().is_empty());
    }

    #[test]
    fn a_slow_reader_never_blocks_the_sender() {
        let hub = Hub::default();
        let mut rx = hub.subscribe();
        for _ in 0..RING * 3 {
            hub.send(&Event::new("progress", 0));
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
