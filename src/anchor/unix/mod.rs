//! The anchored calls on Unix: `openat2` or one `openat(O_NOFOLLOW)` per
//! component, through `rustix`; `moves` makes folders and moves files.

use super::*;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn refusal(e: Errno) -> io::Error {
    match e {
        Errno::LOOP | Errno::XDEV | Errno::MLINK => Refusal::Symlink.err(),
        e => e.into(),
    }
}

/// The root itself is never reached through a symlink either: a root
/// replaced by one (pointing at someone else's files) is refused like a
/// missing root. The configured path was canonicalised when the config
/// was read, so a root named through a link is its target.
fn open_root(root: &Path) -> io::Result<OwnedFd> {
    match rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::LOOP | Errno::NOTDIR)
            if std::fs::symlink_metadata(root).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            Err(io::Error::other(format!(
                "the watched folder {} has been replaced by a symbolic link; it is not followed",
                crate::text::path(root)
            )))
        }
        Err(e) => Err(e.into()),
    }
}

fn join(parts: &[&OsStr]) -> PathBuf {
    parts.iter().collect()
}

/// Opens `parts` below `dir` with `flags` (plus `O_NOFOLLOW`), refusing
/// symlinks at every step.
fn open_below(dir: BorrowedFd<'_>, parts: &[&OsStr], flags: OFlags) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if parts.is_empty() {
        return Ok(rustix::fs::openat(dir, ".", flags, Mode::empty())?);
    }
    #[cfg(target_os = "linux")]
    if resolve::usable() {
        use rustix::fs::ResolveFlags;
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(dir, join(parts), flags, Mode::empty(), how) {
            Ok(fd) => {
                resolve::record(true);
                return Ok(fd);
            }
            Err(Errno::NOSYS | Errno::PERM) => resolve::record(false),
            // A path component that is a symlink to a folder, with
            // O_DIRECTORY asked, can say "not a directory".
            Err(Errno::NOTDIR) => return Err(why_not_dir(dir, parts)),
            Err(e) => return Err(refusal(e)),
        }
    }
    let (last, folders) = parts.split_last().expect("not empty");
    let mut cur: Option<OwnedFd> = None;
    for name in folders {
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        let next = rustix::fs::openat(at, *name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::NOTDIR | Errno::LOOP => why_not_dir(at, &[name]),
            e => e.into(),
        })?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(dir, |f| f.as_fd());
    rustix::fs::openat(at, *last, flags, Mode::empty()).map_err(|e| match e {
        Errno::NOTDIR => why_not_dir(at, &[last]),
        e => refusal(e),
    })
}

/// ENOTDIR/ELOOP on the way: a symlink there, or a plain file where a folder was expected.
fn why_not_dir(dir: BorrowedFd<'_>, parts: &[&OsStr]) -> io::Error {
    let mut at: Option<OwnedFd> = None;
    for (i, name) in parts.iter().enumerate() {
        let here = at.as_ref().map_or(dir, |f| f.as_fd());
        match rustix::fs::statat(here, *name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                return Refusal::Symlink.err();
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory && i + 1 < parts.len() => {
                match rustix::fs::openat(here, *name, DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => at = Some(fd),
                    Err(e) => return refusal(e),
                }
            }
            Ok(_) => break,
            Err(e) => return e.into(),
        }
    }
    io::Error::from(Errno::NOTDIR)
}

/// The folder holding the last name, opened beneath the root, and that name.
fn parent<'p>(root: &Path, parts: &[&'p OsStr]) -> io::Result<(OwnedFd, &'p OsStr)> {
    let (last, folders) = parts.split_last().ok_or_else(|| Refusal::NotAFile.err())?;
    let r = open_root(root)?;
    let dir = open_below(r.as_fd(), folders, DIR_FLAGS)?;
    Ok((dir, last))
}

pub(super) fn id_of(st: &rustix::fs::Stat) -> FileId {
    FileId {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size as u64,
        mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
        ctime_ns: st.st_ctime as i128 * 1_000_000_000 + st.st_ctime_nsec as i128,
    }
}

fn kind_of(st: &rustix::fs::Stat) -> Kind {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Kind::File(id_of(st)),
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

pub fn open_file(root: &Path, parts: &[&OsStr]) -> io::Result<File> {
    if parts.is_empty() {
        return Err(Refusal::NotAFile.err());
    }
    let r = open_root(root)?;
    let fd = open_below(
        r.as_fd(),
        parts,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Refusal::NotAFile.err());
    }
    // Reads of a regular file never block on O_NONBLOCK anyway; clear it
    // so the descriptor behaves as an ordinary one.
    let fl = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK)?;
    Ok(File::from(fd))
}

pub fn stat(root: &Path, parts: &[&OsStr]) -> io::Result<Kind> {
    if parts.is_empty() {
        return Ok(kind_of(&rustix::fs::fstat(open_root(root)?)?));
    }
    let (dir, last) = parent(root, parts)?;
    Ok(kind_of(&rustix::fs::statat(
        &dir,
        last,
        AtFlags::SYMLINK_NOFOLLOW,
    )?))
}

pub fn list(root: &Path, parts: &[&OsStr]) -> io::Result<Vec<Listed>> {
    let r = open_root(root)?;
    let dir = open_below(r.as_fd(), parts, DIR_FLAGS)?;
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        use std::os::unix::ffi::OsStrExt;
        let name = OsStr::from_bytes(name).to_os_string();
        // A file's identity always comes from an lstat; the folder
        // handle keeps it beneath the root.
        let kind = match entry.file_type() {
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::RegularFile | FileType::Unknown => {
                match rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => kind_of(&st),
                    Err(_) => continue,
                }
            }
            _ => Kind::Other,
        };
        out.push(Listed { name, kind });
    }
    Ok(out)
}

fn same(dir: BorrowedFd<'_>, name: &OsStr, expect: &FileId) -> io::Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(kind_of(&st) == Kind::File(*expect)),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// After a rename or link (which set the inode's ctime anew): still the
/// inode, size and mtime expected?
fn same_moved(dir: BorrowedFd<'_>, name: &OsStr, expect: &FileId) -> io::Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(match kind_of(&st) {
            Kind::File(id) => {
                id.fingerprint() == expect.fingerprint() && (id.dev, id.ino) == (expect.dev, expect.ino)
            }
            _ => false,
        }),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub fn put_file(root: &Path, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
    put_at(&open_root(root)?, name, bytes, true)
}

/// `put_file` into the folder `parts` (its last name is the file's) below
/// `root`, reached without following a symlink; with `replace` false an
/// existing file of that name is kept and the call fails (AlreadyExists).
pub fn put_below(root: &Path, parts: &[&OsStr], bytes: &[u8], replace: bool) -> io::Result<()> {
    let (dir, name) = parent(root, parts)?;
    put_at(&dir, name, bytes, replace)
}

fn put_at(dir: &OwnedFd, name: &OsStr, bytes: &[u8], replace: bool) -> io::Result<()> {
    use std::io::Write;
    let tmp = OsString::from(format!(".autorender-sync.{}.put.tmp", std::process::id()));
    let _ = rustix::fs::unlinkat(dir, tmp.as_os_str(), AtFlags::empty());
    let fd = rustix::fs::openat(
        dir,
        tmp.as_os_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    // Whatever the umask: others' agents read it.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
    let mut f = File::from(fd);
    let written = f.write_all(bytes);
    drop(f);
    let flags = if replace {
        rustix::fs::RenameFlags::empty()
    } else {
        rustix::fs::RenameFlags::NOREPLACE
    };
    if let Err(e) =
        written.and_then(|()| Ok(rustix::fs::renameat_with(dir, tmp.as_os_str(), dir, name, flags)?))
    {
        let _ = rustix::fs::unlinkat(dir, tmp.as_os_str(), AtFlags::empty());
        return Err(e);
    }
    Ok(())
}

pub fn remove_if(root: &Path, parts: &[&OsStr], expect: &FileId) -> io::Result<bool> {
    let (dir, last) = parent(root, parts)?;
    unlink_checked(&dir, last, expect)
}

/// Unlinks `name` only if it is `expect`. A check then an unlink by
/// name would delete whatever was renamed over the name in between, so
/// the name is first renamed aside (atomic), the inode that moved is
/// checked, and only then unlinked; another file that moved is put back.
fn unlink_checked(dir: &OwnedFd, name: &OsStr, expect: &FileId) -> io::Result<bool> {
    use rustix::fs::RenameFlags;
    if !same(dir.as_fd(), name, expect)? {
        return Ok(false);
    }
    let aside = OsString::from(format!(
        ".autorender-sync.{}.{}.removing",
        std::process::id(),
        expect.ino
    ));
    match rustix::fs::renameat_with(dir, name, dir, aside.as_os_str(), RenameFlags::NOREPLACE) {
        Ok(()) => {}
        // No renameat2 here: the check just made is all there is.
        Err(Errno::INVAL | Errno::NOSYS) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            return Ok(true);
        }
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    if same_moved(dir.as_fd(), &aside, expect)? {
        rustix::fs::unlinkat(dir, aside.as_os_str(), AtFlags::empty())?;
        return Ok(true);
    }
    // Someone else's file, put there between the check and the rename.
    for n in 0..10_000u32 {
        let back = candidate(name, n);
        match rustix::fs::renameat_with(
            dir,
            aside.as_os_str(),
            dir,
            back.as_os_str(),
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                if n > 0 {
                    tracing::warn!(
                        "a file that replaced {} while it was being removed was put back as {}",
                        Path::new(name).display(),
                        Path::new(&back).display()
                    );
                }
                return Ok(false);
            }
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(
        "no free name to put a file back among 10,000 tries",
    ))
}

mod moves;
pub use moves::move_if;

pub fn make_dirs(root: &Path, parts: &[&OsStr]) -> io::Result<()> {
    moves::make_dirs(root, parts).map(drop)
}
