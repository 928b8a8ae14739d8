//! The OS keyring as a key source (`api_key_source = "keyring"`): the
//! Secret Service on Linux and the BSDs (over the session's D-Bus: GNOME
//! Keyring, KWallet, KeePassXC), the Keychain on macOS, the Credential
//! Manager on Windows, through the `keyring` crate. One entry: service
//! [`SERVICE`], account `api.keyring_account` (default `api-key`).

use super::{ApiKey, KeyError};

/// The keyring entry's service name (`secret-tool … service autorender-sync`).
pub const SERVICE: &str = "autorender-sync";

/// Reads the key stored under `account`.
pub fn read(account: &str) -> Result<ApiKey, KeyError> {
    let entry = entry(account)?;
    match entry.get_password() {
        Ok(text) => {
            let key = text.trim();
            if key.is_empty() {
                Err(KeyError::Empty(super::KeySource::Keyring(account.to_string())))
            } else {
                Ok(ApiKey(key.to_string()))
            }
        }
        Err(keyring::Error::NoEntry) => Err(KeyError::NotInKeyring {
            account: account.to_string(),
        }),
        Err(e) => Err(unavailable(account, &e)),
    }
}

/// Stores `key` under `account` (replacing what was there).
pub fn store(account: &str, key: &ApiKey) -> Result<(), KeyError> {
    entry(account)?
        .set_password(key.expose())
        .map_err(|e| unavailable(account, &e))
}

fn entry(account: &str) -> Result<keyring::Entry, KeyError> {
    keyring::Entry::new(SERVICE, account).map_err(|e| unavailable(account, &e))
}

/// The keyring could not be asked: why, in words that lead to the fix.
fn unavailable(account: &str, e: &keyring::Error) -> KeyError {
    let why = match e {
        keyring::Error::NoDefaultStore
        | keyring::Error::NoStorageAccess(_)
        | keyring::Error::PlatformFailure(_) => {
            if cfg!(any(target_os = "macos", windows)) {
                format!("the OS keyring cannot be reached ({e})")
            } else {
                format!(
                    "no Secret Service answers on this session's D-Bus ({e}); log in to a desktop session (GNOME \
                     Keyring, KWallet or KeePassXC unlock it), or use api_key_file on a machine without one"
                )
            }
        }
        other => other.to_string(),
    };
    KeyError::Keyring {
        account: account.to_string(),
        why: super::redact(&why),
    }
}
