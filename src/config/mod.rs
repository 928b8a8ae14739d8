//! Configuration: TOML text → one validated [`Settings`], built once and shared
//! by every command (so `check` sees exactly what `run` would).
//!
//! The document is walked by hand over toml's spanned tree instead of through
//! serde, so that *every* problem is reported at once, each with its key and
//! line, and unknown keys get a "did you mean" hint. Nothing here touches the
//! network; the only I/O is resolving paths (`~`, existence, canonical form).
//!
//! Rooms: this file holds the `Settings` types and the entry points;
//! `walker` reads typed fields off the spanned tree; `schema` the rules of
//! the top level, `[api]` and `[agent]`; `watches` those of `[[watch]]`;
//! `control` those of `[control]` and `[[notify]]`; `paths` the path and
//! endpoint helpers.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use url::Url;

use crate::units::{parse_duration, parse_rate};

mod control;
mod exclude_from;
pub use exclude_from::ExcludeFile;
pub mod diff;
mod fleet;
mod hooks;
pub use hooks::{DEFAULT_HOOK_TIMEOUT, Hook, Hooks};
mod paths;
mod schedule;
mod schema;
mod sets;
#[cfg(test)]
mod tests;
mod walker;
mod watches;

pub use control::{
    ControlSettings, DEFAULT_CONTROL_LISTEN, DEFAULT_EVENTS, EVENT_NAMES, NotifyFormat, NotifySettings,
    redact_url,
};
pub use fleet::{DEFAULT_LEASE, FleetDb, FleetSettings};
pub use paths::{
    check_endpoint, check_transport, default_state_dir, expand_tilde, is_loopback, normalise_remote_folder,
};
pub use schedule::{Limit, Window};
pub use sets::{Gaps, Mhl, PHASE_FILES, PHASE_LAST, PHASE_TRIGGER, SetRules};
use walker::Walker;

pub const DEFAULT_ENDPOINT: &str = "https://upload.autorender.io";
pub const DEFAULT_KEY_ENV: &str = "AUTORENDER_API_KEY";

/// The OS keyring entry's account when `keyring_account` does not say.
pub const DEFAULT_KEYRING_ACCOUNT: &str = "api-key";
pub const CONFIG_ENV: &str = "AUTORENDER_SYNC_CONFIG";

/// The commented reference config; `init` writes exactly this text.
pub const EXAMPLE_CONFIG: &str = include_str!("../../example-config.toml");

/// One problem found in the config: where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.file, line)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

/// Every problem in a config file, in line order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "the config has {n} problem{}:", if n == 1 { "" } else { "s" })?;
        for (i, e) in self.0.iter().enumerate() {
            if i + 1 == n {
                write!(f, "  - {e}")?;
            } else {
                writeln!(f, "  - {e}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from (None: built-in defaults, no file).
    pub source: Option<PathBuf>,
    pub api: ApiSettings,
    pub agent: AgentSettings,
    pub control: ControlSettings,
    pub notify: Vec<NotifySettings>,
    /// `[fleet]`: several agents share one queue in PostgreSQL.
    pub fleet: Option<FleetSettings>,
    pub watches: Vec<WatchSettings>,
    /// The config as written (its TOML; empty for the built-in defaults):
    /// a reload reports what changed between two of these ([`diff`]).
    pub written: std::sync::Arc<toml::Table>,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub endpoint: Url,
    pub api_key_env: String,
    pub api_key_file: Option<PathBuf>,
    /// `api_key_source = "keyring"`: the account of the OS keyring entry
    /// (service `autorender-sync`) the key is read from; None: not the keyring.
    pub keyring_account: Option<String>,
    pub request_timeout: Duration,
    pub url_ttl: Duration,
    /// The longest wait a `Retry-After` is obeyed for before the service is
    /// asked again (a 429 asking for an hour would stall every upload).
    pub retry_after_max: Duration,
    /// Remote names that differ only by case are the same file.
    pub case_insensitive_remote: bool,
}

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub state_dir: PathBuf,
    pub settle: Duration,
    /// None when `rescan_interval = "0s"`.
    pub rescan_interval: Option<Duration>,
    pub concurrent_files: usize,
    /// Parts (and direct uploads) in flight per file when fixed; None: the
    /// adaptive controller sets one budget for all files.
    pub concurrent_parts: Option<usize>,
    /// The adaptive controller's ceiling.
    pub max_concurrent_parts: usize,
    /// Bytes per second shared by all uploads; None = unlimited.
    pub bandwidth_limit: Option<u64>,
    pub max_attempts: u32,
    /// Some(interval) forces the polling watcher.
    pub poll_interval: Option<Duration>,
    /// Files up to this many bytes go in one request; 0 = always multipart.
    pub direct_upload_max: u64,
    /// An upload in flight that sends nothing this long is stalled: shown
    /// so, a `/healthz` reason, a `stalled` event and a warning.
    pub stall_after: Duration,
    /// `run` logs here (rotated by size) instead of stderr; `--log-file` wins.
    pub log_file: Option<PathBuf>,
    /// Which due file starts next.
    pub order: Order,
    /// `[[agent.schedule]]` windows, first match wins.
    pub schedule: Vec<Window>,
    /// GET after successful upload cycles (at most once a minute), `<url>/fail` after failures.
    pub healthcheck_url: Option<Url>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subfolders {
    Preserve,
    Flatten,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUpload {
    Keep,
    Delete,
    Move(PathBuf),
}

/// A watch root, by its place in [`Settings::watches`] (the order of the
/// `[[watch]]` tables): how the agent, the watcher and settle refer to a
/// root. Only the journal keys records by the root's path ([`WatchSettings::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootId(pub usize);

impl std::fmt::Display for RootId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "watch[{}]", self.0)
    }
}

#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Canonical absolute path of the watched folder.
    pub path: PathBuf,
    /// Normalised: no leading/trailing `/`, no empty or `..` segments.
    pub remote_folder: String,
    pub include: GlobSet,
    pub include_patterns: Vec<String>,
    pub exclude: GlobSet,
    pub exclude_patterns: Vec<String>,
    /// `exclude_from`: gitignore-style lines read from a file.
    pub exclude_from: Option<ExcludeFile>,
    pub recursive: bool,
    pub subfolders: Subfolders,
    pub tags: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub random_prefix: bool,
    pub after_upload: AfterUpload,
    pub settle: Duration,
    /// Higher first, across roots.
    pub priority: i64,
    /// What happens to the files present when the root is first watched.
    pub existing: Existing,
    /// Files whose mtime is older than this are skipped (None: no limit).
    pub max_age: Option<Duration>,
    /// An uploaded file that changes is reported (failed, with why) and
    /// never sent again unless `retry` says so (rclone's `--immutable`).
    pub immutable: bool,
    /// A file renamed locally after its upload has its remote file renamed
    /// (same remote folder) instead of being sent again.
    pub mirror_renames: bool,
    /// `mirror_deletes = true`: the remote copy of a file deleted locally
    /// is deleted too, after a grace period and under a brake (None: off).
    pub mirror_deletes: Option<MirrorDeletes>,
    /// Files smaller than this are left out (rclone's `--min-size`).
    pub min_size: Option<u64>,
    /// Files larger than this are left out (rclone's `--max-size`).
    pub max_size: Option<u64>,
    /// A file uploaded twice within this long (it keeps changing: a log, a
    /// file appended to) is shown `growing` and sent again only this long
    /// after its last upload (None: every settled version goes).
    pub min_interval: Option<Duration>,
    /// Upload sets (`sets = "folder"`); None: every file on its own.
    pub sets: Option<SetRules>,
    /// With `[fleet]`: the name every node gives this folder (mount paths differ).
    pub share: Option<String>,
    /// Programs run after each upload and each complete set.
    pub hooks: Hooks,
}

/// `[[watch]] mirror_deletes = true` with its grace period and brake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorDeletes {
    /// A file must stay missing this long before its remote copy is
    /// deleted (`delete_after`, default 1 h): a save that deletes and
    /// writes again, or a rename seen as a delete and a create, is not a delete.
    pub after: Duration,
    /// At most this many remote deletes per hour (`max_delete`, default
    /// 100); beyond it deletes stop until `release --deletes`.
    pub max_per_hour: u32,
}

/// `delete_after` when the config does not say.
pub const DEFAULT_DELETE_AFTER: Duration = Duration::from_secs(3600);
/// `max_delete` when the config does not say.
pub const DEFAULT_MAX_DELETE: u32 = 100;

/// `[[watch]] existing`: upload what is already there, or start from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Upload,
    /// Files present when the root is first watched are recorded as
    /// skipped and never uploaded unless they change later.
    Skip,
}

/// `[agent] order`: which due file starts next (after `priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// In the order they became ready.
    #[default]
    Fifo,
    /// Oldest modification time first.
    Oldest,
    Newest,
    Smallest,
    Largest,
    /// By path.
    Name,
}

impl WatchSettings {
    /// Does a root-relative path (with `/` separators) pass include/exclude?
    /// Built-in temp-file excludes are applied separately by the scanner.
    pub fn matches(&self, relative: &str) -> bool {
        self.include.is_match(relative)
            && !self.exclude.is_match(relative)
            && !self.exclude_from.as_ref().is_some_and(|e| e.excludes(relative))
    }

    /// The set at folder `path` (absolute) of a root with sets: (the
    /// root's journal key, the set's root-relative name). None: no root
    /// with sets holds it.
    pub fn set_at(&self, path: &Path) -> Option<(String, String)> {
        self.sets.as_ref()?;
        let rel = path.strip_prefix(&self.path).ok()?;
        let rel = rel.to_str()?.replace(std::path::MAIN_SEPARATOR, "/");
        (!rel.is_empty()).then(|| (self.key(), rel))
    }

    /// The root's key in the journal (its canonical path as text).
    pub fn key(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

/// Where the config file is: `--config`, else `$AUTORENDER_SYNC_CONFIG`, else
/// the platform config dir. The bool says whether the user named it
/// explicitly (then a missing file is an error rather than "use defaults").
pub fn resolve_config_path(flag: Option<&Path>) -> Result<(PathBuf, bool), String> {
    if let Some(p) = flag {
        return Ok((p.to_path_buf(), true));
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Ok((PathBuf::from(p), true));
    }
    let dirs = project_dirs().ok_or_else(|| {
        "cannot find a home directory for the default config path; pass --config PATH".to_string()
    })?;
    Ok((dirs.config_dir().join("config.toml"), false))
}

pub fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("io", "autorender", "autorender-sync")
}

impl Settings {
    /// The settings of root `id`.
    pub fn root(&self, id: RootId) -> &WatchSettings {
        &self.watches[id.0]
    }

    /// Every root, in config order.
    pub fn root_ids(&self) -> impl Iterator<Item = RootId> + use<> {
        (0..self.watches.len()).map(RootId)
    }

    /// Loads the config at `path`. A missing file that was not named
    /// explicitly yields the defaults (no watches), so `upload` and `check`
    /// work on a fresh machine.
    pub fn load(path: &Path, explicit: bool) -> Result<Settings, ConfigErrors> {
        match crate::private::read_text(path) {
            Ok(text) => {
                if let Err(e) = crate::private::config_file(path) {
                    return Err(ConfigErrors(vec![ConfigError {
                        file: path.display().to_string(),
                        line: None,
                        key: String::new(),
                        message: e.to_string(),
                    }]));
                }
                Settings::parse(&text, &path.display().to_string(), Some(path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Settings::parse("", "(defaults)", None)
            }
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: path.display().to_string(),
                line: None,
                key: String::new(),
                message: if e.kind() == std::io::ErrorKind::NotFound {
                    "the config file does not exist; create one with `autorender-sync init` or fix --config / AUTORENDER_SYNC_CONFIG".into()
                } else {
                    format!("cannot read the config file: {e}")
                },
            }])),
        }
    }

    /// Parses and validates config text. `file` names it in messages.
    pub fn parse(text: &str, file: &str, source: Option<&Path>) -> Result<Settings, ConfigErrors> {
        let mut w = Walker {
            src: text,
            file: file.to_string(),
            errors: Vec::new(),
        };
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let line = e.span().map(|s| w.line(&s));
                let message = e.message().trim().to_string();
                return Err(ConfigErrors(vec![ConfigError {
                    file: file.to_string(),
                    line,
                    key: String::new(),
                    message: format!("not valid TOML: {message}"),
                }]));
            }
        };
        let mut settings = w.document(doc.get_ref(), source);
        if w.errors.is_empty() {
            settings.written = std::sync::Arc::new(text.parse().unwrap_or_default());
            Ok(settings)
        } else {
            w.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(ConfigErrors(w.errors))
        }
    }
}
