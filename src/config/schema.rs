//! The rules per table: which keys each table takes and what each must be.

use super::walker::Item;
use super::*;

const TOP_KEYS: &[&str] = &["api", "agent", "control", "notify", "fleet", "watch"];
const API_KEYS: &[&str] = &[
    "endpoint",
    "api_key_env",
    "api_key_file",
    "api_key_source",
    "keyring_account",
    "request_timeout",
    "url_ttl",
    "retry_after_max",
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
    "max_concurrent_parts",
    "bandwidth_limit",
    "max_attempts",
    "poll_interval",
    "direct_upload_max",
    "stall_after",
    "log_file",
    "healthcheck_url",
    "order",
    "schedule",
];

impl<'s> Walker<'s> {
    pub(super) fn document(&mut self, doc: &DeTable, source: Option<&Path>) -> Settings {
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
        let control_t = match top.get("control") {
            Some(item) => self.table(item, "control").unwrap_or(&empty),
            None => &empty,
        };
        let api = self.api(api_t);
        let agent = self.agent(agent_t);
        let control = self.control(control_t);
        let notify = top
            .get("notify")
            .map(|item| self.notify(item))
            .unwrap_or_default();
        let fleet = top
            .get("fleet")
            .and_then(|item| self.table(item, "fleet"))
            .and_then(|t| self.fleet(t));
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
        self.check_move_targets(&roots, &watches);
        let mut agent = agent;
        if let Some(fleet) = &fleet {
            self.check_shares(fleet, &watches, top.get("fleet").map(|i| i.span()));
            // A fleet sends every file multipart: a session can be fenced
            // and completed by whichever node holds it, while a direct
            // upload, once sent by a node that then stalls, cannot be
            // recalled (see journal/fleet).
            agent.direct_upload_max = 0;
        }
        Settings {
            source: source.map(Path::to_path_buf),
            api,
            agent,
            control,
            notify,
            fleet,
            watches,
            written: Default::default(),
        }
    }

    pub(super) fn api(&mut self, t: &DeTable) -> ApiSettings {
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
        let keyring = match self.string(&f, "api_key_source", "api.api_key_source") {
            Some((v, span)) => match v.as_str() {
                "auto" => false,
                "keyring" => true,
                _ => {
                    self.err(
                        "api.api_key_source",
                        Some(span),
                        format!("\"{v}\" is not one of \"auto\" (the environment, a systemd credential, then api_key_file), \"keyring\" (the OS keyring)"),
                    );
                    false
                }
            },
            None => false,
        };
        if keyring && api_key_file.is_some() {
            self.err(
                "api.api_key_file",
                f.get("api_key_file").map(|i| i.span()),
                "is not read when api_key_source = \"keyring\"; remove one of the two",
            );
        }
        let keyring_account = match self.string(&f, "keyring_account", "api.keyring_account") {
            Some((name, span)) => {
                if !keyring {
                    self.err(
                        "api.keyring_account",
                        Some(span),
                        "only used with api_key_source = \"keyring\"; add that or remove this",
                    );
                } else if name.trim().is_empty() {
                    self.err(
                        "api.keyring_account",
                        Some(span),
                        "is empty; name the keyring entry's account, e.g. \"studio-b\"",
                    );
                }
                name
            }
            None => crate::config::DEFAULT_KEYRING_ACCOUNT.to_string(),
        };
        let keyring_account = keyring.then_some(keyring_account);
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
        let retry_after_max = self
            .duration(&f, "retry_after_max", "api.retry_after_max")
            .unwrap_or(Duration::from_secs(300));
        if retry_after_max.is_zero() || retry_after_max > Duration::from_secs(24 * 3600) {
            self.err(
                "api.retry_after_max",
                f.get("retry_after_max").map(|i| i.span()),
                "must be between 1s and 24h",
            );
        }
        ApiSettings {
            endpoint,
            api_key_env,
            api_key_file,
            keyring_account,
            request_timeout,
            url_ttl,
            retry_after_max,
            case_insensitive_remote: self
                .boolean(&f, "case_insensitive_remote", "api.case_insensitive_remote")
                .unwrap_or(false),
        }
    }

    pub(super) fn agent(&mut self, t: &DeTable) -> AgentSettings {
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
        // Unset: the adaptive controller decides (up to max_concurrent_parts).
        let concurrent_parts = self
            .integer(&f, "concurrent_parts", "agent.concurrent_parts", 1)
            .map(|n| n as usize);
        let max_concurrent_parts = self
            .integer(&f, "max_concurrent_parts", "agent.max_concurrent_parts", 2)
            .map_or(crate::upload::adapt::DEFAULT_MAX, |n| n as usize);
        if max_concurrent_parts > crate::upload::adapt::HIGHEST_MAX {
            self.err(
                "agent.max_concurrent_parts",
                f.get("max_concurrent_parts").map(|i| i.span()),
                format!(
                    "must be at most {} (each request in flight holds up to 0.5 MiB of buffers)",
                    crate::upload::adapt::HIGHEST_MAX
                ),
            );
        }
        if concurrent_parts.is_some() && f.contains_key("max_concurrent_parts") {
            self.err(
                "agent.max_concurrent_parts",
                f.get("max_concurrent_parts").map(|i| i.span()),
                "is the adaptive controller's ceiling, but `concurrent_parts` fixes the count and turns \
                 adaptation off: remove one of the two",
            );
        }
        for (name, value) in [
            ("concurrent_files", concurrent_files),
            ("concurrent_parts", concurrent_parts.unwrap_or(1)),
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
                self.err("agent.bandwidth_limit", Some(span), e.to_string());
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
                    self.err("agent.direct_upload_max", Some(span), e.to_string());
                    DEFAULT_DIRECT
                }
            },
            None => DEFAULT_DIRECT,
        };
        let log_file = self
            .string(&f, "log_file", "agent.log_file")
            .and_then(|(text, span)| self.path(&text, &span, "agent.log_file"));
        let healthcheck_url = self.hook_url(&f, "healthcheck_url", "agent.healthcheck_url");
        let order = match self.string(&f, "order", "agent.order") {
            None => Order::Fifo,
            Some((t, span)) => match t.as_str() {
                "fifo" => Order::Fifo,
                "oldest" => Order::Oldest,
                "newest" => Order::Newest,
                "smallest" => Order::Smallest,
                "largest" => Order::Largest,
                "name" => Order::Name,
                _ => {
                    self.err(
                        "agent.order",
                        Some(span),
                        format!(
                            "\"{t}\" is not an order; use fifo, oldest, newest, smallest, largest or name"
                        ),
                    );
                    Order::Fifo
                }
            },
        };
        let schedule = f
            .get("schedule")
            .map(|item| self.schedule(item))
            .unwrap_or_default();
        let stall_after = self
            .duration(&f, "stall_after", "agent.stall_after")
            .unwrap_or(Duration::from_secs(60));
        if stall_after < Duration::from_secs(5) {
            self.err(
                "agent.stall_after",
                f.get("stall_after").map(|i| i.span()),
                "must be at least 5s (the rate shown is measured over 5 s; a part's first bytes can take that long on a busy link)",
            );
        }
        AgentSettings {
            stall_after,
            order,
            schedule,
            log_file,
            healthcheck_url,
            state_dir,
            settle,
            rescan_interval,
            concurrent_files,
            concurrent_parts,
            max_concurrent_parts,
            bandwidth_limit,
            max_attempts,
            poll_interval,
            direct_upload_max,
        }
    }

    pub(super) fn settle(&mut self, f: &HashMap<String, Item>, key: &str) -> Option<Duration> {
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
}
