//! The agent's own files: the state dir (journal, its WAL and shared
//! memory, logs, manifests, the control address and token) is private.
//! The journal holds presigned part URLs, which let anyone who reads them
//! overwrite a part of an upload in flight; the control token steers the
//! agent. So the state dir is created 0700 and every file in it 0600,
//! whatever the umask; an existing one that others can write, or that
//! another user owns, is refused with the fix (as OpenSSH's StrictModes
//! refuses a shared `~/.ssh`), because whoever can write there can plant
//! a journal or symlinks for the agent to follow. Files are written to a
//! fresh temporary name (`O_EXCL | O_NOFOLLOW`) and renamed into place, so
//! a planted symlink is replaced, never followed.
//!
//! Also the bounded read of small text files given by the user (config,
//! key, CA): a regular file under [`READ_CAP`], opened without blocking, so
//! `/dev/zero` or a FIFO named by mistake is an error, not a hang.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The largest config, key or certificate file read.
pub const READ_CAP: u64 = 4 * 1024 * 1024;

/// A state dir or config another user could change under the agent, or
/// one that cannot be made private.
#[derive(Debug, thiserror::Error)]
// Elsewhere than unix only the I/O errors can happen.
#[cfg_attr(not(unix), allow(dead_code))]
pub enum PrivacyError {
    #[error("cannot {action} the state dir {}: {source}", .path.display())]
    Io {
        /// "create", "use", "make private".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state dir {} is not a folder; remove it or set `agent.state_dir` elsewhere", .0.display())]
    NotAFolder(PathBuf),
    #[error(
        "the state dir {} belongs to user {owner} , not to this user ({me}): another user could plant a journal \
         or links in it. Use a state dir of your own (`agent.state_dir`), or `chown -R {me} {}`",
        .path.display(), .path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "the state dir {} can be written by other users (mode {mode:o}): they could plant a journal or links for \
         the agent to follow. Run `chmod 700 {}` (and check what is in it), or set `agent.state_dir` elsewhere",
        .path.display(), .path.display()
    )]
    StateDirShared { path: PathBuf, mode: u32 },
    #[error(
        "the config {what} {} can be written by other users (mode {mode:o}): they could point the agent at any \
         folder. Run `chmod go-w {}`, or keep the config in a folder of your own",
        .path.display(), .path.display()
    )]
    ConfigShared {
        /// "file" or "folder".
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
}

/// Creates `dir` (0700, parents as needed) or checks the one there: owned
/// by this user and not writable by others. A dir others can read is
/// tightened to 0700 (earlier releases made it 0755).
pub fn state_dir(dir: &Path) -> Result<(), PrivacyError> {
    let io = |action: &'static str| {
        move |source: std::io::Error| PrivacyError::Io {
            action,
            path: dir.to_path_buf(),
            source,
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        if std::fs::symlink_metadata(dir).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io("create"))?;
        }
        let m = std::fs::metadata(dir).map_err(io("use"))?;
        if !m.is_dir() {
            return Err(PrivacyError::NotAFolder(dir.to_path_buf()));
        }
        let me = rustix::process::geteuid().as_raw();
        if m.uid() != me {
            return Err(PrivacyError::NotOwned {
                path: dir.to_path_buf(),
                owner: m.uid(),
                me,
            });
        }
        let mode = m.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(PrivacyError::StateDirShared {
                path: dir.to_path_buf(),
                mode,
            });
        }
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("make private"))?;
            tracing::info!(
                "made the state dir {} private (mode 700; it was {mode:o})",
                dir.display()
            );
        }
        tighten_files(dir, 0);
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(io("create"))?;
    Ok(())
}

/// Files in the state dir readable by others (from an earlier release, or
/// made under a loose umask by another tool) become 0600; symlinks are
/// neither followed nor changed.
#[cfg(unix)]
fn tighten_files(dir: &Path, depth: usize) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() && depth < 8 {
            let p = e.path();
            if let Ok(m) = std::fs::symlink_metadata(&p)
                && m.permissions().mode() & 0o077 != 0
            {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
            }
            tighten_files(&p, depth + 1);
        } else if kind.is_file() {
            tighten_file(&e.path());
        }
    }
}

/// Makes one state file 0600 without reading or writing it. Only a file
/// `lstat` finds open to others is touched (none, once the dir is ours),
/// and through an `O_PATH` descriptor: closing a real descriptor of the
/// journal or its `-shm` would drop the POSIX locks SQLite holds on them in
/// this process, and the next reader would take the journal for unused and
/// reset the shared memory under the agent (it died of SIGBUS).
#[cfg(unix)]
fn tighten_file(path: &Path) {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !m.is_file() || m.permissions().mode() & 0o077 == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let Ok(fd) = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return;
        };
        let Ok(st) = rustix::fs::fstat(&fd) else { return };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return;
        }
        // The descriptor's own file, whatever its name now points at.
        let by_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let _ = rustix::fs::chmod(by_fd.as_str(), Mode::from_raw_mode(st.st_mode & 0o600));
    }
    // Elsewhere by name: the dir is this user's and closed to others, so
    // only this user could swap the file between the lstat and here.
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (OFlags::empty(), Mode::empty());
        let _ = std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(m.permissions().mode() & 0o600),
        );
    }
}

/// Checks the folder of a config file and the file itself: not writable by
/// other users (they could point the agent at any folder, or `move_to` at
/// theirs). Who owns it is not judged: root reads a config a service user
/// owns, and a user reads one in `/etc`.
pub fn config_file(path: &Path) -> Result<(), PrivacyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for (what, p) in [("file", path), ("folder", dir)] {
            let Ok(m) = std::fs::metadata(p) else { continue };
            let mode = m.permissions().mode() & 0o7777;
            // A sticky world-writable folder (/tmp) lets nobody replace another's file.
            let sticky = what == "folder" && mode & 0o1000 != 0;
            if mode & 0o022 != 0 && !sticky {
                return Err(PrivacyError::ConfigShared {
                    what,
                    path: p.to_path_buf(),
                    mode,
                });
            }
        }
    }
    let _ = path;
    Ok(())
}

/// Writes `bytes` to `path` readable by its owner only (0600), through a
/// fresh temporary name in the same folder (`O_EXCL`, `O_NOFOLLOW`),
/// flushed, then renamed over `path`: a symlink planted at `path` is
/// replaced, never followed, and a reader never sees half a file.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    let _ = getrandom::fill(&mut suffix);
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a small text file named by the user: a regular file (checked on
/// the descriptor, opened without blocking) of at most [`READ_CAP`] bytes.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let f = options.open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO or folder); name the file itself",
        ));
    }
    if m.len() > READ_CAP {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than the {} MiB such a file may have; is this the right file?",
                m.len(),
                READ_CAP >> 20
            ),
        ));
    }
    let mut text = String::new();
    // A file that grows while it is read still stops at the cap.
    f.take(READ_CAP + 1).read_to_string(&mut text)?;
    if text.len() as u64 > READ_CAP {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "grew past the size cap while read",
        ));
    }
    Ok(text)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_state_dir_is_private_and_a_shared_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("a/state");
        state_dir(&s).unwrap();
        assert_eq!(mode(&s), 0o700);
        std::fs::write(s.join("journal.db"), b"x").unwrap();
        std::fs::set_permissions(s.join("journal.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        state_dir(&s).unwrap();
        assert_eq!(mode(&s), 0o700);
        assert_eq!(mode(&s.join("journal.db")), 0o600);
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = state_dir(&s).unwrap_err();
        assert!(
            matches!(e, PrivacyError::StateDirShared { mode: 0o1777, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("chmod 700"), "{e}");
    }

    #[test]
    fn a_private_write_replaces_a_planted_symlink_instead_of_following_it() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = d.path().join("control.json");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write(&planted, b"{}").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&planted).unwrap(), b"{}");
        assert_eq!(mode(&planted), 0o600);
        assert_eq!(mode(&victim) & 0o777, mode(&victim) & 0o777);
    }

    #[test]
    fn bounded_reads_refuse_devices_fifos_and_huge_files() {
        let e = read_text(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        crate::sys::mkfifo(&fifo);
        assert!(read_text(&fifo).is_err());
        let big = d.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(READ_CAP + 1)
            .unwrap();
        assert!(read_text(&big).unwrap_err().to_string().contains("MiB"));
        std::fs::write(d.path().join("ok"), "k = 1").unwrap();
        assert_eq!(read_text(&d.path().join("ok")).unwrap(), "k = 1");
    }
}
