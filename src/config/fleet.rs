//! The rules of `[fleet]` (several agents sharing one queue in PostgreSQL)
//! and of `[[watch]] share`.

use super::walker::{Item, Span};
use super::*;

const FLEET_KEYS: &[&str] = &["database", "database_env", "node", "lease", "ca_file"];

/// `[fleet] lease` when the config does not say.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
const MIN_LEASE: Duration = Duration::from_secs(2);
const MAX_LEASE: Duration = Duration::from_secs(3600);

/// Where the fleet's database address comes from. The address is a secret
/// (it may hold a password): never printed whole.
#[derive(Clone, PartialEq, Eq)]
pub enum FleetDb {
    /// `database = "postgres://…"`.
    Url(String),
    /// `database_env = "NAME"`: read when the agent starts.
    Env(String),
}

impl fmt::Debug for FleetDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetDb::Url(_) => write!(f, "Url(…)"),
            FleetDb::Env(name) => write!(f, "Env({name})"),
        }
    }
}

/// `[fleet]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    pub database: FleetDb,
    /// This agent's name in the fleet (default: the host name).
    pub node: String,
    /// A claim not renewed for this long may be taken over by another node.
    pub lease: Duration,
    /// PEM CA certificates trusted besides the public roots (a studio's own CA).
    pub ca_file: Option<PathBuf>,
}

impl FleetDb {
    /// The connection address, from the config or the environment.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            FleetDb::Url(u) => Ok(u.clone()),
            FleetDb::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
                _ => Err(format!(
                    "`fleet.database_env` names ${name}, which is not set; export it with the \
                     PostgreSQL address (postgres://user:password@host/db), or set `fleet.database`"
                )),
            },
        }
    }
}

/// Checks a PostgreSQL address: it parses, and a server off this machine is
/// reached over TLS (`sslmode=require`), since the address and every file
/// name would otherwise cross the network in clear.
pub fn check_database(url: &str) -> Result<(), String> {
    let cfg: tokio_postgres::Config = url.parse().map_err(|e| {
        format!("is not a PostgreSQL address ({e}); write it as postgres://user:password@host:5432/dbname")
    })?;
    if cfg.get_hosts().is_empty() {
        return Err("names no host; write it as postgres://user:password@host:5432/dbname".into());
    }
    let remote = cfg.get_hosts().iter().any(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => !is_loopback_name(name),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => false,
    });
    if remote && cfg.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Err(
            "reaches a server off this machine without TLS; add `?sslmode=require` (the server's \
             certificate is verified against the public roots)"
                .into(),
        );
    }
    Ok(())
}

fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Settings {
    /// Each root's key (its local path) and share name, for the fleet's queue.
    pub fn shares(&self) -> HashMap<String, String> {
        self.watches
            .iter()
            .filter_map(|w| Some((w.key(), w.share.clone()?)))
            .collect()
    }
}

impl Walker<'_> {
    pub(super) fn fleet(&mut self, t: &DeTable) -> Option<FleetSettings> {
        let f = self.fields(t, "fleet", FLEET_KEYS);
        let before = self.errors.len();
        let url = self.string(&f, "database", "fleet.database");
        let env = self.string(&f, "database_env", "fleet.database_env");
        let database = match (url, env) {
            (Some(_), Some((_, span))) => {
                self.err(
                    "fleet.database_env",
                    Some(span),
                    "give either `database` or `database_env`, not both",
                );
                None
            }
            (Some((url, span)), None) => {
                if let Err(e) = check_database(&url) {
                    self.err("fleet.database", Some(span), e);
                }
                Some(FleetDb::Url(url))
            }
            (None, Some((name, span))) => {
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    self.err(
                        "fleet.database_env",
                        Some(span),
                        "must be the name of an environment variable, e.g. \"AUTORENDER_SYNC_FLEET_DB\"",
                    );
                }
                Some(FleetDb::Env(name))
            }
            (None, None) => {
                self.err(
                    "fleet",
                    None,
                    "needs `database = \"postgres://…\"` or `database_env = \"AUTORENDER_SYNC_FLEET_DB\"`",
                );
                None
            }
        };
        let node = match self.string(&f, "node", "fleet.node") {
            Some((n, span)) => {
                let n = n.trim().to_string();
                if n.is_empty() || n.len() > 100 || n.chars().any(char::is_control) {
                    self.err(
                        "fleet.node",
                        Some(span),
                        "must be a short name for this machine (1–100 characters), e.g. \"render-07\"",
                    );
                }
                n
            }
            None => crate::sys::host_name().to_string(),
        };
        let lease = match self.duration(&f, "lease", "fleet.lease") {
            Some(d) if !(MIN_LEASE..=MAX_LEASE).contains(&d) => {
                let span = f.get("lease").map(|i| i.span());
                self.err(
                    "fleet.lease",
                    span,
                    "must be between 2s and 1h (a node that stops renewing is taken over after it)",
                );
                DEFAULT_LEASE
            }
            Some(d) => d,
            None => DEFAULT_LEASE,
        };
        let ca_file = match self.string(&f, "ca_file", "fleet.ca_file") {
            Some((text, span)) => match expand_tilde(&text) {
                Ok(p) if p.is_file() => Some(p),
                Ok(p) => {
                    self.err(
                        "fleet.ca_file",
                        Some(span),
                        format!(
                            "{} is not a file; give the PEM file of the CA that signed the database server's certificate",
                            p.display()
                        ),
                    );
                    None
                }
                Err(e) => {
                    self.err("fleet.ca_file", Some(span), e);
                    None
                }
            },
            None => None,
        };
        if self.errors.len() != before {
            return None;
        }
        Some(FleetSettings {
            database: database?,
            node,
            lease,
            ca_file,
        })
    }

    /// `[[watch]] share`: a plain name (it keys the files in the database).
    pub(super) fn share(&mut self, f: &HashMap<String, Item>, key: &str) -> Option<String> {
        let (name, span) = self.string(f, "share", key)?;
        let ok = !name.trim().is_empty()
            && name.len() <= 200
            && !name.chars().any(char::is_control)
            && name.trim() == name;
        if !ok {
            self.err(
                key,
                Some(span),
                "must be a name for this folder that every node uses, e.g. \"renders\"",
            );
        }
        Some(name)
    }

    /// With `[fleet]`, every root names its share, and no two the same.
    pub(super) fn check_shares(
        &mut self,
        _fleet: &FleetSettings,
        watches: &[WatchSettings],
        span: Option<Span>,
    ) {
        let mut seen = HashMap::new();
        for (i, w) in watches.iter().enumerate() {
            match &w.share {
                None => self.err(
                    &format!("watch[{i}].share"),
                    span.clone(),
                    format!(
                        "with [fleet], every [[watch]] needs `share`: the name all nodes give this folder \
                         (their mount paths may differ), e.g. share = \"renders\" for {}",
                        w.path.display()
                    ),
                ),
                Some(s) => {
                    if w.sets.as_ref().is_some_and(|r| r.manifest) {
                        self.err(
                            &format!("watch[{i}].set_manifest"),
                            span.clone(),
                            "is not available with [fleet] yet: every node that sees a set complete would \
                             send its own manifest; set it to false (the sets themselves work)",
                        );
                    }
                    if w.sets
                        .as_ref()
                        .is_some_and(|r| r.mhl == crate::config::Mhl::Write)
                    {
                        self.err(
                            &format!("watch[{i}].set_mhl"),
                            span.clone(),
                            "\"write\" is not available with [fleet] yet: every node that sees a set complete \
                             would add its own generation; use \"verify\"",
                        );
                    }
                    if w.mirror_deletes.is_some() {
                        self.err(
                            &format!("watch[{i}].mirror_deletes"),
                            span.clone(),
                            "is not available with [fleet] yet: a file one node misses (a mount that is late, \
                             a path another node names differently) would be deleted for all; turn it off",
                        );
                    }
                    if let Some(first) = seen.insert(s.clone(), i) {
                        self.err(
                            &format!("watch[{i}].share"),
                            span.clone(),
                            format!(
                                "\"{s}\" is already the share of watch[{first}]; each folder needs its own"
                            ),
                        );
                    }
                }
            }
        }
    }
}
