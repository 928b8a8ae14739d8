//! File access anchored at a watched root. A drop folder is shared: anyone
//! who can write there can rename a folder away and put a symlink in its
//! place between two system calls, so no path below a root is ever resolved
//! by name from `/`. Every open, stat, listing, delete and move starts from
//! a handle on the root and refuses a symbolic link at any step on the way
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` on Linux ≥ 5.6,
//! else one `openat(O_NOFOLLOW)` per component). Files are opened
//! non-blocking (a FIFO swapped in cannot hang the caller) and must be
//! regular files by their descriptor. The root itself is resolved as the
//! config names it: the user chose that path.
//!
//! Callers use the descriptor they checked, never the name again: hashing,
//! parts and identity checks read it; `after_upload` unlinks or renames a
//! name only while it is still the inode that was uploaded.
//!
//! These calls block (a network share can take seconds): the agent runs
//! them on tokio's blocking pool, never on its worker threads.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::fileid::FileId;

/// Why an anchored call refused a path (not an I/O failure of the disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a symbolic link on its path (symlinks are not followed)")]
    Symlink,
    #[error("not a regular file (a FIFO, socket, device or folder)")]
    NotAFile,
    #[error("not below its watched folder")]
    Outside,
}

impl Refusal {
    fn err(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, self)
    }

    /// The refusal inside an I/O error, if that is what it is.
    pub fn of(e: &io::Error) -> Option<Refusal> {
        e.get_ref().and_then(|i| i.downcast_ref::<Refusal>()).copied()
    }
}

/// What an anchored `lstat` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File(FileId),
    Dir,
    Symlink,
    Other,
}

/// One entry of a folder listing (`d_type`, or an `lstat` where the file
/// system does not give one).
#[derive(Debug)]
pub struct Listed {
    pub name: OsString,
    pub kind: Kind,
}

/// The plain names from `root` to `path`; `..`, `.` and anything not below
/// `root` are refused.
fn names<'a>(root: &Path, path: &'a Path) -> io::Result<Vec<&'a OsStr>> {
    // `./a` is below `.`; a `.` anywhere else says nothing.
    let mut root_parts = root.components().filter(|c| *c != Component::CurDir);
    let mut rest = path.components().filter(|c| *c != Component::CurDir).peekable();
    for want in root_parts.by_ref() {
        if rest.next() != Some(want) {
            return Err(Refusal::Outside.err());
        }
    }
    rest.map(|c| match c {
        Component::Normal(n) => Ok(n),
        _ => Err(Refusal::Outside.err()),
    })
    .collect()
}

/// Opens `path` (below `root`) for reading: no symlink anywhere on the way,
/// non-blocking, and a regular file by its descriptor.
pub fn open_file(root: &Path, path: &Path) -> io::Result<File> {
    imp::open_file(root, &names(root, path)?)
}

/// `lstat` of `path` below `root`, with no symlink followed on the way.
pub fn stat(root: &Path, path: &Path) -> io::Result<Kind> {
    imp::stat(root, &names(root, path)?)
}

/// The identity of the regular file at `path` below `root`.
pub fn file_id(root: &Path, path: &Path) -> io::Result<FileId> {
    match stat(root, path)? {
        Kind::File(id) => Ok(id),
        Kind::Symlink => Err(Refusal::Symlink.err()),
        _ => Err(Refusal::NotAFile.err()),
    }
}

/// The entries of the folder `dir` (below or at `root`).
pub fn list(root: &Path, dir: &Path) -> io::Result<Vec<Listed>> {
    imp::list(root, &names(root, dir)?)
}

/// Opens `path` below `root` and hashes the descriptor (in the blocking
/// pool). Returns the identity the descriptor had before and after the read
/// with the digest; the caller decides whether they agree.
pub async fn hash(root: &Path, path: &Path) -> io::Result<(FileId, String, FileId)> {
    let (root, path) = (root.to_path_buf(), path.to_path_buf());
    let file = tokio::task::spawn_blocking(move || open_file(&root, &path))
        .await
        .map_err(io::Error::other)??;
    let before = FileId::of_file(&file)?;
    let reader = file.try_clone()?;
    let sha = crate::fileid::hash_open(reader).await?;
    let after = FileId::of_file(&file)?;
    Ok((before, sha, after))
}

/// Replaces the small file `name` directly in `root` with `bytes`: written
/// to an exclusive temporary name (no symlink followed), then renamed over,
/// so a reader sees the old content or the new, and a link planted at the
/// name is replaced, never written through. Readable by all (0644).
pub fn put_file(root: &Path, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
    imp::put_file(root, name, bytes)
}

/// Deletes `path` below `root`, only while it is still `expect` (device,
/// inode, size, mtime, ctime). Returns false, touching nothing, otherwise.
pub fn remove_if(root: &Path, path: &Path, expect: &FileId) -> io::Result<bool> {
    imp::remove_if(root, &names(root, path)?, expect)
}

/// Moves `path` below `root` to `dest_root`/`dest_rel` (its folders created
/// as needed, never through a symlink, never overwriting: " (1)", " (2)" …
/// are added), only while it is still `expect`. Across file systems the file
/// is copied from a descriptor checked to be `expect` to a temporary name,
/// flushed, renamed into place, and only then the original unlinked (again
/// only if it is still `expect`). Returns where it went, or None when the
/// file changed and was left alone.
pub fn move_if(
    root: &Path,
    path: &Path,
    expect: &FileId,
    dest_root: &Path,
    dest_rel: &str,
) -> io::Result<Option<PathBuf>> {
    let dest = dest_root.join(dest_rel);
    let dest_names = names(dest_root, &dest)?;
    imp::move_if(root, &names(root, path)?, expect, dest_root, &dest_names)
}

/// `a.mp4`, else `a (1).mp4`, `a (2).mp4` …
fn candidate(name: &OsStr, n: u32) -> OsString {
    if n == 0 {
        return name.to_os_string();
    }
    let p = Path::new(name);
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = p
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    OsString::from(format!("{stem} ({n}){ext}"))
}

#[cfg(target_os = "linux")]
mod resolve {
    use std::sync::atomic::{AtomicU8, Ordering};

    /// 0 = not tried yet, 1 = openat2 works, 2 = it does not (old kernel,
    /// or a seccomp filter that refuses it): walk component by component.
    static OPENAT2: AtomicU8 = AtomicU8::new(0);

    pub fn usable() -> bool {
        OPENAT2.load(Ordering::Relaxed) != 2
    }

    pub fn record(works: bool) {
        OPENAT2.store(if works { 1 } else { 2 }, Ordering::Relaxed);
    }
}

#[cfg(unix)]
mod imp {
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
                Ok(st)
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory && i + 1 < parts.len() =>
                {
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
        use std::io::Write;
        let dir = open_root(root)?;
        let tmp = OsString::from(format!(".autorender-sync.{}.put.tmp", std::process::id()));
        let _ = rustix::fs::unlinkat(&dir, tmp.as_os_str(), AtFlags::empty());
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        // Whatever the umask: others' agents read it.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
        let mut f = File::from(fd);
        let written = f.write_all(bytes);
        drop(f);
        if let Err(e) = written.and_then(|()| Ok(rustix::fs::renameat(&dir, tmp.as_os_str(), &dir, name)?)) {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_os_str(), AtFlags::empty());
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

    /// Opens (creating as needed, mode 0777 less the umask) the folders
    /// `parts` below `root`, never through a symlink.
    fn make_dirs(root: &Path, parts: &[&OsStr]) -> io::Result<OwnedFd> {
        let mut cur = open_root(root)?;
        for name in parts {
            let next = match rustix::fs::openat(&cur, *name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, *name, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rustix::fs::openat(&cur, *name, DIR_FLAGS, Mode::empty()).map_err(refusal)?
                }
                Err(Errno::LOOP | Errno::NOTDIR) => return Err(why_not_dir(cur.as_fd(), &[name])),
                Err(e) => return Err(e.into()),
            };
            cur = next;
        }
        Ok(cur)
    }

    pub fn move_if(
        root: &Path,
        parts: &[&OsStr],
        expect: &FileId,
        dest_root: &Path,
        dest: &[&OsStr],
    ) -> io::Result<Option<PathBuf>> {
        use rustix::fs::RenameFlags;
        let (src_dir, name) = parent(root, parts)?;
        if !same(src_dir.as_fd(), name, expect)? {
            return Ok(None);
        }
        let (wanted, dest_folders) = dest.split_last().ok_or_else(|| Refusal::Outside.err())?;
        let dest_dir = make_dirs(dest_root, dest_folders)?;
        let dest_path = |n: &OsStr| {
            let mut p = dest_root.to_path_buf();
            p.extend(dest_folders);
            p.join(n)
        };
        for n in 0..10_000u32 {
            let target = candidate(wanted, n);
            match rustix::fs::renameat_with(
                &src_dir,
                name,
                &dest_dir,
                target.as_os_str(),
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {
                    // Renamed by name: make sure the inode that moved is the
                    // one uploaded (a swap between the check and the rename
                    // moves the newcomer back where it was).
                    if same_moved(dest_dir.as_fd(), &target, expect)? {
                        return Ok(Some(dest_path(&target)));
                    }
                    let _ = rustix::fs::renameat_with(
                        &dest_dir,
                        target.as_os_str(),
                        &src_dir,
                        name,
                        RenameFlags::NOREPLACE,
                    );
                    return Ok(None);
                }
                Err(Errno::EXIST) => continue,
                Err(Errno::XDEV) => {
                    return copy_across(&src_dir, name, expect, &dest_dir, wanted)
                        .map(|o| o.map(|t| dest_path(&t)));
                }
                // No renameat2 (old kernels, some file systems): link + unlink never overwrites either.
                Err(Errno::INVAL | Errno::NOSYS) => {
                    match rustix::fs::linkat(&src_dir, name, &dest_dir, target.as_os_str(), AtFlags::empty())
                    {
                        Ok(()) => {
                            if same_moved(dest_dir.as_fd(), &target, expect)?
                                && same_moved(src_dir.as_fd(), name, expect)?
                            {
                                rustix::fs::unlinkat(&src_dir, name, AtFlags::empty())?;
                                return Ok(Some(dest_path(&target)));
                            }
                            let _ = rustix::fs::unlinkat(&dest_dir, target.as_os_str(), AtFlags::empty());
                            return Ok(None);
                        }
                        Err(Errno::EXIST) => continue,
                        Err(Errno::XDEV) => {
                            return copy_across(&src_dir, name, expect, &dest_dir, wanted)
                                .map(|o| o.map(|t| dest_path(&t)));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::other("no free name among 10,000 tries"))
    }

    /// Another file system: copy from a descriptor that is `expect` into a
    /// temporary name, flush, rename into a free name, then unlink the
    /// original only if it is still `expect`.
    fn copy_across(
        src_dir: &OwnedFd,
        name: &OsStr,
        expect: &FileId,
        dest_dir: &OwnedFd,
        wanted: &OsStr,
    ) -> io::Result<Option<OsString>> {
        use rustix::fs::RenameFlags;
        let src = rustix::fs::openat(
            src_dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(refusal)?;
        let st = rustix::fs::fstat(&src)?;
        if kind_of(&st) != Kind::File(*expect) {
            return Ok(None);
        }
        let tmp = OsString::from(format!(
            ".autorender-sync.{}.{}.partial",
            std::process::id(),
            expect.ino
        ));
        let out = rustix::fs::openat(
            dest_dir,
            tmp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(st.st_mode & 0o777),
        )?;
        let copied = (|| {
            let mut from = File::from(src);
            let mut to = File::from(out);
            io::copy(&mut from, &mut to)?;
            to.sync_all()?;
            let after = rustix::fs::fstat(&from)?;
            Ok::<bool, io::Error>(kind_of(&after) == Kind::File(*expect))
        })();
        let unlink_tmp = || {
            let _ = rustix::fs::unlinkat(dest_dir, tmp.as_os_str(), AtFlags::empty());
        };
        match copied {
            Ok(true) => {}
            Ok(false) => {
                unlink_tmp();
                return Ok(None);
            }
            Err(e) => {
                unlink_tmp();
                return Err(e);
            }
        }
        for n in 0..10_000u32 {
            let target = candidate(wanted, n);
            let placed = match rustix::fs::renameat_with(
                dest_dir,
                tmp.as_os_str(),
                dest_dir,
                target.as_os_str(),
                RenameFlags::NOREPLACE,
            ) {
                Err(Errno::INVAL | Errno::NOSYS) => rustix::fs::linkat(
                    dest_dir,
                    tmp.as_os_str(),
                    dest_dir,
                    target.as_os_str(),
                    AtFlags::empty(),
                )
                .map(|()| unlink_tmp()),
                r => r,
            };
            match placed {
                Ok(()) => {
                    let _ = rustix::fs::fsync(dest_dir);
                    unlink_checked(src_dir, name, expect)?;
                    return Ok(Some(target));
                }
                Err(Errno::EXIST) => continue,
                Err(e) => {
                    unlink_tmp();
                    return Err(e.into());
                }
            }
        }
        unlink_tmp();
        Err(io::Error::other("no free name among 10,000 tries"))
    }
}

/// Elsewhere (Windows): the same calls by path, with each component checked
/// with `symlink_metadata` first. Not race-free; Windows drop folders are
/// out of this release's threat model (RELIABILITY.md says so).
#[cfg(not(unix))]
mod imp {
    use super::*;

    fn checked(root: &Path, parts: &[&OsStr]) -> io::Result<PathBuf> {
        let mut p = root.to_path_buf();
        for name in parts {
            p.push(name);
            if std::fs::symlink_metadata(&p)?.file_type().is_symlink() {
                return Err(Refusal::Symlink.err());
            }
        }
        Ok(p)
    }

    fn kind(m: &std::fs::Metadata, p: &Path) -> io::Result<Kind> {
        Ok(if m.file_type().is_symlink() {
            Kind::Symlink
        } else if m.is_dir() {
            Kind::Dir
        } else if m.is_file() {
            Kind::File(FileId::of_path(p)?)
        } else {
            Kind::Other
        })
    }

    pub fn open_file(root: &Path, parts: &[&OsStr]) -> io::Result<File> {
        let p = checked(root, parts)?;
        let f = File::open(&p)?;
        if !f.metadata()?.is_file() {
            return Err(Refusal::NotAFile.err());
        }
        Ok(f)
    }

    pub fn stat(root: &Path, parts: &[&OsStr]) -> io::Result<Kind> {
        let (last, folders) = match parts.split_last() {
            Some(x) => x,
            None => return kind(&std::fs::metadata(root)?, root),
        };
        let mut p = checked(root, folders)?;
        p.push(last);
        kind(&std::fs::symlink_metadata(&p)?, &p)
    }

    pub fn list(root: &Path, parts: &[&OsStr]) -> io::Result<Vec<Listed>> {
        let p = checked(root, parts)?;
        let mut out = Vec::new();
        for e in std::fs::read_dir(&p)? {
            let e = e?;
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            out.push(Listed {
                name: e.file_name(),
                kind: kind(&m, &e.path())?,
            });
        }
        Ok(out)
    }

    pub fn put_file(root: &Path, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        let tmp = root.join(format!(".autorender-sync.{}.put.tmp", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, root.join(name))
    }

    pub fn remove_if(root: &Path, parts: &[&OsStr], expect: &FileId) -> io::Result<bool> {
        if stat(root, parts)? != Kind::File(*expect) {
            return Ok(false);
        }
        std::fs::remove_file(checked(root, parts)?)?;
        Ok(true)
    }

    pub fn move_if(
        root: &Path,
        parts: &[&OsStr],
        expect: &FileId,
        dest_root: &Path,
        dest: &[&OsStr],
    ) -> io::Result<Option<PathBuf>> {
        if stat(root, parts)? != Kind::File(*expect) {
            return Ok(None);
        }
        let from = checked(root, parts)?;
        let (wanted, folders) = dest.split_last().ok_or_else(|| Refusal::Outside.err())?;
        let mut dir = dest_root.to_path_buf();
        dir.extend(folders);
        std::fs::create_dir_all(&dir)?;
        let target = (0..10_000u32)
            .map(|n| dir.join(candidate(wanted, n)))
            .find(|p| std::fs::symlink_metadata(p).is_err())
            .ok_or_else(|| io::Error::other("no free name among 10,000 tries"))?;
        if std::fs::rename(&from, &target).is_err() {
            std::fs::copy(&from, &target)?;
            File::open(&target)?.sync_all()?;
            std::fs::remove_file(&from)?;
        }
        Ok(Some(target))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlinked_folder_or_file_is_refused_at_every_step() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let secret = d.path().join("secret");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("id_rsa"), b"private").unwrap();
        std::fs::write(root.join("real/a"), b"ok").unwrap();
        symlink(&secret, root.join("x")).unwrap();
        symlink(secret.join("id_rsa"), root.join("real/link")).unwrap();
        assert!(open_file(&root, &root.join("real/a")).is_ok());
        for p in [root.join("x/id_rsa"), root.join("real/link")] {
            let e = open_file(&root, &p).unwrap_err();
            assert_eq!(Refusal::of(&e), Some(Refusal::Symlink), "{p:?}: {e}");
        }
        let e = stat(&root, &root.join("x/id_rsa")).unwrap_err();
        assert_eq!(Refusal::of(&e), Some(Refusal::Symlink));
        assert_eq!(stat(&root, &root.join("real/link")).unwrap(), Kind::Symlink);
        assert!(list(&root, &root.join("x")).is_err());
        let e = open_file(&root, &root.join("real/../x/id_rsa")).unwrap_err();
        assert_eq!(Refusal::of(&e), Some(Refusal::Outside));
        assert!(open_file(&root, &d.path().join("secret/id_rsa")).is_err());
        // Relative paths below the current folder.
        assert_eq!(names(Path::new("."), Path::new("a/b")).unwrap().len(), 2);
        assert_eq!(names(Path::new(""), Path::new("./a")).unwrap().len(), 1);
        assert!(names(Path::new("x"), Path::new("a")).is_err());
        let id = FileId::of_path(&secret.join("id_rsa")).unwrap();
        assert!(remove_if(&root, &root.join("x/id_rsa"), &id).is_err());
        assert!(
            move_if(
                &root,
                &root.join("x/id_rsa"),
                &id,
                &d.path().join("out"),
                "id_rsa"
            )
            .is_err()
        );
        assert!(secret.join("id_rsa").exists());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let e = open_file(d.path(), &fifo).unwrap_err();
        assert_eq!(Refusal::of(&e), Some(Refusal::NotAFile));
    }

    #[test]
    fn the_component_walk_refuses_what_openat2_refuses() {
        // Force the fallback for this process's later calls too: both paths must agree.
        #[cfg(target_os = "linux")]
        resolve::record(false);
        a_symlinked_folder_or_file_is_refused_at_every_step();
        a_fifo_is_refused_without_blocking();
        #[cfg(target_os = "linux")]
        resolve::record(true);
    }

    #[test]
    fn remove_and_move_act_only_on_the_inode_given() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("in");
        std::fs::create_dir_all(root.join("a")).unwrap();
        let f = root.join("a/b.mp4");
        std::fs::write(&f, b"v1").unwrap();
        let v1 = FileId::of_path(&f).unwrap();
        // Replaced by rename: same size, same mtime, another inode.
        let tmp = root.join("a/.tmp");
        std::fs::write(&tmp, b"v2").unwrap();
        File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(v1.mtime_ns as u64))
            .unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert!(!remove_if(&root, &f, &v1).unwrap());
        assert_eq!(
            move_if(&root, &f, &v1, &d.path().join("out"), "a/b.mp4").unwrap(),
            None
        );
        assert_eq!(std::fs::read(&f).unwrap(), b"v2");
        let v2 = FileId::of_path(&f).unwrap();
        std::fs::create_dir_all(d.path().join("out/a")).unwrap();
        std::fs::write(d.path().join("out/a/b.mp4"), b"old").unwrap();
        let to = move_if(&root, &f, &v2, &d.path().join("out"), "a/b.mp4")
            .unwrap()
            .unwrap();
        assert_eq!(to, d.path().join("out/a/b (1).mp4"));
        assert_eq!(std::fs::read(&to).unwrap(), b"v2");
        assert!(!f.exists());
    }
}
