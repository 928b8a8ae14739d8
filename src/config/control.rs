//! The rules of `[control]`, `[[notify]]` and `agent.healthcheck_url`.

use super::walker::Item;
use super::*;

const CONTROL_KEYS: &[&str] = &["listen"];
const NOTIFY_KEYS: &[&str] = &["url", "format", "events"];

/// Every event a `[[notify]]` entry can ask for.
pub const EVENT_NAMES: &[&str] = &[
    "uploaded",
    "failed",
    "stuck",
    "set_complete",
    "auth_rejected",
    "watch_degraded",
    "paused",
    "resumed",
    "stalled",
    "hook_failed",
    "mhl_failed",
    "renamed",
    "moved",
    "deleted",
    "deletes_braked",
];

/// What a `[[notify]]` entry gets when it does not say.
pub const DEFAULT_EVENTS: &[&str] = &[
    "failed",
    "stuck",
    "set_complete",
    "auth_rejected",
    "watch_degraded",
    "mhl_failed",
    "deletes_braked",
];

/// `[control]`: the agent's local API, metrics and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// Loopback address to serve on (port 0: any free port); None = "off".
    pub listen: Option<std::net::SocketAddr>,
    /// `listen` was written in the config (not the default): when it is
    /// taken, the agent refuses to start rather than move elsewhere, since
    /// whatever scrapes that address would reach another program.
    pub explicit: bool,
}

/// `[control] listen` when the config does not say.
pub const DEFAULT_CONTROL_LISTEN: &str = "127.0.0.1:7780";

/// The address `[control] listen` means when the config does not say:
/// [`DEFAULT_CONTROL_LISTEN`]. `AUTORENDER_TEST_CONTROL_LISTEN` moves it, so
/// the tests' hundreds of agents do not all contend for this machine's
/// port 7780 (and a test can take "the default" away on purpose).
fn default_listen() -> String {
    std::env::var("AUTORENDER_TEST_CONTROL_LISTEN").unwrap_or_else(|_| DEFAULT_CONTROL_LISTEN.to_string())
}

/// How a `[[notify]]` receiver wants its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// The event object itself.
    Json,
    /// `{"text": "…"}` (Slack, Mattermost, Teams workflows).
    Slack,
}

/// One `[[notify]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// A secret: never printed whole (see [`redact_url`]).
    pub url: Url,
    pub format: NotifyFormat,
    pub events: Vec<String>,
}

impl NotifySettings {
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// A webhook or healthcheck URL as logs may show it: scheme and host only
/// (the path of a Slack or healthchecks.io URL is the secret).
pub fn redact_url(url: &Url) -> String {
    format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or("?"))
}

impl Walker<'_> {
    pub(super) fn control(&mut self, t: &DeTable) -> ControlSettings {
        let f = self.fields(t, "control", CONTROL_KEYS);
        let (text, span) = match self.string(&f, "listen", "control.listen") {
            Some((text, span)) => (text, Some(span)),
            None => (default_listen(), None),
        };
        let explicit = span.is_some();
        let off = ControlSettings {
            listen: None,
            explicit,
        };
        if text.eq_ignore_ascii_case("off") {
            return off;
        }
        match text.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => ControlSettings {
                listen: Some(addr),
                explicit,
            },
            Ok(addr) => {
                self.err(
                    "control.listen",
                    span,
                    format!(
                        "{addr} is not a loopback address; the control API serves this machine only: use \
                         127.0.0.1:PORT or [::1]:PORT (or \"off\")"
                    ),
                );
                off
            }
            Err(_) => {
                self.err(
                    "control.listen",
                    span,
                    format!("\"{text}\" is not an address; write e.g. \"127.0.0.1:7780\", or \"off\""),
                );
                off
            }
        }
    }

    /// A receiver's URL: https, or http on loopback only.
    pub(super) fn hook_url(&mut self, f: &HashMap<String, Item>, name: &str, key: &str) -> Option<Url> {
        let (text, span) = self.string(f, name, key)?;
        let checked = Url::parse(&text)
            .map_err(|e| format!("not a URL ({e}); write e.g. \"https://hooks.example.com/…\""))
            .and_then(|u| {
                check_transport(&u)
                    .map(|()| u)
                    .map_err(|e| format!("{e}; use https://"))
            });
        match checked {
            Ok(u) => Some(u),
            Err(e) => {
                self.err(key, Some(span), e);
                None
            }
        }
    }

    pub(super) fn notify(&mut self, item: &Item) -> Vec<NotifySettings> {
        let DeValue::Array(list) = item.get_ref() else {
            self.err(
                "notify",
                Some(item.span()),
                format!(
                    "expected [[notify]] entries (an array of tables), found {}",
                    item.get_ref().type_str()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let key = format!("notify[{i}]");
            let Some(t) = self.table(entry, &key) else {
                continue;
            };
            let f = self.fields(t, &key, NOTIFY_KEYS);
            let url = self.hook_url(&f, "url", &format!("{key}.url"));
            if !f.contains_key("url") {
                self.err(
                    &key,
                    Some(entry.span()),
                    "needs `url`, where each event is POSTed",
                );
            }
            let format = match self.string(&f, "format", &format!("{key}.format")) {
                None => NotifyFormat::Json,
                Some((t, _)) if t == "json" => NotifyFormat::Json,
                Some((t, _)) if t == "slack" => NotifyFormat::Slack,
                Some((t, span)) => {
                    self.err(
                        &format!("{key}.format"),
                        Some(span),
                        format!("\"{t}\" is not a format; use \"json\" or \"slack\""),
                    );
                    NotifyFormat::Json
                }
            };
            let events = match self.strings(&f, "events", &format!("{key}.events")) {
                None => DEFAULT_EVENTS.iter().map(|e| e.to_string()).collect(),
                Some(list) => {
                    let mut events = Vec::new();
                    for (name, span) in list {
                        if EVENT_NAMES.contains(&name.as_str()) {
                            events.push(name);
                        } else {
                            self.err(
                                &format!("{key}.events"),
                                Some(span),
                                format!("\"{name}\" is not an event; known: {}", EVENT_NAMES.join(", ")),
                            );
                        }
                    }
                    events
                }
            };
            if let Some(url) = url {
                out.push(NotifySettings { url, format, events });
            }
        }
        out
    }
}
