//! Elsewhere (Windows): the same calls by path, with each component checked
//! with `symlink_metadata` first. Not race-free; Windows drop folders are
//! out of this release's threat model (RELIABILITY.md says so).

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

pub fn put_below(root: &Path, parts: &[&OsStr], bytes: &[u8], replace: bool) -> io::Result<()> {
    let path = checked(root, parts)?;
    if !replace && std::fs::symlink_metadata(&path).is_ok() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "already there"));
    }
    let tmp = path.with_extension("autorender-sync.put.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub fn make_dirs(root: &Path, parts: &[&OsStr]) -> io::Result<()> {
    let mut p = checked(root, &[])?;
    for name in parts {
        p.push(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Refusal::NotAFile.err()),
            Err(_) => std::fs::create_dir(&p)?,
        }
    }
    Ok(())
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
