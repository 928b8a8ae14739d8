//! The few questions this program asks the operating system beyond `std`
//! and the anchored file calls of [`crate::anchor`]: this machine's name,
//! whether a folder can be written and how much room its disk has, and
//! whether SIGHUP was ignored when we started. The only module allowed
//! `unsafe` code (one `sigaction` query, which rustix offers no safe form
//! of); the rest of the crate is `#![deny(unsafe_code)]`.
//!
//! It sits on the lowest floor: anything may call it, it calls nothing of
//! ours.

use std::path::Path;

/// This machine's name, as events, watcher markers and fleet nodes report
/// it (read once).
pub fn host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        #[cfg(unix)]
        {
            let uname = rustix::system::uname();
            if let Ok(s) = uname.nodename().to_str()
                && !s.is_empty()
            {
                return s.to_string();
            }
        }
        std::env::var("COMPUTERNAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "localhost".to_string())
    })
}

/// Can this user create files in `dir`? (None: the platform cannot tell.)
pub fn writable(dir: &Path) -> Option<bool> {
    #[cfg(unix)]
    {
        Some(rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok())
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Bytes free for this user on the file system holding `path`. (None:
/// the platform or the path cannot tell.)
pub fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let fs = rustix::fs::statvfs(path).ok()?;
        Some(fs.f_bavail.saturating_mul(fs.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Was this process started with SIGHUP ignored (`nohup`)?
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into `old`, which is a plain C struct we own.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Makes a FIFO at `path` (for tests: a file whose reader would block).
#[cfg(all(test, unix))]
pub fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_has_a_name_and_a_temp_dir_room_and_write_access() {
        assert!(!host_name().is_empty());
        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            assert_eq!(writable(dir.path()), Some(true));
            assert_eq!(writable(&dir.path().join("gone")), Some(false));
            assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
            assert_eq!(free_bytes(&dir.path().join("gone")), None);
        }
    }
}
