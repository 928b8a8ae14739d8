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

/// Writes the small file `path` below `root` as [`put_file`] does, through
/// folders reached without following a symlink; `replace` false keeps a
/// file already there (the call fails with AlreadyExists).
pub fn put_below(root: &Path, path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    imp::put_below(root, &names(root, path)?, bytes, replace)
}

/// Makes the folder `path` below `root` (and its missing parents), one at a
/// time with `mkdirat`, never through a symlink.
pub fn make_dirs(root: &Path, path: &Path) -> io::Result<()> {
    imp::make_dirs(root, &names(root, path)?)
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
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(not(unix))]
mod other;
#[cfg(not(unix))]
use other as imp;

#[cfg(all(test, unix))]
mod tests;
