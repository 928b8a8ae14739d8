//! Configuration: TOML text → one validated [`Settings`], built once and shared
//! by every command (so `check` sees exactly what `run` would).
//!
//! The document is walked by hand over toml's spanned tree instead of through
//! serde, so that *every* problem is reported at once, each with its key and
//! line, and unknown keys get a "did you mean" hint. Nothing here touches the
//! network; the only I/O is resolving paths (`~`, existence, canonical form).

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

pub const DEFAULT_ENDPOINT: &str = "https://upload.autorender.io";
pub const DEFAULT_KEY_ENV: &str = "AUTORENDER_API_KEY";
pub const CONFIG_ENV: &str = "AUTORENDER_SYNC_CONFIG";

/// The commented reference config; `init` writes exactly this text.
pub const EXAMPLE_CONFIG: &str = include_str!("../example-config.toml");

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
    pub watches: Vec<WatchSettings>,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub endpoint: Url,
    pub api_key_env: String,
    pub api_key_file: Option<PathBuf>,
    pub request_timeout: Duration,
    pub url_ttl: Duration,
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
    pub concurrent_parts: usize,
    /// Bytes per second shared by all uploads; None = unlimited.
    pub bandwidth_limit: Option<u64>,
    pub max_attempts: u32,
    /// Some(interval) forces the polling watcher.
    pub poll_interval: Option<Duration>,
    /// Files up to this many bytes go in one request; 0 = always multipart.
    pub direct_upload_max: u64,
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
    pub recursive: bool,
    pub subfolders: Subfolders,
    pub tags: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub random_prefix: bool,
    pub after_upload: AfterUpload,
    pub settle: Duration,
}

impl WatchSettings {
    /// Does a root-relative path (with `/` separators) pass include/exclude?
    /// Built-in temp-file excludes are applied separately by the scanner.
    pub fn matches(&self, relative: &str) -> bool {
        self.include.is_match(relative) && !self.exclude.is_match(relative)
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
    /// Loads the config at `path`. A missing file that was not named
    /// explicitly yields the defaults (no watches), so `upload` and `check`
    /// work on a fresh machine.
    pub fn load(path: &Path, explicit: bool) -> Result<Settings, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Settings::parse(&text, &path.display().to_string(), Some(path)),
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
        let settings = w.document(doc.get_ref(), source);
        if w.errors.is_empty() {
            Ok(settings)
        } else {
            w.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(ConfigErrors(w.errors))
        }
    }
}

type Span = Range<usize>;
type Item<'a, 'i> = &'a Spanned<DeValue<'i>>;

struct Walker<'s> {
    src: &'s str,
    file: String,
    errors: Vec<ConfigError>,
}

const TOP_KEYS: &[&str] = &["api", "agent", "watch"];
const API_KEYS: &[&str] = &[
    "endpoint",
    "api_key_env",
    "api_key_file",
    "request_timeout",
    "url_ttl",
    "case_insensitive_remote",
];
/// `agent.direct_upload_max` default and ceiling.
const DEFAULT_DIRECT: u64 = 8 * 1024 * 1024;
const MAX_DIRECT: u64 = 100 * 1024 * 1024;

const AGENT_KEYS: &[&str] = &[
    "state_dir",
    "settle",
    "rescan_interval",
    "concurrent_files",
    "concurrent_parts",
    "bandwidth_limit",
    "max_attempts",
    "poll_interval",
    "direct_upload_max",
];
const WATCH_KEYS: &[&str] = &[
    "path",
    "remote_folder",
    "include",
    "exclude",
    "recursive",
    "subfolders",
    "tags",
    "metadata",
    "random_prefix",
    "after_upload",
    "move_to",
    "settle",
];

impl<'s> Walker<'s> {
    fn line(&self, span: &Span) -> usize {
        let end = span.start.min(self.src.len());
        self.src[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn err(&mut self, key: &str, span: Option<Span>, message: impl Into<String>) {
        let line = span.map(|s| self.line(&s));
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Splits a table into known fields, reporting unknown ones.
    fn fields<'a, 'i>(
        &mut self,
        table: &'a DeTable<'i>,
        prefix: &str,
        allowed: &[&str],
    ) -> HashMap<String, Item<'a, 'i>> {
        let mut out = HashMap::new();
        for (k, v) in table.iter() {
            let name: &str = k.get_ref();
            let full = join_key(prefix, name);
            if allowed.contains(&name) {
                out.insert(name.to_string(), v);
            } else {
                let hint = allowed
                    .iter()
                    .map(|a| (strsim::jaro_winkler(a, name), *a))
                    .filter(|(score, _)| *score > 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, a)| format!("; did you mean `{}`?", join_key(prefix, a)))
                    .unwrap_or_else(|| format!("; known keys here: {}", allowed.join(", ")));
                self.err(&full, Some(k.span()), format!("unknown key{hint}"));
            }
        }
        out
    }

    fn table<'a, 'i>(&mut self, item: Item<'a, 'i>, key: &str) -> Option<&'a DeTable<'i>> {
        match item.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(
                    key,
                    Some(item.span()),
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string(&mut self, f: &HashMap<String, Item>, name: &str, key: &str) -> Option<(String, Span)> {
        let item = f.get(name)?;
        match item.get_ref() {
            DeValue::String(s) => Some((s.to_string(), item.span())),
            other => {
                self.err(
                    key,
                    Some(item.span()),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, f: &HashMap<String, Item>, name: &str, key: &str) -> Option<bool> {
        let item = f.get(name)?;
        match item.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.err(
                    key,
                    Some(item.span()),
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, f: &HashMap<String, Item>, name: &str, key: &str, min: i64) -> Option<i64> {
        let item = f.get(name)?;
        let parsed = match item.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                self.err(
                    key,
                    Some(item.span()),
                    format!("expected a whole number, found {}", other.type_str()),
                );
                return None;
            }
        };
        match parsed {
            Some(v) if v >= min => Some(v),
            _ => {
                self.err(key, Some(item.span()), format!("must be a whole number ≥ {min}"));
                None
            }
        }
    }

    fn duration(&mut self, f: &HashMap<String, Item>, name: &str, key: &str) -> Option<Duration> {
        let (text, span) = self.string(f, name, key)?;
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(key, Some(span), e);
                None
            }
        }
    }

    /// A duration where "off" or "0s" means disabled.
    fn optional_duration(
        &mut self,
        f: &HashMap<String, Item>,
        name: &str,
        key: &str,
    ) -> Option<Option<Duration>> {
        let (text, span) = self.string(f, name, key)?;
        if text.trim().eq_ignore_ascii_case("off") {
            return Some(None);
        }
        match parse_duration(&text) {
            Ok(d) if d.is_zero() => Some(None),
            Ok(d) => Some(Some(d)),
            Err(e) => {
                self.err(key, Some(span), format!("{e}, or \"off\""));
                None
            }
        }
    }

    fn strings(&mut self, f: &HashMap<String, Item>, name: &str, key: &str) -> Option<Vec<(String, Span)>> {
        let item = f.get(name)?;
        let DeValue::Array(items) = item.get_ref() else {
            self.err(
                key,
                Some(item.span()),
                format!(
                    "expected a list of strings like [\"a\", \"b\"], found {}",
                    item.get_ref().type_str()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for v in items.iter() {
            match v.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), v.span())),
                other => {
                    self.err(
                        key,
                        Some(v.span()),
                        format!("list items must be strings, found {}", other.type_str()),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn path(&mut self, text: &str, span: &Span, key: &str) -> Option<PathBuf> {
        match expand_tilde(text) {
            Ok(p) if p.is_absolute() => Some(p),
            Ok(_) => {
                self.err(
                    key,
                    Some(span.clone()),
                    format!("\"{text}\" is a relative path; write an absolute path or one starting with ~/"),
                );
                None
            }
            Err(e) => {
                self.err(key, Some(span.clone()), e);
                None
            }
        }
    }

    fn document(&mut self, doc: &DeTable, source: Option<&Path>) -> Settings {
        let top = self.fields(doc, "", TOP_KEYS);
        let empty = DeTable::new();
        let api_t = match top.get("api") {
            Some(item) => self.table(item, "api").unwrap_or(&empty),
            None => &empty,
        };
        let agent_t = match top.get("agent") {
            Some(item) => self.table(item, "agent").unwrap_or(&empty),
            None => &empty,
        };
        let api = self.api(api_t);
        let agent = self.agent(agent_t);
        let mut watches = Vec::new();
        let mut roots = Vec::new();
        if let Some(item) = top.get("watch") {
            match item.get_ref() {
                DeValue::Array(list) => {
                    for (i, entry) in list.iter().enumerate() {
                        let key = format!("watch[{i}]");
                        if let Some(t) = self.table(entry, &key) {
                            let (root, w) = self.watch(t, &key, entry.span(), agent.settle);
                            if let Some((root, path_span)) = root {
                                roots.push((i, root, path_span));
                            }
                            watches.extend(w);
                        }
                    }
                }
                other => self.err(
                    "watch",
                    Some(item.span()),
                    format!(
                        "expected [[watch]] entries (an array of tables), found {}",
                        other.type_str()
                    ),
                ),
            }
        }
        self.check_overlaps(&roots);
        Settings {
            source: source.map(Path::to_path_buf),
            api,
            agent,
            watches,
        }
    }

    fn api(&mut self, t: &DeTable) -> ApiSettings {
        let f = self.fields(t, "api", API_KEYS);
        let endpoint = match self.string(&f, "endpoint", "api.endpoint") {
            Some((text, span)) => match check_endpoint(&text) {
                Ok(url) => url,
                Err(e) => {
                    self.err("api.endpoint", Some(span), e);
                    Url::parse(DEFAULT_ENDPOINT).expect("default endpoint is a URL")
                }
            },
            None => Url::parse(DEFAULT_ENDPOINT).expect("default endpoint is a URL"),
        };
        let api_key_env = match self.string(&f, "api_key_env", "api.api_key_env") {
            Some((name, span)) => {
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    self.err(
                        "api.api_key_env",
                        Some(span),
                        "must be the name of an environment variable, e.g. \"AUTORENDER_API_KEY\"",
                    );
                }
                name
            }
            None => DEFAULT_KEY_ENV.to_string(),
        };
        let api_key_file = self
            .string(&f, "api_key_file", "api.api_key_file")
            .and_then(|(text, span)| self.path(&text, &span, "api.api_key_file"));
        let request_timeout = self
            .duration(&f, "request_timeout", "api.request_timeout")
            .unwrap_or(Duration::from_secs(60));
        if request_timeout.is_zero() {
            self.err(
                "api.request_timeout",
                f.get("request_timeout").map(|i| i.span()),
                "must be more than 0s",
            );
        }
        let url_ttl = self
            .duration(&f, "url_ttl", "api.url_ttl")
            .unwrap_or(Duration::from_secs(3600));
        if url_ttl < Duration::from_secs(60) && f.contains_key("url_ttl") {
            self.err(
                "api.url_ttl",
                f.get("url_ttl").map(|i| i.span()),
                "must be at least 60s; presigned URLs that expire sooner restart large uploads needlessly",
            );
        }
        ApiSettings {
            endpoint,
            api_key_env,
            api_key_file,
            request_timeout,
            url_ttl,
            case_insensitive_remote: self
                .boolean(&f, "case_insensitive_remote", "api.case_insensitive_remote")
                .unwrap_or(false),
        }
    }

    fn agent(&mut self, t: &DeTable) -> AgentSettings {
        let f = self.fields(t, "agent", AGENT_KEYS);
        let state_dir = self
            .string(&f, "state_dir", "agent.state_dir")
            .and_then(|(text, span)| self.path(&text, &span, "agent.state_dir"))
            .unwrap_or_else(default_state_dir);
        let settle = self.settle(&f, "agent.settle").unwrap_or(Duration::from_secs(2));
        let rescan_interval = self
            .optional_duration(&f, "rescan_interval", "agent.rescan_interval")
            .unwrap_or(Some(Duration::from_secs(15 * 60)));
        let concurrent_files = self
            .integer(&f, "concurrent_files", "agent.concurrent_files", 1)
            .unwrap_or(2) as usize;
        let concurrent_parts = self
            .integer(&f, "concurrent_parts", "agent.concurrent_parts", 1)
            .unwrap_or(4) as usize;
        for (name, value) in [
            ("concurrent_files", concurrent_files),
            ("concurrent_parts", concurrent_parts),
        ] {
            if value > 64 {
                self.err(
                    &format!("agent.{name}"),
                    f.get(name).map(|i| i.span()),
                    "must be at most 64",
                );
            }
        }
        let bandwidth_limit = match self.string(&f, "bandwidth_limit", "agent.bandwidth_limit") {
            Some((text, span)) => parse_rate(&text).unwrap_or_else(|e| {
                self.err("agent.bandwidth_limit", Some(span), e);
                None
            }),
            None => None,
        };
        let max_attempts = self
            .integer(&f, "max_attempts", "agent.max_attempts", 1)
            .unwrap_or(10)
            .min(u32::MAX as i64) as u32;
        let poll_interval = self
            .optional_duration(&f, "poll_interval", "agent.poll_interval")
            .unwrap_or(None);
        let direct_upload_max = match self.string(&f, "direct_upload_max", "agent.direct_upload_max") {
            Some((text, span)) => match crate::units::parse_size(&text) {
                Ok(n) if n <= MAX_DIRECT => n,
                Ok(_) => {
                    self.err(
                        "agent.direct_upload_max",
                        Some(span),
                        "must be at most 100MiB (the service advises multipart above ~100 MB)",
                    );
                    DEFAULT_DIRECT
                }
                Err(e) => {
                    self.err("agent.direct_upload_max", Some(span), e);
                    DEFAULT_DIRECT
                }
            },
            None => DEFAULT_DIRECT,
        };
        AgentSettings {
            state_dir,
            settle,
            rescan_interval,
            concurrent_files,
            concurrent_parts,
            bandwidth_limit,
            max_attempts,
            poll_interval,
            direct_upload_max,
        }
    }

    fn settle(&mut self, f: &HashMap<String, Item>, key: &str) -> Option<Duration> {
        let d = self.duration(f, "settle", key)?;
        if d < Duration::from_millis(100) {
            self.err(
                key,
                f.get("settle").map(|i| i.span()),
                "must be at least 100ms, or half-written files could be taken as finished",
            );
        }
        Some(d)
    }

    fn watch(
        &mut self,
        t: &DeTable,
        key: &str,
        span: Span,
        default_settle: Duration,
    ) -> (Option<(PathBuf, Span)>, Option<WatchSettings>) {
        let f = self.fields(t, key, WATCH_KEYS);
        let k = |name: &str| format!("{key}.{name}");
        let before = self.errors.len();

        let mut path_span = span.clone();
        let path = match self.string(&f, "path", &k("path")) {
            Some((text, pspan)) => {
                path_span = pspan.clone();
                self.path(&text, &pspan, &k("path"))
                    .and_then(|p| match std::fs::metadata(&p) {
                        Ok(m) if m.is_dir() => match p.canonicalize() {
                            Ok(c) => Some(c),
                            Err(e) => {
                                self.err(
                                    &k("path"),
                                    Some(pspan),
                                    format!("cannot resolve {}: {e}", p.display()),
                                );
                                None
                            }
                        },
                        Ok(_) => {
                            self.err(
                                &k("path"),
                                Some(pspan),
                                format!("{} is not a folder", p.display()),
                            );
                            None
                        }
                        Err(e) => {
                            self.err(
                                &k("path"),
                                Some(pspan),
                                format!(
                                    "folder {} cannot be used ({e}); create it or fix the path",
                                    p.display()
                                ),
                            );
                            None
                        }
                    })
            }
            None => {
                if !f.contains_key("path") {
                    self.err(
                        &k("path"),
                        Some(span.clone()),
                        "missing; every [[watch]] needs the local folder to watch",
                    );
                }
                None
            }
        };
        let remote_folder = match self.string(&f, "remote_folder", &k("remote_folder")) {
            Some((text, rspan)) => match normalise_remote_folder(&text) {
                Ok(folder) => folder,
                Err(e) => {
                    self.err(&k("remote_folder"), Some(rspan), e);
                    String::new()
                }
            },
            None => {
                if !f.contains_key("remote_folder") {
                    self.err(
                        &k("remote_folder"),
                        Some(span.clone()),
                        "missing; set the workspace folder files go to, e.g. \"uploads/renders\"",
                    );
                }
                String::new()
            }
        };
        let (include, include_patterns) = self.globs(&f, "include", &k("include"), &["**/*"]);
        let (exclude, exclude_patterns) = self.globs(&f, "exclude", &k("exclude"), &[]);
        let recursive = self.boolean(&f, "recursive", &k("recursive")).unwrap_or(true);
        let subfolders = match self.string(&f, "subfolders", &k("subfolders")) {
            Some((v, s)) => match v.as_str() {
                "preserve" => Subfolders::Preserve,
                "flatten" => Subfolders::Flatten,
                _ => {
                    self.err(
                        &k("subfolders"),
                        Some(s),
                        format!("\"{v}\" is not one of \"preserve\", \"flatten\""),
                    );
                    Subfolders::Preserve
                }
            },
            None => Subfolders::Preserve,
        };
        let tags = self
            .strings(&f, "tags", &k("tags"))
            .map(|v| v.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        let metadata = match f.get("metadata") {
            Some(item) => match item.get_ref() {
                DeValue::Table(t) => self.metadata(t, &k("metadata")),
                other => {
                    self.err(
                        &k("metadata"),
                        Some(item.span()),
                        format!(
                            "expected a table like {{ source = \"farm-01\" }}, found {}",
                            other.type_str()
                        ),
                    );
                    serde_json::Map::new()
                }
            },
            None => serde_json::Map::new(),
        };
        let random_prefix = self
            .boolean(&f, "random_prefix", &k("random_prefix"))
            .unwrap_or(false);
        let move_to = self
            .string(&f, "move_to", &k("move_to"))
            .and_then(|(text, s)| self.path(&text, &s, &k("move_to")).map(|p| (p, s)));
        let after_upload = match self.string(&f, "after_upload", &k("after_upload")) {
            Some((v, s)) => {
                match v.as_str() {
                    "keep" => AfterUpload::Keep,
                    "delete" => AfterUpload::Delete,
                    "move" => match &move_to {
                        Some((p, _)) => AfterUpload::Move(p.clone()),
                        None => {
                            if !f.contains_key("move_to") {
                                self.err(&k("after_upload"), Some(s), "\"move\" needs `move_to = \"…\"`: the folder uploaded files are moved into");
                            }
                            AfterUpload::Keep
                        }
                    },
                    _ => {
                        self.err(
                            &k("after_upload"),
                            Some(s),
                            format!("\"{v}\" is not one of \"keep\", \"delete\", \"move\""),
                        );
                        AfterUpload::Keep
                    }
                }
            }
            None => AfterUpload::Keep,
        };
        let asked_move = f
            .get("after_upload")
            .is_some_and(|v| v.get_ref().as_str() == Some("move"));
        if let Some((_, s)) = &move_to
            && !asked_move
        {
            self.err(
                &k("move_to"),
                Some(s.clone()),
                "only used with after_upload = \"move\"; remove it or set after_upload = \"move\"",
            );
        }
        if let (Some(root), AfterUpload::Move(dest)) = (&path, &after_upload) {
            let dest_abs = dest.canonicalize().unwrap_or_else(|_| dest.clone());
            if dest_abs.starts_with(root) {
                let s = move_to.as_ref().map(|(_, s)| s.clone());
                self.err(&k("move_to"), s, "is inside the watched folder, so moved files would be seen again; choose a folder outside it");
            }
        }
        let settle = if f.contains_key("settle") {
            self.settle(&f, &k("settle")).unwrap_or(default_settle)
        } else {
            default_settle
        };
        if self.errors.len() != before {
            return (path.map(|p| (p, path_span)), None);
        }
        let Some(root) = path.clone() else {
            return (None, None);
        };
        let settings = WatchSettings {
            path: root,
            remote_folder,
            include,
            include_patterns,
            exclude,
            exclude_patterns,
            recursive,
            subfolders,
            tags,
            metadata,
            random_prefix,
            after_upload,
            settle,
        };
        (path.map(|p| (p, path_span)), Some(settings))
    }

    fn globs(
        &mut self,
        f: &HashMap<String, Item>,
        name: &str,
        key: &str,
        default: &[&str],
    ) -> (GlobSet, Vec<String>) {
        let patterns: Vec<(String, Option<Span>)> = match self.strings(f, name, key) {
            Some(list) => {
                if list.is_empty() && name == "include" {
                    self.err(key, f.get(name).map(|i| i.span()), "is empty, so nothing would ever be uploaded; remove it to include everything (\"**/*\")");
                }
                list.into_iter().map(|(s, sp)| (s, Some(sp))).collect()
            }
            None => default.iter().map(|s| (s.to_string(), None)).collect(),
        };
        let mut builder = GlobSetBuilder::new();
        for (pattern, span) in &patterns {
            match globset::GlobBuilder::new(pattern).literal_separator(true).build() {
                Ok(g) => {
                    builder.add(g);
                }
                Err(e) => self.err(
                    key,
                    span.clone(),
                    format!("invalid glob \"{pattern}\": {}", e.kind()),
                ),
            }
        }
        let set = builder
            .build()
            .unwrap_or_else(|_| GlobSetBuilder::new().build().expect("empty glob set builds"));
        (set, patterns.into_iter().map(|(p, _)| p).collect())
    }

    fn metadata(&mut self, t: &DeTable, key: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (k, v) in t.iter() {
            let name: &str = k.get_ref();
            if name == "sha256" {
                self.err(
                    &format!("{key}.sha256"),
                    Some(k.span()),
                    "is reserved: the agent sends the file's own sha256 there",
                );
                continue;
            }
            match to_json(v.get_ref()) {
                Some(j) => {
                    out.insert(name.to_string(), j);
                }
                None => self.err(
                    &format!("{key}.{name}"),
                    Some(v.span()),
                    "metadata values must be strings, numbers, booleans, or lists/tables of them",
                ),
            }
        }
        out
    }

    /// Roots are compared even for entries with other mistakes, so every
    /// problem shows up in one `check`.
    fn check_overlaps(&mut self, roots: &[(usize, PathBuf, Span)]) {
        for (n, (i, a, _)) in roots.iter().enumerate() {
            for (j, b, span) in roots.iter().skip(n + 1) {
                let msg = if a == b {
                    format!(
                        "watches the same folder as watch[{i}] ({}); merge the two entries",
                        a.display()
                    )
                } else if b.starts_with(a) || a.starts_with(b) {
                    format!(
                        "{} and watch[{i}]'s {} overlap, so files would be uploaded twice; use one root with include/exclude instead",
                        b.display(),
                        a.display()
                    )
                } else {
                    continue;
                };
                self.err(&format!("watch[{j}].path"), Some(span.clone()), msg);
            }
        }
    }
}

fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn to_json(v: &DeValue) -> Option<serde_json::Value> {
    Some(match v {
        DeValue::String(s) => serde_json::Value::String(s.to_string()),
        DeValue::Integer(i) => serde_json::Value::from(i64::from_str_radix(i.as_str(), i.radix()).ok()?),
        DeValue::Float(f) => serde_json::Value::from(f.as_str().parse::<f64>().ok()?),
        DeValue::Boolean(b) => serde_json::Value::Bool(*b),
        DeValue::Datetime(d) => serde_json::Value::String(d.to_string()),
        DeValue::Array(a) => {
            serde_json::Value::Array(a.iter().map(|x| to_json(x.get_ref())).collect::<Option<_>>()?)
        }
        DeValue::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, x)| Some((k.get_ref().to_string(), to_json(x.get_ref())?)))
                .collect::<Option<_>>()?,
        ),
    })
}

pub fn default_state_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.data_local_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("autorender-sync"))
}

/// Expands a leading `~` or `~/` to the home directory.
pub fn expand_tilde(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("is empty; write a path".into());
    }
    if text == "~" || text.starts_with("~/") {
        let home = directories::BaseDirs::new()
            .map(|b| b.home_dir().to_path_buf())
            .ok_or_else(|| "cannot expand ~: no home directory is known".to_string())?;
        return Ok(if text == "~" { home } else { home.join(&text[2..]) });
    }
    if text.starts_with('~') {
        return Err(format!(
            "\"{text}\": only ~/ (your own home) is expanded; write the full path"
        ));
    }
    Ok(PathBuf::from(text))
}

/// `/uploads//videos/` → `uploads/videos`; rejects `..` and `.` segments.
pub fn normalise_remote_folder(text: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" => continue,
            "." | ".." => {
                return Err(format!(
                    "\"{text}\" contains \"{seg}\"; remote folders are plain paths like \"uploads/videos\""
                ));
            }
            s if s.chars().any(|c| c.is_control() || c == '\\') => {
                return Err(format!("\"{text}\" contains a control character or backslash"));
            }
            s => parts.push(s),
        }
    }
    Ok(parts.join("/"))
}

/// An endpoint must parse, be http(s), and plain http only on loopback.
pub fn check_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("\"{text}\" is not a URL ({e})"))?;
    check_transport(&url).map_err(|e| format!("{e}; use https://"))?;
    Ok(url)
}

/// Plain `http://` is allowed only to loopback hosts; everything else must be https.
pub fn check_transport(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "plain http:// to {} would send data unencrypted; http is allowed only to 127.0.0.1/localhost",
            url.host_str().unwrap_or("?")
        )),
        other => Err(format!("scheme \"{other}\" is not supported")),
    }
}

pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigErrors> {
        Settings::parse(text, "test.toml", None)
    }

    #[test]
    fn example_config_parses() {
        let s = parse(EXAMPLE_CONFIG).expect("example-config.toml must parse");
        assert_eq!(s.api.endpoint.as_str(), "https://upload.autorender.io/");
        assert_eq!(s.agent.concurrent_parts, 4);
    }

    #[test]
    fn defaults() {
        let s = parse("").unwrap();
        assert_eq!(s.api.api_key_env, "AUTORENDER_API_KEY");
        assert_eq!(s.api.request_timeout, Duration::from_secs(60));
        assert_eq!(s.api.url_ttl, Duration::from_secs(3600));
        assert_eq!(s.agent.settle, Duration::from_secs(2));
        assert_eq!(s.agent.rescan_interval, Some(Duration::from_secs(900)));
        assert_eq!(s.agent.concurrent_files, 2);
        assert_eq!(s.agent.bandwidth_limit, None);
        assert_eq!(s.agent.max_attempts, 10);
        assert_eq!(s.agent.poll_interval, None);
        assert!(s.watches.is_empty());
    }

    #[test]
    fn full_watch() {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[agent]
settle = "3s"
bandwidth_limit = "40MiB/s"
[[watch]]
path = "{}"
remote_folder = "/uploads//renders/"
include = ["**/*.exr", "*.mp4"]
exclude = ["**/cache/**"]
subfolders = "flatten"
tags = ["render"]
metadata = {{ source = "farm-01", n = 3 }}
after_upload = "move"
move_to = "{}"
"#,
            dir.path().display(),
            out.path().display()
        );
        let s = parse(&text).unwrap();
        let w = &s.watches[0];
        assert_eq!(w.remote_folder, "uploads/renders");
        assert_eq!(w.settle, Duration::from_secs(3));
        assert!(w.matches("a/b/c.exr"));
        assert!(w.matches("x.mp4"));
        assert!(!w.matches("a/x.mp4"), "* must not cross /");
        assert!(!w.matches("cache/c.exr"));
        assert_eq!(w.subfolders, Subfolders::Flatten);
        assert_eq!(w.metadata["n"], 3);
        assert!(matches!(w.after_upload, AfterUpload::Move(_)));
        assert_eq!(s.agent.bandwidth_limit, Some(40 * 1024 * 1024));
    }

    #[test]
    fn every_problem_is_listed_with_key_and_line() {
        let text = r#"[api]
endpont = "https://x"
request_timeout = 5
[agent]
settle = "2 weeks"
concurrent_parts = 0
[[watch]]
path = "relative/dir"
remote_folder = "a/../b"
"#;
        let errs = parse(text).unwrap_err().0;
        let keys: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("api.endpont", Some(2)),
                ("api.request_timeout", Some(3)),
                ("agent.settle", Some(5)),
                ("agent.concurrent_parts", Some(6)),
                ("watch[0].path", Some(8)),
                ("watch[0].remote_folder", Some(9)),
            ]
        );
        assert!(errs[0].message.contains("did you mean `api.endpoint`"));
    }

    #[test]
    fn overlapping_and_move_rules() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let text = format!(
            "[[watch]]\npath = \"{0}\"\nremote_folder = \"a\"\nafter_upload = \"move\"\nmove_to = \"{1}\"\n[[watch]]\npath = \"{1}\"\nremote_folder = \"b\"\n[[watch]]\npath = \"{0}\"\nremote_folder = \"c\"\nafter_upload = \"move\"\n",
            dir.path().display(),
            sub.display()
        );
        let errs = parse(&text).unwrap_err().0;
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("watch[0].move_to") && m.contains("inside the watched folder")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("watch[2].after_upload") && m.contains("move_to")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.contains("overlap")), "{msgs:?}");
    }

    #[test]
    fn endpoint_transport_rules() {
        assert!(check_endpoint("http://127.0.0.1:8787").is_ok());
        assert!(check_endpoint("http://localhost:1").is_ok());
        assert!(check_endpoint("http://[::1]:1").is_ok());
        assert!(check_endpoint("https://upload.autorender.io").is_ok());
        assert!(
            check_endpoint("http://example.com")
                .unwrap_err()
                .contains("unencrypted")
        );
        assert!(check_endpoint("ftp://x").is_err());
        assert!(check_endpoint("not a url").is_err());
    }

    #[test]
    fn bad_toml_names_line() {
        let errs = parse("[api]\nendpoint = \n").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("not valid TOML"));
    }

    #[test]
    fn remote_folder_normalisation() {
        assert_eq!(normalise_remote_folder("/a//b/").unwrap(), "a/b");
        assert_eq!(normalise_remote_folder("").unwrap(), "");
        assert!(normalise_remote_folder("a/../b").is_err());
    }
}
