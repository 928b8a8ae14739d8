//! API key lookup and redaction. The key lives only inside [`ApiKey`], whose
//! `Debug`/`Display` never show it, so it cannot leak through logs by accident.
//! Sources, in order: env var, systemd credential, then the key file or
//! (`api_key_source = "keyring"`) the OS keyring ([`keyring`]).

pub mod keyring;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::ApiSettings;

/// systemd's `LoadCredential=` name for the key.
pub const CREDENTIAL_NAME: &str = "autorender-api-key";

#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }
    /// The only way to read the key: for building the auth header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Keys in use by this process: text from outside (a service's error body,
/// which may echo the request's headers back) is passed through [`redact`]
/// before it is logged, shown or stored.
static IN_USE: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Adds `key` to the keys [`redact`] hides (a client calls this once).
pub fn hide(key: &ApiKey) {
    // Keys shorter than 8 characters would blank out ordinary words.
    if key.0.len() < 8 {
        return;
    }
    let mut keys = IN_USE.write().unwrap_or_else(|e| e.into_inner());
    if !keys.contains(&key.0) && keys.len() < 16 {
        keys.push(key.0.clone());
    }
}

/// `text` with every key in use replaced by `<redacted>`.
pub fn redact(text: &str) -> String {
    let keys = IN_USE.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for k in keys.iter() {
        if out.contains(k.as_str()) {
            out = out.replace(k.as_str(), "<redacted>");
        }
    }
    out
}

/// Where the key was found, for `check` to report (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    SystemdCredential(PathBuf),
    File(PathBuf),
    /// The OS keyring entry (service `autorender-sync`) of this account.
    Keyring(String),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(name) => write!(f, "environment variable {name}"),
            KeySource::SystemdCredential(p) => write!(f, "systemd credential {}", p.display()),
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Keyring(account) => write!(
                f,
                "the OS keyring (service \"{}\", account \"{account}\")",
                keyring::SERVICE
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no API key found: set the environment variable {env} (export {env}=…), or point `api.api_key_file` in the config at a file holding the key"
    )]
    Missing { env: String },
    #[error(
        "a service started at login does not inherit this shell's environment, so it would not see {env}; \
         `autorender-sync autostart install --store-key` saves the key to a file only you can read and points \
         `api.api_key_file` at it (`--store-key keyring`: into the OS keyring, with api_key_source = \"keyring\"), \
         or set `api_key_file` in the config's [api] table yourself"
    )]
    NotForService { env: String },
    #[error("cannot read the API key file {path}: {source}; fix its path or permissions (chmod 600)")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("the API key from {0} is empty; put the key in it")]
    Empty(KeySource),
    #[error(
        "the OS keyring holds no API key for service \"{service}\", account \"{account}\": store it with \
         `autorender-sync autostart install --store-key keyring` (from ${env_hint}), or `secret-tool store \
         --label=autorender-sync service {service} username {account}` (macOS: `security add-generic-password \
         -s {service} -a {account} -w`)",
        service = keyring::SERVICE,
        env_hint = crate::config::DEFAULT_KEY_ENV
    )]
    NotInKeyring { account: String },
    #[error("cannot read the API key from the OS keyring (account \"{account}\"): {why}")]
    Keyring { account: String, why: String },
}

/// Finds the key and logs its warnings (a key file readable by others, …):
/// what every command that sends does first.
pub fn lookup_logged(api: &ApiSettings) -> Result<(ApiKey, KeySource), KeyError> {
    let (key, source, warnings) = lookup(api)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    tracing::debug!("API key from {source}");
    Ok((key, source))
}

/// Finds the key. Returns it with its source and any warnings to log.
pub fn lookup(api: &ApiSettings) -> Result<(ApiKey, KeySource, Vec<String>), KeyError> {
    let mut warnings = Vec::new();
    if let Some(v) = std::env::var_os(&api.api_key_env) {
        let source = KeySource::Env(api.api_key_env.clone());
        let key = v.to_string_lossy().trim().to_string();
        if key.is_empty() {
            return Err(KeyError::Empty(source));
        }
        return Ok((ApiKey(key), source, warnings));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(CREDENTIAL_NAME);
        if path.is_file() {
            let key = read_key(&path)?;
            return Ok((key, KeySource::SystemdCredential(path), warnings));
        }
    }
    if let Some(account) = &api.keyring_account {
        let key = keyring::read(account)?;
        return Ok((key, KeySource::Keyring(account.clone()), warnings));
    }
    if let Some(path) = &api.api_key_file {
        if let Some(w) = permission_warning(path) {
            warnings.push(w);
        }
        let key = read_key(path)?;
        return Ok((key, KeySource::File(path.clone()), warnings));
    }
    Err(KeyError::Missing {
        env: api.api_key_env.clone(),
    })
}

/// What a service started at login will use: it does not inherit this
/// shell's environment, so only the key file (or a systemd credential the
/// unit loads) counts. Returns where, or why it would find none.
pub fn service_source(api: &ApiSettings) -> Result<KeySource, KeyError> {
    if let Some(account) = &api.keyring_account {
        return keyring::read(account).map(|_| KeySource::Keyring(account.clone()));
    }
    match &api.api_key_file {
        Some(path) => read_key(path).map(|_| KeySource::File(path.clone())),
        None => Err(KeyError::NotForService {
            env: api.api_key_env.clone(),
        }),
    }
}

/// Stores `key` in a file readable by its owner only (0600 on Unix).
pub fn write_key_file(path: &Path, key: &ApiKey) -> std::io::Result<()> {
    write_private(path, key.expose())
}

/// Writes `text` and a newline to `path`, readable by its owner only (0600
/// on Unix, also when the file was there before): for secrets (the API
/// key, the control token).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    #[cfg(unix)]
    {
        // An existing file keeps its mode through open(): set it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    writeln!(f, "{text}")?;
    f.sync_all()
}

fn read_key(path: &Path) -> Result<ApiKey, KeyError> {
    let text = crate::private::read_text(path).map_err(|source| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(KeyError::Empty(KeySource::File(path.to_path_buf())));
    }
    Ok(ApiKey(key.to_string()))
}

#[cfg(unix)]
fn permission_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "API key file {} is readable by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(not(unix))]
fn permission_warning(_path: &Path) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_redacted() {
        let k = ApiKey::new("sk_live_secret");
        assert!(!format!("{k:?}").contains("secret"));
        assert!(!format!("{k}").contains("secret"));
    }

    #[test]
    fn a_key_echoed_back_is_redacted() {
        hide(&ApiKey::new("sk_echoed_0123456789"));
        assert_eq!(
            redact("bad header Authorization: Bearer sk_echoed_0123456789 (x-api-key sk_echoed_0123456789)"),
            "bad header Authorization: Bearer <redacted> (x-api-key <redacted>)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_file_warns() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "abc\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(permission_warning(&p).unwrap().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(permission_warning(&p).is_none());
        assert_eq!(read_key(&p).unwrap().expose(), "abc");
    }
}
