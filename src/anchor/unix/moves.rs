//! `after_upload = "move"` below a root: folders made one at a time without
//! following links, the inode checked before it moves, and a move to another
//! file system copied to a temp name, synced and renamed.

use super::*;

/// Opens (creating as needed, mode 0777 less the umask) the folders
/// `parts` below `root`, never through a symlink.
pub(super) fn make_dirs(root: &Path, parts: &[&OsStr]) -> io::Result<OwnedFd> {
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
                match rustix::fs::linkat(&src_dir, name, &dest_dir, target.as_os_str(), AtFlags::empty()) {
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
